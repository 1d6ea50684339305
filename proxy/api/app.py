"""Wiring: one Runtime shared by the ingress and admin apps."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from handlers_sdk.clock import Clock
from proxy.api.acks import AckFastPath
from proxy.api.admin import create_admin
from proxy.api.ingress import create_ingress
from proxy.config import Settings
from proxy.engine.runtime import Runtime
from proxy.engine.transport import Transport

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
