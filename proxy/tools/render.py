"""Plain-text renderings of admin API answers for the CLI: aligned tables, short ages, one
journal entry per line, and one invocation with its numbered journal."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "age_of",
    "format_age",
    "format_entry",
    "format_table",
    "info_line",
    "proxy_command",
    "render_invocation",
    "render_limits",
    "shorten",
    "timestamp",
]


def proxy_command() -> str:
    """How to run ``python -m proxy`` with this very interpreter (a hint that works when pasted,
    venv activated or not): relative to the working directory when it is below it."""
    executable = sys.executable or "python"
    try:
        relative = os.path.relpath(executable)
    except ValueError:  # another drive (Windows)
        relative = executable
    shown = relative if not relative.startswith("..") else executable
    if os.sep not in shown:
        shown = "." + os.sep + shown
    return f"{shlex.quote(shown)} -m proxy"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_age(seconds: float) -> str:
    """A short duration: ``850ms``, ``42s``, ``3m12s``, ``5h02m``, ``2d03h``."""
    if seconds < 0:
        seconds = 0
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def shorten(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(value: Any, width: int = 80) -> str:
    return shorten(json.dumps(value, separators=(",", ":"), ensure_ascii=False), width)


def timestamp(ms: int | None) -> str:
    """Epoch milliseconds as an ISO UTC timestamp (``-`` for none)."""
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _failure(failure: Mapping[str, Any] | None) -> str:
    if not failure:
        return ""
    code = failure.get("code")
    message = str(failure.get("message", ""))
    return f"{code} {message}".strip() if code else message


def _waits(waits: Sequence[Mapping[str, Any]], now_ms: int) -> str:
    parts = []
    for wait in waits:
        kind = wait.get("kind", "?")
        if kind == "timer":
            parts.append(f"timer in {format_age((int(wait.get('wake_at_ms', 0)) - now_ms) / 1000)}")
        elif kind == "call":
            parts.append(f"call {wait.get('target', '?')} {wait.get('invocation_id', '')}".rstrip())
        elif kind == "awakeable":
            parts.append(f"awakeable {wait.get('awakeable_id', '')}".rstrip())
        elif kind == "promise":
            parts.append(f"promise {wait.get('name', '')!r}")
        else:
            parts.append(f"{kind} #{wait.get('index', '?')}")
    return ", ".join(parts)


def info_line(view: Mapping[str, Any], now_ms: int) -> str:
    """The last column of ``ls``: what it waits on, why it failed, or how it ended."""
    status = view.get("status")
    if status == "completed":
        if view.get("failure"):
            return "failed: " + _failure(view["failure"])
        return "ok: " + _compact(view.get("result"), 60)
    parts = []
    if view.get("waiting_on"):
        parts.append("waiting on " + _waits(view["waiting_on"], now_ms))
    if status == "backing-off" and view.get("next_retry_ms"):
        parts.append(f"retry in {format_age((int(view['next_retry_ms']) - now_ms) / 1000)}")
    if status == "scheduled" and view.get("next_retry_ms"):
        parts.append(f"starts in {format_age((int(view['next_retry_ms']) - now_ms) / 1000)}")
    limit = _limit_wait(view, now_ms)
    if limit:
        parts.append(limit)
    if view.get("last_failure") and status in ("backing-off", "paused", "running", "pending"):
        parts.append("last failure: " + _failure(view["last_failure"]))
    return "; ".join(parts)


def _group(group: Mapping[str, Any]) -> str:
    """A limit group as an operator names it: ``Greeter``, ``Greeter/greet``, ``Greeter/greet key 'a'``."""
    text = str(group.get("service", "?"))
    if group.get("handler"):
        text += "/" + str(group["handler"])
    if group.get("scope") == "key":
        text += f" key {str(group.get('key', ''))!r}"
    return text


def _limit_wait(view: Mapping[str, Any], now_ms: int) -> str:
    """Why an invocation waits for a limit: its place in a concurrency limit's line, or when a rate
    limit lets it start ("" if neither)."""
    if view.get("status") == "pending" and view.get("queue_position"):
        group = _group(view.get("waiting_for_limit") or {})
        return f"number {view['queue_position']} in line for the concurrency limit of {group}"
    until = view.get("rate_limited_until_ms")
    if view.get("status") == "scheduled" and until:
        return f"rate limited: starts in {format_age((int(until) - now_ms) / 1000)}"
    return ""


def _limit(limit: Mapping[str, Any] | None) -> str:
    if not limit:
        return "-"
    parts = []
    if limit.get("concurrency"):
        parts.append(f"{limit['concurrency']} at once")
    if limit.get("rate"):
        period = int(limit.get("period_ms", 1000))
        per = "s" if period == 1000 else format_age(period / 1000)
        burst = f" (burst {limit['burst']})" if limit.get("burst") else ""
        parts.append(f"{limit['rate']}/{per}{burst}")
    return ", ".join(parts) or "-"


def render_limits(view: Mapping[str, Any]) -> str:
    """``GET /services/{name}/limits`` as text: the limits that apply (and whose they are), then
    the limit groups in use with their slots taken and invocations queued."""
    effective = view.get("effective") or {}
    source = "operator override" if view.get("override") is not None else "code"
    rows: list[list[str]] = []
    if effective.get("service"):
        rows.append(["service", "(all handlers)", _limit(effective["service"])])
    for handler, limit in sorted((effective.get("handlers") or {}).items()):
        rows.append(["handler", handler, _limit(limit)])
    if effective.get("key"):
        rows.append(["each key", "(all handlers)", _limit(effective["key"])])
    fields = effective.get("key_fields") or {}
    for handler, limit in sorted((effective.get("handler_keys") or {}).items()):
        field = f" (key: input field {fields[handler]!r})" if handler in fields else ""
        rows.append(["each key", handler + field, _limit(limit)])
    name = view.get("service", "?")
    if not rows:
        return f"{name}: no concurrency or rate limits"
    lines = [f"{name}: limits from the {source}", format_table(["SCOPE", "HANDLER", "LIMIT"], rows)]
    groups = view.get("groups") or []
    if groups:
        used = [[_group(g), str(g.get("running", 0)), str(g.get("queued", 0))] for g in groups]
        lines += ["", format_table(["GROUP", "RUNNING", "QUEUED"], used)]
    return "\n".join(lines)


def _entry_outcome(entry: Mapping[str, Any], finished: bool = False) -> str:
    if entry.get("failure"):
        return " failed: " + _failure(entry["failure"])
    if not entry.get("completed"):  # the wire leaves ``completed: false`` out
        return " (never completed)" if finished else " (pending)"
    return " = " + _compact(entry.get("value"))


def format_entry(entry: Mapping[str, Any], now_ms: int | None = None, finished: bool = False) -> str:
    """One journal entry (the ``entry`` of a journal item) as one readable line.

    `finished`: the invocation has completed, so nothing it still waited for will happen: a
    sleep shows "(never fired)" instead of a countdown, a call, awakeable or promise wait
    "(never completed)" instead of "(pending)" (the web page says the same).
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    kind = str(entry.get("type", "?"))
    name = entry.get("name", "")
    if kind == "run":
        if entry.get("failure"):
            return f"run {name!r} failed: {_failure(entry['failure'])}"
        return f"run {name!r} = {_compact(entry.get('value'))}"
    if kind == "sleep":
        wake = int(entry.get("wake_at_ms", 0))
        label = f"sleep {name!r} " if name else "sleep "
        if entry.get("completed"):
            return f"{label}until {timestamp(wake)} (done)"
        if finished:
            return f"{label}until {timestamp(wake)} (never fired)"
        return f"{label}until {timestamp(wake)} (in {format_age((wake - now_ms) / 1000)})"
    if kind in ("call", "send"):
        key = f"{entry.get('key')}/" if entry.get("key") else ""
        target = f"{entry.get('service')}/{key}{entry.get('handler')}"
        line = f"{kind} {target}({_compact(entry.get('input'), 40)}) -> {entry.get('invocation_id', '')}"
        if kind == "send":
            delay = int(entry.get("delay_ms", 0) or 0)
            return line + (f" after {format_age(delay / 1000)}" if delay else "")
        return line + _entry_outcome(entry, finished)
    if kind == "awakeable":
        return f"awakeable {entry.get('id', '')}" + _entry_outcome(entry, finished)
    if kind == "get_state":
        found = entry.get("found")
        return f"get state {entry.get('key')!r}" + (" = " + _compact(entry.get("value")) if found else " (not set)")
    if kind == "set_state":
        return f"set state {entry.get('key')!r} = {_compact(entry.get('value'))}"
    if kind == "clear_state":
        return f"clear state {entry.get('key')!r}"
    if kind == "clear_all_state":
        return "clear all state"
    if kind == "state_keys":
        return f"state keys = {_compact(entry.get('keys', []))}"
    if kind in ("promise_get", "promise_peek"):
        verb = "get" if kind == "promise_get" else "peek"
        if kind == "promise_peek" and entry.get("completed") and not entry.get("found") and not entry.get("failure"):
            return f"promise {verb} {name!r} (not resolved)"
        return f"promise {verb} {name!r}" + _entry_outcome(entry, finished)
    if kind == "promise_complete":
        how = (
            "reject " + _failure(entry["rejection"])
            if entry.get("rejection")
            else "resolve " + _compact(entry.get("resolution"), 40)
        )
        line = f"promise complete {name!r}: {how}"
        if entry.get("failure"):
            return line + " failed: " + _failure(entry["failure"])
        return line
    rest = {k: v for k, v in entry.items() if k != "type"}
    return f"{kind} {_compact(rest)}"


