"""Crash at every step: prove a handler survives a crash between any side effect and its ack.

`check_replay_safety` runs the handler once without crashes (the *baseline*: its output, its
journal and every step body that ran). Then, for every journal position k, it runs the handler
again from scratch, lets step k's body run, drops step k's entry before it is committed (the
attempt dies, as if the handler process had been killed before the proxy's ack), and resumes it
from the journal as it was. Each resumed run must:

* replay without a journal mismatch (same step names, kinds and order);
* never run the body of a step whose entry was already journaled (step k itself may run twice:
  it was in flight at the crash, which is the at-least-once window of any step);
* make the same ``ctx.run`` calls with the same arguments as the baseline;
* end with the same output (value or terminal failure).

A last run replays the complete journal, as after a crash between the last step and the storing
of the result. The first position that breaks a rule is reported with the step's name and
``file:line``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from handlers_sdk.protocol import Completed, Errored, Failed, RunEntry
from handlers_sdk.replay import describe
from handlers_sdk.service import Service
from handlers_sdk.testing.invocation import Invocation
from handlers_sdk.testing.runtime import LocalRuntime, Mode
from handlers_sdk.testing.steps import StepCall

__all__ = [
    "ReplaySafetyError",
    "ReplaySafetyReport",
    "Violation",
    "check_replay_safety",
    "check_replay_safety_async",
    "short_source",
]

Kind = Literal["mismatch", "ran_twice", "output", "step_name", "step_args", "paused", "suspended"]
_SEVERITY: dict[str, int] = {
    "mismatch": 0, "ran_twice": 1, "paused": 2, "suspended": 3, "output": 4, "step_name": 5, "step_args": 6,
}  # fmt: skip


def short_source(source: str) -> str:
    """``file:line`` relative to the working directory when it is below it."""
    path, sep, line = source.rpartition(":")
    if not sep or not path:
        return source
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return source
    return f"{rel}:{line}" if not rel.startswith("..") else source


@dataclass(frozen=True)
class Violation:
    """One way in which a handler is not replay-safe."""

    kind: Kind
    message: str
    #: Position of the injected crash in the commit order (None: the crash-free run; the journal
    #: length: the replay of the complete journal).
    crash_at: int | None
    #: Journal index concerned, if any.
    index: int | None = None
    step: str = ""
    source: str = ""

    def __str__(self) -> str:
        where = f' at step "{self.step}"' if self.step else (" in the handler" if self.source else "")
        line = f" ({short_source(self.source)})" if self.source else ""
        return f"[{self.kind}]{where}{line}: {self.message}"


@dataclass
class ReplaySafetyReport:
    """What `check_replay_safety` found: the baseline, every crash run, and the violations."""

    service: str
    handler: str
    baseline: Invocation
    runs: list[Invocation] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    #: How many crash positions were checked.
    positions: int = 0

    @property
    def ok(self) -> bool:
        """True when no violation was found."""
        return not self.violations

    @property
    def first(self) -> Violation | None:
        """The violation at the earliest crash position (the most severe one there)."""
        if not self.violations:
            return None

        def order(v: Violation) -> tuple[int, int]:
            return (-1 if v.crash_at is None else v.crash_at, _SEVERITY[v.kind])

        return min(self.violations, key=order)

    def describe_position(self, crash_at: int | None) -> str:
        """A sentence saying where the crash of one run was injected."""
        log = self.baseline.commit_log
        if crash_at is None:
            return "in the crash-free run"
        if crash_at >= len(log):
            return (
                f"when replaying the complete journal ({len(log)} entries), "
                "as after a crash before the result was stored"
            )
        entry = self.baseline.journal[log[crash_at]]
        source = f" ({short_source(entry.source)})" if isinstance(entry, RunEntry) and entry.source else ""
        return (
            f"after a crash following the side effect of {describe(entry)} at index {log[crash_at]}{source}, "
            f"before its ack (resumed from a journal of {crash_at} entries)"
        )

    def format(self) -> str:
        """A readable account: the first failing position and its violations, or a success line."""
        target = f"{self.service}/{self.handler}"
        if self.ok:
            return f"{target} is replay-safe: {self.positions} crash positions checked, no violation"
        first = self.first
        assert first is not None
        lines = [f"{target} is not replay-safe {self.describe_position(first.crash_at)}:"]
        at_first = [v for v in self.violations if v.crash_at == first.crash_at]
        lines += [f"  {v}" for v in sorted(at_first, key=lambda v: _SEVERITY[v.kind])]
        others = len(self.violations) - len(at_first)
        if others:
            lines.append(f"  (+{others} violations at later positions)")
        return "\n".join(lines)


class ReplaySafetyError(AssertionError):
    """Raised by `check_replay_safety` when the handler is not replay-safe; carries the report."""

    def __init__(self, report: ReplaySafetyReport) -> None:
        super().__init__(report.format())
        self.report = report


def _output(inv: Invocation) -> tuple[str, Any]:
    outcome = inv.outcome
    if isinstance(outcome, Completed):
        return ("value", msgspec.json.decode(outcome.value))
    if isinstance(outcome, Failed):
        return ("failure", (outcome.failure.code, outcome.failure.message))
    return ("none", None)


def _show(output: tuple[str, Any]) -> str:
    kind, value = output
    if kind == "failure":
        return f"terminal failure {value[0]}: {value[1]!r}"
    return repr(value)


def _quoted_name(described: str) -> str:
    """``charge`` from ``run "charge"``."""
    _, _, rest = described.partition('"')
    return rest.rpartition('"')[0]


def _status_violations(inv: Invocation, crash_at: int | None, baseline: Invocation) -> list[Violation]:
    outcome = inv.outcome
    if inv.status == "suspended":
        waits = ", ".join(describe(inv.journal[i]) for i in inv.waiting_on if i in inv.journal)
        return [Violation("suspended", f"the handler waits on [{waits}], which nothing completes", crash_at)]
    if not isinstance(outcome, Errored):
        return []
    if outcome.behavior == "pause" and outcome.related_index is not None:
        index = outcome.related_index
        recorded = inv.journal.get(index)
        rec_source = recorded.source if isinstance(recorded, RunEntry) else ""
        attempted_name = _quoted_name(outcome.related_name)
        attempted = [c for c in inv.calls if c.name == attempted_name]
        att_source = attempted[-1].source if attempted else ""
        rec = f"{describe(recorded)} ({short_source(rec_source)})" if recorded is not None else "nothing"
        att = f"{outcome.related_name} ({short_source(att_source)})" if att_source else outcome.related_name
        message = f"journal mismatch at index {index}: recorded {rec}, replay attempted {att}"
        step = recorded.name if isinstance(recorded, RunEntry) else attempted_name
        return [Violation("mismatch", message, crash_at, index, step, att_source or rec_source)]
    return [Violation("paused", f"the invocation paused: {outcome.message}\n{outcome.stacktrace}", crash_at)]


def _call_violations(calls: list[StepCall], canonical: list[StepCall], crash_at: int | None) -> list[Violation]:
    """Each attempt must make the baseline's ``ctx.run`` calls, in order, with the same arguments."""
    found: list[Violation] = []
    attempts: dict[int, list[StepCall]] = {}
    for call in calls:
        attempts.setdefault(call.attempt, []).append(call)
    for attempt, seq in sorted(attempts.items()):
        for position, (got, want) in enumerate(zip(seq, canonical, strict=False)):
            if got.name != want.name:
                message = (
                    f"ctx.run call #{position} of attempt {attempt} is {got.name!r} ({short_source(got.source)}); "
                    f"the crash-free run called {want.name!r} ({short_source(want.source)}) there"
                )
                found.append(Violation("step_name", message, crash_at, None, got.name, got.source))
                break
            if got.args is not None and want.args is not None and got.args != want.args:
                message = (
                    f"called with other arguments than in the crash-free run: "
                    f"{got.args.decode()} instead of {want.args.decode()}"
                )
                found.append(Violation("step_args", message, crash_at, None, got.name, got.source))
                break
        if found:
            break
    return found


