"""Settings: every port, limit, timeout and size of the proxy, from flags or ``PROXY_*`` env vars."""

from __future__ import annotations

import argparse
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["Settings", "parse_duration", "parse_size", "settings_from", "settings_table"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip


def parse_duration(text: str | float) -> float:
    """Seconds from ``"500ms"``, ``"10s"``, ``"2m"``, ``"1h"``, ``"1d"`` or a bare number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 10s, 2m, 1h)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: str | int) -> int:
    """Bytes from ``"10MiB"``, ``"1GiB"``, ``"512k"`` or a bare number of bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 10MiB, 1GiB)")
    unit = (match.group(2) or "b").lower()
    return int(match.group(1)) * _SIZE_UNITS[unit]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every tunable of the proxy. Field docs become ``--help`` and the README's table."""

    host: str = "127.0.0.1"
    """Address the ingress API binds (0.0.0.0 in a container); also the default of --admin-host and --callback-host."""
    ingress_port: int = 8080
    """Port of the ingress API (Restate-compatible paths)."""
    admin_host: str = ""
    """Address the admin API binds; empty: the same as --host. Keep it on 127.0.0.1 unless it needs to be reached."""
    admin_port: int = 9070
    """Port of the admin API (deployments, invocations, state, the web page)."""
    callback_host: str = ""
    """Address the handlers' step-ack callback binds; empty: the same as --host. Handlers must reach it."""
    callback_port: int = 9071
    """Port of the step-ack callback, a listener of its own (the admin port + 1; must differ from the other two)."""
    tls_cert: str = ""
    """PEM certificate chain: with --tls-key, the ingress, admin and callback listeners serve HTTPS only."""
    tls_key: str = ""
    """PEM private key of --tls-cert."""
    handler_ca_file: str = ""
    """PEM CA bundle trusted for https:// handler deployments (empty: the system's CAs)."""
    header_timeout: float = 10.0
    """Seconds a client has to send a whole request head once it starts one (then 408 and closed)."""
    keep_alive_timeout: float = 30.0
    """Seconds an idle connection (a new one, or one between two requests) is kept open."""
    max_connections: int = 4096
    """Most open connections per listener; more are answered 503 and closed (lowered at start to fit the fd limit)."""
    data_dir: str = "./data"
    """Directory of the LMDB environment (one proxy process per directory)."""
    store: str = ""
    """Empty: LMDB in --data-dir. Or PostgreSQL: postgresql://user:password@host:port/db (password never shown)."""
    lease_time: float = 5.0
    """PostgreSQL: seconds a proxy's leases outlive its last heartbeat (then other proxies take its partitions over)."""
    partitions: int = 16
    """PostgreSQL: partitions of a new database, split between the proxies (an existing one keeps its count)."""
    map_size: int = 1024**3
    """Initial LMDB map size in bytes (e.g. 1GiB)."""
    max_map_size: int = 64 * 1024**3
    """The map grows up to this size when full; beyond it writes fail with 507."""
    deployments: tuple[str, ...] = ()
    """Handler service URLs to register at start (repeatable --deployment)."""
    callback_url: str = ""
    """Base URL handlers use to ack steps; default http(s)://{callback host, or 127.0.0.1}:{callback_port}."""
    max_body_bytes: int = 10 * 1024**2
    """Largest ingress request body; larger ones get 413."""
    max_drain_bytes: int = 128 * 1024**2
    """With Connection: close (urllib), a body over --max-body-bytes is read and dropped up to this size, then 413."""
    max_header_bytes: int = 64 * 1024
    """Largest request head (all header names and values) on the ingress and admin APIs; larger ones get 431."""
    max_header_count: int = 100
    """Most request headers on the ingress and admin APIs; more get 431."""
    max_concurrent_requests: int = 1024
    """Most ingress requests in flight (calls waiting for their result count); more get 503 with Retry-After."""
    max_inflight_body_bytes: int = 256 * 1024**2
    """Most bytes of ingress request bodies held at once (a call holds its body until it answers); then 503."""
    max_write_queue: int = 10_000
    """Ingress requests get 503 with Retry-After while more writes than this wait for the writer (acks never do)."""
    max_delay: float = 3650 * 86400.0
    """Longest ?delay= of a send (about ten years); longer ones get 400."""
    max_entry_bytes: int = 10 * 1024**2
    """Largest journal entry a handler may append; larger ones get 413."""
    max_response_bytes: int = 32 * 1024**2
    """Largest handler response the invoker reads; a larger one pauses the invocation (said in its last failure)."""
    max_journal_entries: int = 100_000
    """Most entries one invocation's journal may hold."""
    body_read_timeout: float = 30.0
    """Seconds a client has to send its whole request body (408 after)."""
    inactivity_timeout: float = 60.0
    """An attempt with no ack or response for this long is abandoned and retried."""
    connect_timeout: float = 5.0
    """Seconds to connect to a handler service."""
    max_handler_connections: int = 512
    """Most concurrent requests to one handler service (httpx transport: to all of them); others wait."""
    retry_initial_interval: float = 0.5
    """First retry delay of a failed attempt, in seconds."""
    retry_factor: float = 2.0
    """Each retry delay is the previous one times this."""
    retry_max_interval: float = 60.0
    """Retry delays never exceed this, in seconds."""
    retry_max_attempts: int = 70
    """After this many failed attempts the invocation is paused (0 = retry forever)."""
    retention: float = 86400.0
    """Seconds a completed invocation, its journal and idempotency key are kept (then purged)."""
    sweep_interval: float = 60.0
    """Seconds between two runs of the retention sweeper."""
    schedule_grace: float = 1.0
    """Seconds a schedule's fire may be late and still be on time; later (the proxy was down), its catch-up applies."""
    resident_map_limit: int = 32 * 1024**2
    """Most LMDB file pages kept mapped (in the RSS); past it they are unmapped but stay cached (0 = no limit)."""
    resident_check_interval: float = 2.0
    """Seconds between two checks of the mapped LMDB pages against --resident-map-limit."""
    discovery_timeout: float = 10.0
    """Seconds to wait for a handler service's /discovery answer."""
    transport: str = "aiohttp"
    """Client for the proxy-to-handler hop: aiohttp (fast) or httpx."""
    log_level: str = "info"
    """Log level: debug, info, warning, error."""
    log_format: str = "json"
    """Log lines as json (one object per line, with invocation_id) or text."""
    tracing: bool = False
    """Export OpenTelemetry traces over OTLP (OTEL_* variables; also on when OTEL_EXPORTER_OTLP_ENDPOINT is set)."""
    signing_key_file: str = ""
    """PEM Ed25519 key signing requests to handlers (re-read when replaced); empty: made in --data-dir or the store."""
    signing_validity: float = 60.0
    """Seconds a request signature is valid on either side of its issue time (a replay later than this gets 401)."""
    admin_token_file: str = ""
    """File of admin bearer tokens, one a line (# comments; two in a rotation); or the token in PROXY_ADMIN_TOKEN."""
    admin_insecure: bool = False
    """Allow the admin API on a non-loopback address without a token (otherwise the proxy refuses to start)."""
    ingress_keys_file: str = ""
    """File of ingress API keys, one a line (# comments): every ingress call then needs one (off when empty)."""
    credentials_reload_interval: float = 5.0
    """Seconds between checks of --admin-token-file and --ingress-keys-file for edits (0: on SIGHUP only)."""

    def __post_init__(self) -> None:
        if self.store and not self.store.startswith(("postgresql://", "postgres://")):
            raise ValueError("store must be empty (LMDB in data_dir) or a postgresql:// URL")
        if not 0.5 <= self.lease_time <= 600:
            raise ValueError("lease_time must be 0.5 to 600 seconds")
        if not 1 <= self.partitions <= 4096:
            raise ValueError("partitions must be 1 to 4096")
        if self.transport not in ("aiohttp", "httpx"):
            raise ValueError("transport must be 'aiohttp' or 'httpx'")
        if self.log_format not in ("json", "text"):
            raise ValueError("log_format must be 'json' or 'text'")
        if self.resident_map_limit < 0:
            raise ValueError("resident_map_limit must be >= 0")
        if self.resident_check_interval <= 0:
            raise ValueError("resident_check_interval must be > 0")
        if self.schedule_grace < 0:
            raise ValueError("schedule_grace must be >= 0")
        if self.map_size > self.max_map_size:
            raise ValueError("map_size must not exceed max_map_size")
        if len({self.ingress_port, self.admin_port, self.callback_port}) != 3:
            raise ValueError("ingress_port, admin_port and callback_port must all differ")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.header_timeout <= 0 or self.keep_alive_timeout <= 0:
            raise ValueError("header_timeout and keep_alive_timeout must be > 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if min(self.max_header_count, self.max_concurrent_requests, self.max_write_queue) < 1:
            raise ValueError("max_header_count, max_concurrent_requests and max_write_queue must be >= 1")
        if self.max_header_bytes < 1024 or self.max_delay <= 0:
            raise ValueError("max_header_bytes must be >= 1024 and max_delay > 0")
        if not 1 <= self.signing_validity <= 3600:
            raise ValueError("signing_validity must be between 1s and 1h")

    @property
    def effective_admin_host(self) -> str:
        """The address the admin API binds."""
        return self.admin_host or self.host

    @property
    def effective_callback_host(self) -> str:
        """The address the step-ack callback binds."""
        return self.callback_host or self.host

    @property
    def effective_callback_url(self) -> str:
        """The callback base URL sent to handlers: the callback listener, https when TLS is on."""
        if self.callback_url:
            return self.callback_url
        host = self.effective_callback_host
        # A wildcard bind is not an address to connect to; the loopback reaches it on this machine.
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.callback_port}"


