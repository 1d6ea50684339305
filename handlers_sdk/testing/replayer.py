"""Replay a journal exported from production against today's code, in process.

The proxy exports an invocation with ``GET :9070/invocations/{id}/journal`` (`JournalExport`).
`replay_journal` runs the handler once against that journal, the way a re-invocation would, but:

* no step body runs: journaled steps return their recorded values (as always), and a step
  beyond the recorded journal is *not* executed (the replay stops there: the journal was a
  prefix of a running invocation);
* nothing is completed and no other handler is called.

The result says whether today's code still produces the recorded journal, and if not, where it
first diverges (index, recorded vs attempted operation, step name and ``file:line``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from handlers_sdk.ack import AckClient
from handlers_sdk.attempt import run_attempt
from handlers_sdk.protocol import (
    EXPORT_FORMAT,
    Completed,
    Entry,
    Errored,
    Failed,
    InvokeRequest,
    JournalExport,
    RunEntry,
    Suspended,
    load_export,
)
from handlers_sdk.replay import describe
from handlers_sdk.service import Service
from handlers_sdk.testing.crash import short_source
from handlers_sdk.testing.steps import StepRecorder

__all__ = ["EXPORT_FORMAT", "JournalExport", "ReplayReport", "Row", "load_export", "replay_journal"]

Status = Literal["ok", "prefix", "mismatch", "error"]


@dataclass(frozen=True)
class Row:
    """One line of the replay table: a recorded entry and what the replay did at its index."""

    index: int
    recorded: str
    recorded_source: str
    attempted: str
    attempted_source: str
    state: Literal["ok", "mismatch", "not reached", "new"]


@dataclass
class ReplayReport:
    """The outcome of `replay_journal`; `exit_code` is 0 for ok/prefix and 1 otherwise."""

    status: Status
    summary: str
    target: str
    invocation_id: str
    recorded: int
    rows: list[Row] = field(default_factory=list)
    mismatch_index: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when today's code reproduces the recorded journal (or a prefix run of it)."""
        return self.status in ("ok", "prefix")

    @property
    def exit_code(self) -> int:
        """0 when ok, 1 on a mismatch or an error of the handler."""
        return 0 if self.ok else 1

    def format(self) -> str:
        """The report as text: a summary line, and for a mismatch the side-by-side journal."""
        lines = [f"{self.target} ({self.invocation_id}): {self.summary}"]
        if not self.ok and self.rows:
            width = max(len(r.recorded) + len(short_source(r.recorded_source)) for r in self.rows) + 3
            width = max(width, 20)
            lines.append("")
            lines.append(f"  {'index':>5}  {'recorded':<{width}}  replay")
            for r in self.rows:
                mark = ">" if r.state in ("mismatch", "new") else " "
                rec = f"{r.recorded}  {short_source(r.recorded_source)}".rstrip()
                if r.state == "ok":
                    att = "= same"
                elif r.state == "not reached":
                    att = "(not reached)"
                else:
                    att = f"{r.attempted}  {short_source(r.attempted_source)}".rstrip()
                lines.append(f"{mark} {r.index:>5}  {rec:<{width}}  {att}")
        if self.detail:
            lines += ["", self.detail.rstrip()]
        return "\n".join(lines)


def _source(entry: Entry | None) -> str:
    return entry.source if isinstance(entry, RunEntry) else ""


def _find_handler(services: Iterable[Service], export: JournalExport) -> Any:
    for svc in services:
        if svc.name == export.service:
            handler = svc.handlers.get(export.handler)
            if handler is None:
                raise LookupError(
                    f"service {svc.name!r} has no handler {export.handler!r} (has {sorted(svc.handlers)})"
                )
            return handler
    names = sorted(s.name for s in services)
    raise LookupError(f"no service {export.service!r} in the application (has {names})")


