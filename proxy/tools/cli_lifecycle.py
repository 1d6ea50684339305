"""CLI commands of schedules (``python -m proxy schedules ls|show|create|delete|pause|resume``) and
of a deployment's lifecycle (``deployments show|update``), over the admin API.

Added to the parser of `proxy.tools.cli` by `add_schedule_commands` and `add_deployment_commands`;
each command takes the CLI's admin client and returns its exit code (API errors are raised as the
client's `ApiError` and reported by the CLI).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from proxy.tools.render import format_table, timestamp

__all__ = ["add_deployment_commands", "add_schedule_commands"]

#: The CLI's exit code for success (`proxy.tools.cli.EXIT_OK`).
_OK = 0


class _Client(Protocol):
    def request(self, method: str, path: str, params: Mapping[str, str | int] | None = None, body: Any = None) -> Any:
        """One admin API request: the decoded JSON answer."""
        ...


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _when(view: Mapping[str, Any]) -> str:
    if view.get("cron"):
        return f"{view['cron']} ({view.get('timezone') or 'UTC'})"
    every = int(view.get("every_ms") or 0)
    return f"every {every / 1000:g}s" if every % 1000 == 0 or every > 1000 else f"every {every}ms"


def _counts(view: Mapping[str, Any]) -> str:
    return f"{view.get('fired', 0)}/{view.get('skipped', 0)}/{view.get('missed', 0)}"


def _schedule_row(view: Mapping[str, Any]) -> list[str]:
    next_fire = "paused" if view["paused"] else timestamp(view.get("next_fire_ms"))
    policies = f"{view['overlap']}/{view['catch_up']}"
    return [
        view["id"],
        view["target"],
        _when(view),
        next_fire,
        timestamp(view.get("last_fire_ms")),
        _counts(view),
        policies,
    ]


def _cmd_schedules_ls(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    schedules = client.request("GET", "/schedules")["schedules"]
    if args.json:
        _print_json({"schedules": schedules}, out)
        return _OK
    if not schedules:
        out.write("no schedules\n")
        return _OK
    rows = [_schedule_row(s) for s in schedules]
    headers = ["ID", "TARGET", "WHEN", "NEXT_FIRE", "LAST_FIRE", "FIRED/SKIPPED/MISSED", "OVERLAP/CATCH-UP"]
    out.write(format_table(headers, rows) + "\n")
    return _OK


def _render_schedule(view: Mapping[str, Any], out: TextIO) -> None:
    lines = [
        f"schedule   {view['id']} ({view['origin']})",
        f"target     {view['target']}",
        f"when       {_when(view)}",
        f"input      {json.dumps(view.get('input'), ensure_ascii=False)}",
        f"policies   overlap {view['overlap']}, catch-up {view['catch_up']}",
        f"next fire  {'paused' if view['paused'] else timestamp(view.get('next_fire_ms'))}",
        f"last fire  {timestamp(view.get('last_fire_ms'))} {view.get('last_invocation_id') or ''}".rstrip(),
        f"fired {view.get('fired', 0)}, skipped {view.get('skipped', 0)} (overlap), missed {view.get('missed', 0)}",
    ]
    if view.get("last_error"):
        lines.append(f"last error {view['last_error']}")
    out.write("\n".join(lines) + "\n")


def _cmd_schedules_show(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    view = client.request("GET", f"/schedules/{_quoted(args.id)}")
    if args.json:
        _print_json(view, out)
    else:
        _render_schedule(view, out)
    return _OK


def _target(text: str) -> tuple[str, str, str]:
    parts = text.split("/")
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1], ""
    if len(parts) == 3 and all(parts):
        return parts[0], parts[2], parts[1]
    raise argparse.ArgumentTypeError(f"expected Service/handler or Object/key/handler, got {text!r}")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None


def _cmd_schedules_create(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    service, handler, key = args.target
    body: dict[str, Any] = {
        "service": service, "handler": handler, "key": key, "input": args.input, "overlap": args.overlap,
        "catch_up": args.catch_up, "paused": args.paused,
    }  # fmt: skip
    if args.id:
        body["id"] = args.id
    if args.cron:
        body.update(cron=args.cron, timezone=args.timezone)
    else:
        body["every"] = args.every
    view = client.request("POST", "/schedules", body=body)
    if args.json:
        _print_json(view, out)
        return _OK
    out.write(
        f"created {view['id']}: {view['target']} {_when(view)}, next fire {timestamp(view.get('next_fire_ms'))}\n"
    )
    return _OK


def _cmd_schedules_act(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "delete":
        view = client.request("DELETE", f"/schedules/{_quoted(args.id)}")
    else:
        view = client.request("POST", f"/schedules/{_quoted(args.id)}/{args.command}")
    if args.json:
        _print_json(view, out)
        return _OK
    past = {"delete": "deleted", "pause": "paused", "resume": "resumed"}[args.command]
    suffix = "" if args.command != "resume" else f", next fire {timestamp(view.get('next_fire_ms'))}"
    out.write(f"{past} {view['id']}{suffix}\n")
    return _OK


def add_schedule_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    """The ``schedules`` command group, on the CLI's subparsers `groups`."""
    sch = groups.add_parser("schedules", aliases=["sch"], parents=[common], help="cron and interval schedules")
    cmds = sch.add_subparsers(dest="command", required=True)
    cmds.add_parser("ls", aliases=["list"], parents=[common], help="list schedules with their next fire").set_defaults(
        run=_cmd_schedules_ls
    )
    show = cmds.add_parser("show", aliases=["get"], parents=[common], help="one schedule")
    show.add_argument("id")
    show.set_defaults(run=_cmd_schedules_show)
    create = cmds.add_parser(
        "create",
        parents=[common],
        help="start a handler on a cron expression or an interval",
        description="Each fire is an ordinary invocation of TARGET, once per fire time (README: Schedules).",
    )
    create.add_argument("target", type=_target, help="Service/handler or Object/key/handler")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='a cron expression: "*/5 * * * *" (a sixth field counts seconds)')
    when.add_argument("--every", help="an interval: 10s, 500ms, 1h")
    create.add_argument("--timezone", default="UTC", help="the cron expression's time zone (IANA name; default UTC)")
    create.add_argument("--input", type=_json, default=None, help="the JSON input of every fire (default null)")
    overlap_help = "a fire while the previous one runs: skip it, queue it, or allow it (default skip)"
    create.add_argument("--overlap", choices=("skip", "queue", "allow"), default="skip", help=overlap_help)
    catch_up_help = "fires missed while the proxy was down: skip them, or run once for all (default skip)"
    create.add_argument("--catch-up", choices=("skip", "once"), default="skip", help=catch_up_help)
    create.add_argument("--id", help="the schedule id (default: a new sch_... id)")
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.set_defaults(run=_cmd_schedules_create)
    for name, text in (("delete", "delete a schedule"), ("pause", "stop firing"), ("resume", "fire again")):
        aliases = ["rm"] if name == "delete" else []
        sub = cmds.add_parser(name, aliases=aliases, parents=[common], help=text)
        sub.add_argument("id")
        sub.set_defaults(run=_cmd_schedules_act, command=name)


