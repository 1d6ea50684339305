"""What a newcomer types first: ``make`` / ``make help`` list the targets, ``python -m proxy
--help`` lists the subcommands besides the flags."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from proxy.__main__ import _CLI_COMMANDS, main
from proxy.config import settings_from

REPO = Path(__file__).resolve().parents[2]


def _documented_targets() -> dict[str, str]:
    """Makefile targets with the first line of the ``## `` comment right above them."""
    targets: dict[str, str] = {}
    doc: list[str] = []
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("## "):
            doc.append(line[3:])
            continue
        match = re.match(r"^([a-zA-Z][a-zA-Z_-]*):", line)
        if match and doc:
            targets[match.group(1)] = doc[0]
        doc = []
    return targets


def _make(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_phony_target_has_a_help_comment() -> None:
    text = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert phony is not None
    assert sorted(phony.group(1).split()) == sorted(_documented_targets())


def test_make_help_lists_every_target_with_its_comment() -> None:
    out = _make("help")
    for target, doc in _documented_targets().items():
        assert re.search(rf"^  make {re.escape(target)} +{re.escape(doc)}$", out, re.MULTILINE), (target, out)
    # continuation lines of a comment are printed too (make run documents its variables)
    assert "HANDLER_PORT=9081" in out and "PROXY_INGRESS_PORT=8081" in out and "ARGS=" in out


def test_plain_make_prints_the_help_and_installs_nothing() -> None:
    assert _make() == _make("help")
    assert "pip" not in _make("-n")


def test_python_m_proxy_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_from(["--help"], env={})
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--ingress-port" in out
    listed = re.findall(r"^  (\w+)(?: \((\w+)\))?", out.split("subcommands")[1], re.MULTILINE)
    names = {name for pair in listed for name in pair if name}
    assert names == {*_CLI_COMMANDS, "dev"}
    assert "python -m proxy {invocations,services,deployments,schedules,identity,dev} ..." in out  # usage line too


@pytest.mark.parametrize("command", [*_CLI_COMMANDS, "dev"])
def test_every_listed_subcommand_has_its_own_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "usage: python -m proxy" in capsys.readouterr().out
