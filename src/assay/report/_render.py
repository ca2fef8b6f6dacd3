"""Figures of the report site: one registry of figure kinds, file names, and
:func:`render_figures`.

:data:`FIGURES` is the registry: per figure kind the drawing function, the pages that show
it and its one-sentence reading hint. :func:`render_figures` draws every figure of a report
once (SVG for the site under ``svg/``; publication PDF/PNG under ``figures/`` only when asked,
see :func:`parse_figure_formats`), in parallel worker processes for more than a few figures;
the file stem of a figure is :func:`figure_stem` of its :data:`FigureKey`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from assay.errors import InputError
from assay.metrics import is_registered, metric_title
from assay.report._data import ReportData
from assay.report._helpers import HelperPool, run_shared
from assay.stats import AVERAGE

__all__ = [
    "DEFAULT_FIGURE_FORMATS",
    "FIGURES",
    "FIGURE_FORMATS",
    "FIGURE_KINDS",
    "FigureKey",
    "FigureKind",
    "figure_stem",
    "metric_name",
    "page_name",
    "parse_figure_formats",
    "render_figures",
    "slugify",
]

#: (kind, dataset, metric, part); see :data:`FIGURES` for what ``part`` holds.
FigureKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class FigureKind:
    """One kind of report figure.

    Attributes
    ----------
    draw : the drawing function, ``module:function`` (one tidy slice in, a Figure out).
    part : what the :data:`FigureKey`'s ``part`` holds.
    pages : the site pages that show it.
    hint : one-sentence reading hint shown under the figure.
    cost : rough relative drawing time, for scheduling the slow figures first.
    """

    draw: str
    part: str
    pages: str
    hint: str
    cost: float = 1.0


#: The figure registry: kind -> :class:`FigureKind`. Every figure's file stem is
#: :func:`figure_stem` of its key; ``blobs``, ``tau``, ``robustness``, ``subgroup`` and
#: ``speed`` are drawn only where their data exist, ``subgroup`` for a structure other than
#: ``average`` only where a test is significant (:func:`_subgroup_parts`).
FIGURES: dict[str, FigureKind] = {
    "heatmap": FigureKind(
        "assay.report._figures:significance_heatmap", "structure", "structure pages",
        "Cell (row, column): colour = Holm-adjusted p that the row model is better than "
        "the column model (the winner rule's one-sided paired test); ● marks a significant "
        "cell.",
        cost=1.0,
    ),
    "cases": FigureKind(
        "assay.report._figures:case_distribution", "structure", "structure pages",
        "Each dot is one case's value of a model; the box spans the quartiles with the "
        "median as its line.",
        cost=1.5,
    ),
    "blobs": FigureKind(
        "assay.report._figures:rank_blobs", "structure", "structure pages",
        "Blob area = how often the model took that rank over the bootstrap resamples; "
        "the black line spans its 95 % rank interval and the dash marks the median rank.",
        cost=1.0,
    ),
    "robustness": FigureKind(
        "assay.report._figures:ranking_robustness", '"average"', "stability.html",
        "Each row is one model: its rank under aggregate-then-rank, "
        "rank-then-aggregate and test-then-rank; spread-out markers mean the schemes disagree.",
        cost=0.7,
    ),
    "tau": FigureKind(
        "assay.report._figures:tau_violin", '""', "stability.html",
        "Each violin is the distribution of Kendall τ between the full-data ranking and the "
        "bootstrap rankings of one structure; near 1 means a stable ranking.",
        cost=0.7,
    ),
    "subgroup": FigureKind(
        "assay.report._subgroup_figures:subgroup_plot",
        'the grouping (structure "average") or "grouping:structure"',
        "subgroups.html, subgroups--<dataset>--<structure>.html",
        "One panel per model (all models: per-case mean over the models): a box and "
        "the cases of each group, the diamond and bar its mean and 95 % CI; a bracket with "
        "stars marks two groups whose Mann–Whitney test is significant after the stated "
        "correction.",
        cost=3.0,
    ),
    "speed": FigureKind(
        "assay.report._figures:speed_plot", '"" (metric "" too)', "speed.html",
        "Bar length = image volume processed per second of inference (longer is faster).",
        cost=0.5,
    ),
}  # fmt: skip

#: Figure kinds, in registry order.
FIGURE_KINDS = tuple(FIGURES)

#: Every figure file format; ``svg`` is the site's (always written), ``pdf``/``png`` (200 dpi)
#: are publication figures written under ``figures/`` when asked.
FIGURE_FORMATS = ("svg", "pdf", "png")
DEFAULT_FIGURE_FORMATS = ("svg",)

#: Fewer figures than this are drawn in this process (starting workers costs seconds).
MIN_PARALLEL_FIGURES = 8


def parse_figure_formats(
    value: str | Iterable[str] | None, *, where: str = "--figure-formats"
) -> tuple[str, ...]:
    """Figure formats from ``"svg,pdf,png"`` (or a list of names), in :data:`FIGURE_FORMATS`
    order, ``svg`` always included (the site shows it); None or empty gives ``("svg",)``.

    Raises
    ------
    InputError
        An unknown format, with ``where`` (the option or config key) in the one-line message.
    """
    if value is None:
        return DEFAULT_FIGURE_FORMATS
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    unknown = [n for n in names if n not in FIGURE_FORMATS]
    if unknown:
        raise InputError(
            f"{where}: unknown figure format(s) {', '.join(map(repr, unknown))}; use some of "
            f"{', '.join(FIGURE_FORMATS)}, comma-separated (e.g. svg,pdf,png)."
        )
    return tuple(f for f in FIGURE_FORMATS if f == "svg" or f in names)


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
    """Display name of a metric from the registry (``dsc`` -> ``Dice (DSC)``); unknown
    metrics as given."""
    return metric_title(metric) if is_registered(metric) else metric


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
    """Every figure of the report as (key, draw) with ``draw()`` returning a Figure.

    Built once per :class:`ReportData` (slicing every frame takes about a second at
    Touchstone scale) and kept with it, so the progress total
    (:func:`assay._console.figure_total`) and :func:`render_figures` share one list.
    """
    cache = getattr(data, "_derived", None)
    if not isinstance(cache, dict):  # a duck-typed stand-in: nowhere to keep it
        return _build_figure_jobs(data)
    if "figure_jobs" not in cache:
        cache["figure_jobs"] = _build_figure_jobs(data)
    return list(cache["figure_jobs"])


def _build_figure_jobs(data: ReportData) -> list[tuple[FigureKey, Callable[[], Any]]]:
    """:func:`_figure_jobs` without the cache."""
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
    formats: Sequence[str] = DEFAULT_FIGURE_FORMATS,
    on_figure: Callable[[str], None] | None = None,
    workers: int = 1,
    helpers: HelperPool | None = None,
) -> dict[FigureKey, Path]:
    """Draw every figure of ``data`` once: SVG under ``out_dir/svg/``, other formats under
    ``out_dir/figures/``, all with the stem :func:`figure_stem` of their key.

    Parameters
    ----------
    data : the report's inputs.
    out_dir : the site folder (created if needed).
    formats : file formats to write (see :func:`parse_figure_formats`); ``"svg"`` goes to
        ``svg/`` (the site's figures), ``"pdf"`` and ``"png"`` to ``figures/``. Each figure
        is laid out once and saved in every format from that one drawing.
    on_figure : called with each figure's stem once it is written (progress display).
    workers : processes drawing figures in parallel: this one and ``workers - 1`` spawned
        local helpers (Agg backend; see :func:`_draw_all`); 1, or fewer than
        :data:`MIN_PARALLEL_FIGURES` figures, draws in this process only. The files do not
        depend on ``workers``.
    helpers : helper processes already started (:func:`~assay.report._helpers.helper_pool`)
        to use instead of starting ``workers - 1`` here; then ``workers`` only says whether
        to use them (more than 1).

    Returns
    -------
    dict
        :data:`FigureKey` -> the SVG written (or the first file written when ``"svg"`` is not
        in ``formats``), sorted by key. Which keys exist: see :data:`FIGURES`.
    """
    out_dir = Path(out_dir)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if unknown:
        raise InputError(
            f"render_figures: unknown figure format(s) {unknown}; expected some of "
            f"{list(FIGURE_FORMATS)}."
        )
    jobs = [(key, draw, out_dir, formats) for key, draw in _figure_jobs(data)]
    # the slow kinds first, so that no worker is left with a long figure at the end
    jobs.sort(key=lambda job: -FIGURES[job[0][0]].cost)
    n_workers = max(1, min(workers, len(jobs) // 2))
    if len(jobs) < MIN_PARALLEL_FIGURES:
        n_workers = 1
    earlier = _manifest_files(out_dir)
    files = sorted({_figure_file(key, fmt) for key, *_ in jobs for fmt in formats})
    _remove_stale(out_dir, earlier - set(files))
    written: dict[FigureKey, Path] = {}
    if helpers is None and n_workers > 1:
        with HelperPool(n_workers - 1) as own:
            drawn = list(_draw_all(jobs, own, on_figure))
    else:
        drawn = list(_draw_all(jobs, helpers if n_workers > 1 else None, on_figure))
    for key, path, _pid in drawn:
        if path is not None:
            written[key] = path
    _write_manifest(out_dir, files)
    return dict(sorted(written.items()))


def _draw_all(
    jobs: Sequence[tuple[FigureKey, Callable[[], Any], Path, tuple[str, ...]]],
    helpers: HelperPool | None,
    on_figure: Callable[[str], None] | None = None,
) -> Iterator[tuple[FigureKey, Path | None, int]]:
    """Draw every job here and in ``helpers`` (:func:`~assay.report._helpers.run_shared`);
    yields (key, path, pid of the drawing process), calling ``on_figure`` with each stem."""
    for _job, (key, path), pid in run_shared(jobs, _render, helpers, what="drawing figures"):
        if on_figure is not None:
            on_figure(figure_stem(key))
        yield key, path, pid


#: File in the site folder listing the figure files :func:`render_figures` wrote there (paths
#: relative to the folder), so that a report rebuilt in the same folder removes the figures
#: of an earlier build that this build does not write (e.g. PNGs after ``--figure-formats
#: svg``) — and never any other file.
FIGURE_MANIFEST = ".assay-figures.json"


def _figure_file(key: FigureKey, fmt: str) -> str:
    """Path of one figure file relative to the site folder, e.g. ``svg/cases--toy.svg``."""
    return f"{'svg' if fmt == 'svg' else 'figures'}/{figure_stem(key)}.{fmt}"


def _manifest_files(out_dir: Path) -> set[str]:
    """The figure files an earlier :func:`render_figures` listed in ``out_dir`` (none when
    there is no readable manifest); only names of the form ``svg/<stem>.svg`` and
    ``figures/<stem>.<pdf|png>``, so a damaged manifest cannot point anywhere else."""
    try:
        listed = json.loads((out_dir / FIGURE_MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    pattern = re.compile(r"(svg/[a-z0-9_.@-]+\.svg|figures/[a-z0-9_.@-]+\.(pdf|png))")
    return {f for f in listed if isinstance(f, str) and pattern.fullmatch(f) and ".." not in f}


def _remove_stale(out_dir: Path, files: Iterable[str]) -> None:
    """Remove these figure files (relative to ``out_dir``) where they are plain files."""
    for name in files:
        path = out_dir / name
        if path.is_file() and not path.is_symlink():
            path.unlink()


def _write_manifest(out_dir: Path, files: Sequence[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"written_by": "assay report", "files": list(files)}, indent=1)
    (out_dir / FIGURE_MANIFEST).write_text(text + "\n", encoding="utf-8")


def _render(
    job: tuple[FigureKey, Callable[[], Any], Path, tuple[str, ...]],
) -> tuple[FigureKey, Path | None]:
    """Draw one figure and save it (a module-level function, so worker processes can run it)."""
    if multiprocessing.parent_process() is not None:  # a worker: never a GUI backend
        import matplotlib as mpl

        mpl.use("Agg")
    from assay.report import _figures as figs

    key, draw, out_dir, formats = job
    stem = figure_stem(key)
    fig = draw()
    targets = {f: (out_dir / ("svg" if f == "svg" else "figures") / stem) for f in formats}
    paths = figs.save_figure_to(fig, targets)
    return key, (Path(paths[0]) if paths else None)
