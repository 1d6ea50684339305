"""durable-proxy: a sidecar that makes plain HTTP handler services durable, journaling in LMDB."""

from __future__ import annotations

from proxy.api.app import ProxyApps, create_app
from proxy.config import Settings

__all__ = ["ProxyApps", "Settings", "__version__", "create_app"]

__version__ = "0.1.0"
