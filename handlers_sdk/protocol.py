"""The wire contract between the proxy and handler services (version 1).

Everything that crosses the proxy <-> handler boundary is one of the msgspec Structs below,
encoded as JSON. The proxy imports this module; a handler service needs nothing but msgspec.
`docs/protocol.md` describes the exchange in prose for SDK authors in other languages.

Rules for evolving it: new fields go last and have defaults; a change that an old peer cannot
ignore bumps `PROTOCOL_VERSION`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from handlers_sdk.ids import child_invocation_id, parse_restate_awakeable_id

__all__ = [
    "ACK_PATH",
    "COMPLETABLE",
    "CONTENT_TYPE",
    "EXPORT_FORMAT",
    "NULL",
    "PROTOCOL_VERSION",
    "AppendRequest",
    "AppendResponse",
    "AwakeableEntry",
    "CallEntry",
    "CancelEntry",
    "ClearAllStateEntry",
    "ClearStateEntry",
    "CompletableEntry",
    "Completed",
    "Entry",
    "Errored",
    "Failed",
    "Failure",
    "GetStateEntry",
    "HandlerInfo",
    "HandlerKind",
    "InvokeRequest",
    "JournalExport",
    "JournalItem",
    "Limit",
    "Manifest",
    "Outcome",
    "PatchEntry",
    "PromiseCompleteEntry",
    "PromiseGetEntry",
    "PromisePeekEntry",
    "RunEntry",
    "ScheduleInfo",
    "SendEntry",
    "ServiceInfo",
    "ServiceType",
    "SetStateEntry",
    "SleepEntry",
    "StateKeysEntry",
    "Suspended",
    "awakeable_id",
    "child_invocation_id",
    "decode_append",
    "decode_append_response",
    "decode_entry",
    "decode_invoke",
    "decode_item",
    "decode_manifest",
    "decode_outcome",
    "encode",
    "encode_export",
    "load_export",
    "parse_awakeable_id",
]

PROTOCOL_VERSION = 1
CONTENT_TYPE = "application/json"
#: Path of the step-ack endpoint, relative to the callback base URL in the invoke request.
ACK_PATH = "/internal/v1/entries"
#: The JSON ``null`` value, the default of every raw payload.
NULL = msgspec.Raw(b"null")

Mode = Literal["ack", "suspend"]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every wire struct: immutable, keyword-only, defaults left off the wire."""


class Failure(_Wire, frozen=True, kw_only=True):
    """A terminal failure: an HTTP-like status code and a message."""

    code: int = 500
    message: str


class RunEntry(_Wire, tag="run", frozen=True, kw_only=True):
    """The journaled outcome of one `ctx.run` step: its JSON value, or a terminal failure."""

    name: str
    value: msgspec.Raw = NULL
    failure: Failure | None = None
    #: ``file:line`` of the call site, for mismatch diagnostics. Not compared on replay.
    source: str = ""
    #: Wall-clock start (ms) and duration (ms, retries in place included) of the execution whose
    #: result this is, for the admin UI's timeline; 0 when unknown. Not compared on replay.
    started_ms: int = 0
    duration_ms: int = 0
    #: For a step awaited in a ``select``: the highest completion ``seq`` the attempt knew of when
    #: it journaled the step, which places the step among the proxy's completions (the winner of
    #: a select must be the same on replay). 0 otherwise.
    seen_seq: int = 0


class SleepEntry(_Wire, tag="sleep", frozen=True, kw_only=True):
    """A durable timer: completed by the proxy once ``wake_at_ms`` (wall clock) has passed."""

    name: str = ""
    wake_at_ms: int
    completed: bool = False
    seq: int = 0


class CallEntry(_Wire, tag="call", frozen=True, kw_only=True):
    """A call to another handler; the proxy starts the child and completes this with its outcome."""

    service: str
    handler: str
    key: str = ""
    input: msgspec.Raw = NULL
    #: The child's id, derived from (parent id, index) by `child_invocation_id`.
    invocation_id: str
    completed: bool = False
    value: msgspec.Raw = NULL
    failure: Failure | None = None
    seq: int = 0


class SendEntry(_Wire, tag="send", frozen=True, kw_only=True):
    """A one-way call, optionally delayed; complete as soon as it is journaled."""

    service: str
    handler: str
    key: str = ""
    input: msgspec.Raw = NULL
    invocation_id: str
    delay_ms: int = 0


class AwakeableEntry(_Wire, tag="awakeable", frozen=True, kw_only=True):
    """A promise completed from outside via ``POST /restate/awakeables/{id}/resolve|reject``."""

    id: str
    completed: bool = False
    value: msgspec.Raw = NULL
    failure: Failure | None = None
    seq: int = 0


