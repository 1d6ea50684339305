"""``python -m proxy invocations|services|deployments|schedules|identity ...``: an operator CLI over the admin API.

Examples::

    python -m proxy invocations ls                      # everything not completed yet, newest first
    python -m proxy invocations ls --all --limit 20     # completed ones too
    python -m proxy invocations ls --all --oldest-first # in creation order
    python -m proxy invocations ls --status paused --service OrderFulfillment
    python -m proxy invocations show inv_06h...         # status, failure and the numbered journal
    python -m proxy invocations cancel inv_06h...       # prints the new status
    python -m proxy invocations cancel --service Sleeper --handler nap   # bulk
    python -m proxy invocations resume inv_06h... --latest
    python -m proxy services ls
    python -m proxy deployments add http://127.0.0.1:9080
    python -m proxy deployments rm dp_4f...             # or its URL; --force if invocations are pinned
    python -m proxy identity                            # the public key handlers put in identity_keys
    python -m proxy identity new-key next-key.pem       # a new signing key (0600) for a rotation
    python -m proxy deployments show dp_4f...           # how many invocations are pinned to it, by status
    python -m proxy deployments update dp_4f... http://127.0.0.1:9081   # the same code, served elsewhere
    python -m proxy schedules create Greeter/greet --cron "*/5 * * * *" --input '"Ada"'
    python -m proxy schedules ls                        # with their next fire times
    python -m proxy schedules pause sch_1a2b...         # resume, delete

The admin URL comes from ``--admin`` or ``PROXY_ADMIN_URL`` (default ``http://127.0.0.1:9070``), the
admin token (sent as ``Authorization: Bearer``) from ``--admin-token-file``, ``PROXY_ADMIN_TOKEN_FILE``
or ``PROXY_ADMIN_TOKEN``, the same file or variable the proxy reads (its first token).
Exit codes: 0 ok, 1 the API answered an error (or cannot be reached), 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import httpx

from durable_core.records import ACTIONS, STATUSES
from proxy.credentials import ADMIN_TOKEN_ENV, CredentialsError, read_keys
from proxy.tools.cli_lifecycle import add_deployment_commands, add_schedule_commands
from proxy.tools.cli_limits import add_limit_commands
from proxy.tools.render import age_of, format_table, info_line, proxy_command, render_invocation, shorten, timestamp

__all__ = [
    "ACTIVE_STATUSES",
    "COMMANDS",
    "DEFAULT_ADMIN_URL",
    "EXIT_API",
    "EXIT_OK",
    "EXIT_USAGE",
    "AdminClient",
    "ApiError",
    "main",
]

DEFAULT_ADMIN_URL = "http://127.0.0.1:9070"
#: First words of argv that `python -m proxy` hands to this CLI instead of starting the server.
COMMANDS = ("invocations", "services", "deployments", "schedules", "identity")
EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
#: Statuses of invocations that are not completed (what ``ls`` shows by default).
ACTIVE_STATUSES = tuple(s for s in STATUSES if s != "completed")
_ALL_STATUSES = STATUSES
_ACTIONS = ACTIONS
_PAST = {"cancel": "cancelled", "kill": "killed", "pause": "paused", "resume": "resumed", "purge": "purged"}


class ApiError(Exception):
    """The admin API answered an error, or could not be reached (exit code 1)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        if self.status:
            return f"{self.status} {self.code}: {self.message}" if self.code else f"{self.status}: {self.message}"
        return self.message


class _UsageError(Exception):
    """A bad combination of arguments (exit code 2)."""


