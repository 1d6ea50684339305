"""Token and key files (`proxy.credentials`): parsing, constant-time matching, reloading, and the
start-up refusal of an admin API open to the network."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from proxy.config import Settings, settings_from
from proxy.credentials import (
    Credentials,
    CredentialsError,
    KeyRing,
    admin_keyring,
    check_start,
    is_loopback,
    read_keys,
    start_problem,
)

TOKEN = "tok-0123456789abcdef-admin"
OTHER = "tok-fedcba9876543210-other"


def _file(tmp_path: Path, text: str, name: str = "keys") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_read_keys_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = _file(tmp_path, f"# the CI client\n{TOKEN}\n\n   \n  {OTHER}  \n# {OTHER}x\n")
    assert read_keys(path) == (TOKEN, OTHER)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("short\n", "16 to 4096 characters"),
        ("two words-but-long-enough\n", "printable ASCII without spaces"),
        ("ünïcode-ünïcode-ünïcode\n", "printable ASCII without spaces"),
    ],
)
def test_a_bad_line_names_the_file_and_line_but_not_the_secret(tmp_path: Path, text: str, reason: str) -> None:
    path = _file(tmp_path, f"# first\n{text}")
    with pytest.raises(CredentialsError) as caught:
        read_keys(path)
    message = str(caught.value)
    assert f"{path} line 2" in message and reason in message
    assert text.strip() not in message


def test_a_missing_or_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"cannot read .*nope: No such file"):
        read_keys(str(tmp_path / "nope"))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" * 20)
    with pytest.raises(CredentialsError, match=r"cannot read .*binary: UnicodeDecodeError"):
        read_keys(str(binary))


def test_matches_only_the_listed_secrets() -> None:
    ring = KeyRing("test", keys=(TOKEN, OTHER))
    assert ring.enabled and ring.count == 2
    assert ring.matches(TOKEN.encode()) and ring.matches(OTHER.encode())
    for wrong in (b"", TOKEN[:-1].encode(), (TOKEN + "x").encode(), TOKEN.upper().encode(), b"\xff" * 30):
        assert not ring.matches(wrong)
    assert TOKEN not in repr(ring) and OTHER not in repr(ring)


def test_an_empty_ring_is_disabled_and_matches_nothing() -> None:
    ring = KeyRing("test")
    assert not ring.enabled and not ring.matches(b"")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_edited_file_is_read_again_after_the_reload_interval(tmp_path: Path) -> None:
    path = _file(tmp_path, TOKEN + "\n")
    clock = _Clock()
    ring = KeyRing("ingress keys", path=path, reload_interval=5.0, clock=clock)
    assert ring.matches(TOKEN.encode())
    Path(path).write_text(f"{OTHER}\n# {TOKEN} revoked\n")
    clock.now += 4.9
    assert ring.matches(TOKEN.encode()), "re-read before the interval is up"
    clock.now += 0.2
    assert not ring.matches(TOKEN.encode()) and ring.matches(OTHER.encode())


def test_without_an_interval_only_reload_reads_the_file_again(tmp_path: Path) -> None:
    path = _file(tmp_path, TOKEN + "\n")
    clock = _Clock()
    ring = KeyRing("ingress keys", path=path, reload_interval=0.0, clock=clock)
    Path(path).write_text(OTHER + "\n")
    clock.now += 3600
    assert ring.matches(TOKEN.encode())
    assert ring.reload()
    assert not ring.matches(TOKEN.encode()) and ring.matches(OTHER.encode())


def test_a_failed_reload_keeps_the_old_secrets_and_logs_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _file(tmp_path, TOKEN + "\n")
    ring = KeyRing("ingress keys", path=path)
    Path(path).write_text(f"{OTHER}\nbad one\n")
    with caplog.at_level(logging.INFO, logger="proxy.credentials"):
        assert not ring.reload()
        assert ring.matches(TOKEN.encode()) and not ring.matches(OTHER.encode())
        Path(path).unlink()
        assert not ring.reload()
        assert ring.matches(TOKEN.encode())
    assert "keeping the 1 secret(s)" in caplog.text
    assert TOKEN not in caplog.text and OTHER not in caplog.text


def test_an_emptied_file_revokes_every_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _file(tmp_path, TOKEN + "\n")
    ring = KeyRing("ingress keys", path=path)
    Path(path).write_text("# all revoked\n")
    with caplog.at_level(logging.WARNING, logger="proxy.credentials"):
        assert ring.reload()
    assert not ring.matches(TOKEN.encode()) and ring.enabled
    assert "every request is refused" in caplog.text


def test_the_admin_token_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    path = _file(tmp_path, TOKEN + "\n")
    from_file = admin_keyring(Settings(admin_token_file=path), env={})
    assert from_file.matches(TOKEN.encode())
    from_env = admin_keyring(Settings(), env={"PROXY_ADMIN_TOKEN": f" {OTHER}\n"})
    assert from_env.matches(OTHER.encode()) and not from_env.matches(TOKEN.encode())
    assert not admin_keyring(Settings(), env={}).enabled
    with pytest.raises(CredentialsError, match="not both"):
        admin_keyring(Settings(admin_token_file=path), env={"PROXY_ADMIN_TOKEN": OTHER})


def test_an_unusable_admin_token_is_refused_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="holds no token"):
        admin_keyring(Settings(admin_token_file=_file(tmp_path, "# nothing yet\n")), env={})
    with pytest.raises(CredentialsError) as caught:
        admin_keyring(Settings(), env={"PROXY_ADMIN_TOKEN": "hunter2"})
    assert "PROXY_ADMIN_TOKEN" in str(caught.value) and "hunter2" not in str(caught.value)


def test_an_empty_ingress_keys_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="holds no key"):
        Credentials.from_settings(Settings(ingress_keys_file=_file(tmp_path, "\n")), env={})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
        ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("proxy.example", False),
    ],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_open_admin_api_off_loopback_is_a_start_problem(tmp_path: Path) -> None:
    none = Credentials(admin=KeyRing("admin token"), ingress=KeyRing("ingress keys"))
    token = Credentials(admin=KeyRing("admin token", keys=(TOKEN,)), ingress=KeyRing("ingress keys"))
    assert start_problem(Settings(), none) is None
    assert start_problem(Settings(host="0.0.0.0", admin_host="127.0.0.1"), none) is None
    assert start_problem(Settings(host="0.0.0.0"), token) is None
    assert start_problem(Settings(host="0.0.0.0", admin_insecure=True), none) is None
    problem = start_problem(Settings(host="0.0.0.0", admin_port=9170), none)
    assert problem is not None
    assert "0.0.0.0:9170 without a token" in problem
    assert "--admin-token-file" in problem and "--admin-insecure" in problem


def test_check_start_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        check_start(Settings(admin_host="0.0.0.0"), env={})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m proxy: refusing to start: the admin API would listen on 0.0.0.0")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        check_start(Settings(admin_token_file=str(tmp_path / "missing")), env={})
    assert "cannot read" in capsys.readouterr().err
    check_start(Settings(admin_host="0.0.0.0"), env={"PROXY_ADMIN_TOKEN": TOKEN})  # no exit
    check_start(Settings(), env={})


def test_admin_insecure_is_a_bare_flag_or_a_boolean() -> None:
    assert settings_from([], env={}).admin_insecure is False
    assert settings_from(["--admin-insecure"], env={}).admin_insecure is True
    assert settings_from(["--admin-insecure", "false"], env={}).admin_insecure is False
    assert settings_from([], env={"PROXY_ADMIN_INSECURE": "yes"}).admin_insecure is True
    assert settings_from([], env={"PROXY_ADMIN_INSECURE": "0"}).admin_insecure is False
    with pytest.raises(SystemExit):
        settings_from([], env={"PROXY_ADMIN_INSECURE": "maybe"})
