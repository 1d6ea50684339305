"""durable-proxy: a sidecar that makes plain HTTP handler services durable, journaling in LMDB.

Importing `proxy` imports none of the server's dependencies (starlette, uvicorn, lmdb, aiohttp):
the operator tools under `proxy.tools` (the CLI needs only msgspec and httpx) import this package
too. `create_app` and `ProxyApps` load the server (`proxy.api.app`) when they are first used.
"""

from __future__ import annotations

import typing

from proxy.config import Settings

if typing.TYPE_CHECKING:
    from handlers_sdk.clock import Clock
    from proxy.api.app import ProxyApps as ProxyApps
    from proxy.engine.transport import Transport

# `ProxyApps` is importable (`from proxy import ProxyApps`) but not listed: it is loaded lazily
# (PEP 562 `__getattr__` below), and `__all__` lists what the package binds at import.
__all__ = ["Settings", "__version__", "create_app"]

__version__ = "0.1.0"


def create_app(settings: Settings, clock: Clock | None = None, transport: Transport | None = None) -> ProxyApps:
    """Build the proxy's apps (`proxy.api.app.create_app`). Call ``await apps.runtime.start()`` before serving."""
    from proxy.api.app import create_app as create

    return create(settings, clock=clock, transport=transport)


if not typing.TYPE_CHECKING:  # mypy sees ProxyApps above, and no catch-all attribute hook

    def __getattr__(name: str) -> object:
        """``proxy.ProxyApps``, loaded on first use (PEP 562) so that ``import proxy`` stays light."""
        if name == "ProxyApps":
            from proxy.api.app import ProxyApps

            return ProxyApps
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
