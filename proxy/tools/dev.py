"""``python -m proxy dev examples/orders.py``: the proxy and a reloading handler service, one command.

Dev mode runs the proxy in this process over a temporary data dir (deleted on exit unless
``--data-dir`` is given) and the handler app as a ``uvicorn --reload`` subprocess, so editing the
handler's code restarts it. The handler is registered as a deployment (by the runtime's
background registration at start) and registered again whenever its ``/discovery`` answer no
longer matches what the proxy knows (checked every second: a reload may add services or
handlers). Ctrl-C or SIGTERM stops the servers, the handler and removes the temporary data dir.

An edit that breaks the handler's import (a syntax error, a bad import) does not leave a dead
port behind: uvicorn runs `handler_app`, which imports the user's app and, if that fails, serves
an app answering every request 503 with the import error instead. Attempts then fail at once
with that error as the invocation's last failure, the dev terminal says what is wrong, and
dev mode's short retries (every second at most, without limit; an attempt silent for 5 s is
abandoned) run the invocation again as soon as the fixed file is reloaded.

The argument is a file (``examples/orders.py``, ``path/to/handlers.py``), a module
(``examples.orders``) or ``module:attr``. Without an attribute the app is the module's
``application`` (or ``app``) built by ``handlers_sdk.app(...)``, else its only `HandlerApp`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from proxy.credentials import ADMIN_TOKEN_ENV
from proxy.tools.render import proxy_command

__all__ = [
    "APP_ENV",
    "DEV_INACTIVITY_TIMEOUT",
    "DEV_RETRY_INITIAL_INTERVAL",
    "DEV_RETRY_MAX_INTERVAL",
    "IMPORT_ERROR_HEADER",
    "DevOptions",
    "HandlerTarget",
    "UsageError",
    "build_parser",
    "handler_app",
    "main",
    "resolve_target",
    "sample_input",
    "stop_process_group",
]

_EXIT_OK = 0
_EXIT_FAILED = 1
_EXIT_USAGE = 2
_POLL_SECONDS = 1.0
#: The environment variable that tells `handler_app` (in the uvicorn worker) which app to import.
APP_ENV = "DURABLE_PROXY_DEV_APP"
#: The header marking `handler_app`'s 503 answers: the user's app failed to import.
IMPORT_ERROR_HEADER = "x-durable-proxy-dev"
#: Dev mode's settings: short loops, so a failure shows and a fix takes effect within seconds.
DEV_INACTIVITY_TIMEOUT = 5.0
DEV_RETRY_INITIAL_INTERVAL = 0.25
DEV_RETRY_MAX_INTERVAL = 1.0
#: Consecutive /discovery polls that time out before the supervisor says the handler hangs.
_SILENT_POLLS = 3


class UsageError(Exception):
    """A bad argument: the app cannot be found or imported, or a port is taken (exit code 2)."""


@dataclass(frozen=True)
class HandlerTarget:
    """Where the handler app lives, as uvicorn needs it."""

    #: ``module:attr`` for uvicorn.
    import_string: str
    #: Directory put first on ``sys.path`` (uvicorn's ``--app-dir``).
    app_dir: Path
    #: Directories watched for changes (uvicorn's ``--reload-dir``).
    watch_dirs: tuple[Path, ...]


@dataclass
class DevOptions:
    """Parsed ``python -m proxy dev`` arguments."""

    target: HandlerTarget
    ingress_port: int = 8080
    admin_port: int = 9070
    callback_port: int = 9071
    handler_port: int = 9080
    data_dir: str | None = None
    log_level: str = "warning"
    extra_watch_dirs: list[Path] = field(default_factory=list)


def _package_root(path: Path) -> tuple[Path, str]:
    """The sys.path entry and the dotted module name of a ``.py`` file (walking up ``__init__.py``s)."""
    parts = [path.stem]
    directory = path.parent
    while (directory / "__init__.py").is_file() and directory.parent != directory:
        parts.insert(0, directory.name)
        directory = directory.parent
    return directory, ".".join(parts)


def _find_app(module: Any, module_name: str, attr: str) -> str:
    """The name of the module attribute holding the handler app."""
    from handlers_sdk.server import HandlerApp

    if attr:
        target: Any = module
        for part in attr.split("."):
            if not hasattr(target, part):
                raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
            target = getattr(target, part)
        if not callable(target):
            raise UsageError(f"{module_name}:{attr} is not an ASGI app")
        return attr
    for name in ("application", "app"):
        if isinstance(getattr(module, name, None), HandlerApp):
            return name
    found: list[str] = [str(n) for n, value in vars(module).items() if isinstance(value, HandlerApp)]
    if len(found) == 1:
        return found[0]
    if found:
        raise UsageError(f"{module_name} has several handler apps ({', '.join(found)}): name one as module:attr")
    raise UsageError(
        f"{module_name} has no handler app: define `application = handlers_sdk.app([...])` or pass module:attr"
    )


def resolve_target(ref: str) -> HandlerTarget:
    """Find the handler app of a file path, a module or ``module:attr`` (imports it once to check).

    Raises:
        UsageError: no such file or module, it fails to import, or it holds no handler app.
    """
    spec, _, attr = ref.partition(":")
    if not spec:
        raise UsageError(f"expected a file, a module or module:attr, got {ref!r}")
    is_file = spec.endswith(".py") or os.sep in spec or Path(spec).is_file()
    if is_file:
        path = Path(spec).resolve()
        if not path.is_file():
            raise UsageError(f"no such file: {spec}")
        if path.suffix != ".py":
            raise UsageError(f"{spec} is not a .py file")
        app_dir, module_name = _package_root(path)
        watch = path.parent if app_dir == path.parent else app_dir / module_name.split(".")[0]
    else:
        app_dir, module_name = Path.cwd(), spec
        watch = Path()
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error of the user's code
        raise UsageError(f"cannot import {module_name!r} (from {app_dir}): {type(exc).__name__}: {exc}") from exc
    if not is_file:
        file = getattr(module, "__file__", None)
        if file is None:
            raise UsageError(f"module {module_name!r} has no source file to watch")
        path = Path(file).resolve()
        top = module_name.split(".")[0]
        top_module = sys.modules.get(top)
        top_file = getattr(top_module, "__file__", None) if top_module else None
        watch = Path(top_file).resolve().parent if top_file and "." in module_name else path.parent
    name = _find_app(module, module_name, attr)
    return HandlerTarget(f"{module_name}:{name}", app_dir, (watch,))


def _load_app(import_string: str) -> Any:
    """The object `import_string` (``module:attr.path``) names, importing its module."""
    module_name, _, attr = import_string.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        if not hasattr(target, part):
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


class _ImportFailed:
    """The ASGI app served in place of a handler app that failed to import: 503 with the error."""

    def __init__(self, import_string: str, summary: str, details: str) -> None:
        self.summary = f"the handler app {import_string} failed to import: {summary}"
        text = f"{self.summary}\n(dev mode: fix the file and save; it reloads)\n\n{details}"
        self.body = text.encode("utf-8", "replace")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(self.body)).encode()),
            (IMPORT_ERROR_HEADER.encode(), b"import-error"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def handler_app() -> Any:
    """The app dev mode's uvicorn serves (``--factory``): the user's app named by `APP_ENV`, or,
    if importing it fails, an app that answers every request 503 with the import error.

    Without this, uvicorn's reloader keeps the port open while its worker is dead, and every
    attempt waits out the inactivity timeout.
    """
    import_string = os.environ[APP_ENV]
    try:
        return _load_app(import_string)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code, at import time: anything goes
        details = traceback.format_exc()
        print(details, file=sys.stderr, flush=True)
        return _ImportFailed(import_string, f"{type(exc).__name__}: {exc}", details)


def _sample_value(info: Any, depth: int = 0) -> Any:
    """A value of the type `info` (`msgspec.inspect`) describes: required fields only, small
    numbers within the type's bounds, placeholder strings."""
    import msgspec.inspect as mi

    if depth > 8:
        return None
    if isinstance(info, mi.StrType):
        low = info.min_length or 0
        high = info.max_length if info.max_length is not None else 7
        return "example"[:high] if low <= high and high <= 7 and low <= 7 else "x" * max(low, 1)
    if isinstance(info, mi.BoolType):
        return True
    if isinstance(info, mi.IntType | mi.FloatType):
        value: Any = 1 if isinstance(info, mi.IntType) else 1.0
        if info.ge is not None:
            value = max(value, info.ge)
        if info.gt is not None and value <= info.gt:
            value = info.gt + 1
        if info.le is not None:
            value = min(value, info.le)
        if info.lt is not None and value >= info.lt:
            value = info.lt - 1
        return value
    if isinstance(info, mi.NoneType):
        return None
    if isinstance(info, mi.LiteralType):
        return info.values[0]
    if isinstance(info, mi.EnumType):
        return next(iter(info.cls)).value
    if isinstance(info, mi.UnionType):
        options = [t for t in info.types if not isinstance(t, mi.NoneType)] or list(info.types)
        return _sample_value(options[0], depth + 1)
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return [_sample_value(info.item_type, depth + 1)]
    if isinstance(info, mi.TupleType):
        return [_sample_value(t, depth + 1) for t in info.item_types]
    if isinstance(info, mi.DictType):
        return {}
    if isinstance(info, mi.StructType | mi.DataclassType | mi.TypedDictType | mi.NamedTupleType):
        fields = {f.encode_name: _sample_value(f.type, depth + 1) for f in info.fields if f.required}
        if isinstance(info, mi.StructType) and info.tag_field is not None:
            fields = {info.tag_field: info.tag, **fields}
        if isinstance(info, mi.NamedTupleType) or (isinstance(info, mi.StructType) and info.array_like):
            return list(fields.values())
        return fields
    if isinstance(info, mi.DateTimeType):
        return "2030-01-01T00:00:00Z"
    if isinstance(info, mi.DateType):
        return "2030-01-01"
    if isinstance(info, mi.TimeType):
        return "12:00:00"
    if isinstance(info, mi.UUIDType):
        return "00000000-0000-4000-8000-000000000000"
    if isinstance(info, mi.DecimalType):
        return "1.0"
    return {}


