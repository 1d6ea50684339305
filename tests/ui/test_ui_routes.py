"""The web page's routes (`proxy.api.ui.ui_routes`) in-process: what is served, with which headers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from proxy.api.http import exception_handlers
from proxy.api.ui import ui_routes

UI_DIR = Path(__file__).resolve().parents[2] / "proxy" / "api" / "static"


class Client:
    """A synchronous client of an ASGI app (one event loop per request, no redirects followed)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str) -> httpx.Response:
        """Send one request and read the whole response."""

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as http:
                return await http.request(method, path)

        return asyncio.run(send())

    def get(self, path: str) -> httpx.Response:
        """``GET path``."""
        return self.request("GET", path)

    def head(self, path: str) -> httpx.Response:
        """``HEAD path``."""
        return self.request("HEAD", path)


@pytest.fixture
def client() -> Client:
    """The UI routes alone, with the admin app's error handlers."""
    return Client(Starlette(routes=ui_routes(), exception_handlers=exception_handlers("admin")))


def test_root_redirects_to_the_page(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "ui"


def test_page_and_assets_are_served_with_a_strict_policy(client: Client) -> None:
    page = client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == (UI_DIR / "index.html").read_text()
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, media_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media_type)
        assert response.content == (UI_DIR / name).read_bytes()
    assert client.head("/ui").status_code == 200


def test_trailing_slash_redirects_to_the_page(client: Client) -> None:
    """The page uses relative URLs (``ui/app.js``, ``invocations``), which only work from ``/ui``."""
    response = client.get("/ui/")
    assert response.status_code in (307, 308)
    assert response.headers["location"].endswith("/ui")


@pytest.mark.parametrize("path", ["/ui/index.html", "/ui/nope.js", "/ui/..%2Fui.py", "/ui/ui.py"])
def test_only_listed_assets_are_served(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["source"] == "admin"


def test_page_references_only_local_files() -> None:
    """No CDN and no build step: every script and stylesheet is one of the served files."""
    html = (UI_DIR / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert sorted(r for r in references if r.startswith("ui/")) == ["ui/app.js", "ui/style.css"]
    for name in ("index.html", "app.js", "style.css"):
        text = (UI_DIR / name).read_text()
        assert not re.search(r"https?://", text), f"{name} refers to another origin"
        assert "innerHTML" not in text, f"{name}: API values must go in as text"
