"""A private PostgreSQL cluster for tests: Debian's ``postgresql`` binaries, ``initdb`` + ``pg_ctl``.

`pg_cluster` (session-scoped) starts one cluster for the whole test session on a temp dir and a
free 127.0.0.1 port; each test that needs a database takes a fresh one from it
(`PgCluster.fresh_database`) or empties the tables it uses. Conftests import the fixture::

    from tests.postgres import pg_cluster  # noqa: F401  (the store conformance suite, e2e tests)

PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres`` system user
(``runuser -u postgres --``) in a temp dir it owns; as any other user it runs as that user. The
cluster is stopped by its own data dir (``pg_ctl stop -D``, then the PID in ``postmaster.pid``)
when the session ends. Where the binaries are missing or the cluster cannot start, `pg_cluster`
skips every test that asks for it, with the reason (``scripts/system_deps.sh`` installs the
package where apt is available).

The cluster is tuned for tests that never crash the machine itself: ``fsync=off`` and
``full_page_writes=off`` (a SIGKILL of PostgreSQL, or ``pg_ctl restart -m immediate``, loses
nothing without them, since the OS keeps its page cache); the proxy's own session settings
(``synchronous_commit=on``) are unchanged. Pass ``durable=True`` to `start_cluster` for a
cluster that fsyncs (measurements).

The cluster's superuser is `USER` with the password `PASSWORD`: every URL carries a secret, so
tests can check that it never shows up where the URL is displayed.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import free_port

__all__ = [
    "PASSWORD",
    "USER",
    "ClusterUnavailable",
    "PgCluster",
    "pg_bindir",
    "pg_cluster",
    "start_cluster",
    "wait_accepting",
]

USER = "proxy"
#: Distinctive, so a test can grep logs and responses for it.
PASSWORD = "pg-s3cret-7f3a9"

_START_TIMEOUT = 60


class ClusterUnavailable(RuntimeError):
    """PostgreSQL is not installed here or the private cluster could not start (the reason)."""


def pg_bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``/``postgres``: Debian's newest version, else $PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name), reverse=True
    ) if Path("/usr/lib/postgresql").is_dir() else []  # fmt: skip
    for pg_ctl in versions:
        if (pg_ctl.parent / "initdb").exists():
            return pg_ctl.parent
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    return None


def _free_port() -> int:
    return free_port()  # one rule for every test server's port (below the ephemeral range)


class PgCluster:
    """One private cluster: its data dir, port and URLs; started and stopped by its own data dir."""

    def __init__(self, bindir: Path, root: Path, port: int, as_postgres: bool) -> None:
        self.bindir = bindir
        self.root = root
        self.data_dir = root / "data"
        self.socket_dir = root / "sockets"
        self.log_file = root / "postgres.log"
        self.port = port
        self._as_postgres = as_postgres
        self._databases = itertools.count(1)

    # -- URLs ---------------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """``postgresql://proxy:<password>@127.0.0.1:<port>/<database>``."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def fresh_database(self, prefix: str = "test") -> str:
        """Create an empty database and return its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._databases)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement (autocommit) as the superuser."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())

    # -- processes ------------------------------------------------------------------------------------

    def _run(self, *argv: str, timeout: float = _START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args)

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            ClusterUnavailable: it did not start (with the end of its log).
        """
        done = self._pg_ctl("-l", str(self.log_file), "-w", "-t", str(_START_TIMEOUT), "start")
        if done.returncode != 0:
            raise ClusterUnavailable(f"pg_ctl start failed: {done.stdout}{done.stderr}{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m <mode>``); SIGKILL its postmaster if that fails."""
        if not self.running:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            if self._pg_ctl("-m", mode, "-w", "-t", "30", "stop").returncode == 0:
                return
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, mode: str = "fast") -> None:
        """Stop (``-m fast`` or ``immediate``, a crash) and start again on the same port and data."""
        self.stop(mode)
        self.start()

    def postmaster_pid(self) -> int | None:
        """The server's PID from ``postmaster.pid``, or None when it is not running."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        return int(first) if first.strip().isdigit() else None

    @property
    def running(self) -> bool:
        """True while the postmaster of this data dir is alive."""
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def log_tail(self, max_bytes: int = 3000) -> str:
        """The end of the server's log."""
        try:
            return self.log_file.read_bytes()[-max_bytes:].decode("utf-8", "replace")
        except (FileNotFoundError, PermissionError):
            return ""

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(durable: bool = False) -> PgCluster:
    """initdb a fresh cluster in a temp dir and start it on a free 127.0.0.1 port.

    Raises:
        ClusterUnavailable: PostgreSQL is not installed, or initdb or the server failed.
    """
    bindir = pg_bindir()
    if bindir is None:
        raise ClusterUnavailable("PostgreSQL is not installed (no initdb/pg_ctl; apt-get install postgresql)")
    as_postgres = os.geteuid() == 0
    if as_postgres:
        if shutil.which("runuser") is None:
            raise ClusterUnavailable("running as root without runuser: cannot start PostgreSQL as another user")
        try:
            import pwd

            postgres = pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailable("running as root and there is no 'postgres' system user") from None
    root = Path(tempfile.mkdtemp(prefix="durable-pg-"))
    try:
        if as_postgres:
            os.chown(root, postgres.pw_uid, postgres.pw_gid)
        cluster = PgCluster(bindir, root, _free_port(), as_postgres)
        pwfile = root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if as_postgres:
            os.chown(pwfile, postgres.pw_uid, postgres.pw_gid)
        done = cluster._run(
            str(bindir / "initdb"), "-D", str(cluster.data_dir), "-U", USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        if done.returncode != 0:
            raise ClusterUnavailable(f"initdb failed: {done.stdout}{done.stderr}")
        cluster._run("mkdir", "-p", str(cluster.socket_dir))
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{cluster.socket_dir}'",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "fsync": "on" if durable else "off",
            "full_page_writes": "on" if durable else "off",
            "synchronous_commit": "on",
            "log_min_messages": "warning",
            "log_connections": "off",
        }
        conf = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with open(cluster.data_dir / "postgresql.auto.conf", "a") as auto:
            auto.write(conf)
        for attempt in range(3):
            with open(cluster.data_dir / "postgresql.auto.conf", "a") as auto:
                auto.write(f"port = {cluster.port}\n")  # the last line wins
            try:
                cluster.start()
                return cluster
            except ClusterUnavailable:
                if attempt == 2 or "could not bind" not in cluster.log_tail():
                    raise
                cluster.port = _free_port()  # the port was taken meanwhile: another one
        raise AssertionError("unreachable")
    except BaseException:
        with contextlib.suppress(Exception):
            PgCluster(bindir, root, 0, as_postgres).stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        raise


