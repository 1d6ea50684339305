"""Credentials: the admin API's bearer tokens and the ingress API keys, read from files, re-read
when the files change (or on SIGHUP), and matched in constant time.

A token or key file holds one secret a line; blank lines and lines starting with ``#`` are
skipped, so an operator can keep two admin tokens during a rotation, or one ingress key per
client with a comment naming it. A secret is 16 to 4096 printable ASCII characters without
spaces (what fits an ``Authorization: Bearer`` header unchanged).

No message, log line or exception here ever holds a secret: errors name the file and the line.
This module needs only the standard library, so the operator CLI (`proxy.tools.cli`) reads the
same files the same way without the server's dependencies.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.config import Settings

__all__ = [
    "ADMIN_TOKEN_ENV",
    "Credentials",
    "CredentialsError",
    "KeyRing",
    "admin_keyring",
    "check_start",
    "is_loopback",
    "read_keys",
    "start_problem",
]

log = logging.getLogger("proxy.credentials")

#: The admin token itself, for containers that pass secrets as variables (never a flag: flags show in ps).
ADMIN_TOKEN_ENV = "PROXY_ADMIN_TOKEN"
_MIN_LENGTH = 16
_MAX_LENGTH = 4096


class CredentialsError(ValueError):
    """A token or key file that cannot be used; the message names the file and line, never a secret."""


def _check(secret: str, where: str) -> None:
    if not _MIN_LENGTH <= len(secret) <= _MAX_LENGTH:
        raise CredentialsError(f"{where}: a token or key must be {_MIN_LENGTH} to {_MAX_LENGTH} characters long")
    if not all(0x21 <= ord(c) <= 0x7E for c in secret):
        raise CredentialsError(f"{where}: a token or key must be printable ASCII without spaces")


def read_keys(path: str) -> tuple[str, ...]:
    """The secrets in `path`: one a line, blank lines and ``#`` comment lines skipped.

    Raises:
        CredentialsError: the file cannot be read, is not UTF-8, or a line is not a valid secret.
    """
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CredentialsError(f"cannot read {path}: {reason}") from None
    keys: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        secret = line.strip()
        if secret and not secret.startswith("#"):
            _check(secret, f"{path} line {number}")
            keys.append(secret)
    return tuple(keys)


def _digest(secret: bytes) -> bytes:
    # Comparing fixed-size digests keeps the comparison's time independent of the secrets' lengths.
    return hashlib.sha256(secret).digest()


class KeyRing:
    """The secrets one API accepts: none (the API is open), fixed ones, or those of a file.

    A file is re-read on `reload` (SIGHUP) and, with a `reload_interval`, when a `matches` call
    finds it changed (size, mtime or inode) since the last look, at most once per interval. A
    re-read that fails keeps the secrets it had and logs a warning; a file emptied on purpose
    revokes every secret.
    """

    def __init__(
        self,
        name: str,
        keys: tuple[str, ...] = (),
        path: str = "",
        reload_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for number, key in enumerate(keys, 1):
            _check(key, f"{name} secret {number}")
        self.name = name
        self.path = path
        self.enabled = bool(keys or path)
        self._digests = tuple(_digest(k.encode("ascii")) for k in keys)
        self._reload_interval = reload_interval
        self._clock = clock
        self._checked = clock()
        self._stamp: tuple[int, int, int] | None = None
        if path:
            self._stamp = self._stat()
            self._digests = tuple(_digest(k.encode("ascii")) for k in read_keys(path))

    def __repr__(self) -> str:
        return f"KeyRing({self.name!r}, path={self.path!r}, keys={len(self._digests)})"

    @property
    def count(self) -> int:
        """How many secrets are valid now."""
        return len(self._digests)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def matches(self, candidate: bytes) -> bool:
        """Whether `candidate` is one of the valid secrets (every one compared, in constant time)."""
        if self.path and self._reload_interval > 0:
            now = self._clock()
            if now - self._checked >= self._reload_interval:
                self._checked = now
                if self._stat() != self._stamp:
                    self.reload()
        wanted = _digest(candidate)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(digest, wanted)
        return found

    def reload(self) -> bool:
        """Re-read the file (nothing to do without one). Returns False, keeping the old secrets,
        when it cannot be read or holds an invalid line."""
        if not self.path:
            return True
        stamp = self._stat()
        try:
            keys = read_keys(self.path)
        except CredentialsError as exc:
            log.warning("%s: keeping the %d secret(s) read before: %s", self.name, len(self._digests), exc)
            return False
        self._stamp = stamp
        self._digests = tuple(_digest(k.encode("ascii")) for k in keys)
        if keys:
            log.info("%s: %d secret(s) read from %s", self.name, len(keys), self.path)
        else:
            log.warning("%s: %s holds no secret: every request is refused", self.name, self.path)
        return True


def admin_keyring(settings: Settings, env: Mapping[str, str] | None = None) -> KeyRing:
    """The admin API's tokens: from ``--admin-token-file``, else ``PROXY_ADMIN_TOKEN``, else none.

    Raises:
        CredentialsError: both are given, or the file or the token is not usable.
    """
    env = os.environ if env is None else env
    token = env.get(ADMIN_TOKEN_ENV, "").strip()
    if settings.admin_token_file and token:
        raise CredentialsError(f"give the admin token one way: --admin-token-file or {ADMIN_TOKEN_ENV}, not both")
    if settings.admin_token_file:
        interval = settings.credentials_reload_interval
        ring = KeyRing("admin token", path=settings.admin_token_file, reload_interval=interval)
        if not ring.count:
            raise CredentialsError(f"{settings.admin_token_file} holds no token (one a line, # for comments)")
        return ring
    if token:
        try:
            return KeyRing("admin token", keys=(token,))
        except CredentialsError:
            raise CredentialsError(
                f"{ADMIN_TOKEN_ENV}: a token must be {_MIN_LENGTH} to {_MAX_LENGTH} printable ASCII characters"
            ) from None
    return KeyRing("admin token")


@dataclass
class Credentials:
    """The admin tokens and the ingress keys of one proxy."""

    admin: KeyRing
    ingress: KeyRing

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Credentials:
        """Read the files the settings name (and ``PROXY_ADMIN_TOKEN``).

        Raises:
            CredentialsError: a file or the token is not usable.
        """
        ingress = KeyRing(
            "ingress keys", path=settings.ingress_keys_file, reload_interval=settings.credentials_reload_interval
        )
        if ingress.enabled and not ingress.count:
            raise CredentialsError(f"{settings.ingress_keys_file} holds no key (one a line, # for comments)")
        return cls(admin=admin_keyring(settings, env), ingress=ingress)

    def reload(self) -> None:
        """Re-read both files (SIGHUP): edited keys take effect, removed ones are revoked."""
        self.admin.reload()
        self.ingress.reload()


def is_loopback(host: str) -> bool:
    """Whether binding `host` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def start_problem(settings: Settings, credentials: Credentials) -> str | None:
    """Why the proxy must not start with these settings (an admin API open to the network), or None."""
    host = settings.effective_admin_host
    if credentials.admin.enabled or settings.admin_insecure or is_loopback(host):
        return None
    return (
        f"refusing to start: the admin API would listen on {host}:{settings.admin_port} without a token, and "
        "anyone who reaches it could register deployments, kill or purge invocations and edit state. Give it a "
        f"token with --admin-token-file FILE (or {ADMIN_TOKEN_ENV}), bind it to 127.0.0.1 with --admin-host, "
        "or pass --admin-insecure to run it open anyway"
    )


def check_start(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Exit with a one-line message (code 2) when the proxy must not start: a token or key file
    that cannot be used, or an admin API off loopback without a token and without --admin-insecure."""
    try:
        credentials = Credentials.from_settings(settings, env)
    except CredentialsError as exc:
        print(f"python -m proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    problem = start_problem(settings, credentials)
    if problem is not None:
        print(f"python -m proxy: {problem}", file=sys.stderr)
        raise SystemExit(2)
    if not credentials.admin.enabled and not is_loopback(settings.effective_admin_host):
        log.warning(
            "the admin API listens on %s:%d without a token (--admin-insecure)",
            settings.effective_admin_host,
            settings.admin_port,
        )
