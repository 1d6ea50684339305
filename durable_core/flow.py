"""Flow control inside a write transaction: concurrency and rate limits per service, per handler
and per limit key.

An invocation belongs to the limit groups its service's `ServiceLimits` name for it: the
service's, its handler's and, when it has a limit key, that key's across the service and within
its handler. It starts only when every group with a concurrency limit has a free slot; it then
takes one slot in each (``flow_slots`` on its record) and holds them until it completes, whatever
happens in between (suspensions and retries included), so each slot is freed once, by the
transaction that completes it. Otherwise it waits, ``pending``, in the queue of the first full
group, in arrival order: a global sequence number it keeps if it later moves to another group's
queue.

A completion (result, failure, kill, cancel) frees its slots and admits the heads of those groups'
queues in the same transaction ("pumping"), so a queue never waits while its group has room. The
slot counts, the queue rows and the records change together in the owner's transaction: a crash
can neither leak a slot nor lose a queued invocation, and a restart has nothing to repair.

A rate limit is a token bucket kept as GCRA's one number per group (the theoretical arrival time,
in µs): an invocation over the rate has its start reserved at the first time the bucket allows and
becomes ``scheduled`` with an ordinary start timer, so a burst is spread, never dropped. Its
concurrency slots are taken before the reservation and held while it waits: both limits hold.

Handlers without limits pay one dict lookup (`LimitsOf`) and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Iterable

import msgspec

from durable_core.effects import Effects
from durable_core.errors import BadRequest
from durable_core.keys import START_INDEX, timer_key
from durable_core.lifecycle import start_attempt
from durable_core.records import InvocationRecord, ServiceLimits, decode_record, encode_record
from durable_core.rows import put_record, read_record
from durable_core.txn import ReadTxn, Txn
from handlers_sdk.protocol import Limit

__all__ = [
    "LIMIT_KEY_HEADERS",
    "MAX_LIMIT_KEY",
    "FlowGroup",
    "LimitsOf",
    "announce",
    "effective",
    "group_label",
    "groups",
    "groups_of",
    "limit_key_header",
    "no_limits",
    "position",
    "pump_service",
    "read_override",
    "release",
    "service_limits",
    "start",
    "validate",
    "with_limit_key",
    "write_override",
]

#: The effective limits of a service (None: it has none). Called inside write transactions: it
#: must only read memory (the proxy's registry keeps them in a dict).
LimitsOf = Callable[[str], ServiceLimits | None]
#: Request headers that name an invocation's limit key (Restate 1.7's, and a short form).
LIMIT_KEY_HEADERS = ("x-restate-limit-key", "limit-key")
#: The longest limit key accepted from a request.
MAX_LIMIT_KEY = 256

_BE64 = struct.Struct(">Q")
_SEQ_ROW = b"flow_seq"
_SCOPES = ("service", "handler", "key")


class FlowGroup(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The stored state of one limit group: slots taken, invocations queued, the rate's GCRA time."""

    #: ``scope NUL service NUL handler NUL key`` (see `group_label` for a readable form).
    group: str
    running: int = 0
    queued: int = 0
    #: GCRA's theoretical arrival time (µs): the bucket is full again at this time.
    tat_us: int = 0


def no_limits(service: str) -> ServiceLimits | None:
    """The `LimitsOf` of a world without limits."""
    return None


def service_limits(
    limit: Limit | None,
    key_limit: Limit | None,
    handlers: dict[str, tuple[Limit | None, Limit | None, str]],
) -> ServiceLimits | None:
    """The `ServiceLimits` that discovery's announcements make (None if there are none).

    Args:
        limit: the service's own limit; key_limit: each limit key's across the service.
        handlers: handler name -> (its limit, each key's limit within it, its limit key field).
    """
    found = ServiceLimits(
        service=limit,
        key=key_limit,
        handlers={name: lim for name, (lim, _, _) in handlers.items() if lim is not None},
        handler_keys={name: lim for name, (_, lim, _) in handlers.items() if lim is not None},
        key_fields={name: field for name, (_, _, field) in handlers.items() if field},
    )
    return None if found == ServiceLimits() else found


