"""README.md carries exactly the configuration table that proxy/config.py generates today."""

from __future__ import annotations

from pathlib import Path

from proxy.config import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"
_HEADER = "| flag | env | default | meaning |"


def _readme_table() -> str:
    lines = README.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == _HEADER]
    assert len(starts) == 1, f"README.md must hold the configuration table exactly once, found {len(starts)}"
    table: list[str] = []
    for line in lines[starts[0] :]:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def test_readme_config_table_is_current() -> None:
    expected = settings_table()
    assert _readme_table() == expected, (
        "README.md's configuration table is stale: replace it with the output of "
        "`.venv/bin/python scripts/config_table.py`"
    )