class GetStateEntry(_Wire, tag="get_state", frozen=True, kw_only=True):
    """A state read of a virtual object or workflow, journaled with the value it returned."""

    key: str
    found: bool = False
    value: msgspec.Raw = NULL


class SetStateEntry(_Wire, tag="set_state", frozen=True, kw_only=True):
    """A state write; the proxy applies it in the transaction that journals it."""

    key: str
    value: msgspec.Raw = NULL


class ClearStateEntry(_Wire, tag="clear_state", frozen=True, kw_only=True):
    """Removal of one state key."""

    key: str


class ClearAllStateEntry(_Wire, tag="clear_all_state", frozen=True, kw_only=True):
    """Removal of every state key of the object."""


class StateKeysEntry(_Wire, tag="state_keys", frozen=True, kw_only=True):
    """The list of state keys, journaled as it was returned."""

    keys: list[str] = []


class PromiseGetEntry(_Wire, tag="promise_get", frozen=True, kw_only=True):
    """Waits for a workflow's durable promise; completed by the proxy when it is resolved."""

    name: str
    completed: bool = False
    value: msgspec.Raw = NULL
    failure: Failure | None = None
    seq: int = 0


class PromisePeekEntry(_Wire, tag="promise_peek", frozen=True, kw_only=True):
    """Reads a durable promise without waiting; the proxy completes it when journaling it
    (``found`` tells whether the promise had a value)."""

    name: str
    completed: bool = False
    found: bool = False
    value: msgspec.Raw = NULL
    failure: Failure | None = None
    seq: int = 0


class PromiseCompleteEntry(_Wire, tag="promise_complete", frozen=True, kw_only=True):
    """Resolves (``resolution``) or rejects (``rejection``) a durable promise. The proxy completes
    the entry itself with null, or with a 409 failure if the promise was already completed."""

    name: str
    resolution: msgspec.Raw = NULL
    rejection: Failure | None = None
    completed: bool = False
    value: msgspec.Raw = NULL
    failure: Failure | None = None
    seq: int = 0


class CancelEntry(_Wire, tag="cancel", frozen=True, kw_only=True):
    """Where the SDK raised the cancellation (409) in the handler: journaled at that point so that
    every replay raises it there again, whatever completed afterwards. ``seen_seq`` is the highest
    completion ``seq`` the attempt knew of; a replay hides later completions until it reaches this
    entry. Written by the SDK only; the proxy stores it like any other entry."""

    seen_seq: int = 0


class PatchEntry(_Wire, tag="patch", frozen=True, kw_only=True):
    """A code change (``ctx.patched(name)``) that this invocation reached after it was deployed:
    replays take the new branch where the marker is, the old one where the journal went past
    that point without it. Written by the SDK only; the proxy stores it like any other entry."""

    name: str


#: A journal entry. ``seq`` of a completable entry is its completion order within the
#: invocation (1, 2, ...), which makes ``select`` deterministic on replay.
Entry = (
    RunEntry
    | SleepEntry
    | CallEntry
    | SendEntry
    | AwakeableEntry
    | GetStateEntry
    | SetStateEntry
    | ClearStateEntry
    | ClearAllStateEntry
    | StateKeysEntry
    | PromiseGetEntry
    | PromisePeekEntry
    | PromiseCompleteEntry
    | CancelEntry
    | PatchEntry
)
#: Entries the proxy completes (the handler suspends while waiting on them).
CompletableEntry = SleepEntry | CallEntry | AwakeableEntry | PromiseGetEntry | PromisePeekEntry | PromiseCompleteEntry
#: The same, as a tuple for isinstance checks.
COMPLETABLE = (SleepEntry, CallEntry, AwakeableEntry, PromiseGetEntry, PromisePeekEntry, PromiseCompleteEntry)


class JournalItem(_Wire, frozen=True, kw_only=True):
    """One journal entry at its index (index = creation order of the operation)."""

    index: int
    entry: Entry


class InvokeRequest(_Wire, frozen=True, kw_only=True):
    """Body of ``POST /invoke/{service}/{handler}``: everything the handler needs to run or replay."""

    protocol_version: int = PROTOCOL_VERSION
    invocation_id: str
    service: str
    handler: str
    key: str = ""
    input: msgspec.Raw = NULL
    journal: list[JournalItem] = []
    attempt: int
    token: str
    #: Base URL of the proxy's callback API; empty means the handler must use suspend mode.
    callback_url: str = ""
    random_seed: int = 0
    headers: dict[str, str] = {}
    #: The whole state of the virtual object or workflow key, sent eagerly (key -> JSON value).
    state: dict[str, msgspec.Raw] = {}
    #: The invocation was cancelled: the SDK raises a TerminalError (409) at the first operation
    #: past the replayed journal, so compensation code runs.
    cancelled: bool = False