def effective(code: ServiceLimits | None, override: ServiceLimits | None) -> ServiceLimits | None:
    """The limits that apply: an operator's override replaces those the code declares."""
    chosen = override if override is not None else code
    return None if chosen is None or chosen == ServiceLimits() else chosen


def validate(limits: ServiceLimits, handlers: Iterable[str]) -> None:
    """Raise BadRequest for a limit on a handler the service does not have (each `Limit` checks
    its own values when it is made)."""
    known = set(handlers)
    for name in (*limits.handlers, *limits.handler_keys, *limits.key_fields):
        if name not in known:
            raise BadRequest(f"limit on unknown handler '{name}' (have: {', '.join(sorted(known))})")


def _group(scope: str, service: str, handler: str = "", key: str = "") -> str:
    return "\x00".join((scope, service, handler, key))


def group_label(group: str) -> dict[str, str]:
    """A group as the admin API shows it: scope, service and, where they apply, handler and key."""
    scope, service, handler, key = group.split("\x00", 3)
    label = {"scope": scope, "service": service}
    if handler:
        label["handler"] = handler
    if scope == "key":
        label["key"] = key
    return label


def groups(limits: ServiceLimits, record: InvocationRecord) -> list[tuple[str, Limit]]:
    """The limit groups `record` belongs to, with their limits, in a fixed order."""
    found: list[tuple[str, Limit]] = []
    if limits.service is not None:
        found.append((_group("service", record.service), limits.service))
    handler = limits.handlers.get(record.handler)
    if handler is not None:
        found.append((_group("handler", record.service, record.handler), handler))
    if record.limit_key:
        if limits.key is not None:
            found.append((_group("key", record.service, "", record.limit_key), limits.key))
        per_key = limits.handler_keys.get(record.handler)
        if per_key is not None:
            found.append((_group("key", record.service, record.handler, record.limit_key), per_key))
    return found


def _limit_of(limits: ServiceLimits | None, group: str) -> Limit | None:
    """The limit that applies to `group` now (None: none any more)."""
    if limits is None:
        return None
    scope, _, handler, _ = group.split("\x00", 3)
    if scope == "service":
        return limits.service
    if scope == "handler":
        return limits.handlers.get(handler)
    return limits.handler_keys.get(handler) if handler else limits.key


def limit_key_header(headers: dict[str, str]) -> str:
    """The limit key a request's headers name (`LIMIT_KEY_HEADERS`, the first one set), or ""."""
    for name in LIMIT_KEY_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return ""


def with_limit_key(record: InvocationRecord, body: bytes, limits: ServiceLimits | None) -> InvocationRecord:
    """`record` with its limit key taken from its input, if its handler names an input field and
    no header gave one. A string value is the key; another JSON value its JSON text."""
    if limits is None or record.limit_key:
        return record
    field = limits.key_fields.get(record.handler)
    if not field:
        return record
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return record
    if not isinstance(value, dict) or field not in value or value[field] is None:
        return record
    found = value[field]
    key = found if isinstance(found, str) else msgspec.json.encode(found).decode()
    if len(key) > MAX_LIMIT_KEY:
        # Too long to show: its digest still tells keys apart.
        key = "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return msgspec.structs.replace(record, limit_key=key)


# -- rows -------------------------------------------------------------------------------------------


def _service_prefix(service: str) -> bytes:
    return hashlib.sha256(service.encode("utf-8", "surrogatepass")).digest()[:8]


@functools.lru_cache(maxsize=4096)
def _row(group: str) -> bytes:
    """Key of a group's state row, and prefix of its queue rows: its service's groups together."""
    service = group.split("\x00", 2)[1]
    return _service_prefix(service) + hashlib.sha256(group.encode("utf-8", "surrogatepass")).digest()[:16]


def _state(txn: ReadTxn, group: str) -> FlowGroup:
    data = txn.get("flow", _row(group))
    return FlowGroup(group=group) if data is None else decode_record(data, FlowGroup)


