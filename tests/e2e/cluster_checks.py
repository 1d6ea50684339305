"""Helpers for the end-to-end tests of several proxies on one PostgreSQL database (issue 12).

A *trio* is one handler service (the chaos app: the ledger's ``Ledger`` service and the
``Counter`` object) and N proxies with their own ports and data dirs, all pointed at the same
database (``PROXY_STORE``) with a short lease. `ownership` reads every live proxy's
``GET {admin}/cluster`` and says which proxy owns which partition; `wait_split` waits until the
partitions are split between the given proxies (each partition owned by exactly one of them, each
of them owning some). `owner_of` maps an invocation to the proxy that drives it, with the same
hash the proxies use (`durable_core.partitions.partition_of`).

The load is the acceptance suite's `Workload`, one per proxy, all writing to one `History`, so
that `tests.acceptance.workload.check_history` checks the whole run at the end.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from durable_core.partitions import partition_of
from durable_core.records import ACTIVE_STATUSES
from tests.acceptance.workload import Workload
from tests.e2e.harness import Cluster, HandlerProc, History, ProxyProc, poll

__all__ = [
    "APP",
    "LEASE_TIME",
    "PARTITIONS",
    "SERVICES",
    "SPY_APP",
    "AckLine",
    "Ownership",
    "SpreadLoad",
    "acks",
    "check_counter",
    "cluster_view",
    "owner_of",
    "ownership",
    "spread_posts",
    "start_trio",
    "sustained_increments",
    "unfinished",
    "wait_split",
]

APP = "tests.handlers.chaos:application"
#: The same app, writing down the answer to every step ack (`tests.handlers.ack_spy`).
SPY_APP = "tests.handlers.ack_spy:application"
SERVICES = ("Ledger", "Counter")
#: Short, so that takeovers happen within a test; the proxy's default is 5 s.
LEASE_TIME = 2.0
PARTITIONS = 16


def start_trio(
    cluster: Cluster,
    url: str,
    count: int = 3,
    env: dict[str, str] | None = None,
    app: str = APP,
    services: Sequence[str] = SERVICES,
) -> tuple[HandlerProc, list[ProxyProc]]:
    """One handler and `count` proxies on the database at `url`, started together, all ready."""
    handler = cluster.handler(app)
    proxy_env = {
        "PROXY_STORE": url,
        "PROXY_LEASE_TIME": f"{LEASE_TIME:g}",
        "PROXY_PARTITIONS": str(PARTITIONS),
        **(env or {}),
    }
    proxies = [
        cluster.proxy([handler], services=services, env=proxy_env, name=f"p{n}", start=False) for n in range(count)
    ]
    for proxy in proxies:
        proxy.start()
    for proxy in proxies:
        proxy.wait_ready(services, timeout=30)
    cluster.extra_reports.append(lambda: _views_report(proxies))
    return handler, proxies


def cluster_view(proxy: ProxyProc, timeout: float = 3) -> dict[str, Any]:
    """``GET {admin}/cluster`` of one proxy (asserts 200)."""
    response = proxy.http.get(f"{proxy.admin}/cluster", timeout=timeout)
    assert response.status_code == 200, (proxy.name, response.status_code, response.text)
    view: dict[str, Any] = response.json()
    return view


def unfinished(proxy: ProxyProc, limit: int = 50) -> list[dict[str, Any]]:
    """Every invocation not completed, as `proxy`'s admin lists them (a stuck-run detector)."""
    found: list[dict[str, Any]] = []
    for status in sorted(ACTIVE_STATUSES):
        response = proxy.http.get(f"{proxy.admin}/invocations", params={"status": status, "limit": limit}, timeout=3)
        assert response.status_code == 200, (proxy.name, response.status_code, response.text)
        found.extend(response.json()["invocations"])
    return found


def _views_report(proxies: Sequence[ProxyProc]) -> str:
    lines = ["---- GET /cluster of each live proxy ----"]
    for proxy in proxies:
        if not proxy.alive:
            lines.append(f"{proxy.name}: not running")
            continue
        try:
            lines.append(f"{proxy.name}: {json.dumps(cluster_view(proxy, timeout=1))}")
        except (httpx.HTTPError, AssertionError, ValueError) as exc:
            lines.append(f"{proxy.name}: {exc!r}")
    for proxy in proxies:
        if proxy.alive:
            try:
                stuck = unfinished(proxy, limit=20)
            except (httpx.HTTPError, AssertionError, ValueError) as exc:
                lines.append(f"---- unfinished invocations by {proxy.name}'s admin: {exc!r}")
                continue
            lines.append(f"---- unfinished invocations by {proxy.name}'s admin ({len(stuck)}) ----")
            lines.extend(json.dumps(view)[:600] for view in stuck)
            break
    return "\n".join(lines)


