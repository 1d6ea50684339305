"""The container, for real: build the image with podman, run it, restart it, and read a result back.

The base image is made from Debian's packages by ``scripts/container_base.sh`` (no image registry is
reachable here) and reused once it exists. The proxy container runs with host networking, bound to
127.0.0.1 on free ports, and reaches a handler service (uvicorn ``examples.greeter``) started on the host.
An invocation's result must survive both a ``podman stop``/``start`` and a new container on the same
named volume. Skipped, with the reason, where podman is missing or cannot run a container.
See docs/container.md for the podman flags this needs in this sandbox.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.harness import free_port

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("DURABLE_PROXY_BASE_IMAGE", "localhost/debian-python:bookworm")
IMAGE = "localhost/durable-proxy:dev"
BUILD_LOCK = Path("/var/tmp/durable-proxy-container-build.lock")
#: The host's CA bundle, lent to the build's RUN steps so pip trusts what the host trusts (not kept in the image).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


# -- podman -----------------------------------------------------------------------------------------


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one podman command; on failure (with `check`) fail the test with its output."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        _fail(f"podman {' '.join(args)}", result)
    return result


def _fail(what: str, result: subprocess.CompletedProcess[str]) -> None:
    pytest.fail(f"{what} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def _rlimit_flags() -> list[str]:
    """Limits the runtime can set without CAP_SYS_RESOURCE.

    Rootful podman asks for 1048576 open files and processes; a runtime that lacks CAP_SYS_RESOURCE (as here)
    cannot raise its hard limits that far and refuses to start the container. Ask for what this process has.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=32768:32768"]


def _runtime_candidates() -> list[list[str]]:
    """Flag sets to try, in order: podman's defaults (a normal machine), then runc with limits it can set.

    Here crun (podman's default) refuses the hybrid cgroup layout ("cgroups in hybrid mode not supported"),
    even with --cgroups=disabled; runc runs the container.
    """
    candidates: list[list[str]] = [[]]
    if shutil.which("runc"):
        candidates.append(["--runtime", "runc", *_rlimit_flags()])
    return candidates


