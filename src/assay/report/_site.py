"""The self-contained static HTML site of a report (DESIGN.md §5).

:func:`render_figures` draws every figure of a report (SVG for the site under ``svg/``,
publication PDF/PNG under ``figures/``); :func:`write_site` renders the pages with jinja2
(``templates/*.html``, autoescaped, strict undefined) and copies the stylesheet and the
table-sorting script (``assets/``) next to them.

The site makes no network request: figures are local SVG files, CSS and JS are local, the
favicon is an empty ``data:`` URL, and links to papers and code are plain anchors (never
fetched). Every link between pages is relative, so the folder opens from ``file://``.

Pages: ``index.html`` (leaderboards of the ``average`` structure per dataset and metric, a
model × structure matrix of means, consensus when several datasets), one page per (dataset,
structure) named ``<dataset>--<structure>.html``, ``stability.html``, ``subgroups.html``,
``speed.html`` (only when inference speed is known) and ``methods.html``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from assay.report._data import ReportData
from assay.stats import AVERAGE, higher_is_better_for

__all__ = ["FIGURE_KINDS", "FigureKey", "figure_stem", "render_figures", "slugify", "write_site"]

#: (kind, dataset, metric, part); see :data:`FIGURE_KINDS` for what ``part`` holds.
FigureKey = tuple[str, str, str, str]

#: Figure kinds and the meaning of the key's ``part``: the structure for ``heatmap``,
#: ``cases`` and ``blobs``; ``"average"`` for ``robustness``; ``""`` for ``tau``; the grouping
#: for ``subgroup`` (structure ``average``; ``"grouping:structure"`` for the structures when
#: the subgroup analysis has no ``average`` rows); ``speed`` has metric ``""`` and part ``""``.
FIGURE_KINDS = ("heatmap", "cases", "blobs", "robustness", "tau", "subgroup", "speed")

#: Columns of the missing-value policy counts (``Analysis.changes``), in display order.
CHANGE_COLUMNS = (
    "n_values",
    "n_missing",
    "n_implicit_missing",
    "n_failed",
    "n_not_applicable",
    "n_set_worst",
    "n_dropped",
    "n_contaminated",
)

_METRIC_NAMES = {
    "dsc": "Dice (DSC)",
    "nsd": "NSD",
    "hd": "Hausdorff distance (mm)",
    "hd95": "HD95 (mm)",
    "assd": "ASSD (mm)",
    "masd": "MASD (mm)",
}
_SAFE_URL = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)
_SVG_SIZE = re.compile(
    r"<svg\b[^>]*?\bwidth=\"([\d.]+)(pt|px)?\"[^>]*?\bheight=\"([\d.]+)(pt|px)?\""
)
_PX_PER_PT = 96.0 / 72.0


# --------------------------------------------------------------------------- names


def slugify(name: str) -> str:
    """A file-name-safe form of ``name`` using only ``[a-z0-9_-]``.

    Lower-cases, replaces every other character by ``-``, collapses runs of ``-`` and trims
    them at both ends (at most 60 characters). When that changes ``name`` (``"Liver"``,
    ``"a b"``), the first 8 hex digits of the SHA-1 of ``name`` are appended, so two distinct
    names never share a slug; an empty name becomes ``"x-<hash>"``.
    """
    base = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9_-]", "-", name.lower())).strip("-")[:60]
    if base == name and base:
        return base
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{base or 'x'}-{digest}"


def figure_stem(key: FigureKey) -> str:
    """File stem of a figure: the non-empty slugified key parts joined by ``--``.

    E.g. ``("heatmap", "toy", "dsc", "liver")`` -> ``heatmap--toy--dsc--liver``;
    ``("speed", "toy", "", "")`` -> ``speed--toy``.
    """
    return "--".join(slugify(p) for p in key if p)


def page_name(dataset: str, structure: str) -> str:
    """File name of the page of one (dataset, structure), e.g. ``toy--liver.html``."""
    return f"{slugify(dataset)}--{slugify(structure)}.html"


def metric_name(metric: str) -> str:
    """Display name of a metric (``dsc`` -> ``Dice (DSC)``); unknown metrics as given."""
    return _METRIC_NAMES.get(metric, metric)


# --------------------------------------------------------------------------- figures


def _structures(frame: pd.DataFrame) -> list[str]:
    """Structures of a frame, ``average`` first, then sorted."""
    found = {str(s) for s in frame["structure"]} if "structure" in frame.columns else set()
    return ([AVERAGE] if AVERAGE in found else []) + sorted(found - {AVERAGE})


def _slice(frame: pd.DataFrame, **where: str) -> pd.DataFrame:
    """Rows of ``frame`` whose columns equal the given values (empty frame if a column lacks)."""
    if frame.empty or any(k not in frame.columns for k in where):
        return frame.iloc[0:0]
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column] == value
    return frame.loc[mask]


def _figure_jobs(data: ReportData) -> list[tuple[FigureKey, Callable[[], Any]]]:
    """Every figure of the report as (key, draw) with ``draw()`` returning a Figure."""
    from assay.report import _figures as figs  # matplotlib only when figures are drawn

    jobs: list[tuple[FigureKey, Callable[[], Any]]] = []
    for metric, a in data.analyses.items():
        for dataset in sorted({str(d) for d in a.aggregates["dataset"]}):
            for structure in _structures(_slice(a.aggregates, dataset=dataset)):
                order = data.model_order(metric, dataset, structure)
                label = f"{dataset} · {structure} · {metric_name(metric)}"
                where = {"dataset": dataset, "structure": structure}
                pw = _slice(a.pairwise, **where)
                title = f"Pairwise tests (Holm p) — {label}"
                draw = partial(figs.significance_heatmap, pw, order, title=title)
                jobs.append((("heatmap", dataset, metric, structure), draw))
                vals = _slice(a.values, **where)
                draw = partial(figs.case_distribution, vals, order, metric=metric, title=label)
                jobs.append((("cases", dataset, metric, structure), draw))
                rc, st = _slice(a.rank_counts, **where), _slice(a.stability, **where)
                if not rc.empty:
                    title = f"Rank stability — {label}"
                    draw = partial(figs.rank_blobs, rc, st, order, title=title)
                    jobs.append((("blobs", dataset, metric, structure), draw))
            order = data.model_order(metric, dataset)
            label = f"{dataset} · {metric_name(metric)}"
            rk = _slice(a.rankings, dataset=dataset, structure=AVERAGE)
            if not rk.empty:
                title = f"Ranking schemes — {label} · average"
                draw = partial(figs.ranking_robustness, rk, order, title=title)
                jobs.append((("robustness", dataset, metric, AVERAGE), draw))
            ts = _slice(a.tau_samples, dataset=dataset)
            if not ts.empty:
                title = f"Kendall τ of bootstrap rankings — {label}"
                jobs.append(
                    (("tau", dataset, metric, ""), partial(figs.tau_violin, ts, title=title))
                )
            for grouping, structure, part in _subgroup_parts(a.subgroups, dataset):
                where = {"dataset": dataset, "structure": structure, "grouping": grouping}
                sg, tests = _slice(a.subgroups, **where), _slice(a.subgroup_tests, **where)
                sub_order = [*order, *sorted(set(map(str, sg["model"])) - set(order))]
                title = f"{dataset} · {structure} · {metric_name(metric)} by {grouping}"
                draw = partial(figs.subgroup_plot, sg, tests, sub_order, title=title)
                jobs.append((("subgroup", dataset, metric, part), draw))
    for dataset in sorted({str(d) for d in data.speed.get("dataset", [])}):
        sp = _slice(data.speed, dataset=dataset)
        draw = partial(figs.speed_plot, sp, title=f"Inference speed — {dataset}")
        jobs.append((("speed", dataset, "", ""), draw))
    return jobs


def _subgroup_parts(subgroups: pd.DataFrame, dataset: str) -> list[tuple[str, str, str]]:
    """(grouping, structure, key part) of the subgroup figures of one dataset."""
    part = _slice(subgroups, dataset=dataset)
    out = []
    for grouping in sorted({str(g) for g in part.get("grouping", [])}):
        structures = _structures(_slice(part, grouping=grouping))
        if AVERAGE in structures:
            out.append((grouping, AVERAGE, grouping))
        else:
            out += [(grouping, s, f"{grouping}:{s}") for s in structures]
    return out


def render_figures(
    data: ReportData,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("svg", "pdf", "png"),
    on_figure: Callable[[str], None] | None = None,
    workers: int = 1,
) -> dict[FigureKey, Path]:
    """Draw every figure of ``data``: SVG under ``out_dir/svg/``, other formats under
    ``out_dir/figures/``, all with the stem :func:`figure_stem` of their key.

    Parameters
    ----------
    data : the report's inputs.
    out_dir : the site folder (created if needed).
    formats : file formats to write; ``"svg"`` goes to ``svg/`` (the site's figures), the
        others (``"pdf"``, ``"png"``) to ``figures/``.
    on_figure : called with each figure's stem once it is written (progress display).
    workers : local processes drawing figures in parallel (1: in this process).

    Returns
    -------
    dict
        :data:`FigureKey` -> the SVG written (or the first file written when ``"svg"`` is not
        in ``formats``). Which keys exist: see :data:`FIGURE_KINDS`; ``blobs``, ``tau``,
        ``robustness``, ``subgroup`` and ``speed`` only where their data exist.
    """
    from assay.scoring import map_unordered

    out_dir = Path(out_dir)
    jobs = [(key, draw, out_dir, tuple(formats)) for key, draw in _figure_jobs(data)]
    written: dict[FigureKey, Path] = {}
    for key, path in map_unordered(_render, jobs, workers=min(workers, len(jobs))):
        if on_figure is not None:
            on_figure(figure_stem(key))
        if path is not None:
            written[key] = path
    return dict(sorted(written.items()))


def _render(
    job: tuple[FigureKey, Callable[[], Any], Path, tuple[str, ...]],
) -> tuple[FigureKey, Path | None]:
    """Draw one figure and save it (a module-level function, so worker processes can run it)."""
    from assay.report import _figures as figs

    key, draw, out_dir, formats = job
    stem = figure_stem(key)
    other = tuple(f for f in formats if f != "svg")
    fig = draw()
    paths: list[Path] = []
    if "svg" in formats:
        paths += figs.save_figure(fig, out_dir / "svg" / stem, formats=("svg",))
    if other:
        paths += figs.save_figure(fig, out_dir / "figures" / stem, formats=other)
    return key, (Path(paths[0]) if paths else None)


# --------------------------------------------------------------------------- formatting


def _isnan(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _digits(metric: str) -> int:
    """3 decimals for overlap scores (Dice, NSD), 2 for distances (lower is better)."""
    return 3 if higher_is_better_for(metric) else 2


def _num(value: Any, digits: int) -> str:
    return "—" if _isnan(value) else f"{float(value):.{digits}f}"


def _count(value: Any) -> str:
    return "—" if _isnan(value) else str(int(value))


def _rank(value: Any) -> str:
    if _isnan(value):
        return "—"
    v = float(value)
    return str(int(v)) if v.is_integer() else f"{v:.2f}"


def _p(value: Any) -> str:
    if _isnan(value):
        return "—"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _key(value: Any) -> str:
    """``data-sort`` value of a numeric cell; empty (sorted last) for NaN."""
    return "" if _isnan(value) else repr(float(value))


def _url(value: Any) -> str | None:
    """``value`` when it is an http(s) or mailto URL (never ``javascript:``), else None."""
    return str(value) if isinstance(value, str) and _SAFE_URL.match(value) else None


def _true(value: Any) -> bool:
    return (not _isnan(value)) and bool(value)


# --------------------------------------------------------------------------- page model


@dataclass
class Cell:
    """One table cell: ``text`` shown, ``sort`` its ``data-sort`` (None: sort by text).

    ``kind`` selects the template's rendering: ``text``, ``rank`` (🏆 when ``win``),
    ``ci`` (numbers plus a bar at ``bar = (left %, width %, mean %)``), ``links``
    (``links = [(label, url)]``).
    """

    text: str = ""
    sort: str | None = None
    kind: str = "text"
    win: bool = False
    bar: tuple[float, float, float] | None = None
    links: list[tuple[str, str]] = field(default_factory=list)
    cls: str = ""


@dataclass
class Table:
    """A sortable table: ``columns`` are (label, numeric, tooltip)."""

    columns: list[tuple[str, bool, str]]
    rows: list[list[Cell]]
    cls: str = ""
    caption: str = ""


@dataclass
class Fig:
    """A figure on a page: ``src`` relative to the site root, intrinsic size in px."""

    src: str
    alt: str
    caption: str
    width: int
    height: int


def _n(v: Any) -> Cell:
    return Cell(_count(v), _key(v))


def _v(v: Any, digits: int) -> Cell:
    return Cell(_num(v, digits), _key(v))


def _ci_scale(frame: pd.DataFrame) -> tuple[float, float]:
    """Common axis of the CI bars of one table: the CI range padded by 5 %."""
    lows = pd.to_numeric(frame.get("ci_low"), errors="coerce")
    highs = pd.to_numeric(frame.get("ci_high"), errors="coerce")
    means = pd.to_numeric(frame.get("mean"), errors="coerce")
    values = pd.concat([lows, highs, means]).dropna()  # NaN CIs get no bar
    if values.empty:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo) * 0.05, 1e-9)
    return lo - pad, hi + pad


def _ci_cell(row: Mapping[str, Any], digits: int, scale: tuple[float, float]) -> Cell:
    low, high, mean = row.get("ci_low"), row.get("ci_high"), row.get("mean")
    if _isnan(low) or _isnan(high):
        return Cell("—", "", kind="ci")
    lo, hi = scale
    span = hi - lo

    def pct(x: float) -> float:
        return round(min(max(100.0 * (float(x) - lo) / span, 0.0), 100.0), 2)

    left = pct(low)
    width = max(round(pct(high) - left, 2), 0.5)
    bar = (left, width, pct(mean) if not _isnan(mean) else left)
    return Cell(f"{_num(low, digits)} – {_num(high, digits)}", _key(low), kind="ci", bar=bar)


def _rank_cell(row: Mapping[str, Any]) -> Cell:
    if _true(row.get("contaminated")):
        return Cell("excl.", "", kind="rank", cls="excl")
    return Cell(
        _rank(row.get("rank")), _key(row.get("rank")), kind="rank", win=_true(row["winner"])
    )


def _links_cell(data: ReportData, model: str) -> Cell:
    card = data.cards.get(model)
    links = []
    if card is not None:
        for label, value in (("paper", card.paper), ("code", card.code)):
            url = _url(value)
            if url:
                links.append((label, url))
    return Cell(" ".join(label for label, _ in links), kind="links", links=links)


def _ordered(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Rows of ``frame`` in ``order`` of their model (others last, by name)."""
    pos = {m: i for i, m in enumerate(order)}
    key = frame["model"].map(lambda m: (pos.get(str(m), len(pos)), str(m)))
    return frame.assign(_key=key).sort_values("_key").drop(columns="_key")


def _leaderboard(data: ReportData, metric: str, dataset: str) -> Table:
    a = data.analyses[metric]
    agg = _slice(a.aggregates, dataset=dataset, structure=AVERAGE)
    agg = _ordered(agg, data.model_order(metric, dataset))
    d = _digits(metric)
    scale = _ci_scale(agg)
    rows = []
    for row in agg.to_dict("records"):
        model = str(row["model"])
        card = data.cards.get(model)
        rows.append(
            [
                _rank_cell(row),
                Cell(model, cls="model"),
                Cell((card.organisation if card is not None else None) or "—"),
                _v(row["mean"], d),
                _ci_cell(row, d, scale),
                _v(row["median"], d),
                _n(row["n"]),
                _n(row["n_set_worst"]),
                _links_cell(data, model),
            ]
        )
    columns = [
        ("Rank", True, "🏆: best mean or not significantly worse (Wilcoxon, Holm)"),
        ("Model", False, ""),
        ("Organisation", False, ""),
        ("Mean", True, ""),
        ("95% CI", True, "percentile bootstrap over cases"),
        ("Median", True, ""),
        ("n", True, "cases"),
        ("Set worst", True, "values set to the metric's worst by the missing-value policy"),
        ("Links", False, ""),
    ]
    return Table(columns, rows, cls="leaderboard")


def _matrix(data: ReportData, metric: str, dataset: str) -> Table:
    a = data.analyses[metric]
    agg = _slice(a.aggregates, dataset=dataset)
    structures = _structures(agg)
    d = _digits(metric)
    rows = []
    for model in data.model_order(metric, dataset):
        cells = [Cell(model, cls="model")]
        for structure in structures:
            part = agg[(agg["model"] == model) & (agg["structure"] == structure)]
            if part.empty:
                cells.append(Cell("—", ""))
                continue
            row = part.iloc[0]
            cell = _v(row["mean"], d)
            if _true(row.get("contaminated")):
                cell.text += " (excl.)"
                cell.cls = "excl"
            elif _true(row.get("winner")):
                cell.cls = "best"
            cells.append(cell)
        rows.append(cells)
    columns = [("Model", False, "")] + [(s, True, "") for s in structures]
    return Table(columns, rows, cls="matrix", caption="bold: co-winner on that structure")


def _consensus(data: ReportData, metric: str) -> Table | None:
    cons = data.analyses[metric].consensus
    part = _slice(cons, structure=AVERAGE)
    if part.empty:
        return None
    part = part.sort_values(["consensus_rank", "model"])
    rows = [
        [
            _v(r["consensus_rank"], 0),
            Cell(str(r["model"])),
            _v(r["mean_rank"], 2),
            _n(r["n_datasets"]),
        ]
        for r in part.to_dict("records")
    ]
    columns = [("Consensus rank", True, ""), ("Model", False, ""), ("Mean rank", True, "")]
    return Table([*columns, ("Datasets", True, "datasets the model is ranked on")], rows)


def _structure_table(data: ReportData, metric: str, dataset: str, structure: str) -> Table:
    a = data.analyses[metric]
    agg = _slice(a.aggregates, dataset=dataset, structure=structure)
    agg = _ordered(agg, data.model_order(metric, dataset, structure))
    rk = _slice(a.rankings, dataset=dataset, structure=structure).set_index("model")
    st = _slice(a.stability, dataset=dataset, structure=structure).set_index("model")
    d = _digits(metric)
    scale = _ci_scale(agg)
    rows = []
    for row in agg.to_dict("records"):
        model = str(row["model"])
        r = rk.loc[model] if model in rk.index else {}
        s = st.loc[model] if model in st.index else {}
        p1 = s.get("p_rank1") if len(s) else None
        rci = (
            f"{_rank(s.get('rank_ci_low'))}–{_rank(s.get('rank_ci_high'))}"
            if len(s) and not _isnan(s.get("rank_ci_low"))
            else "—"
        )
        rows.append(
            [
                _rank_cell(row),
                Cell(model, cls="model"),
                _v(row["mean"], d),
                _ci_cell(row, d, scale),
                _v(row["median"], d),
                Cell(f"{_num(row['q1'], d)} – {_num(row['q3'], d)}", _key(row["q1"])),
                _n(row["n"]),
                _n(row["n_missing"]),
                _n(row["n_set_worst"]),
                Cell(
                    _rank(r.get("rank_by_case_rank")) if len(r) else "—",
                    _key(r.get("rank_by_case_rank")) if len(r) else "",
                ),
                Cell(
                    _rank(r.get("rank_by_tests")) if len(r) else "—",
                    _key(r.get("rank_by_tests")) if len(r) else "",
                ),
                _v(p1, 3),
                Cell(rci, _key(s.get("rank_ci_low")) if len(s) else ""),
            ]
        )
    columns = [
        ("Rank", True, "aggregate-then-rank (by mean); 🏆 co-winner"),
        ("Model", False, ""),
        ("Mean", True, ""),
        ("95% CI", True, "percentile bootstrap over cases"),
        ("Median", True, ""),
        ("IQR", True, "first – third quartile"),
        ("n", True, "cases"),
        ("Missing", True, "missing predictions or values"),
        ("Set worst", True, "values set to the metric's worst"),
        ("Rank (cases)", True, "rank-then-aggregate: mean of the per-case ranks"),
        ("Rank (tests)", True, "test-then-rank: significant wins"),
        ("P(rank 1)", True, "bootstrap frequency of rank 1"),
        ("Rank CI", True, "95% bootstrap interval of the rank"),
    ]
    return Table(columns, rows, cls="results")


def _pairwise_table(data: ReportData, metric: str, dataset: str, structure: str) -> Table:
    pw = _slice(data.analyses[metric].pairwise, dataset=dataset, structure=structure)
    pw = pw.loc[pw["significant"].map(_true)] if not pw.empty else pw
    d = _digits(metric)
    rows = [
        [
            Cell(str(r["model_a"])),
            Cell(str(r["model_b"])),
            _n(r["n_paired"]),
            _v(r["median_difference"], d),
            Cell(_p(r["p_value"]), _key(r["p_value"])),
            Cell(_p(r["p_holm"]), _key(r["p_holm"])),
        ]
        for r in pw.sort_values(["p_holm", "model_a", "model_b"]).to_dict("records")
    ]
    columns = [
        ("Better", False, "model_a"),
        ("than", False, "model_b"),
        ("Pairs", True, "paired cases"),
        ("Median difference", True, ""),
        ("p", True, "one-sided Wilcoxon signed-rank"),
        ("p (Holm)", True, ""),
    ]
    return Table(columns, rows, cls="pairs")


def _stability_tables(data: ReportData, metric: str, dataset: str) -> tuple[Table, Table]:
    a = data.analyses[metric]
    tau = _slice(a.stability_tau, dataset=dataset)
    tau = tau.assign(_o=tau["structure"].map(lambda s: (s != AVERAGE, str(s)))).sort_values("_o")
    tau_rows = [
        [
            Cell(str(r["structure"])),
            _n(r["n_models"]),
            _n(r["n_cases"]),
            _n(r["n_resamples"]),
            _v(r["tau_mean"], 3),
            _v(r["tau_median"], 3),
            Cell(f"{_num(r['tau_q025'], 3)} – {_num(r['tau_q975'], 3)}", _key(r["tau_q025"])),
            _n(r["n_tau_undefined"]),
        ]
        for r in tau.to_dict("records")
    ]
    tau_cols = [
        ("Structure", False, ""),
        ("Models", True, ""),
        ("Cases", True, ""),
        ("Resamples", True, ""),
        ("Mean τ", True, "Kendall τ-b between the full-data and bootstrap rankings"),
        ("Median τ", True, ""),
        ("95% interval", True, ""),
        ("Undefined", True, "resamples where τ is undefined"),
    ]
    st = _slice(a.stability, dataset=dataset, structure=AVERAGE)
    st = _ordered(st, data.model_order(metric, dataset))
    d = _digits(metric)
    st_rows = [
        [
            _v(r["rank"], 0),
            Cell(str(r["model"]), cls="model"),
            _v(r["mean"], d),
            _v(r["p_rank1"], 3),
            _v(r["mean_rank"], 2),
            _v(r["median_rank"], 1),
            Cell(f"{_rank(r['rank_ci_low'])}–{_rank(r['rank_ci_high'])}", _key(r["rank_ci_low"])),
        ]
        for r in st.to_dict("records")
    ]
    st_cols = [
        ("Rank", True, ""),
        ("Model", False, ""),
        ("Mean", True, ""),
        ("P(rank 1)", True, "bootstrap frequency of rank 1"),
        ("Mean rank", True, ""),
        ("Median rank", True, ""),
        ("Rank 95% CI", True, ""),
    ]
    return Table(tau_cols, tau_rows), Table(st_cols, st_rows, cls="p-rank1")


def _subgroup_tables(
    data: ReportData, metric: str, dataset: str, grouping: str
) -> tuple[Table, Table]:
    a = data.analyses[metric]
    d = _digits(metric)
    sg = _slice(a.subgroups, dataset=dataset, grouping=grouping)
    means = [
        [
            Cell(str(r["structure"])),
            Cell(str(r["model"]), cls="model"),
            Cell(str(r["group"])),
            _n(r["n"]),
            _v(r["mean"], d),
            _v(r["median"], d),
            Cell(str(r["reason"]) if _true(r["skipped"]) else ""),
        ]
        for r in sg.to_dict("records")
    ]
    means_cols = [
        ("Structure", False, ""),
        ("Model", False, "average: per-case mean over the models"),
        ("Group", False, ""),
        ("n", True, ""),
        ("Mean", True, ""),
        ("Median", True, ""),
        ("Skipped", False, "why a group is not tested"),
    ]
    tests = _slice(a.subgroup_tests, dataset=dataset, grouping=grouping)
    if not tests.empty:
        tests = tests.loc[tests["significant"].map(_true)]
    sig = [
        [
            Cell(str(r["structure"])),
            Cell(str(r["model"]), cls="model"),
            Cell(str(r["test"])),
            Cell(str(r["group_a"]) or "all groups"),
            Cell(str(r["group_b"])),
            _n(r["n_a"]),
            _n(r["n_b"]),
            Cell(_p(r["p"]), _key(r["p"])),
            Cell(_p(r["p_adj"]), _key(r["p_adj"])),
            Cell(str(r["correction"])),
        ]
        for r in tests.to_dict("records")
    ]
    sig_cols = [
        ("Structure", False, ""),
        ("Model", False, ""),
        ("Test", False, ""),
        ("Group A", False, ""),
        ("Group B", False, ""),
        ("n A", True, ""),
        ("n B", True, ""),
        ("p", True, ""),
        ("p adjusted", True, ""),
        ("Correction", False, ""),
    ]
    return Table(means_cols, means), Table(sig_cols, sig, cls="significant-pairs")


def _speed_table(data: ReportData, dataset: str) -> Table:
    sp = _slice(data.speed, dataset=dataset).sort_values("cm3_per_s", ascending=False)
    rows = [
        [
            Cell(str(r["model"]), cls="model"),
            _n(r["n_cases"]),
            _v(r["seconds"], 2),
            _v(r["volume_cm3"], 2),
            _v(r["cm3_per_s"], 2),
        ]
        for r in sp.to_dict("records")
    ]
    columns = [
        ("Model", False, ""),
        ("Cases", True, ""),
        ("Seconds", True, "total inference time"),
        ("Volume (cm³)", True, "total image volume"),
        ("cm³/s", True, "volume processed per second"),
    ]
    return Table(columns, rows, cls="speed")


def _changes_table(data: ReportData, metric: str) -> Table:
    ch = data.analyses[metric].changes
    cols = [c for c in CHANGE_COLUMNS if c in ch.columns]
    rows = []
    if not ch.empty:
        summed = ch.groupby(["dataset", "model"], sort=True)[cols].sum().reset_index()
        for r in summed.to_dict("records"):
            rows.append([Cell(str(r["dataset"])), Cell(str(r["model"]), cls="model")])
            rows[-1] += [_n(r[c]) for c in cols]
    columns = [("Dataset", False, ""), ("Model", False, "")]
    columns += [(c.removeprefix("n_").replace("_", " "), True, c) for c in cols]
    return Table(columns, rows, cls="changes")


def _params(value: Any) -> Any:
    """Analysis params as nested (key, value) lists for the template; leaves as strings."""
    if isinstance(value, Mapping):
        return [(str(k), _params(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return json.dumps(list(value), default=str, ensure_ascii=False)
    return "null" if value is None else str(value)


def _svg_size(path: Path) -> tuple[int, int]:
    """Intrinsic size of an SVG in CSS px from its root ``width``/``height`` (pt or px)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return 640, 480
    m = _SVG_SIZE.search(head)
    if m is None:
        return 640, 480
    w, wu, h, hu = float(m[1]), m[2], float(m[3]), m[4]
    w *= _PX_PER_PT if wu in (None, "pt") else 1.0
    h *= _PX_PER_PT if hu in (None, "pt") else 1.0
    return max(round(w), 1), max(round(h), 1)


class _Figures:
    """Looks up figures by key and places them in the site (relative ``src``)."""

    def __init__(self, figures: Mapping[FigureKey, Path], out_dir: Path) -> None:
        self._figures = {tuple(k): Path(v) for k, v in figures.items()}
        self._out = out_dir

    def get(self, key: FigureKey, caption: str) -> Fig | None:
        path = self._figures.get(key)
        if path is None or not path.exists():
            return None
        root = self._out.resolve()
        try:
            rel = path.resolve().relative_to(root)
        except ValueError:  # outside the site: copy it into svg/
            target = self._out / "svg" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            rel = target.resolve().relative_to(root)
        if path.suffix.lower() == ".svg":
            width, height = _svg_size(path)
        else:
            width, height = 640, 480
        return Fig(rel.as_posix(), caption, caption, width, height)

    def many(self, wanted: Sequence[tuple[FigureKey, str]]) -> list[Fig]:
        """The figures among ``wanted`` (key, caption) that exist, in order."""
        found = (self.get(key, caption) for key, caption in wanted)
        return [f for f in found if f is not None]


# --------------------------------------------------------------------------- pages


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("assay.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["slug"] = slugify
    env.globals["metric_name"] = metric_name
    return env


def _nav(data: ReportData, has_speed: bool) -> dict[str, Any]:
    structures = []
    for dataset in data.dataset_names:
        names: set[str] = set()
        for a in data.analyses.values():
            names |= set(map(str, _slice(a.aggregates, dataset=dataset)["structure"]))
        ordered = ([AVERAGE] if AVERAGE in names else []) + sorted(names - {AVERAGE})
        structures.append((dataset, [(s, page_name(dataset, s)) for s in ordered]))
    pages = [("index.html", "Overview"), ("stability.html", "Stability")]
    pages.append(("subgroups.html", "Subgroups"))
    if has_speed:
        pages.append(("speed.html", "Speed"))
    pages.append(("methods.html", "Methods"))
    return {"pages": pages, "structures": structures}


def _runs(data: ReportData) -> list[dict[str, Any]]:
    out = []
    if data.runs.empty:
        return out
    for r in data.runs.to_dict("records"):
        manifest = r.get("manifest")
        protocol = manifest.get("protocol") if isinstance(manifest, Mapping) else None
        out.append(
            {
                "run_id": str(r.get("run_id", "")),
                "dataset": str(r.get("dataset", "")),
                "model": str(r.get("model", "")),
                "profile": str(r.get("profile", "")),
                "protocol": _params(protocol) if isinstance(protocol, Mapping) else [],
            }
        )
    return out


def _seeds(data: ReportData) -> list[tuple[str, str]]:
    seeds = []
    for metric, a in data.analyses.items():
        boot = a.params.get("bootstrap", {}) if isinstance(a.params, Mapping) else {}
        seed = boot.get("seed") if isinstance(boot, Mapping) else None
        seeds.append((f"bootstrap ({metric})", "—" if seed is None else str(seed)))
    if "seed" in data.options:
        seeds.append(("options", str(data.options["seed"])))
    return seeds


def write_site(
    data: ReportData, out_dir: str | Path, figures: Mapping[FigureKey, Path]
) -> list[Path]:
    """Write the HTML pages and their assets into ``out_dir`` (created if needed).

    Parameters
    ----------
    data : the report's inputs.
    out_dir : the site folder; figures given by ``figures`` inside it are linked in place,
        figures outside it are copied into ``out_dir/svg/``.
    figures : :data:`FigureKey` -> figure file (as returned by :func:`render_figures`);
        a missing key leaves that figure out of its page.

    Returns
    -------
    list of Path
        The pages written (``index.html``, the structure pages, ``stability.html``,
        ``subgroups.html``, ``speed.html`` when speed is known, ``methods.html``), then the
        copied assets. Without speed data a stale ``speed.html`` is removed.
    """
    from assay import __version__

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    figs = _Figures(figures, out_dir)
    has_speed = not data.speed.empty
    nav = _nav(data, has_speed)
    common = {"title": data.title, "version": __version__, "nav": nav}
    written: list[Path] = []

    def render(template: str, name: str, **context: Any) -> None:
        html = env.get_template(template).render(**common, current=name, **context)
        path = out_dir / name
        path.write_text(html, encoding="utf-8")
        written.append(path)

    render("index.html", "index.html", **_index_context(data))
    for dataset, pages in nav["structures"]:
        for structure, name in pages:
            blocks = _structure_blocks(data, figs, dataset, structure)
            render("structure.html", name, dataset=dataset, structure=structure, blocks=blocks)
    render("stability.html", "stability.html", blocks=_stability_blocks(data, figs))
    render("subgroups.html", "subgroups.html", blocks=_subgroup_blocks(data, figs))
    if has_speed:
        render("speed.html", "speed.html", blocks=_speed_blocks(data, figs))
    else:
        (out_dir / "speed.html").unlink(missing_ok=True)  # a stale page from an earlier run
    render("methods.html", "methods.html", **_methods_context(data))
    written += _copy_assets(out_dir / "assets")
    return written


def _index_context(data: ReportData) -> dict[str, Any]:
    sections = []
    for dataset in data.dataset_names:
        blocks = [
            {
                "metric": metric,
                "leaderboard": _leaderboard(data, metric, dataset),
                "matrix": _matrix(data, metric, dataset),
            }
            for metric, a in data.analyses.items()
            if not _slice(a.aggregates, dataset=dataset).empty
        ]
        sections.append({"dataset": dataset, "card": data.datasets.get(dataset), "blocks": blocks})
    consensus = [(m, t) for m in data.analyses if (t := _consensus(data, m)) is not None]
    return {"sections": sections, "consensus": consensus}


def _structure_blocks(
    data: ReportData, figs: _Figures, dataset: str, structure: str
) -> list[dict[str, Any]]:
    blocks = []
    for metric, a in data.analyses.items():
        if _slice(a.aggregates, dataset=dataset, structure=structure).empty:
            continue
        label = f"{dataset} · {structure} · {metric_name(metric)}"
        shown = [
            (("heatmap", dataset, metric, structure), f"Significance heatmap — {label}"),
            (("cases", dataset, metric, structure), f"Per-case values — {label}"),
            (("blobs", dataset, metric, structure), f"Rank stability — {label}"),
        ]
        blocks.append(
            {
                "metric": metric,
                "table": _structure_table(data, metric, dataset, structure),
                "pairs": _pairwise_table(data, metric, dataset, structure),
                "figures": figs.many(shown),
            }
        )
    return blocks


def _stability_blocks(data: ReportData, figs: _Figures) -> list[dict[str, Any]]:
    blocks = []
    for dataset in data.dataset_names:
        for metric, a in data.analyses.items():
            if _slice(a.stability, dataset=dataset).empty:
                continue
            tau_table, p1_table = _stability_tables(data, metric, dataset)
            label = f"{dataset} · {metric_name(metric)}"
            shown = [
                (("tau", dataset, metric, ""), f"Kendall τ — {label}"),
                (("robustness", dataset, metric, AVERAGE), f"Ranking schemes — {label} · average"),
            ]
            blocks.append(
                {
                    "dataset": dataset,
                    "metric": metric,
                    "tau": tau_table,
                    "p_rank1": p1_table,
                    "figures": figs.many(shown),
                }
            )
    return blocks


def _subgroup_blocks(data: ReportData, figs: _Figures) -> list[dict[str, Any]]:
    blocks = []
    for dataset in data.dataset_names:
        for metric, a in data.analyses.items():
            parts = _subgroup_parts(a.subgroups, dataset)
            for grouping in sorted({g for g, _, _ in parts}):
                means, sig = _subgroup_tables(data, metric, dataset, grouping)
                shown = [
                    (
                        ("subgroup", dataset, metric, part),
                        f"{dataset} · {structure} · {metric_name(metric)} by {grouping}",
                    )
                    for g, structure, part in parts
                    if g == grouping
                ]
                blocks.append(
                    {
                        "dataset": dataset,
                        "metric": metric,
                        "grouping": grouping,
                        "means": means,
                        "significant": sig,
                        "figures": figs.many(shown),
                    }
                )
    return blocks


def _speed_blocks(data: ReportData, figs: _Figures) -> list[dict[str, Any]]:
    return [
        {
            "dataset": dataset,
            "table": _speed_table(data, dataset),
            "figure": figs.get(("speed", dataset, "", ""), f"Inference speed — {dataset}"),
        }
        for dataset in sorted({str(d) for d in data.speed["dataset"]})
    ]


def _methods_context(data: ReportData) -> dict[str, Any]:
    analyses = [
        {
            "metric": m,
            "params": _params(a.params),
            "changes": _changes_table(data, m),
            "warnings": list(a.warnings),
        }
        for m, a in data.analyses.items()
    ]
    models = [
        {
            "name": name,
            "organisation": card.organisation,
            "framework": card.framework,
            "paper": _url(card.paper),
            "code": _url(card.code),
            "training_data": ", ".join(card.training_data),
        }
        for name, card in sorted(data.cards.items())
    ]
    return {
        "analyses": analyses,
        "runs": _runs(data),
        "seeds": _seeds(data),
        "software": sorted((str(k), str(v)) for k, v in data.software.items()),
        "dataset_cards": [data.datasets[d] for d in sorted(data.datasets)],
        "models": models,
        "options": _params(dict(data.options)),
    }


def _copy_assets(target: Path) -> list[Path]:
    """Copy the package's ``assets/`` (CSS, JS) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    out = []
    source = resources.files("assay.report") / "assets"
    for item in sorted(source.iterdir(), key=lambda t: t.name):
        if item.is_file() and not item.name.startswith("."):
            path = target / item.name
            path.write_bytes(item.read_bytes())
            out.append(path)
    return out
