"""The commands in README.md, examples/README.md and docs/container.md work when copied.

* Programs of the venv are run by path (``.venv/bin/python -m proxy``, ``.venv/bin/uvicorn``):
  ``python -m proxy`` fails unless the venv is activated.
* No command carries a literal invocation or awakeable id from the run that produced the outputs:
  they differ on every machine, so the commands take them from the answers (``ID=$(…)``).
* Every ``make run VAR=…`` names something `make run` reads: ``APP``, ``HANDLER_PORT``, ``ARGS``
  or the ``PROXY_*`` variable of a setting.
* Links to headings (``#anchor``, also into another of these files) point at a heading that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.config import Settings

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "examples/README.md", "docs/container.md")


def _commands(path: str) -> list[str]:
    """Command lines: ``$ …`` lines of console/sh blocks (with their ``\\`` continuations), and
    every non-comment line of sh blocks without prompts."""
    commands: list[str] = []
    fence: str | None = None
    block: list[str] = []
    for line in (REPO / path).read_text().splitlines():
        if line.startswith("```"):
            if fence is None:
                fence = line[3:].strip()
                block = []
                continue
            if fence in ("sh", "console", "bash"):
                prompted = fence == "console" or any(b.startswith("$ ") for b in block)
                current = ""
                for b in block:
                    if current.endswith("\\"):
                        current += "\n" + b
                    elif prompted and b.startswith("$ "):
                        current = b[2:]
                    elif not prompted and b.strip() and not b.lstrip().startswith("#"):
                        current = b
                    else:
                        continue
                    if not current.endswith("\\"):
                        commands.append(current)
                        current = ""
            fence = None
            continue
        if fence is not None:
            block.append(line)
    return commands


@pytest.mark.parametrize("path", DOCS)
def test_venv_programs_are_run_by_path(path: str) -> None:
    bare = re.compile(r"(?<![\w/.-])(python3? -m (proxy|handlers_sdk)|uvicorn \S+:\S+)")
    offenders = [c for c in _commands(path) if bare.search(c)]
    assert offenders == [], "run them as .venv/bin/python -m … / .venv/bin/uvicorn …"


@pytest.mark.parametrize("path", DOCS)
def test_commands_carry_no_literal_ids(path: str) -> None:
    literal = re.compile(r"\b(inv|awk)_[0-9a-z]{20,}")
    offenders = [c for c in _commands(path) if literal.search(c)]
    assert offenders == [], "take the id from an answer: ID=$(curl -s … | jq -r .invocationId)"


def test_the_commands_are_found() -> None:
    readme = _commands("README.md")
    assert any(c.startswith("make run APP=examples.all:application") for c in readme)
    assert any(c.startswith("ID=$(curl") for c in readme)
    assert any("scripts/concurrent_increments.py" in c for c in readme)
    container = _commands("docs/container.md")
    assert any(c.startswith("docker run -d --name proxy --network durable") for c in container)


@pytest.mark.parametrize("path", ("README.md", "examples/README.md"))
def test_make_run_variables_are_ones_make_run_reads(path: str) -> None:
    makefile = (REPO / "Makefile").read_text()
    run_sh = (REPO / "scripts" / "run.sh").read_text()
    settings = {"PROXY_" + name.upper() for name in Settings.__struct_fields__}
    text = (REPO / path).read_text()
    used = set(re.findall(r"\bmake run((?: [A-Z_]+=\S+)+)", text))
    names = {assignment.split("=")[0] for group in used for assignment in group.split()}
    assert names, "no `make run VAR=…` found"
    for name in names:
        if name.startswith("PROXY_"):
            assert name in settings, name
        else:
            assert name in ("APP", "HANDLER_PORT", "ARGS"), name
    assert "$(ARGS)" in makefile and "APP=$(APP)" in makefile
    assert "HANDLER_PORT=${HANDLER_PORT:-9080}" in run_sh and '"$@"' in run_sh


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("path", DOCS)
def test_links_to_headings_resolve(path: str) -> None:
    source = REPO / path
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", source.read_text()):
        file = (source.parent / target).resolve() if target else source
        assert file.exists(), target
        assert anchor in _anchors(file), f"{path}: #{anchor} not a heading of {file.relative_to(REPO)}"
