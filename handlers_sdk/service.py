"""Service definitions: a named group of handlers and the decorator that registers them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, get_type_hints

from handlers_sdk.protocol import HandlerInfo, ServiceInfo

__all__ = ["HandlerDef", "Service"]

HandlerFn = Callable[..., Awaitable[Any]]
HandlerKind = Literal["exclusive", "shared", "workflow", ""]


class HandlerDef:
    """One registered handler: its function, name, kind and input type."""

    def __init__(self, name: str, fn: HandlerFn, kind: HandlerKind) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"handler {name!r} must be an async function")
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise TypeError(f"handler {name!r} must take (ctx) or (ctx, input)")
        self.name = name
        self.fn = fn
        self.kind: HandlerKind = kind
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

    type: Literal["service", "object", "workflow"] = "service"

    def __init__(self, name: str) -> None:
        if not name or "/" in name:
            raise ValueError(f"invalid service name {name!r}")
        self.name = name
        self.handlers: dict[str, HandlerDef] = {}

    def handler(
        self, name: str | None = None, *, kind: HandlerKind = ""
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Register an async function ``(ctx, input) -> output`` as a handler of this service."""

        def register(fn: HandlerFn) -> HandlerFn:
            handler_name = name or fn.__name__
            if handler_name in self.handlers:
                raise ValueError(f"duplicate handler {handler_name!r} in {self.name!r}")
            self.handlers[handler_name] = HandlerDef(handler_name, fn, kind)
            # Lets ctx.service_call(fn, ...) find the target from the function itself.
            fn.__durable_target__ = (self.name, handler_name)  # type: ignore[attr-defined]
            return fn

        return register

    def info(self) -> ServiceInfo:
        """This service as announced by discovery."""
        return ServiceInfo(
            name=self.name, type=self.type, handlers=[h.info() for h in self.handlers.values()]
        )