class AppendRequest(_Wire, frozen=True, kw_only=True):
    """Body of ``POST {callback_url}/internal/v1/entries``: one new entry from the current attempt."""

    invocation_id: str
    attempt: int
    token: str
    index: int
    entry: Entry


class AppendResponse(_Wire, frozen=True, kw_only=True):
    """The proxy's answer to an append, sent only after the entry is committed."""

    index: int
    #: The entry as journaled, when the proxy completed it on the spot (a promise peek or
    #: resolution, a call to an unknown service, an already resolved promise): the handler goes
    #: on without suspending to learn the result.
    entry: Entry | None = None


class Completed(_Wire, tag="completed", frozen=True, kw_only=True):
    """The handler returned ``value``; ``entries`` are new entries not yet acknowledged."""

    value: msgspec.Raw = NULL
    entries: list[JournalItem] = []


class Failed(_Wire, tag="failed", frozen=True, kw_only=True):
    """The handler raised a terminal error: the invocation fails without retry."""

    failure: Failure
    entries: list[JournalItem] = []


class Suspended(_Wire, tag="suspended", frozen=True, kw_only=True):
    """The handler ended the request early; re-invoke it once ``entries`` are committed."""

    entries: list[JournalItem] = []
    #: Journal indexes the handler waits on (any one completing resumes it); empty means
    #: "re-invoke at once".
    waiting_on: list[int] = []


class Errored(_Wire, tag="error", frozen=True, kw_only=True):
    """The attempt failed with a retryable error, or one that must pause the invocation."""

    code: int = 500
    message: str
    stacktrace: str = ""
    retry_after_ms: int | None = None
    behavior: Literal["retry", "pause"] = "retry"
    related_index: int | None = None
    related_name: str = ""
    entries: list[JournalItem] = []


Outcome = Completed | Failed | Suspended | Errored


#: A handler's kind: ``exclusive`` (one at a time per key) or ``shared`` for objects; ``workflow``
#: for a workflow's run handler (``shared`` for its others); empty for plain services.
HandlerKind = Literal["exclusive", "shared", "workflow", ""]
#: What a service is.
ServiceType = Literal["service", "object", "workflow"]


class Limit(_Wire, frozen=True, kw_only=True):
    """A flow-control limit: at most `concurrency` invocations started and not completed at once,
    at most `rate` starts per `period_ms` (a token bucket of `burst` tokens, `rate` when 0).
    Zero means no limit of that kind. Invocations beyond it wait durably; none is dropped."""

    concurrency: int = 0
    rate: int = 0
    period_ms: int = 1000
    burst: int = 0

    def __post_init__(self) -> None:
        if self.concurrency < 0 or self.rate < 0 or self.burst < 0:
            raise ValueError("concurrency, rate and burst must be 0 (no limit) or more")
        if self.period_ms <= 0:
            raise ValueError("period_ms must be more than 0")


class ScheduleInfo(_Wire, frozen=True, kw_only=True):
    """A schedule a handler declares in code (``@svc.handler(schedule=...)``): a cron expression
    (five fields, or six with seconds; in `timezone`) or an interval in ms, and what a fire does
    while the previous one runs (`overlap`) and after fires were missed (`catch_up`). The proxy
    keeps one schedule per such handler, id ``code:{service}:{handler}`` (README "Schedules")."""

    cron: str = ""
    timezone: str = "UTC"
    every_ms: int = 0
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catch_up: Literal["skip", "once"] = "skip"


class HandlerInfo(_Wire, frozen=True, kw_only=True):
    """A handler as announced by discovery."""

    name: str
    kind: HandlerKind = ""
    #: JSON Schemas (draft 2020-12: an object, or true/false) of the handler's input and output;
    #: absent when the SDK has none, which means any JSON value.
    input_schema: dict[str, Any] | bool | None = None
    output_schema: dict[str, Any] | bool | None = None
    #: Callable from other handlers only, not from the ingress (Restate's ``ingressPrivate``).
    ingress_private: bool = False
    #: The limit of this handler's invocations together, and of each limit key's separately.
    limit: Limit | None = None
    key_limit: Limit | None = None
    #: The top-level field of the JSON input whose value is the limit key (when no header gives one).
    limit_key: str = ""
    #: The schedule the handler declares in code (the proxy fires it), if any.
    schedule: ScheduleInfo | None = None


class ServiceInfo(_Wire, frozen=True, kw_only=True):
    """A service as announced by discovery."""

    name: str
    type: ServiceType = "service"
    handlers: list[HandlerInfo] = []
    #: The default of its handlers' ``ingress_private`` (each handler says its own).
    ingress_private: bool = False
    #: The limit of all the service's invocations together, and of each limit key's across it.
    limit: Limit | None = None
    key_limit: Limit | None = None


class Manifest(_Wire, frozen=True, kw_only=True):
    """Body of ``GET /discovery``."""

    protocol_version: int = PROTOCOL_VERSION
    mode: Mode = "ack"
    services: list[ServiceInfo] = []


