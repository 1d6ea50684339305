"""Deployments and services: discovery of handler services and the in-memory routing table."""

from __future__ import annotations

import hashlib
import logging

import msgspec

from durable_core.errors import BadRequest, NotFound, Unavailable
from durable_core.journal import resolve_in
from durable_core.machine import DeploymentRemoval, Machine
from durable_core.records import DeploymentRecord, HandlerKind, ServiceRecord, ServiceType
from durable_core.txn import Backend
from handlers_sdk.clock import Clock
from handlers_sdk.protocol import PROTOCOL_VERSION, Manifest, decode_manifest
from proxy.engine.transport import Transport, TransportError
from proxy.store.writer import Writer

__all__ = ["Registry", "deployment_id"]

log = logging.getLogger("proxy.engine.registry")


def deployment_id(uri: str) -> str:
    """A stable id per URI, so registering the same URI again updates it in place."""
    return "dp_" + hashlib.sha256(uri.encode()).hexdigest()[:20]


class Registry:
    """Knows which services exist, their handlers, and where they are served."""

    def __init__(self, store: Backend, writer: Writer, transport: Transport, clock: Clock, timeout: float) -> None:
        self._store = store
        self._writer = writer
        #: Set by the runtime once the machine exists (the machine resolves targets through us).
        self.machine: Machine | None = None
        self._transport = transport
        self._clock = clock
        self._timeout = timeout
        self.services: dict[str, ServiceRecord] = {}
        self.deployments: dict[str, DeploymentRecord] = {}

    def load(self, machine: Machine) -> None:
        """Read every deployment and service from the store."""
        self.machine = machine
        with self._store.read() as txn:
            self.deployments = {dep.id: dep for dep in machine.deployments(txn)}
            self.services = {svc.name: svc for svc in machine.services(txn)}

    def resolve(self, service: str, handler: str) -> tuple[str, HandlerKind, ServiceType]:
        """(deployment id, handler kind, service type) of `service`/`handler` (NotFound otherwise).

        The machine's resolver: it runs in the writer thread too, so it only reads dicts.
        """
        return resolve_in(self.services, service, handler)

    def service(self, name: str) -> ServiceRecord:
        """A registered service, or NotFound."""
        svc = self.services.get(name)
        if svc is None:
            raise NotFound(f"service '{name}' not found")
        return svc

    def deployment_for(self, service: str, pinned: str = "") -> DeploymentRecord | None:
        """The deployment an attempt goes to: the pinned one if still known, else the latest."""
        if pinned and pinned in self.deployments:
            return self.deployments[pinned]
        svc = self.services.get(service)
        return self.deployments.get(svc.deployment_id) if svc else None

    async def discover(self, uri: str) -> Manifest:
        """Ask a handler service what it serves."""
        url = uri.rstrip("/") + "/discovery"
        try:
            response = await self._transport.request("GET", url, timeout=self._timeout)
        except TransportError as exc:
            raise Unavailable(f"cannot reach {url}: {exc}") from exc
        if response.status != 200:
            raise BadRequest(f"discovery at {url} answered {response.status}")
        try:
            manifest = decode_manifest(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            raise BadRequest(f"discovery at {url} sent a bad manifest: {exc}") from exc
        if manifest.protocol_version != PROTOCOL_VERSION:
            raise BadRequest(f"{url} speaks protocol {manifest.protocol_version}, not {PROTOCOL_VERSION}")
        return manifest

    async def register(self, uri: str) -> tuple[DeploymentRecord, list[ServiceRecord]]:
        """Discover `uri` and make it the serving deployment of its services. Returns after commit."""
        uri = uri.rstrip("/")
        if not uri.startswith(("http://", "https://")):
            raise BadRequest("uri must be an http:// or https:// URL")
        manifest = await self.discover(uri)
        dep = DeploymentRecord(
            id=deployment_id(uri),
            uri=uri,
            mode=manifest.mode,
            services=[s.name for s in manifest.services],
            created_ms=self._clock.now_ms(),
        )
        services = [
            ServiceRecord(
                name=s.name,
                type=s.type,
                handlers={h.name: h.kind for h in s.handlers},
                deployment_id=dep.id,
            )
            for s in manifest.services
        ]

        machine = self.machine
        assert machine is not None, "load() first"
        await self._writer.submit(lambda txn: machine.register(txn, dep, services))
        self.deployments[dep.id] = dep
        for svc in services:
            self.services[svc.name] = svc
        log.info("registered deployment %s at %s: %s", dep.id, uri, ", ".join(dep.services))
        return dep, services

    async def remove(self, deployment_id: str, force: bool = False) -> DeploymentRemoval:
        """Remove a deployment and the services only it serves (see `Machine.remove_deployment`).
        Returns after commit, with the routing table updated.

        Raises:
            NotFound: unknown deployment. Conflict: invocations not completed are pinned to it
                and `force` is not set.
        """
        machine = self.machine
        assert machine is not None, "load() first"
        removal = await self._writer.submit(lambda txn: machine.remove_deployment(txn, deployment_id, force=force))
        self.deployments.pop(deployment_id, None)
        for name in removal.removed_services:
            self.services.pop(name, None)
        for svc in removal.moved_services:
            self.services[svc.name] = svc
        log.info(
            "removed deployment %s at %s%s: services removed: %s; moved to another deployment: %s",
            deployment_id, removal.deployment.uri,
            f" (forced, {len(removal.pinned)} invocations pinned to it)" if removal.pinned else "",
            ", ".join(removal.removed_services) or "none", ", ".join(s.name for s in removal.moved_services) or "none",
        )  # fmt: skip
        return removal
