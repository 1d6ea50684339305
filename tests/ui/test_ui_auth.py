"""The web page against a proxy whose admin API needs a token, in headless Chromium: the token
prompt, a refused token, signing in (the token kept in the tab's sessionStorage and sent as a
header, never in the URL or a cookie), a reload, signing out, and no token in anything Chromium wrote.

Skipped when no Chromium binary is found (see `tests.ui.test_ui_browser`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster, ProxyProc
from tests.ui.browser import CHROMIUM_NAMES, Browser, DevToolsPage, find_chromium

pytestmark = pytest.mark.e2e

TOKEN = "adm-ui-0f8e7d6c5b4a39281706f5e4"
WRONG = "adm-ui-not-the-token-000000000"


@dataclass
class Guarded:
    cluster: Cluster
    proxy: ProxyProc
    browser: Browser


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium binary found (tried $CHROMIUM, " + ", ".join(CHROMIUM_NAMES) + ")")
    tmp = tmp_path_factory.mktemp("ui-auth")
    token_file = tmp / "admin-token"
    token_file.write_text(TOKEN + "\n")
    cluster = Cluster(tmp)
    try:
        proxy = cluster.proxy(env={"PROXY_ADMIN_TOKEN_FILE": str(token_file)})
        browser_dir = tmp / "browser"
        browser_dir.mkdir()
        yield Guarded(cluster, proxy, Browser(binary, browser_dir))
    finally:
        cluster.close()


@pytest.fixture(autouse=True)
def _report_processes(request: pytest.FixtureRequest, guarded: Guarded) -> None:
    request.node._cluster = guarded.cluster


#: The page's current view (null-safe: the first evaluations may run before the page has loaded).
_VIEW = "(document.getElementById('main') || {dataset: {}}).dataset.view"


def _sign_in(page: DevToolsPage, token: str) -> None:
    page.wait_for("document.getElementById('token') !== null")
    page.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)}, "
        "document.getElementById('login').requestSubmit(), true"
    )


def test_the_page_asks_for_the_token_and_keeps_it_in_the_session_only(guarded: Guarded) -> None:
    url = f"{guarded.proxy.admin}/ui"
    # Without a token the page loads (its files are open) and shows the prompt, not an error.
    dom = guarded.browser.dom(url)
    assert dom.by_id("main").attrs.get("data-view") == "login"
    assert "needs a token" in dom.text and "Sign in" in dom.text
    assert dom.by_id("banner").attrs.get("hidden") is not None or not dom.by_id("banner").text.strip()

    with DevToolsPage(guarded.browser.binary, guarded.browser.workdir, url) as page:
        page.wait_for(f"{_VIEW} === 'login'")
        assert page.evaluate("document.getElementById('sign-out').hidden") is True

        _sign_in(page, WRONG)
        page.wait_for("document.querySelector('.login-error') !== null")
        assert "refused" in page.evaluate("document.querySelector('.login-error').textContent")
        assert page.evaluate("sessionStorage.length") == 0, "a refused token is not kept"

        _sign_in(page, TOKEN)
        page.wait_for(f"{_VIEW} === 'list'")
        assert page.evaluate("sessionStorage.getItem('durable-proxy.admin-token')") == TOKEN
        assert TOKEN not in page.evaluate("location.href") and page.evaluate("document.cookie") == ""
        assert page.evaluate("document.getElementById('sign-out').hidden") is False
        # The page's own requests carry it: the counts (GET /stats) load.
        page.wait_for("document.querySelectorAll('#counts a').length > 0")

        # A mark on the old document: waiting for the view alone could still read the old page.
        page.evaluate("window.beforeReload = true, location.reload(), true")
        loaded = "!window.beforeReload && document.readyState === 'complete' && document.getElementById('sign-out')"
        page.wait_for(f"{loaded} && {_VIEW} === 'list'")  # the same tab keeps its session

        page.evaluate("document.getElementById('sign-out').click(), true")
        page.wait_for(f"{_VIEW} === 'login'")
        assert page.evaluate("sessionStorage.length") == 0

    written = [p for p in guarded.browser.workdir.rglob("*.log") if p.is_file()]
    assert written, "chromium wrote no log"
    for path in [*written, guarded.proxy.log_path]:
        assert TOKEN not in Path(path).read_text(errors="replace"), f"the token is in {path}"
