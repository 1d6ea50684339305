"""The only writer: one thread that batches concurrent write requests into one transaction.

Each request is a function ``fn(txn) -> result`` run inside its own nested transaction, so a
request that raises leaves no writes while the others in the batch still commit (group commit).
A future is resolved only after the batch's commit (with fsync) has returned: durable before
visible.

The writer works over any `durable_core.txn.Backend`. What differs is how a batch fails:

* LMDB: a full map is grown (up to ``--max-map-size``) and the batch run again; past the
  largest map the requests are committed one by one so only those that do not fit get 507.
* Any other backend (PostgreSQL): a `proxy.store.StoreFailure` raised while the batch runs is
  the store's, not the request's: `StoreConflict` (another proxy's transaction won a race for a
  row) runs the batch again, a few times, then its requests one by one; `StoreUnavailable`
  (database unreachable, connection lost) fails the whole batch with 503 (the backend reconnects
  by itself); any other store failure commits the requests one by one, so only the one that
  causes it fails.

Fences: a request submitted with a fence ``(partition, epoch)`` acts as the owner of that
partition (`proxy.engine.leases`). Before running the batch, the writer locks the lease rows of
the batch's fenced partitions in the same transaction (`hold`) and fails with `Fenced` every
request whose partition this proxy no longer holds at that epoch, so an owner that lost a
partition commits nothing for it, whatever its own clock or memory says.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import lmdb

from durable_core.errors import Fenced, ProxyError, StorageFull, Unavailable
from durable_core.txn import Backend, Txn
from proxy import faults
from proxy.store import StoreConflict, StoreFailure, StoreUnavailable
from proxy.store.lmdb import Store

__all__ = ["Fence", "Holding", "WriteFn", "Writer"]

T = TypeVar("T")
log = logging.getLogger("proxy.store.writer")


WriteFn = Callable[[Txn], Any]
#: (partition, epoch) a request acts as the owner of.
Fence = tuple[int, int]
#: Runs of a batch that lost a race with another proxy before its requests are tried one by one.
_CONFLICT_RETRIES = 6


@runtime_checkable
class Holding(Protocol):
    """A write transaction that can lock lease rows (PostgreSQL's: `PostgresTxn.hold`)."""

    def hold(self, owner: str, partitions: Collection[int]) -> dict[int, int]:
        """Lock `partitions`' lease rows until the transaction ends; those `owner` holds, by epoch."""
        ...


#: Raised while a request runs, these fail its batch, not the request (see the module docstring).
_BATCH_FAILURES = (lmdb.MapFullError, StoreFailure)


class _Request:
    __slots__ = ("error", "fence", "fn", "future", "loop", "result")

    def __init__(
        self, fn: WriteFn, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, fence: Fence | None = None
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.fence = fence
        self.result: Any = None
        self.error: BaseException | None = None


class _Call:
    """Work for the writer thread that runs between transactions, outside any of them."""

    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop

    def run(self) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = self.fn()
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the writer thread lives on
            error = exc
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass


_STOP = object()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting coroutine was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _resolve(batch: list[_Request]) -> None:
    for request in batch:
        _settle(request.future, request.result, request.error)


class Writer:
    """Group-committing writer thread over a store (LMDB's `Store` or any other `Backend`).

    Args:
        max_map_size: LMDB only: the map grows up to this size.
    """

    def __init__(self, store: Backend, max_map_size: int, max_batch: int = 4096) -> None:
        self._store = store
        #: The LMDB store (map growth), or None for any other backend.
        self._lmdb = store if isinstance(store, Store) else None
        self._max_map_size = max_map_size
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request | _Call | object] = queue.SimpleQueue()
        name = "lmdb-writer" if self._lmdb is not None else "store-writer"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self.commits = 0
        self.batched = 0
        #: Called after every commit with (seconds, requests in the batch); set by the runtime.
        self.on_commit: Callable[[float, int], None] | None = None
        #: This proxy's id in the lease table: fenced requests act as it (set by the runtime).
        self.owner = ""
        #: Batches run again after losing a race with another proxy.
        self.conflicts = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    @property
    def queued(self) -> int:
        """Requests waiting for the writer thread now (the ingress sheds load past a bound)."""
        return self._queue.qsize()

    async def submit(self, fn: Callable[[Txn], T], fence: Fence | None = None) -> T:
        """Run `fn` in a write transaction. Returns after commit with `fn`'s result.

        Args:
            fence: act as the owner of this partition at this epoch: `fn` runs only if the lease
                table says so in the same transaction.

        Raises:
            ProxyError: whatever `fn` raised (its writes are discarded), or StorageFull.
            Fenced: this proxy does not hold `fence`.
        """
        if self._closed:
            raise Unavailable("the proxy is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Request(fn, future, loop, fence))
        return cast("T", await future)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer thread between two transactions; returns its result.

        For work that must not overlap a write transaction or a growth of the map (the writer
        thread is the only one that remaps it).
        """
        return cast("T", await self._enqueue(_Call, fn))

    async def _enqueue(self, kind: type[_Request | _Call], fn: Callable[..., Any]) -> Any:
        if self._closed:
            raise Unavailable("the proxy is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(kind(fn, future, loop))
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        commit = self._commit if self._lmdb is not None else self._commit_any
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            if isinstance(first, _Call):
                first.run()
                continue
            batch = [first]
            call: _Call | None = None  # a call ends the batch; it runs after the commit
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                if isinstance(item, _Call):
                    call = item
                    break
                batch.append(item)
            requests: list[_Request] = batch  # type: ignore[assignment]
            try:
                commit(requests)
            except Exception as exc:  # the one writer thread must never die
                log.exception("commit failed")
                for request in requests:
                    request.result, request.error = None, StorageFull(f"write failed: {exc!r}")
            by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
            for request in requests:
                by_loop.setdefault(request.loop, []).append(request)
            for loop, group in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, group)
                except RuntimeError:  # loop closed: nobody is waiting any more
                    pass
            if call is not None:
                call.run()

    def _commit(self, batch: list[_Request]) -> None:
        """Commit `batch`, growing the map when full; isolate requests that cannot fit."""
        try:
            self._try_commit(batch)
            return
        except lmdb.MapFullError:
            if self._grow():
                try:
                    self._try_commit(batch)
                    return
                except lmdb.MapFullError:
                    pass
                except lmdb.Error as exc:
                    self._fail(batch, exc)
                    return
        except lmdb.Error as exc:
            self._fail(batch, exc)
            return
        # Still full at the largest map: commit the requests one by one so only those that
        # do not fit fail, with 507.
        if len(batch) == 1:
            batch[0].result, batch[0].error = None, StorageFull("the LMDB map is full")
            return
        for request in batch:
            self._commit([request])

    def _commit_any(self, batch: list[_Request]) -> None:
        """Commit `batch` on a backend other than LMDB (see the module docstring)."""
        try:
            for attempt in range(_CONFLICT_RETRIES):
                try:
                    self._try_commit(batch)
                    return
                except StoreConflict:
                    self.conflicts += 1
                    # Apart from the proxy it raced with, in time: a few ms, more each time.
                    time.sleep(random.uniform(0.0005, 0.002) * (attempt + 1))
            if len(batch) > 1:
                for request in batch:
                    self._commit_any([request])
                return
            self._try_commit(batch)
        except StoreUnavailable as exc:
            for request in batch:
                request.result, request.error = None, exc
        except StoreFailure as exc:
            if len(batch) == 1:
                batch[0].result, batch[0].error = None, exc
                return
            log.warning("a commit of %d writes failed (%s): committing them one by one", len(batch), exc)
            for request in batch:
                self._commit_any([request])

    def _hold(self, txn: Txn, batch: list[_Request]) -> dict[int, int] | None:
        """Lock the lease rows of the batch's fenced partitions (None: no fences, or a store with
        one proxy, where every fence holds)."""
        partitions = {request.fence[0] for request in batch if request.fence is not None}
        if not partitions or not isinstance(txn, Holding):
            return None
        return txn.hold(self.owner, partitions)

    def _fail(self, batch: list[_Request], exc: lmdb.Error) -> None:
        # Disk full (ENOSPC / EFBIG) and the like: nothing of the batch is durable.
        log.error("commit failed: %s", exc)
        for request in batch:
            request.result, request.error = None, StorageFull(f"write failed: {exc}")

    def _grow(self) -> bool:
        store = self._lmdb
        if store is None:
            return False
        current = store.map_size
        if current >= self._max_map_size:
            return False
        new_size = min(current * 2, self._max_map_size)
        store.env.set_mapsize(new_size)
        log.warning("LMDB map grown from %d to %d bytes", current, new_size)
        return True

    def _try_commit(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        txn = self._store.begin()
        try:
            held = self._hold(txn, batch)
            for request in batch:
                fence = request.fence
                if fence is not None and held is not None and held.get(fence[0]) != fence[1]:
                    request.result = None
                    request.error = Fenced(f"partition {fence[0]} is no longer owned by this proxy (epoch {fence[1]})")
                    continue
                child = txn.child()
                try:
                    request.result = request.fn(child)
                    request.error = None
                except _BATCH_FAILURES:
                    child.abort()
                    raise
                except ProxyError as exc:
                    child.abort()
                    request.result, request.error = None, exc
                except Exception as exc:  # a bug in one request must not sink the batch
                    child.abort()
                    log.exception("write function failed")
                    request.result, request.error = None, exc
                else:
                    child.commit()
            faults.hit("writer.before_commit")
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        faults.hit("writer.after_commit")
        self.commits += 1
        self.batched += len(batch)
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started, len(batch))
