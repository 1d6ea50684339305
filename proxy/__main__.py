"""``python -m proxy``: run the ingress and admin servers in one process over one data dir.

``python -m proxy dev ...`` (`proxy.dev`) and ``python -m proxy invocations|services|deployments ...``
(`proxy.cli`) are subcommands dispatched by `main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence

import uvicorn

from proxy.app import create_app
from proxy.config import Settings, settings_from
from proxy.logs import configure
from proxy.store import StoreLocked

__all__ = ["main", "serve"]

log = logging.getLogger("proxy")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `serve` below (two servers, one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: object, settings: Settings, port: int) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is in the proxy extra
        loop = "asyncio"
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=port,
        loop=loop,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
        backlog=4096,
    )


async def serve(settings: Settings) -> None:
    """Start the runtime and both servers; on SIGTERM/SIGINT stop accepting, drain, exit."""
    apps = create_app(settings)
    try:
        await apps.runtime.start()
    except StoreLocked as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    ingress = _Server(_config(apps.ingress, settings, settings.ingress_port))
    admin = _Server(_config(apps.admin, settings, settings.admin_port))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        ingress.should_exit = True
        admin.should_exit = True
        # Waiting callers would keep uvicorn's graceful shutdown open forever (their invocations
        # cannot finish once step acks are refused): answer them 503 now.
        apps.runtime.release_waiters()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(ingress.serve(), admin.serve())
    finally:
        await apps.runtime.stop()
        log.info("proxy stopped")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: the server, or a subcommand (`proxy.cli`, `proxy.dev`) named by argv[0]."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "dev":
        from proxy.dev import main as dev_main

        raise SystemExit(dev_main(args[1:]))
    if args and args[0] in ("invocations", "inv", "services", "svc", "deployments", "dep"):
        from proxy.cli import main as cli_main

        raise SystemExit(cli_main(args))
    settings = settings_from(args)
    configure(settings.log_level, settings.log_format)
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
