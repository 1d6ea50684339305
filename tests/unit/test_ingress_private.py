"""``ingress_private`` in the SDK: the service's default, a handler's own flag, and discovery."""

from __future__ import annotations

import msgspec

from handlers_sdk import Context, Service, VirtualObject, Workflow, WorkflowContext
from handlers_sdk.protocol import Manifest


def _private(svc: Service) -> dict[str, bool]:
    return {h.name: h.ingress_private for h in svc.info().handlers}


def test_a_handler_is_public_unless_it_or_its_service_says_otherwise() -> None:
    svc = Service("Mixed")

    @svc.handler()
    async def open_(ctx: Context) -> None: ...

    @svc.handler(ingress_private=True)
    async def hidden(ctx: Context) -> None: ...

    assert _private(svc) == {"open_": False, "hidden": True}
    assert svc.info().ingress_private is False


def test_a_private_service_makes_its_handlers_private_by_default() -> None:
    obj = VirtualObject("Vault", ingress_private=True)

    @obj.handler()
    async def put(ctx: Context) -> None: ...

    @obj.handler(kind="shared", ingress_private=False)
    async def peek(ctx: Context) -> None: ...

    assert _private(obj) == {"put": True, "peek": False}
    flow = Workflow("Flow", ingress_private=True)

    @flow.main(ingress_private=False)
    async def run(ctx: WorkflowContext) -> None: ...

    @flow.handler()
    async def signal(ctx: WorkflowContext) -> None: ...

    assert _private(flow) == {"run": False, "signal": True}


def test_discovery_carries_the_flag_and_leaves_it_off_when_false() -> None:
    svc = Service("Wire", ingress_private=True)

    @svc.handler()
    async def a(ctx: Context) -> None: ...

    @svc.handler(ingress_private=False)
    async def b(ctx: Context) -> None: ...

    wire = msgspec.json.decode(msgspec.json.encode(Manifest(services=[svc.info()])))
    service = wire["services"][0]
    assert service["ingress_private"] is True
    handlers = {h["name"]: h for h in service["handlers"]}
    assert handlers["a"]["ingress_private"] is True and "ingress_private" not in handlers["b"]
    assert msgspec.json.decode(msgspec.json.encode(Manifest(services=[svc.info()])), type=Manifest) == Manifest(
        services=[svc.info()]
    )
