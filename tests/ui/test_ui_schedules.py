"""The web page's schedules and deployments views in headless Chromium, against a real proxy and
the schedule handlers (`tests.handlers.scheduled`): schedules listed with their next fire and
policies (one paused, one declared in code), deployments with their pinned invocations by status.

Skipped when no Chromium binary is found (see `tests.ui.test_ui_browser`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Cluster
from tests.ui.browser import Browser, find_chromium

pytestmark = pytest.mark.e2e


def test_schedules_and_deployments_views(cluster: Cluster, tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium binary found: set CHROMIUM=/path/to/chromium")
    handler = cluster.handler("tests.handlers.scheduled:application")
    proxy = cluster.proxy([handler], services=["Tick"])
    body = {"id": "nightly", "service": "Tick", "handler": "run", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
            "overlap": "queue", "catch_up": "once", "paused": True}  # fmt: skip
    assert proxy.http.post(proxy.admin + "/schedules", json=body).status_code == 201
    sleeping = proxy.send("Tick/hold", {"seconds": 3600})
    proxy.wait_status(sleeping, "suspended")
    (tmp_path / "browser").mkdir()
    browser = Browser(chromium, tmp_path / "browser")

    dom = browser.dom(f"{proxy.admin}/ui#/schedules")
    assert dom.by_id("main").attrs["data-view"] == "schedules"
    rows = {row.attrs["data-schedule"]: row for row in dom.select("tr", "schedule")}
    assert set(rows) == {"code:Tick:heartbeat", "nightly"}
    nightly = rows["nightly"].text
    assert "Tick/run" in nightly and "0 3 * * * (Europe/Berlin)" in nightly and "paused" in nightly
    assert "queue / once" in nightly and "resume" in nightly
    heartbeat = rows["code:Tick:heartbeat"].text
    assert "* * * * * * (UTC)" in heartbeat and heartbeat.endswith("pause")
    assert rows["code:Tick:heartbeat"].select("time"), "the next fire time is shown"

    dom = browser.dom(f"{proxy.admin}/ui#/deployments")
    assert dom.by_id("main").attrs["data-view"] == "deployments"
    [row] = dom.select("tr", "deployment")
    assert handler.url in row.text and "Tick" in row.text and "1 suspended" in row.text
