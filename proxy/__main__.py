"""``python -m proxy``: run the ingress and admin servers in one process over one data dir.

``python -m proxy dev ...`` (`proxy.tools.dev`) and ``python -m proxy invocations|services|deployments ...``
(`proxy.tools.cli`) are subcommands dispatched by `main`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from proxy.config import settings_from
from proxy.logs import configure

__all__ = ["main"]

log = logging.getLogger("proxy")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: the server, or a subcommand (`proxy.tools.cli`, `proxy.tools.dev`) named by argv[0]."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "dev":
        from proxy.tools.dev import main as dev_main

        raise SystemExit(dev_main(args[1:]))
    if args and args[0] in ("invocations", "inv", "services", "svc", "deployments", "dep"):
        from proxy.tools.cli import main as cli_main

        raise SystemExit(cli_main(args))
    settings = settings_from(args)
    configure(settings.log_level, settings.log_format)
    # The server's imports (uvicorn, starlette, lmdb) only here: the subcommands above are tools
    # that talk to a running proxy and need none of them.
    from proxy.serve import serve
    from proxy.store.lmdb import StoreLocked

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the proxy extra
        uvloop = None  # type: ignore[assignment]
    try:
        ok = uvloop.run(serve(settings)) if uvloop is not None else asyncio.run(serve(settings))
    except StoreLocked as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
