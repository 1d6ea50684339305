"""Fixtures of the whole suite."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_admin_token_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy built in process reads ``PROXY_ADMIN_TOKEN`` (`proxy.credentials`): a token
    exported for the CLI in the developer's shell must not put every in-process admin API behind it.
    (Child processes never see it: the e2e harness drops every ``PROXY_*`` variable.)"""
    monkeypatch.delenv("PROXY_ADMIN_TOKEN", raising=False)
