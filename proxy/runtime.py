"""The running proxy: owns the store, the writer, the registry and the invoker, and glues them.

Ingress and admin routes call into a Runtime; nothing else holds state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, cast

from handlers_sdk.protocol import AwakeableEntry, Failure, parse_awakeable_id
from proxy import control, faults
from proxy.clock import Clock, SystemClock
from proxy.config import Settings
from proxy.entries import Effects, complete_entry, create_invocation, new_seed, read_record
from proxy.errors import BadRequest, NotFound, Unavailable
from proxy.invoker import Invoker
from proxy.journal import InvocationRecord, decode_record
from proxy.keys import idempotency_key, invocation_key, new_invocation_id
from proxy.metrics import Metrics
from proxy.objects import object_hash
from proxy.registry import Registry
from proxy.residency import MapResidency
from proxy.store import Store
from proxy.sweeper import Sweeper
from proxy.timers import Timers
from proxy.transport import AiohttpTransport, HttpxTransport, Transport
from proxy.writer import Txn, Writer

__all__ = ["Runtime", "Target"]

log = logging.getLogger("proxy.runtime")


class Target:
    """What an ingress request asks for: service, handler and (for objects) key."""

    __slots__ = ("handler", "key", "service")

    def __init__(self, service: str, handler: str, key: str = "") -> None:
        self.service = service
        self.handler = handler
        self.key = key


class Runtime:
    """Everything the HTTP apps share. `start()` opens the store and resumes in-flight work."""

    def __init__(self, settings: Settings, clock: Clock | None = None, transport: Transport | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._transport = transport
        self._waiters: dict[str, list[asyncio.Future[InvocationRecord]]] = {}
        #: Set on shutdown: no client waits for a result any more (see `release_waiters`).
        self.draining = False
        self._background: set[asyncio.Task[None]] = set()
        self.started = False
        self.metrics = Metrics()
        self.metrics.gauges.append(self._gauges)

    async def start(self) -> None:
        """Open the store, start the writer, load deployments, resume in-flight invocations."""
        settings = self.settings
        self.store = Store(settings.data_dir, settings.map_size)
        self.writer = Writer(self.store, settings.max_map_size)
        self.writer.on_commit = self.metrics.observe_commit
        self.writer.start()
        if self._transport is None:
            if settings.transport == "aiohttp":
                self._transport = AiohttpTransport(
                    settings.max_response_bytes, settings.connect_timeout, settings.max_handler_connections
                )
            else:
                self._transport = HttpxTransport(
                    settings.max_response_bytes, settings.connect_timeout, None, settings.max_handler_connections
                )
        self.transport: Transport = self._transport
        self.registry = Registry(self.store, self.writer, self.transport, self.clock, settings.discovery_timeout)
        self.registry.load()
        self.invoker = Invoker(
            settings, self.store, self.writer, self.registry, self.transport, self.clock, self._completed
        )
        self.invoker.metrics = self.metrics
        self.timers = Timers(self.store, self.writer, self.clock, self.invoker.apply, self.metrics)
        self.invoker.on_timer = self.timers.poke
        self.sweeper = Sweeper(self.store, self.writer, self.clock, settings.sweep_interval)
        self.residency = MapResidency(
            self.store, self.writer, settings.resident_map_limit, settings.resident_check_interval
        )
        await self._recover()
        self.timers.start()
        self.sweeper.start()
        self.residency.start()
        for uri in settings.deployments:
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
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _recover(self) -> None:
        """Re-arm every invocation that was in flight when the last process stopped."""
        running: list[str] = []
        for key in self.store.keys("active"):
            data = self.store.get("invocations", key)
            if data is None:
                continue
            record = cast(InvocationRecord, decode_record(data, InvocationRecord))
            if record.status == "running":
                running.append(record.id)
            elif record.status == "backing-off":
                self.invoker.schedule(record)
        if running:
            log.info("resuming %d in-flight invocations", len(running))
            await asyncio.gather(*(self.invoker.begin(inv_id) for inv_id in running))

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
        deployment, kind, service_type = self.invoker.resolve(target.service, target.handler)
        now = self.clock.now_ms()
        inv_id = new_invocation_id(now)
        record = InvocationRecord(
            id=inv_id,
            service=target.service,
            handler=target.handler,
            key=target.key,
            status="pending",
            created_ms=now,
            modified_ms=now,
            deployment_id=deployment,
            idempotency_key=idempotency,
            headers=headers,
            random_seed=new_seed(),
            kind=kind,
            keyed=service_type != "service",
        )
        workflow_row = object_hash(target.service, target.key) if kind == "workflow" else None
        idem_row = (
            idempotency_key(target.service, target.handler, target.key, idempotency)
            if idempotency is not None
            else None
        )

        def write(txn: Txn) -> tuple[InvocationRecord, bool, Effects]:
            effects = Effects()
            if idem_row is not None:
                existing_id = txn.get("idempotency", idem_row)
                if existing_id is not None:
                    existing = read_record(txn, existing_id.decode("ascii"))
                    # An expired key is free again (the sweeper may not have run yet).
                    if existing is not None and not (existing.is_completed and existing.expires_ms <= now):
                        return existing, False, effects
                txn.put("idempotency", idem_row, inv_id.encode("ascii"))
            if workflow_row is not None:
                # A workflow runs once per key: a second submission gets the first run.
                existing_id = txn.get("workflows", workflow_row)
                if existing_id is not None:
                    existing = read_record(txn, existing_id.decode("ascii"))
                    if existing is not None:
                        return existing, False, effects
                txn.put("workflows", workflow_row, inv_id.encode("ascii"))
            start_at = now + delay_ms if delay_ms > 0 else 0
            return create_invocation(txn, record, body, effects, start_at_ms=start_at), True, effects

        faults.hit("ingress.before_commit")
        stored, created, effects = await self.writer.submit(write)
        self.invoker.apply(effects)
        return stored, created

    async def complete_awakeable(self, awakeable: str, value: bytes | None, failure: Failure | None) -> None:
        """Resolve (`value`) or reject (`failure`) an awakeable. Returns after commit.

        Raises:
            NotFound: unknown awakeable id.
            Conflict: it is already completed.
        """
        parsed = parse_awakeable_id(awakeable)
        if parsed is None:
            raise BadRequest(f"'{awakeable}' is not an awakeable id")
        invocation_id, index = parsed
        now = self.clock.now_ms()

        def write(txn: Txn) -> Effects:
            effects = Effects()
            try:
                complete_entry(
                    txn, invocation_id, index, now=now, effects=effects, value=value, failure=failure,
                    kinds=(AwakeableEntry,),
                )  # fmt: skip
            except (NotFound, BadRequest):
                raise NotFound(f"awakeable '{awakeable}' not found") from None
            return effects

        self.invoker.apply(await self.writer.submit(write))

    def workflow_run(self, workflow: str, key: str) -> str:
        """The invocation id of a workflow key's run, or NotFound."""
        svc = self.registry.service(workflow)
        if svc.type != "workflow":
            raise BadRequest(f"'{workflow}' is not a workflow")
        found = self.store.get("workflows", object_hash(workflow, key))
        if found is None:
            raise NotFound(f"workflow '{workflow}/{key}' not found")
        return found.decode("ascii")

    async def act(self, action: str, invocation_id: str, latest: bool = False) -> InvocationRecord | None:
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
        retention_ms = int(self.settings.retention * 1000)
        deployment = ""
        if action == "resume" and latest:
            current = self.get(invocation_id)
            deployment = self.invoker.resolve(current.service, current.handler)[0]

        def write(txn: Txn) -> tuple[InvocationRecord | None, Effects]:
            effects = Effects()
            if action == "cancel":
                return control.cancel(txn, invocation_id, now, retention_ms, effects), effects
            if action == "kill":
                return control.kill(txn, invocation_id, now, retention_ms, effects), effects
            if action == "pause":
                return control.pause_invocation(txn, invocation_id, now), effects
            if action == "resume":
                return control.resume(txn, invocation_id, now, deployment, effects), effects
            if action == "purge":
                control.purge(txn, invocation_id)
                return None, effects
            raise BadRequest(f"unknown action '{action}': use cancel, kill, pause, resume or purge")

        record, effects = await self.writer.submit(write)
        # Attempts in flight for what changed are fenced now: stop waiting for them.
        for changed in (*effects.launch, *effects.completed, *([record] if record else [])):
            if action != "resume":
                self.invoker.abandon(changed.id)
        self.invoker.apply(effects)
        return record

    def list_invocations(
        self,
        status: str | None = None,
        service: str | None = None,
        handler: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> tuple[list[InvocationRecord], str | None]:
        """A page of invocations in id order, filtered; returns it and the cursor of the next page."""
        db = "active" if status is not None and status != "completed" else "invocations"
        found: list[InvocationRecord] = []
        next_after: str | None = None
        with self.store.read() as txn:
            cursor = txn.cursor(db=self.store.dbs[db])
            positioned = cursor.set_range(after.encode("ascii") + b"\x00") if after else cursor.first()
            if not positioned:
                return [], None
            for key in cursor.iternext(keys=True, values=False):
                data = txn.get(key, db=self.store.dbs["invocations"])
                if data is None:
                    continue
                record = cast(InvocationRecord, decode_record(bytes(data), InvocationRecord))
                if status is not None and record.status != status:
                    continue
                if service is not None and record.service != service:
                    continue
                if handler is not None and record.handler != handler:
                    continue
                if len(found) == limit:
                    next_after = found[-1].id
                    break
                found.append(record)
        return found, next_after

    def _gauges(self) -> list[str]:
        if not self.started:
            return []
        lines = [
            "# HELP durable_invocations Invocations by status.",
            "# TYPE durable_invocations gauge",
        ]
        for status, count in sorted(self.status_counts().items()):
            lines.append(f'durable_invocations{{status="{status}"}} {count}')
        usage = self.store.usage()
        lines += [
            "# HELP durable_lmdb_map_bytes Size of the LMDB map.",
            "# TYPE durable_lmdb_map_bytes gauge",
            f"durable_lmdb_map_bytes {usage['map_size']}",
            "# HELP durable_lmdb_used_bytes Bytes of the LMDB map in use.",
            "# TYPE durable_lmdb_used_bytes gauge",
            f"durable_lmdb_used_bytes {usage['used_bytes']}",
            "# HELP durable_running_attempts Attempts in flight.",
            "# TYPE durable_running_attempts gauge",
            f"durable_running_attempts {len(self.invoker.active)}",
            "# HELP durable_purged_total Completed invocations purged by the retention sweeper.",
            "# TYPE durable_purged_total counter",
            f"durable_purged_total {self.sweeper.purged}",
            "# HELP durable_lmdb_map_resident_bytes LMDB file pages mapped by the proxy (part of its RSS).",
            "# TYPE durable_lmdb_map_resident_bytes gauge",
            f"durable_lmdb_map_resident_bytes {self.residency.measure()}",
            "# HELP durable_lmdb_map_drops_total Times the mapped LMDB pages passed the limit and were dropped.",
            "# TYPE durable_lmdb_map_drops_total counter",
            f"durable_lmdb_map_drops_total {self.residency.drops}",
        ]
        return lines

    def status_counts(self) -> dict[str, int]:
        """How many invocations are in each status."""
        counts: dict[str, int] = {}
        active = 0
        with self.store.read() as txn:
            for key in txn.cursor(db=self.store.dbs["active"]).iternext(keys=True, values=False):
                data = txn.get(key, db=self.store.dbs["invocations"])
                if data is None:
                    continue
                record = cast(InvocationRecord, decode_record(bytes(data), InvocationRecord))
                counts[record.status] = counts.get(record.status, 0) + 1
                active += 1
            total = int(txn.stat(self.store.dbs["invocations"])["entries"])
        counts["completed"] = total - active
        return counts

    def get(self, invocation_id: str) -> InvocationRecord:
        """The stored record of an invocation, or NotFound."""
        data = None
        if invocation_id.isascii():
            data = self.store.get("invocations", invocation_key(invocation_id))
        if data is None:
            raise NotFound(f"invocation '{invocation_id}' not found")
        return cast(InvocationRecord, decode_record(data, InvocationRecord))

    async def wait(self, invocation_id: str) -> InvocationRecord:
        """Wait until the invocation is completed and return its record.

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
            record = self.get(invocation_id)
            if record.is_completed:
                return record
            return await future
        finally:
            waiters.remove(future)
            if not waiters:
                self._waiters.pop(invocation_id, None)

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

    def _completed(self, record: InvocationRecord) -> None:
        for future in self._waiters.get(record.id, ()):
            if not future.done():
                future.set_result(record)
