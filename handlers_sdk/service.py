"""Service definitions: a named group of handlers and the decorator that registers them."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_type_hints

import msgspec

from handlers_sdk.protocol import HandlerInfo, HandlerKind, Limit, ScheduleInfo, ServiceInfo, ServiceType

__all__ = ["HandlerDef", "Service", "VirtualObject", "Workflow", "json_schema"]

HandlerFn = Callable[..., Awaitable[Any]]
#: A decorated handler: the decorators hand the function back unchanged, so it keeps its signature
#: (and ``ctx.service_call(fn, arg)`` checks `arg` and the result against it).
F = TypeVar("F", bound=HandlerFn)
_DEFS = "#/$defs/"


def json_schema(type_hint: Any) -> dict[str, Any] | bool | None:
    """The JSON Schema of values of `type_hint` as discovery announces it, or None for any JSON.

    msgspec derives it for what it decodes (builtins, Structs, dataclasses, TypedDicts, unions,
    containers...); a pydantic model gives its own ``model_json_schema()``, and other types built
    from pydantic models go through pydantic's ``TypeAdapter`` when pydantic is importable (it is
    not a dependency). ``Any``, a missing annotation or a type neither knows give None, and so
    does an empty schema (pydantic's for ``object``).
    """
    if type_hint is Any:
        return None
    model_schema = getattr(type_hint, "model_json_schema", None)
    if isinstance(type_hint, type) and callable(model_schema):
        schema: Any = model_schema()
    else:
        try:
            schema = msgspec.json.schema(type_hint)
        except (TypeError, ValueError):
            schema = _pydantic_schema(type_hint)
    if schema == {}:
        return None
    if isinstance(schema, dict):
        return _hoist(schema)
    return schema if isinstance(schema, bool) else None


def _pydantic_schema(type_: Any) -> Any:
    try:  # optional, for authors who use pydantic; imported by name so nothing needs it installed
        pydantic = importlib.import_module("pydantic")
    except ImportError:
        return None
    try:
        return pydantic.TypeAdapter(type_).json_schema()
    except Exception:  # noqa: BLE001 - a type pydantic does not know either: any JSON
        return None


def _hoist(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"$ref": "#/$defs/Point", "$defs": {...}}`` (msgspec's form for a Struct) becomes Point's
    own schema at the top, so that its ``title`` describes the handler as Restate shows it."""
    ref, defs = schema.get("$ref"), schema.get("$defs")
    if set(schema) != {"$ref", "$defs"} or not isinstance(ref, str) or not isinstance(defs, dict):
        return schema
    name = ref.removeprefix(_DEFS)
    if not ref.startswith(_DEFS) or name not in defs:
        return schema
    top = dict(defs[name])
    rest = {k: v for k, v in defs.items() if k != name}
    if msgspec.json.encode(ref) in msgspec.json.encode([top, rest]):
        rest[name] = defs[name]  # recursive: the hoisted copy still refers to it
    if rest:
        top["$defs"] = rest
    return top


class HandlerDef:
    """One registered handler: its function, name, kind and input type."""

    def __init__(
        self,
        name: str,
        fn: HandlerFn,
        kind: HandlerKind,
        service_type: ServiceType = "service",
        ingress_private: bool = False,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"handler {name!r} must be an async function")
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise TypeError(f"handler {name!r} must take (ctx) or (ctx, input)")
        self.name = name
        self.fn = fn
        self.kind: HandlerKind = kind
        self.service_type: ServiceType = service_type
        #: Callable from other handlers only: the proxy's ingress refuses it (Restate's ``ingressPrivate``).
        self.ingress_private = ingress_private
        #: Its concurrency and rate limits (see `Service.handler`).
        self.limit: Limit | None = None
        self.key_limit: Limit | None = None
        self.limit_key = ""
        #: The schedule it declares (`Service.handler`'s ``schedule``): the proxy fires it.
        self.schedule: ScheduleInfo | None = None
        self.takes_input = len(params) == 2
        hints = get_type_hints(fn)
        self.input_type: Any = hints.get(params[1].name, Any) if self.takes_input else Any
        #: The return annotation (``Any`` when there is none).
        self.output_type: Any = hints.get("return", Any)

    def info(self) -> HandlerInfo:
        """This handler as announced by discovery, with the JSON Schemas of its annotations."""
        return HandlerInfo(
            name=self.name,
            kind=self.kind,
            input_schema=json_schema(self.input_type),
            output_schema=json_schema(self.output_type),
            ingress_private=self.ingress_private,
            limit=self.limit,
            key_limit=self.key_limit,
            limit_key=self.limit_key,
            schedule=self.schedule,
        )


class Service:
    """A stateless service whose handlers run concurrently without limit.

    Example::

        greeter = Service("Greeter")

        @greeter.handler()
        async def greet(ctx: Context, name: str) -> str:
            return f"Hello {name}"
    """

    type: ServiceType = "service"

    def __init__(
        self,
        name: str,
        *,
        ingress_private: bool = False,
        limit: Limit | None = None,
        key_limit: Limit | None = None,
    ) -> None:
        """A service called `name` in ingress paths; `ingress_private` is its handlers' default (see `handler`).

        `limit` bounds all its invocations together, `key_limit` those of each limit key across
        its handlers (``Limit(concurrency=N)`` running at once, ``Limit(rate=N, period_ms=P)``
        starts per period); the rest wait in the proxy, in arrival order. An operator can
        override them at run time (``PUT :9070/services/{name}/limits``).
        """
        if not name or "/" in name:
            raise ValueError(f"invalid service name {name!r}")
        self.name = name
        self.ingress_private = ingress_private
        self.limit = limit
        self.key_limit = key_limit
        self.handlers: dict[str, HandlerDef] = {}

    #: The kind a handler gets when the decorator names none.
    default_kind: HandlerKind = ""

    def handler(
        self,
        name: str | None = None,
        *,
        kind: HandlerKind | None = None,
        ingress_private: bool | None = None,
        limit: Limit | None = None,
        key_limit: Limit | None = None,
        limit_key: str = "",
        schedule: str | ScheduleInfo | None = None,
    ) -> Callable[[F], F]:
        """Register an async function ``(ctx, input) -> output`` as a handler of this service.

        With ``ingress_private=True`` only other handlers may call it (calls, sends): the proxy's
        ingress answers 400, as Restate does. None takes the service's default.

        `limit` bounds this handler's invocations together and `key_limit` those of each limit
        key (from the ``x-restate-limit-key`` header, or else the input's top-level field
        `limit_key`): see `Limit`. Invocations beyond a limit wait durably in the proxy.

        `schedule` makes the proxy start it on a cron expression (``"*/5 * * * *"``, UTC) or as
        a `ScheduleInfo` (time zone, interval, overlap and catch-up policies), with input null;
        the proxy checks the expression when the deployment registers (plain services only).
        """
        kind = self.default_kind if kind is None else kind
        register = self._register(name, kind, ingress_private, (limit, key_limit, limit_key))
        if schedule is None:
            return register
        if self.type != "service":
            raise ValueError(f"only handlers of a plain Service take a schedule, not those of a {self.type}")
        declared = schedule if isinstance(schedule, ScheduleInfo) else ScheduleInfo(cron=schedule)

        def register_scheduled(fn: F) -> F:
            register(fn)
            self.handlers[name or fn.__name__].schedule = declared
            return fn

        return register_scheduled

    def _register(
        self,
        name: str | None,
        kind: HandlerKind,
        ingress_private: bool | None = None,
        limits: tuple[Limit | None, Limit | None, str] = (None, None, ""),
    ) -> Callable[[F], F]:
        private = self.ingress_private if ingress_private is None else ingress_private

        def register(fn: F) -> F:
            handler_name = name or fn.__name__
            if handler_name in self.handlers:
                raise ValueError(f"duplicate handler {handler_name!r} in {self.name!r}")
            handler = HandlerDef(handler_name, fn, kind, self.type, ingress_private=private)
            handler.limit, handler.key_limit, handler.limit_key = limits
            self.handlers[handler_name] = handler
            # Lets ctx.service_call(fn, ...) find the target from the function itself.
            fn.__durable_target__ = (self.name, handler_name)  # type: ignore[attr-defined]
            return fn

        return register

    def info(self) -> ServiceInfo:
        """This service as announced by discovery."""
        handlers = [h.info() for h in self.handlers.values()]
        return ServiceInfo(
            name=self.name, type=self.type, handlers=handlers, ingress_private=self.ingress_private,
            limit=self.limit, key_limit=self.key_limit,
        )  # fmt: skip


class VirtualObject(Service):
    """A keyed service with durable state: ``POST /{Object}/{key}/{handler}``.

    Exclusive handlers (the default) run one at a time per key, queued in arrival order; shared
    handlers (``kind="shared"``) run concurrently and may only read state.
    """

    type = "object"
    default_kind = "exclusive"

    def handler(
        self,
        name: str | None = None,
        *,
        kind: HandlerKind | None = None,
        ingress_private: bool | None = None,
        limit: Limit | None = None,
        key_limit: Limit | None = None,
        limit_key: str = "",
        schedule: str | ScheduleInfo | None = None,
    ) -> Callable[[F], F]:
        """Register an object handler (``kind`` is ``"exclusive"`` or ``"shared"``; limits as in
        `Service.handler`)."""
        if kind not in (None, "exclusive", "shared"):
            raise ValueError("object handlers are 'exclusive' or 'shared'")
        return super().handler(
            name, kind=kind, ingress_private=ingress_private, limit=limit, key_limit=key_limit, limit_key=limit_key,
            schedule=schedule,  # refused: a schedule has no key to fire on
        )  # fmt: skip


class Workflow(Service):
    """A workflow: `main` runs exactly once per key (``POST /{Workflow}/{key}/run``); other
    handlers are shared (signals, queries) and can resolve its durable promises."""

    type = "workflow"
    default_kind = "shared"

    def main(self, name: str = "run", *, ingress_private: bool | None = None) -> Callable[[F], F]:
        """Register the workflow's run handler."""
        if any(h.kind == "workflow" for h in self.handlers.values()):
            raise ValueError(f"workflow {self.name!r} already has a main handler")
        return self._register(name, "workflow", ingress_private)

    def handler(
        self,
        name: str | None = None,
        *,
        kind: HandlerKind | None = None,
        ingress_private: bool | None = None,
        limit: Limit | None = None,
        key_limit: Limit | None = None,
        limit_key: str = "",
        schedule: str | ScheduleInfo | None = None,
    ) -> Callable[[F], F]:
        """Register a shared handler of the workflow (limits as in `Service.handler`)."""
        if kind not in (None, "shared"):
            raise ValueError("use @workflow.main() for the run handler; other handlers are shared")
        return super().handler(
            name, kind="shared", ingress_private=ingress_private, limit=limit, key_limit=key_limit,
            limit_key=limit_key, schedule=schedule,  # refused: a schedule has no key to fire on
        )  # fmt: skip