def _json(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw


async def replay_journal(services: Iterable[Service], export: JournalExport) -> ReplayReport:
    """Replay `export` against the handler in `services`; no step body is executed.

    Raises:
        LookupError: the application has no such service or handler.
    """
    services = list(services)
    handler = _find_handler(services, export)
    recorded = {item.index: item.entry for item in export.journal}
    recorder = StepRecorder(lambda index: index in recorded, run_bodies=False)
    request = InvokeRequest(
        invocation_id=export.invocation_id,
        service=export.service,
        handler=export.handler,
        key=export.key,
        input=export.input,
        journal=export.journal,
        attempt=1,
        token="replay",
        callback_url="",
        random_seed=export.random_seed,
        headers=export.headers,
    )
    observed = recorder.instrument(handler, 1)
    outcome = await run_attempt(observed, request, "suspend", AckClient(), on_allocate=recorder.on_allocate)
    target = export.target or f"{export.service}/{export.handler}"
    report = ReplayReport("ok", "", target, export.invocation_id, len(recorded))
    reached = set(recorder.allocated)
    mismatch = outcome.related_index if isinstance(outcome, Errored) and outcome.behavior == "pause" else None
    new = {item.index: item.entry for item in outcome.entries if item.index not in recorded}
    for index in sorted(set(recorded) | set(new)):
        entry = recorded.get(index)
        if index == mismatch and isinstance(outcome, Errored):
            name = outcome.related_name.partition('"')[2].rpartition('"')[0]
            calls = [c for c in recorder.calls if c.name == name]
            att_source = calls[-1].source if calls else ""
            row = Row(
                index,
                describe(entry) if entry else "(none)",
                _source(entry),
                outcome.related_name,
                att_source,
                "mismatch",
            )
        elif entry is None:
            att = new[index]
            att_source = next(
                (c.source for c in recorder.calls if isinstance(att, RunEntry) and c.name == att.name), ""
            )
            row = Row(index, "(none)", "", describe(att), att_source, "new")
        else:
            row = Row(index, describe(entry), _source(entry), "", "", "ok" if index in reached else "not reached")
        report.rows.append(row)
    matched = [r.index for r in report.rows if r.state == "ok"]
    upto = f"up to index {max(matched)}" if matched else "(no recorded entry replayed)"
    unreached = [r for r in report.rows if r.state == "not reached"]

    if mismatch is not None:
        assert isinstance(outcome, Errored)
        row = next(r for r in report.rows if r.index == mismatch)
        report.status, report.mismatch_index = "mismatch", mismatch
        report.summary = (
            f"journal mismatch at index {mismatch}: recorded {row.recorded}"
            f"{' (' + short_source(row.recorded_source) + ')' if row.recorded_source else ''}, "
            f"replay attempted {row.attempted}"
            f"{' (' + short_source(row.attempted_source) + ')' if row.attempted_source else ''}"
        )
        return report
    if isinstance(outcome, Errored):
        report.status = "error"
        report.summary = f"the handler failed during replay: {outcome.message}"
        report.detail = outcome.stacktrace
        return report
    if isinstance(outcome, Suspended):
        if new:
            first = min(new)
            report.status = "prefix"
            report.summary = (
                f"replay ok {upto}; the handler then creates {describe(new[first])} at index {first}, "
                "beyond the recorded journal (not executed): the journal is a prefix"
            )
        else:
            waits = ", ".join(f"{i} ({describe(recorded[i])})" for i in outcome.waiting_on if i in recorded)
            report.summary = f"replay ok {upto}; the handler waits on index {waits or outcome.waiting_on}, as recorded"
        if unreached:
            report.summary += f" ({len(unreached)} recorded entries not reached yet)"
        return report
    # The handler finished: everything recorded must have been replayed, and the result must match.
    if unreached:
        report.status = "mismatch"
        report.mismatch_index = unreached[0].index
        report.summary = (
            f"the handler finished without replaying {len(unreached)} recorded entries, the first being "
            f"{unreached[0].recorded} at index {unreached[0].index}"
            f"{' (' + short_source(unreached[0].recorded_source) + ')' if unreached[0].recorded_source else ''}"
        )
        return report
    ended = (
        f"result {bytes(outcome.value).decode()}"
        if isinstance(outcome, Completed)
        else f"terminal failure {outcome.failure.code}: {outcome.failure.message!r}"
    )
    if export.completed:
        same = (
            isinstance(outcome, Completed) and export.failure is None and _json(outcome.value) == _json(export.result)
        ) or (isinstance(outcome, Failed) and outcome.failure == export.failure)
        if not same:
            was = (
                f"result {bytes(export.result).decode()}"
                if export.failure is None
                else f"terminal failure {export.failure.code}: {export.failure.message!r}"
            )
            report.status = "mismatch"
            report.summary = f"replay ok up to the end, but the output differs: recorded {was}, replay gave {ended}"
            return report
    report.summary = f"replay ok {upto}: all {len(recorded)} recorded entries replayed; the handler ended with {ended}"
    return report
