"""Where the proxy listens: the hosts and ports of its three listeners, TLS settings, connection caps."""

from __future__ import annotations

import resource

import pytest

from proxy.config import Settings, settings_from
from proxy.connection import connection_cap
from proxy.serve import listeners


def test_host_binds_all_three_unless_admin_or_callback_host_say_otherwise() -> None:
    binds = {item.name: (item.host, item.port) for item in listeners(Settings(host="0.0.0.0"))}
    assert binds == {"ingress": ("0.0.0.0", 8080), "admin": ("0.0.0.0", 9070), "callback": ("0.0.0.0", 9071)}
    settings = settings_from(["--host", "0.0.0.0", "--admin-host", "127.0.0.1", "--callback-host", "10.0.0.7"], env={})
    binds = {item.name: (item.host, item.port) for item in listeners(settings)}
    assert binds == {"ingress": ("0.0.0.0", 8080), "admin": ("127.0.0.1", 9070), "callback": ("10.0.0.7", 9071)}


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({}, "http://127.0.0.1:9071"),
        ({"host": "0.0.0.0"}, "http://127.0.0.1:9071"),  # a wildcard bind is reached on the loopback
        ({"callback_host": "10.0.0.7", "callback_port": 7000}, "http://10.0.0.7:7000"),
        ({"callback_host": "::1"}, "http://[::1]:9071"),
        ({"tls_cert": "c.pem", "tls_key": "k.pem"}, "https://127.0.0.1:9071"),
        (
            {"callback_url": "https://proxy.internal:443", "tls_cert": "c.pem", "tls_key": "k.pem"},
            "https://proxy.internal:443",
        ),
    ],
)
def test_the_callback_url_points_at_the_callback_listener(fields: dict[str, object], url: str) -> None:
    assert Settings(**fields).effective_callback_url == url  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"callback_port": 9070}, "must all differ"),
        ({"admin_port": 8080}, "must all differ"),
        ({"tls_cert": "c.pem"}, "give both or neither"),
        ({"tls_key": "k.pem"}, "give both or neither"),
        ({"header_timeout": 0.0}, "must be > 0"),
        ({"max_connections": 0}, "must be >= 1"),
    ],
)
def test_bad_listener_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**fields)  # type: ignore[arg-type]


def test_connection_flags_parse() -> None:
    settings = settings_from(
        ["--header-timeout", "500ms", "--keep-alive-timeout", "2m", "--max-connections", "100", "--callback-port", "7"],
        env={"PROXY_HANDLER_CA_FILE": "/ca.pem"},
    )
    assert (settings.header_timeout, settings.keep_alive_timeout, settings.max_connections) == (0.5, 120.0, 100)
    assert (settings.callback_port, settings.handler_ca_file) == (7, "/ca.pem")


@pytest.mark.parametrize(
    ("requested", "fd_limit", "reserved", "cap"),
    [
        (4096, 1_048_576, 768, 4096),  # plenty of descriptors: as asked
        (4096, 20_000, 768, 4096),
        (4096, 4096, 768, 1109),  # (4096 - 768) // 3
        (4096, 512, 768, 85),  # the reserve is at most half the limit: (512 - 256) // 3
        (4096, resource.RLIM_INFINITY, 768, 4096),
        (4096, 4, 768, 1),
    ],
)
def test_the_connection_caps_fit_in_the_fd_limit(requested: int, fd_limit: int, reserved: int, cap: int) -> None:
    assert connection_cap(requested, fd_limit, reserved, 3) == cap
