"""Request identity (`handlers_sdk.identity`): the claims, the key format and the verifier.

Signed here with a key made in the test, as `proxy.engine.identity` signs (the same
`claims_for` / `signing_input` / `token`), and checked by `Verifier`: every part the signature
covers is tampered with in turn, and each is refused with its own reason.
"""

from __future__ import annotations

import base64
import json
import timeit

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from handlers_sdk.identity import (
    JWT_HEADER,
    KEY_PREFIX,
    SCHEME_HEADER,
    IdentityError,
    Verifier,
    body_digest,
    claims_for,
    decode_public_key,
    encode_public_key,
    keys_from_env,
    signing_input,
    token,
)

NOW = 1_800_000_000
DEPLOYMENT = "http://orders.internal:9080"
PATH = "/invoke/OrderFulfillment/run"
BODY = b'{"invocation_id":"inv_1","callback_url":"http://127.0.0.1:9071","journal":[]}'


def _public(key: Ed25519PrivateKey) -> str:
    return encode_public_key(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _headers(
    key: Ed25519PrivateKey,
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    deployment: str = DEPLOYMENT,
    now: float = NOW,
    validity: int = 60,
    host: str = "orders.internal:9080",
) -> dict[str, str]:
    claims = claims_for(method, path, body, deployment, now, validity)
    signed = signing_input(_public(key), claims)
    return {SCHEME_HEADER: "v1", JWT_HEADER: token(signed, key.sign(signed)), "host": host}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _verifier(*keys: Ed25519PrivateKey, now: float = NOW, deployment: str = "") -> Verifier:
    return Verifier([_public(k) for k in keys], deployment, clock=lambda: now)


def _refused(verifier: Verifier, headers: dict[str, str], *, method: str = "POST", path: str = PATH,
             body: bytes = BODY) -> str:  # fmt: skip
    with pytest.raises(IdentityError) as info:
        verifier.verify(method, path, headers, body)
    return str(info.value)


def test_a_signed_request_verifies_and_its_claims_are_restates_plus_ours(key: Ed25519PrivateKey) -> None:
    headers = _headers(key)
    claims = _verifier(key).verify("POST", PATH, headers, BODY)
    assert (claims.aud, claims.method, claims.deployment) == (PATH, "POST", DEPLOYMENT)
    assert (claims.nbf, claims.iat, claims.exp) == (NOW - 60, NOW, NOW + 60)
    assert claims.body_sha256 == body_digest(BODY)
    # The JWT reads as Restate's: EdDSA, typ JWT, the kid is the public key.
    header = json.loads(base64.urlsafe_b64decode(headers[JWT_HEADER].split(".")[0] + "=="))
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": _public(key)}


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"body": BODY.replace(b"127.0.0.1:9071", b"evil.example:80")}, "does not cover this body"),
        ({"body": BODY + b" "}, "does not cover this body"),
        ({"path": "/invoke/OrderFulfillment/cancel"}, "is for path"),
        ({"method": "PUT"}, "is for method"),
    ],
    ids=["callback-url", "one-byte-more", "path", "method"],
)
def test_a_request_other_than_the_signed_one_is_refused(
    key: Ed25519PrivateKey, tamper: dict[str, object], reason: str
) -> None:
    headers = _headers(key)
    args: dict[str, object] = {"method": "POST", "path": PATH, "body": BODY, **tamper}
    assert reason in _refused(_verifier(key), headers, **args)  # type: ignore[arg-type]


def test_another_deployment_is_refused_by_host_and_by_configured_url(key: Ed25519PrivateKey) -> None:
    signed_for_other = _headers(key, deployment="http://payments.internal:9080")
    assert "is for deployment" in _refused(_verifier(key), signed_for_other)
    # Configured: the claim must be exactly this service's URL, whatever the Host header says.
    assert "is for deployment" in _refused(_verifier(key, deployment="http://orders.internal:9081"), _headers(key))
    _verifier(key, deployment=DEPLOYMENT + "/").verify("POST", PATH, _headers(key, host="anything"), BODY)


@pytest.mark.parametrize(
    ("deployment", "host", "ok"),
    [
        ("http://Orders.Internal:9080", "orders.internal:9080", True),
        ("http://orders.internal", "orders.internal:80", True),
        ("https://orders.internal", "orders.internal", True),
        ("https://orders.internal", "orders.internal:80", False),
        ("http://orders.internal:9080", "orders.internal:9081", False),
        ("http://orders.internal:9080", "", False),
        ("http://[::1]:9080", "[::1]:9080", True),
        ("not a url", "orders.internal:9080", False),
    ],
)
def test_without_a_configured_url_the_claim_must_name_the_host_sent_to(
    key: Ed25519PrivateKey, deployment: str, host: str, ok: bool
) -> None:
    headers = _headers(key, deployment=deployment, host=host)
    if ok:
        _verifier(key).verify("POST", PATH, headers, BODY)
    else:
        assert "is for deployment" in _refused(_verifier(key), headers)