def age_of(view: Mapping[str, Any], now_ms: int) -> str:
    """How long ago an invocation was created."""
    return format_age((now_ms - int(view.get("created_ms") or now_ms)) / 1000)


def render_invocation(view: Mapping[str, Any], now_ms: int) -> str:
    fields: list[tuple[str, str]] = [
        ("id", str(view.get("id"))),
        ("target", str(view.get("target"))),
        ("status", str(view.get("status"))),
        ("attempt", f"{view.get('attempt', 0)} (retries {view.get('retry_count', 0)})"),
        ("created", f"{timestamp(view.get('created_ms'))} ({age_of(view, now_ms)} ago)"),
        ("modified", timestamp(view.get("modified_ms"))),
        ("deployment", str(view.get("deployment_id") or "-")),
    ]
    if view.get("idempotency_key"):
        fields.append(("idempotency key", str(view["idempotency_key"])))
    if view.get("next_retry_ms") and view.get("status") != "completed":
        nxt = int(view["next_retry_ms"])
        fields.append(("next retry", f"{timestamp(nxt)} (in {format_age((nxt - now_ms) / 1000)})"))
    if view.get("last_failure"):
        fields.append(("last failure", _failure(view["last_failure"])))
    if view.get("waiting_on"):
        fields.append(("waiting on", _waits(view["waiting_on"], now_ms)))
    if view.get("limit_key"):
        fields.append(("limit key", str(view["limit_key"])))
    limit = _limit_wait(view, now_ms)
    if limit:
        fields.append(("limits", limit))
    if view.get("completed_ms"):
        fields.append(("completed", timestamp(view["completed_ms"])))
    if view.get("failure"):
        fields.append(("failure", _failure(view["failure"])))
    elif "result" in view:
        fields.append(("result", _compact(view["result"], 200)))
    width = max(len(name) for name, _ in fields)
    lines = [f"{name + ':':<{width + 1}}  {value}" for name, value in fields]
    journal = view.get("journal") or []
    lines.append("")
    lines.append(f"journal ({len(journal)} {'entry' if len(journal) == 1 else 'entries'}):")
    digits = len(str(max((int(item.get("index", 0)) for item in journal), default=0)))
    for item in journal:
        index = int(item.get("index", 0))
        entry = format_entry(item.get("entry", {}), now_ms, finished=view.get("status") == "completed")
        lines.append(f"  {index:>{digits}}. {entry}")
    return "\n".join(lines)