def _put_state(txn: Txn, state: FlowGroup, now: int) -> None:
    # An idle group whose bucket is full again is the same as no row: keep the table small.
    if state.running <= 0 and state.queued <= 0 and state.tat_us <= now * 1000:
        txn.delete("flow", _row(state.group))
    else:
        txn.put("flow", _row(state.group), encode_record(state))


def _next_seq(txn: Txn) -> int:
    raw = txn.get("meta", _SEQ_ROW)
    seq = (_BE64.unpack(raw)[0] if raw else 0) + 1
    txn.put("meta", _SEQ_ROW, _BE64.pack(seq))
    return seq


def read_override(txn: ReadTxn, service: str) -> ServiceLimits | None:
    """An operator's limits of `service`, if set."""
    data = txn.get("limits", service.encode("utf-8", "surrogatepass"))
    return None if data is None else decode_record(data, ServiceLimits)


def write_override(txn: Txn, service: str, limits: ServiceLimits | None) -> None:
    """Set (or with None, remove) an operator's limits of `service`."""
    key = service.encode("utf-8", "surrogatepass")
    if limits is None:
        txn.delete("limits", key)
    else:
        txn.put("limits", key, encode_record(limits))


def groups_of(txn: ReadTxn, service: str) -> list[FlowGroup]:
    """The state of every limit group of `service` that has slots taken, a queue or a rate debt."""
    return [decode_record(value, FlowGroup) for _, value in txn.items_with_prefix("flow", _service_prefix(service))]


def position(txn: ReadTxn, record: InvocationRecord) -> int | None:
    """Place in line (1: next) of an invocation waiting in a limit's queue, else None."""
    if record.status != "pending" or not record.flow_wait:
        return None
    prefix = _row(record.flow_wait)
    mine = prefix + _BE64.pack(record.flow_seq)
    ahead = 0
    for key, _ in txn.items_with_prefix("flow_queue", prefix):
        if key >= mine:
            break
        ahead += 1
    return ahead + 1


# -- rules ------------------------------------------------------------------------------------------


