"""The running proxy's use cases: what the ingress and admin APIs ask for, as one object.

A Runtime owns the engine's parts (store, writer, machine, registry, invoker, timers, sweeper,
residency) and serves the use cases on top of them. Every write goes the same way::

    API handler ──▶ Runtime.<use case> ──▶ Writer.submit(machine.<rule>) ──▶ commit
                                       ◀── Effects ── Runtime.apply: wake waiters, launch attempts,
                                                      arm retries, poke the timer loop

Reads go through `Machine`'s read functions over a read transaction. Nothing else holds state.

On PostgreSQL several proxies share the work (`proxy.engine.leases`): effects for an invocation
of a partition another proxy owns, and results other proxies' clients may wait for, go out as
notices (`proxy.engine.notices`); the notices of the others come in through `_on_notice`. A
partition taken over resumes its invocations (`_recover`); a partition lost stops them here.
Every owner also reconciles its partitions now and then (`RECONCILE_INTERVAL`) and waiters
re-read their invocation (`WAIT_POLL`), since a notice can be lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from durable_core.effects import Effects
from durable_core.errors import BadRequest, Conflict, NotFound, ProxyError, Unavailable
from durable_core.flow import FlowGroup
from durable_core.journal import new_seed
from durable_core.keys import new_invocation_id
from durable_core.machine import DeploymentRemoval, Limits, Machine
from durable_core.records import Action, DeploymentRecord, InvocationRecord, ServiceLimits, ServiceRecord, Status
from durable_core.retry import RetryPolicy
from durable_core.txn import DBS, Backend, Txn
from handlers_sdk.clock import Clock, SystemClock
from handlers_sdk.protocol import AppendRequest, Entry, Failure
from proxy import faults
from proxy.config import Settings
from proxy.engine.identity import Identity, SigningKeyError
from proxy.engine.invoker import Invoker
from proxy.engine.leases import Leases
from proxy.engine.metrics import Metrics
from proxy.engine.notices import Notice, Notices
from proxy.engine.registry import Registry
from proxy.engine.residency import MapResidency
from proxy.engine.schedules import Scheduler
from proxy.engine.sweeper import Sweeper
from proxy.engine.timers import Timers
from proxy.engine.tracing import Tracing, tracing_from
from proxy.engine.transport import AiohttpTransport, HttpxTransport, Transport, handler_ssl_context
from proxy.store.lmdb import Store
from proxy.store.writer import Writer

if TYPE_CHECKING:
    from proxy.store.postgres import PostgresStore

__all__ = ["RECONCILE_INTERVAL", "WAIT_POLL", "Runtime", "SqlSnapshot", "Target", "backend_of", "limits_of"]

log = logging.getLogger("proxy.engine.runtime")

#: Seconds `Runtime.start` keeps trying to reach PostgreSQL (a database starting alongside).
_POSTGRES_START_WAIT = 10.0
#: Several proxies: seconds between two checks of an owner's partitions for work no notice announced.
RECONCILE_INTERVAL = 5.0
#: Several proxies: fresh ids tried for one in an owned partition (1 in 3 fits with 3 proxies).
_ID_TRIES = 64
#: Several proxies: seconds a waiting client's invocation is re-read when no notice came.
WAIT_POLL = 2.0


class Target:
    """What an ingress request asks for: service, handler and (for objects) key."""

    __slots__ = ("handler", "key", "service")

    def __init__(self, service: str, handler: str, key: str = "") -> None:
        self.service = service
        self.handler = handler
        self.key = key


#: How a state's version is computed (`Runtime.replace_state_if`).
VersionOf = Callable[[dict[str, bytes]], str]


@dataclasses.dataclass
class SqlSnapshot:
    """The records one SQL query over the admin API reads, from one read transaction
    (`Runtime.sql_snapshot`): at most `limit` invocations (the newest) and journal rows."""

    invocations: list[InvocationRecord] = dataclasses.field(default_factory=list)
    #: True when there were more invocations (or journal rows) than the limit.
    truncated: bool = False
    #: Invocation id -> its journal rows (JSON `JournalItem`s), for the invocations read.
    journals: dict[str, list[bytes]] = dataclasses.field(default_factory=dict)
    #: (service, key) -> state, for the keys with state (`state_keys`) and those of the invocations read.
    states: dict[tuple[str, str], dict[str, bytes]] = dataclasses.field(default_factory=dict)
    deployments: list[DeploymentRecord] = dataclasses.field(default_factory=list)
    services: list[ServiceRecord] = dataclasses.field(default_factory=list)


def _transport(settings: Settings) -> Transport:
    trust = handler_ssl_context(settings.handler_ca_file)  # https:// handlers (and their discovery)
    if settings.transport == "aiohttp":
        return AiohttpTransport(
            settings.max_response_bytes, settings.connect_timeout, settings.max_handler_connections, ssl_context=trust
        )
    return HttpxTransport(
        settings.max_response_bytes, settings.connect_timeout, None, settings.max_handler_connections, ssl_context=trust
    )


def limits_of(settings: Settings) -> Limits:
    """The machine's limits and retry policy, from the settings."""
    return Limits(
        max_journal_entries=settings.max_journal_entries,
        max_entry_bytes=settings.max_entry_bytes,
        retention_ms=int(settings.retention * 1000),
        schedule_grace_ms=int(settings.schedule_grace * 1000),
        retry=RetryPolicy(
            initial_ms=int(settings.retry_initial_interval * 1000),
            factor=settings.retry_factor,
            max_ms=int(settings.retry_max_interval * 1000),
            max_attempts=settings.retry_max_attempts,
        ),
    )


