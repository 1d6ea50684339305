"""CLI command of a service's concurrency and rate limits (``python -m proxy services limits NAME``),
over the admin API's ``/services/{name}/limits``.

Without options it shows the limits that apply and the limit groups in use (slots taken,
invocations queued); ``--set JSON`` sets an operator's override in place of the code's limits,
``--reset`` goes back to the code's. Added to the parser of `proxy.tools.cli` by
`add_limit_commands`; API errors are raised as the client's `ApiError` and reported by the CLI.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from proxy.tools.render import render_limits

__all__ = ["add_limit_commands"]

#: The CLI's exit codes for success and for a usage error (`proxy.tools.cli`).
_OK = 0
_USAGE = 2
_EXAMPLE = '\'{"handlers": {"greet": {"concurrency": 2}}}\''


class _Client(Protocol):
    def request(self, method: str, path: str, params: Mapping[str, str | int] | None = None, body: Any = None) -> Any:
        """One admin API request: the decoded JSON answer."""
        ...


def _cmd_limits(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    path = f"/services/{urllib.parse.quote(args.name, safe='')}/limits"
    if args.set is not None and args.reset:
        out.write("use either --set or --reset\n")
        return _USAGE
    if args.set is not None:
        try:
            body = json.loads(args.set)
        except ValueError as exc:
            out.write(f"--set takes the limits as JSON, e.g. {_EXAMPLE}: {exc}\n")
            return _USAGE
        view = client.request("PUT", path, body=body)
    elif args.reset:
        view = client.request("DELETE", path)
    else:
        view = client.request("GET", path)
    if args.json:
        out.write(json.dumps(view, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(render_limits(view) + "\n")
    return _OK


def add_limit_commands(svc_cmds: Any, common: argparse.ArgumentParser) -> None:
    """Add ``limits`` to the ``services`` command group."""
    limits = svc_cmds.add_parser(
        "limits",
        parents=[common],
        help="a service's concurrency and rate limits and its queues",
        description="Show a service's concurrency and rate limits (the code's, or an operator's override) "
        f"and the limit groups in use; --set {_EXAMPLE} overrides them, --reset goes back to the code's.",
    )
    limits.add_argument("name", help="the service")
    limits.add_argument("--set", metavar="JSON", help="set the limits (replacing the code's), as JSON")
    limits.add_argument("--reset", action="store_true", help="remove the override: back to the code's limits")
    limits.set_defaults(run=_cmd_limits)