def _interval_us(limit: Limit) -> int:
    return max(1, limit.period_ms * 1000 // limit.rate)


def _tolerance_us(limit: Limit) -> int:
    return ((limit.burst or limit.rate) - 1) * _interval_us(limit)


def start(txn: Txn, record: InvocationRecord, now: int, token: str, limits: ServiceLimits | None) -> InvocationRecord:
    """Start `record` (which holds its key's lock, if it needs one) within its limits.

    Returns the record to store: ``running`` with its first attempt and its slots; ``pending`` in
    the queue of the first full group; or ``scheduled`` at the start a rate limit reserved for it.
    """
    if record.flow_throttled:
        # The timer of a start a rate limit reserved: slots and tokens were taken then.
        return start_attempt(msgspec.structs.replace(record, flow_throttled=False), token, now)
    applicable = groups(limits, record) if limits is not None else []
    if not applicable:
        return start_attempt(record, token, now)
    states = [_state(txn, group) for group, _ in applicable]
    for (_, limit), state in zip(applicable, states, strict=True):
        if limit.concurrency and state.running >= limit.concurrency:
            return _enqueue(txn, record, state, now)
    start_us = now * 1000
    for (_, limit), state in zip(applicable, states, strict=True):
        if limit.rate:
            start_us = max(start_us, state.tat_us - _tolerance_us(limit))
    slots: list[str] = []
    for (group, limit), state in zip(applicable, states, strict=True):
        taken = state
        if limit.concurrency:
            taken = msgspec.structs.replace(taken, running=taken.running + 1)
            slots.append(group)
        if limit.rate:
            taken = msgspec.structs.replace(taken, tat_us=max(taken.tat_us, start_us) + _interval_us(limit))
        if taken is not state:
            _put_state(txn, taken, now)
    record = msgspec.structs.replace(record, flow_slots=slots, flow_wait="", flow_seq=0)
    start_ms = -(-start_us // 1000)
    if start_ms > now:
        txn.put("timers", timer_key(start_ms, record.id, START_INDEX), b"")
        return msgspec.structs.replace(
            record, status="scheduled", token="", scheduled_at_ms=start_ms, flow_throttled=True, modified_ms=now
        )
    return start_attempt(record, token, now)


def _enqueue(txn: Txn, record: InvocationRecord, state: FlowGroup, now: int) -> InvocationRecord:
    seq = record.flow_seq or _next_seq(txn)
    txn.put("flow_queue", _row(state.group) + _BE64.pack(seq), record.id.encode("ascii"))
    _put_state(txn, msgspec.structs.replace(state, queued=state.queued + 1), now)
    return msgspec.structs.replace(
        record, status="pending", token="", flow_slots=[], flow_wait=state.group, flow_seq=seq, modified_ms=now
    )


def announce(record: InvocationRecord, effects: Effects) -> None:
    """Tell the shell about a record `start` returned: send its attempt, or arm its start timer."""
    if record.status == "running":
        effects.start(record)
    elif record.status == "scheduled":
        effects.arm(record.scheduled_at_ms)


def release(
    txn: Txn,
    record: InvocationRecord,
    now: int,
    limits_of: LimitsOf,
    effects: Effects,
    tokens: Callable[[], str],
) -> InvocationRecord:
    """Free the slots (or the place in a queue) of the just-completed `record` and admit the next
    in line of each group it frees (their attempts or timers go to `effects`).

    Returns `record` without its slots, to store.
    """
    if not record.flow_slots and not record.flow_wait:
        return record
    freed: list[str] = []
    if record.flow_wait:
        queued_row = _row(record.flow_wait) + _BE64.pack(record.flow_seq)
        if txn.get("flow_queue", queued_row) is not None:
            txn.delete("flow_queue", queued_row)
            state = _state(txn, record.flow_wait)
            _put_state(txn, msgspec.structs.replace(state, queued=max(0, state.queued - 1)), now)
    for group in record.flow_slots:
        state = _state(txn, group)
        _put_state(txn, msgspec.structs.replace(state, running=max(0, state.running - 1)), now)
        freed.append(group)
    cleared = msgspec.structs.replace(record, flow_slots=[], flow_wait="", flow_seq=0)
    if freed:
        limits = limits_of(record.service)
        for group in freed:
            _pump(txn, group, now, limits, effects, tokens)
    return cleared


def pump_service(
    txn: Txn, service: str, now: int, limits: ServiceLimits | None, effects: Effects, tokens: Callable[[], str]
) -> None:
    """Admit whatever the queues of `service`'s groups may start under `limits` (after a change of
    its limits: a raised or removed limit lets queued invocations go)."""
    for state in groups_of(txn, service):
        if state.queued > 0:
            _pump(txn, state.group, now, limits, effects, tokens)


def _pump(
    txn: Txn, group: str, now: int, limits: ServiceLimits | None, effects: Effects, tokens: Callable[[], str]
) -> None:
    """Admit the heads of `group`'s queue while it has room: each starts, or moves to the queue of
    another of its groups that is full (keeping its arrival order)."""
    prefix = _row(group)
    while True:
        state = _state(txn, group)
        limit = _limit_of(limits, group)
        if limit is not None and limit.concurrency and state.running >= limit.concurrency:
            return
        head = next(txn.items_with_prefix("flow_queue", prefix), None)
        if head is None:
            if state.queued:
                _put_state(txn, msgspec.structs.replace(state, queued=0), now)
            return
        txn.delete("flow_queue", head[0])
        _put_state(txn, msgspec.structs.replace(state, queued=max(0, state.queued - 1)), now)
        queued = read_record(txn, head[1].decode("ascii"))
        if queued is None or queued.status != "pending" or queued.flow_wait != group:
            continue  # gone meanwhile (a purge): nothing waits there any more
        started = start(txn, msgspec.structs.replace(queued, flow_wait=""), now, tokens(), limits)
        put_record(txn, started)
        announce(started, effects)
