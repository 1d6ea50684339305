"""The SDK's types as a user's mypy sees them: built into a wheel, installed in a fresh
environment outside the repository, and checked with ``mypy --strict`` from a directory outside it.

`user_handlers.py` must pass (its `assert_type`s fail if a type is erased to Any); `FAILS` must
fail exactly with the listed error codes on the listed lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Third-party packages the SDK imports (and theirs), made visible to the fresh environment.
DEPENDENCIES = ("msgspec", "httpx", "httpcore", "h11", "anyio", "idna", "sniffio", "certifi", "cryptography", "cffi")

pytestmark = pytest.mark.timeout(300)

#: A handler module with one mistake per marked line: ``# E: <mypy error code>``.
FAILS = """
from __future__ import annotations

from handlers_sdk import Context, ObjectContext, RunOptions, Service

svc = Service("Fails")


def add(a: int, b: int) -> int:
    return a + b


@svc.handler()
async def greet(ctx: Context, name: str) -> str:
    return name


@svc.handler()
async def wrong(ctx: ObjectContext, n: int) -> None:
    await ctx.run("x", add, "one", 2)  # E: call-overload
    await ctx.run("x", add, 1)  # E: call-overload
    await ctx.run_with("x", add, 1, 2)  # E: call-overload
    text: str = await ctx.run("x", add, 1, 2)  # E: call-overload
    await ctx.service_call(greet, 42)  # E: arg-type
    await ctx.service_call(greet)  # E: arg-type
    reply: int = await ctx.service_call(greet, "Ada")  # E: arg-type
    ctx.object_send(greet, "key", 7)  # E: arg-type
    count: str | None = await ctx.get("count", int)  # E: arg-type
    await greet(ctx, 1)  # E: arg-type
    flag: str = ctx.patched("new-shipping")  # E: assignment
    await ctx.run("x", add, 1, 2, options=RunOptions(max_attempts=3))  # E: call-arg
"""


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh environment with the wheel of this repository installed (no deps)."""
    root = tmp_path_factory.mktemp("installed")
    dist = root / "dist"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(dist),
        str(REPO),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=240)
    (wheel,) = dist.glob("durable_proxy-*.whl")
    assert "handlers_sdk/py.typed" in zipfile.ZipFile(wheel).namelist()
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = _site_packages(venv)
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=120)
    # The SDK's dependencies, from this interpreter's environment (not the repository itself).
    deps = root / "deps"
    deps.mkdir()
    ours = Path(next(p for p in sys.path if p.endswith("site-packages") and (Path(p) / "msgspec").is_dir()))
    for name in DEPENDENCIES:
        if (ours / name).exists():
            (deps / name).symlink_to(ours / name)
    (site / "sdk-dependencies.pth").write_text(f"{deps}\n")
    return venv / "bin" / "python"


def _mypy(python: Path, workdir: Path, module: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    command = [
        sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", str(python),
        "--show-error-codes", "--no-error-summary", module,
    ]  # fmt: skip
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=240)


def test_the_installed_package_sees_itself_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    probe = "import importlib.util; print(importlib.util.find_spec('handlers_sdk').origin)"
    where = subprocess.run([str(installed), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    origin = where.stdout.strip()
    assert origin.endswith("handlers_sdk/__init__.py") and not origin.startswith(str(REPO))


def test_a_typed_handler_module_passes_mypy_strict(installed: Path, tmp_path: Path) -> None:
    shutil.copy(REPO / "tests" / "typecheck" / "user_handlers.py", tmp_path / "user_handlers.py")
    result = _mypy(installed, tmp_path, "user_handlers.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mistakes_fail_mypy_strict_with_their_error_codes(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "fails.py").write_text(FAILS)
    expected = {
        (number, match.group(1))
        for number, line in enumerate(FAILS.splitlines(), 1)
        if (match := re.search(r"# E: ([\w-]+)", line))
    }
    result = _mypy(installed, tmp_path, "fails.py")
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"^fails\.py:(\d+): error: .*\[([\w-]+)\]$", result.stdout, re.M)
    }
    assert "missing library stubs or py.typed" not in result.stdout
    assert expected <= found, result.stdout
    assert {line for line, _ in found} == {line for line, _ in expected}, result.stdout
