"""Figures of the report site: names of pages and figure files, and :func:`render_figures`.

:func:`render_figures` draws every figure of a report with :mod:`assay.report._figures`
(SVG for the site under ``svg/``, publication PDF/PNG under ``figures/``); the file stem of a
figure is :func:`figure_stem` of its :data:`FigureKey`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from assay.report._data import ReportData
from assay.stats import AVERAGE

__all__ = [
    "FIGURE_KINDS",
    "FigureKey",
    "figure_stem",
    "metric_name",
    "page_name",
    "render_figures",
    "slugify",
]

#: (kind, dataset, metric, part); see :data:`FIGURE_KINDS` for what ``part`` holds.
FigureKey = tuple[str, str, str, str]

#: Figure kinds and the meaning of the key's ``part``: the structure for ``heatmap``,
#: ``cases`` and ``blobs``; ``"average"`` for ``robustness``; ``""`` for ``tau``; the grouping
#: for ``subgroup`` with structure ``average``, ``"grouping:structure"`` for another structure
#: (see :func:`_subgroup_parts`: drawn only where a test is significant); ``speed`` has metric
#: ``""`` and part ``""``.
FIGURE_KINDS = ("heatmap", "cases", "blobs", "robustness", "tau", "subgroup", "speed")

_METRIC_NAMES = {
    "dsc": "Dice (DSC)",
    "nsd": "NSD",
    "hd": "Hausdorff distance (mm)",
    "hd95": "HD95 (mm)",
    "assd": "ASSD (mm)",
    "masd": "MASD (mm)",
}

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


#: Display name of the subgroup analysis' pseudo-model ``average`` (all models together).
ALL_MODELS = "all models"


def all_models(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the subgroup pseudo-model ``average`` renamed :data:`ALL_MODELS`."""
    if frame.empty or "model" not in frame.columns:
        return frame
    model = frame["model"].astype(object)
    return frame.assign(model=model.where(model != AVERAGE, ALL_MODELS))


def pairwise_alpha(params: Any) -> float | None:
    """The significance level of the pairwise tests (``params["tests"]["alpha"]``), if given."""
    tests = params.get("tests") if isinstance(params, Mapping) else None
    alpha = tests.get("alpha") if isinstance(tests, Mapping) else None
    try:
        return None if alpha is None else float(alpha)
    except (TypeError, ValueError):
        return None


def _figure_jobs(data: ReportData) -> list[tuple[FigureKey, Callable[[], Any]]]:
    """Every figure of the report as (key, draw) with ``draw()`` returning a Figure."""
    from assay.report import _figures as figs  # matplotlib only when figures are drawn

    jobs: list[tuple[FigureKey, Callable[[], Any]]] = []
    for metric, a in data.analyses.items():
        alpha = pairwise_alpha(a.params)
        extra = {} if alpha is None else {"alpha": alpha}
        for dataset in sorted({str(d) for d in a.aggregates["dataset"]}):
            for structure in _structures(_slice(a.aggregates, dataset=dataset)):
                order = data.model_order(metric, dataset, structure)
                label = f"{dataset} · {structure} · {metric_name(metric)}"
                where = {"dataset": dataset, "structure": structure}
                pw = _slice(a.pairwise, **where)
                title = f"Pairwise tests (Holm p) — {label}"
                draw = partial(figs.significance_heatmap, pw, order, title=title, **extra)
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
            jobs += _subgroup_jobs(data, metric, dataset)
    for dataset in sorted({str(d) for d in data.speed.get("dataset", [])}):
        sp = _slice(data.speed, dataset=dataset)
        draw = partial(figs.speed_plot, sp, title=f"Inference speed — {dataset}")
        jobs.append((("speed", dataset, "", ""), draw))
    return jobs


def _subgroup_jobs(
    data: ReportData, metric: str, dataset: str
) -> list[tuple[FigureKey, Callable[[], Any]]]:
    """The subgroup figures of one (dataset, metric): see :func:`_subgroup_parts`."""
    from assay.report import _subgroup_figures as sfigs

    a = data.analyses[metric]
    alpha = pairwise_alpha(a.params)
    sub = a.params.get("subgroups") if isinstance(a.params, Mapping) else None
    if isinstance(sub, Mapping) and sub.get("alpha") is not None:
        alpha = float(sub["alpha"])
    extra = {} if alpha is None else {"alpha": alpha}
    ci_label = subgroup_ci_label(a.params)
    members = _slice(a.subgroup_cases, dataset=dataset)
    order = data.model_order(metric, dataset)
    jobs: list[tuple[FigureKey, Callable[[], Any]]] = []
    for grouping, structure, part in _subgroup_parts(a.subgroups, a.subgroup_tests, dataset):
        where = {"dataset": dataset, "structure": structure, "grouping": grouping}
        sg, tests = _slice(a.subgroups, **where), _slice(a.subgroup_tests, **where)
        sub_order = [*order, *sorted(set(map(str, sg["model"])) - set(order))]
        vals = _slice(a.values, dataset=dataset, structure=structure)
        cases = _slice(members, grouping=grouping)
        title = f"{dataset} · {structure} · {metric_name(metric)} by {grouping}"
        draw = partial(
            sfigs.subgroup_plot, sg, tests, sub_order, values=vals, cases=cases, title=title,
            ci_label=ci_label, **extra,
        )  # fmt: skip
        jobs.append((("subgroup", dataset, metric, part), draw))
    return jobs


def subgroup_ci_label(params: Any) -> str:
    """How the group-mean CIs were computed, e.g. ``"percentile bootstrap, B = 2,000, seed 0"``."""
    boot = params.get("bootstrap") if isinstance(params, Mapping) else None
    if not isinstance(boot, Mapping):
        return ""
    method, b, seed = boot.get("method"), boot.get("resamples"), boot.get("seed")
    parts = [f"{method} bootstrap" if method else "bootstrap"]
    if b is not None:
        parts.append(f"B = {int(b):,}")
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


def subgroup_significant_structures(tests: pd.DataFrame, dataset: str, grouping: str) -> list[str]:
    """Structures of (dataset, grouping) with a significant Mann–Whitney pair (any model)."""
    t = _slice(tests, dataset=dataset, grouping=grouping)
    if t.empty:
        return []
    hit = t[t["test"].eq("mannwhitneyu") & t["significant"].eq(True)]
    return _structures(hit)


def _subgroup_parts(
    subgroups: pd.DataFrame, tests: pd.DataFrame, dataset: str
) -> list[tuple[str, str, str]]:
    """(grouping, structure, key part) of the subgroup figures of one dataset.

    One figure per grouping for the ``average`` structure (key part = the grouping) and one
    per other structure where some Mann–Whitney pair is significant after correction (key
    part ``"grouping:structure"``); without ``average`` rows, every structure is drawn. The
    tables of the site cover every structure either way.
    """
    part = _slice(subgroups, dataset=dataset)
    out = []
    for grouping in sorted({str(g) for g in part.get("grouping", [])}):
        structures = _structures(_slice(part, grouping=grouping))
        if AVERAGE in structures:
            out.append((grouping, AVERAGE, grouping))
            significant = set(subgroup_significant_structures(tests, dataset, grouping))
            structures = [s for s in structures if s != AVERAGE and s in significant]
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
