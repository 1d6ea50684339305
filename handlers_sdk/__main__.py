"""``python -m handlers_sdk``: tools for handler authors.

``python -m handlers_sdk replay journal.json module:application`` replays a journal exported by
the proxy (``curl :9070/invocations/{id}/journal > journal.json``) against today's code, in
process, without running any step body; given a folder, it replays every ``*.json`` in it and
reports each (Temporal's Replayer over a set of histories, for checking a code change against the
invocations in flight). Exit code 0: the code reproduces every journal (or the journal is a prefix
of what it does); 1: a mismatch (printed as a diff) or a handler failure; 2: usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from handlers_sdk.protocol import JournalExport, load_export
from handlers_sdk.service import Service

if TYPE_CHECKING:
    from handlers_sdk.testing.replayer import ReplayReport

__all__ = ["UsageError", "load_services", "main"]

_EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument, file or application reference (exit code 2)."""


def load_services(ref: str) -> list[Service]:
    """The services of ``module:attr``: a `handlers_sdk.app(...)`, a `Service`, or a list of them.

    The working directory is put on ``sys.path`` first, as uvicorn does.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected module:attribute (e.g. examples.orders:application), got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    services = getattr(target, "services", target)
    if isinstance(services, dict):
        services = list(services.values())
    if isinstance(services, Service):
        services = [services]
    if not isinstance(services, list | tuple) or not all(isinstance(s, Service) for s in services):
        raise UsageError(f"{ref} is not a handlers_sdk app, a Service or a list of Services")
    return list(services)


def _report_json(report: ReplayReport, journal: str) -> dict[str, Any]:
    rows = [
        {"index": r.index, "state": r.state, "recorded": r.recorded, "recorded_source": r.recorded_source,
         "attempted": r.attempted, "attempted_source": r.attempted_source}
        for r in report.rows
    ]  # fmt: skip
    summary = {"status": report.status, "summary": report.summary, "mismatch_index": report.mismatch_index}
    return {"journal": journal, **summary, "rows": rows, "detail": report.detail}


def _load(path: str) -> JournalExport:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    try:
        return load_export(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a journal export: {exc}") from exc


async def _replay_all(services: list[Service], paths: list[str]) -> list[tuple[str, ReplayReport]]:
    from handlers_sdk.testing.replayer import replay_journal

    reports = []
    for path in paths:
        try:
            reports.append((path, await replay_journal(services, _load(path))))
        except LookupError as exc:
            raise UsageError(str(exc.args[0] if exc.args else exc)) from exc
    return reports


def _replay(args: argparse.Namespace) -> int:
    folder = Path(args.journal)
    paths = [args.journal]
    if args.journal != "-" and folder.is_dir():
        # A set of journals (Temporal's Replayer over a history set): every *.json in the folder.
        paths = [str(p) for p in sorted(folder.glob("*.json"))]
        if not paths:
            raise UsageError(f"{folder} holds no exported journal (*.json)")
    services = load_services(args.app)
    reports = asyncio.run(_replay_all(services, paths))
    if args.json:
        rendered = [_report_json(report, path) for path, report in reports]
        print(msgspec.json.encode(rendered if len(paths) > 1 or folder.is_dir() else rendered[0]).decode())
    elif len(reports) == 1 and not folder.is_dir():
        print(reports[0][1].format())
    else:
        for path, report in reports:
            print(f"{'ok      ' if report.ok else 'FAILED  '}{Path(path).name}: {report.format()}")
        failed = sum(not report.ok for _, report in reports)
        noun = "journal" if len(reports) == 1 else "journals"
        print(f"\n{len(reports)} {noun} replayed: {len(reports) - failed} ok, {failed} failed")
    return max(report.exit_code for _, report in reports)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m handlers_sdk", description="Tools for handler authors.")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser(
        "replay",
        help="replay an exported journal against today's code",
        description="Replay a journal exported with GET :9070/invocations/{id}/journal, or a folder of them; "
        "no step body runs. Exit 0: all ok (or prefixes), 1: a mismatch or a failure, 2: usage error.",
    )
    replay.add_argument(
        "journal", help="the exported journal (JSON file, - for stdin, or a folder: every *.json in it)"
    )
    replay.add_argument("app", help="module:attribute of the handler app, e.g. examples.orders:application")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    try:
        return _replay(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
