"""Reports (DESIGN.md §5): leaderboard Markdown, a self-contained HTML site with SVG
figures, publication figures (PDF/PNG) and a results bundle that ``assay reanalyze`` checks.

* :class:`ReportData` — everything a report shows;
* :func:`leaderboard_markdown` — Touchstone-style ``leaderboard.md``;
* :func:`write_bundle` / :func:`reanalyze` — the results bundle and its re-verification.
"""

from assay.report._bundle import Reanalysis, reanalyze, write_bundle
from assay.report._data import SPEED_COLUMNS, ReportData
from assay.report._leaderboard import leaderboard_markdown

__all__ = [
    "SPEED_COLUMNS",
    "Reanalysis",
    "ReportData",
    "leaderboard_markdown",
    "reanalyze",
    "write_bundle",
]
