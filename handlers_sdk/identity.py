"""Request identity: the claims the proxy signs into every request to a handler service, and
their verification.

The scheme is Restate's request identity v1, extended: two headers,
``x-restate-signature-scheme: v1`` and ``x-restate-jwt-v1: <compact JWT>``, the JWT signed with
Ed25519 (``alg: EdDSA``, ``kid`` = the signer's public key) and public keys written
``publickeyv1_<base58 of the 32 raw bytes>``, so keys and tokens read the same as Restate's.
Restate's claims (``aud`` = the request path, ``iat``, ``nbf``, ``exp``) are kept; three more bind
the token to one request: ``method``, ``body_sha256`` (so the journal, the attempt token and the
callback URL in the body are covered) and ``deployment`` (the handler service's URL as
registered, so a captured request cannot be replayed to another service). This module is the one
place the claims are encoded: the proxy (`proxy.engine.identity`) signs with it, `Verifier`
checks with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "DEPLOYMENT_URL_ENV",
    "IDENTITY_KEYS_ENV",
    "JWT_HEADER",
    "KEY_PREFIX",
    "SCHEME_HEADER",
    "SCHEME_V1",
    "Claims",
    "IdentityError",
    "Verifier",
    "body_digest",
    "claims_for",
    "decode_public_key",
    "encode_public_key",
    "keys_from_env",
    "signing_input",
    "token",
]

#: Header naming the signature scheme (Restate's name); ``v1`` is the only one accepted.
SCHEME_HEADER = "x-restate-signature-scheme"
SCHEME_V1 = "v1"
#: Header carrying the compact JWT of scheme v1 (Restate's name).
JWT_HEADER = "x-restate-jwt-v1"
#: Prefix of a public key in its text form (Restate's).
KEY_PREFIX = "publickeyv1_"
#: Environment variable read by `handlers_sdk.app` when no ``identity_keys`` are passed:
#: public keys separated by commas or whitespace.
IDENTITY_KEYS_ENV = "HANDLERS_SDK_IDENTITY_KEYS"
#: Environment variable read by `handlers_sdk.app` when no ``deployment_url`` is passed.
DEPLOYMENT_URL_ENV = "HANDLERS_SDK_DEPLOYMENT_URL"

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {c: i for i, c in enumerate(_BASE58)}
#: Longest JWT header value read: ours are ~600 bytes; this bounds the work an unsigned caller causes.
_MAX_TOKEN = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """What one signed request says about itself."""

    #: The path relative to the deployment: ``/invoke/{service}/{handler}`` or ``/discovery``.
    aud: str
    #: Issued at, not before, expires: Unix seconds.
    iat: int
    nbf: int
    exp: int
    method: str
    #: sha256 of the request body, base64url without padding.
    body_sha256: str
    #: The handler service's URL as registered with the proxy (its deployment).
    deployment: str


class _Header(msgspec.Struct, frozen=True):
    alg: str
    typ: str = "JWT"
    kid: str = ""


_claims_decoder = msgspec.json.Decoder(Claims)
_header_decoder = msgspec.json.Decoder(_Header)


class IdentityError(Exception):
    """A request whose identity does not verify; the message says why (never the token itself)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if "=" in text:
        raise ValueError("padding in a base64url segment")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def body_digest(body: bytes) -> str:
    """The ``body_sha256`` claim of a body."""
    return _b64(hashlib.sha256(body).digest())


def claims_for(method: str, path: str, body: bytes, deployment: str, now: float, validity: int) -> Claims:
    """The claims of one request, valid from `validity` seconds before `now` to as long after
    (the margin before is for a handler whose clock runs behind the proxy's, as Restate does)."""
    iat = int(now)
    return Claims(
        aud=path,
        iat=iat,
        nbf=iat - validity,
        exp=iat + validity,
        method=method,
        body_sha256=body_digest(body),
        deployment=deployment,
    )


def signing_input(kid: str, claims: Claims) -> bytes:
    """``base64url(header) "." base64url(claims)``: the bytes the signature covers."""
    header = _b64(msgspec.json.encode(_Header(alg="EdDSA", typ="JWT", kid=kid)))
    return f"{header}.{_b64(msgspec.json.encode(claims))}".encode("ascii")


def token(signed: bytes, signature: bytes) -> str:
    """The compact JWT from `signing_input` and its Ed25519 signature."""
    return f"{signed.decode('ascii')}.{_b64(signature)}"


def encode_public_key(raw: bytes) -> str:
    """``publickeyv1_<base58>`` of a raw 32-byte Ed25519 public key."""
    value = int.from_bytes(raw, "big")
    digits: list[str] = []
    while value:
        value, digit = divmod(value, 58)
        digits.append(_BASE58[digit])
    zeros = len(raw) - len(raw.lstrip(b"\x00"))
    return KEY_PREFIX + "1" * zeros + "".join(reversed(digits))


def decode_public_key(text: str) -> bytes:
    """The raw 32 bytes of a ``publickeyv1_...`` key.

    Raises:
        ValueError: not a v1 public key (wrong prefix, not base58, not 32 bytes).
    """
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"identity keys start with {KEY_PREFIX!r}, got {text[:16]!r}...")
    body = text[len(KEY_PREFIX) :]
    value = 0
    for char in body:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise ValueError(f"identity key {text!r} is not base58 (character {char!r})")
        value = value * 58 + digit
    zeros = len(body) - len(body.lstrip("1"))
    raw = b"\x00" * zeros + (value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b"")
    if len(raw) != 32:
        raise ValueError(f"identity key {text!r} decodes to {len(raw)} bytes, not 32")
    return raw