def wait_accepting(cluster: PgCluster, timeout: float = 30) -> None:
    """Wait until the cluster answers a query (after a restart)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(cluster.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


#: The session's one cluster, shared by every module that imports `pg_cluster` (each import is
#: its own fixture definition): started on first use, destroyed when the last user is done.
_shared: PgCluster | None = None
_users = 0
_failed: str | None = None


def _acquire() -> PgCluster:
    global _shared, _users, _failed
    if _failed is not None:
        pytest.skip(_failed)
    if _shared is None:
        try:
            _shared = start_cluster()
        except ClusterUnavailable as exc:
            _failed = f"PostgreSQL unavailable: {exc}"
            pytest.skip(_failed)
        except (OSError, subprocess.SubprocessError) as exc:
            _failed = f"PostgreSQL unavailable: {exc!r}"
            pytest.skip(_failed)
        atexit.register(_shared.destroy)  # should the session end abnormally
    _users += 1
    return _shared


def _release() -> None:
    global _shared, _users
    _users -= 1
    if _users == 0 and _shared is not None:
        _shared.destroy()
        _shared = None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's private PostgreSQL cluster (tests asking for it skip, with the reason, where
    PostgreSQL is missing or cannot start). A test that stops or restarts it starts it again."""
    cluster = _acquire()
    try:
        yield cluster
    finally:
        _release()
