"""``python -m proxy`` runs three uvicorn servers (ingress, admin, callback) in one process; each
logs uvicorn's lifecycle lines (started, running, shutting down, finished), which used to come out
several times, identical, with no port: now once per server, each naming the server and its port
(in the message and, as JSON, in a ``server`` field)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.harness import Cluster

pytestmark = pytest.mark.e2e

LIFECYCLE = ("Started server process", "Uvicorn running on", "Shutting down", "Finished server process")


def _uvicorn_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for raw in log.splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line["logger"].startswith("uvicorn"):
                lines.append(line)
    return lines


def test_each_lifecycle_line_appears_once_per_server_with_its_port(cluster: Cluster) -> None:
    proxy = cluster.proxy()
    assert proxy.terminate() == 0
    log = proxy.log_path.read_text()
    lines = _uvicorn_lines(log)
    servers = {
        "ingress": f"ingress :{proxy.ingress_port}",
        "admin": f"admin :{proxy.admin_port}",
        "callback": f"callback :{proxy.callback_port}",
    }
    for phrase in LIFECYCLE:
        for label in servers.values():
            matching = [line for line in lines if line["message"].startswith(phrase) and line.get("server") == label]
            assert len(matching) == 1, (phrase, label, log)
            assert matching[0]["message"].endswith(f"({label})")
        assert len([line for line in lines if line["message"].startswith(phrase)]) == 3, (phrase, log)
    messages = [line["message"] for line in lines]
    assert len(messages) == len(set(messages)), log
    running = {line["server"]: line["message"] for line in lines if line["message"].startswith("Uvicorn running")}
    assert f"http://127.0.0.1:{proxy.ingress_port} " in running[servers["ingress"]]
    assert f"http://127.0.0.1:{proxy.admin_port} " in running[servers["admin"]]
    assert f"http://127.0.0.1:{proxy.callback_port} " in running[servers["callback"]]


def test_text_logs_name_the_server_too(cluster: Cluster) -> None:
    proxy = cluster.proxy(env={"PROXY_LOG_FORMAT": "text"})
    assert proxy.terminate() == 0
    log = proxy.log_path.read_text()
    started = [line for line in log.splitlines() if "Started server process" in line]
    assert len(started) == 3, log
    assert any(line.endswith(f"(ingress :{proxy.ingress_port})") for line in started), log
    assert any(line.endswith(f"(admin :{proxy.admin_port})") for line in started), log
    assert any(line.endswith(f"(callback :{proxy.callback_port})") for line in started), log
