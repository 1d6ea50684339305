"""The operator web page on the admin port: ``GET /ui`` (and ``/``, which redirects to it).

The page is static HTML, JavaScript and CSS kept in ``proxy/api/static/`` (package data, no build step
and nothing fetched from the internet): the script reads the admin API with ``fetch`` to list
invocations (newest first: ``GET /invocations?order=desc``, paged back with ``before=``) and show
one invocation's journal as a timeline, with the cancel, kill, pause, resume and purge actions.
Only the files named in `_ASSETS` are served, read once when the routes are built, with a
Content-Security-Policy that allows nothing but this origin.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from durable_core.errors import NotFound

__all__ = ["ui_routes"]

_UI_DIR = Path(__file__).with_name("static")

#: Served file name -> media type. The page itself is ``index.html``, served at ``/ui``.
_ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

_HEADERS = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def _load(directory: Path) -> dict[str, bytes]:
    """The bytes of every asset (a missing file is a packaging bug: fail when the app is built)."""
    return {name: (directory / name).read_bytes() for name in _ASSETS}


def ui_routes(directory: Path | None = None) -> list[BaseRoute]:
    """The routes of the web page, to add to the admin app.

    Args:
        directory: where the assets are; defaults to ``proxy/api/static/`` next to this module.

    Returns:
        ``GET /`` (redirect to ``/ui``), ``GET /ui`` (the page) and ``GET /ui/{asset}``.
    """
    assets = _load(directory or _UI_DIR)

    def serve(name: str) -> Response:
        return Response(assets[name], media_type=_ASSETS[name], headers=_HEADERS)

    async def root(request: Request) -> Response:
        return RedirectResponse("ui", status_code=307)

    async def page(request: Request) -> Response:
        return serve("index.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["asset"]
        if name not in assets or name == "index.html":
            raise NotFound(f"no asset /ui/{name}")
        return serve(name)

    return [
        Route("/", root, methods=["GET"]),
        Route("/ui", page, methods=["GET"]),
        Route("/ui/{asset}", asset, methods=["GET"]),
    ]