def test_expired_and_not_yet_valid_signatures_are_refused(key: Ed25519PrivateKey) -> None:
    headers = _headers(key, validity=5)
    _verifier(key, now=NOW + 5).verify("POST", PATH, headers, BODY)  # the last valid second
    assert "expired 1s ago" in _refused(_verifier(key, now=NOW + 6), headers)
    assert "expired" in _refused(_verifier(key, now=NOW + 3600), headers)
    assert "not valid for another" in _refused(_verifier(key, now=NOW - 6), headers)


def test_a_key_not_configured_is_refused_and_rotation_accepts_both(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    assert "bad signature" in _refused(_verifier(other), _headers(key))
    both = _verifier(other, key)  # the old and the new key, during a rotation
    both.verify("POST", PATH, _headers(key), BODY)
    both.verify("POST", PATH, _headers(other), BODY)
    # A kid that names no configured key does not help a signature by another key.
    third = Ed25519PrivateKey.generate()
    assert "bad signature" in _refused(both, _headers(third))


def test_a_signature_moved_to_other_claims_is_refused(key: Ed25519PrivateKey) -> None:
    genuine = _headers(key)[JWT_HEADER].split(".")
    forged_claims = claims_for("POST", "/invoke/OrderFulfillment/cancel", BODY, DEPLOYMENT, NOW, 60)
    payload = base64.urlsafe_b64encode(msgspec.json.encode(forged_claims)).rstrip(b"=").decode()
    forged = {SCHEME_HEADER: "v1", JWT_HEADER: f"{genuine[0]}.{payload}.{genuine[2]}", "host": "orders.internal:9080"}
    assert "bad signature" in _refused(_verifier(key), forged, path="/invoke/OrderFulfillment/cancel")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "unsigned request: header x-restate-signature-scheme missing"),
        ({SCHEME_HEADER: "unsigned"}, "signature scheme 'unsigned' not accepted"),
        ({SCHEME_HEADER: "v1"}, "header x-restate-jwt-v1 missing"),
        ({SCHEME_HEADER: "v1", JWT_HEADER: "a.b"}, "not a compact JWT"),
        ({SCHEME_HEADER: "v1", JWT_HEADER: "!!.!!.!!"}, "malformed"),
        ({SCHEME_HEADER: "v1", JWT_HEADER: "x" * 5000}, "longer than"),
    ],
    ids=["no-scheme", "unsigned", "no-jwt", "two-parts", "not-base64", "huge"],
)
def test_unsigned_and_malformed_requests_are_refused_with_a_reason(headers: dict[str, str], reason: str) -> None:
    assert reason in _refused(_verifier(Ed25519PrivateKey.generate()), {**headers, "host": "orders.internal:9080"})


def test_another_algorithm_is_refused(key: Ed25519PrivateKey) -> None:
    parts = _headers(key)[JWT_HEADER].split(".")
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    headers = {SCHEME_HEADER: "v1", JWT_HEADER: f"{none_alg}.{parts[1]}.", "host": "orders.internal:9080"}
    assert "algorithm 'none' not accepted" in _refused(_verifier(key), headers)


def test_public_keys_round_trip_in_restates_text_form() -> None:
    for raw in (bytes(32), b"\x00\x01" + bytes(range(30)), b"\xff" * 32):
        text = encode_public_key(raw)
        assert text.startswith(KEY_PREFIX)
        assert decode_public_key(text) == raw
    # Base58 with the Bitcoin alphabet: one leading zero byte is one "1".
    assert encode_public_key(b"\x00" + b"\x00" * 30 + b"\x39") == KEY_PREFIX + "1" * 31 + "z"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("pk_abc", "start with 'publickeyv1_'"),
        (KEY_PREFIX + "0OIl", "is not base58"),
        (KEY_PREFIX + "abc", "not 32"),
    ],
)
def test_bad_public_keys_are_refused_at_configuration(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Verifier([text])


def test_a_verifier_needs_a_key_and_keys_come_from_the_environment() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Verifier([])
    assert keys_from_env({"HANDLERS_SDK_IDENTITY_KEYS": " publickeyv1_a, publickeyv1_b\npublickeyv1_c "}) == [
        "publickeyv1_a", "publickeyv1_b", "publickeyv1_c",
    ]  # fmt: skip
    assert keys_from_env({}) == []


def test_signing_and_verifying_are_cheap(key: Ed25519PrivateKey) -> None:
    """Per request: well under a millisecond each (measured: ~60 us to sign, ~150 us to verify)."""
    verifier = _verifier(key)
    headers = _headers(key)
    runs = 200
    sign_us = timeit.timeit(lambda: _headers(key), number=runs) / runs * 1e6
    verify_us = timeit.timeit(lambda: verifier.verify("POST", PATH, headers, BODY), number=runs) / runs * 1e6
    print(f"sign {sign_us:.0f} us, verify {verify_us:.0f} us")
    assert sign_us < 2000 and verify_us < 2000