@dataclass(frozen=True)
class Ownership:
    """Who owns what, from the ``/cluster`` views of some proxies taken one after the other."""

    #: proxy name -> {partition: epoch}
    owned: dict[str, dict[int, int]]
    #: proxy name -> the id it reports (new at every start)
    ids: dict[str, str]
    #: proxy name -> the member ids it sees
    members: dict[str, set[str]]

    def owner(self, partition: int) -> str | None:
        """The one proxy that owns `partition`, or None (no owner, or several)."""
        owners = [name for name, parts in self.owned.items() if partition in parts]
        return owners[0] if len(owners) == 1 else None

    def epoch(self, partition: int) -> int | None:
        """The epoch of `partition` as its owner reports it."""
        name = self.owner(partition)
        return None if name is None else self.owned[name][partition]

    def problems(self, partitions: int = PARTITIONS) -> list[str]:
        """Why this is not a clean split between these proxies (empty when it is)."""
        out: list[str] = []
        for partition in range(partitions):
            owners = [name for name, parts in self.owned.items() if partition in parts]
            if len(owners) != 1:
                out.append(f"partition {partition} owned by {owners or 'nobody'}")
        for name, parts in self.owned.items():
            if not parts:
                out.append(f"{name} owns nothing")
            sees = self.members[name]
            missing = set(self.ids.values()) - sees
            if missing:
                out.append(f"{name} does not list {sorted(missing)} as members")
        return out

    def describe(self) -> str:
        """One line per proxy: its id and its partitions."""
        return "; ".join(f"{n} ({self.ids[n]}): {sorted(p)}" for n, p in sorted(self.owned.items()))


def ownership(proxies: Iterable[ProxyProc]) -> Ownership:
    """Read the ``/cluster`` view of each of `proxies`."""
    owned: dict[str, dict[int, int]] = {}
    ids: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for proxy in proxies:
        view = cluster_view(proxy)
        owned[proxy.name] = {int(item["partition"]): int(item["epoch"]) for item in view["owned"]}
        ids[proxy.name] = str(view["proxy"])
        members[proxy.name] = {str(m["proxy"]) for m in view.get("members", [])}
    return Ownership(owned, ids, members)


def wait_split(proxies: Sequence[ProxyProc], timeout: float = 30, partitions: int = PARTITIONS) -> Ownership:
    """Wait until `proxies` (and only they) own the partitions, each some, each partition one
    owner, and every one of them lists all the others as members; twice in a row 0.1 s apart, so
    that a split seen halfway through a hand-over does not count. Returns the split."""
    last: list[Ownership] = []

    def split() -> Ownership | None:
        first = ownership(proxies)
        last[:] = [first]
        if first.problems(partitions):
            return None
        time.sleep(0.1)
        second = ownership(proxies)
        last[:] = [second]
        return second if not second.problems(partitions) and second.owned == first.owned else None

    def why() -> str:
        if not last:
            return "a split of the partitions"
        return f"a split of the partitions; last seen {last[0].describe()}: {last[0].problems(partitions)}"

    result: Ownership = poll(split, timeout, interval=0.1, message=why)
    return result


def owner_of(inv_id: str, split: Ownership, partitions: int = PARTITIONS) -> str | None:
    """The name of the proxy that owns the partition of `inv_id` in `split`."""
    return split.owner(partition_of(inv_id, partitions))


