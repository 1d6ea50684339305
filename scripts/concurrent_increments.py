#!/usr/bin/env python3
"""Send N concurrent increments to one key of the `Counter` example and check none was lost.

Run, with the proxy and ``examples.all`` (or ``examples.counter``) running::

    .venv/bin/python scripts/concurrent_increments.py                  # 64 x Counter/likes/add 1
    .venv/bin/python scripts/concurrent_increments.py -n 200 --key other --ingress http://127.0.0.1:8081

It prints how many distinct answers the N callers got and the count that ``get`` reads after
them; exclusive handlers of one key run one at a time, so every caller sees a different count
and the count grew by exactly N. Exit code 0 when it did, 1 when an update was lost or a call
failed, 2 when the proxy cannot be reached.

(A shell one-liner such as ``seq 64 | xargs -P 64 curl ... -w '\\n' | sort -n | uniq | wc -l``
cannot show this reliably: 64 curls write their bodies and newlines separately into one pipe,
the pieces interleave, and the count comes out lower although nothing was lost.)

Needs only httpx (a dependency of the SDK).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import httpx

__all__ = ["main", "run"]

_JSON = {"content-type": "application/json"}


async def run(ingress: str, key: str, n: int, service: str = "Counter") -> tuple[list[int], int, int]:
    """The count before, the N answers of the concurrent ``add 1`` calls, and the count after.

    Returns ``(answers, before, after)``. Raises `httpx.HTTPError` when the proxy cannot be reached
    and `RuntimeError` when a call does not answer 200 with a number.
    """
    async with httpx.AsyncClient(base_url=ingress.rstrip("/"), timeout=120) as client:

        async def call(handler: str, body: bytes) -> int:
            response = await client.post(f"/{service}/{key}/{handler}", content=body, headers=_JSON)
            if response.status_code != 200:
                raise RuntimeError(f"{service}/{key}/{handler} answered {response.status_code}: {response.text}")
            value = response.json()
            if not isinstance(value, int):
                raise RuntimeError(f"{service}/{key}/{handler} answered {value!r}, not a number")
            return value

        before = await call("get", b"null")
        answers = await asyncio.gather(*(call("add", b"1") for _ in range(n)))
        after = await call("get", b"null")
    return list(answers), before, after


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--ingress",
        default=os.environ.get("PROXY_INGRESS_URL", f"http://127.0.0.1:{os.environ.get('PROXY_INGRESS_PORT', '8080')}"),
        help="ingress base URL (default http://127.0.0.1:$PROXY_INGRESS_PORT, port 8080)",
    )
    parser.add_argument("--key", default="likes", help="the Counter key to increment (default likes)")
    parser.add_argument("-n", type=int, default=64, help="number of concurrent increments (default 64)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    try:
        answers, before, after = asyncio.run(run(args.ingress, args.key, args.n))
    except httpx.HTTPError as exc:
        print(f"cannot reach the proxy at {args.ingress}: {exc!r} (is `make run` running?)", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    distinct = sorted(set(answers))
    low, high = distinct[0], distinct[-1]
    print(f"{args.n} concurrent Counter/{args.key}/add 1: {len(distinct)} distinct answers, {low}..{high}")
    print(f"Counter/{args.key}/get: {before} before, {after} after (+{after - before})")
    lost = len(distinct) != args.n or distinct != list(range(before + 1, before + args.n + 1))
    if lost or after - before != args.n:
        print("an update was lost or another client incremented the key meanwhile", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