def _check_run(
    inv: Invocation,
    baseline: Invocation,
    canonical: list[StepCall],
    crash_at: int | None,
    check_args: bool,
    handler_source: str = "",
) -> list[Violation]:
    found = _status_violations(inv, crash_at, baseline)
    for execution in inv.executions:
        if execution.journaled:
            entry = inv.journal.get(execution.index)
            source = entry.source if isinstance(entry, RunEntry) else ""
            message = (
                f"the body of step {execution.name!r} (index {execution.index}) ran again although it was journaled"
            )
            found.append(Violation("ran_twice", message, crash_at, execution.index, execution.name, source))
            break
    if inv.status == "completed" and _output(inv) != _output(baseline):
        message = (
            f"the output differs: crash-free run {_show(_output(baseline))}, after the crash {_show(_output(inv))}"
        )
        found.append(Violation("output", message, crash_at, None, "", handler_source))
    calls = _call_violations(inv.calls, canonical, crash_at)
    found += [v for v in calls if check_args or v.kind != "step_args"]
    return found


async def check_replay_safety_async(
    service: Service | Iterable[Service],
    handler: str,
    input: Any = None,
    *,
    target: str | None = None,
    mode: Mode = "ack",
    key: str = "",
    headers: dict[str, str] | None = None,
    random_seed: int = 0,
    check_args: bool = True,
    stop_at_first: bool = True,
    raise_on_failure: bool = True,
    prepare: Callable[[LocalRuntime], None] | None = None,
) -> ReplaySafetyReport:
    """`check_replay_safety` for code already inside an event loop."""
    services = [service] if isinstance(service, Service) else list(service)
    name = target or services[0].name
    options: dict[str, Any] = {
        "key": key,
        "headers": headers,
        "random_seed": random_seed,
        "invocation_id": "inv_replaycheck",
    }

    def runtime() -> LocalRuntime:
        rt = LocalRuntime(services, mode=mode)
        if prepare is not None:
            prepare(rt)
        return rt

    baseline = await runtime().start(name, handler, input, **options)
    report = ReplaySafetyReport(name, handler, baseline)
    canonical = [c for c in baseline.calls if c.attempt == baseline.attempts]
    fn = runtime().handler_def(name, handler).fn
    code = getattr(fn, "__code__", None)
    handler_source = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""
    report.violations += _check_run(baseline, baseline, canonical, None, check_args, handler_source)
    if report.violations or baseline.status != "completed":
        if raise_on_failure:
            raise ReplaySafetyError(report)
        return report
    positions = len(baseline.commit_log)
    for crash_at in range(positions + 1):
        if crash_at < positions:
            inv = await runtime().start(name, handler, input, crash_at=crash_at, **options)
        else:  # the result was lost: everything replays from the complete journal
            inv = await runtime().start(name, handler, input, journal=baseline.journal_items, **options)
        report.runs.append(inv)
        report.positions += 1
        found = _check_run(inv, baseline, canonical, crash_at, check_args, handler_source)
        report.violations += found
        if found and stop_at_first:
            break
    if report.violations and raise_on_failure:
        raise ReplaySafetyError(report)
    return report


def check_replay_safety(
    service: Service | Iterable[Service],
    handler: str,
    input: Any = None,
    **options: Any,
) -> ReplaySafetyReport:
    """Crash `handler` after every step's side effect and before its ack; check each resumed run.

    Args:
        service: the handler's service (or several services, with `target` naming the handler's
            own, when it calls the others).
        handler: the handler's name.
        input: the handler's input value.
        **options: ``target``, ``mode`` (``"ack"``: one attempt per run, as in production;
            ``"suspend"``: a replay at every step as well), ``key``, ``headers``,
            ``random_seed``, ``check_args`` (compare step arguments), ``stop_at_first``,
            ``raise_on_failure`` (else return the report with its violations) and ``prepare``
            (called with each fresh `LocalRuntime`, e.g. to resolve a promise or awakeable the
            handler waits on).

    Returns:
        The report (``report.ok`` is True when nothing was found).

    Raises:
        ReplaySafetyError: an ``AssertionError`` whose message names the first crash position that
            breaks a rule, the step and its ``file:line``.
        RuntimeError: called from a running event loop (use `check_replay_safety_async`).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("check_replay_safety() cannot run inside an event loop: await check_replay_safety_async()")
    return asyncio.run(check_replay_safety_async(service, handler, input, **options))
