"""docs/configuration.md's key tables are made from the declarations (tools/config_doc.py),
and the check fails when they drift; `python tools/config_doc.py` regenerates them."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import SECTIONS
from pipeline.schema import schema
from tests.conftest import load_tool

config_doc = load_tool("config_doc")


def test_the_docs_tables_are_the_declarations() -> None:
    text = config_doc.DOC.read_text(encoding="utf-8")
    assert config_doc.updated(text) == text, (
        "docs/configuration.md differs from the settings' declarations: run "
        "`python tools/config_doc.py`")


def test_every_key_of_every_section_has_a_row() -> None:
    table = config_doc.keys_table()
    for section, cls in SECTIONS.items():
        assert f"| `[{section}]` |" in table
        for key in schema(cls):
            assert f"| `{key.name}` |" in table, f"[{section}] {key.name}"
    assert "| `depth_scale` | number | `1.0` | > 0 | `--depth-scale` |" in table
    assert "| `rescan_seconds` | number | `30.0` | > 0 (seconds) |  |" in table


def test_a_stale_table_is_caught_and_rewritten(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    text = config_doc.DOC.read_text(encoding="utf-8")
    stale = text.replace("| `depth_scale` | number | `1.0` |", "| `depth_scale` | number | `2.0` |")
    assert stale != text
    doc = tmp_path / "configuration.md"
    doc.write_text(stale, encoding="utf-8")
    monkeypatch.setattr(config_doc, "DOC", doc)
    assert config_doc.main(["--check"]) == 1
    assert config_doc.main([]) == 0
    assert doc.read_text(encoding="utf-8") == text
    assert config_doc.main(["--check"]) == 0
