"""The proxy's resident share of the LMDB map: measured, and kept under a bound.

LMDB reads go through a shared, read-only memory map of the data file (``writemap=False``).
Every page the proxy reads stays mapped, so without a bound its RSS grows with all the data it
has ever touched (the whole file after a long run), although those pages are the kernel's page
cache rather than the process's own memory. When the mapped part passes the limit, the proxy
unmaps the pages (``madvise(MADV_DONTNEED)`` over the map): they leave its RSS, their contents
stay in the page cache and in the file, and the next read maps them again with a minor fault.
This is the role a bounded block cache plays in front of RocksDB's files.

Why it is safe: on a shared mapping MADV_DONTNEED drops page-table entries only, never data, and
the map is read-only so no write goes through it. Only regions of the data file that the kernel
lists as shared are touched. The measure-and-drop runs on the writer thread
(`Writer.call`), the only thread that remaps the map (when it grows), so the address range
cannot be stale.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import NamedTuple

from handlers_sdk.clock import Clock
from proxy.engine.periodic import Periodic
from proxy.store.lmdb import Store
from proxy.store.writer import Writer

__all__ = ["MapResidency", "Region", "drop_pages", "mapped_rss", "parse_smaps"]

log = logging.getLogger("proxy.engine.residency")

_MADV_DONTNEED = 4  # Linux, every architecture
_SMAPS = "/proc/self/smaps"
_STATUS = "/proc/self/status"


class Region(NamedTuple):
    """One mapping of the data file: its address range and how much of it is resident."""

    start: int
    end: int
    shared: bool
    rss_bytes: int


def parse_smaps(text: str, path: str) -> list[Region]:
    """The mappings of `path` listed in a ``/proc/<pid>/smaps`` text, with their ``Rss``."""
    regions: list[Region] = []
    current: tuple[int, int, bool] | None = None
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            # A mapping header: "start-end perms offset dev inode   path".
            fields = rest.split(None, 4)
            mapped = fields[4].removesuffix(" (deleted)") if len(fields) == 5 else ""
            if mapped == path:
                low, high = head.split("-")
                current = (int(low, 16), int(high, 16), fields[0].endswith("s"))
            else:
                current = None
        elif head == "Rss:" and current is not None:
            regions.append(Region(*current, rss_bytes=int(rest.split()[0]) * 1024))
            current = None
    return regions


def mapped_rss(status_text: str) -> int:
    """Bytes of mapped files in the RSS, from a ``/proc/<pid>/status`` text.

    ``RssFile`` plus ``RssShmem``: a data dir on tmpfs maps shared memory, not file pages.
    """
    total = 0
    for line in status_text.splitlines():
        if line.startswith(("RssFile:", "RssShmem:")):
            total += int(line.split()[1]) * 1024
    return total


def _madvise() -> ctypes._FuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_madvise_fn = _madvise()


def drop_pages(regions: list[Region]) -> int:
    """Unmap the resident pages of shared `regions`; returns the bytes that were resident.

    Raises:
        OSError: madvise failed.
    """
    if _madvise_fn is None:
        raise OSError("madvise is not available")
    dropped = 0
    for region in regions:
        if not region.shared:  # never: dropping a private mapping would lose its contents
            continue
        if _madvise_fn(region.start, region.end - region.start, _MADV_DONTNEED) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"madvise: {os.strerror(errno)}")
        dropped += region.rss_bytes
    return dropped


class MapResidency:
    """Every `interval` seconds, measures the mapped part of the data file and drops it past `limit`."""

    def __init__(self, store: Store, writer: Writer, limit: int, interval: float, clock: Clock) -> None:
        self._writer = writer
        self._store = store
        self._limit = limit
        self._periodic = Periodic("bounding the LMDB map's resident pages", interval, self.check, log, clock)
        #: Times the mapped pages were dropped.
        self.drops = 0
        self.enabled = limit > 0 and os.path.exists(_SMAPS) and _madvise_fn is not None

    def start(self) -> None:
        """Start the loop (a no-op without a limit, or off Linux)."""
        if self.enabled:
            self._periodic.start()
        elif self._limit > 0:
            log.warning("resident_map_limit is not applied: it needs Linux's /proc/self/smaps and madvise")

    async def close(self) -> None:
        """Stop the loop."""
        await self._periodic.close()

    async def check(self) -> int:
        """Drop the mapped pages of the data file if they pass the limit; returns the bytes dropped."""
        return await self._writer.call(self._check)

    def measure(self) -> int:
        """Bytes of the data file mapped right now (in the RSS); 0 off Linux."""
        return sum(region.rss_bytes for region in self._regions())

    def _regions(self) -> list[Region]:
        try:
            with open(_SMAPS, encoding="utf-8", errors="replace") as smaps:
                return parse_smaps(smaps.read(), os.path.realpath(os.path.join(self._store.path, "data.mdb")))
        except OSError:
            return []

    def _check(self) -> int:
        # Runs on the writer thread: no map growth can move the regions between read and drop.
        if not self.enabled:
            return 0
        try:
            with open(_STATUS, encoding="utf-8", errors="replace") as status:
                if mapped_rss(status.read()) <= self._limit:
                    # Every mapped file (data file and shared libraries) fits: skip the dearer smaps read.
                    return 0
        except OSError:
            return 0
        regions = self._regions()
        if sum(region.rss_bytes for region in regions) <= self._limit:
            return 0
        try:
            dropped = drop_pages(regions)
        except OSError as exc:
            # Not worth retrying every few seconds: say it once and stop bounding.
            self.enabled = False
            log.warning("stopped bounding the LMDB map's resident pages: %s", exc)
            return 0
        self.drops += 1
        return dropped