def sample_input(app: Any, service: str, handler: str) -> str | None:
    """A JSON input that `handler` of `service` in the handler `app` accepts (built from the
    handler's input type: required fields, placeholder values), for the banner's curl example.

    Returns:
        The JSON text, ``""`` when the handler takes no input, or None when no valid sample can
        be built (unknown handler, or a type with constraints the placeholders do not meet).
    """
    import msgspec
    import msgspec.inspect

    services = getattr(app, "services", None)
    svc = services.get(service) if isinstance(services, dict) else None
    definition = svc.handlers.get(handler) if svc is not None else None
    if definition is None:
        return None
    if not definition.takes_input:
        return ""
    input_type = definition.input_type
    try:
        value = _sample_value(msgspec.inspect.type_info(input_type))
        text = msgspec.json.encode(value)
        if input_type is not Any:
            msgspec.json.decode(text, type=input_type)  # the handler's own decoding must accept it
    except (TypeError, ValueError, msgspec.MsgspecError):
        return None
    return text.decode()


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m proxy dev`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m proxy dev",
        description="Run the proxy (temporary data dir) and a handler app that reloads on code changes.",
        epilog="Example: python -m proxy dev examples/orders.py",
    )
    parser.add_argument("app", help="handler file (examples/orders.py), module (examples.orders) or module:attr")
    parser.add_argument("--ingress-port", type=int, default=8080, help="ingress port (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9070, help="admin port (default 9070)")
    parser.add_argument(
        "--callback-port", type=int, default=9071, help="step-ack callback port, the handler's acks (default 9071)"
    )
    parser.add_argument("--handler-port", type=int, default=9080, help="handler service port (default 9080)")
    parser.add_argument("--data-dir", help="keep the data here (default: a temporary dir, deleted on exit)")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="default warning"
    )
    parser.add_argument(
        "--reload-dir", action="append", default=[], help="another directory to watch for changes (repeatable)"
    )
    return parser


def _check_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(f"port {port} on 127.0.0.1 is not free: {exc.strerror}") from None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the handler if the dev process dies without cleaning up (e.g. SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_handler(opts: DevOptions) -> subprocess.Popen[bytes]:
    target = opts.target
    argv = [
        sys.executable, "-m", "uvicorn", f"{__name__}:handler_app", "--factory",
        "--host", "127.0.0.1", "--port", str(opts.handler_port),
        "--app-dir", str(target.app_dir),
        "--reload",
        "--log-level", opts.log_level, "--no-access-log", "--timeout-graceful-shutdown", "2",
    ]  # fmt: skip
    for directory in (*target.watch_dirs, *opts.extra_watch_dirs):
        argv += ["--reload-dir", str(directory)]
    # The worker imports this module (`handler_app`) wherever the user's code lives.
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), package_root) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", APP_ENV: target.import_string, "PYTHONPATH": python_path}
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the dev process only; it stops the handler itself
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a child's process group (e.g. the uvicorn reloader and its worker), SIGKILL after 10 s.

    The child must have been started with ``start_new_session=True`` and not yet reaped, so that
    its pid is still its group's id.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


#: The admin API's (Restate's) service ``ty`` in the words of the discovery manifest's ``type``.
_SERVICE_TYPES = {"Service": "service", "VirtualObject": "object", "Workflow": "workflow"}


def _service_signature(svc: dict[str, Any]) -> tuple[Any, ...]:
    """(type, handlers) of a service, from the discovery manifest (``type``, handlers' ``kind``) or
    the admin API (Restate's ``ty``, handlers' ``ty``)."""
    handlers = tuple(sorted((h["name"], h.get("kind", str(h.get("ty", "")).lower())) for h in svc.get("handlers", [])))
    service_type = svc["type"] if "type" in svc else _SERVICE_TYPES.get(svc.get("ty", ""), "service")
    return service_type, handlers


def _manifest_signature(manifest: dict[str, Any]) -> tuple[Any, ...]:
    services = {s["name"]: _service_signature(s) for s in manifest.get("services", [])}
    return manifest.get("mode", "ack"), tuple(sorted(services.items()))


def _registered_signature(deployment: dict[str, Any] | None, services: list[dict[str, Any]]) -> tuple[Any, ...] | None:
    if deployment is None:
        return None
    by_name = {s["name"]: s for s in services if s.get("deployment_id") == deployment["id"]}
    known = {}
    for entry in deployment.get("services", []):
        name = entry["name"] if isinstance(entry, dict) else entry  # Restate's {name, revision}
        svc = by_name.get(name)
        if svc is None:
            return None
        known[name] = _service_signature(svc)
    return deployment.get("mode", "ack"), tuple(sorted(known.items()))


def _sample_target(manifest: dict[str, Any]) -> tuple[str, str, str]:
    """(ingress path, service, handler) of the first handler the manifest announces."""
    for svc in manifest.get("services", []):
        for handler in svc.get("handlers", []):
            if svc.get("type", "service") == "service":
                return f"{svc['name']}/{handler['name']}", svc["name"], handler["name"]
            return f"{svc['name']}/my-key/{handler['name']}", svc["name"], handler["name"]
    return "Service/handler", "", ""


def _samples(import_string: str) -> dict[tuple[str, str], str | None]:
    """`sample_input` of every handler of the app (already imported by `resolve_target`)."""
    try:
        app = _load_app(import_string)
    except Exception:  # noqa: BLE001 - the banner then shows no sample
        return {}
    services = getattr(app, "services", None)
    if not isinstance(services, dict):
        return {}
    return {(name, h): sample_input(app, name, h) for name, svc in services.items() for h in svc.handlers}


def _describe(manifest: dict[str, Any]) -> list[str]:
    lines = []
    for svc in manifest.get("services", []):
        handlers = ", ".join(h["name"] for h in svc.get("handlers", []))
        lines.append(f"{svc['name']} ({svc.get('type', 'service')}): {handlers}")
    return lines


class _Supervisor:
    """Watches the handler: registers it when its discovery answer changes, notices if it dies."""

    def __init__(self, opts: DevOptions, handler: subprocess.Popen[bytes], data_dir: str, temporary: bool,
                 out: TextIO) -> None:  # fmt: skip
        self.opts = opts
        self.handler = handler
        self.data_dir = data_dir
        self.temporary = temporary
        self.out = out
        self.handler_url = f"http://127.0.0.1:{opts.handler_port}"
        self.admin_url = f"http://127.0.0.1:{opts.admin_port}"
        self.ingress_url = f"http://127.0.0.1:{opts.ingress_port}"
        self.exit_code = _EXIT_OK
        self.announced = False
        self._last_manifest: bytes | None = None
        self._last_error = ""
        #: The import error the handler answers with, while it does.
        self._broken = ""
        self._silent_polls = 0
        #: Input of the banner's curl example, per (service, handler), from the imported app.
        self.samples: dict[tuple[str, str], str | None] = {}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _warn(self, text: str) -> None:
        """Say `text` once (not again every second while the problem lasts)."""
        if text != self._last_error:
            self.say(text)
            self._last_error = text

    async def run(self, stop: Any) -> None:
        """Poll until cancelled; call `stop()` if the handler process exits."""
        # The dev proxy honours PROXY_ADMIN_TOKEN (`proxy.credentials`): its own admin calls send it too.
        token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        headers = {"authorization": f"Bearer {token}"} if token else None
        async with httpx.AsyncClient(timeout=5, headers=headers) as http:
            while True:
                if self.handler.poll() is not None:
                    self.say(f"[dev] the handler process exited with code {self.handler.returncode}; stopping")
                    self.exit_code = _EXIT_FAILED
                    stop()
                    return
                try:
                    await self._tick(http)
                    self._silent_polls = 0
                except httpx.TimeoutException:
                    # The port takes connections but nothing answers (a worker hanging or dead).
                    self._silent_polls += 1
                    if self._silent_polls == _SILENT_POLLS:
                        self._warn(
                            f"[dev] the handler at {self.handler_url} does not answer: its worker process may have "
                            "died (see any errors above); it restarts when you save a watched file"
                        )
                except httpx.HTTPError:
                    self._silent_polls = 0  # the proxy or the handler is (re)starting
                except (ValueError, KeyError, TypeError) as exc:  # an unexpected answer: say so, keep going
                    self._warn(f"[dev] cannot check the handler's services: {type(exc).__name__}: {exc}")
                await asyncio.sleep(_POLL_SECONDS if self.announced else 0.2)

    async def _tick(self, http: httpx.AsyncClient) -> None:
        response = await http.get(self.handler_url + "/discovery", timeout=2)
        if response.status_code == 503 and response.headers.get(IMPORT_ERROR_HEADER) == "import-error":
            summary = response.text.split("\n", 1)[0]
            if summary != self._broken:
                self._broken = summary
                self.say(
                    f"[dev] {summary}\n"
                    "[dev] until it is fixed, attempts fail at once with this error (see `invocations ls`) and are "
                    "retried every second; save the fixed file and they go on"
                )
            return
        if response.status_code != 200:
            return
        if self._broken:
            self._broken = ""
            self.say("[dev] the handler app imports again: retrying what failed meanwhile")
        body = response.content
        if body == self._last_manifest:
            return
        manifest = json.loads(body)
        deployments = (await http.get(self.admin_url + "/deployments")).json()["deployments"]
        mine = next((d for d in deployments if d["uri"] == self.handler_url), None)
        services = (await http.get(self.admin_url + "/services")).json()["services"]
        wanted = _manifest_signature(manifest)
        if _registered_signature(mine, services) != wanted:
            registered = await http.post(self.admin_url + "/deployments", json={"uri": self.handler_url}, timeout=15)
            if registered.status_code not in (200, 201):  # 200: updated in place (Restate's code)
                self._warn(f"[dev] cannot register {self.handler_url}: {registered.status_code} {registered.text}")
                return
            if self.announced:
                self.say("[dev] handler services changed: registered again")
                for line in _describe(manifest):
                    self.say(f"[dev]   {line}")
        self._last_manifest = body
        self._last_error = ""
        if not self.announced:
            self.announced = True
            self._banner(manifest)

    def _banner(self, manifest: dict[str, Any]) -> None:
        target = self.opts.target
        watched = ", ".join(str(d) for d in (*target.watch_dirs, *self.opts.extra_watch_dirs))
        kept = "deleted on exit" if self.temporary else "kept"
        lines = [
            "durable-proxy dev mode (Ctrl-C to stop)",
            f"  handler   {target.import_string} at {self.handler_url} (reloads on changes in {watched})",
            f"  ingress   {self.ingress_url}",
            f"  admin     {self.admin_url}",
            f"  data dir  {self.data_dir} ({kept})",
            f"  retries   every {DEV_RETRY_MAX_INTERVAL:g} s at most, without limit; an attempt silent for "
            f"{DEV_INACTIVITY_TIMEOUT:g} s is retried",
            "  services  " + ("\n            ".join(_describe(manifest)) or "(none)"),
            "try:",
            "  " + self._curl(manifest),
            f"  {proxy_command()} invocations ls --all --admin {self.admin_url}",
        ]
        self.say("\n".join(lines))

    def _curl(self, manifest: dict[str, Any]) -> str:
        """A curl command that invokes the first handler with an input it accepts."""
        path, service, handler = _sample_target(manifest)
        command = f"curl -s -X POST {self.ingress_url}/{path}"
        sample = self.samples.get((service, handler))
        if sample == "":
            return command + "  # it takes no input"
        if sample is None:
            return command + " -H 'content-type: application/json' -d 'null'  # put the handler's input here, as JSON"
        return command + f" -H 'content-type: application/json' -d {shlex.quote(sample)}"


async def _wait_for_handler(
    handler: subprocess.Popen[bytes], url: str, stopping: asyncio.Event, timeout: float
) -> None:
    """Poll the handler's ``/discovery`` until it answers, it exits, a stop is asked, or `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(timeout=1) as http:
        while asyncio.get_running_loop().time() < deadline and handler.poll() is None and not stopping.is_set():
            with contextlib.suppress(httpx.HTTPError):
                # 401: up, and verifying signatures (identity keys): the proxy's own request will pass.
                if (await http.get(url + "/discovery")).status_code in (200, 401):
                    return
            await asyncio.sleep(0.1)