class AdminClient:
    """A thin synchronous client of the admin API that raises `ApiError` on any failure."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else None
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, headers=headers)
        self._has_token = bool(token)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, params: Mapping[str, str | int] | None = None, body: Any = None) -> Any:
        """Send one request; return the decoded JSON body (None when empty)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=body)
        except httpx.TimeoutException as exc:
            raise ApiError(f"the admin API at {self.base_url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the admin API at {self.base_url}: {exc}") from exc
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.status_code == 401:
            hint = "the admin token was refused" if self._has_token else "the admin API needs a token"
            raise ApiError(
                f"{hint}: give it with --admin-token-file FILE, PROXY_ADMIN_TOKEN_FILE or {ADMIN_TOKEN_ENV}",
                401,
                "unauthorized",
            )
        if response.status_code >= 400:
            if isinstance(data, dict) and "message" in data:
                raise ApiError(str(data["message"]), response.status_code, str(data.get("error", "")))
            raise ApiError(response.text.strip() or response.reason_phrase, response.status_code)
        if data is None and response.content:
            raise ApiError(f"{method} {path}: the answer is not JSON: {response.text[:200]!r}")
        return data

    def list_invocations(
        self,
        status: str | None,
        service: str | None,
        handler: str | None,
        limit: int,
        after: str | None,
        before: str | None = None,
        order: str = "asc",
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``GET /invocations``: the views and the cursor of the next page (`order`
        asc: oldest first from `after`; desc: newest first from `before`)."""
        params: dict[str, str | int] = {"limit": limit, "order": order}
        fields = (("status", status), ("service", service), ("handler", handler), ("after", after), ("before", before))
        for name, value in fields:
            if value is not None:
                params[name] = value
        data = self.request("GET", "/invocations", params)
        return list(data["invocations"]), data.get("next")


# -- commands -----------------------------------------------------------------------------------


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _cmd_ls(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.all and args.status:
        raise _UsageError("use either --all or --status")
    # Newest first unless asked (an --after cursor pages forward in creation order).
    oldest_first = bool(args.oldest_first or args.after)
    if oldest_first and args.before:
        raise _UsageError("--before pages newest first: not with --after or --oldest-first")
    order = "asc" if oldest_first else "desc"
    if args.status:
        statuses: list[str | None] = list(args.status)
    elif args.all:
        statuses = [None]
    else:
        statuses = list(ACTIVE_STATUSES)
    # One query per status (each pages the proxy's small index of active invocations), merged in
    # id order (creation order for ids the proxy made: a call's or send's child has a hash id).
    merged: dict[str, dict[str, Any]] = {}
    more = False
    for status in statuses:
        page, cursor = client.list_invocations(
            status, args.service, args.handler, args.limit, args.after, before=args.before, order=order
        )
        more = more or cursor is not None
        for view in page:
            merged[view["id"]] = view
    views = [merged[k] for k in sorted(merged, reverse=not oldest_first)]
    if len(views) > args.limit:
        views, more = views[: args.limit], True
    next_cursor = views[-1]["id"] if more and views else None
    if args.json:
        _print_json({"invocations": views, "next": next_cursor}, out)
        return EXIT_OK
    now_ms = int(time.time() * 1000)
    rows = [
        [
            view["id"],
            view.get("target", ""),
            view.get("status", ""),
            f"{view.get('attempt', 0)}/{view.get('retry_count', 0)}",
            age_of(view, now_ms),
            shorten(info_line(view, now_ms), args.width),
        ]
        for view in views
    ]
    if rows:
        out.write(format_table(["ID", "TARGET", "STATUS", "ATTEMPT/RETRIES", "AGE", "INFO"], rows) + "\n")
    else:
        what = "invocations" if args.all or args.status else "invocations in flight (use --all to see completed ones)"
        out.write(f"no {what}\n")
    if next_cursor:
        out.write(f"more: add {'--after' if oldest_first else '--before'} {next_cursor}\n")
    return EXIT_OK


def _cmd_show(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    view = client.request("GET", f"/invocations/{args.id}")
    if args.json:
        _print_json(view, out)
    else:
        out.write(render_invocation(view, int(time.time() * 1000)) + "\n")
    return EXIT_OK


def _cmd_action(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    action: str = args.command
    params: dict[str, str | int] = {}
    if getattr(args, "latest", False):
        params["deployment"] = "latest"
    if args.ids and (args.service or args.handler or args.status):
        raise _UsageError("give invocation ids or --service/--handler/--status filters, not both")
    if not args.ids:
        if not (args.service or args.handler):
            raise _UsageError(f"{action} needs invocation ids, or --service (and optionally --handler) for a bulk one")
        if params:
            raise _UsageError("--latest works with invocation ids only")
        for name in ("service", "handler", "status"):
            if getattr(args, name):
                params[name] = getattr(args, name)
        result = client.request("POST", f"/invocations/bulk/{action}", params)
        if args.json:
            _print_json(result, out)
            return EXIT_OK
        scope = args.service or "*"
        if args.handler:
            scope += f"/{args.handler}"
        count = int(result.get("count", 0))
        out.write(f"{_PAST[action]} {count} invocation{'s' if count != 1 else ''} of {scope}\n")
        for inv_id in result.get("ids", []):
            out.write(f"  {inv_id}\n")
        skipped = result.get("skipped", [])
        if skipped:
            out.write(f"skipped {len(skipped)}:\n")
            for item in skipped:
                out.write(f"  {item.get('id')}: {item.get('reason')}\n")
        return EXIT_OK
    code = EXIT_OK
    results = []
    for inv_id in args.ids:
        try:
            view = client.request("PATCH", f"/invocations/{inv_id}/{action}", params)
        except ApiError as exc:
            if exc.status == 0:
                raise
            print(f"error: {action} {inv_id}: {exc}", file=sys.stderr)
            code = EXIT_API
            continue
        results.append(view)
        if not args.json:
            status = str(view.get("status"))
            if action == "cancel" and status != "completed":
                status += " (cancelling: it completes once the handler has unwound)"
            out.write(f"{inv_id}  {status}\n")
    if args.json:
        _print_json(results if len(args.ids) > 1 else (results[0] if results else None), out)
    return code


def _handlers(handlers: Sequence[Mapping[str, Any]]) -> str:
    """Handler names, with their type (Restate's ``ty``: Exclusive, Shared, Workflow) where they have one."""
    return ", ".join(h["name"] + (f" ({str(h['ty']).lower()})" if h.get("ty") else "") for h in handlers)


#: Restate's service ``ty`` in the proxy's words.
_SERVICE_TYPES = {"Service": "service", "VirtualObject": "object", "Workflow": "workflow"}


def _service_type(svc: Mapping[str, Any]) -> str:
    """A service's type as the proxy names it (``service``, ``object``, ``workflow``)."""
    ty = str(svc.get("ty", ""))
    return _SERVICE_TYPES.get(ty, ty)


def _registered(created_at: Any) -> str:
    """Restate's ``created_at`` (RFC 3339) shown as the other timestamps of the CLI."""
    try:
        when = datetime.datetime.fromisoformat(str(created_at).replace("Z", "+00:00"))
    except ValueError:
        return str(created_at or "")
    return timestamp(int(when.timestamp() * 1000))


def _service_names(services: Sequence[Any]) -> str:
    """A deployment's services: Restate's ``{name, revision}`` objects (or plain names)."""
    return ", ".join(s["name"] if isinstance(s, Mapping) else str(s) for s in services)


def _cmd_services(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    services = client.request("GET", "/services")["services"]
    deployments = {d["id"]: d for d in client.request("GET", "/deployments")["deployments"]}
    if args.json:
        _print_json({"services": services}, out)
        return EXIT_OK
    if not services:
        out.write(f"no services registered (add one: {proxy_command()} deployments add http://127.0.0.1:9080)\n")
        return EXIT_OK
    rows = []
    for svc in sorted(services, key=lambda s: s["name"]):
        dep = deployments.get(svc.get("deployment_id", ""), {})
        uri = dep.get("uri", svc.get("deployment_id", ""))
        rows.append([svc["name"], _service_type(svc), uri, _handlers(svc.get("handlers", []))])
    out.write(format_table(["NAME", "TYPE", "DEPLOYMENT", "HANDLERS"], rows) + "\n")
    return EXIT_OK


def _cmd_deployments_ls(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    deployments = client.request("GET", "/deployments")["deployments"]
    if args.json:
        _print_json({"deployments": deployments}, out)
        return EXIT_OK
    if not deployments:
        out.write("no deployments\n")
        return EXIT_OK
    rows = [
        [d["id"], d["uri"], d.get("mode", ""), _registered(d.get("created_at")), _service_names(d.get("services", []))]
        for d in deployments
    ]
    out.write(format_table(["ID", "URI", "MODE", "REGISTERED", "SERVICES"], rows) + "\n")
    return EXIT_OK


def _cmd_identity(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    view = client.request("GET", "/identity")
    if args.json:
        _print_json(view, out)
        return EXIT_OK
    out.write(f"{view['public_key']}\n")
    key_file = f" {view['key_file']}" if view.get("key_file") else ""
    out.write(
        f"signs requests to handlers with {view.get('algorithm', 'Ed25519')}, scheme {view.get('signature_scheme')}, "
        f"valid {view.get('validity_seconds')}s; key from {view.get('source')}{key_file}\n"
    )
    return EXIT_OK


def _cmd_identity_new_key(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    # Local: no admin API involved, the private key never travels.
    from pathlib import Path

    from proxy.engine.identity import load_private_key, new_private_key_pem, public_key_of, write_key_file

    pem = new_private_key_pem()
    try:
        write_key_file(Path(args.file), pem)
    except FileExistsError:
        raise _UsageError(f"{args.file} exists: a key file is never overwritten") from None
    except OSError as exc:
        raise _UsageError(f"cannot create {args.file}: {exc.strerror}") from None
    public_key = public_key_of(load_private_key(pem, args.file))
    if args.json:
        _print_json({"public_key": public_key, "key_file": args.file}, out)
    else:
        out.write(f"{public_key}\nwrote the private key to {args.file} (mode 0600)\n")
    return EXIT_OK


def _cmd_deployments_add(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    dep = client.request("POST", "/deployments", body={"uri": args.uri})
    if args.json:
        _print_json(dep, out)
        return EXIT_OK
    out.write(f"registered {dep['id']} at {dep['uri']} ({dep.get('mode', '')} mode)\n")
    rows = [[s["name"], _service_type(s), _handlers(s.get("handlers", []))] for s in dep.get("services", [])]
    if rows:
        out.write(format_table(["SERVICE", "TYPE", "HANDLERS"], rows) + "\n")
    return EXIT_OK


def _cmd_deployments_rm(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    dep_id: str = args.id
    if dep_id.startswith(("http://", "https://")):
        uri = dep_id.rstrip("/")
        found = [d for d in client.request("GET", "/deployments")["deployments"] if d["uri"] == uri]
        if not found:
            raise ApiError(f"no deployment is registered at {uri} (see: {proxy_command()} deployments ls)", 404)
        dep_id = found[0]["id"]
    params: dict[str, str | int] = {"force": "true"} if args.force else {}
    try:
        result = client.request("DELETE", f"/deployments/{urllib.parse.quote(dep_id, safe='')}", params)
    except ApiError as exc:
        if exc.status != 409:
            raise
        print(f"error: {exc}", file=sys.stderr)
        print("hint: add --force to remove it anyway", file=sys.stderr)
        return EXIT_API
    if args.json:
        _print_json(result, out)
        return EXIT_OK
    out.write(f"removed {result['id']} at {result['uri']}\n")
    removed = result.get("removed_services", [])
    out.write(f"services removed: {', '.join(removed) or 'none'}\n")
    for svc in result.get("moved_services", []):
        out.write(f"service {svc['name']} is now served by {svc['deployment_id']}\n")
    pinned = result.get("pinned_invocations", [])
    if pinned:
        out.write(
            f"{len(pinned)} invocation{'s' if len(pinned) != 1 else ''} not completed were pinned to it: their next "
            "attempts go to the latest deployment of their service, or fail with 503 if there is none\n"
        )
    return EXIT_OK


# -- argument parsing ---------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    # SUPPRESS defaults: a flag given at any level (before or after the subcommand) is kept.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin",
        default=argparse.SUPPRESS,
        help=f"admin API base URL (env PROXY_ADMIN_URL, default {DEFAULT_ADMIN_URL})",
    )
    common.add_argument(
        "--admin-token-file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"file holding the admin token (env PROXY_ADMIN_TOKEN_FILE; or the token itself in {ADMIN_TOKEN_ENV})",
    )
    common.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait for each answer (default 30)"
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON")
    return common


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be between 1 and 1000")
    return value


def _parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        parents=[common],
        description="Inspect and control a running durable-proxy through its admin API. "
        "Without a command, `python -m proxy [flags]` starts the server.",
        epilog="Exit codes: 0 ok, 1 API error, 2 usage error.",
    )
    groups = parser.add_subparsers(
        dest="group", required=True, metavar="{invocations,services,deployments,schedules,identity}"
    )

    inv = groups.add_parser(
        "invocations", aliases=["inv"], parents=[common], help="list, inspect and control invocations"
    )
    inv_cmds = inv.add_subparsers(dest="command", required=True)
    ls = inv_cmds.add_parser(
        "ls", aliases=["list"], parents=[common], help="list invocations (not completed ones unless --all/--status)"
    )
    ls.add_argument("--all", "-a", action="store_true", help="include completed invocations")
    ls.add_argument("--status", action="append", choices=_ALL_STATUSES, help="only this status (repeatable)")
    ls.add_argument("--service", help="only invocations of this service")
    ls.add_argument("--handler", help="only invocations of this handler")
    ls.add_argument("--limit", type=_positive, default=50, help="rows per page, 1..1000 (default 50)")
    ls.add_argument(
        "--before", help="page cursor: list invocations older than this id, newest first (printed as `more:`)"
    )
    ls.add_argument("--after", help="page cursor: list invocations newer than this id, oldest first")
    ls.add_argument("--oldest-first", action="store_true", help="list in creation order (default: newest first)")
    ls.add_argument("--width", type=int, default=70, help="max width of the INFO column (default 70)")
    ls.set_defaults(run=_cmd_ls)
    show = inv_cmds.add_parser("show", aliases=["get"], parents=[common], help="one invocation with its journal")
    show.add_argument("id", help="invocation id (inv_...)")
    show.set_defaults(run=_cmd_show)
    for action in _ACTIONS:
        sub = inv_cmds.add_parser(
            action,
            parents=[common],
            help=f"{action} invocations by id, or in bulk by --service/--handler",
            description=f"{action.capitalize()} the given invocations, or every matching one with --service "
            "(and optionally --handler/--status).",
        )
        sub.add_argument("ids", nargs="*", metavar="ID", help="invocation ids (inv_...)")
        sub.add_argument("--service", help="bulk: every invocation of this service")
        sub.add_argument("--handler", help="bulk: only this handler")
        sub.add_argument("--status", choices=_ALL_STATUSES, help="bulk: only invocations in this status")
        if action == "resume":
            sub.add_argument("--latest", action="store_true", help="move it to the latest deployment of its service")
        sub.set_defaults(run=_cmd_action, command=action)

    svc = groups.add_parser("services", aliases=["svc"], parents=[common], help="registered services")
    svc_cmds = svc.add_subparsers(dest="command", required=True)
    svc_cmds.add_parser("ls", aliases=["list"], parents=[common], help="list services").set_defaults(run=_cmd_services)
    add_limit_commands(svc_cmds, common)

    dep = groups.add_parser("deployments", aliases=["dep"], parents=[common], help="handler deployments")
    dep_cmds = dep.add_subparsers(dest="command", required=True)
    dep_cmds.add_parser("ls", aliases=["list"], parents=[common], help="list deployments").set_defaults(
        run=_cmd_deployments_ls
    )
    add = dep_cmds.add_parser("add", aliases=["register"], parents=[common], help="register a handler service URL")
    add.add_argument("uri", help="base URL of the handler service, e.g. http://127.0.0.1:9080")
    add.set_defaults(run=_cmd_deployments_add)
    rm = dep_cmds.add_parser(
        "rm",
        aliases=["remove", "delete"],
        parents=[common],
        help="remove a deployment and the services only it serves",
        description="Remove a deployment (by id, or by its URL) and the services no other deployment serves. "
        "Refused while invocations not completed are pinned to it, unless --force.",
    )
    rm.add_argument("id", help="deployment id (dp_...) or its URL")
    rm.add_argument("--force", action="store_true", help="remove it even if invocations not completed are pinned to it")
    rm.set_defaults(run=_cmd_deployments_rm)
    add_deployment_commands(dep_cmds, common)
    add_schedule_commands(groups, common)

    ident = groups.add_parser(
        "identity", parents=[common], help="the public key that signs requests to handlers; new signing keys"
    )
    ident.set_defaults(run=_cmd_identity)
    ident_cmds = ident.add_subparsers(dest="command")
    ident_cmds.add_parser("show", parents=[common], help="the proxy's public key (the default)").set_defaults(
        run=_cmd_identity
    )
    new_key = ident_cmds.add_parser(
        "new-key",
        parents=[common],
        help="write a new Ed25519 signing key file (0600) and print its public key",
        description="Write a new private key (PEM, PKCS#8) to FILE, readable by its owner only, and print its "
        "public key: add that to the handlers' identity_keys, then give FILE to the proxy (--signing-key-file).",
    )
    new_key.add_argument("file", help="the key file to create (never overwritten)")
    new_key.set_defaults(run=_cmd_identity_new_key)
    return parser


def _admin_token(token_file: str | None) -> str | None:
    """The admin token: the first in ``--admin-token-file``, else in ``PROXY_ADMIN_TOKEN_FILE``, else
    ``PROXY_ADMIN_TOKEN``, else None.

    Raises:
        CredentialsError: the file cannot be read or holds no valid token.
    """
    path = token_file or os.environ.get("PROXY_ADMIN_TOKEN_FILE")
    if path:
        tokens = read_keys(path)
        if not tokens:
            raise CredentialsError(f"{path} holds no token (one a line, # for comments)")
        return tokens[0]
    return os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 API error, 2 usage error)."""
    out = out or sys.stdout
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    admin = getattr(args, "admin", None) or os.environ.get("PROXY_ADMIN_URL") or DEFAULT_ADMIN_URL
    if not admin.startswith(("http://", "https://")):
        print(f"error: --admin must be an http:// or https:// URL, got {admin!r}", file=sys.stderr)
        return EXIT_USAGE
    args.json = getattr(args, "json", False)
    try:
        token = _admin_token(getattr(args, "admin_token_file", None))
    except CredentialsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run: Callable[[AdminClient, argparse.Namespace, TextIO], int] = args.run
    try:
        with AdminClient(admin, timeout=getattr(args, "timeout", 30.0), token=token) as client:
            return run(client, args, out)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_API
    except BrokenPipeError:  # `... | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
