"""Service definitions: a named group of handlers and the decorator that registers them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

from handlers_sdk.protocol import HandlerInfo, HandlerKind, ServiceInfo, ServiceType

__all__ = ["HandlerDef", "Service", "VirtualObject", "Workflow"]

HandlerFn = Callable[..., Awaitable[Any]]


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

    def info(self) -> HandlerInfo:
        """This handler as announced by discovery."""
        return HandlerInfo(name=self.name, kind=self.kind)


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
