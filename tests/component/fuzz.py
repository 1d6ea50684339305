"""Hypothesis strategies for requests to the ingress and admin APIs, and the rule every answer keeps.

The strategies mix the APIs' real vocabulary (service and handler names, ``restate`` verbs,
invocation and awakeable ids, admin paths) with hostile pieces (percent escapes of arbitrary
bytes, non-ASCII, empty and overlong segments, huge or malformed delays, odd headers, bodies that
are not JSON, nest deeply or are not UTF-8), so examples reach deep into routing and parsing
instead of stopping at the first 404.

The rule (`check`): never a 5xx from the proxy (no 500, and no 503 or 507 either on a proxy
that is neither loaded nor full; an invocation's own failure may carry any code), the JSON error
shape on every error, and a request the API refused (4xx from
the ingress or admin itself, not an invocation's own failure) leaves the store as it was.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from urllib.parse import quote

from hypothesis import strategies as st

__all__ = [
    "LIVE_DEPLOYMENT",
    "LIVE_INVOCATION",
    "FuzzRequest",
    "admin_requests",
    "check",
    "ingress_requests",
    "is_refusal",
]

SERVICES = ("Greeter", "Counter", "Signup", "Ledger", "Nope", "restate", "openapi", "health")
HANDLERS = ("greet", "add", "run", "get", "nope", "send", "attach", "output")
VERBS = (
    "health", "awakeables", "a", "invocation", "workflow", "call", "send", "scope", "attach", "output", "lookup",
    "resolve", "reject",
)  # fmt: skip
_INVOCATION_ID = "inv_" + "0" * 26


@dataclass(frozen=True, repr=False)
class FuzzRequest:
    """One generated request: `path` is raw (already percent-encoded where it must be)."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __repr__(self) -> str:
        # Bounded: a failing example's repr is printed, and bodies reach kilobytes.
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"...(%d bytes)" % len(self.body)
        return (
            f"FuzzRequest(method={self.method!r}, path={self.path[:300]!r}, query={self.query[:300]!r}, "
            f"headers={self.headers!r}, body={body!r})"
        )

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as bytes (latin-1 values, as on the wire; httpx would take str as ASCII only)."""
        return [(name.encode("ascii"), value.encode("latin-1")) for name, value in self.headers.items()]

    @property
    def target(self) -> str:
        """Path and query as sent on the request line."""
        return self.path + ("?" + self.query if self.query else "")


def _escaped(raw: bytes) -> str:
    """Every byte of `raw` percent-encoded (so invalid UTF-8 reaches the app as escapes)."""
    return "".join(f"%{b:02X}" for b in raw)


# Any text a URL can carry once percent-encoded (the utf-8 codec leaves surrogates out).
_segment_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=12).map(lambda s: quote(s, safe=""))

_inv_like = st.one_of(
    st.just(_INVOCATION_ID),
    st.text(alphabet="0123456789abcdefghijklmnopqrstuv", min_size=0, max_size=30).map(lambda s: "inv_" + s),
)
_awk_like = st.one_of(
    st.builds(lambda head, tail: f"awk_{head}_{tail}", _segment_text, _segment_text),
    st.builds(lambda tail: f"awk_{'0' * 26}_{tail}", st.one_of(st.integers(min_value=-1).map(str), _segment_text)),
    st.sampled_from(["awk_x_1", "awk_abc_%C2%B2", "awk_%E6%97%A5_1", "awk_", "awk__1"]),
)
segments = st.one_of(
    st.sampled_from(SERVICES + HANDLERS + VERBS),
    _segment_text,
    st.binary(min_size=1, max_size=6).map(_escaped),
    _inv_like,
    _awk_like,
    st.sampled_from(["", ".", "..", "%2F", "%00", "%", "%G0", "+", "a" * 700]),
)

_delays = st.one_of(
    st.sampled_from(["1s", "PT1S", "10ms", "0", "P", "PT", "-1s", "1e5", "1" + "0" * 309, "PT99999999999999999999H"]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(alphabet="PTDHMS0123456789.smhd ", max_size=12),
)

queries = st.one_of(
    st.just(""),
    _delays.map(lambda d: "delay=" + quote(d, safe="")),
    st.lists(
        st.tuples(
            st.sampled_from(["delay", "limit-key", "mode", "after", "before", "limit", "status", "order", "x"]),
            st.one_of(_segment_text, st.binary(max_size=4).map(_escaped), st.integers().map(str)),
        ),
        max_size=3,
    ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
)

_header_names = st.one_of(
    st.sampled_from(
        ["idempotency-key", "content-type", "x-restate-limit-key", "origin", "accept", "expect", "x-tenant", "cookie"]
    ),
    st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=12),
)
# Header values as an HTTP client sends them: visible latin-1 (httpx encodes values as latin-1).
_header_values = st.one_of(
    st.sampled_from(["application/json", "text/plain", "application/x+json", "", " ", "100-continue"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40),
)
headers = st.dictionaries(_header_names, _header_values, max_size=4).map(
    lambda h: {k: v.strip() for k, v in h.items() if k not in ("content-length", "host", "transfer-encoding")}
)

_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

bodies = st.one_of(
    st.just(b""),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.sampled_from([b"{", b"[" * 5000, b'"\xff\xfe"', b"\xff", b"nul", b'{"a": 1} x', b"\x00"]),
)

# Weighted to what the routes take (most are POST or GET), so fewer examples end at a 405.
_methods = st.sampled_from(["GET"] * 3 + ["POST"] * 4 + ["PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"])

#: Placeholders the test replaces by real values of its store when it sends the request: an
#: invocation id and a deployment id that exist (so actions reach more than their 404).
LIVE_INVOCATION = "@inv"
LIVE_DEPLOYMENT = "@dep"

_keys = st.one_of(_segment_text, st.binary(min_size=1, max_size=4).map(_escaped), st.sampled_from(["k", "%EF%BF%BD"]))
_ids = st.one_of(st.just(LIVE_INVOCATION), _inv_like, segments)
_targets = st.one_of(
    st.builds(lambda s, h: [s, h], st.sampled_from(["Greeter", "Ledger"]), st.sampled_from(["greet", "run", "nope"])),
    st.builds(lambda o, k, h: [o, k, h], st.sampled_from(["Counter", "Signup"]), _keys, st.sampled_from(HANDLERS)),
)


def _routed(methods: tuple[str, ...], parts: st.SearchStrategy[list[str]]) -> st.SearchStrategy[tuple[str, str]]:
    """(method, path) pairs: mostly a method the route takes, sometimes any (for the 405s)."""
    method = st.one_of(st.sampled_from(methods), st.sampled_from(methods), st.sampled_from(methods), _methods)
    return st.tuples(method, parts.map(lambda p: "/" + "/".join(p)))


def _corrupted(body: bytes) -> st.SearchStrategy[bytes]:
    """`body`, or a near miss of it: invalid UTF-8 inside its first string, cut short, or trailing bytes."""
    return st.sampled_from(
        [body, body.replace(b'"', b'"\xff', 1), body[: len(body) // 2], body + b"x", body.replace(b":", b"", 1)]
    )


_ingress_routes = st.one_of(
    _routed(("POST", "GET"), _targets.flatmap(lambda t: st.sampled_from([t, [*t, "send"]]))),
    _routed(("POST",), st.builds(lambda v, t: ["restate", v, *t], st.sampled_from(["call", "send"]), _targets)),
    _routed(
        ("GET",),
        st.builds(lambda i, a: ["restate", "invocation", i, a], _ids, st.sampled_from(["attach", "output", "x"])),
    ),
    _routed(
        ("GET",),
        st.builds(
            lambda t, idem, a: ["restate", "invocation", *t, idem, a],
            _targets,
            _keys,
            st.sampled_from(["attach", "output"]),
        ),
    ),
    _routed(
        ("GET",),
        st.builds(
            lambda k, a: ["restate", "workflow", "Signup", k, a], _keys, st.sampled_from(["attach", "output", "run"])
        ),
    ),
    _routed(
        ("POST",),
        st.builds(
            lambda awk, a: ["restate", "awakeables", awk, a], _awk_like, st.sampled_from(["resolve", "reject", "x"])
        ),
    ),
    _routed(("GET",), st.builds(lambda v, i: ["restate", v, i], st.sampled_from(["attach", "output"]), _ids)),
    _routed(
        ("POST", "GET"), st.builds(lambda v: ["restate", v], st.sampled_from(["attach", "output", "lookup", "health"]))
    ),
    _routed(("POST",), st.builds(lambda rest: ["restate", "scope", *rest], st.lists(segments, max_size=4))),
    _routed(("POST", "GET"), st.lists(segments, min_size=1, max_size=7)),
)

_target_bodies = st.builds(
    lambda kind, fields: json.dumps({"target": kind, **fields}).encode(),
    st.sampled_from(["invocation", "workflow", "idempotentInvocation", "nope"]),
    st.dictionaries(
        st.sampled_from(["invocationId", "workflowName", "workflowKey", "service", "handler", "key", "idempotencyKey"]),
        st.one_of(st.sampled_from(["Greeter", "greet", "Signup", _INVOCATION_ID]), st.text(max_size=8), st.integers()),
        max_size=4,
    ),
).flatmap(_corrupted)

ingress_requests = st.builds(
    lambda route, query, head, body: FuzzRequest(route[0], route[1], query, head, body),
    _ingress_routes,
    queries,
    headers,
    st.one_of(bodies, _target_bodies),
)

_ADMIN_HEADS = (
    "deployments", "services", "invocations", "stats", "health", "version", "identity", "query", "metrics",
    "openapi", "schedules", "v1", "v4", "v9", "ui",
)  # fmt: skip
_ADMIN_TAILS = ("state", "bulk", "journal", "cancel", "kill", "pause", "resume", "purge", "limits", "restart")
_ACTIONS = ("cancel", "kill", "pause", "resume", "purge", "restart", "x")

_admin_segments = st.one_of(
    st.sampled_from(_ADMIN_HEADS + _ADMIN_TAILS + SERVICES),
    segments,
)


def _admin_body(value: object) -> bytes:
    return json.dumps(value).encode()


# Near-valid admin bodies reach the validators; registering a real http(s) URI is left out (it
# would make the proxy call out to whatever host the example names).
_state_edits = st.builds(
    lambda key, state, version: _admin_body({"object_key": key, "new_state": state, "version": version}),
    st.one_of(st.text(max_size=8), st.integers(), st.none()),
    st.one_of(
        st.dictionaries(st.text(max_size=6), st.one_of(_json_values, st.lists(st.integers(-300, 300))), max_size=3),
        st.lists(st.integers(), max_size=3),
    ),
    st.one_of(st.none(), st.text(max_size=8), st.integers()),
)
_registrations = st.builds(
    lambda uri, extra: _admin_body({"uri": uri, **extra}),
    st.sampled_from(
        [
            "",
            "nope",
            "ftp://x",
            "http://",
            "://",
            "http:///x",
            "http://[::1",
            "http:// x",
            "http://x:99999",
            "http://x:0",
        ]
    ),
    st.dictionaries(st.sampled_from(["force", "dry_run", "breaking", "additional_headers"]), _json_values, max_size=2),
)
_queries_sql = st.builds(
    lambda sql: _admin_body({"query": sql}),
    st.one_of(st.text(max_size=40), st.sampled_from(["SELECT 1", "SELECT * FROM sys_invocation", "DROP TABLE x", ";"])),
)
_schedules = st.builds(_admin_body, st.dictionaries(
    st.sampled_from(["service", "handler", "key", "cron", "timezone", "every", "input", "overlap", "catch_up", "id"]),
    st.one_of(_json_values, st.sampled_from(["Greeter", "greet", "* * * * *", "1s", "UTC", "Nope/Zone"])),
    max_size=6,
))  # fmt: skip
admin_bodies = st.one_of(bodies, st.one_of(_state_edits, _registrations, _queries_sql, _schedules).flatmap(_corrupted))

_admin_routes = st.one_of(
    _routed(("GET", "DELETE"), st.builds(lambda i: ["invocations", i], _ids)),
    _routed(("POST", "PATCH"), st.builds(lambda i, a: ["invocations", i, a], _ids, st.sampled_from(_ACTIONS))),
    _routed(("GET",), st.builds(lambda i: ["invocations", i, "journal"], _ids)),
    _routed(("POST", "PATCH"), st.builds(lambda a: ["invocations", "bulk", a], st.sampled_from(_ACTIONS))),
    _routed(("GET",), st.just(["invocations"])),
    _routed(("GET",), st.builds(lambda n: ["services", n], st.sampled_from(SERVICES))),
    _routed(
        ("POST", "GET", "PATCH"),
        st.builds(
            lambda n, t: ["services", n, t], st.sampled_from(SERVICES), st.sampled_from(["state", "limits", "x"])
        ),
    ),
    _routed(("GET",), st.builds(lambda n, k: ["services", n, "state", k], st.sampled_from(SERVICES), _keys)),
    _routed(
        ("GET", "PATCH", "DELETE"),
        st.builds(lambda d: ["deployments", d], st.one_of(st.just(LIVE_DEPLOYMENT), segments)),
    ),
    _routed(("POST", "GET"), st.builds(lambda h: [h], st.sampled_from(_ADMIN_HEADS))),
    _routed(
        ("POST", "GET", "PATCH", "DELETE"),
        st.builds(
            lambda rest: ["schedules", *rest],
            st.lists(st.one_of(segments, st.sampled_from(["pause", "resume"])), max_size=2),
        ),
    ),
    _routed(
        ("GET", "POST"),
        st.builds(
            lambda v, rest: [v, *rest], st.sampled_from(["v1", "v4", "v9"]), st.lists(_admin_segments, max_size=3)
        ),
    ),
    _routed(("GET", "POST"), st.lists(_admin_segments, min_size=1, max_size=5)),
)

admin_requests = st.builds(
    lambda route, query, head, body: FuzzRequest(route[0], route[1], query, head, body),
    _admin_routes,
    queries,
    headers,
    admin_bodies,
)


def is_refusal(status: int, headers: dict[str, str]) -> bool:
    """True for an error the API itself answered (the request was refused), as opposed to an
    invocation's own terminal failure (``x-restate-error-source: invocation``), which is stored."""
    return 400 <= status < 500 and headers.get("x-restate-error-source") != "invocation"


def check(request: FuzzRequest, status: int, headers: dict[str, str], body: bytes) -> None:
    """The rule every answer keeps (the store comparison is the caller's: it holds the store)."""
    # An invocation's own failure carries its code as the status (a handler may fail with 500).
    own_failure = headers.get("x-restate-error-source") == "invocation"
    assert status < 500 or own_failure, f"{request}: {status} {body[:300]!r}"
    if status >= 400 and request.method != "HEAD":
        assert headers.get("content-type", "").startswith("application/json"), f"{request}: {status} {headers}"
        error = json.loads(body)
        assert {"code", "message"} <= set(error), f"{request}: {error}"
