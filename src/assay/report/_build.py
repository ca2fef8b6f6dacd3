"""Build a whole report folder: leaderboard, site, figures and results bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from assay.report._bundle import write_bundle
from assay.report._data import ReportData
from assay.report._helpers import HelperPool
from assay.report._leaderboard import leaderboard_markdown
from assay.report._render import DEFAULT_FIGURE_FORMATS, MIN_PARALLEL_FIGURES, _figure_jobs
from assay.report._site import render_figures, write_site


@dataclass(frozen=True)
class ReportFiles:
    """Where :func:`build_report` wrote things."""

    index: Path
    leaderboard: Path
    bundle: Path
    figures: Path
    n_figures: int
    pages: tuple[Path, ...]
    formats: tuple[str, ...] = DEFAULT_FIGURE_FORMATS


def build_report(
    data: ReportData,
    out_dir: str | Path,
    *,
    metadata: pd.DataFrame | None = None,
    formats: tuple[str, ...] = DEFAULT_FIGURE_FORMATS,
    on_figure: Callable[[str], None] | None = None,
    workers: int = 1,
    helpers: HelperPool | None = None,
) -> ReportFiles:
    """Write ``leaderboard.md``, the HTML site, its figures and ``bundle/`` into ``out_dir``.

    Layout::

        out_dir/index.html, methods.html, ...   the site (opens from the file system)
        out_dir/assets/, out_dir/svg/           its CSS/JS and SVG figures
        out_dir/figures/*.pdf, *.png            the same figures for papers, when asked
        out_dir/leaderboard.md                  Touchstone-style Markdown
        out_dir/bundle/                         results.json + per-case scores

    ``formats`` (:func:`~assay.report._render.parse_figure_formats`): ``("svg",)`` by
    default; add ``"pdf"``/``"png"`` for publication figures. Each figure is drawn once and
    saved in every format. ``workers`` processes draw the figures (the slow part): this one
    and ``workers - 1`` helpers, started first so that they are ready when the leaderboard
    and the bundle are written; or ``helpers`` (:func:`~assay.report._helpers.helper_pool`)
    already started by the caller.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own = None
    if helpers is None and workers > 1 and len(_figure_jobs(data)) >= MIN_PARALLEL_FIGURES:
        own = helpers = HelperPool(workers - 1)
    try:
        leaderboard = out / "leaderboard.md"
        leaderboard.write_text(leaderboard_markdown(data), encoding="utf-8")
        write_bundle(data, out / "bundle", metadata=metadata)
        figures = render_figures(
            data, out, formats=formats, on_figure=on_figure, workers=workers, helpers=helpers
        )
    except BaseException:
        if own is not None:
            own.close(completed=False)
        raise
    if own is not None:
        own.close()
    pages = write_site(data, out, figures)
    return ReportFiles(
        index=out / "index.html",
        leaderboard=leaderboard,
        bundle=out / "bundle",
        figures=out / "figures",
        n_figures=len(figures),
        pages=tuple(pages),
        formats=tuple(formats),
    )
