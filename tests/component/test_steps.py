"""ctx.run end to end: replay never re-runs a journaled step, gather is deterministic, RunOptions
retry in place, a journal mismatch pauses with 570, and suspend mode re-invokes after each step."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import httpx
import pytest

from handlers_sdk import Context, JournalMismatchError, RunOptions, Service, TerminalError
from handlers_sdk.clock import FakeClock
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


# -- replay ------------------------------------------------------------------------------------


async def test_journaled_steps_are_not_rerun_on_retry(start: StartHarness) -> None:
    runs: Counter[str] = Counter()
    svc = Service("Order")

    @svc.handler()
    async def place(ctx: Context) -> list[int]:
        def step(name: str, value: int) -> int:
            runs[name] += 1
            return value

        a = await ctx.run("a", step, "a", 1)
        b = await ctx.run("b", step, "b", 2)
        if runs["boom"] < 2:
            runs["boom"] += 1
            raise RuntimeError("transient")
        c = await ctx.run("c", step, "c", 3)
        return [a, b, c]

    h = await start([svc])
    response = await h.ingress.post("/Order/place")
    assert response.json() == [1, 2, 3]
    assert runs == {"a": 1, "b": 1, "c": 1, "boom": 2}
    sent = h.attempts_of(response.headers["x-restate-id"])
    # Each attempt replays what is journaled: O(1) work per new step, replay only on re-invocation.
    assert [len(s.request.journal) for s in sent] == [0, 2, 2]


async def test_gather_of_two_steps_is_deterministic_on_replay(start: StartHarness) -> None:
    runs: Counter[str] = Counter()
    b_done = asyncio.Event()
    svc = Service("Pair")

    @svc.handler()
    async def go(ctx: Context) -> list[str]:
        async def slow() -> str:
            runs["slow"] += 1
            await b_done.wait()  # finishes (and is acked) after "fast"
            return "S"

        async def fast() -> str:
            runs["fast"] += 1
            b_done.set()
            return "F"

        results = await asyncio.gather(ctx.run("slow", slow), ctx.run("fast", fast))
        if runs["retry"] == 0:
            runs["retry"] += 1
            raise RuntimeError("replay me")
        return list(results)

    h = await start([svc])
    response = await h.ingress.post("/Pair/go")
    assert response.json() == ["S", "F"]
    assert runs == {"slow": 1, "fast": 1, "retry": 1}
    view = await h.inspect(response.headers["x-restate-id"])
    # Indexes are creation order, not completion order: "slow" is 0 although "fast" was acked first.
    assert [(i["index"], i["entry"]["name"]) for i in view["journal"]] == [(0, "slow"), (1, "fast")]
    second = h.attempts_of(view["id"])[1].request
    assert [(i.index, i.entry.name) for i in second.journal] == [(0, "slow"), (1, "fast")]  # type: ignore[union-attr]


async def test_gather_gap_reruns_only_the_missing_step(start: StartHarness) -> None:
    # "fast" (index 1) is acked, then "slow" (index 0) fails: the retry replays 1 and re-runs 0.
    runs: Counter[str] = Counter()
    svc = Service("Gap")
    holder: dict[str, Harness] = {}

    @svc.handler()
    async def go(ctx: Context) -> list[str]:
        async def slow() -> str:
            runs["slow"] += 1
            if runs["slow"] == 1:
                store = holder["h"].apps.runtime.store
                while store.count("journal") < 1:  # wait until "fast" is durable
                    await asyncio.sleep(0.002)
                raise RuntimeError("slow failed")
            return "S"

        async def fast() -> str:
            runs["fast"] += 1
            return "F"

        return list(await asyncio.gather(ctx.run("slow", slow), ctx.run("fast", fast)))

    h = await start([svc])
    holder["h"] = h
    response = await h.ingress.post("/Gap/go")
    assert response.json() == ["S", "F"]
    assert runs == {"slow": 2, "fast": 1}
    second = h.attempts_of(response.headers["x-restate-id"])[1].request
    assert [(i.index, i.entry.name) for i in second.journal] == [(1, "fast")]  # type: ignore[union-attr]


async def test_replay_returns_the_journaled_value_typed(start: StartHarness) -> None:
    svc = Service("Typed")
    attempts: list[int] = []

    @svc.handler()
    async def go(ctx: Context) -> str:
        def now() -> float:
            return 1.25

        def tags() -> tuple[str, ...]:
            return ("a", "b")

        t = await ctx.run("now", now)
        tg = await ctx.run("tags", tags)
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("again")
        return f"{type(t).__name__}:{t} {type(tg).__name__}:{','.join(tg)}"

    h = await start([svc])
    response = await h.ingress.post("/Typed/go")
    assert response.json() == "float:1.25 tuple:a,b"


async def test_ctx_random_is_the_same_on_every_attempt(start: StartHarness) -> None:
    svc = Service("Dice")
    seen: list[tuple[int, str]] = []

    @svc.handler()
    async def roll(ctx: Context) -> None:
        seen.append((ctx.random().randint(1, 10**9), str(ctx.uuid())))
        if len(seen) < 3:
            raise RuntimeError("again")

    h = await start([svc])
    await h.ingress.post("/Dice/roll")
    assert len(seen) == 3 and len(set(seen)) == 1


# -- RunOptions --------------------------------------------------------------------------------


async def test_run_options_retry_in_place(start: StartHarness) -> None:
    tries: list[int] = []
    svc = Service("Retry")

    @svc.handler()
    async def go(ctx: Context) -> int:
        def flaky() -> int:
            tries.append(1)
            if len(tries) < 3:
                raise ConnectionError("flaky")
            return len(tries)

        opts = RunOptions(max_attempts=5, initial_retry_interval=timedelta(milliseconds=1))
        return await ctx.run_with(opts, "flaky", flaky)

    h = await start([svc])
    response = await h.ingress.post("/Retry/go")
    assert response.json() == 3
    view = await h.inspect(response.headers["x-restate-id"])
    # Retried inside the one attempt: the proxy saw no failure.
    assert (view["attempt"], view["retry_count"], view["last_failure"]) == (1, 0, None)


async def test_run_options_keyword_still_works_with_a_deprecation_warning(start: StartHarness) -> None:
    svc = Service("OldSpelling")

    @svc.handler()
    async def go(ctx: Context) -> list[object]:
        def flaky() -> str:
            tries.append(1)
            if len(tries) < 2:
                raise ConnectionError("flaky")
            return "retried"

        def configure(options: object = "mine") -> str:
            return "own options" if isinstance(options, RunOptions) else str(options)

        opts = RunOptions(max_attempts=5, initial_retry_interval=timedelta(milliseconds=1))
        with pytest.warns(DeprecationWarning, match="run_with"):
            step = ctx.run("flaky", flaky, options=opts)  # type: ignore[call-overload]
        # A step function's own `options` parameter is its argument, not the retry policy.
        own = await ctx.run("own", configure, options=opts)
        return [await step, own]

    tries: list[int] = []
    h = await start([svc])
    response = await h.ingress.post("/OldSpelling/go")
    assert response.json() == ["retried", "own options"]
    view = await h.inspect(response.headers["x-restate-id"])
    assert view["attempt"] == 1


async def test_run_options_exhausted_fail_the_step_terminally(start: StartHarness) -> None:
    tries: list[int] = []
    svc = Service("Exhaust")

    @svc.handler()
    async def go(ctx: Context) -> str:
        def broken() -> None:
            tries.append(1)
            raise ValueError("still broken")

        opts = RunOptions(max_attempts=3, initial_retry_interval=timedelta(milliseconds=1))
        try:
            await ctx.run_with(opts, "broken", broken)
        except TerminalError as exc:
            return f"gave up: {exc.message}"
        return "unreachable"

    h = await start([svc])
    response = await h.ingress.post("/Exhaust/go")
    assert response.status_code == 200
    assert response.json().startswith("gave up: step 'broken' failed after 3 attempts")
    assert len(tries) == 3
    view = await h.inspect(response.headers["x-restate-id"])
    (item,) = view["journal"]
    assert item["entry"]["failure"]["code"] == 500
    assert view["attempt"] == 1


async def test_run_options_max_duration(start: StartHarness) -> None:
    tries: list[int] = []
    svc = Service("Duration")

    @svc.handler()
    async def go(ctx: Context) -> None:
        def broken() -> None:
            tries.append(1)
            raise ValueError("nope")

        opts = RunOptions(max_duration=timedelta(milliseconds=100), initial_retry_interval=timedelta(milliseconds=10),
                          retry_interval_factor=1.0)  # fmt: skip
        await ctx.run_with(opts, "broken", broken)

    h = await start([svc])
    response = await h.ingress.post("/Duration/go")
    assert response.status_code == 500
    assert "failed after" in response.json()["message"]
    assert 2 <= len(tries) <= 12


async def test_without_run_options_a_failing_step_retries_the_attempt(start: StartHarness) -> None:
    tries: list[int] = []
    svc = Service("NoOpts")

    @svc.handler()
    async def go(ctx: Context) -> int:
        def flaky() -> int:
            tries.append(1)
            if len(tries) < 2:
                raise ConnectionError("flaky")
            return 7

        result: int = await ctx.run("flaky", flaky)
        return result

    h = await start([svc])
    response = await h.ingress.post("/NoOpts/go")
    assert response.json() == 7
    view = await h.inspect(response.headers["x-restate-id"])
    assert (view["attempt"], view["retry_count"]) == (2, 1)
    assert "ConnectionError" in view["last_failure"]["message"]


# -- journal mismatch --------------------------------------------------------------------------


def renaming_service(swallow: bool) -> tuple[Service, Counter[str]]:
    runs: Counter[str] = Counter()
    svc = Service("Renamer")

    @svc.handler()
    async def go(ctx: Context) -> str:
        # The first attempt journals "charge" then fails; the "new code" calls it "bill".
        name = "charge" if runs["attempts"] == 0 else "bill"
        runs["attempts"] += 1
        try:
            await ctx.run(name, lambda: runs.update([name]))
        except JournalMismatchError:
            if not swallow:
                raise
            return "swallowed"
        if runs["attempts"] == 1:
            raise RuntimeError("crash after the step")
        return "ok"

    return svc, runs


@pytest.mark.parametrize("swallow", [False, True])
async def test_journal_mismatch_pauses_with_570(start: StartHarness, swallow: bool) -> None:
    svc, runs = renaming_service(swallow)
    h = await start([svc], clock=FakeClock())
    inv = await h.send("/Renamer/go")
    view = await h.advance_until(inv, lambda v: v["status"] == "paused")
    failure = view["last_failure"]
    assert failure["code"] == 570
    assert 'journal mismatch at index 0: recorded run "charge", replay attempted run "bill"' in failure["message"]
    # The journal is intact and the renamed step never ran; catching the error changes nothing.
    assert [i["entry"]["name"] for i in view["journal"]] == ["charge"]
    assert runs["bill"] == 0 and runs["charge"] == 1
    # The attempt that paused it winds down; then nothing is in flight and no retry is armed.
    await h.wait_until(inv, lambda v: not h.apps.runtime.invoker.is_busy(inv))
    await h.advance(3600)
    assert runs["attempts"] == 2, "a paused invocation gets no more attempts"
    output = await h.ingress.get(f"/restate/invocation/{inv}/output")
    assert output.status_code == 470


# -- suspend mode ------------------------------------------------------------------------------


def three_steps(runs: Counter[str]) -> Service:
    svc = Service("Steps")

    @svc.handler()
    async def go(ctx: Context, start: int) -> int:
        def add(name: str, x: int) -> int:
            runs[name] += 1
            return x + 1

        a = await ctx.run("one", add, "one", start)
        b = await ctx.run("two", add, "two", a)
        c: int = await ctx.run("three", add, "three", b)
        return c

    return svc


async def test_suspend_mode_reinvokes_after_each_step(start: StartHarness) -> None:
    runs: Counter[str] = Counter()
    h = await start([three_steps(runs)], mode="suspend")
    acks_before = h.apps.runtime.writer.commits
    response = await h.ingress.post("/Steps/go", json=10)
    assert response.json() == 13
    assert runs == {"one": 1, "two": 1, "three": 1}
    sent = h.attempts_of(response.headers["x-restate-id"])
    assert [len(s.request.journal) for s in sent] == [0, 1, 2, 3]
    assert [s.request.attempt for s in sent] == [1, 2, 3, 4]
    view = await h.inspect(response.headers["x-restate-id"])
    assert [i["entry"]["name"] for i in view["journal"]] == ["one", "two", "three"]
    assert h.apps.runtime.writer.commits > acks_before


async def test_suspend_mode_registers_as_such(start: StartHarness) -> None:
    h = await start([three_steps(Counter())], mode="suspend")
    deployments = (await h.admin.get("/deployments")).json()["deployments"]
    assert [d["mode"] for d in deployments] == ["suspend"]


async def test_suspend_mode_gather_suspends_once_for_both_steps(start: StartHarness) -> None:
    runs: Counter[str] = Counter()
    svc = Service("SuspendPair")

    @svc.handler()
    async def go(ctx: Context) -> list[int]:
        async def step(name: str, value: int) -> int:
            runs[name] += 1
            await asyncio.sleep(0.01 * value)
            return value

        return list(await asyncio.gather(ctx.run("x", step, "x", 2), ctx.run("y", step, "y", 1)))

    h = await start([svc], mode="suspend")
    response = await h.ingress.post("/SuspendPair/go")
    assert response.json() == [2, 1]
    assert runs == {"x": 1, "y": 1}
    sent = h.attempts_of(response.headers["x-restate-id"])
    assert [len(s.request.journal) for s in sent] == [0, 2]


async def test_suspend_mode_with_a_transport_fault_between_steps(start: StartHarness) -> None:
    runs: Counter[str] = Counter()
    h = await start([three_steps(runs)], mode="suspend")

    async def fail_second(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    # Attempt 1 runs "one", then a 503 stands in for attempt 2; attempt 3 resumes at "two".
    h.plan += [None, fail_second]
    response = await h.ingress.post("/Steps/go", json=0)
    assert response.json() == 3
    assert runs == {"one": 1, "two": 1, "three": 1}
