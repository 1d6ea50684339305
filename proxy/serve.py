"""Serving: the runtime and its three uvicorn listeners (ingress, admin, step-ack callback) in one process.

One `ProxyServer` is what both ``python -m proxy`` (`serve`) and dev mode (`proxy.tools.dev`)
run, so both start, drain and stop the same way.

The step-ack callback has a listener of its own (``--callback-host``/``--callback-port``), apart
from the admin API: handlers must reach the callback, and need not reach the admin API, which can
then stay on loopback. The callback needs no authentication beyond what every append carries: the
attempt's unguessable token, checked by the invoker (a wrong one is 409 and writes nothing). Each
listener has its own connection cap (`proxy.connection`), so a flood of ingress connections
leaves the callback reachable for the handlers whose steps it acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from proxy import logs
from proxy.api.app import create_app
from proxy.config import Settings
from proxy.connection import ListenerLimits, connection_cap, protocol_for, raise_fd_limit
from proxy.engine.transport import handler_ssl_context

__all__ = ["Listener", "ListenerError", "ProxyServer", "listeners", "serve"]

log = logging.getLogger("proxy")

#: Descriptors kept free of the listeners' caps beyond the handler connections: the store, the
#: log files, discovery and Postgres connections, the event loop's own.
_RESERVED_FDS = 256


class ListenerError(Exception):
    """The TLS files cannot be loaded: the listeners' certificate and key, or the handlers' CA bundle."""


@dataclass(frozen=True)
class Listener:
    """One bind of the proxy: which API, on which address and port."""

    #: ingress, admin or callback (also the error source in its JSON errors).
    name: str
    host: str
    port: int


def listeners(settings: Settings) -> list[Listener]:
    """The proxy's listeners, in start order. A check on where an API is exposed (e.g. the admin
    API off loopback) reads them here, before `ProxyServer` binds anything."""
    return [
        Listener("ingress", settings.host, settings.ingress_port),
        Listener("admin", settings.effective_admin_host, settings.admin_port),
        Listener("callback", settings.effective_callback_host, settings.callback_port),
    ]


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner (three servers, one process).

    Every server logs uvicorn's lifecycle lines ("Started server process [pid]", "Shutting down",
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


def _check_tls(settings: Settings) -> None:
    """Load the certificate and key (and the handlers' CA bundle) once, so a bad file is one clear
    error before anything binds.

    Raises:
        ListenerError: the files cannot be read or do not match.
    """
    try:
        handler_ssl_context(settings.handler_ca_file)
    except ValueError as exc:
        raise ListenerError(str(exc)) from None
    if not settings.tls_cert:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ListenerError(f"--tls-cert {settings.tls_cert} / --tls-key {settings.tls_key}: {exc}") from None


def _config(app: object, settings: Settings, listener: Listener, max_connections: int) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is in the proxy extra
        loop = "asyncio"
    limits = ListenerLimits(
        source=listener.name,
        header_timeout=settings.header_timeout,
        max_connections=max_connections,
        # Twice the headers' bound: room for the request line; the exact 431 is the apps' (Admission).
        max_head_bytes=2 * settings.max_header_bytes,
    )
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=listener.host,
        port=listener.port,
        loop=loop,
        http=protocol_for(limits),
        lifespan="off",
        access_log=False,
        log_config=None,
        # Typed int, but uvicorn only hands it to call_later: fractions of a second work.
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        backlog=4096,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
    )


class ProxyServer:
    """The proxy's apps and its three servers over one runtime.

    Raises:
        ListenerError: the TLS certificate or key cannot be loaded.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        _check_tls(settings)
        self.listeners = listeners(settings)
        fd_limit = raise_fd_limit()
        reserved = settings.max_handler_connections + _RESERVED_FDS
        cap = connection_cap(settings.max_connections, fd_limit, reserved, len(self.listeners))
        if cap < settings.max_connections:
            log.warning(
                "--max-connections %d lowered to %d per listener to fit the open-file limit of %d",
                settings.max_connections, cap, fd_limit,
            )  # fmt: skip
        self.max_connections = cap
        self.apps = create_app(settings)
        apps = {"ingress": self.apps.ingress, "admin": self.apps.admin, "callback": self.apps.callback}
        self._servers = [
            _Server(_config(apps[item.name], settings, item, cap), f"{item.name} :{item.port}")
            for item in self.listeners
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
            except SystemExit:  # uvicorn exits on a startup failure (port taken): stop the others
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
        ListenerError: the TLS certificate or key cannot be loaded.
    """
    server = ProxyServer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    loop.add_signal_handler(signal.SIGHUP, server.apps.credentials.reload)  # edited token/key files
    try:
        return await server.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