def _cmd_deployments_show(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    view = client.request("GET", f"/deployments/{_quoted(args.id)}")
    if args.json:
        _print_json(view, out)
        return _OK
    pinned = view.get("pinned", {})
    by_status = ", ".join(f"{count} {status}" for status, count in sorted(pinned.get("by_status", {}).items()))
    out.write(f"deployment {view['id']} at {view['uri']} ({view.get('mode', '')} mode)\n")
    out.write(f"services   {', '.join(s['name'] for s in view.get('services', [])) or 'none'}\n")
    out.write(f"pinned     {pinned.get('count', 0)} not completed{': ' + by_status if by_status else ''}\n")
    for invocation_id in pinned.get("ids", []):
        out.write(f"  {invocation_id}\n")
    if not pinned.get("count"):
        out.write("drained: it can be removed (deployments rm)\n")
    return _OK


def _cmd_deployments_update(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    view = client.request("PATCH", f"/deployments/{_quoted(args.id)}", body={"uri": args.uri})
    if args.json:
        _print_json(view, out)
        return _OK
    count = view.get("pinned", {}).get("count", 0)
    out.write(f"{view['id']} is served from {view['uri']} now ({count} pinned invocations go there)\n")
    return _OK


def add_deployment_commands(dep_cmds: Any, common: argparse.ArgumentParser) -> None:
    """``deployments show`` and ``deployments update``, on the deployments group's subparsers."""
    show = dep_cmds.add_parser(
        "show", aliases=["get"], parents=[common], help="a deployment and the invocations pinned to it"
    )
    show.add_argument("id", help="deployment id (dp_...)")
    show.set_defaults(run=_cmd_deployments_show)
    update = dep_cmds.add_parser(
        "update",
        parents=[common],
        help="serve a deployment from another URL (the same code)",
        description="Discovery runs against URI and must announce the same services and handlers.",
    )
    update.add_argument("id", help="deployment id (dp_...)")
    update.add_argument("uri", help="the new base URL, e.g. http://127.0.0.1:9081")
    update.set_defaults(run=_cmd_deployments_update)
