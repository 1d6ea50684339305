"""Serving: the runtime and its two uvicorn servers (ingress and admin) in one process.

One `ProxyServer` is what both ``python -m proxy`` (`serve`) and dev mode (`proxy.tools.dev`)
run, so both start, drain and stop the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from proxy import logs
from proxy.api.app import create_app
from proxy.config import Settings

__all__ = ["ProxyServer", "serve"]

log = logging.getLogger("proxy")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner (two servers, one process).

    Both servers log uvicorn's lifecycle lines ("Started server process [pid]", "Shutting down",
    "Finished server process [pid]"), which name no port: `serve` runs with `logs.server` set to
    `label`, so `logs.ServerLabel` tags each line with the server it is about.
    """

    def __init__(self, config: uvicorn.Config, label: str) -> None:
        super().__init__(config)
        self.label = label

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        token = logs.server.set(self.label)
        try:
            await super().serve(sockets)
        finally:
            logs.server.reset(token)


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


class ProxyServer:
    """The proxy's apps and both servers over one runtime."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.apps = create_app(settings)
        self._servers = [
            _Server(_config(self.apps.ingress, settings, settings.ingress_port), f"ingress :{settings.ingress_port}"),
            _Server(_config(self.apps.admin, settings, settings.admin_port), f"admin :{settings.admin_port}"),
        ]
        self._stopping = False

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, then stop (safe to call at any time)."""
        self._stopping = True
        for server in self._servers:
            server.should_exit = True
        if self.apps.runtime.started:
            # Waiting callers would keep uvicorn's graceful shutdown open forever (their
            # invocations cannot finish once step acks are refused): answer them 503 now.
            self.apps.runtime.release_waiters()

    async def run(self) -> bool:
        """Start the runtime and serve until `stop`; returns False if a server could not start.

        Raises:
            StoreLocked: another proxy owns the data directory.
        """
        await self.apps.runtime.start()
        failed = False

        async def run_server(server: _Server) -> None:
            nonlocal failed
            try:
                await server.serve()
            except SystemExit:  # uvicorn exits on a startup failure (port taken): stop the other one
                failed = True
                self.stop()

        if self._stopping:
            self.stop()
        try:
            await asyncio.gather(*(run_server(s) for s in self._servers))
        finally:
            await self.apps.runtime.stop()
            log.info("proxy stopped")
        return not failed


async def serve(settings: Settings) -> bool:
    """`python -m proxy`: serve until SIGTERM/SIGINT, then drain and stop.

    Raises:
        StoreLocked: another proxy owns the data directory.
    """
    server = ProxyServer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    try:
        return await server.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
