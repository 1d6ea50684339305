"""Deployments and services: discovery of handler services and the in-memory routing table."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable

import msgspec

from durable_core import flow
from durable_core import schedules as schedule_rules
from durable_core.effects import Effects
from durable_core.errors import BadRequest, NotFound, Unavailable
from durable_core.journal import resolve_in
from durable_core.machine import DeploymentRemoval, Machine
from durable_core.records import DeploymentRecord, HandlerKind, ServiceLimits, ServiceRecord, ServiceType
from durable_core.txn import Backend, Txn
from handlers_sdk.clock import Clock
from handlers_sdk.ids import UUID_WIDTH, base62_fixed
from handlers_sdk.protocol import PROTOCOL_VERSION, Manifest, ServiceInfo, decode_manifest
from proxy.engine.identity import Identity
from proxy.engine.transport import Transport, TransportError
from proxy.store.writer import Writer

__all__ = ["Registry", "deployment_id"]

log = logging.getLogger("proxy.engine.registry")


def deployment_id(uri: str) -> str:
    """A stable id per URI in Restate's id format, so that Restate's CLI parses it: ``dp_``, the id
    scheme version ``1``, then a u128 (here the first 16 bytes of sha256 of the URI) in fixed-width
    base62. Registering a URI already registered keeps the id it has (see `Registry.register`), so
    deployments stored with the older ``dp_<20 hex>`` ids keep theirs."""
    value = int.from_bytes(hashlib.sha256(uri.encode()).digest()[:16], "big")
    return "dp_1" + base62_fixed(value, UUID_WIDTH)


class Registry:
    """Knows which services exist, their handlers, and where they are served."""

    def __init__(
        self,
        store: Backend,
        writer: Writer,
        transport: Transport,
        clock: Clock,
        timeout: float,
        identity: Identity | None = None,
    ) -> None:
        self._store = store
        #: Signs discovery requests too (handlers with identity keys verify /discovery).
        self._identity = identity
        self._writer = writer
        #: Set by the runtime once the machine exists (the machine resolves targets through us).
        self.machine: Machine | None = None
        self._transport = transport
        self._clock = clock
        self._timeout = timeout
        self.services: dict[str, ServiceRecord] = {}
        self.deployments: dict[str, DeploymentRecord] = {}
        #: Carries out the effects of a registration (the runtime's `apply`: arm code schedules).
        self.on_effects: Callable[[Effects], None] = lambda effects: None
        #: Called after a commit changed deployments or services (the runtime tells other proxies).
        self.on_changed: Callable[[], None] = lambda: None
        #: The effective concurrency and rate limits by service (the code's or an operator's).
        #: Changed in place only: the machine holds its bound ``get`` (`limits_of`).
        self.flow: dict[str, ServiceLimits] = {}

    def limits_of(self) -> flow.LimitsOf:
        """The machine's `flow.LimitsOf`: one dict lookup, no store read."""
        return self.flow.get

    def load(self, machine: Machine) -> None:
        """Read every deployment and service from the store."""
        self.machine = machine
        with self._store.read() as txn:
            self.deployments = {dep.id: dep for dep in machine.deployments(txn)}
            self.services = {svc.name: svc for svc in machine.services(txn)}
        self.refresh_limits(self.services)

    def reload(self) -> None:
        """Read deployments, services and limits again (another proxy changed them)."""
        machine = self.machine
        assert machine is not None, "load() first"
        self.load(machine)
        for name in [name for name in self.flow if name not in self.services]:
            del self.flow[name]

    def refresh_limits(self, names: Iterable[str]) -> None:
        """Recompute the effective limits of these services from their records and the store's
        overrides (after a commit that changed either)."""
        machine = self.machine
        assert machine is not None, "load() first"
        with self._store.read() as txn:
            for name in names:
                svc = self.services.get(name)
                limits = flow.effective(svc.limits if svc else None, machine.limit_override(txn, name))
                if limits is None:
                    self.flow.pop(name, None)
                else:
                    self.flow[name] = limits

    async def pump_limits(self, names: Iterable[str]) -> None:
        """Start what the services' limit queues may start under their limits now (after a change
        of limits). Returns after commit."""
        machine = self.machine
        assert machine is not None, "load() first"
        for name in names:
            now = self._clock.now_ms()

            def pump(txn: Txn, service: str = name, at: int = now) -> Effects:
                return machine.pump_limits(txn, service, now=at)

            self.on_effects(await self._writer.submit(pump))

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
        uri = uri.rstrip("/")
        url = uri + "/discovery"
        headers = self._identity.headers("GET", "/discovery", b"", uri) if self._identity else None
        try:
            response = await self._transport.request("GET", url, timeout=self._timeout, headers=headers)
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

    async def register(self, uri: str, dry_run: bool = False) -> tuple[DeploymentRecord, list[ServiceRecord]]:
        """Discover `uri` and make it the serving deployment of its services. Returns after commit.

        With `dry_run`, discovery runs but nothing is written: the answer is what would be registered.
        A URI registered before keeps its deployment id (it is updated in place).
        """
        uri = uri.rstrip("/")
        if not uri.startswith(("http://", "https://")):
            raise BadRequest("uri must be an http:// or https:// URL")
        manifest = await self.discover(uri)
        existing = next((d for d in self.deployments.values() if d.uri == uri), None)
        new_id = existing.id if existing is not None else deployment_id(uri)
        attempt = 1
        while existing is None and new_id in self.deployments:
            # Taken by a deployment moved away from this URI (`move`): this is another deployment.
            attempt += 1
            new_id = deployment_id(f"{uri}#{attempt}")
        dep = DeploymentRecord(
            id=new_id,
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
                input_schemas={h.name: h.input_schema for h in s.handlers if h.input_schema is not None},
                output_schemas={h.name: h.output_schema for h in s.handlers if h.output_schema is not None},
                ingress_private=s.ingress_private,
                private_handlers=[h.name for h in s.handlers if h.ingress_private],
                limits=_code_limits(s),
            )
            for s in manifest.services
        ]
        if dry_run:
            return dep, services

        machine = self.machine
        assert machine is not None, "load() first"
        declared = schedule_rules.declared(manifest.services)
        now = self._clock.now_ms()

        def write(txn: Txn) -> tuple[list[str], Effects]:
            machine.register(txn, dep, services)
            # The schedules its handlers declare change with the registration, in its transaction.
            return machine.sync_schedules(txn, services, declared, now=now)

        changed, effects = await self._writer.submit(write)
        self.deployments[dep.id] = dep
        for svc in services:
            self.services[svc.name] = svc
        self.on_effects(effects)
        self.on_changed()
        names = [svc.name for svc in services]
        self.refresh_limits(names)
        # Limits the code raised or dropped let queued invocations go now.
        await self.pump_limits(name for name in names if self._has_groups(name))
        log.info("registered deployment %s at %s: %s", dep.id, uri, ", ".join(dep.services))
        if changed:
            log.info("code schedules created, changed or removed: %s", ", ".join(changed))
        return dep, services

    async def move(self, deployment_id: str, uri: str) -> DeploymentRecord:
        """Serve a deployment from `uri` instead (the same code served elsewhere): discovery runs
        against `uri`, and its services, their types and handlers must be the deployment's.
        Returns after commit, with the routing table updated.

        Raises:
            NotFound: unknown deployment. BadRequest: not an http(s) URL, or `uri` serves other
                services. Unavailable: `uri` cannot be reached. Conflict: another deployment has it.
        """
        machine = self.machine
        assert machine is not None, "load() first"
        uri = uri.rstrip("/")
        if not uri.startswith(("http://", "https://")):
            raise BadRequest("uri must be an http:// or https:// URL")
        current = self.deployments.get(deployment_id)
        if current is None:
            raise NotFound(f"deployment '{deployment_id}' not found")
        manifest = await self.discover(uri)
        served = {s.name: (s.type, sorted((h.name, h.kind) for h in s.handlers)) for s in manifest.services}
        with self._store.read() as txn:
            stored = {s.name: s for s in machine.services(txn)}
        known = {name: (s.type, sorted(s.handlers.items())) for name, s in stored.items() if name in current.services}
        expected = {name: known.get(name) for name in current.services}
        if served != expected:
            raise BadRequest(
                f"{uri} does not serve what deployment '{deployment_id}' serves (services, types and handlers "
                f"must be the same: {sorted(served)} there, {sorted(current.services)} here); register it as a "
                "new deployment instead"
            )
        moved = await self._writer.submit(lambda txn: machine.move_deployment(txn, deployment_id, uri))
        self.deployments[deployment_id] = moved
        self.on_changed()
        log.info("moved deployment %s from %s to %s", deployment_id, current.uri, uri)
        return moved

    def _has_groups(self, service: str) -> bool:
        machine = self.machine
        assert machine is not None, "load() first"
        with self._store.read() as txn:
            return bool(machine.limit_groups(txn, service))

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
            self.flow.pop(name, None)
        for svc in removal.moved_services:
            self.services[svc.name] = svc
        self.on_changed()
        log.info(
            "removed deployment %s at %s%s: services removed: %s; moved to another deployment: %s",
            deployment_id, removal.deployment.uri,
            f" (forced, {len(removal.pinned)} invocations pinned to it)" if removal.pinned else "",
            ", ".join(removal.removed_services) or "none", ", ".join(s.name for s in removal.moved_services) or "none",
        )  # fmt: skip
        return removal


def _code_limits(info: ServiceInfo) -> ServiceLimits | None:
    """The limits a service's discovery announced."""
    # Each Limit checked its values when the manifest was decoded; the handlers are its own.
    return flow.service_limits(
        info.limit, info.key_limit, {h.name: (h.limit, h.key_limit, h.limit_key) for h in info.handlers}
    )
