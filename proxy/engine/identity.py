"""The proxy's request identity: its Ed25519 signing key, where the key lives, and the headers
that sign every request the proxy sends to a handler service (invokes and discovery).

Where the key comes from, first match wins:

* ``--signing-key-file``: a PEM private key (PKCS#8, as ``openssl genpkey -algorithm ed25519``
  or ``python -m proxy identity new-key`` write it; Restate's request identity key file works).
* LMDB: ``{data_dir}/signing-key.pem``, created with mode 0600 at first start.
* PostgreSQL: a row of the store (`durable_core.identity`), written by the first proxy to start,
  so every proxy of the database signs with the same key and handlers trust one public key.

A key file (either of the first two) is re-read when it changes, checked at most once per
`_RELOAD_CHECK` seconds when a request is signed or the identity is shown: replacing the file rotates the key without a
restart (README, "Signed invocations"). The claims and their encoding are
`handlers_sdk.identity`'s, the one place they are defined; the private key never leaves this
module (not in logs, errors, metrics or the admin API).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from durable_core.identity import stored_signing_key
from handlers_sdk.clock import Clock
from handlers_sdk.identity import (
    JWT_HEADER,
    SCHEME_HEADER,
    SCHEME_V1,
    claims_for,
    encode_public_key,
    signing_input,
    token,
)
from proxy.config import Settings

if TYPE_CHECKING:  # the operator CLI imports this module for `new-key` without the server's dependencies
    from proxy.store.writer import Writer

__all__ = [
    "KEY_FILE_NAME",
    "Identity",
    "IdentityView",
    "SigningKeyError",
    "load_private_key",
    "new_private_key_pem",
    "public_key_of",
    "write_key_file",
]

log = logging.getLogger("proxy.engine.identity")

#: The key file the proxy creates in its LMDB data directory.
KEY_FILE_NAME = "signing-key.pem"
#: Seconds between two checks of the key file for a replaced key.
_RELOAD_CHECK = 1.0

Source = Literal["file", "data-dir", "store"]


class SigningKeyError(Exception):
    """The signing key cannot be read, created or used (the proxy does not start)."""


class IdentityView(msgspec.Struct, frozen=True, kw_only=True):
    """What the admin API shows of the identity (``GET /identity``): never the private key."""

    #: Restate's text form, ``publickeyv1_<base58>``: what handlers put in ``identity_keys``.
    public_key: str
    signature_scheme: str = SCHEME_V1
    algorithm: str = "EdDSA (Ed25519)"
    #: file (--signing-key-file), data-dir (created in --data-dir) or store (PostgreSQL).
    source: str
    #: The key file, re-read when it changes (empty for a key held by the store).
    key_file: str = ""
    #: Seconds a signature is valid on either side of its issue time.
    validity_seconds: int


def new_private_key_pem() -> bytes:
    """A new Ed25519 private key, PEM (PKCS#8, unencrypted)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes, where: str) -> Ed25519PrivateKey:
    """The Ed25519 key in `pem`.

    Raises:
        SigningKeyError: not one unencrypted Ed25519 PEM private key. The message names `where`
            and never quotes the file.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # The exception text of cryptography names the problem, not the key material.
        raise SigningKeyError(f"{where}: not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{where}: the key is {type(key).__name__}, not Ed25519")
    return key


def public_key_of(key: Ed25519PrivateKey) -> str:
    """``publickeyv1_<base58>`` of a private key's public half."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return encode_public_key(raw)


def write_key_file(path: Path, pem: bytes) -> None:
    """Create `path` with mode 0600 holding `pem`; never overwrites a file.

    Raises:
        FileExistsError: the file exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class Identity:
    """The signing key of the running proxy; `start` loads (or creates) it."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._validity = max(1, int(settings.signing_validity))
        self._key: Ed25519PrivateKey | None = None
        self._kid = ""
        self.source: Source = "file"
        self._path: Path | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0

    @property
    def public_key(self) -> str:
        """The public key in Restate's text form (empty before `start`)."""
        return self._kid

    def view(self) -> IdentityView:
        """The public side of the identity, for the admin API and the CLI (a replaced key file
        is picked up first, so what is shown is what signs)."""
        self._maybe_reload()
        return IdentityView(
            public_key=self._kid,
            source=self.source,
            key_file=str(self._path) if self._path is not None else "",
            validity_seconds=self._validity,
        )

    async def start(self, writer: Writer) -> None:
        """Load the key from its source, creating it at first start. Returns after commit when
        the store holds it.

        Raises:
            SigningKeyError: the key file is missing, unreadable or not an Ed25519 key.
        """
        settings = self._settings
        if settings.signing_key_file:
            self.source, self._path = "file", Path(settings.signing_key_file)
            self._load_file(self._path)
        elif settings.store:
            self.source = "store"
            pem, created = await writer.submit(lambda txn: stored_signing_key(txn, new_private_key_pem()))
            self._use(load_private_key(pem, "the signing key in the store"))
            if created:
                log.info("created the request identity key in the store")
        else:
            self.source, self._path = "data-dir", Path(settings.data_dir) / KEY_FILE_NAME
            try:
                write_key_file(self._path, new_private_key_pem())
                log.info("created the request identity key %s", self._path)
            except FileExistsError:
                pass
            except OSError as exc:
                raise SigningKeyError(f"cannot create {self._path}: {exc.strerror}") from None
            self._load_file(self._path)
        log.info(
            "request identity key %s (%s); handlers verify it with identity_keys=[%r]",
            self._kid, self.source, self._kid,
        )  # fmt: skip

    def _load_file(self, path: Path) -> None:
        try:
            st = path.stat()
            pem = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read the signing key file {path}: {exc.strerror}") from None
        if st.st_mode & 0o077:
            log.warning("the signing key file %s is readable by other users: chmod 600 it", path)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._use(load_private_key(pem, f"signing key file {path}"))
        self._stamp = stamp

    def _use(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._kid = public_key_of(key)

    def _maybe_reload(self) -> None:
        """Pick up a replaced key file (a rotation); keep the current key if the new one is bad."""
        path = self._path
        now = self._clock.monotonic()
        if path is None or now < self._next_check:
            return
        self._next_check = now + _RELOAD_CHECK
        try:
            stamp = _file_stamp(path)
        except OSError as exc:
            log.error("signing key file %s: %s; still signing with %s", path, exc.strerror, self._kid)
            return
        if stamp == self._stamp:
            return
        old = self._kid
        try:
            self._load_file(path)
        except SigningKeyError as exc:
            self._stamp = stamp  # one error per change of the file, not one per second
            log.error("%s; still signing with %s", exc, old)
            return
        if self._kid != old:
            log.warning("request identity key rotated: now signing with %s (was %s)", self._kid, old)

    def headers(self, method: str, path: str, body: bytes, deployment: str) -> dict[str, str]:
        """The two headers that sign one request.

        Args:
            path: the path relative to the deployment (``/invoke/{service}/{handler}``, ``/discovery``).
            deployment: the handler service's URL as registered.
        """
        self._maybe_reload()
        key = self._key
        if key is None:
            raise RuntimeError("Identity.start() first")
        claims = claims_for(method, path, body, deployment, self._clock.now_ms() / 1000, self._validity)
        signed = signing_input(self._kid, claims)
        return {SCHEME_HEADER: SCHEME_V1, JWT_HEADER: token(signed, key.sign(signed))}
