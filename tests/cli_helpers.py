"""Shared helpers of the tests that drive the CLI (in process or as the installed script)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console

from assay import cli


def assay_script() -> str:
    """Path of the installed ``assay`` console script (next to this Python, else on PATH)."""
    found = Path(sys.executable).parent / "assay"
    if found.is_file():
        return str(found)
    on_path = shutil.which("assay")
    assert on_path is not None, "the `assay` console script is not installed"
    return on_path


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI output on 1000-column consoles (imported by a module: autouse there)."""
    monkeypatch.setattr(cli._common, "out", Console(width=1000))
    monkeypatch.setattr(cli._common, "err", Console(width=1000, stderr=True))
