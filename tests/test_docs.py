"""The README's tables say what the code does: every flag, variable, default and exit code."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import RUN_OPTIONS
from app.exit_codes import MEANING

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def table_rows(first_cell: str) -> dict[str, list[str]]:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            rows[cells[0]] = cells
    return rows


def test_every_run_flag_is_documented_with_its_variable_and_default():
    rows = table_rows(r"`--[a-z0-9-]+`")
    for option in RUN_OPTIONS:
        row = rows.get(f"`{option.flag}`")
        assert row, f"{option.flag} is missing from the README's configuration table"
        assert row[1] == f"`{option.env}`"
        default = option.default
        if option.switch:
            assert row[2] == "off"
        elif default in (None, "", ()):
            assert row[2] == "—"
        else:
            shown = int(default) if isinstance(default, float) and default.is_integer() else default
            assert row[2] == f"`{shown}`", f"{option.flag}: README says {row[2]}, the code {shown}"
    assert len(rows) == len(RUN_OPTIONS), "the README documents a flag the code does not have"


def test_every_exit_code_is_documented_with_its_meaning():
    rows = table_rows(r"\d+")
    assert {int(code) for code in rows} == {int(code) for code in MEANING}
    for code, meaning in MEANING.items():
        assert rows[str(int(code))][1] == meaning
