"""`Machine.list_invocations` newest first (``order="desc"``, paged with `before`) and its
refusals; the oldest-first pages are tested in `test_retention_and_reads.py`."""

from __future__ import annotations

import pytest

from durable_core.errors import BadRequest
from durable_core.records import InvocationRecord
from handlers_sdk.protocol import Completed
from tests.unit.machine.world import NOW, World


def _page(
    world: World, *, status: str | None = None, service: str | None = None, limit: int = 50, before: str | None = None
) -> tuple[list[str], str | None]:
    found, cursor = world.read(
        lambda txn: world.machine.list_invocations(
            txn, status=status, service=service, limit=limit, before=before, order="desc"
        )
    )
    return [record.id for record in found], cursor


def _made_over_time(world: World, count: int) -> list[InvocationRecord]:
    """`count` Greeter invocations created 1 ms apart, oldest first; every other one completed."""
    made = []
    for n in range(count):
        world.now = NOW + n
        record = world.start()
        if n % 2:
            record = world.settle(record, Completed())[0]
        made.append(record)
    world.now = NOW
    return made


def test_desc_lists_newest_first(world: World) -> None:
    """Without a cursor the page opens on the newest invocation; ids sort by creation time."""
    made = _made_over_time(world, 5)
    ids, cursor = _page(world)
    assert ids == [record.id for record in reversed(made)]
    assert cursor is None
    assert ids == sorted(ids, reverse=True)


@pytest.mark.parametrize("status", [None, "running", "completed"])
def test_desc_pages_backwards_with_before(world: World, status: str | None) -> None:
    """Pages of `limit` newest first; the cursor is the last (oldest) id of a page and the next
    page starts right below it, so every matching invocation is listed once. A status other
    than completed is read from the `active` index, newest first as well."""
    made = _made_over_time(world, 9)
    want = [r.id for r in reversed(made) if status is None or r.status == status]
    pages: list[list[str]] = []
    before: str | None = None
    while True:
        ids, before = _page(world, status=status, limit=2, before=before)
        pages.append(ids)
        if before is None:
            break
        assert before == ids[-1]
    assert [inv for page in pages for inv in page] == want
    assert all(len(page) == 2 for page in pages[:-1])


def test_desc_over_active_skips_other_statuses_and_services(world: World) -> None:
    """Filters apply while walking down: a page holds only matches, newest first, and a cursor
    that is not itself a match (nor active) still pages from where it is."""
    greet_old = world.start()
    world.now = NOW + 1
    counter = world.start("Counter", "add", "k")
    world.now = NOW + 2
    done = world.settle(world.start(), Completed())[0]
    world.now = NOW + 3
    greet_new = world.start()
    assert _page(world, status="running") == ([greet_new.id, counter.id, greet_old.id], None)
    assert _page(world, status="running", service="Greeter") == ([greet_new.id, greet_old.id], None)
    assert _page(world, status="running", before=done.id) == ([counter.id, greet_old.id], None)
    assert _page(world, status="completed") == ([done.id], None)


def test_desc_before_the_oldest_is_empty(world: World) -> None:
    made = _made_over_time(world, 3)
    assert _page(world, before=made[0].id) == ([], None)
    assert _page(world, before="inv_") == ([], None)  # below every id
    assert _page(world, before="inv_zzzz")[0] == [r.id for r in reversed(made)]  # above every id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"order": "newest"}, "unknown order 'newest'", id="unknown-order"),
        pytest.param({"order": "asc", "before": "inv_x"}, "use it with order=desc", id="before-with-asc"),
        pytest.param({"order": "desc", "after": "inv_x"}, "use it with order=asc", id="after-with-desc"),
        pytest.param({"order": "desc", "before": "inv_ü"}, "is not an invocation id", id="non-ascii-before"),
        pytest.param({"after": "inv_ü"}, "is not an invocation id", id="non-ascii-after"),
    ],
)
def test_bad_orders_and_cursors_are_bad_requests(world: World, kwargs: dict[str, str], message: str) -> None:
    world.start()
    with pytest.raises(BadRequest, match=message):
        world.read(lambda txn: world.machine.list_invocations(txn, **kwargs))  # type: ignore[arg-type]