_SIZE_FIELDS = {
    "map_size", "max_map_size", "max_body_bytes", "max_entry_bytes", "max_response_bytes", "resident_map_limit",
    "max_drain_bytes", "max_header_bytes", "max_inflight_body_bytes",
}  # fmt: skip


def _field_docs() -> dict[str, str]:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Settings))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, after in itertools.pairwise(body):
        is_field = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if is_field and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = str(after.value.value)
    return docs


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _bool(name: str, value: Any) -> bool:
    """A bool setting from ``1/true/yes/on`` or ``0/false/no/off`` (any case), or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r} (use true or false)")


def _coerce(name: str, value: Any) -> Any:
    field_type = Settings.__annotations__[name]
    if name in _SIZE_FIELDS:
        return parse_size(value)
    if field_type == "float":
        return parse_duration(value)
    if field_type == "int":
        return int(value)
    if field_type == "bool":
        return _bool(name, value)
    if field_type.startswith("tuple"):
        if isinstance(value, str):
            return tuple(v for v in value.split(",") if v)
        return tuple(value)
    return value


_SUBCOMMANDS = """\
subcommands (each with its own --help, e.g. python -m proxy invocations --help):
  invocations (inv)   list, show, cancel, kill, pause, resume and purge invocations (admin API)
  services (svc)      list the registered services and their handlers
  deployments (dep)   list, register, show (pinned invocations), update and remove deployments
  schedules (sch)     list, show, create, pause, resume and delete cron and interval schedules
  identity            the public key that signs requests to handlers; new-key FILE for a rotation
  dev HANDLER         dev mode: a proxy on a temporary data dir and HANDLER, reloaded on change
