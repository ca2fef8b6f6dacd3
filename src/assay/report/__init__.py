"""Reports (DESIGN.md §5): leaderboard Markdown, a self-contained HTML site with SVG
figures, publication figures (PDF/PNG) and a results bundle that ``assay reanalyze`` checks.

* :class:`ReportData` — everything a report shows;
* :func:`leaderboard_markdown` — Touchstone-style ``leaderboard.md``;
* :func:`write_bundle` / :func:`reanalyze` — the results bundle and its re-verification.

The names load on first use (PEP 562), so that a process drawing figures (which imports
:mod:`assay.report._figures`) does not import the bundle, the statistics and SciPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.report._bundle import Reanalysis, reanalyze, write_bundle
    from assay.report._data import SPEED_COLUMNS, ReportData
    from assay.report._leaderboard import leaderboard_markdown

_LAZY = {
    "Reanalysis": "assay.report._bundle",
    "reanalyze": "assay.report._bundle",
    "write_bundle": "assay.report._bundle",
    "SPEED_COLUMNS": "assay.report._data",
    "ReportData": "assay.report._data",
    "leaderboard_markdown": "assay.report._leaderboard",
}


def __getattr__(name: str) -> Any:
    """Import a public name of the package from its module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'assay.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "SPEED_COLUMNS",
    "Reanalysis",
    "ReportData",
    "leaderboard_markdown",
    "reanalyze",
    "write_bundle",
]
