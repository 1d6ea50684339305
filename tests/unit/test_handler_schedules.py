"""``@svc.handler(schedule=...)``: the schedule a handler declares reaches discovery (and from there
the proxy's code schedules, `durable_core.schedules.declared`); keyed services refuse one."""

from __future__ import annotations

import pytest

from durable_core.schedules import ScheduleRecord, declared
from handlers_sdk import Context, Service, VirtualObject, Workflow
from handlers_sdk.protocol import ScheduleInfo, decode_manifest
from handlers_sdk.server import HandlerApp


def _service() -> Service:
    svc = Service("Jobs")

    @svc.handler(schedule="*/5 * * * *")
    async def sweep(ctx: Context) -> None:
        return None

    weekdays = ScheduleInfo(cron="0 9 * * MON-FRI", timezone="Europe/Berlin", overlap="queue")

    @svc.handler(name="report", schedule=weekdays)
    async def weekly(ctx: Context) -> None:
        return None

    @svc.handler()
    async def plain(ctx: Context) -> None:
        return None

    return svc


def test_a_declared_schedule_is_in_discovery_and_becomes_a_code_schedule() -> None:
    manifest = decode_manifest(HandlerApp([_service()])._manifest)  # what GET /discovery sends
    [info] = manifest.services
    schedules = {h.name: h.schedule for h in info.handlers}
    assert schedules == {
        "sweep": ScheduleInfo(cron="*/5 * * * *"),
        "report": ScheduleInfo(cron="0 9 * * MON-FRI", timezone="Europe/Berlin", overlap="queue"),
        "plain": None,
    }
    assert declared(manifest.services) == [
        ScheduleRecord(id="code:Jobs:sweep", service="Jobs", handler="sweep", cron="*/5 * * * *", origin="code"),
        ScheduleRecord(
            id="code:Jobs:report", service="Jobs", handler="report", cron="0 9 * * MON-FRI",
            timezone="Europe/Berlin", overlap="queue", origin="code",
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("service", [VirtualObject("Counter"), Workflow("Signup")], ids=["object", "workflow"])
def test_keyed_services_take_no_schedule(service: Service) -> None:
    with pytest.raises(ValueError, match="only handlers of a plain Service take a schedule"):

        @service.handler(schedule="* * * * *")
        async def tick(ctx: Context) -> None:
            return None

    assert service.handlers == {}
