"""Schedules: invocations started by the clock, on a cron expression or an interval.

A schedule is a row of ``schedules`` and one durable timer at its next fire time (the timer kind
`SCHEDULE_INDEX`). Firing happens in the timer's transaction, which deletes that timer, creates
the fire's invocation and writes the timer of the next fire, all at once: a crash leaves either
the old timer (the fire happens after the restart) or the new one (it happened), never both.
The fire's invocation is an ordinary invocation whose id and idempotency key are derived from
the schedule id and the fire time, so two proxies that fire the same time make one invocation.

Rules of one fire due at ``due`` and carried out at ``now``:

* **On time** (``now - due`` within the grace, `Limits.schedule_grace_ms`): it fires.
* **Missed** (later than the grace, e.g. the proxy was down): the catch-up policy decides.
  ``skip``: none of the fire times up to now run; the next future one is armed. ``once``: one
  invocation runs for all of them, at the latest missed fire time (its header
  ``x-durable-missed-fires`` says how many it stands for). Either way `ScheduleRecord.missed`
  counts the fire times that did not run.
* **Overlap** (the previous fire's invocation has not completed): ``skip`` drops this fire
  (`ScheduleRecord.skipped`); ``queue`` creates it pending, held behind the previous one
  (`durable_core.overlap`), so fires run one after the other; ``allow`` starts it anyway.

A paused schedule has no timer; resuming arms the next fire after now (fires while paused are
not caught up). Schedules declared in code (``@svc.handler(schedule=...)``) have the id
``code:{service}:{handler}`` and are kept in step with each registration of their service.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, Protocol

import msgspec

from durable_core.cron import Spec, check_spec, latest_fire, missed_fires, next_fire
from durable_core.effects import Effects
from durable_core.errors import BadRequest, Conflict, NotFound, ProxyError
from durable_core.keys import new_invocation_id, timer_key
from durable_core.overlap import SCHEDULE_HEADER
from durable_core.records import InvocationRecord, ServiceType
from durable_core.rows import read_record
from durable_core.txn import ReadTxn, Txn
from handlers_sdk.protocol import ServiceInfo

__all__ = [
    "CATCH_UPS",
    "CODE_PREFIX",
    "OVERLAPS",
    "SCHEDULE_INDEX",
    "CatchUp",
    "Overlap",
    "ScheduleRecord",
    "Starter",
    "code_schedule_id",
    "create",
    "declared",
    "delete",
    "drop_code",
    "fire",
    "get",
    "list_all",
    "set_paused",
    "spec_of",
    "sync_code",
    "timer_id",
]

#: Timer index meaning "fire the schedule whose timer id is in the key" (see `keys.timer_key`).
SCHEDULE_INDEX = 0xFFFFFFFE
#: Id prefix of the schedules declared in handler code.
CODE_PREFIX = "code:"

#: What a fire does while the previous fire's invocation still runs.
Overlap = Literal["skip", "queue", "allow"]
OVERLAPS: tuple[Overlap, ...] = ("skip", "queue", "allow")
#: What a fire missed while the proxy was down (or late past the grace) does.
CatchUp = Literal["skip", "once"]
CATCH_UPS: tuple[CatchUp, ...] = ("skip", "once")

_MAX_ID = 200


class ScheduleRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A stored schedule: when it fires, what it starts, and what it did so far."""

    id: str
    service: str
    handler: str
    key: str = ""
    #: A cron expression (with `timezone`), or empty for an interval schedule.
    cron: str = ""
    timezone: str = "UTC"
    #: The interval in ms (with `anchor_ms`, the time its fires count from), or 0 for cron.
    every_ms: int = 0
    anchor_ms: int = 0
    #: The JSON input of every fire.
    input: bytes = b"null"
    overlap: Overlap = "skip"
    catch_up: CatchUp = "skip"
    paused: bool = False
    #: ``api`` (created at run time) or ``code`` (declared by a handler, kept by registration).
    origin: Literal["api", "code"] = "api"
    created_ms: int = 0
    modified_ms: int = 0
    #: When its timer is due (0 while paused).
    next_fire_ms: int = 0
    #: The fire time and the invocation of the last fire that started one.
    last_fire_ms: int = 0
    last_invocation_id: str = ""
    #: Fires that started an invocation.
    fired: int = 0
    #: Fires dropped because the previous one still ran (overlap ``skip``), and the last one's time.
    skipped: int = 0
    last_skipped_ms: int = 0
    #: Fire times that did not run because they were missed (see the catch-up policy).
    missed: int = 0
    #: Why the last fire could not start its invocation (its target gone, say), if it could not.
    last_error: str = ""


