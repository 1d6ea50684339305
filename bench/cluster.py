"""The processes of the store comparison (issue 12): a private PostgreSQL cluster, N proxies on one
store, and the CPU time each of them (and PostgreSQL) uses.

PostgreSQL is started the way the tests start it (`tests.postgres.start_cluster`, with
``durable=True``: fsync and full-page writes on, as a measurement needs), as the ``postgres``
system user when we are root, and stopped by its own data dir at the end.

CPU accounting reads ``/proc/<pid>/stat`` (a root directory can be passed, so tests read a fake
one). The CPU of a process *tree* is the root's own time, the time of the children it has reaped
(``cutime``/``cstime``: a PostgreSQL backend that exited and was waited for by the postmaster)
and the own + reaped time of every live descendant; sampled before and after a workload, the
difference is what the tree used in between.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from bench.load import Client
from bench.procs import HOST, Proc, free_port, wait_http

if TYPE_CHECKING:
    from tests.postgres import PgCluster

__all__ = [
    "Node",
    "ProcStat",
    "machine_seconds",
    "owned_partitions",
    "parse_stat",
    "read_views",
    "split_problems",
    "start_nodes",
    "start_postgres",
    "tree_cpu_seconds",
    "wait_split",
]

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the accounting needs (CPU in seconds)."""

    pid: int
    ppid: int
    own: float  # utime + stime
    reaped: float  # cutime + cstime: children that exited and were waited for


def parse_stat(text: str, tick: int = _TICK) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line (the command name may hold spaces and parentheses)."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # fields[0] is the state (field 3 of proc(5)); ppid is field 4, utime..cstime fields 14..17.
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        own=(int(fields[11]) + int(fields[12])) / tick,
        reaped=(int(fields[13]) + int(fields[14])) / tick,
    )


def _all_stats(proc: Path, tick: int) -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text(), tick)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not a process directory
    return stats


def tree_cpu_seconds(roots: Sequence[int], proc: Path = Path("/proc"), tick: int = _TICK) -> dict[int, float]:
    """CPU seconds used so far by each root's process tree (0 for a root that is gone).

    One scan of `proc` serves every root. A descendant of two roots (impossible for real trees)
    would count for each.
    """
    stats = _all_stats(proc, tick)
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    totals: dict[int, float] = {}
    for root in roots:
        total = 0.0
        pending = [root] if root in stats else []
        while pending:
            pid = pending.pop()
            stat = stats[pid]
            total += stat.own + stat.reaped
            pending.extend(children.get(pid, ()))
        totals[root] = total
    return totals


def machine_seconds(proc: Path = Path("/proc"), tick: int = _TICK) -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``."""
    values = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / tick, total / tick


# -- PostgreSQL ---------------------------------------------------------------------------------------


def start_postgres() -> tuple[PgCluster | None, str]:
    """A private durable cluster (`tests.postgres.start_cluster(durable=True)`), or None and why not."""
    try:
        from tests.postgres import ClusterUnavailable, start_cluster
    except ImportError as exc:  # the tests' helpers need the dev extras (pytest)
        return None, f"cannot import tests.postgres: {exc}"
    try:
        return start_cluster(durable=True), ""
    except ClusterUnavailable as exc:
        return None, str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, repr(exc)


# -- proxies ------------------------------------------------------------------------------------------


@dataclass
class Node:
    """One proxy process and its URLs."""

    name: str
    proc: Proc
    ingress: str
    admin: str


def start_nodes(
    count: int,
    handler_port: int,
    work: Path,
    transport: str,
    store: str | None = None,
    lease_time: float | None = None,
    partitions: int | None = None,
    prefix: str = "p",
) -> list[Node]:
    """`count` real proxies (``python -m proxy``), all registered with the handler at `handler_port`.

    With `store` (a PostgreSQL URL) they share that database; without, `count` must be 1 (LMDB
    in a data dir of its own). They are started together, then each is waited for.
    """
    if store is None and count != 1:
        raise ValueError("LMDB is one proxy per data dir")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    for name in ("PROXY_STORE", "PROXY_LEASE_TIME", "PROXY_PARTITIONS"):
        env.pop(name, None)  # only the flags below choose the store
    nodes: list[Node] = []
    try:
        for n in range(count):
            name = f"{prefix}{n}"
            ingress_port, admin_port = free_port(), free_port()
            args = [
                sys.executable, "-m", "proxy",
                "--host", HOST, "--ingress-port", str(ingress_port), "--admin-port", str(admin_port),
                "--callback-port", str(free_port()),
                "--data-dir", str(work / f"{name}-data"), "--deployment", f"http://{HOST}:{handler_port}",
                "--retry-initial-interval", "1ms", "--transport", transport, "--log-level", "warning",
            ]  # fmt: skip
            if store is not None:
                args += ["--store", store]
                if lease_time is not None:
                    args += ["--lease-time", f"{lease_time:g}"]
                if partitions is not None:
                    args += ["--partitions", str(partitions)]
            proc = Proc(f"proxy {name}", args, work / f"{name}.log", env=env)
            nodes.append(Node(name, proc, f"http://{HOST}:{ingress_port}", f"http://{HOST}:{admin_port}"))
        for node in nodes:
            wait_http(f"{node.admin}/services", node.proc, timeout=60, contains=b'"Bench"')
    except BaseException:
        for node in nodes:
            node.proc.stop()
        raise
    return nodes


async def read_views(client: Client, nodes: Sequence[Node]) -> dict[str, dict[str, Any]]:
    """``GET {admin}/cluster`` of each node (a node that does not answer 200 is left out)."""
    views: dict[str, dict[str, Any]] = {}
    for node in nodes:
        try:
            status, body = await client.get(f"{node.admin}/cluster")
        except (aiohttp.ClientError, OSError, TimeoutError):
            continue  # not up, or gone (killed)
        if status == 200:
            views[node.name] = msgspec.json.decode(body)
    return views


def owned_partitions(views: Mapping[str, Mapping[str, Any]]) -> dict[str, set[int]]:
    """node name -> the partitions it says it owns."""
    return {name: {int(item["partition"]) for item in view.get("owned", [])} for name, view in views.items()}


def split_problems(owned: Mapping[str, set[int]], partitions: int) -> list[str]:
    """Why `owned` is not a clean split of `partitions` between its nodes (empty when it is)."""
    problems = [f"{name} owns nothing" for name, parts in owned.items() if not parts]
    for partition in range(partitions):
        owners = [name for name, parts in owned.items() if partition in parts]
        if len(owners) != 1:
            problems.append(f"partition {partition} owned by {owners or 'nobody'}")
    return problems


async def wait_split(
    client: Client, nodes: Sequence[Node], partitions: int, timeout: float = 60
) -> dict[str, set[int]]:
    """Wait until `nodes` split the partitions cleanly, twice in a row 0.1 s apart; the split.

    Raises:
        RuntimeError: not split after `timeout` seconds (with the last problems seen).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    clean = 0
    problems: list[str] = []
    while loop.time() < deadline:
        views = await read_views(client, nodes)
        owned = owned_partitions(views)
        problems = [f"{n.name} did not answer /cluster" for n in nodes if n.name not in views]
        problems += split_problems(owned, partitions)
        clean = clean + 1 if not problems else 0
        if clean >= 2:
            return owned
        await asyncio.sleep(0.1)
    raise RuntimeError(f"partitions not split between {[n.name for n in nodes]} after {timeout}s: {problems[:5]}")
