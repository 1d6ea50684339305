"""``pytest --junitxml=...`` works with the repository's pytest options and keeps recorded properties.

The container test records its build times with ``record_property``; under pytest's default
``junit_family`` (xunit2) that fixture warns, and ``filterwarnings = error`` made the warning an
error: the container test failed whenever a JUnit report was asked for. pyproject.toml sets
``junit_family = "xunit1"``; this runs a tiny session under those options to hold it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_TEST = textwrap.dedent(
    """
    from collections.abc import Callable


    def test_records_a_property(record_property: Callable[[str, object], None]) -> None:
        record_property("build_seconds", 1.5)
    """
)


def test_junitxml_with_the_repository_options_keeps_recorded_properties(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(_TEST)
    report = tmp_path / "report.xml"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path),
        f"--junitxml={report}", str(tmp_path / "test_tiny.py"),
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    cases = ET.parse(report).getroot().findall(".//testcase")
    assert [case.get("name") for case in cases] == ["test_records_a_property"]
    properties = {p.get("name"): p.get("value") for p in cases[0].findall("./properties/property")}
    assert properties == {"build_seconds": "1.5"}
