"""`proxy.logs.ServerLabel`: uvicorn's lines logged while a server's task runs name that server."""

from __future__ import annotations

import json
import logging

from proxy.logs import JsonFormatter, ServerLabel, server


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_uvicorn_lines_in_a_server_context_are_tagged_once() -> None:
    label = ServerLabel()
    token = server.set("admin :9070")
    try:
        record = _record("uvicorn.error", "Started server process [%d]", 42)
        assert label.filter(record)
        assert label.filter(record)  # a second handler's filter does not tag it again
    finally:
        server.reset(token)
    assert record.getMessage() == "Started server process [42] (admin :9070)"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "Started server process [42] (admin :9070)"
    assert line["server"] == "admin :9070"


def test_other_lines_and_lines_outside_a_server_are_left_alone() -> None:
    label = ServerLabel()
    outside = _record("uvicorn.error", "Shutting down")
    assert label.filter(outside)
    assert outside.getMessage() == "Shutting down"
    assert "server" not in json.loads(JsonFormatter().format(outside))
    token = server.set("ingress :8080")
    try:
        ours = _record("proxy.engine.invoker", "attempt %d failed", 2)
        assert label.filter(ours)
    finally:
        server.reset(token)
    assert ours.getMessage() == "attempt 2 failed"