def _probe_runtime() -> tuple[list[str] | None, str]:
    """The first flag set with which a container of the base image runs, or None and what failed."""
    failures: list[str] = []
    for flags in _runtime_candidates():
        try:
            result = podman(
                "run", "--rm", "--network", "host", *flags, BASE_IMAGE, "python3", "-c", "print('ok')",
                timeout=60, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            failures.append(f"{flags or 'defaults'}: timed out")
            continue
        if result.returncode == 0 and result.stdout.strip() == "ok":
            return flags, ""
        failures.append(f"{flags or 'defaults'}: exit {result.returncode}: {result.stderr.strip()[-400:]}")
    return None, "; ".join(failures)


def _image_id(ref: str) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time across parallel test runs on this machine."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Built:
    """The image under test and how to run containers of it here."""

    image_id: str
    run_flags: list[str]
    base_seconds: float | None
    build_seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _ensure_base() -> float | None:
    """Make the base image with the script when it is missing; returns how long that took (None: it existed)."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return None
    if os.geteuid() != 0:
        pytest.skip(f"{BASE_IMAGE} does not exist and scripts/container_base.sh needs root (debootstrap)")
    if shutil.which("debootstrap") is None:
        pytest.skip(f"{BASE_IMAGE} does not exist and debootstrap is not installed (apt-get install -y debootstrap)")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "container_base.sh")],
        cwd=REPO, env={**os.environ, "BASE_IMAGE": BASE_IMAGE},
        capture_output=True, text=True, timeout=360, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        # Making the base needs a Debian mirror and debootstrap: an environment problem, not a
        # defect of the image, so it skips (with the script's output) rather than fails.
        tail = (result.stdout + result.stderr)[-2000:]
        pytest.skip(f"cannot build the base image {BASE_IMAGE} here (exit {result.returncode}):\n{tail}")
    return time.monotonic() - started


def _build(runtime_flags: list[str], tmp: Path) -> tuple[str, float]:
    """``podman build`` of the repository's Dockerfile on the base image; returns (image id, seconds)."""
    iidfile = tmp / "iid"
    # --network host: pip reaches PyPI the way the host does; --format docker keeps the HEALTHCHECK.
    args = [
        "build", "--network", "host", "--pull=never", "--format", "docker",
        *runtime_flags,
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--iidfile", str(iidfile), "-t", IMAGE,
    ]  # fmt: skip
    if HOST_CA_BUNDLE.is_file():
        args += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    previous = _image_id(IMAGE)
    started = time.monotonic()
    podman(*args, str(REPO), timeout=200)
    seconds = time.monotonic() - started
    image_id = iidfile.read_text().strip().removeprefix("sha256:")
    if previous and not image_id.startswith(previous[:12]) and not previous.startswith(image_id[:12]):
        # The old build lost its tag: drop it (and its untagged layers) unless something still uses it.
        podman("rmi", previous, check=False)
    return image_id, seconds


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The image, built once per module (the base is reused when it exists)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install -y podman runc debootstrap; see docs/container.md)")
    if podman("info", check=False, timeout=60).returncode != 0:
        pytest.skip("podman is installed but `podman info` fails here")
    tmp = tmp_path_factory.mktemp("container-build")
    with _locked(BUILD_LOCK):
        base_seconds = _ensure_base()
        flags, why = _probe_runtime()
        if flags is None:
            pytest.skip(f"podman cannot run a container here: {why}")
        image_id, build_seconds = _build(flags, tmp)
    timings = {"build_seconds": round(build_seconds, 1)}
    if base_seconds is not None:
        timings["base_seconds"] = round(base_seconds, 1)
    print(f"container timings: {json.dumps(timings)}, run flags {flags}")
    return Built(image_id, flags, base_seconds, build_seconds, timings)


# -- processes on the host ----------------------------------------------------------------------------


def poll(predicate: Callable[[], Any], timeout: float, what: str, detail: Callable[[], str] = lambda: "") -> Any:
    """The e2e harness's `poll`, with the container's logs in the failure message."""
    return harness.poll(predicate, timeout, interval=0.1, message=lambda: f"{what}\n{detail()}")


@pytest.fixture
def greeter(tmp_path: Path) -> Iterator[str]:
    """``examples.greeter`` under uvicorn on a free 127.0.0.1 port; yields its URL, killed by PID at teardown."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    with open(tmp_path / "greeter.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.greeter:application",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        poll(
            lambda: proc.poll() is None and httpx.get(url + "/health", timeout=2).status_code == 200,
            20, "the greeter's /health", lambda: (tmp_path / "greeter.log").read_text(errors="replace"),
        )  # fmt: skip
        yield url
    finally:
        proc.kill()
        proc.wait(10)


class Containers:
    """The proxy containers of one test, on one named volume; all removed (and the volume) at teardown."""

    def __init__(self, built: Built) -> None:
        self.built = built
        self.tag = uuid.uuid4().hex[:10]
        self.volume = f"durable-proxy-test-{self.tag}"
        self.names: list[str] = []
        self.ingress_port = free_port()
        self.admin_port = free_port()
        self.callback_port = free_port()
        self.ingress = f"http://127.0.0.1:{self.ingress_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.http = httpx.Client(timeout=httpx.Timeout(30, connect=2))
        podman("volume", "create", self.volume)

    def run(self) -> str:
        """A new proxy container on the volume, bound to loopback on the test's ports; waits until healthy."""
        name = f"durable-proxy-test-{self.tag}-{len(self.names)}"
        self.names.append(name)
        podman(
            "run", "-d", "--name", name, "--network", "host", *self.built.run_flags,
            "-v", f"{self.volume}:/data",
            # Host networking: bind loopback only (the image's default is 0.0.0.0 for port publishing).
            "-e", "PROXY_HOST=127.0.0.1",
            "-e", f"PROXY_INGRESS_PORT={self.ingress_port}", "-e", f"PROXY_ADMIN_PORT={self.admin_port}",
            "-e", f"PROXY_CALLBACK_PORT={self.callback_port}",
            self.built.image_id,
        )  # fmt: skip
        self.wait_ready(name)
        return name

    def start(self, name: str) -> None:
        """``podman start`` a stopped container and wait until healthy."""
        podman("start", name)
        self.wait_ready(name)

    def stop(self, name: str) -> int:
        """``podman stop`` (SIGTERM, then SIGKILL after 20 s); returns the container's exit code."""
        podman("stop", "-t", "20", name, timeout=60)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        return int(code)

    def wait_ready(self, name: str) -> None:
        def up() -> bool:
            state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state != "running":
                pytest.fail(f"container {name} is {state}:\n{self.logs(name)}")
            admin = self.http.get(self.admin + "/health", timeout=2)
            ingress = self.http.get(self.ingress + "/health", timeout=2)
            return admin.status_code == 200 and admin.json()["status"] == "ok" and ingress.status_code == 200

        poll(up, 60, f"container {name} /health", lambda: self.logs(name))

    def logs(self, name: str) -> str:
        result = podman("logs", "--tail", "60", name, check=False)
        return f"--- podman logs {name}:\n{result.stdout[-6000:]}{result.stderr[-6000:]}"

    def all_logs(self) -> str:
        return "\n".join(self.logs(name) for name in self.names)

    def close(self) -> None:
        self.http.close()
        for name in self.names:
            podman("rm", "-f", "-t", "0", name, check=False)
        podman("volume", "rm", "-f", self.volume, check=False)


