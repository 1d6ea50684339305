"""proxy/config.py: durations, sizes, and Settings from env vars and flags."""

from __future__ import annotations

import contextlib
import io

import msgspec
import pytest

from proxy.config import Settings, parse_duration, parse_size, settings_from, settings_table

# -- parse_duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("0.25s", 0.25),
        (" 10 s ", 10.0),
        (3, 3.0),
        (0.01, 0.01),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "1e3", "ten seconds", "1h30m", "10ss"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# -- parse_size -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10", 10),
        ("10b", 10),
        ("512k", 512 * 1024),
        ("1kb", 1000),
        ("1KiB", 1024),
        ("10MiB", 10 * 1024**2),
        ("10mib", 10 * 1024**2),
        ("10MB", 10 * 1000**2),
        ("10m", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("2g", 2 * 1024**3),
        ("1TiB", 1024**4),
        (" 64 KiB ", 64 * 1024),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5GiB", "-1", "ten", "10 bytes", "10XB", "MiB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


# -- Settings ---------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings()
    assert (settings.ingress_port, settings.admin_port, settings.callback_port) == (8080, 9070, 9071)
    assert settings.map_size <= settings.max_map_size
    assert settings.effective_callback_url == "http://127.0.0.1:9071"


def test_explicit_callback_url_wins() -> None:
    assert Settings(callback_url="http://proxy:1").effective_callback_url == "http://proxy:1"
    assert Settings(callback_port=1234).effective_callback_url == "http://127.0.0.1:1234"


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().admin_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"transport": "curl"}, {"map_size": 2 * 1024**3, "max_map_size": 1024**3}],
)
def test_settings_validate(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Settings(**kwargs)  # type: ignore[arg-type]


# -- settings_from ----------------------------------------------------------------------------


def test_nothing_set_gives_defaults() -> None:
    assert settings_from([], {}) == Settings()


def test_from_env() -> None:
    env = {
        "PROXY_INGRESS_PORT": "8000",
        "PROXY_DATA_DIR": "/tmp/x",
        "PROXY_MAP_SIZE": "16MiB",
        "PROXY_MAX_BODY_BYTES": "1k",
        "PROXY_INACTIVITY_TIMEOUT": "2m",
        "PROXY_RETRY_INITIAL_INTERVAL": "250ms",
        "PROXY_RETRY_FACTOR": "1.5",
        "PROXY_DEPLOYMENTS": "http://a:1,http://b:2",
        "PROXY_TRANSPORT": "httpx",
        "UNRELATED": "ignored",
    }
    settings = settings_from([], env)
    assert settings.ingress_port == 8000
    assert settings.data_dir == "/tmp/x"
    assert settings.map_size == 16 * 1024**2
    assert settings.max_body_bytes == 1024
    assert settings.inactivity_timeout == 120.0
    assert settings.retry_initial_interval == 0.25
    assert settings.retry_factor == 1.5
    assert settings.deployments == ("http://a:1", "http://b:2")
    assert settings.transport == "httpx"


def test_flags_override_env() -> None:
    env = {"PROXY_INGRESS_PORT": "8000", "PROXY_MAX_ENTRY_BYTES": "1MiB", "PROXY_ADMIN_PORT": "9999"}
    settings = settings_from(["--ingress-port", "7000", "--max-entry-bytes", "2KiB"], env)
    assert settings.ingress_port == 7000
    assert settings.max_entry_bytes == 2048
    assert settings.admin_port == 9999


def test_deployment_flag_is_repeatable() -> None:
    settings = settings_from(["--deployment", "http://a", "--deployment", "http://b"], {})
    assert settings.deployments == ("http://a", "http://b")


def test_every_field_has_a_flag_and_an_env_var() -> None:
    defaults = Settings()
    for name in Settings.__struct_fields__:
        flag = "--" + ("deployment" if name == "deployments" else name.replace("_", "-"))
        value = getattr(defaults, name)
        raw = ",".join(value) if isinstance(value, tuple) else str(value)
        if name == "deployments":
            raw = "http://x"
        from_flag = settings_from([flag, raw], {})
        from_env = settings_from([], {"PROXY_" + name.upper(): raw})
        assert getattr(from_flag, name) == getattr(from_env, name), name


def run_bad(argv: list[str], env: dict[str, str]) -> str:
    """settings_from must exit with status 2 (argparse) and name the problem on stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        settings_from(argv, env)
    assert info.value.code == 2
    return stderr.getvalue()


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"PROXY_MAP_SIZE": "lots"}, "map_size"),
        ({"PROXY_INGRESS_PORT": "eighty"}, "ingress_port"),
        ({"PROXY_RETRY_MAX_ATTEMPTS": "1.5"}, "retry_max_attempts"),
        ({"PROXY_INACTIVITY_TIMEOUT": "forever"}, "inactivity_timeout"),
        ({"PROXY_MAX_BODY_BYTES": "-1"}, "max_body_bytes"),
    ],
)
def test_bad_env_values_exit_naming_the_field(env: dict[str, str], field: str) -> None:
    assert field in run_bad([], env)


def test_bad_flag_value_exits() -> None:
    assert "body_read_timeout" in run_bad(["--body-read-timeout", "10x"], {})


def test_invalid_combination_exits() -> None:
    message = run_bad(["--map-size", "2GiB", "--max-map-size", "1GiB"], {})
    assert "map_size" in message


def test_invalid_transport_exits() -> None:
    assert "transport" in run_bad([], {"PROXY_TRANSPORT": "curl"})


def test_unknown_flag_exits() -> None:
    assert "--no-such-flag" in run_bad(["--no-such-flag", "1"], {})


def test_settings_table_lists_every_field() -> None:
    table = settings_table()
    lines = table.splitlines()
    assert lines[0] == "| flag | env | default | meaning |"
    assert len(lines) == 2 + len(Settings.__struct_fields__)
    for name in Settings.__struct_fields__:
        assert f"`PROXY_{name.upper()}`" in table


def test_every_setting_is_documented() -> None:
    # The docs under each field feed --help and the README table.
    for line in settings_table().splitlines()[2:]:
        meaning = line.rsplit("|", 2)[-2].strip()
        assert meaning, line


def test_settings_encode_as_plain_data() -> None:
    assert msgspec.to_builtins(Settings())["admin_port"] == 9070
