"""The web page shows an invocation waiting for a concurrency limit with its place in line, in the
list and on the invocation's own page, in headless Chromium against a real proxy and the limited
handlers (`tests.handlers.limited`: ``Limited/slow`` runs 2 at a time).

Skipped when no Chromium binary is found (see `tests.ui.test_ui_browser`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Cluster
from tests.ui.browser import Browser, find_chromium

pytestmark = pytest.mark.e2e


def test_queued_invocations_show_their_place_in_line(cluster: Cluster, tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium binary found: set CHROMIUM=/path/to/chromium")
    handler = cluster.handler("tests.handlers.limited:application", env={"LIMITS_LEDGER": str(tmp_path / "l")})
    proxy = cluster.proxy([handler], services=["Limited"])
    sent = [proxy.send("Limited/slow", 60.0) for _ in range(4)]
    (tmp_path / "browser").mkdir()
    browser = Browser(chromium, tmp_path / "browser")

    dom = browser.dom(f"{proxy.admin}/ui#/?status=pending")
    rows = {row.attrs["data-inv"]: row for row in dom.select("tr", "inv")}
    assert set(rows) == set(sent[2:])
    assert "number 1 in line for the concurrency limit of Limited/slow" in rows[sent[2]].text
    assert "number 2 in line for the concurrency limit of Limited/slow" in rows[sent[3]].text

    page = browser.dom(f"{proxy.admin}/ui#/inv/{sent[3]}")
    facts = page.one("dl", "facts").text
    assert "Limitsnumber 2 in line for the concurrency limit of Limited/slow" in facts
