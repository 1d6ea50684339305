"""Service definitions: a named group of handlers and the decorator that registers them."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

import msgspec

from handlers_sdk.protocol import HandlerInfo, HandlerKind, ServiceInfo, ServiceType

__all__ = ["HandlerDef", "Service", "VirtualObject", "Workflow", "json_schema"]

HandlerFn = Callable[..., Awaitable[Any]]
_DEFS = "#/$defs/"


def json_schema(type_: Any) -> dict[str, Any] | bool | None:
    """The JSON Schema of values of `type_` as discovery announces it, or None for any JSON.

    msgspec derives it for what it decodes (builtins, Structs, dataclasses, TypedDicts, unions,
    containers...); a pydantic model gives its own ``model_json_schema()``, and other types built
    from pydantic models go through pydantic's ``TypeAdapter`` when pydantic is importable (it is
    not a dependency). ``Any``, a missing annotation or a type neither knows give None.
    """
    if type_ is Any:
        return None
    model_schema = getattr(type_, "model_json_schema", None)
    if isinstance(type_, type) and callable(model_schema):
        schema: Any = model_schema()
    else:
        try:
            schema = msgspec.json.schema(type_)
        except (TypeError, ValueError):
            schema = _pydantic_schema(type_)
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

    def __init__(self, name: str, fn: HandlerFn, kind: HandlerKind, service_type: ServiceType = "service") -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"handler {name!r} must be an async function")
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise TypeError(f"handler {name!r} must take (ctx) or (ctx, input)")
        self.name = name
        self.fn = fn
        self.kind: HandlerKind = kind
        self.service_type: ServiceType = service_type
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

    def __init__(self, name: str) -> None:
        if not name or "/" in name:
            raise ValueError(f"invalid service name {name!r}")
        self.name = name
        self.handlers: dict[str, HandlerDef] = {}

    #: The kind a handler gets when the decorator names none.
    default_kind: HandlerKind = ""

    def handler(self, name: str | None = None, *, kind: HandlerKind | None = None) -> Callable[[HandlerFn], HandlerFn]:
        """Register an async function ``(ctx, input) -> output`` as a handler of this service."""
        return self._register(name, self.default_kind if kind is None else kind)

    def _register(self, name: str | None, kind: HandlerKind) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            handler_name = name or fn.__name__
            if handler_name in self.handlers:
                raise ValueError(f"duplicate handler {handler_name!r} in {self.name!r}")
            self.handlers[handler_name] = HandlerDef(handler_name, fn, kind, self.type)
            # Lets ctx.service_call(fn, ...) find the target from the function itself.
            fn.__durable_target__ = (self.name, handler_name)  # type: ignore[attr-defined]
            return fn

        return register

    def info(self) -> ServiceInfo:
        """This service as announced by discovery."""
        return ServiceInfo(name=self.name, type=self.type, handlers=[h.info() for h in self.handlers.values()])


class VirtualObject(Service):
    """A keyed service with durable state: ``POST /{Object}/{key}/{handler}``.

    Exclusive handlers (the default) run one at a time per key, queued in arrival order; shared
    handlers (``kind="shared"``) run concurrently and may only read state.
    """

    type = "object"
    default_kind = "exclusive"

    def handler(self, name: str | None = None, *, kind: HandlerKind | None = None) -> Callable[[HandlerFn], HandlerFn]:
        """Register an object handler (``kind`` is ``"exclusive"`` or ``"shared"``)."""
        if kind not in (None, "exclusive", "shared"):
            raise ValueError("object handlers are 'exclusive' or 'shared'")
        return super().handler(name, kind=kind)


class Workflow(Service):
    """A workflow: `main` runs exactly once per key (``POST /{Workflow}/{key}/run``); other
    handlers are shared (signals, queries) and can resolve its durable promises."""

    type = "workflow"
    default_kind = "shared"

    def main(self, name: str = "run") -> Callable[[HandlerFn], HandlerFn]:
        """Register the workflow's run handler."""
        if any(h.kind == "workflow" for h in self.handlers.values()):
            raise ValueError(f"workflow {self.name!r} already has a main handler")
        return self._register(name, "workflow")

    def handler(self, name: str | None = None, *, kind: HandlerKind | None = None) -> Callable[[HandlerFn], HandlerFn]:
        """Register a shared handler of the workflow."""
        if kind not in (None, "shared"):
            raise ValueError("use @workflow.main() for the run handler; other handlers are shared")
        return super().handler(name, kind="shared")
