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

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, ProxyProc

pytestmark = pytest.mark.e2e

#: Binaries tried in order (after ``$CHROMIUM``).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
WINDOW = (1280, 900)
#: The header's background (``#1d2330`` in style.css): proof the stylesheet was applied.
HEADER_RGB = (0x1D, 0x23, 0x30)


def find_chromium() -> str | None:
    """Path of a Chromium binary: ``$CHROMIUM`` if set, else the first of `CHROMIUM_NAMES` on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return shutil.which(explicit) or (explicit if os.access(explicit, os.X_OK) else None)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# -- Chromium ---------------------------------------------------------------------------------------


@dataclass
class Browser:
    """Runs headless Chromium once per page load, each with a fresh profile under `workdir`."""

    binary: str
    workdir: Path
    runs: int = 0

    def _run(self, url: str, *extra: str, timeout: float = 90) -> str:
        self.runs += 1
        profile = self.workdir / f"profile-{self.runs}"
        argv = [
            self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
            "--virtual-time-budget=5000", *extra, url,
        ]  # fmt: skip
        log = self.workdir / f"chromium-{self.runs}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, start_new_session=True
            )
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                # The leader is not reaped yet, so its process group is still ours to kill.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise AssertionError(f"chromium did not finish within {timeout:g}s on {url}; log {log}") from None
        assert proc.returncode == 0, f"chromium exited {proc.returncode} on {url}:\n{log.read_text()[-3000:]}"
        return out.decode("utf-8", "replace")

    def dom(self, url: str) -> Node:
        """The page's DOM once its script has run (``--dump-dom``), parsed."""
        html = self._run(url, "--dump-dom")
        assert "<html" in html, html[:500]
        return parse_html(html)

    def screenshot(self, url: str, path: Path) -> Path:
        """A PNG of the page in a `WINDOW`-sized window."""
        self._run(url, f"--screenshot={path}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
        assert path.is_file(), f"chromium wrote no screenshot at {path}"
        return path


# -- a small DOM ------------------------------------------------------------------------------------

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


@dataclass
class Node:
    """An element of the dumped DOM (enough of one for assertions)."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text content, whitespace collapsed."""
        parts: list[str] = []

        def walk(node: Node) -> None:
            for child in node.children:
                if isinstance(child, str):
                    parts.append(child)
                else:
                    walk(child)

        walk(self)
        return " ".join("".join(parts).split())

    @property
    def classes(self) -> set[str]:
        """The ``class`` attribute as a set."""
        return set(self.attrs.get("class", "").split())

    def find_all(self, predicate: Callable[[Node], bool]) -> list[Node]:
        """Every descendant element (depth first, document order) matching `predicate`."""
        found: list[Node] = []
        for child in self.children:
            if isinstance(child, Node):
                if predicate(child):
                    found.append(child)
                found.extend(child.find_all(predicate))
        return found

    def select(self, tag: str | None = None, cls: str | None = None, **data: Any) -> list[Node]:
        """Descendants by tag, class and attributes (``data_inv=...`` matches ``data-inv``)."""
        wanted = {name.replace("_", "-"): str(value) for name, value in data.items()}
        return self.find_all(
            lambda n: (tag is None or n.tag == tag)
            and (cls is None or cls in n.classes)
            and all(n.attrs.get(k) == v for k, v in wanted.items())
        )

    def one(self, tag: str | None = None, cls: str | None = None, **data: Any) -> Node:
        """The single descendant matching; fails the test otherwise."""
        found = self.select(tag, cls, **data)
        assert len(found) == 1, f"expected one {tag or '*'}.{cls or '*'} {data}, found {len(found)}"
        return found[0]

    def by_id(self, element_id: str) -> Node:
        """The element with this id."""
        return self.one(id=element_id)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(html: str) -> Node:
    """Parse serialized HTML (Chromium's ``--dump-dom``) into `Node` s."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# -- PNG --------------------------------------------------------------------------------------------


@dataclass
class Image:
    """A decoded 8-bit PNG: size and one bytes row per line (channels interleaved)."""

    width: int
    height: int
    channels: int
    rows: list[bytes]

    def pixel(self, x: int, y: int) -> tuple[int, ...]:
        """The channel values at (x, y)."""
        start = x * self.channels
        return tuple(self.rows[y][start : start + self.channels])

    def colours(self) -> set[bytes]:
        """The distinct RGB(A) values of the image."""
        c = self.channels
        distinct: set[bytes] = set()
        for row in self.rows:
            distinct.update(row[i : i + c] for i in range(0, len(row), c))
        return distinct


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> Image:
    """Decode a non-interlaced 8-bit greyscale/RGB/RGBA PNG with the standard library only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0, f"unsupported PNG: depth {depth}, interlace {interlace}"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                up_left = prev[i - channels] if i >= channels else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return Image(width, height, channels, rows)


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
        proxy = cluster.proxy([handler], services=("Sleeper", "Caller", "Child", "Approver"))
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
        "awaiting": "suspended", "paused": "paused",
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
    counts = {a.attrs["data-status"]: a.one("span", "num").text for a in dom.by_id("counts").select("a")}
    assert counts["suspended"] == "2" and counts["paused"] == "1" and counts["completed"] == "3", counts
    service_options = [o.text for o in dom.by_id("filter-service").select("option")]
    assert {"Sleeper", "Caller", "Child", "Approver"} <= set(service_options)


def test_list_filters_and_pages(scene: Scene) -> None:
    suspended = scene.browser.dom(scene.url("#/?status=suspended"))
    listed = {row.attrs["data-inv"] for row in suspended.select("tr", "inv")}
    assert listed == {scene.ids["sleeping"], scene.ids["awaiting"]}
    selected = [o for o in suspended.by_id("filter-status").select("option") if "selected" in o.attrs]
    assert [o.text for o in selected] == ["suspended"]

    sleeper = scene.browser.dom(scene.url("#/?service=Sleeper"))
    assert {row.attrs["data-inv"] for row in sleeper.select("tr", "inv")} == {scene.ids["sleeping"], scene.ids["paused"]}
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


def test_unknown_invocation_says_so(scene: Scene) -> None:
    dom = scene.browser.dom(scene.url("#/inv/inv_doesnotexist"))
    assert "inv_doesnotexist not found" in dom.by_id("main").text


@pytest.mark.parametrize("page", ["list", "timeline"])
def test_screenshot_is_a_rendered_page(scene: Scene, page: str) -> None:
    fragment = "" if page == "list" else f"#/inv/{scene.ids['awaiting']}"
    path = scene.browser.screenshot(scene.url(fragment), scene.browser.workdir / f"{page}.png")
    print(f"screenshot: {path}")
    image = decode_png(path.read_bytes())
    assert (image.width, image.height) == WINDOW
    assert image.pixel(4, 4)[:3] == HEADER_RGB, "the header is not drawn with the stylesheet's colours"
    assert image.pixel(WINDOW[0] // 2, WINDOW[1] - 4)[:3] != HEADER_RGB
    colours = image.colours()
    assert len(colours) > 100, f"only {len(colours)} colours: a blank or unstyled page"