class Starter(Protocol):
    """What a fire needs of the machine: `Machine.new_record` and `Machine.invoke`."""

    seed: Callable[[], int]

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
        """The record of a new invocation (NotFound for an unknown target)."""
        ...

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
        """Create the invocation, or find the one its idempotency key names."""
        ...


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ScheduleRecord)


def _row(schedule_id: str) -> bytes:
    # Ids are user text (any length, any characters): the row and the timer use a digest.
    return hashlib.sha256(schedule_id.encode("utf-8", "surrogatepass")).digest()[:16]


def timer_id(schedule_id: str) -> str:
    """The ASCII name of a schedule in its timer's key (where an invocation id would be)."""
    return "sch_" + _row(schedule_id).hex()


def code_schedule_id(service: str, handler: str) -> str:
    """The id of the schedule a handler declares in code."""
    return f"{CODE_PREFIX}{service}:{handler}"


def spec_of(schedule: ScheduleRecord) -> Spec:
    """The fire times' inputs of `schedule`."""
    return Spec(
        cron=schedule.cron, timezone=schedule.timezone, every_ms=schedule.every_ms, anchor_ms=schedule.anchor_ms
    )


def get(txn: ReadTxn, schedule_id: str) -> ScheduleRecord | None:
    """The stored schedule, or None."""
    data = txn.get("schedules", _row(schedule_id))
    return None if data is None else _decoder.decode(data)


def list_all(txn: ReadTxn) -> list[ScheduleRecord]:
    """Every schedule, by id."""
    return sorted((_decoder.decode(value) for _, value in txn.items_from("schedules", b"")), key=lambda s: s.id)


def _put(txn: Txn, old: ScheduleRecord | None, new: ScheduleRecord, effects: Effects) -> None:
    """Store `new` in place of `old`, moving its timer to `new.next_fire_ms` (none while paused)."""
    if old is not None and old.next_fire_ms:
        txn.delete("timers", timer_key(old.next_fire_ms, timer_id(old.id), SCHEDULE_INDEX))
    txn.put("schedules", _row(new.id), _encoder.encode(new))
    if new.next_fire_ms:
        txn.put("timers", timer_key(new.next_fire_ms, timer_id(new.id), SCHEDULE_INDEX), b"")
        effects.arm(new.next_fire_ms)


def _check(schedule: ScheduleRecord, service_type: ServiceType) -> None:
    if not schedule.id or len(schedule.id) > _MAX_ID or not schedule.id.isprintable() or "/" in schedule.id:
        raise BadRequest(f"a schedule id is 1 to {_MAX_ID} printable characters without '/'")
    check_spec(spec_of(schedule))
    if service_type != "service" and not schedule.key:
        raise BadRequest(f"{schedule.service} is a keyed {service_type}: a schedule of it needs a key")
    if service_type == "service" and schedule.key:
        raise BadRequest(f"{schedule.service} is a service: its invocations have no key")
    try:
        msgspec.json.decode(schedule.input)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise BadRequest("the input of a schedule must be JSON") from None


def create(
    txn: Txn, schedule: ScheduleRecord, service_type: ServiceType, *, now: int, effects: Effects
) -> ScheduleRecord:
    """Store a new schedule and arm its first fire (the first fire time after now).

    Raises:
        BadRequest: a bad id, spec, key or input. Conflict: the id is taken.
    """
    _check(schedule, service_type)
    if get(txn, schedule.id) is not None:
        raise Conflict(f"schedule '{schedule.id}' exists: delete it first, or pick another id")
    anchor = schedule.anchor_ms or now
    armed = msgspec.structs.replace(
        schedule, anchor_ms=anchor if schedule.every_ms else 0, created_ms=now, modified_ms=now
    )
    if not armed.paused:
        armed = msgspec.structs.replace(armed, next_fire_ms=next_fire(spec_of(armed), now))
    _put(txn, None, armed, effects)
    return armed


