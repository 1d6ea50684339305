"""The web page in headless Chromium against a real proxy and handler (subprocesses).

One proxy and one handler service (`tests.handlers.durable`) serve the whole module. It holds
invocations in every shape the page must draw: completed with a call to a child, failed, suspended
on a timer, suspended on an awakeable and a timer, and paused. Chromium loads ``/ui`` with
``--dump-dom`` (the DOM after the script ran, parsed here with `html.parser`) and with
``--screenshot`` (a PNG decoded here with zlib to check that it is not blank).

Skipped when no Chromium binary is found: set ``CHROMIUM=/path/to/chromium`` or install Debian's
``chromium`` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.harness import Cluster, ProxyProc
from tests.ui.browser import CHROMIUM_NAMES, WINDOW, Browser, DevToolsPage, decode_png, find_chromium

pytestmark = pytest.mark.e2e

#: The header's background (``#1d2330`` in style.css): proof the stylesheet was applied.
HEADER_RGB = (0x1D, 0x23, 0x30)


# -- the scene --------------------------------------------------------------------------------------


@dataclass
class Scene:
    """A proxy with invocations in known states, and the browser to look at them."""

    cluster: Cluster
    proxy: ProxyProc
    browser: Browser
    ids: dict[str, str]
    child: str

    def url(self, fragment: str = "") -> str:
        """The page's URL on the admin port, with a ``#...`` fragment (the page's own routing)."""
        return f"{self.proxy.admin}/ui{fragment}"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary, or skip the module."""
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no Chromium binary found (tried $CHROMIUM, " + ", ".join(CHROMIUM_NAMES) + "): "
            "install one (Debian: apt-get install chromium) or set CHROMIUM=/path/to/chromium"
        )
    return binary


