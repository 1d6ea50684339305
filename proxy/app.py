"""Wiring: one Runtime shared by the ingress and admin apps."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from proxy.admin import create_admin
from proxy.callbacks import AckFastPath
from proxy.clock import Clock
from proxy.config import Settings
from proxy.ingress import create_ingress
from proxy.runtime import Runtime
from proxy.transport import Transport

__all__ = ["ProxyApps", "create_app"]


@dataclass
class ProxyApps:
    """The two ASGI apps and the runtime they share; start/stop the runtime yourself."""

    runtime: Runtime
    ingress: Starlette
    admin: Starlette


def create_app(settings: Settings, clock: Clock | None = None, transport: Transport | None = None) -> ProxyApps:
    """Build the proxy's apps. Call ``await apps.runtime.start()`` before serving."""
    runtime = Runtime(settings, clock=clock, transport=transport)
    admin = create_admin(runtime)
    admin.add_middleware(AckFastPath, runtime=runtime)  # step acks skip the router (the hot path)
    return ProxyApps(runtime=runtime, ingress=create_ingress(runtime), admin=admin)