def _existing(txn: ReadTxn, schedule_id: str) -> ScheduleRecord:
    found = get(txn, schedule_id)
    if found is None:
        raise NotFound(f"schedule '{schedule_id}' not found")
    return found


def delete(txn: Txn, schedule_id: str) -> ScheduleRecord:
    """Remove a schedule and its timer (fires already started go on).

    Raises:
        NotFound: no such schedule.
    """
    schedule = _existing(txn, schedule_id)
    if schedule.next_fire_ms:
        txn.delete("timers", timer_key(schedule.next_fire_ms, timer_id(schedule.id), SCHEDULE_INDEX))
    txn.delete("schedules", _row(schedule.id))
    return schedule


def set_paused(txn: Txn, schedule_id: str, paused: bool, *, now: int, effects: Effects) -> ScheduleRecord:
    """Pause a schedule (its timer is removed) or resume it (the next fire after now is armed;
    fires while it was paused are not caught up). Pausing a paused one changes nothing.

    Raises:
        NotFound: no such schedule.
    """
    schedule = _existing(txn, schedule_id)
    if schedule.paused == paused:
        return schedule
    next_ms = 0 if paused else next_fire(spec_of(schedule), now)
    changed = msgspec.structs.replace(schedule, paused=paused, next_fire_ms=next_ms, modified_ms=now)
    _put(txn, schedule, changed, effects)
    return changed


def fire(
    txn: Txn, schedule_timer: str, due_ms: int, *, now: int, grace_ms: int, machine: Starter, effects: Effects
) -> str | None:
    """Fire the schedule whose timer (`timer_id`) was due at `due_ms` (see the module docstring)
    and arm its next fire (the caller has deleted the fired timer's row already).

    Returns:
        Why no invocation started, when none did and the reason is worth a log line.
    """
    schedule = _by_timer(txn, schedule_timer)
    if schedule is None or schedule.paused or schedule.next_fire_ms != due_ms:
        return None  # deleted, paused or moved since the timer was written: a stale timer
    spec = spec_of(schedule)
    fire_ms: int | None = due_ms
    missed = 0
    try:
        if now - due_ms > grace_ms:
            latest = max(due_ms, latest_fire(spec, now))
            missed = missed_fires(spec, due_ms, latest)
            fire_ms = latest if schedule.catch_up == "once" else None
        next_ms = next_fire(spec, due_ms if missed == 0 else now)
    except BadRequest as exc:
        # Checked at creation, so only a time zone database changed under it: stop, and say why.
        stopped = msgspec.structs.replace(schedule, paused=True, next_fire_ms=0, last_error=exc.message)
        _put(txn, schedule, stopped, effects)
        return f"schedule {schedule.id} paused: {exc.message}"
    # A catch-up that runs once runs one of the missed fire times: the others did not run.
    not_run = missed - 1 if missed and fire_ms is not None else missed
    updated = msgspec.structs.replace(schedule, next_fire_ms=next_ms, missed=schedule.missed + not_run)
    reason: str | None = None
    if fire_ms is not None:
        updated, reason = _start(txn, updated, fire_ms, missed, now=now, machine=machine, effects=effects)
    _put(txn, schedule, updated, effects)
    return reason


def _by_timer(txn: ReadTxn, schedule_timer: str) -> ScheduleRecord | None:
    try:
        row = bytes.fromhex(schedule_timer.removeprefix("sch_"))
    except ValueError:
        return None
    data = txn.get("schedules", row)
    return None if data is None else _decoder.decode(data)