async def _serve(opts: DevOptions, out: TextIO) -> int:
    from proxy.config import Settings
    from proxy.serve import ProxyServer
    from proxy.store.lmdb import StoreLocked

    temporary = opts.data_dir is None
    data_dir = tempfile.mkdtemp(prefix="durable-proxy-dev-") if opts.data_dir is None else opts.data_dir
    handler_url = f"http://127.0.0.1:{opts.handler_port}"
    settings = Settings(
        host="127.0.0.1",
        ingress_port=opts.ingress_port,
        admin_port=opts.admin_port,
        callback_port=opts.callback_port,
        data_dir=data_dir,
        deployments=(handler_url,),
        log_level=opts.log_level,
        log_format="text",
        # Dev loops are short: retry quickly (and without limit, so a fix always takes effect
        # without a resume), and give up on a silent attempt within seconds.
        inactivity_timeout=DEV_INACTIVITY_TIMEOUT,
        retry_initial_interval=DEV_RETRY_INITIAL_INTERVAL,
        retry_max_interval=DEV_RETRY_MAX_INTERVAL,
        retry_max_attempts=0,
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    server: ProxyServer | None = None

    def stop() -> None:
        stopping.set()
        if server is not None:
            server.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    handler = _start_handler(opts)
    supervisor = _Supervisor(opts, handler, data_dir, temporary, out)
    supervisor.samples = _samples(opts.target.import_string)
    watch: asyncio.Task[None] | None = None
    exit_code = _EXIT_OK
    try:
        # Give the handler a moment to come up, so the runtime's registration does not log retries.
        await _wait_for_handler(handler, handler_url, stopping, 10.0)
        server = ProxyServer(settings)
        if stopping.is_set():
            server.stop()
        watch = asyncio.create_task(supervisor.run(stop))
        try:
            if not await server.run():
                exit_code = _EXIT_FAILED
        except StoreLocked as exc:
            print(f"error: {exc}", file=sys.stderr)
            return _EXIT_FAILED
    finally:
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        await asyncio.to_thread(stop_process_group, handler)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
        print("[dev] stopped" + (f"; removed {data_dir}" if temporary else f"; data kept in {data_dir}"),
              file=out, flush=True)  # fmt: skip
    return exit_code or supervisor.exit_code


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run dev mode until Ctrl-C/SIGTERM; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else _EXIT_USAGE
    try:
        target = resolve_target(args.app)
        for port in {args.ingress_port, args.admin_port, args.callback_port, args.handler_port}:
            _check_port(port)
        if len({args.ingress_port, args.admin_port, args.callback_port, args.handler_port}) != 4:
            raise UsageError("--ingress-port, --admin-port, --callback-port and --handler-port must differ")
        extra = []
        for directory in args.reload_dir:
            if not Path(directory).is_dir():
                raise UsageError(f"--reload-dir {directory}: no such directory")
            extra.append(Path(directory).resolve())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    opts = DevOptions(
        target=target,
        ingress_port=args.ingress_port,
        admin_port=args.admin_port,
        callback_port=args.callback_port,
        handler_port=args.handler_port,
        data_dir=args.data_dir,
        log_level=args.log_level,
        extra_watch_dirs=extra,
    )
    from proxy.logs import configure

    configure(opts.log_level, "text")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the proxy extra
        return asyncio.run(_serve(opts, out))
    return int(uvloop.run(_serve(opts, out)))


if __name__ == "__main__":
    sys.exit(main())