def keys_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The public keys in ``HANDLERS_SDK_IDENTITY_KEYS`` (commas or whitespace between them)."""
    value = (os.environ if env is None else env).get(IDENTITY_KEYS_ENV, "")
    return [k for k in value.replace(",", " ").split() if k]


def _authority(url: str) -> tuple[str, int | None, str]:
    parts = urlsplit(url if "//" in url else "//" + url)
    try:
        port = parts.port
    except ValueError:
        port = -1  # an unparsable port matches nothing
    return (parts.hostname or "").lower(), port, parts.scheme.lower()


class Verifier:
    """Checks a request's identity against a list of public keys (two during a rotation).

    Args:
        keys: ``publickeyv1_...`` public keys; a request signed by any of them is accepted.
        deployment: this service's URL as registered with the proxy. Empty: the ``deployment``
            claim must name the host and port the request was sent to (its Host header).
        clock: Unix seconds (tests pass a fake one).
    """

    def __init__(self, keys: Iterable[str], deployment: str = "", clock: Callable[[], float] = time.time) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            raw = decode_public_key(key)
            self._keys[encode_public_key(raw)] = Ed25519PublicKey.from_public_bytes(raw)
        if not self._keys:
            raise ValueError("a Verifier needs at least one identity key")
        self._deployment = deployment.rstrip("/")
        self._clock = clock

    @property
    def keys(self) -> Sequence[str]:
        """The accepted public keys, in their text form."""
        return list(self._keys)

    def verify_headers(self, method: str, path: str, headers: Mapping[str, str]) -> Claims:
        """Check everything but the body digest: scheme, signature, window, method, path, deployment.

        Args:
            headers: the request's headers with lower-case names (``host`` among them).

        Raises:
            IdentityError: unsigned, badly signed, expired or not yet valid, or for another
                method, path or deployment.
        """
        scheme = headers.get(SCHEME_HEADER)
        if scheme is None:
            raise IdentityError(
                f"unsigned request: header {SCHEME_HEADER} missing; this service accepts signed requests only"
            )
        if scheme != SCHEME_V1:
            raise IdentityError(
                f"signature scheme {scheme[:32]!r} not accepted; this service accepts {SCHEME_V1!r} only"
            )
        jwt = headers.get(JWT_HEADER)
        if not jwt:
            raise IdentityError(f"unsigned request: header {JWT_HEADER} missing")
        claims = self._check_token(jwt)
        # What the request is before when: a request for another target says so even once expired.
        if claims.method != method:
            raise IdentityError(f"signature is for method {claims.method[:16]!r}, not {method}")
        if claims.aud != path:
            raise IdentityError(f"signature is for path {claims.aud[:200]!r}, not {path[:200]!r}")
        self._check_deployment(claims.deployment, headers.get("host", ""))
        now = int(self._clock())
        if now > claims.exp:
            raise IdentityError(f"signature expired {now - claims.exp}s ago (replayed or delayed request)")
        if now < claims.nbf:
            raise IdentityError(f"signature not valid for another {claims.nbf - now}s (clocks apart?)")
        return claims

    def verify_body(self, claims: Claims, body: bytes) -> None:
        """Check the body digest of a request whose headers verified.

        Raises:
            IdentityError: the body is not the one that was signed.
        """
        if body_digest(body) != claims.body_sha256:
            raise IdentityError("signature does not cover this body (tampered request)")

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Claims:
        """`verify_headers` then `verify_body`: the whole check of one request."""
        claims = self.verify_headers(method, path, headers)
        self.verify_body(claims, body)
        return claims

    def _check_token(self, jwt: str) -> Claims:
        if len(jwt) > _MAX_TOKEN:
            raise IdentityError(f"{JWT_HEADER} longer than {_MAX_TOKEN} characters")
        parts = jwt.split(".")
        if len(parts) != 3:
            raise IdentityError(f"{JWT_HEADER} is not a compact JWT")
        try:
            header = _header_decoder.decode(_unb64(parts[0]))
            signature = _unb64(parts[2])
            claims = _claims_decoder.decode(_unb64(parts[1]))
        except (ValueError, binascii.Error, msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise IdentityError(f"malformed {JWT_HEADER}: {str(exc)[:200]}") from None
        if header.alg != "EdDSA":
            raise IdentityError(f"JWT algorithm {header.alg[:16]!r} not accepted, only EdDSA")
        signed = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
        # The kid names the key that signed; try it first, then the others (a signer need not send one).
        named = self._keys.get(header.kid)
        candidates = [named] if named is not None else []
        candidates += [k for kid, k in self._keys.items() if kid != header.kid]
        for key in candidates:
            try:
                key.verify(signature, signed)
            except InvalidSignature:
                continue
            return claims
        raise IdentityError(f"bad signature: not signed by any of the {len(self._keys)} identity keys of this service")

    def _check_deployment(self, deployment: str, host: str) -> None:
        if self._deployment:
            if deployment.rstrip("/") != self._deployment:
                raise IdentityError(f"signature is for deployment {deployment[:200]!r}, not this one")
            return
        # No URL configured: the claim must name the host and port this request was sent to.
        claim_host, claim_port, scheme = _authority(deployment)
        req_host, req_port, _ = _authority(host)
        default = _DEFAULT_PORTS.get(scheme)
        if not claim_host or (claim_host, claim_port or default) != (req_host, req_port or default):
            raise IdentityError(f"signature is for deployment {deployment[:200]!r}, not one at host {host[:200]!r}")
