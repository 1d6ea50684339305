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
    """Address both HTTP servers bind (use 0.0.0.0 in a container)."""
    ingress_port: int = 8080
    """Port of the ingress API (Restate-compatible paths)."""
    admin_port: int = 9070
    """Port of the admin API and of the handlers' step-ack callback."""
    data_dir: str = "./data"
    """Directory of the LMDB environment (one proxy process per directory)."""
    store: str = ""
    """Empty: LMDB in --data-dir. Or PostgreSQL: postgresql://user:password@host:port/db (password never shown)."""
    map_size: int = 1024**3
    """Initial LMDB map size in bytes (e.g. 1GiB)."""
    max_map_size: int = 64 * 1024**3
    """The map grows up to this size when full; beyond it writes fail with 507."""
    deployments: tuple[str, ...] = ()
    """Handler service URLs to register at start (repeatable --deployment)."""
    callback_url: str = ""
    """Base URL handlers use to ack steps; default http://127.0.0.1:{admin_port}."""
    max_body_bytes: int = 10 * 1024**2
    """Largest ingress request body; larger ones get 413."""
    max_entry_bytes: int = 10 * 1024**2
    """Largest journal entry a handler may append; larger ones get 413."""
    max_response_bytes: int = 32 * 1024**2
    """Largest handler response the invoker reads; larger ones fail the attempt."""
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

    def __post_init__(self) -> None:
        if self.store and not self.store.startswith(("postgresql://", "postgres://")):
            raise ValueError("store must be empty (LMDB in data_dir) or a postgresql:// URL")
        if self.transport not in ("aiohttp", "httpx"):
            raise ValueError("transport must be 'aiohttp' or 'httpx'")
        if self.log_format not in ("json", "text"):
            raise ValueError("log_format must be 'json' or 'text'")
        if self.resident_map_limit < 0:
            raise ValueError("resident_map_limit must be >= 0")
        if self.resident_check_interval <= 0:
            raise ValueError("resident_check_interval must be > 0")
        if self.map_size > self.max_map_size:
            raise ValueError("map_size must not exceed max_map_size")

    @property
    def effective_callback_url(self) -> str:
        """The callback base URL sent to handlers."""
        return self.callback_url or f"http://127.0.0.1:{self.admin_port}"


_SIZE_FIELDS = {
    "map_size", "max_map_size", "max_body_bytes", "max_entry_bytes", "max_response_bytes", "resident_map_limit",
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


def _coerce(name: str, value: Any) -> Any:
    field_type = Settings.__annotations__[name]
    if name in _SIZE_FIELDS:
        return parse_size(value)
    if field_type == "float":
        return parse_duration(value)
    if field_type == "int":
        return int(value)
    if field_type.startswith("tuple"):
        if isinstance(value, str):
            return tuple(v for v in value.split(",") if v)
        return tuple(value)
    return value


_SUBCOMMANDS = """\
subcommands (each with its own --help, e.g. python -m proxy invocations --help):
  invocations (inv)   list, show, cancel, kill, pause, resume and purge invocations (admin API)
  services (svc)      list the registered services and their handlers
  deployments (dep)   list and register handler services (deployments)
  dev HANDLER         dev mode: a proxy on a temporary data dir and HANDLER, reloaded on change
"""


def settings_from(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``PROXY_*`` environment variables, overridden by command-line flags."""
    env = os.environ if env is None else env
    docs = _field_docs()
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        usage="python -m proxy [flags]\n       python -m proxy {invocations,services,deployments,dev} ...",
        description="durable-proxy server: the ingress and admin APIs over one store (LMDB in --data-dir,\n"
        "or PostgreSQL with --store).\n"
        "Every flag can also be set by its PROXY_* environment variable (--ingress-port: PROXY_INGRESS_PORT).",
        epilog=_SUBCOMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name in Settings.__struct_fields__:
        flag = "--" + ("deployment" if name == "deployments" else name.replace("_", "-"))
        extra: dict[str, Any] = {"action": "append"} if name == "deployments" else {}
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
