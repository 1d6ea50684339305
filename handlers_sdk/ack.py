"""Posts new journal entries to the proxy's callback API and waits for the commit."""

from __future__ import annotations

import asyncio

import httpx

from handlers_sdk.protocol import ACK_PATH, AppendRequest, encode

__all__ = ["AckClient", "AckRejected"]

#: Delays between tries when the proxy cannot be reached; after the last the attempt is abandoned.
_RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0)


class AckRejected(Exception):
    """The proxy refused an append: 409 (stale attempt or index taken) or 413 (entry too large)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"append rejected with {status}: {body[:200]!r}")
        self.status = status


class AckClient:
    """A pooled HTTP client for step acks; one per handler app, created on first use."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(30.0, connect=5.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return self._client

    async def append(self, callback_url: str, request: AppendRequest) -> None:
        """Send one entry; returns once the proxy has committed it.

        Raises:
            AckRejected: the proxy answered 4xx; the caller decides (fence or fail the step).
            httpx.HTTPError: the proxy stayed unreachable through every retry.
        """
        body = encode(request)
        url = callback_url + ACK_PATH
        for delay in (*_RETRY_DELAYS, None):
            try:
                response = await self._get().post(
                    url, content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError:
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            if response.status_code == 200:
                return
            if 400 <= response.status_code < 500:
                raise AckRejected(response.status_code, response.content)
            if delay is None:
                raise AckRejected(response.status_code, response.content)
            # 5xx (e.g. 507 storage full, 503 draining): the entry is not durable; try again.
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
