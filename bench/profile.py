"""``python -m bench.profile``: run one workload under py-spy and print where the proxy and the
handler service spend their CPU (needs ``pip install py-spy``; not a dependency).

    python -m bench.profile --workload 10 --concurrency 64 --seconds 10

Collapsed stacks are written next to the summary (``bench/results/profile-*.txt``), ready for
``flamegraph.pl`` or speedscope.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import Client
from bench.procs import HOST, free_port, start_handler, start_proxy

RESULTS = Path(__file__).resolve().parent / "results"


def _summary(path: Path, top: int) -> str:
    """Self and inclusive sample counts per function from a py-spy collapsed-stack file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "  self%  incl%  function"]
    for frame, count in own.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}  {100 * inclusive[frame] / total:5.1f}  {frame}")
    lines.append("  -- inclusive --")
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * own[frame] / total:5.1f}  {100 * count / total:5.1f}  {frame}")
    return "\n".join(lines)


async def _load(url: str, body: bytes, concurrency: int, seconds: float) -> None:
    client = Client(max_connections=concurrency * 2)
    try:
        run = await client.run(url, body, concurrency, seconds=seconds, warmup=0.5)
        print(f"{run.rate:,.0f} inv/s, p50 {run.p(0.5):.2f} ms, errors {run.errors} {run.first_error}")
    finally:
        await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--workload", default="10", help="trivial or a number of steps")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--transport", default="aiohttp")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="durable-proxy-profile-"))
    handler_port, ingress_port, admin_port = free_port(), free_port(), free_port()
    handler = start_handler(handler_port, work)
    proxy = start_proxy(ingress_port, admin_port, handler_port, work / "data", work, args.transport)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    spies = []
    try:
        if args.workload == "trivial":
            url, body = f"http://{HOST}:{ingress_port}/Bench/trivial", b'"x"'
        else:
            url, body = f"http://{HOST}:{ingress_port}/Bench/steps", args.workload.encode()
        outs = {}
        for name, proc in (("proxy", proxy), ("handler", handler)):
            out = RESULTS / f"profile-{stamp}-{name}.txt"
            outs[name] = out
            command = [spy, "record", "--pid", str(proc.pid), "--duration", str(int(args.seconds))]
            command += ["--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"]
            spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        asyncio.run(_load(url, body, args.concurrency, args.seconds))
        for s in spies:
            s.wait(60)
        for name, out in outs.items():
            print(f"=== {name} ({out}) ===")
            print(_summary(out, args.top))
    finally:
        for s in spies:
            if s.poll() is None:
                s.kill()
        proxy.stop()
        handler.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
