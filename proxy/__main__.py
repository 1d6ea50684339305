"""``python -m proxy``: run the ingress and admin servers in one process over one data dir.

``python -m proxy dev ...`` (`proxy.tools.dev`) and ``python -m proxy invocations|services|deployments ...``
(`proxy.tools.cli`) are subcommands dispatched by `main`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from collections.abc import Sequence

from proxy.config import settings_from
from proxy.credentials import check_start
from proxy.logs import configure

__all__ = ["main"]

log = logging.getLogger("proxy")

#: What the server and dev mode import beyond the base dependencies (the ``proxy`` extra).
_SERVER_MODULES = ("starlette", "uvicorn", "lmdb", "aiohttp", "httptools")
#: The operator CLI's subcommands (`proxy.tools.cli`), with their aliases.
_CLI_COMMANDS = ("invocations", "inv", "services", "svc", "deployments", "dep", "schedules", "sch", "identity")


def _require_server_modules(what: str) -> None:
    """Exit with a one-line hint (code 2) when the proxy extra is not installed."""
    missing = []
    for name in _SERVER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        print(
            f"python -m proxy: {what} needs the proxy extra (missing: {', '.join(missing)}): "
            "pip install 'durable-proxy[proxy]' (in a checkout: pip install -e '.[proxy]'); "
            "the subcommands invocations, services and deployments work without it",
            file=sys.stderr,
        )
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: the server, or a subcommand (`proxy.tools.cli`, `proxy.tools.dev`) named by argv[0]."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "dev":
        if not {"-h", "--help"} & set(args[1:]):
            _require_server_modules("dev mode")
        from proxy.tools.dev import main as dev_main

        raise SystemExit(dev_main(args[1:]))
    if args and args[0] in _CLI_COMMANDS:
        from proxy.tools.cli import main as cli_main

        raise SystemExit(cli_main(args))
    settings = settings_from(args)
    configure(settings.log_level, settings.log_format)
    check_start(settings)  # exits 2: unusable token/key files, or an open admin API off loopback
    # The server's imports (uvicorn, starlette, lmdb) only here: the subcommands above are tools
    # that talk to a running proxy and need none of them.
    _require_server_modules("the server")
    from proxy.engine.identity import SigningKeyError
    from proxy.engine.tracing import TracingError
    from proxy.serve import ListenerError, serve
    from proxy.store.lmdb import StoreLocked

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the proxy extra
        uvloop = None  # type: ignore[assignment]
    try:
        ok = uvloop.run(serve(settings)) if uvloop is not None else asyncio.run(serve(settings))
    except (StoreLocked, SigningKeyError, TracingError) as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    except ListenerError as exc:  # e.g. a TLS certificate or key that cannot be loaded
        log.error("%s", exc)
        raise SystemExit(2) from None
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
