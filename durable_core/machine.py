"""The durable state machine: every use case of the proxy as one function over a `Txn`.

Each write method runs inside one write transaction that the caller (the proxy's group-commit
writer, or the toolkit's `LocalRuntime`) commits, and returns what the shell must do after the
commit as `Effects`. Nothing here does I/O, reads a clock or calls back into a shell: time,
tokens and the service registry come in as arguments.

The rules themselves live in the modules below this one: `journal` (entries and their effects),
`keyed` (per-key locks, state, promises), `control` (operator actions), `lifecycle` (one
record's transitions); this module sequences them per use case.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from durable_core import control, flow, pins
from durable_core import schedules as schedule_rules
from durable_core.effects import Effects
from durable_core.errors import BadRequest, Conflict, Fenced, NotFound, PayloadTooLarge, ProxyError
from durable_core.journal import (
    Resolver,
    complete_entry,
    complete_promise,
    create_invocation,
    finish,
    new_seed,
    new_token,
    start_or_queue,
)
from durable_core.journal import write_entries as _write_entries
from durable_core.keyed import object_hash, replace_state
from durable_core.keys import (
    START_INDEX,
    expiry_key,
    idempotency_key,
    journal_key,
    split_expiry_key,
    split_timer_key,
    timer_key,
)
from durable_core.lifecycle import AttemptFailure, after_attempt, cap_entries, check_current, start_attempt
from durable_core.queries import Queries
from durable_core.records import (
    Action,
    DeploymentRecord,
    InvocationRecord,
    ServiceLimits,
    ServiceRecord,
    decode_record,
    encode_record,
)
from durable_core.retry import RetryPolicy
from durable_core.rows import is_completed, put_record, read_entry, read_record
from durable_core.schedules import ScheduleRecord
from durable_core.txn import ReadTxn, Txn
from handlers_sdk.ids import INVOCATION_ID_PATTERN
from handlers_sdk.protocol import (
    COMPLETABLE,
    AwakeableEntry,
    Entry,
    Failure,
    JournalItem,
    Outcome,
    SleepEntry,
    Suspended,
    encode,
    parse_awakeable_id,
)

#: What a second call of a workflow's run fails with (Restate's code and message).
WORKFLOW_ALREADY_INVOKED = Failure(code=409, message="the workflow method was already invoked")

#: Meta row: the retention every stored expiry was stamped with (see `Machine.apply_retention`).
_RETENTION_ROW = b"retention_ms"

__all__ = ["INVOCATION_ID_PATTERN", "WORKFLOW_ALREADY_INVOKED", "DeploymentRemoval", "Limits", "Machine", "TimerFire"]


@dataclass(frozen=True)
class Limits:
    """The limits and policies the rules apply (from the proxy's settings)."""

    max_journal_entries: int = 10_000
    max_entry_bytes: int = 4 * 1024 * 1024
    retention_ms: int = 24 * 3600 * 1000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: How late a schedule's fire may be and still count as on time (else its catch-up policy applies).
    schedule_grace_ms: int = 1_000


@dataclass(frozen=True)
class TimerFire:
    """One due timer: complete entry `index` of `invocation_id`, or start it (`START_INDEX`), or
    fire a schedule (`schedules.SCHEDULE_INDEX`: `invocation_id` is then the schedule's timer id)."""

    key: bytes
    due_ms: int
    invocation_id: str
    index: int


@dataclass(frozen=True)
class DeploymentRemoval:
    """What `Machine.remove_deployment` changed."""

    #: The removed deployment, as it was stored.
    deployment: DeploymentRecord
    #: Services it served that no other deployment serves: removed with it.
    removed_services: list[str]
    #: Services it served that another deployment serves too: now routed to that one.
    moved_services: list[ServiceRecord]
    #: Invocations not completed that were pinned to it (only a forced removal has any).
    pinned: list[str]


class Machine(Queries):
    """The proxy's durable rules, over any `Txn` (see the module docstring).

    Args:
        limits: journal and entry limits, retention and the retry policy.
        resolve: finds (deployment id, handler kind, service type) of a service's handler, or
            raises NotFound. Called inside write transactions: it must only read memory.
        seed: the random seed (``ctx.random()``) of each child invocation a call or send creates;
            random by default (the toolkit fixes it, so that its runs repeat).
        limits_of: the effective concurrency and rate limits of a service (`durable_core.flow`).
            Called inside write transactions: it must only read memory.
    """

    def __init__(
        self,
        limits: Limits,
        resolve: Resolver,
        seed: Callable[[], int] = new_seed,
        limits_of: flow.LimitsOf = flow.no_limits,
    ) -> None:
        self.limits = limits
        self.resolve = resolve
        self.seed = seed
        self.limits_of = limits_of

    # -- invocations from outside -----------------------------------------------------------------

    def invoke(
        self,
        txn: Txn,
        record: InvocationRecord,
        body: bytes,
        *,
        now: int,
        delay_ms: int = 0,
        held_behind: str = "",
        effects: Effects | None = None,
    ) -> tuple[InvocationRecord, bool, Effects]:
        """Create `record` (attempt 0, status pending) or find the invocation it duplicates.

        An idempotency key already used on the same target (and not expired) returns that
        invocation; a workflow key whose run exists returns the run. Otherwise the invocation is
        admitted (running, or pending behind its key's lock) or scheduled `delay_ms` from now.

        `held_behind` (a schedule's queued fire) holds it pending until that invocation completes;
        `effects` collects into the caller's effects (a timer's transaction) instead of new ones.

        Returns:
            The stored record, True if this call created it, and the effects.
        """
        effects = Effects() if effects is None else effects
        idem_row = None
        if record.idempotency_key is not None:
            idem_row = idempotency_key(record.service, record.handler, record.key, record.idempotency_key)
            existing_id = txn.get("idempotency", idem_row)
            if existing_id is not None:
                existing = read_record(txn, existing_id.decode("ascii"))
                # An expired key is free again (the sweeper may not have run yet).
                if existing is not None and not (existing.is_completed and existing.expires_ms <= now):
                    return existing, False, effects
        if record.kind == "workflow":
            # A workflow runs once per key: a second submission gets the first run (and leaves
            # no index row behind: nothing was created).
            workflow_row = object_hash(record.service, record.key)
            existing_id = txn.get("workflows", workflow_row)
            if existing_id is not None:
                existing = read_record(txn, existing_id.decode("ascii"))
                if existing is not None:
                    return existing, False, effects
            txn.put("workflows", workflow_row, record.id.encode("ascii"))
        if idem_row is not None:
            txn.put("idempotency", idem_row, record.id.encode("ascii"))
        start_at = now + delay_ms if delay_ms > 0 else 0
        created = create_invocation(
            txn, record, body, effects, start_at_ms=start_at, held_behind=held_behind, limits_of=self.limits_of
        )
        return created, True, effects

    def new_record(
        self,
        invocation_id: str,
        service: str,
        handler: str,
        key: str,
        *,
        now: int,
        random_seed: int,
        idempotency: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> InvocationRecord:
        """The record of a new invocation of `service`/`handler` (NotFound if unknown); a limit key
        header (`flow.LIMIT_KEY_HEADERS`) names the key its per-key limits apply to.

        Raises:
            NotFound: unknown service or handler. BadRequest: a limit key over `flow.MAX_LIMIT_KEY`.
        """
        deployment, kind, service_type = self.resolve(service, handler)
        limit_key = flow.limit_key_header(headers) if headers else ""
        if len(limit_key) > flow.MAX_LIMIT_KEY:
            raise BadRequest(f"the limit key is over {flow.MAX_LIMIT_KEY} characters")
        return InvocationRecord(
            id=invocation_id,
            service=service,
            handler=handler,
            key=key,
            status="pending",
            created_ms=now,
            modified_ms=now,
            deployment_id=deployment,
            idempotency_key=idempotency,
            headers=headers or {},
            random_seed=random_seed,
            kind=kind,
            keyed=service_type != "service",
            limit_key=limit_key,
        )

    def complete_awakeable(
        self, txn: Txn, awakeable: str, *, now: int, value: bytes | None = None, failure: Failure | None = None
    ) -> Effects:
        """Resolve (`value`) or reject (`failure`) an awakeable from outside.

        Raises:
            BadRequest: `awakeable` is not an awakeable id.
            NotFound: no such awakeable.
            Conflict: it is already completed.
        """
        parsed = parse_awakeable_id(awakeable)
        if parsed is None:
            raise BadRequest(f"'{awakeable}' is not an awakeable id")
        invocation_id, index = parsed
        effects = Effects()
        try:
            complete_entry(
                txn, invocation_id, index, now=now, effects=effects, value=value, failure=failure,
                kinds=(AwakeableEntry,),
            )  # fmt: skip
        except (NotFound, BadRequest):
            raise NotFound(f"awakeable '{awakeable}' not found") from None
        return effects

    def accept_awakeable(
        self, txn: Txn, awakeable: str, *, now: int, value: bytes | None = None, failure: Failure | None = None
    ) -> Effects:
        """Resolve (`value`) or reject (`failure`) an awakeable as Restate's ingress does: the
        completion is accepted whenever the id is well formed, and it is a no-op when there is
        nothing left to complete (the awakeable is completed already, the invocation completed,
        purged or never existed, or the index names an entry that is not an awakeable). The first
        completion wins.

        The one refusal besides a malformed id: an invocation that is still active but has not
        journaled that index yet (its handler handed the id out before the entry was acked). A
        completion accepted then would be lost, so it is NotFound and the caller may try again.

        Raises:
            BadRequest: `awakeable` is not an awakeable id.
            NotFound: the invocation is active and has no entry at that index yet.
        """
        parsed = parse_awakeable_id(awakeable)
        if parsed is None or INVOCATION_ID_PATTERN.fullmatch(parsed[0]) is None:
            raise BadRequest(f"'{awakeable}' is not an awakeable id")
        invocation_id, index = parsed
        effects = Effects()
        record = read_record(txn, invocation_id)
        if record is None or record.is_completed:
            return effects
        entry = read_entry(txn, invocation_id, index)
        if entry is None:
            raise NotFound(f"awakeable '{awakeable}' not found: invocation {invocation_id} has no entry {index} yet")
        if not isinstance(entry, AwakeableEntry) or entry.completed:
            return effects
        complete_entry(
            txn, invocation_id, index, now=now, effects=effects, value=value, failure=failure, kinds=(AwakeableEntry,)
        )
        return effects

    def duplicate_call_failure(self, record: InvocationRecord, created: bool) -> Failure | None:
        """What a *call* (not a send) that `invoke` answered with `record` completes with at once.

        A workflow's run runs once per key, and a second call of it does not wait for the first
        run: it fails with 409 straight away, while the run is going and after it completed
        (Restate's rule). A send of it is only "previously accepted". Every other duplicate (an
        idempotency key seen before) waits for the invocation's outcome like the first caller.
        """
        if not created and record.kind == "workflow":
            return WORKFLOW_ALREADY_INVOKED
        return None

    def idempotent_invocation(
        self, txn: ReadTxn, service: str, handler: str, key: str, idempotency: str, *, now: int
    ) -> str | None:
        """The invocation an idempotency key names on a target, if it has one that has not expired."""
        found = txn.get("idempotency", idempotency_key(service, handler, key, idempotency))
        if found is None:
            return None
        existing = read_record(txn, found.decode("ascii"))
        if existing is None or (existing.is_completed and existing.expires_ms <= now):
            return None
        return existing.id

    def complete_promise(
        self,
        txn: Txn,
        workflow: str,
        key: str,
        name: str,
        *,
        now: int,
        value: bytes | None = None,
        failure: Failure | None = None,
    ) -> Effects:
        """Resolve (`value`, JSON) or reject (`failure`) a workflow's durable promise from outside
        and wake its waiters, by the rule a handler's ``promise(name).resolve()`` follows.

        Raises:
            Conflict: the promise is already completed.
        """
        effects = Effects()
        if not complete_promise(txn, workflow, key, name, now=now, effects=effects, value=value, failure=failure):
            raise Conflict(f"promise '{name}' of {workflow}/{key} is already completed")
        return effects

    def complete_entry(
        self,
        txn: Txn,
        invocation_id: str,
        index: int,
        *,
        now: int,
        value: bytes | None = None,
        failure: Failure | None = None,
    ) -> Effects:
        """Complete a waited-on entry (sleep, call, awakeable or promise get) in place of what
        would complete it (a timer, a callee, a resolver, a promise): the toolkit's completers.

        The completion is the one those paths make (a suspended invocation waiting on it starts
        its next attempt); a sleep's timer is deleted with it, so it never fires afterwards.

        Raises:
            NotFound: no such entry. Conflict: it or its invocation is completed already.
            BadRequest: the entry is not one that waits for a completion.
        """
        effects = Effects()
        entry = read_entry(txn, invocation_id, index)
        complete_entry(txn, invocation_id, index, now=now, effects=effects, value=value, failure=failure)
        if isinstance(entry, SleepEntry):
            txn.delete("timers", timer_key(entry.wake_at_ms, invocation_id, index))
        return effects

    def import_journal(self, txn: Txn, invocation_id: str, items: Iterable[JournalItem], *, now: int) -> Effects:
        """Start the empty journal of an invocation from `items` (an earlier run's, e.g. exported
        from the proxy), as if its attempts had journaled them.

        Entries with nothing left to happen (steps, state operations, sends, completed waits) are
        stored as they are: their effects belong to the run that made them, and the invocation's
        completion sequence goes on after theirs. A wait not completed yet is journaled as an ack
        journals it (a sleep arms its timer, a call starts its callee, a promise get waits).

        Raises:
            NotFound: unknown invocation.
            PayloadTooLarge: a wait's index is beyond the journal limit.
        """
        record = self.get(txn, invocation_id)
        seq = record.completion_seq
        waiting: list[JournalItem] = []
        for item in sorted(items, key=lambda i: i.index):
            entry = item.entry
            if isinstance(entry, COMPLETABLE) and not entry.completed:
                waiting.append(item)
                continue
            if isinstance(entry, COMPLETABLE):
                seq = max(seq, entry.seq)
            txn.put("journal", journal_key(invocation_id, item.index), encode(item))
        effects = Effects()
        record = msgspec.structs.replace(record, completion_seq=seq)
        put_record(txn, self._write_entries(txn, record, waiting, now, effects))
        return effects

    def act(
        self, txn: Txn, action: Action | str, invocation_id: str, *, now: int, deployment_id: str = ""
    ) -> tuple[InvocationRecord | None, Effects]:
        """Cancel, kill, pause, resume or purge one invocation (see `control`).

        Returns:
            The invocation's record after the action (None after a purge) and the effects.

        Raises:
            NotFound: unknown invocation. Conflict: the action does not apply to its status.
            BadRequest: unknown action.
        """
        effects = Effects()
        retention_ms = self.limits.retention_ms
        if action == "cancel":
            return control.cancel(txn, invocation_id, now, retention_ms, effects, self.limits_of), effects
        if action == "kill":
            return control.kill(txn, invocation_id, now, retention_ms, effects, self.limits_of), effects
        if action == "pause":
            return control.pause_invocation(txn, invocation_id, now), effects
        if action == "resume":
            return control.resume(txn, invocation_id, now, deployment_id, effects), effects
        if action == "purge":
            control.purge(txn, invocation_id)
            return None, effects
        raise BadRequest(f"unknown action '{action}': use cancel, kill, pause, resume or purge")

    # -- attempts ---------------------------------------------------------------------------------

    def begin_attempt(self, txn: Txn, invocation_id: str, *, now: int, token: str) -> InvocationRecord | None:
        """A new attempt of a running (recovered) or backing-off invocation; None if it has none to
        make (completed, paused, suspended or unknown)."""
        record = read_record(txn, invocation_id)
        if record is None or record.status not in ("running", "backing-off"):
            return None
        record = start_attempt(record, token, now)
        put_record(txn, record)
        return record

    def check_entry_size(self, item: JournalItem, invocation_id: str) -> None:
        """Raise PayloadTooLarge if `item`, as stored, is over the entry limit."""
        max_entry = self.limits.max_entry_bytes
        if len(encode(item)) > max_entry:
            raise PayloadTooLarge(f"entry {item.index} of {invocation_id} is over {max_entry} bytes")

    def append(
        self, txn: Txn, invocation_id: str, attempt: int, token: str, item: JournalItem, *, now: int
    ) -> tuple[Effects, Entry | None]:
        """Journal one entry of the current attempt (a step ack) and apply its effects.

        Returns:
            The effects, and the entry as journaled if journaling it completed it on the spot
            (a promise peek, a call to an unknown target...), else None.

        Raises:
            Fenced: the attempt is not current, or the index holds another entry.
            PayloadTooLarge: the journal is full.
        """
        effects = Effects()
        record = read_record(txn, invocation_id)
        if record is None:
            raise Fenced(f"unknown invocation {invocation_id}")
        check_current(record, attempt, token)
        updated = self._write_entries(txn, record, [item], now, effects)
        if updated is not record:
            put_record(txn, updated)
        if not isinstance(item.entry, COMPLETABLE):
            return effects, None
        journaled = read_entry(txn, invocation_id, item.index)
        completed = isinstance(journaled, COMPLETABLE) and journaled.completed
        return effects, journaled if completed else None

    def settle(
        self,
        txn: Txn,
        invocation_id: str,
        attempt: int,
        token: str,
        result: Outcome | AttemptFailure,
        *,
        now: int,
        next_token: str,
    ) -> tuple[InvocationRecord, Effects, Outcome | AttemptFailure]:
        """Record what an attempt produced and decide what happens next.

        A completed or failed outcome completes the invocation; a suspension suspends it (or
        starts `next_token`'s attempt at once if something it waits on is already complete); an
        error or an attempt failure backs off or pauses. Entries the outcome carries are journaled
        first; if they are refused (a send to an unknown service, say) the attempt counts as failed.

        Returns:
            The record after the transition, the effects, and the result as it was applied.

        Raises:
            Fenced: the attempt is not current.
        """
        current = read_record(txn, invocation_id)
        if current is None:
            raise Fenced(f"unknown invocation {invocation_id}")
        check_current(current, attempt, token)
        entries = [] if isinstance(result, AttemptFailure) else cap_entries(result.entries, self.limits.max_entry_bytes)
        if isinstance(result, Suspended) and not entries and not result.waiting_on:
            result = AttemptFailure(Failure(code=571, message="protocol violation: suspended without progress"))
        effects = Effects()
        child = txn.child()
        try:
            current = self._write_entries(child, current, entries, now, effects)
        except ProxyError as exc:
            child.abort()
            if exc.status >= 500:
                raise
            # The outcome's entries were refused: the attempt failed, and counts towards pausing
            # like any other failure. That includes a Fenced here: the attempt is current (checked
            # above), so it is its outcome that rewrites a taken journal index, not a stale attempt;
            # dropping it as stale would leave the invocation running with nothing in flight.
            effects = Effects()
            result = AttemptFailure(Failure(code=exc.status, message=f"outcome refused: {exc.message}"))
        else:
            child.commit()
        updated = after_attempt(
            current, result, now=now, next_token=next_token, retention_ms=self.limits.retention_ms,
            policy=self.limits.retry, completed=lambda index: is_completed(txn, current.id, index),
        )  # fmt: skip
        if updated.is_completed:
            finish(txn, updated, now, effects, self.limits_of)
        else:
            put_record(txn, updated)
            if updated.status == "running":
                effects.start(updated)
            elif updated.status == "backing-off":
                effects.back_off(updated)
        return updated, effects, result

    def _write_entries(
        self, txn: Txn, record: InvocationRecord, items: list[JournalItem], now: int, effects: Effects
    ) -> InvocationRecord:
        return _write_entries(
            txn,
            record,
            items,
            max_entries=self.limits.max_journal_entries,
            resolve=self.resolve,
            now=now,
            effects=effects,
            seed=self.seed,
            limits_of=self.limits_of,
        )

    # -- timers and retention -------------------------------------------------------------------

    def due_timers(
        self, txn: ReadTxn, now: int, limit: int, owns: Callable[[str], bool] | None = None
    ) -> tuple[list[TimerFire], int | None]:
        """Timers due by `now` (at most `limit`), and the due time of the next one not due.

        Args:
            owns: only the timers of the invocations (or schedules) this says yes to: those of
                the partitions the caller drives (None: every timer).
        """
        due: list[TimerFire] = []
        for key, _ in txn.items_from("timers", b""):
            due_ms, invocation_id, index = split_timer_key(key)
            if owns is not None and not owns(invocation_id):
                continue
            if due_ms > now or len(due) >= limit:
                return due, due_ms
            due.append(TimerFire(key, due_ms, invocation_id, index))
        return due, None

    def fire_timers(self, txn: Txn, fires: Iterable[TimerFire], *, now: int) -> tuple[Effects, list[str]]:
        """Fire due timers: complete their sleep entries, start their scheduled invocations, fire
        their schedules (`durable_core.schedules`).

        A timer already fired (its row is gone) is skipped, so it fires once.

        Returns:
            The effects and, per timer that turned out moot (its invocation purged or killed
            meanwhile), why.
        """
        effects = Effects()
        dropped: list[str] = []
        for fire in fires:
            if txn.get("timers", fire.key) is None:
                continue
            txn.delete("timers", fire.key)
            if fire.index == schedule_rules.SCHEDULE_INDEX:
                grace = self.limits.schedule_grace_ms
                reason = schedule_rules.fire(
                    txn, fire.invocation_id, fire.due_ms, now=now, grace_ms=grace, machine=self, effects=effects
                )
                if reason is not None:
                    dropped.append(reason)
                continue
            if fire.index == START_INDEX:
                record = read_record(txn, fire.invocation_id)
                if record is not None and record.status == "scheduled":
                    put_record(txn, start_or_queue(txn, record, now, effects, self.limits_of(record.service)))
                continue
            try:
                complete_entry(txn, fire.invocation_id, fire.index, now=now, effects=effects)
            except ProxyError as exc:
                dropped.append(f"timer of {fire.invocation_id}/{fire.index} dropped: {exc.message}")
        return effects, dropped

    def due_expiries(self, txn: ReadTxn, now: int, limit: int) -> list[bytes]:
        """Keys of the retention index due by `now` (at most `limit`)."""
        due: list[bytes] = []
        for key, _ in txn.items_from("expiry", b""):
            expires_ms, _ = split_expiry_key(key)
            if expires_ms > now or len(due) >= limit:
                break
            due.append(key)
        return due

    def sweep(self, txn: Txn, keys: Iterable[bytes]) -> int:
        """Purge the completed invocations of these retention-index keys; returns how many."""
        purged = 0
        for key in keys:
            txn.delete("expiry", key)
            try:
                control.purge(txn, split_expiry_key(key)[1])
                purged += 1
            except ProxyError:  # purged by hand already
                pass
        return purged

    def retention_applied(self, txn: ReadTxn) -> bool:
        """True if every stored completed invocation expires by the current retention: none is
        stored, or the last `apply_retention` walk ran to its end with this very retention."""
        stored = txn.get("meta", _RETENTION_ROW)
        if stored is None:
            # Never walked: true only if nothing completed is stored (then there is nothing to do,
            # and no write: a fresh store starts without an extra commit).
            return next(txn.items_from("expiry", b""), None) is None
        return int(stored) == self.limits.retention_ms

    def apply_retention(self, txn: Txn, after: bytes, limit: int) -> bytes | None:
        """Re-stamp up to `limit` completed invocations with the current retention, walking the
        retention index from `after` (exclusive); returns where to go on, or None once done.

        Expiry is stamped at completion, so without this a changed ``--retention`` would apply
        only to invocations completed after the change. A moved row may land after the cursor;
        it is then already right and left alone, so each row moves at most once.
        """
        retention_ms = self.limits.retention_ms
        start = after + b"\x00" if after else b""
        keys = [key for key, _ in itertools.islice(txn.items_from("expiry", start), limit)]
        for key in keys:
            expires_ms, invocation_id = split_expiry_key(key)
            record = read_record(txn, invocation_id)
            if record is None or not record.is_completed:
                txn.delete("expiry", key)  # an orphan row: nothing left to purge
                continue
            wanted = record.completed_ms + retention_ms
            if wanted == expires_ms:
                continue
            txn.delete("expiry", key)
            txn.put("expiry", expiry_key(wanted, invocation_id), b"")
            put_record(txn, msgspec.structs.replace(record, expires_ms=wanted))
        if len(keys) < limit:
            txn.put("meta", _RETENTION_ROW, str(retention_ms).encode("ascii"))
            return None
        return keys[-1]

    # -- concurrency and rate limits ------------------------------------------------------------

    def set_limits(
        self, txn: Txn, service: str, override: ServiceLimits | None, *, now: int
    ) -> tuple[ServiceLimits | None, Effects]:
        """Set an operator's limits of `service` in place of its code's (None: back to the code's),
        and start what its queues may start under them, in the same transaction.

        Returns:
            The limits that apply now, and the effects.

        Raises:
            NotFound: unknown service. BadRequest: a limit that cannot apply (`flow.validate`).
        """
        data = txn.get("services", service.encode("utf-8", "surrogatepass"))
        if data is None:
            raise NotFound(f"service '{service}' not found")
        svc = decode_record(data, ServiceRecord)
        if override is not None:
            flow.validate(override, list(svc.handlers))
        flow.write_override(txn, service, override)
        limits = flow.effective(svc.limits, override)
        effects = Effects()
        flow.pump_service(txn, service, now, limits, effects, new_token)
        return limits, effects

    def pump_limits(self, txn: Txn, service: str, *, now: int) -> Effects:
        """Start what the queues of `service`'s limits may start under its limits now (after they
        changed: a registration, an operator's edit)."""
        effects = Effects()
        flow.pump_service(txn, service, now, self.limits_of(service), effects, new_token)
        return effects

    def limit_override(self, txn: ReadTxn, service: str) -> ServiceLimits | None:
        """The limits an operator set for `service`, if any."""
        return flow.read_override(txn, service)

    def limit_groups(self, txn: ReadTxn, service: str) -> list[flow.FlowGroup]:
        """The limit groups of `service` in use: slots taken, invocations queued."""
        return flow.groups_of(txn, service)

    def queue_position(self, txn: ReadTxn, record: InvocationRecord) -> int | None:
        """The place in line (1: next) of an invocation waiting for a concurrency slot, else None."""
        return flow.position(txn, record)

    # -- deployments and state ------------------------------------------------------------------

    def register(self, txn: Txn, deployment: DeploymentRecord, services: Iterable[ServiceRecord]) -> None:
        """Store a deployment and make it the one serving `services`."""
        txn.put("deployments", deployment.id.encode(), encode_record(deployment))
        for svc in services:
            txn.put("services", svc.name.encode(), encode_record(svc))

    def remove_deployment(self, txn: Txn, deployment_id: str, *, force: bool = False) -> DeploymentRemoval:
        """Remove a deployment, and the services it serves unless another deployment serves them.

        A service whose record points at this deployment is removed if no other deployment
        announced it, else routed to the most recently registered deployment that did (with the
        handlers it has now: a later registration of that deployment refreshes them). A service
        already routed to another deployment is left alone.

        Invocations not completed and pinned to the deployment (their ``deployment_id``) would
        lose the handler code their journal was written by, so they refuse the removal unless
        `force`: then their next attempts go to the latest deployment of their service, or fail
        with 503 if none is left.

        Raises:
            NotFound: no such deployment.
            Conflict: invocations not completed are pinned to it and `force` is not set.
        """
        key = deployment_id.encode("utf-8", "surrogatepass")
        # Stores refuse empty keys and keys over 511 bytes: no deployment has such an id.
        data = txn.get("deployments", key) if 0 < len(key) <= 511 else None
        if data is None:
            raise NotFound(f"deployment '{deployment_id}' not found")
        deployment = decode_record(data, DeploymentRecord)
        pinned = [record.id for record in pins.pinned_records(txn, deployment_id)]
        if pinned and not force:
            shown = ", ".join(pinned[:3]) + (", ..." if len(pinned) > 3 else "")
            count = f"{len(pinned)} invocation{'s' if len(pinned) != 1 else ''}"
            raise Conflict(
                f"deployment '{deployment_id}' has {count} not completed pinned to it ({shown}): let them "
                "complete, cancel or kill them, or force the removal (force=true)"
            )
        txn.delete("deployments", key)
        others = [dep for dep in self.deployments(txn) if dep.id != deployment_id]
        removed: list[str] = []
        moved: list[ServiceRecord] = []
        for svc in self.services(txn):
            if svc.deployment_id != deployment_id:
                continue
            serving = [dep for dep in others if svc.name in dep.services]
            if serving:
                latest = max(serving, key=lambda dep: (dep.created_ms, dep.id))
                routed = msgspec.structs.replace(svc, deployment_id=latest.id)
                txn.put("services", svc.name.encode(), encode_record(routed))
                moved.append(routed)
            else:
                txn.delete("services", svc.name.encode())
                removed.append(svc.name)
        schedule_rules.drop_code(txn, removed)
        return DeploymentRemoval(deployment, removed, moved, pinned)

    def pinned(self, txn: ReadTxn, deployment_id: str) -> list[InvocationRecord]:
        """The invocations not completed that are pinned to a deployment (from the ``pinned``
        index: only that deployment's rows are read)."""
        return pins.pinned_records(txn, deployment_id)

    def pinned_index_missing(self, txn: ReadTxn) -> bool:
        """Whether `index_pinned` has anything to do (a read: a start commits nothing otherwise)."""
        return pins.index_missing(txn)

    def index_pinned(self, txn: Txn) -> int:
        """Index the pinned invocations of a store written before the index existed (once; a
        no-op afterwards); returns how many rows it wrote."""
        return pins.build_index(txn)

    def move_deployment(self, txn: Txn, deployment_id: str, uri: str) -> DeploymentRecord:
        """Serve a deployment from another URI (the same code, served elsewhere): its id, services
        and pinned invocations stay; their next attempts go to `uri`.

        Raises:
            NotFound: no such deployment. Conflict: another deployment has that URI.
        """
        key = deployment_id.encode("utf-8", "surrogatepass")
        data = txn.get("deployments", key) if 0 < len(key) <= 511 else None
        if data is None:
            raise NotFound(f"deployment '{deployment_id}' not found")
        other = next((d for d in self.deployments(txn) if d.uri == uri and d.id != deployment_id), None)
        if other is not None:
            raise Conflict(f"deployment '{other.id}' is registered at {uri} already")
        moved = msgspec.structs.replace(decode_record(data, DeploymentRecord), uri=uri)
        txn.put("deployments", key, encode_record(moved))
        return moved

    # -- schedules ------------------------------------------------------------------------------

    def create_schedule(self, txn: Txn, schedule: ScheduleRecord, *, now: int) -> tuple[
        ScheduleRecord, Effects
    ]:  # fmt: skip
        """Store a new schedule of a known handler and arm its first fire (`schedule_rules.create`).

        Raises:
            NotFound: unknown service or handler. BadRequest: a bad id, spec, key or input.
            Conflict: the id is taken.
        """
        _, _, service_type = self.resolve(schedule.service, schedule.handler)
        effects = Effects()
        return schedule_rules.create(txn, schedule, service_type, now=now, effects=effects), effects

    def delete_schedule(self, txn: Txn, schedule_id: str) -> ScheduleRecord:
        """Remove a schedule and its timer (NotFound if none)."""
        return schedule_rules.delete(txn, schedule_id)

    def pause_schedule(self, txn: Txn, schedule_id: str, paused: bool, *, now: int) -> tuple[
        ScheduleRecord, Effects
    ]:  # fmt: skip
        """Pause or resume a schedule (`schedule_rules.set_paused`; NotFound if none)."""
        effects = Effects()
        return schedule_rules.set_paused(txn, schedule_id, paused, now=now, effects=effects), effects

    def sync_schedules(
        self, txn: Txn, services: Iterable[ServiceRecord], declared: Iterable[ScheduleRecord], *, now: int
    ) -> tuple[list[str], Effects]:
        """Keep the code schedules of the registered `services` as their handlers now declare
        them (`schedule_rules.sync_code`); returns the ids changed and the effects."""
        effects = Effects()
        types = {svc.name: svc.type for svc in services}
        wanted = {(s.service, s.handler): s for s in declared}
        return schedule_rules.sync_code(txn, types, wanted, now=now, effects=effects), effects

    def schedules(self, txn: ReadTxn) -> list[ScheduleRecord]:
        """Every schedule, by id."""
        return schedule_rules.list_all(txn)

    def schedule(self, txn: ReadTxn, schedule_id: str) -> ScheduleRecord:
        """One schedule, or NotFound."""
        found = schedule_rules.get(txn, schedule_id)
        if found is None:
            raise NotFound(f"schedule '{schedule_id}' not found")
        return found

    def replace_state(self, txn: Txn, service: str, key: str, state: dict[str, bytes]) -> None:
        """Replace the whole state of an object or workflow key (an operator's edit)."""
        replace_state(txn, service, key, state)