def _start(
    txn: Txn, schedule: ScheduleRecord, fire_ms: int, missed: int, *, now: int, machine: Starter, effects: Effects
) -> tuple[ScheduleRecord, str | None]:
    """Start the fire at `fire_ms` by the overlap policy; the schedule as it is after it."""
    previous = read_record(txn, schedule.last_invocation_id) if schedule.last_invocation_id else None
    running = previous is not None and not previous.is_completed
    if running and schedule.overlap == "skip":
        return msgspec.structs.replace(schedule, skipped=schedule.skipped + 1, last_skipped_ms=fire_ms), (
            f"schedule {schedule.id}: fire at {fire_ms} skipped, {schedule.last_invocation_id} still runs"
        )
    fire_key = f"{schedule.id}\x00{fire_ms}".encode("utf-8", "surrogatepass")
    headers = {SCHEDULE_HEADER: schedule.id, "x-durable-fire-time": str(fire_ms)}
    if missed:
        headers["x-durable-missed-fires"] = str(missed)
    try:
        record = machine.new_record(
            # Derived from the fire, not random: any proxy firing it makes the very same invocation.
            new_invocation_id(fire_ms, entropy=hashlib.sha256(fire_key).digest()[:10]),
            schedule.service, schedule.handler, schedule.key, now=now, random_seed=machine.seed(),
            idempotency=f"schedule:{schedule.id}:{fire_ms}", headers=headers,
        )  # fmt: skip
        held_behind = previous.id if running and schedule.overlap == "queue" and previous is not None else ""
        stored, created, _ = machine.invoke(
            txn, record, schedule.input, now=now, held_behind=held_behind, effects=effects
        )
    except ProxyError as exc:
        return msgspec.structs.replace(schedule, last_error=exc.message), f"schedule {schedule.id}: {exc.message}"
    fired = schedule.fired + (1 if created else 0)
    return msgspec.structs.replace(
        schedule, last_fire_ms=fire_ms, last_invocation_id=stored.id, fired=fired, last_error=""
    ), None


def sync_code(
    txn: Txn,
    services: Mapping[str, ServiceType],
    declared: Mapping[tuple[str, str], ScheduleRecord],
    *,
    now: int,
    effects: Effects,
) -> list[str]:
    """Keep the code schedules of `services` (name -> type) as their handlers declare them now.

    `declared` maps (service, handler) to the schedule a handler declares (its id, spec and
    policies). One unchanged keeps its next fire, counters and pause; a changed one is replaced
    (armed afresh); one no longer declared is deleted.

    Returns:
        The ids of the code schedules created, replaced or deleted.
    """
    changed: list[str] = []
    for existing in list_all(txn):
        if existing.origin != "code" or existing.service not in services:
            continue
        if (existing.service, existing.handler) not in declared:
            delete(txn, existing.id)
            changed.append(existing.id)
    for (service, _), wanted in declared.items():
        current = get(txn, wanted.id)
        if current is not None and _same_declaration(current, wanted):
            continue
        if current is not None:
            delete(txn, current.id)
        create(txn, wanted, services.get(service, "service"), now=now, effects=effects)
        changed.append(wanted.id)
    return changed


def declared(services: Iterable[ServiceInfo]) -> list[ScheduleRecord]:
    """The code schedules a discovery manifest's services declare (one per handler with a
    ``schedule``), as `sync_code` takes them."""
    return [
        ScheduleRecord(
            id=code_schedule_id(svc.name, handler.name),
            service=svc.name,
            handler=handler.name,
            cron=handler.schedule.cron,
            timezone=handler.schedule.timezone,
            every_ms=handler.schedule.every_ms,
            overlap=handler.schedule.overlap,
            catch_up=handler.schedule.catch_up,
            origin="code",
        )
        for svc in services
        for handler in svc.handlers
        if handler.schedule is not None
    ]


def _same_declaration(current: ScheduleRecord, wanted: ScheduleRecord) -> bool:
    fields = ("service", "handler", "key", "cron", "timezone", "every_ms", "input", "overlap", "catch_up", "origin")
    return all(getattr(current, name) == getattr(wanted, name) for name in fields)


def drop_code(txn: Txn, services: Iterable[str]) -> list[str]:
    """Delete the code schedules of `services` (removed with their last deployment)."""
    gone = set(services)
    dropped = [s.id for s in list_all(txn) if s.origin == "code" and s.service in gone]
    for schedule_id in dropped:
        delete(txn, schedule_id)
    return dropped
