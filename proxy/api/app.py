"""Wiring: one Runtime shared by the ingress, admin and step-ack callback apps."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from handlers_sdk.clock import Clock
from proxy.api.acks import create_callback
from proxy.api.admin import create_admin
from proxy.api.admission import Admission
from proxy.api.auth import AdminAuth, IngressAuth
from proxy.api.ingress import create_ingress
from proxy.config import Settings
from proxy.credentials import Credentials
from proxy.engine.runtime import Runtime
from proxy.engine.transport import Transport

__all__ = ["ProxyApps", "create_app"]


@dataclass
class ProxyApps:
    """The three ASGI apps and the runtime they share; start/stop the runtime yourself."""

    runtime: Runtime
    ingress: Starlette
    admin: Starlette
    #: The step-ack callback handlers post to, served on its own listener (not on the admin API).
    callback: Starlette
    #: The admin tokens and ingress keys the apps check (`Credentials.reload` on SIGHUP).
    credentials: Credentials


def create_app(
    settings: Settings,
    clock: Clock | None = None,
    transport: Transport | None = None,
    credentials: Credentials | None = None,
) -> ProxyApps:
    """Build the proxy's apps. Call ``await apps.runtime.start()`` before serving.

    Raises:
        CredentialsError: without `credentials`, the token or key files the settings name are not usable.
    """
    credentials = credentials or Credentials.from_settings(settings)
    runtime = Runtime(settings, clock=clock, transport=transport)
    admin = create_admin(runtime)
    admin.add_middleware(AdminAuth, keys=credentials.admin, refused=runtime.metrics.unauthorized)
    callback = create_callback(runtime)
    # Heads bounded on the admin API and the acks too; never shed for load (acks drain the load).
    admin.add_middleware(
        Admission,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        source="admin",
    )
    callback.add_middleware(
        Admission,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        source="callback",
    )
    ingress = create_ingress(runtime)
    ingress.add_middleware(IngressAuth, keys=credentials.ingress, refused=runtime.metrics.unauthorized)
    return ProxyApps(runtime=runtime, ingress=ingress, admin=admin, callback=callback, credentials=credentials)