"""


def settings_from(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``PROXY_*`` environment variables, overridden by command-line flags."""
    env = os.environ if env is None else env
    docs = _field_docs()
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        usage="python -m proxy [flags]\n"
        "       python -m proxy {invocations,services,deployments,schedules,identity,dev} ...",
        description="durable-proxy server: the ingress and admin APIs over one store (LMDB in --data-dir,\n"
        "or PostgreSQL with --store).\n"
        "Every flag can also be set by its PROXY_* environment variable (--ingress-port: PROXY_INGRESS_PORT).",
        epilog=_SUBCOMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name in Settings.__struct_fields__:
        flag = "--" + ("deployment" if name == "deployments" else name.replace("_", "-"))
        extra: dict[str, Any] = {"action": "append"} if name == "deployments" else {}
        if Settings.__annotations__[name] == "bool":
            extra = {"nargs": "?", "const": "true", "metavar": "BOOL"}  # a bare --flag means true
        parser.add_argument(flag, dest=name, default=None, help=docs.get(name, ""), **extra)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        raw = env.get("PROXY_" + name.upper())
        flag_value = getattr(args, name)
        if flag_value is not None:
            raw = flag_value
        if raw is not None:
            try:
                values[name] = _coerce(name, raw)
            except ValueError as exc:
                parser.error(f"{name}: {exc}")
    try:
        return Settings(**values)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def settings_table() -> str:
    """The configuration table for the README (markdown), generated from Settings."""
    docs = _field_docs()
    defaults = Settings()
    rows = ["| flag | env | default | meaning |", "| --- | --- | --- | --- |"]
    for name in Settings.__struct_fields__:
        flag = "--" + ("deployment" if name == "deployments" else name.replace("_", "-"))
        default = getattr(defaults, name)
        rows.append(f"| `{flag}` | `PROXY_{name.upper()}` | `{default!r}` | {docs.get(name, '')} |")
    return "\n".join(rows)
