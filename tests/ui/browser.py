"""Headless Chromium for the web page tests, with nothing but the standard library and aiohttp.

* `Browser` runs Chromium once per page load: ``--dump-dom`` (parsed into `Node` s by
  `parse_html`) or ``--screenshot`` (decoded by `decode_png`).
* `DevToolsPage` keeps one Chromium running with ``--remote-debugging-port`` and evaluates
  JavaScript in the page over the DevTools protocol (to click buttons and read the DOM).

Every Chromium is started in its own session and killed by its process group id if it does not
exit in time; profiles live under the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from proxy.tools.dev import stop_process_group

__all__ = [
    "CHROMIUM_NAMES",
    "WINDOW",
    "Browser",
    "DevToolsPage",
    "Image",
    "Node",
    "decode_png",
    "find_chromium",
    "parse_html",
]

#: Binaries tried in order (after ``$CHROMIUM``).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
WINDOW = (1280, 900)


#: Flags of every run: headless, no sandbox (root in containers), nothing fetched from the network.
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-crash-reporter", "--hide-scrollbars", "--mute-audio",
)  # fmt: skip


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
        argv = [self.binary, *_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url]
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
            lambda n: (
                (tag is None or n.tag == tag)
                and (cls is None or cls in n.classes)
                and all(n.attrs.get(k) == v for k, v in wanted.items())
            )
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


# -- DevTools protocol ------------------------------------------------------------------------------


class DevToolsPage:
    """One Chromium kept running on `url`, driven over the DevTools protocol (a context manager).

    ``evaluate`` runs a JavaScript expression in the page and returns its JSON value; a promise
    is awaited. Chromium picks the debugging port itself (``--remote-debugging-port=0``) and writes
    it to ``DevToolsActivePort`` in the profile, so no port is guessed.
    """

    def __init__(self, binary: str, workdir: Path, url: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.url = url
        self.profile = workdir / "devtools-profile"
        self.log_path = workdir / "devtools-chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 0

    def __enter__(self) -> DevToolsPage:
        self.profile.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary, *_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", self.url,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._loop.run_until_complete(self._connect())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _connect(self, timeout: float = 30) -> None:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (active.is_file() and active.read_text().count("\n") >= 1):
            assert self.proc is not None and self.proc.poll() is None, f"chromium exited: {self._log_tail()}"
            assert time.monotonic() < deadline, f"no DevToolsActivePort after {timeout:g}s: {self._log_tail()}"
            await asyncio.sleep(0.05)
        port = int(active.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        target: dict[str, Any] | None = None
        while target is None:
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t.get("type") == "page"]
            target = pages[0] if pages else None
            if target is None:
                assert time.monotonic() < deadline, "chromium opened no page"
                await asyncio.sleep(0.05)
        self._ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)

    async def _call(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self._ws is not None
        self._next_id += 1
        request_id = self._next_id
        await self._ws.send_str(json.dumps({"id": request_id, "method": method, "params": params}))
        async with asyncio.timeout(timeout):
            while True:
                message = await self._ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, f"devtools connection: {message!r}"
                reply: dict[str, Any] = json.loads(message.data)
                if reply.get("id") == request_id:
                    assert "error" not in reply, reply["error"]
                    result: dict[str, Any] = reply["result"]
                    return result

    def evaluate(self, expression: str, timeout: float = 10) -> Any:
        """The JSON value of `expression` in the page (awaited if it is a promise)."""
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        result = self._loop.run_until_complete(self._call("Runtime.evaluate", params, timeout))
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(f"{expression!r} threw: {details.get('exception', details)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15, interval: float = 0.1) -> Any:
        """Evaluate `expression` until it is truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {expression!r}"
            time.sleep(interval)

    def close(self) -> None:
        """Close the connection, then stop Chromium (SIGTERM, then SIGKILL of its process group)."""
        if self._ws is not None:
            self._loop.run_until_complete(self._ws.close())
            self._ws = None
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
            self._session = None
        self._loop.close()
        proc = self.proc
        if proc is None:
            return
        stop_process_group(proc)
        self.proc = None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return "(no log)"
