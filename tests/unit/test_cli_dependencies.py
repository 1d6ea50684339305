"""The operator CLI needs only the base dependencies (msgspec, httpx), like the SDK.

``python -m proxy invocations|services|deployments ...`` talks to a running proxy's admin API over
HTTP; installing durable-proxy without the ``proxy`` extra (a handler's environment) must be
enough for it. So `proxy/__init__.py` imports nothing of the server (`create_app` and
`ProxyApps` load it when used), and `proxy/__main__.py` imports the server's modules only on the
server's path, where a missing extra gets a one-line hint instead of a traceback. Each check runs
in a fresh interpreter with the server's dependencies made unimportable.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.harness import free_port

REPO = Path(__file__).resolve().parents[2]

#: The ``proxy`` extra's modules.
SERVER_SIDE = ("starlette", "uvicorn", "lmdb", "aiohttp", "uvloop", "httptools", "watchfiles", "psycopg")

_PRELUDE = textwrap.dedent(
    f"""
    import importlib.abc
    import runpy
    import sys

    BLOCKED = set({SERVER_SIDE!r})

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError("blocked: " + name, name=name)
            return None

    sys.meta_path.insert(0, Block())

    def python_m_proxy(*argv):
        sys.argv = ["python -m proxy", *argv]
        try:
            runpy.run_module("proxy", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            print("exit", exc.code)
            return
        print("exit", 0)
    """
)


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = _PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_cli_and_the_package_import_without_the_server_dependencies() -> None:
    result = _run(
        """
        import proxy
        import proxy.tools.cli
        import proxy.tools.render
        from proxy import Settings, create_app
        assert Settings().ingress_port == 8080 and callable(create_app)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("loaded", loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded []"


def test_python_m_proxy_invocations_help_runs_without_the_server_dependencies() -> None:
    result = _run('python_m_proxy("invocations", "--help")')
    assert result.returncode == 0, result.stderr
    assert "usage: python -m proxy invocations" in result.stdout
    assert result.stdout.strip().endswith("exit 0")


@pytest.mark.parametrize(
    "command", [("invocations", "ls"), ("services", "ls"), ("deployments", "ls"), ("identity", "show")]
)
def test_cli_commands_reach_for_the_admin_api_without_the_server_dependencies(command: tuple[str, str]) -> None:
    """Past argument parsing, into httpx: nobody listens on the port, so the API error exit (1)."""
    admin = f"http://127.0.0.1:{free_port()}"
    result = _run(f"python_m_proxy(*{command!r}, '--admin', {admin!r}, '--timeout', '2')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("exit 1"), result.stdout + result.stderr
    assert "blocked" not in result.stderr
    assert admin in result.stderr


def test_a_new_signing_key_is_made_without_the_server_dependencies(tmp_path: Path) -> None:
    key_file = tmp_path / "next.pem"
    result = _run(f"python_m_proxy('identity', 'new-key', {str(key_file)!r})")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("publickeyv1_") and result.stdout.strip().endswith("exit 0"), result.stdout
    assert key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_the_server_without_its_dependencies_says_which_extra_to_install(tmp_path: Path) -> None:
    result = _run(f"python_m_proxy('--data-dir', {str(tmp_path / 'data')!r})")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("exit 2")
    assert "needs the proxy extra" in result.stderr
    assert "pip install 'durable-proxy[proxy]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_accessing_proxy_apps_loads_the_server_lazily() -> None:
    """`proxy.ProxyApps` (PEP 562) is the server's class, loaded on first access only."""
    script = textwrap.dedent(
        """
        import sys
        import proxy
        before = "proxy.api.app" in sys.modules
        from proxy import ProxyApps
        from proxy.api.app import ProxyApps as Real
        print(before, ProxyApps is Real)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
