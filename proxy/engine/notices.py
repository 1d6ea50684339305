"""Notices between proxies on one PostgreSQL database: LISTEN/NOTIFY on channel `CHANNEL`.

A commit on one proxy may leave work for another: an invocation created or resumed in a
partition another proxy owns (start its attempt), a result a client waits for on another proxy
(answer it), a timer due in another's partition (wake its timer loop), a deployment registered
(reload the routing table). After its commit the proxy publishes a `Notice`; every proxy
listening gets it and acts on its part.

Notices are a push, not the truth: one can be lost (the publisher crashed between its commit and
the notice, or a listener's connection broke). So the store stays the only truth and every
receiver has a fallback: waiters re-read the invocation now and then, owners reconcile their
partitions periodically and right after the listener reconnects (`proxy.engine.runtime`).

Publishing is coalesced: whatever the proxy publishes in one turn of its event loop goes out as
one NOTIFY (split to stay under PostgreSQL's 8000-byte payload), sent from a worker thread on a
connection of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.store import StoreFailure

if TYPE_CHECKING:
    import psycopg

    from proxy.store.postgres import PostgresStore

__all__ = ["CHANNEL", "Notice", "Notices"]

log = logging.getLogger("proxy.engine.notices")

CHANNEL = "durable_proxy"
#: Bytes of payload per NOTIFY (PostgreSQL's limit is 8000).
_MAX_PAYLOAD = 7000
#: Seconds between two attempts to connect the listener again.
_RETRY = 0.5


class Notice(msgspec.Struct, omit_defaults=True):
    """What one proxy tells the others (short field names: it travels in every NOTIFY)."""

    #: The proxy that published it (a proxy ignores its own).
    f: str = ""
    #: Invocations completed: answer whoever waits for them.
    d: list[str] = msgspec.field(default_factory=list)
    #: Invocations with an attempt to send or a retry to arm, for their partitions' owners.
    r: list[str] = msgspec.field(default_factory=list)
    #: The earliest timer written (ms), for the timer loops.
    t: int | None = None
    #: The deployments, services or limits changed: reload them.
    g: bool = False

    def empty(self) -> bool:
        """Nothing to tell."""
        return not (self.d or self.r or self.g) and self.t is None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Notice).decode


def _split(notice: Notice) -> list[bytes]:
    """`notice` as payloads under `_MAX_PAYLOAD` bytes each (ids go into as many as needed)."""
    whole = _encode(notice)
    if len(whole) <= _MAX_PAYLOAD:
        return [whole]
    out: list[bytes] = [_encode(Notice(f=notice.f, t=notice.t, g=notice.g))]

    def completed(chunk: list[str]) -> Notice:
        return Notice(f=notice.f, d=chunk)

    def to_run(chunk: list[str]) -> Notice:
        return Notice(f=notice.f, r=chunk)

    for ids, make in ((notice.d, completed), (notice.r, to_run)):
        chunk: list[str] = []
        size = 0
        for inv_id in ids:
            if size + len(inv_id) + 4 > _MAX_PAYLOAD - 64 and chunk:
                out.append(_encode(make(chunk)))
                chunk, size = [], 0
            chunk.append(inv_id)
            size += len(inv_id) + 4
        if chunk:
            out.append(_encode(make(chunk)))
    return out


class Notices:
    """Publishes this proxy's notices and delivers the others' to `on_notice`.

    Args:
        store: the PostgreSQL store whose connections it opens.
        proxy_id: this proxy (its own notices are not delivered back).
        on_notice: called on the event loop with each notice of another proxy.
        on_reconnect: called on the event loop once the listener is connected again after a
            break (notices of the gap may be lost: time to reconcile).
    """

    def __init__(
        self,
        store: PostgresStore,
        proxy_id: str,
        on_notice: Callable[[Notice], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self._store = store
        self._proxy_id = proxy_id
        self._on_notice = on_notice
        self._on_reconnect = on_reconnect
        self._pending = Notice(f=proxy_id)
        self._flush_armed = False
        #: The sending connection (a one-item holder: `PostgresStore.on_own_connection`).
        self._sender: list[psycopg.Connection[tuple[Any, ...]] | None] = [None]
        self._send_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self.sent = 0
        self.received = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- publishing -------------------------------------------------------------------------------

    def completed(self, invocation_ids: list[str]) -> None:
        """These invocations completed: whoever waits for them anywhere gets the result."""
        self._pending.d.extend(invocation_ids)
        self._arm()

    def run(self, invocation_ids: list[str]) -> None:
        """These invocations have an attempt to send or a retry to arm, on their owners."""
        self._pending.r.extend(invocation_ids)
        self._arm()

    def timer(self, due_ms: int) -> None:
        """A timer due at `due_ms` was written."""
        t = self._pending.t
        self._pending.t = due_ms if t is None else min(t, due_ms)
        self._arm()

    def registry_changed(self) -> None:
        """Deployments, services or limits changed."""
        self._pending.g = True
        self._arm()

    def _arm(self) -> None:
        if self._flush_armed:
            return
        self._flush_armed = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        notice, self._pending = self._pending, Notice(f=self._proxy_id)
        if notice.empty():
            return
        task = asyncio.ensure_future(self._send(_split(notice)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, payloads: list[bytes]) -> None:
        async with self._send_lock:  # one sender connection, one thread at a time on it
            try:
                await asyncio.to_thread(self._send_sync, payloads)
                self.sent += len(payloads)
            except Exception as exc:  # noqa: BLE001 - the receivers' fallbacks cover a lost notice
                log.warning("could not notify the other proxies: %s", exc)

    def _send_sync(self, payloads: list[bytes]) -> None:
        def send(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            for payload in payloads:
                conn.execute(b"SELECT pg_notify(%s, %s)", (CHANNEL, payload.decode()))

        self._store.on_own_connection(self._sender, send)

    # -- listening --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening (a thread with a connection of its own)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._listen, name="postgres-listen", daemon=True)
        self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        """Block until the listener is connected (True) or `timeout` passes."""
        return self._listening.wait(timeout)

    async def close(self) -> None:
        """Stop listening; send what is pending first."""
        self._flush()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 3)
        sender, self._sender[0] = self._sender[0], None
        if sender is not None:
            sender.close()

    def _listen(self) -> None:
        import psycopg

        broken = False
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self._store.connect()
                conn.execute(f"LISTEN {CHANNEL}".encode())
                self._listening.set()
                if broken:
                    log.warning("listening to the other proxies again")
                    self._deliver_reconnect()
                while not self._stopping.is_set():
                    for notify in conn.notifies(timeout=0.5):
                        self._deliver(notify.payload)
            except (psycopg.Error, StoreFailure) as exc:
                if not broken:
                    log.warning("lost the notices of the other proxies (%s); reconnecting", exc)
                broken = True
                self._listening.clear()
                self._stopping.wait(_RETRY)
            finally:
                if conn is not None:
                    conn.close()

    def _deliver(self, payload: str) -> None:
        try:
            notice = _decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignored a malformed notice on %s", CHANNEL)
            return
        if notice.f == self._proxy_id:
            return
        self.received += 1
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._on_notice, notice)
            except RuntimeError:  # the loop closed: the proxy is stopping
                pass

    def _deliver_reconnect(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._on_reconnect)
            except RuntimeError:
                pass
