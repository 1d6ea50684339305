"""The worked example of docs/scale-out.md runs as written: three proxies on one PostgreSQL
database, any request to any of them, and one stopped while the other two take over.

The example's first ``sh`` block and its ``console`` blocks are run in one bash session (the
``console`` commands use the shell variables the start block sets), with the test's own database
URL and free ports put in place of the document's (``808n``, ``917n``, ``927n``, ``9080``) and the
data dirs under the test's temp dir. Each command's output must be the document's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import free_port
from tests.postgres import PgCluster, pg_cluster

__all__ = ["pg_cluster"]

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "scale-out.md"
_MARK = "@@doc-command@@"


def _example() -> tuple[str, list[tuple[str, list[str]]]]:
    """The example's start block, and its console commands with their expected output lines."""
    text = DOC.read_text()
    section = text[text.index("## A worked example") : text.index("## How it works")]
    blocks = re.findall(r"```(sh|console)\n(.*?)```", section, flags=re.S)
    start = next(body for kind, body in blocks if kind == "sh")
    commands: list[tuple[str, list[str]]] = []
    for kind, body in blocks:
        if kind != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
    return start, commands


def _free_family() -> int:
    """A prefix k such that ports 10k+1 .. 10k+3 are all free (the document's ``808$n``)."""
    for _ in range(200):
        base = free_port() // 10
        if 1000 <= base <= 6500 and all(_is_free(base * 10 + n) for n in (1, 2, 3)):
            return base
    raise RuntimeError("no three consecutive free ports")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_worked_example_runs_as_written(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.fresh_database("doc")
    start, commands = _example()
    assert len(commands) >= 8, "the example lost its commands"
    ingress, admin, callback = _free_family(), _free_family(), _free_family()
    handler = free_port()

    def ports(text: str) -> str:
        text = text.replace("9080", str(handler))
        text = re.sub(r"\b808(?=[\d$])", str(ingress), text)
        text = re.sub(r"\b917(?=[\d$])", str(admin), text)
        return re.sub(r"\b927(?=[\d$])", str(callback), text)

    script_start = re.sub(r"export PROXY_STORE='[^']*'", f"export PROXY_STORE='{url}'", ports(start))
    script_start = script_start.replace("./data-", f"{tmp_path}/data-")
    # Before the commands: every proxy knows the example services, and the partitions are split
    # (the third block counts them; the split takes a few heartbeats after the last proxy joins).
    admins = " ".join(str(admin * 10 + n) for n in (1, 2, 3))
    ready = (
        "for i in $(seq 600); do\n"
        f"  ok=$(for p in {admins}; do curl -sf localhost:$p/services/Greeter >/dev/null"
        " && curl -sf localhost:$p/cluster || echo '{}'; done"
        " | jq -s 'map(.owned // [] | length) | (add == 16 and all(. > 0))')\n"
        '  [ "$ok" = true ] && break; sleep 0.1\n'
        "done"
    )
    log = tmp_path / "example.log"
    # The servers' own output goes to the log, not between the commands' outputs.
    lines = ["set -u", "{", script_start, f"}} >>{log} 2>&1", ready, f"echo {_MARK}ready"]
    for command, _ in commands:
        lines += [f"echo {_MARK}", ports(command), "echo"]
    lines += [f"echo {_MARK}", "kill $(jobs -p) 2>/dev/null; wait"]
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    with log.open("ab") as err:
        proc = subprocess.Popen(
            ["bash", "-c", "\n".join(lines)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=err, env=env, start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            out, _ = proc.communicate(timeout=150)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                time.sleep(1)
                os.killpg(proc.pid, signal.SIGKILL)
    text = out.decode(errors="replace")
    parts = text.split(f"{_MARK}\n")
    assert f"{_MARK}ready" in parts[0], (text, log.read_text()[-3000:])
    got = [[line for line in part.splitlines() if line.strip()] for part in parts[1 : len(commands) + 1]]
    for (command, expected), actual in zip(commands, got, strict=True):
        assert actual == [line for line in expected if line.strip()], (command, actual, log.read_text()[-3000:])
