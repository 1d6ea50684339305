"""The load generator: a pooled aiohttp client (~19k req/s on the reference machine)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

__all__ = ["Client", "Run", "percentile"]

_HEADERS = {"content-type": "application/json"}


def percentile(samples: list[float], q: float) -> float:
    """The `q`-quantile (0..1) of `samples` by nearest rank; NaN when empty."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class Run:
    """What one workload measured."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        """Latency quantile in milliseconds."""
        return percentile(self.latencies, q) * 1000


class Client:
    """One aiohttp session with keep-alive connections to 127.0.0.1."""

    def __init__(self, max_connections: int = 128) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=30),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        await self._session.close()

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        async with self._session.post(url, data=body, headers=_HEADERS) as response:
            return response.status, await response.read()

    async def get(self, url: str) -> tuple[int, bytes]:
        async with self._session.get(url) as response:
            return response.status, await response.read()

    async def run(
        self,
        url: str | Sequence[str],
        body: bytes,
        concurrency: int,
        *,
        count: int | None = None,
        seconds: float | None = None,
        warmup: float = 0.0,
        ok_status: int = 200,
    ) -> Run:
        """`concurrency` workers POST `body` to `url` back to back.

        With `count`: exactly that many requests, all measured. With `seconds`: the workers run for
        `warmup` + `seconds`; only answers that arrive inside the `seconds` window are counted, so
        the rate is completions per second of steady state. With several URLs (one per proxy),
        successive requests go to them in turn (round-robin, whichever worker sends).
        """
        assert (count is None) != (seconds is None)
        result = Run()
        remaining = [count if count is not None else 1 << 62]
        loop = asyncio.get_running_loop()
        start = loop.time()
        window_start = start + warmup
        deadline = window_start + seconds if seconds is not None else float("inf")
        post = self._session.post
        clock = time.perf_counter
        now = loop.time
        urls = [url] if isinstance(url, str) else list(url)
        turn = [0]

        async def worker() -> None:
            while remaining[0] > 0 and now() < deadline:
                remaining[0] -= 1
                target = urls[turn[0] % len(urls)]
                turn[0] += 1
                t0 = clock()
                try:
                    async with post(target, data=body, headers=_HEADERS) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = 0
                    if not result.first_error:
                        result.first_error = repr(exc)
                elapsed = clock() - t0
                if seconds is not None and not window_start <= now() <= deadline:
                    continue
                if status == ok_status:
                    result.requests += 1
                    result.latencies.append(elapsed)
                else:
                    result.errors += 1
                    if not result.first_error:
                        result.first_error = f"HTTP {status}"

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = seconds if seconds is not None else now() - start
        return result
