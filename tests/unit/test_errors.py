"""proxy/errors.py (and the SDK's errors): the documented tree, stable codes, one JSON shape."""

from __future__ import annotations

import re
from datetime import timedelta

import msgspec
import pytest

from durable_core import errors
from durable_core.errors import (
    BadRequest,
    Conflict,
    Fenced,
    InvalidJson,
    NotReady,
    ProxyError,
    StorageFull,
    error_body,
)
from handlers_sdk.errors import JournalMismatchError, RetryableError, TerminalError

ERROR_CLASSES = [
    obj for name in errors.__all__ if isinstance(obj := getattr(errors, name), type) and issubclass(obj, ProxyError)
]


def _documented_tree() -> dict[str, tuple[int, str, str | None]]:
    """Parse the module docstring's tree: name -> (status, code, parent name)."""
    assert errors.__doc__ is not None
    tree: dict[str, tuple[int, str, str | None]] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(\s*)(?:[│ ]*[├└]── )?(\w+) \((\d{3}) (\w+)\)", line)
        if match is None:
            continue
        depth = len(line) - len(line.lstrip(" │├└─"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else None
        tree[match.group(2)] = (int(match.group(3)), match.group(4), parent)
        stack.append((depth, match.group(2)))
    return tree


def test_docstring_tree_matches_the_classes() -> None:
    tree = _documented_tree()
    assert set(tree) == {cls.__name__ for cls in ERROR_CLASSES}
    for cls in ERROR_CLASSES:
        status, code, parent = tree[cls.__name__]
        assert (cls.status, cls.code) == (status, code), cls.__name__
        if parent is None:
            assert cls is ProxyError
        else:
            assert cls.__bases__[0].__name__ == parent, cls.__name__


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("source", ["ingress", "admin"])
def test_json_shape(cls: type[ProxyError], source: str) -> None:
    error = cls('it "broke" ✓\n')
    body = msgspec.json.decode(error.body(source))
    assert body == {"code": cls.status, "error": cls.code, "message": 'it "broke" ✓\n', "source": source}
    assert error.message == str(error) == 'it "broke" ✓\n'


def test_default_source_is_ingress() -> None:
    assert msgspec.json.decode(NotReady("x").body())["source"] == "ingress"


def test_error_body() -> None:
    assert msgspec.json.decode(error_body(418, "teapot", "short and stout", "invocation")) == {
        "code": 418,
        "error": "teapot",
        "message": "short and stout",
        "source": "invocation",
    }


def test_statuses_of_note() -> None:
    assert (NotReady.status, StorageFull.status, Fenced.status) == (470, 507, 409)
    assert issubclass(Fenced, Conflict) and issubclass(InvalidJson, BadRequest)


# -- SDK errors -------------------------------------------------------------------------------


def test_terminal_error() -> None:
    assert TerminalError("no").status_code == 500
    error = TerminalError("not found", 404)
    assert (error.message, error.status_code, str(error)) == ("not found", 404, "not found")


def test_retryable_error() -> None:
    assert RetryableError("later").retry_after is None
    assert RetryableError("later", timedelta(seconds=3)).retry_after == timedelta(seconds=3)


def test_journal_mismatch_error() -> None:
    error = JournalMismatchError(2, 'run "a"', 'run "b"')
    assert error.code == 570
    assert str(error) == 'journal mismatch at index 2: recorded run "a", replay attempted run "b"'


def test_sdk_errors_are_exceptions_not_control_flow() -> None:
    for cls in (TerminalError, RetryableError, JournalMismatchError):
        assert issubclass(cls, Exception)