@pytest.fixture(scope="module")
def scene(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """One proxy + handler for the module, holding one invocation of each shape."""
    tmp = tmp_path_factory.mktemp("ui")
    cluster = Cluster(tmp)
    try:
        handler = cluster.handler("tests.handlers.durable:application")
        # Poison/run journals two steps, then its process dies: the invocation backs off, and
        # with a 2-minute retry delay it stays backing-off for the whole module.
        poison = cluster.handler("tests.handlers.poison:application", name="poison")
        proxy = cluster.proxy(
            [handler, poison],
            services=("Sleeper", "Caller", "Child", "Approver", "Poison"),
            env={"PROXY_RETRY_INITIAL_INTERVAL": "120s", "PROXY_RETRY_MAX_INTERVAL": "120s"},
        )
        ids: dict[str, str] = {}

        called = proxy.call("Caller/call_child", 3)
        assert called.status_code == 200, called.text
        ids["completed"] = called.headers["x-restate-id"]
        child: str = called.json()["child"]

        failed = proxy.call("Child/work", -1)
        assert failed.status_code == 422, failed.text
        ids["failed"] = failed.headers["x-restate-id"]

        ids["sleeping"] = proxy.send("Sleeper/nap", {"seconds": 3600})
        ids["awaiting"] = proxy.send("Approver/wait", 3600)
        ids["paused"] = proxy.send("Sleeper/doze", 3600)
        for key in ("sleeping", "awaiting", "paused"):
            proxy.wait_status(ids[key], "suspended")
        paused = proxy.http.patch(f"{proxy.admin}/invocations/{ids['paused']}/pause")
        assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text

        ids["retrying"] = proxy.send("Poison/run")
        proxy.wait_status(ids["retrying"], "backing-off")

        browser_dir = tmp / "browser"
        browser_dir.mkdir()
        yield Scene(cluster, proxy, Browser(chromium, browser_dir), ids, child)
    finally:
        cluster.close()


@pytest.fixture(autouse=True)
def _report_processes(request: pytest.FixtureRequest, scene: Scene) -> None:
    """Attach the processes' logs to a failure report (see `tests.e2e.plugin`)."""
    request.node._cluster = scene.cluster


# -- the tests --------------------------------------------------------------------------------------


def test_list_shows_every_invocation_with_its_status(scene: Scene) -> None:
    dom = scene.browser.dom(scene.url())
    assert dom.by_id("main").attrs["data-view"] == "list"
    rows = {row.attrs["data-inv"]: row for row in dom.select("tr", "inv")}
    expected = {
        "completed": "completed", "failed": "completed", "sleeping": "suspended",
        "awaiting": "suspended", "paused": "paused", "retrying": "backing-off",
    }  # fmt: skip
    for key, status in expected.items():
        inv = scene.ids[key]
        assert inv in rows, f"{key} invocation {inv} not listed; rows {sorted(rows)}"
        assert rows[inv].attrs["data-status"] == status, key
        assert rows[inv].one("a").attrs["href"] == f"#/inv/{inv}"
    assert scene.child in rows  # the child the completed call started is an invocation too
    assert "failed" in rows[scene.ids["failed"]].text and "negative input -1" in rows[scene.ids["failed"]].text
    assert "succeeded" in rows[scene.ids["completed"]].text
    assert "timer in 59m" in rows[scene.ids["sleeping"]].text
    assert "awakeable awk_" in rows[scene.ids["awaiting"]].text
    assert "paused by an operator" in rows[scene.ids["paused"]].text
    assert "(1 retry)" in rows[scene.ids["retrying"]].text
    counts = {a.attrs["data-status"]: a.one("span", "num").text for a in dom.by_id("counts").select("a")}
    assert counts == {
        "": "7",
        "scheduled": "0",
        "pending": "0",
        "running": "0",
        "suspended": "2",
        "backing-off": "1",
        "paused": "1",
        "completed": "3",
    }, counts
    service_options = [o.text for o in dom.by_id("filter-service").select("option")]
    assert {"Sleeper", "Caller", "Child", "Approver"} <= set(service_options)


def test_list_filters_and_pages(scene: Scene) -> None:
    suspended = scene.browser.dom(scene.url("#/?status=suspended"))
    listed = {row.attrs["data-inv"] for row in suspended.select("tr", "inv")}
    assert listed == {scene.ids["sleeping"], scene.ids["awaiting"]}
    selected = [o for o in suspended.by_id("filter-status").select("option") if "selected" in o.attrs]
    assert [o.text for o in selected] == ["suspended"]

    sleeper = scene.browser.dom(scene.url("#/?service=Sleeper"))
    assert {row.attrs["data-inv"] for row in sleeper.select("tr", "inv")} == {
        scene.ids["sleeping"],
        scene.ids["paused"],
    }
    assert "disabled" not in sleeper.by_id("filter-handler").attrs  # handlers of the chosen service

    first_page = scene.browser.dom(scene.url("#/?limit=20&status=completed"))
    assert len(first_page.select("tr", "inv")) == 3
    assert "disabled" in first_page.by_id("page-next").attrs

    # A page of 2 of the 6 invocations: the next page exists. (Limit 2 is not in the select's
    # choices, but the API takes it.)
    paged = scene.browser.dom(scene.url("#/?limit=2"))
    assert len(paged.select("tr", "inv")) == 2
    assert "disabled" not in paged.by_id("page-next").attrs
    assert "disabled" in paged.by_id("page-prev").attrs


def test_list_opens_on_the_newest_and_pages_back(scene: Scene) -> None:
    """The page lists newest first (the API's ``order=desc``): the first rows are the highest
    ids, the last invocation sent here is above the first one, and "Older" follows ``before``."""
    every = scene.proxy.http.get(f"{scene.proxy.admin}/invocations", params={"order": "desc", "limit": 100}).json()
    newest_first = [view["id"] for view in every["invocations"]]
    assert newest_first == sorted(newest_first, reverse=True)

    dom = scene.browser.dom(scene.url())
    shown = [row.attrs["data-inv"] for row in dom.select("tr", "inv")]
    assert shown == newest_first
    assert shown.index(scene.ids["retrying"]) < shown.index(scene.ids["completed"])  # sent last, shown first
    assert "newest first" in dom.one("div", "pager").text

    first = scene.browser.dom(scene.url("#/?limit=2"))
    assert [row.attrs["data-inv"] for row in first.select("tr", "inv")] == newest_first[:2]
    assert first.by_id("page-next").text == "Older →"
    older = scene.browser.dom(scene.url(f"#/?limit=2&before={newest_first[1]}"))
    assert [row.attrs["data-inv"] for row in older.select("tr", "inv")] == newest_first[2:4]
    assert "⇤ Newest" in older.by_id("page-newest").text


def test_timeline_of_a_sleeping_invocation(scene: Scene) -> None:
    inv = scene.ids["sleeping"]
    view = scene.proxy.invocation(inv)
    assert view["journal"][0]["entry"]["started_ms"] >= view["created_ms"]  # the SDK stamps its steps

    dom = scene.browser.dom(scene.url(f"#/inv/{inv}"))
    head = dom.one("section", "head")
    assert head.attrs["data-inv"] == inv and head.attrs["data-status"] == "suspended"
    assert "Sleeper/nap" in head.text
    timeline = dom.by_id("timeline")
    step = timeline.one("li", "step", data_index=0)
    assert (step.attrs["data-kind"], step.attrs["data-state"]) == ("run", "done")
    assert "before" in step.text and '"idx":0' in step.text
    assert step.one("span", "timing").text.startswith("+")  # offset from the start, and duration
    assert step.select("div", "track"), "timed steps get a bar"
    sleep = timeline.one("li", "step", data_index=1)
    assert (sleep.attrs["data-kind"], sleep.attrs["data-state"]) == ("sleep", "waiting")
    assert "wakes at" in sleep.text and "in 59m" in sleep.text
    nxt = timeline.one("li", "step-next")
    assert nxt.attrs["data-index"] == "2" and "suspended" in nxt.text and "attempt 1" in nxt.text
    waiting = dom.by_id("waiting")
    assert [li.attrs["data-kind"] for li in waiting.select("li")] == ["timer"]
    buttons = {b.attrs["data-action"]: "disabled" not in b.attrs for b in head.select("button", "action")}
    assert buttons == {"cancel": True, "kill": True, "pause": True, "resume": False, "purge": False}


def test_timeline_of_an_awakeable_and_a_timer(scene: Scene) -> None:
    inv = scene.ids["awaiting"]
    awakeable = scene.proxy.invocation(inv)["journal"][0]["entry"]["id"]
    dom = scene.browser.dom(scene.url(f"#/inv/{inv}"))
    waits = dom.by_id("waiting").select("li")
    assert sorted(li.attrs["data-kind"] for li in waits) == ["awakeable", "timer"]
    assert awakeable in dom.by_id("waiting").text
    entry = dom.by_id("timeline").one("li", "step", data_index=0)
    assert (entry.attrs["data-kind"], entry.attrs["data-state"]) == ("awakeable", "waiting")
    assert entry.one("code", "awakeable").text == awakeable and "not resolved yet" in entry.text
    publish = dom.by_id("timeline").one("li", "step", data_index=1)
    assert publish.attrs["data-kind"] == "run" and "publish" in publish.text


def test_timeline_of_a_completed_call(scene: Scene) -> None:
    inv = scene.ids["completed"]
    dom = scene.browser.dom(scene.url(f"#/inv/{inv}"))
    assert scene.child in dom.by_id("result").text
    timeline = dom.by_id("timeline")
    kinds = [li.attrs["data-kind"] for li in timeline.select("li", "step")]
    assert kinds == ["run", "call", "run"]  # completed: no "next" row
    call = timeline.one("li", "step", data_index=1)
    assert call.attrs["data-state"] == "done" and "Child/work" in call.text
    assert [a.attrs["href"] for a in call.select("a")] == [f"#/inv/{scene.child}"]
    assert "value 6" in call.text
    facts = dom.one("dl", "facts").text
    assert "Completed" in facts and "took" in facts


def test_step_durations_of_the_child(scene: Scene) -> None:
    """The child's first step sleeps 0.5 s (`tests.handlers.durable.CHILD_STEP_SLEEP`)."""
    slow = scene.proxy.invocation(scene.child)["journal"][0]["entry"]
    assert slow["name"] == "slow" and 450 <= slow["duration_ms"] < 5000, slow
    dom = scene.browser.dom(scene.url(f"#/inv/{scene.child}"))
    step = dom.by_id("timeline").one("li", "step", data_index=0)
    shown = step.one("span", "timing").one("b").text
    if slow["duration_ms"] < 1000:
        assert shown == f"{slow['duration_ms']} ms", shown
    else:  # a slow machine: shown in seconds
        assert shown.endswith(" s"), shown
    assert len(dom.by_id("timeline").select("div", "track")) == 2


def test_failed_and_paused_invocations(scene: Scene) -> None:
    failed = scene.browser.dom(scene.url(f"#/inv/{scene.ids['failed']}"))
    assert "422" in failed.by_id("failure").text and "negative input -1" in failed.by_id("failure").text
    buttons = {b.attrs["data-action"]: "disabled" not in b.attrs for b in failed.select("button", "action")}
    assert buttons == {"cancel": False, "kill": False, "pause": False, "resume": False, "purge": True}

    paused = scene.browser.dom(scene.url(f"#/inv/{scene.ids['paused']}"))
    assert paused.one("section", "head").attrs["data-status"] == "paused"
    assert "paused by an operator" in paused.by_id("last-failure").text
    nxt = paused.by_id("timeline").one("li", "step-next")
    assert nxt.attrs["data-state"] == "paused"
    buttons = {b.attrs["data-action"]: "disabled" not in b.attrs for b in paused.select("button", "action")}
    assert buttons["resume"] and not buttons["pause"]


def test_backing_off_invocation(scene: Scene) -> None:
    inv = scene.ids["retrying"]
    view = scene.proxy.invocation(inv)
    assert view["last_failure"] and view["next_retry_ms"], view
    dom = scene.browser.dom(scene.url(f"#/inv/{inv}"))
    assert dom.one("section", "head").attrs["data-status"] == "backing-off"
    assert view["last_failure"]["message"] in dom.by_id("last-failure").text
    timeline = dom.by_id("timeline")
    assert [li.attrs["data-kind"] for li in timeline.select("li", "step")] == ["run", "run", "next"]
    nxt = timeline.one("li", "step-next")
    assert nxt.attrs["data-index"] == "2" and nxt.attrs["data-state"] == "backing-off"
    assert "retry 1 in 1m" in nxt.text and "attempt 1, 1 retry" in nxt.text
    assert view["last_failure"]["message"] in nxt.text
    assert "Next retry" in dom.one("dl", "facts").text


def test_unknown_invocation_says_so(scene: Scene) -> None:
    dom = scene.browser.dom(scene.url("#/inv/inv_doesnotexist"))
    assert "inv_doesnotexist not found" in dom.by_id("main").text


@pytest.mark.parametrize("page", ["list", "waiting", "steps", "retrying"])
def test_screenshot_is_a_rendered_page(scene: Scene, page: str) -> None:
    """The list, and timelines with waiting points, timed steps (the child's) and a retry."""
    shown = {"list": "", "waiting": scene.ids["awaiting"], "steps": scene.child, "retrying": scene.ids["retrying"]}
    fragment = f"#/inv/{shown[page]}" if shown[page] else ""
    path = scene.browser.screenshot(scene.url(fragment), scene.browser.workdir / f"{page}.png")
    print(f"screenshot: {path}")
    image = decode_png(path.read_bytes())
    assert (image.width, image.height) == WINDOW
    assert image.pixel(4, 4)[:3] == HEADER_RGB, "the header is not drawn with the stylesheet's colours"
    assert image.pixel(WINDOW[0] // 2, WINDOW[1] - 4)[:3] != HEADER_RGB
    colours = image.colours()
    assert len(colours) > 100, f"only {len(colours)} colours: a blank or unstyled page"


def test_a_completed_invocation_shows_no_countdowns(scene: Scene) -> None:
    """Killed while it waits on an awakeable and a 3-day timer: the page shows the timer as never
    fired, with its due time but no "in 2d 23h", and the awakeable as never resolved. A killed
    invocation that was backing off shows no next retry.

    Runs after the list tests: it adds invocations of its own, which they do not expect.
    """
    proxy = scene.proxy
    inv = proxy.send("Approver/wait", 3 * 86400)
    proxy.wait_status(inv, "suspended")
    killed = proxy.http.patch(f"{proxy.admin}/invocations/{inv}/kill")
    assert killed.status_code == 200 and killed.json()["status"] == "completed", killed.text

    dom = scene.browser.dom(scene.url(f"#/inv/{inv}"))
    timeline = dom.by_id("timeline")
    states = {li.attrs["data-kind"]: li.attrs["data-state"] for li in timeline.select("li", "step")}
    assert states == {"awakeable": "cancelled", "run": "done", "sleep": "cancelled"}, states
    sleep = timeline.one("li", "step", data_kind="sleep")
    assert "never fired" in sleep.text and "was due at" in sleep.text
    assert "wakes at" not in sleep.text and "in 2d" not in sleep.text and "pending" not in sleep.text
    assert not sleep.select("time"), "a live countdown on a timer that will never fire"
    awakeable = timeline.one("li", "step", data_kind="awakeable")
    assert "never completed" in awakeable.text and "never resolved" in awakeable.text
    assert "not resolved yet" not in awakeable.text
    assert not timeline.select("li", "step-next")
    assert "in 2d" not in dom.by_id("main").text

    retrying = proxy.send("Poison/run")
    proxy.wait_status(retrying, "backing-off")
    assert proxy.http.patch(f"{proxy.admin}/invocations/{retrying}/kill").status_code == 200
    view = proxy.invocation(retrying)
    assert view["status"] == "completed" and view["next_retry_ms"] is None, view
    facts = scene.browser.dom(scene.url(f"#/inv/{retrying}")).one("dl", "facts").text
    assert "Completed" in facts and "Next retry" not in facts


def test_action_buttons_drive_the_admin_api(scene: Scene) -> None:
    """Click pause, resume, kill and purge in a live page (over the DevTools protocol).

    Runs last in this module: it adds an invocation of its own, which the tests above do not expect.
    """
    proxy = scene.proxy
    inv = proxy.send("Sleeper/doze", 3600)
    proxy.wait_status(inv, "suspended")
    head = "document.querySelector('section.head')"

    def click(action: str) -> None:
        button = f"document.querySelector('button[data-action={action}]')"
        page.wait_for(f"{button} && !{button}.disabled")
        page.evaluate(f"{button}.click(), true")

    with DevToolsPage(scene.browser.binary, scene.browser.workdir, scene.url(f"#/inv/{inv}")) as page:
        page.wait_for(f"{head} && {head}.dataset.status === 'suspended'")
        page.evaluate("window.confirm = () => true, true")  # kill and purge ask first

        click("pause")
        proxy.wait_status(inv, "paused", timeout=10)
        page.wait_for(f"{head}.dataset.status === 'paused'")
        assert "pause: done" in page.evaluate("document.getElementById('banner').textContent")

        click("resume")
        proxy.wait_status(inv, ("suspended", "running", "pending"), timeout=10)
        page.wait_for(f"{head}.dataset.status !== 'paused'")

        click("kill")
        killed = proxy.wait_status(inv, "completed", timeout=10)
        assert killed["failure"]["code"] == 409, killed
        page.wait_for("document.getElementById('failure') !== null")

        click("purge")
        page.wait_for("document.getElementById('main').dataset.view === 'list'")  # back to the list
        gone = proxy.http.get(f"{proxy.admin}/invocations/{inv}")
        assert gone.status_code == 404, gone.text
        page.wait_for(f"!document.querySelector('tr[data-inv=\"{inv}\"]')")

        # The id box opens an invocation.
        page.evaluate(
            f"document.getElementById('goto-id').value = '{scene.ids['sleeping']}',"
            "document.getElementById('goto').requestSubmit(), true"
        )
        page.wait_for(f"{head} && {head}.dataset.inv === '{scene.ids['sleeping']}'")