def awakeable_id(invocation_id: str, index: int) -> str:
    """The public id of the awakeable at entry `index` of `invocation_id`."""
    return f"awk_{invocation_id.removeprefix('inv_')}_{index}"


def parse_awakeable_id(awakeable: str) -> tuple[str, int] | None:
    """(invocation id, entry index) of an awakeable id: the inverse of `awakeable_id`, and of the
    ``prom_1`` form Restate's CLI shows for the same awakeable (`ids.restate_awakeable_id`); None
    when `awakeable` is neither."""
    if awakeable.startswith("prom_"):
        return parse_restate_awakeable_id(awakeable)
    body = awakeable.removeprefix("awk_")
    head, sep, index = body.rpartition("_")
    # ASCII only: str.isdigit() and isalnum() also hold for "²" or "日" (int() then raises, or the
    # id cannot be encoded as a key), which made a malformed id a 500 instead of a 400.
    if body == awakeable or not sep or not head or not index.isascii() or not head.isascii():
        return None
    if not index.isdigit() or not head.isalnum():
        return None
    return "inv_" + head, int(index)


_encoder = msgspec.json.Encoder()
_invoke_decoder = msgspec.json.Decoder(InvokeRequest)
_append_decoder = msgspec.json.Decoder(AppendRequest)
_append_response_decoder = msgspec.json.Decoder(AppendResponse)
_outcome_decoder = msgspec.json.Decoder(Outcome)
_manifest_decoder = msgspec.json.Decoder(Manifest)
_entry_decoder = msgspec.json.Decoder(Entry)
_item_decoder = msgspec.json.Decoder(JournalItem)


def encode(message: msgspec.Struct) -> bytes:
    """Encode any wire struct as JSON."""
    return _encoder.encode(message)


def decode_invoke(data: bytes) -> InvokeRequest:
    """Decode an invoke request (raises msgspec errors or RecursionError on bad input)."""
    return _invoke_decoder.decode(data)


def decode_append(data: bytes) -> AppendRequest:
    """Decode a step append."""
    return _append_decoder.decode(data)


def decode_append_response(data: bytes) -> AppendResponse:
    """Decode the proxy's answer to an append."""
    response: AppendResponse = _append_response_decoder.decode(data)
    return response


def decode_outcome(data: bytes) -> Outcome:
    """Decode a handler's response body."""
    outcome: Outcome = _outcome_decoder.decode(data)
    return outcome


def decode_manifest(data: bytes) -> Manifest:
    """Decode a discovery manifest."""
    return _manifest_decoder.decode(data)


def decode_entry(data: bytes) -> Entry:
    """Decode one stored journal entry."""
    entry: Entry = _entry_decoder.decode(data)
    return entry


def decode_item(data: bytes) -> JournalItem:
    """Decode one journal item (index and entry), as the proxy stores and sends it."""
    item: JournalItem = _item_decoder.decode(data)
    return item


#: Value of `JournalExport.format`.
EXPORT_FORMAT = "durable-proxy.journal/1"


class JournalExport(msgspec.Struct, frozen=True, kw_only=True):
    """An invocation as exported by the proxy: target, input and journal (wire `JournalItem`s)."""

    format: str = EXPORT_FORMAT
    protocol_version: int = PROTOCOL_VERSION
    invocation_id: str
    #: ``Service/handler`` or ``Object/key/handler``, for people.
    target: str = ""
    service: str
    handler: str
    key: str = ""
    #: The invocation's status when it was exported (running, backing-off, paused, completed...).
    status: str = ""
    random_seed: int = 0
    headers: dict[str, str] = {}
    input: msgspec.Raw = NULL
    journal: list[JournalItem] = []
    #: The stored result (JSON) of a completed invocation (when `failure` is None).
    result: msgspec.Raw = NULL
    #: The terminal failure of a completed invocation.
    failure: Failure | None = None

    @property
    def completed(self) -> bool:
        """True when the export carries the invocation's final outcome."""
        return self.status == "completed"


_export_decoder = msgspec.json.Decoder(JournalExport)


def load_export(data: bytes) -> JournalExport:
    """Decode an exported journal (raises msgspec errors on bad input)."""
    return _export_decoder.decode(data)


def encode_export(export: JournalExport) -> bytes:
    """The JSON of an export: ``result`` only for a success, ``failure`` (code spelled out) only
    for a terminal failure, neither before the invocation completed."""
    fields = msgspec.structs.asdict(export)
    failure = fields.pop("failure")
    result = fields.pop("result")
    if export.completed and failure is not None:
        fields["failure"] = {"code": failure.code, "message": failure.message}
    elif export.completed:
        fields["result"] = result
    return _encoder.encode(fields)