@pytest.fixture
def containers(built: Built) -> Iterator[Containers]:
    c = Containers(built)
    try:
        yield c
    finally:
        c.close()


# -- the test -------------------------------------------------------------------------------------------


def test_result_survives_container_restart(
    built: Built, containers: Containers, greeter: str, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    for key, value in built.timings.items():
        record_property(key, value)
    http = containers.http
    first = containers.run()

    # The image's own HEALTHCHECK, and the non-root user.
    health = podman("healthcheck", "run", first, check=False)
    assert health.returncode == 0, (health.stdout, health.stderr, containers.logs(first))
    assert podman("exec", first, "id", "-u").stdout.strip() == "10001"

    registered = http.post(f"{containers.admin}/deployments", json={"uri": greeter})
    assert registered.status_code == 201, (registered.status_code, registered.text)
    assert [s["name"] for s in registered.json()["services"]] == ["Greeter"]

    response = http.post(f"{containers.ingress}/Greeter/greet", json="container")
    assert response.status_code == 200, (response.status_code, response.text, containers.logs(first))
    assert response.json() == "Hello, container!"
    inv_id = response.headers["x-restate-id"]

    def output_ok(where: str) -> None:
        out = http.get(f"{containers.ingress}/restate/invocation/{inv_id}/output")
        assert out.status_code == 200, (where, out.status_code, out.text, containers.all_logs())
        assert out.json() == "Hello, container!", (where, out.text)

    output_ok("before any restart")

    # 1. The same container, stopped (SIGTERM: a clean exit) and started again.
    assert containers.stop(first) == 0, containers.logs(first)
    containers.start(first)
    output_ok("after podman stop/start")

    # 2. A new container on the same volume: the data outlives the container.
    assert containers.stop(first) == 0, containers.logs(first)
    podman("rm", first)
    second = containers.run()
    output_ok("in a new container on the same volume")
    deployments = http.get(f"{containers.admin}/deployments").json()["deployments"]
    assert [d["uri"] for d in deployments] == [greeter], deployments
    again = http.post(f"{containers.ingress}/Greeter/greet", json="again")
    assert again.status_code == 200 and again.json() == "Hello, again!", (again.text, containers.logs(second))

    record_property("run_seconds", round(time.monotonic() - started, 1))