def backend_of(settings: Settings) -> Backend:
    """The store the settings name: PostgreSQL for a ``--store postgresql://...``, else LMDB in
    ``--data-dir`` (psycopg is imported only for PostgreSQL). Not opened yet."""
    if settings.store:
        from proxy.store.postgres import PostgresStore

        return PostgresStore(settings.store, settings.partitions, settings.lease_time)
    return Store(settings.data_dir, settings.map_size)


class Runtime:
    """Everything the HTTP apps share. `start()` opens the store and resumes in-flight work."""

    def __init__(self, settings: Settings, clock: Clock | None = None, transport: Transport | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.metrics = Metrics()
        self.metrics.gauges.append(self._gauges)
        self.transport: Transport = transport or _transport(settings)
        backend = backend_of(settings)
        #: The LMDB store, or None on another backend (map residency, usage and map growth are LMDB's).
        self.lmdb: Store | None = backend if isinstance(backend, Store) else None
        #: The PostgreSQL store, or None.
        self.postgres: PostgresStore | None = None if self.lmdb is not None else cast("PostgresStore", backend)
        # The engine's parts are typed over LMDB's Store but use only the seam's read() (and
        # the tests its get/count, which PostgresStore has too).
        self.store = cast("Store", backend)
        self.writer = Writer(backend, settings.max_map_size)
        self.writer.on_commit = self.metrics.observe_commit
        #: The partitions this proxy drives (all of them on LMDB).
        self.leases = Leases(self.postgres, settings.lease_time)
        self.leases.on_gained = self._gained
        self.leases.on_lost = self._lost
        self.writer.owner = self.leases.proxy_id
        #: Notices to and from the other proxies (None on LMDB: there are none).
        self.notices: Notices | None = None
        if self.postgres is not None:
            self.notices = Notices(self.postgres, self.leases.proxy_id, self._on_notice, self._reconcile_soon)
        #: The key that signs every request to a handler service (loaded by `start`).
        self.identity = Identity(settings, self.clock)
        self.registry = Registry(
            self.store, self.writer, self.transport, self.clock, settings.discovery_timeout, self.identity
        )
        self.machine = Machine(limits_of(settings), self.registry.resolve, limits_of=self.registry.limits_of())
        self.invoker = Invoker(
            settings, self.store, self.writer, self.machine, self.registry, self.transport, self.clock,
            self.metrics, self.apply, self.identity, leases=self.leases,
        )  # fmt: skip
        #: OpenTelemetry spans of invocations (None: tracing is off; see `proxy.engine.tracing`).
        self.tracing: Tracing | None = None
        self.use_tracing(tracing_from(settings.tracing, self.find))
        self.timers = Timers(self.store, self.writer, self.machine, self.clock, self.apply, self.metrics, self.leases)
        self.schedules = Scheduler(self.store, self.writer, self.machine, self.clock, self.apply)
        self.registry.on_effects = self.apply
        self.registry.on_changed = self._registry_changed
        self.sweeper = Sweeper(
            self.store, self.writer, self.machine, self.clock, settings.sweep_interval,
            leader=lambda: self.leases.owns_partition(0),
        )  # fmt: skip
        self.residency = MapResidency(
            self.lmdb or Store(settings.data_dir, settings.map_size),  # not LMDB: never enabled (limit 0)
            self.writer,
            settings.resident_map_limit if self.lmdb is not None else 0,
            settings.resident_check_interval,
            self.clock,
        )
        self._waiters: dict[str, list[asyncio.Future[InvocationRecord]]] = {}
        #: Set on shutdown: no client waits for a result any more (see `release_waiters`).
        self.draining = False
        self._background: set[asyncio.Task[None]] = set()
        self.started = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, start the writer, load deployments, resume in-flight invocations.

        Raises:
            StoreLocked: another proxy owns the data directory.
            StoreFailure: PostgreSQL unreachable (after trying for a few seconds) or its schema
            is newer than this proxy's.
            SigningKeyError: the signing key file is missing or not an Ed25519 key.
        """
        if self.postgres is not None:
            self.postgres.open(wait=_POSTGRES_START_WAIT)
        else:
            self.store.open()
        self.writer.start()
        try:
            await self.identity.start(self.writer)
        except SigningKeyError:
            await self.writer.close()
            self.store.close()
            raise
        self.registry.load(self.machine)
        # Once per store written before the index of pinned invocations existed. Checked by a read
        # first: a start must not cost a commit when there is nothing to index.
        with self.store.read() as txn:
            index_missing = self.machine.pinned_index_missing(txn)
        if index_missing:
            await self.writer.submit(self.machine.index_pinned)
        if self.notices is not None:
            self.notices.start()
            # Listening before owning anything: no notice for a partition taken below is missed.
            await asyncio.to_thread(self.notices.wait_listening, 5.0)
            await self.leases.start()  # takes a share of the partitions: `_gained` resumes them
            self._spawn(self._reconcile_loop())
        else:
            await self._recover()
        self.timers.start()
        self.sweeper.start()
        self._spawn(self.sweeper.apply_retention_logged())
        self.residency.start()
        for uri in self.settings.deployments:
            self._spawn(self._register_until_up(uri))
        self.started = True

    async def stop(self) -> None:
        """Stop attempts and timers, commit what is queued, close the store."""
        if not self.started:
            return
        self.started = False
        for task in list(self._background):
            task.cancel()
        await self.timers.close()
        await self.sweeper.close()
        await self.residency.close()
        await self.invoker.close()
        await self.leases.close()  # hands the partitions over at once
        if self.notices is not None:
            await self.notices.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.flush)  # the spans still queued (blocks: not in the loop)
        await self.writer.close()
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.cancel()
        await self.transport.aclose()
        self.store.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _register_until_up(self, uri: str) -> None:
        delay = 0.2
        while True:
            try:
                await self.registry.register(uri)
                return
            except Exception as exc:  # noqa: BLE001 - keep trying until the service is up
                log.warning("cannot register %s yet: %s", uri, exc)
            await self.clock.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _recover(self, partitions: set[int] | None = None) -> None:
        """Re-arm every invocation that was in flight when the last process stopped (or when the
        last owner of `partitions` lost them), unless an attempt or retry of it is armed here."""
        leases = self.leases

        def idle(inv_id: str) -> bool:
            if self.invoker.is_busy(inv_id):
                return False
            return partitions is None or leases.partition(inv_id) in partitions

        def scan() -> tuple[list[str], list[InvocationRecord]]:
            running: list[str] = []
            backing_off: list[InvocationRecord] = []
            with self.store.read() as txn:
                for record in self.machine.active(txn, idle):
                    if record.status == "running":
                        running.append(record.id)
                    elif record.status == "backing-off":
                        backing_off.append(record)
            return running, backing_off

        # PostgreSQL: the scan is a round trip per row, so off the event loop.
        running, backing_off = await asyncio.to_thread(scan) if self.postgres is not None else scan()
        for record in backing_off:
            if not self.invoker.is_busy(record.id):
                self.invoker.schedule(record)
        if running:
            log.info("resuming %d in-flight invocations", len(running))
            await asyncio.gather(*(self.invoker.begin(inv_id) for inv_id in running))

    # -- several proxies ------------------------------------------------------------------------

    def _gained(self, partitions: set[int]) -> None:
        """Partitions just taken: resume their work, fire their due timers."""
        self._spawn(self._recover_logged(partitions))
        self.timers.poke(0)

    async def _recover_logged(self, partitions: set[int]) -> None:
        """`_recover`, logging a failure (the reconciliation tries again)."""
        try:
            await self._recover(partitions)
        except Exception as exc:  # noqa: BLE001 - a background task: the next round retries
            log.warning("resuming the invocations of partitions %s failed: %s", sorted(partitions), exc)

    def _lost(self, partitions: set[int]) -> None:
        """Partitions lost (or handed back): their new owner resumes them; stop them here."""
        dropped = self.invoker.abandon_partitions(partitions)
        if dropped:
            log.warning("stopped %d attempts of partitions now owned elsewhere", dropped)

    def _reconcile_soon(self) -> None:
        """Notices may have been lost (the listener reconnected): check the owned partitions now."""
        self._spawn(self._recover_logged(set(self.leases.owned)))
        self.timers.poke(0)
        for inv_id in list(self._waiters):
            self._spawn(self._wake_if_completed(inv_id))

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            await self._recover_logged(set(self.leases.owned))

    def _registry_changed(self) -> None:
        if self.notices is not None:
            self.notices.registry_changed()

    def _on_notice(self, notice: Notice) -> None:
        """What another proxy committed that concerns this one."""
        for inv_id in notice.d:
            if inv_id in self._waiters:
                self._spawn(self._wake_if_completed(inv_id))
            if inv_id in self.invoker.active:
                self.invoker.abandon(inv_id)  # completed elsewhere: a cancel or kill fenced it
        owned = [inv_id for inv_id in notice.r if self.leases.owns(inv_id)]
        if owned:
            self._spawn(self._run_notified(owned))
        if notice.t is not None:
            self.timers.poke(notice.t)
        if notice.g:
            try:
                self.registry.reload()
            except Exception as exc:  # noqa: BLE001 - the next notice or restart reloads it
                log.warning("could not reload the deployments: %s", exc)

    async def _read_record(self, invocation_id: str) -> InvocationRecord | None:
        """The stored record, read off the event loop on PostgreSQL (None: not found)."""
        if self.postgres is None:
            return self.find(invocation_id)
        return await asyncio.to_thread(self.find, invocation_id)

    async def _wake_if_completed(self, invocation_id: str) -> None:
        try:
            record = await self._read_record(invocation_id)
        except ProxyError:  # the store is down: the waiter's own polling reads it again
            return
        if record is not None and record.is_completed:
            for future in self._waiters.get(invocation_id, ()):
                if not future.done():
                    future.set_result(record)

    async def _run_notified(self, invocation_ids: list[str]) -> None:
        """Send the attempts (or arm the retries) another proxy committed in owned partitions."""
        for inv_id in invocation_ids:
            try:
                record = await self._read_record(inv_id)
            except ProxyError:  # the store is down: the reconciliation picks it up later
                return
            if record is None or not self.leases.owns(inv_id):
                continue
            if record.status == "running":
                self.invoker.launch(record)
            elif record.status == "backing-off":
                self.invoker.schedule(record)

    # -- effects ------------------------------------------------------------------------------------

    def use_tracing(self, tracing: Tracing | None) -> None:
        """Emit the spans of invocations through `tracing` (None: off). Call before `start`."""
        self.tracing = self.invoker.tracing = tracing

    def find(self, invocation_id: str) -> InvocationRecord | None:
        """The stored record of an invocation, or None."""
        try:
            return self.get(invocation_id)
        except NotFound:
            return None

    def apply(self, effects: Effects) -> None:
        """Carry out what a committed transaction asked for."""
        if self.tracing is not None:
            for record in effects.completed:
                self.tracing.completed(record)
        for record in effects.completed:
            for future in self._waiters.get(record.id, ()):
                if not future.done():
                    future.set_result(record)
        elsewhere: list[str] = []
        owns = self.leases.owns
        for record in effects.launch:
            if owns(record.id):
                self.invoker.launch(record)
            else:
                elsewhere.append(record.id)
        for record in effects.retry:
            if owns(record.id):
                self.invoker.schedule(record)
            else:
                elsewhere.append(record.id)
        if effects.wake_at is not None:
            self.timers.poke(effects.wake_at)
        notices = self.notices
        if notices is not None:
            if effects.completed:
                notices.completed([record.id for record in effects.completed])
            if elsewhere:
                notices.run(elsewhere)
            if effects.wake_at is not None:
                notices.timer(effects.wake_at)

    # -- invocations ----------------------------------------------------------------------------

    async def invoke(
        self,
        target: Target,
        body: bytes,
        idempotency: str | None,
        headers: dict[str, str],
        delay_ms: int = 0,
    ) -> tuple[InvocationRecord, bool]:
        """Create an invocation (or find the one with the same idempotency key). Returns after commit.

        Returns:
            The record and True if it was created by this call, False if it already existed.
        """
        now = self.clock.now_ms()
        record = self.machine.new_record(
            self._new_id(now), target.service, target.handler, target.key, now=now, random_seed=new_seed(),
            idempotency=idempotency, headers=headers,
        )  # fmt: skip
        faults.hit("ingress.before_commit")
        stored, created, effects = await self.writer.submit(
            lambda txn: self.machine.invoke(txn, record, body, now=now, delay_ms=delay_ms)
        )
        self.apply(effects)
        return stored, created

    def _new_id(self, now: int) -> str:
        """A fresh invocation id, in a partition this proxy owns when it owns any: the invocation
        then runs here, and its caller's wait needs no notice from another proxy."""
        inv_id = new_invocation_id(now)
        if not self.leases.clustered or not self.leases.owned:
            return inv_id
        for _ in range(_ID_TRIES):
            if self.leases.owns(inv_id):
                return inv_id
            inv_id = new_invocation_id(now)
        return inv_id

    async def complete_awakeable(self, awakeable: str, value: bytes | None, failure: Failure | None) -> None:
        """Resolve (`value`) or reject (`failure`) an awakeable. Returns after commit.

        Raises:
            BadRequest: not an awakeable id. NotFound: unknown awakeable.
            Conflict: it is already completed.
        """
        now = self.clock.now_ms()
        self.apply(
            await self.writer.submit(
                lambda txn: self.machine.complete_awakeable(txn, awakeable, now=now, value=value, failure=failure)
            )
        )

    async def call(
        self, target: Target, body: bytes, idempotency: str | None, headers: dict[str, str]
    ) -> tuple[InvocationRecord, Failure | None]:
        """An ingress call: invoke, then wait for the outcome.

        Returns:
            The completed record and None; or, for a call the machine answers at once (a
            workflow's run called again, `Machine.duplicate_call_failure`), the existing record
            (maybe still running) and the failure to answer with.
        """
        record, created = await self.invoke(target, body, idempotency, headers)
        failure = self.machine.duplicate_call_failure(record, created)
        if failure is not None:
            return record, failure
        return await self.wait(record.id, known=record if created else None), None

    async def accept_awakeable(self, awakeable: str, value: bytes | None, failure: Failure | None) -> None:
        """Resolve or reject an awakeable as Restate's ingress does (`Machine.accept_awakeable`: a
        completion with nothing left to complete is accepted and dropped). Returns after commit.

        Raises:
            BadRequest: not an awakeable id. NotFound: its invocation has not journaled it yet.
        """
        now = self.clock.now_ms()
        self.apply(
            await self.writer.submit(
                lambda txn: self.machine.accept_awakeable(txn, awakeable, now=now, value=value, failure=failure)
            )
        )

    def idempotent_invocation(self, service: str, handler: str, key: str, idempotency: str) -> str:
        """The invocation an idempotency key names on a target, or NotFound."""
        now = self.clock.now_ms()
        with self.store.read() as txn:
            found = self.machine.idempotent_invocation(txn, service, handler, key, idempotency, now=now)
        if found is None:
            raise NotFound("invocation not found")
        return found

    def workflow_run(self, workflow: str, key: str) -> str:
        """The invocation id of a workflow key's run, or NotFound."""
        svc = self.registry.service(workflow)
        if svc.type != "workflow":
            raise BadRequest(f"'{workflow}' is not a workflow")
        with self.store.read() as txn:
            found = self.machine.workflow_run(txn, workflow, key)
        if found is None:
            raise NotFound(f"workflow '{workflow}/{key}' not found")
        return found

    async def act(self, action: Action | str, invocation_id: str, latest: bool = False) -> InvocationRecord | None:
        """Cancel, kill, pause, resume or purge one invocation. Returns after commit.

        Args:
            action: one of ``cancel``, ``kill``, ``pause``, ``resume``, ``purge``.
            invocation_id: the invocation.
            latest: with ``resume``, move it to the latest deployment of its service.

        Returns:
            The invocation's record after the action (None after a purge).

        Raises:
            NotFound: unknown invocation. Conflict: the action does not apply to its status.
            BadRequest: unknown action.
        """
        now = self.clock.now_ms()
        deployment = ""
        if action == "resume" and latest:
            current = self.get(invocation_id)
            deployment = self.registry.resolve(current.service, current.handler)[0]
        record, effects = await self.writer.submit(
            lambda txn: self.machine.act(txn, action, invocation_id, now=now, deployment_id=deployment)
        )
        # Attempts in flight for what changed are fenced now: stop waiting for them.
        if action != "resume":
            for changed in (*effects.launch, *effects.completed, *([record] if record else [])):
                self.invoker.abandon(changed.id)
        self.apply(effects)
        return record

    async def append(self, request: AppendRequest) -> Entry | None:
        """Journal one entry a handler acked (see `Invoker.append`). Returns after commit."""
        return await self.invoker.append(request)

    async def set_limits(self, service: str, override: ServiceLimits | None) -> ServiceLimits | None:
        """Set an operator's concurrency and rate limits of `service` in place of its code's (None:
        back to the code's), starting what they let go. Returns after commit, with the limits that
        apply now.

        Raises:
            NotFound: unknown service. BadRequest: a limit that cannot apply.
        """
        self.registry.service(service)
        now = self.clock.now_ms()
        limits, effects = await self.writer.submit(lambda txn: self.machine.set_limits(txn, service, override, now=now))
        self.registry.refresh_limits([service])
        self.apply(effects)
        # Admissions committed between the commit and the cache update used the old limits.
        await self.registry.pump_limits([service])
        return limits

    def limits(self, service: str) -> tuple[ServiceLimits | None, ServiceLimits | None, list[FlowGroup]]:
        """The limits `service`'s code declares, an operator's override, and its limit groups in use.

        Raises:
            NotFound: unknown service.
        """
        svc = self.registry.service(service)
        with self.store.read() as txn:
            return svc.limits, self.machine.limit_override(txn, service), self.machine.limit_groups(txn, service)

    def queue_position(self, record: InvocationRecord) -> int | None:
        """The place in line (1: next) of an invocation waiting for a concurrency slot, else None."""
        if not record.flow_wait:
            return None
        with self.store.read() as txn:
            return self.machine.queue_position(txn, record)

    async def remove_deployment(self, deployment_id: str, force: bool = False) -> DeploymentRemoval:
        """Remove a deployment and the services only it serves. Returns after commit.

        Raises:
            NotFound: unknown deployment. Conflict: invocations not completed are pinned to it
                and `force` is not set.
        """
        return await self.registry.remove(deployment_id, force)

    async def move_deployment(self, deployment_id: str, uri: str) -> DeploymentRecord:
        """Serve a deployment from another URI (`Registry.move`). Returns after commit."""
        return await self.registry.move(deployment_id, uri)

    def pinned(self, deployment_id: str) -> list[InvocationRecord]:
        """The invocations not completed that are pinned to a deployment (from its index rows)."""
        with self.store.read() as txn:
            return self.machine.pinned(txn, deployment_id)

    async def replace_state(self, service: str, key: str, state: dict[str, bytes]) -> None:
        """Replace the whole state of an object or workflow key. Returns after commit."""
        await self.writer.submit(lambda txn: self.machine.replace_state(txn, service, key, state))

    async def replace_state_if(
        self, service: str, key: str, state: dict[str, bytes], version: str, version_of: VersionOf
    ) -> None:
        """Replace the whole state of a key if its current state has `version` (as `version_of`
        computes it: Restate's optimistic check), in the same write. Returns after commit.

        Raises:
            Conflict: the state changed since `version` was read.
        """

        def write(txn: Txn) -> None:
            current = version_of(self.machine.state(txn, service, key))
            if current != version:
                raise Conflict(f"the state of '{service}/{key}' changed: its version is {current}, not {version}")
            self.machine.replace_state(txn, service, key, state)

        await self.writer.submit(write)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, invocation_id: str) -> InvocationRecord:
        """The stored record of an invocation, or NotFound."""
        with self.store.read() as txn:
            return self.machine.get(txn, invocation_id)

    def journal(self, invocation_id: str) -> list[bytes]:
        """The stored journal of an invocation (JSON `JournalItem`s), in index order."""
        with self.store.read() as txn:
            return self.machine.journal(txn, invocation_id)

    def input(self, invocation_id: str) -> bytes:
        """The input an invocation was created with (JSON)."""
        with self.store.read() as txn:
            return self.machine.input(txn, invocation_id)

    def state(self, service: str, key: str) -> dict[str, bytes]:
        """The state of an object or workflow key."""
        with self.store.read() as txn:
            return self.machine.state(txn, service, key)

    def list_invocations(
        self,
        status: Status | str | None = None,
        service: str | None = None,
        handler: str | None = None,
        limit: int = 50,
        after: str | None = None,
        before: str | None = None,
        order: str = "asc",
    ) -> tuple[list[InvocationRecord], str | None]:
        """A page of invocations in id order (`order` asc: oldest first, paged with `after`; desc:
        newest first, paged with `before`), filtered; returns it and the cursor of the next page."""
        with self.store.read() as txn:
            return self.machine.list_invocations(
                txn, status=status, service=service, handler=handler, limit=limit, after=after, before=before,
                order=order,
            )  # fmt: skip

    def sql_snapshot(self, invocations: bool, journals: bool, states: bool, limit: int) -> SqlSnapshot:
        """What `POST /query` reads, from one read transaction: deployments and services, and if
        asked the newest `limit` invocations, their journals (at most `limit` rows in all) and the
        state of object and workflow keys: at most `limit` keys of those ``state_keys`` lists
        (every key with state, also one whose invocations were all purged) and those of the
        invocations read (state written before ``state_keys`` existed is only found through
        them), skipping keys with no state."""
        snapshot = SqlSnapshot()
        with self.store.read() as txn:
            snapshot.deployments = self.machine.deployments(txn)
            snapshot.services = self.machine.services(txn)
            if not (invocations or journals or states):
                return snapshot
            snapshot.invocations, snapshot.truncated = self.machine.recent_invocations(txn, limit)
            rows = 0
            for record in snapshot.invocations if journals else ():
                journal = self.machine.journal(txn, record.id)
                if rows + len(journal) > limit:
                    snapshot.truncated = True
                    break
                snapshot.journals[record.id] = journal
                rows += len(journal)
            if not states:
                return snapshot
            owners, more = self.machine.keys_with_state(txn, limit)
            snapshot.truncated = snapshot.truncated or more
            owners += [(record.service, record.key) for record in snapshot.invocations if record.keyed]
            for owner in dict.fromkeys(owners):  # each key once, in order
                state = self.machine.state(txn, *owner)
                if state:
                    snapshot.states[owner] = state
        return snapshot

    def status_counts(self) -> dict[str, int]:
        """How many invocations are in each status."""
        with self.store.read() as txn:
            return self.machine.status_counts(txn)

    def stats(self) -> dict[str, Any]:
        """Row counts, invocations by status, storage, writer and loop counters."""
        with self.store.read() as txn:
            counts = {name: txn.count(name) for name in DBS}
        return {
            "counts": counts,
            "invocations": self.status_counts(),
            "storage": self.store.usage() if self.lmdb is not None else self._storage_info(),
            "writer": {"commits": self.writer.commits, "batched_writes": self.writer.batched},
            "running_attempts": len(self.invoker.active),
            "timers_fired": self.timers.fired,
            "purged": self.sweeper.purged,
            "cluster": self.cluster(),
        }

    def cluster(self) -> dict[str, Any]:
        """This proxy's leases, the live proxies and the notices (``GET /cluster``)."""
        described = self.leases.describe()
        if self.notices is not None:
            described["notices"] = {"sent": self.notices.sent, "received": self.notices.received}
            described["conflicts"] = self.writer.conflicts
        return described

    def _storage_info(self) -> dict[str, Any]:
        """The ``storage`` part of `stats` on a store other than LMDB (its URL without password)."""
        return self.postgres.info() if self.postgres is not None else {}

    def _gauges(self) -> list[str]:
        if not self.started:
            return []
        if self.lmdb is None:
            lines = self.metrics.render_gauges(
                statuses=self.status_counts(), map_bytes=0, used_bytes=0, running_attempts=len(self.invoker.active),
                purged=self.sweeper.purged, resident_bytes=0, resident_drops=0,
            )  # fmt: skip
            return [line for line in lines if "durable_lmdb_" not in line]  # no LMDB map to report
        usage = self.store.usage()
        return self.metrics.render_gauges(
            statuses=self.status_counts(),
            map_bytes=usage["map_size"],
            used_bytes=usage["used_bytes"],
            running_attempts=len(self.invoker.active),
            purged=self.sweeper.purged,
            resident_bytes=self.residency.measure(),
            resident_drops=self.residency.drops,
        )

    # -- waiting for results ------------------------------------------------------------------------

    async def wait(self, invocation_id: str, known: InvocationRecord | None = None) -> InvocationRecord:
        """Wait until the invocation is completed and return its record.

        Args:
            known: its record as this proxy just committed it, not completed (a call that just
                created it: no completion can come before this wait registers, so no read).

        Raises:
            Unavailable: the proxy is shutting down (the invocation goes on after the restart).
        """
        if self.draining:
            record = self.get(invocation_id)
            if record.is_completed:
                return record
            raise Unavailable("the proxy is shutting down; attach again once it is back")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InvocationRecord] = loop.create_future()
        # Register before reading, so a completion between the read and the wait is not missed.
        waiters = self._waiters.setdefault(invocation_id, [])
        waiters.append(future)
        try:
            record = known if known is not None and not known.is_completed else self.get(invocation_id)
            if record.is_completed:
                return record
            if self.notices is None:
                return await future
            while True:  # several proxies: a notice may be lost, so re-read now and then
                try:
                    return await asyncio.wait_for(asyncio.shield(future), WAIT_POLL)
                except TimeoutError:
                    again = await self._read_record(invocation_id)
                    if again is not None and again.is_completed:
                        return again
        finally:
            waiters.remove(future)
            if not waiters:
                self._waiters.pop(invocation_id, None)

    def waiting_clients(self, invocation_id: str) -> int:
        """How many callers are waiting (`wait`) for the invocation's result right now."""
        return len(self._waiters.get(invocation_id, ()))

    def release_waiters(self) -> None:
        """Shutdown: answer every client waiting for a result with 503 instead of keeping it waiting.

        A waiting request would otherwise hold the HTTP server open until its invocation finishes,
        which cannot happen once the servers stop accepting step acks (SIGTERM would never exit).
        """
        self.draining = True
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(Unavailable("the proxy is shutting down; attach again once it is back"))