class SpreadLoad:
    """Ledger ops (or counter increments) from `per_proxy` client threads on each proxy, all in one history."""

    def __init__(
        self,
        cluster: Cluster,
        proxies: Sequence[ProxyProc],
        job: dict[str, Any],
        per_proxy: int,
        history: History | None = None,
        prefix: str = "op",
        path: str = "Ledger/run",
        increments: bool = False,
        pause: float = 0.02,
    ) -> None:
        self.history = history or cluster.history
        body: Callable[[str], Any] | None = (lambda key: 1) if increments else None
        self.loads: dict[str, Workload] = {}
        for n, proxy in enumerate(proxies):
            self.loads[proxy.name] = Workload(
                proxy, self.history, concurrency=per_proxy, job=job, seed=cluster.seed + n,
                prefix=f"{prefix}-{proxy.name}", path=path, body=body, pause=pause,
            )  # fmt: skip

    def start(self) -> None:
        """Start every client thread."""
        for load in self.loads.values():
            load.start()

    def stop(self) -> None:
        """Stop issuing ops everywhere and wait for those in flight."""
        for load in self.loads.values():
            load._stop.set()  # all at once: a stopped proxy's clients wait out their timeout in parallel
        for load in self.loads.values():
            load.stop()

    @contextmanager
    def running(self) -> Iterator[SpreadLoad]:
        """The load for the duration of a with-block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def ok_count(self) -> int:
        """Ops answered 200 so far."""
        return sum(1 for op in list(self.history.ops) if op.outcome == "ok")


def check_counter(proxy: ProxyProc, history: History, key: str) -> int:
    """The chaos soak's counter checker (tests/acceptance/test_chaos.py), across proxies.

    Every ok increment returned a distinct count; each unknown one, retried with its key on
    `proxy`, takes effect once; the final value is the number of increments that took effect.
    Returns that value.
    """
    ok = history.by_outcome("ok")
    assert ok, "no increment succeeded"
    returned = [op.body for op in ok]
    assert len(set(returned)) == len(returned), f"two increments saw the same count: an update was lost: {returned}"
    effective = {op.key for op in ok}
    with httpx.Client(timeout=15) as client:
        try:
            for op in history.by_outcome("unknown"):
                response = client.post(
                    f"{proxy.ingress}/Counter/{key}/add", json=1, headers={"idempotency-key": op.key}
                )
                assert response.status_code == 200, (op, response.text)
                effective.add(op.key)
            final = client.post(f"{proxy.ingress}/Counter/{key}/get", json=None)
        except httpx.TimeoutException as exc:
            raise AssertionError(
                f"a call to Counter/{key} got no answer in 15 s ({exc!r}); unfinished invocations: {unfinished(proxy)}"
            ) from None
    assert final.status_code == 200, final.text
    assert final.json() == len(effective), f"counter {final.json()} != {len(effective)} increments that took effect"
    assert max(returned) <= final.json()
    return int(final.json())


@dataclass(frozen=True)
class AckLine:
    """One line of the acks file `tests.handlers.ack_spy` writes: an ack and its answer."""

    inv: str
    index: int
    attempt: int
    answer: str
    callback_url: str


def acks(cluster: Cluster) -> list[AckLine]:
    """Every ack the handler of `tests.handlers.ack_spy` posted, with its answer, in order."""
    try:
        text = Path(f"{cluster.ledger.path}.acks").read_text()
    except FileNotFoundError:
        return []
    out: list[AckLine] = []
    for raw in text.split("\n")[:-1]:
        inv, index, attempt, answer, url = raw.split()
        out.append(AckLine(inv, int(index), int(attempt), answer, url))
    return out


def sustained_increments(
    proxies: Sequence[ProxyProc], key: str, seconds: float, per_proxy: int = 1, timeout: float = 10
) -> list[int]:
    """`per_proxy` clients per proxy, each adding 1 to ``Counter/{key}`` one call at a time for `seconds`
    (each call with its own idempotency key). Returns the counts the calls returned.

    Raises:
        AssertionError: a call got no 200, or no answer within `timeout` (with the unfinished
            invocations and the object's lock as the admin shows them).
    """
    returned: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(proxy: ProxyProc, number: int) -> None:
        with httpx.Client(base_url=proxy.ingress, timeout=timeout) as http:
            n = 0
            while time.monotonic() < deadline and not failures:
                n += 1
                headers = {"idempotency-key": f"steady-{proxy.name}-{number}-{n}"}
                try:
                    response = http.post(f"/Counter/{key}/add", json=1, headers=headers)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{proxy.name} call {n} at {time.time():.3f}: {exc!r}")
                    return
                with lock:
                    if response.status_code == 200:
                        returned.append(int(response.json()))
                    else:
                        failures.append(f"{proxy.name} call {n}: {response.status_code} {response.text[:200]}")

    threads = [
        threading.Thread(target=client, args=(proxy, number), name=f"steady-{proxy.name}-{number}")
        for proxy in proxies
        for number in range(per_proxy)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + timeout + 10)
    if failures:
        try:
            stuck: Any = unfinished(proxies[0])
        except (httpx.HTTPError, AssertionError) as exc:
            stuck = repr(exc)
        raise AssertionError(
            f"after {len(returned)} increments of Counter/{key} through {len(proxies)} proxies: {failures}; "
            f"unfinished invocations: {stuck}"
        )
    return returned


async def spread_posts(
    proxies: Sequence[ProxyProc], path: str, body: Any, count: int, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """`count` concurrent ``POST /{path}``, the i-th to proxy i mod len(proxies)."""
    clients = [httpx.AsyncClient(base_url=p.ingress, timeout=60) for p in proxies]
    content = json.dumps(body).encode()
    all_headers = {"content-type": "application/json", **(headers or {})}
    try:
        return await asyncio.gather(
            *(clients[n % len(clients)].post(f"/{path}", content=content, headers=all_headers) for n in range(count))
        )
    finally:
        for client in clients:
            await client.aclose()
