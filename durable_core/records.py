"""The stored records (invocations, deployments, services, promises), their codecs and the Literal
types of statuses, kinds and actions, defined once.

Statuses (Restate's names): ``scheduled`` (a delayed send, or a start a rate limit put off),
``pending`` (queued behind another exclusive invocation of the same object key, or in a
concurrency limit's queue), ``running`` (an attempt is in
flight), ``suspended`` (waiting on a timer, call, awakeable or promise: no attempt, no memory),
``backing-off`` (waiting for the next retry), ``paused`` (retries exhausted, a journal mismatch or
an operator's pause; needs a human), ``completed`` (a result or a terminal failure is stored).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, get_args

import msgspec

from handlers_sdk.protocol import Failure, HandlerKind, Limit, ServiceType

__all__ = [
    "ACTIONS",
    "ACTIVE_STATUSES",
    "STATUSES",
    "Action",
    "DeploymentRecord",
    "HandlerKind",
    "InvocationRecord",
    "PromiseRecord",
    "ServiceLimits",
    "ServiceRecord",
    "ServiceType",
    "Status",
    "decode_record",
    "encode_record",
]

#: Where an invocation is in its life (see the module docstring).
Status = Literal["scheduled", "pending", "running", "suspended", "backing-off", "paused", "completed"]
#: Every status, in the order of an invocation's life.
STATUSES: tuple[Status, ...] = get_args(Status)
#: Statuses of invocations that have not completed (the ``active`` index holds them).
ACTIVE_STATUSES: frozenset[Status] = frozenset(s for s in STATUSES if s != "completed")
#: What an operator can do to an invocation.
Action = Literal["cancel", "kill", "pause", "resume", "purge"]
#: Every action.
ACTIONS: tuple[Action, ...] = get_args(Action)


class InvocationRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Everything the proxy knows about one invocation, except its input and journal."""

    id: str
    service: str
    handler: str
    key: str = ""
    status: Status = "running"
    created_ms: int
    modified_ms: int
    deployment_id: str = ""
    attempt: int = 0
    token: str = ""
    retry_count: int = 0
    next_retry_ms: int = 0
    last_failure: Failure | None = None
    idempotency_key: str | None = None
    headers: dict[str, str] = {}
    random_seed: int = 0
    completed_ms: int = 0
    expires_ms: int = 0
    result: bytes | None = None
    failure: Failure | None = None
    #: The invocation whose call entry this one completes (empty for ingress and sends).
    parent_id: str = ""
    parent_index: int = 0
    #: Journal indexes a suspended invocation waits on (any one completing resumes it).
    waiting_on: list[int] = []
    #: Completions so far; the next completed entry gets seq = completion_seq + 1.
    completion_seq: int = 0
    #: When a scheduled (delayed) invocation starts.
    scheduled_at_ms: int = 0
    #: The handler's kind (``exclusive``, ``shared``, ``workflow`` or empty for services).
    kind: HandlerKind = ""
    #: True for objects and workflows: the invocation sees its key's state.
    keyed: bool = False
    #: Cancelled by an operator: the next attempt raises a TerminalError in the handler.
    cancelled: bool = False
    #: (due ms, index) of its sleep timers not fired yet, so completion can delete their rows.
    timers: list[tuple[int, int]] = []
    #: (promise name, index) of the promises it waits on, so completion can delete the waiter rows.
    promise_waits: list[tuple[str, int]] = []
    #: The key its per-key concurrency and rate limits apply to (`durable_core.flow`).
    limit_key: str = ""
    #: The limit groups it holds a concurrency slot of (freed when it completes).
    flow_slots: list[str] = []
    #: The limit group whose queue it waits in (pending) and its place in arrival order.
    flow_wait: str = ""
    flow_seq: int = 0
    #: Scheduled by a rate limit: its start is reserved, the timer starts it without a new check.
    flow_throttled: bool = False

    @property
    def is_completed(self) -> bool:
        """True once a result or a terminal failure is stored."""
        return self.status == "completed"


class DeploymentRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A registered handler service endpoint and what its discovery announced."""

    id: str
    uri: str
    mode: str = "ack"
    services: list[str] = []
    created_ms: int = 0


class ServiceRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A service, its type and handlers, and the deployment that serves it (the latest)."""

    name: str
    type: ServiceType = "service"
    handlers: dict[str, HandlerKind] = {}
    deployment_id: str
    #: JSON Schemas of the handlers' inputs and outputs, by handler name, as discovery announced
    #: them; a handler without one (absent) takes or gives any JSON value.
    input_schemas: dict[str, dict[str, Any] | bool] = {}
    output_schemas: dict[str, dict[str, Any] | bool] = {}
    #: The concurrency and rate limits its code declares (an operator's override wins over them).
    limits: ServiceLimits | None = None
    #: Restate's ``ingressPrivate``: the service's default (shown as ``public``), and the handlers
    #: that only other handlers may call (the ingress answers 400).
    ingress_private: bool = False
    private_handlers: list[str] = []


class ServiceLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The concurrency and rate limits of one service's invocations (`durable_core.flow`)."""

    #: All the service's invocations together.
    service: Limit | None = None
    #: Each handler's invocations together, by handler name.
    handlers: dict[str, Limit] = {}
    #: Each limit key's invocations across the service.
    key: Limit | None = None
    #: Each limit key's invocations of one handler, by handler name.
    handler_keys: dict[str, Limit] = {}
    #: Handler name -> the top-level input field its limit key comes from (when no header gives one).
    key_fields: dict[str, str] = {}


class PromiseRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A workflow's durable promise."""

    name: str
    completed: bool = False
    value: bytes | None = None
    failure: Failure | None = None


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder] = {}  # type: ignore[type-arg]
R = TypeVar("R", bound=msgspec.Struct)


def encode_record(record: msgspec.Struct) -> bytes:
    """Stored form of a record."""
    return _encoder.encode(record)


def decode_record(data: bytes, type_: type[R]) -> R:
    """Inverse of `encode_record`."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    result: R = decoder.decode(data)
    return result
