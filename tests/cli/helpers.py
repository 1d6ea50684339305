"""Run ``python -m proxy ...`` as a subprocess and parse its tables."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tests.e2e.harness import REPO, HandlerProc, ProxyProc

__all__ = ["Result", "Stack", "cli", "fields", "table"]


@dataclass
class Result:
    """Exit code and output of one CLI run."""

    code: int
    out: str
    err: str


def cli(*args: str, admin: str | None = None, env: dict[str, str] | None = None, timeout: float = 30) -> Result:
    """``python -m proxy *args`` (with ``--admin`` when given); PROXY_* of the test process are scrubbed."""
    argv = [sys.executable, "-m", "proxy", *args]
    if admin is not None:
        argv += ["--admin", admin]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    child_env.update(env or {})
    done = subprocess.run(argv, cwd=REPO, env=child_env, capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def table(text: str) -> list[dict[str, str]]:
    """Rows of an aligned table (the header line gives the column starts)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    names = header.split()
    starts = [header.index(name) for name in names]
    rows = []
    for line in lines[1:]:
        if line.startswith("more:"):
            continue
        cells = {}
        for i, name in enumerate(names):
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            cells[name] = line[starts[i] : end].strip()
        rows.append(cells)
    return rows


def fields(text: str) -> dict[str, str]:
    """The ``name:  value`` lines of ``invocations show`` (the part before the journal)."""
    found = {}
    for line in text.split("\n\n")[0].splitlines():
        name, _, value = line.partition(":")
        found[name] = value.strip()
    return found


@dataclass
class Stack:
    """A running proxy and handler, and the CLI aimed at the proxy's admin API."""

    proxy: ProxyProc
    handler: HandlerProc

    def cli(self, *args: str, **kwargs: Any) -> Result:
        """Run the CLI against this proxy."""
        return cli(*args, admin=self.proxy.admin, **kwargs)
