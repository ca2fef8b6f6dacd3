"""Subgroup figures (DESIGN.md §5): per-case box plots per group, per model, with brackets.

One figure per (dataset, structure, metric, grouping): a panel per model (the pseudo-model
``"average"``, labelled "all models", last), the groups side by side in every panel, each
with a box (median, quartiles), its jittered per-case points, and its mean with the
bootstrap CI of the analysis next to the box; pairs of groups whose Mann–Whitney test is
significant after the analysis' correction are bracketed. As in :mod:`assay.report._figures`
every figure has pure data-preparation companions that return exactly what gets drawn
(:func:`subgroup_cases`, :func:`subgroup_points`, :func:`subgroup_marks`,
:func:`subgroup_styles`), so tests check data, not pixels.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from assay.report._figures import (
    JITTER_SEED,
    MARKERS,
    OKABE_ITO,
    RASTERIZE_ABOVE,
    SIGNIFICANT,
    _caption,
    _metric_label,
    _metric_of,
    _models,
    _one_slice,
)

__all__ = [
    "AVERAGE_LABEL",
    "AVERAGE_MODEL",
    "MAX_BRACKETS",
    "pretty_grouping",
    "significance_stars",
    "subgroup_boxes",
    "subgroup_cases",
    "subgroup_marks",
    "subgroup_plot",
    "subgroup_points",
    "subgroup_styles",
]

#: Pseudo-model of the subgroup frames (per-case mean over the models) and its panel title.
AVERAGE_MODEL = "average"
AVERAGE_LABEL = "all models"
#: Groups of a subgrouping that are never real groups (always skipped by the analysis).
SPECIAL_GROUPS = frozenset({"(unassigned)", "(no metadata)"})
#: Most brackets drawn in one panel (the narrowest pairs first); the rest are counted.
MAX_BRACKETS = 6
BOX_WIDTH = 0.5  # box width, in group slots
JITTER_WIDTH = 0.34  # total width of the jitter of the case points, in group slots
MEAN_OFFSET = 0.38  # the mean and its CI sit this far right of the box centre
_BIN_LABEL = re.compile(r"^[\[(].*,.*[\])]$")  # "[30, 40)": an ordered bin
_CORRECTIONS = {"bonferroni": "Bonferroni", "fdr_bh": "Benjamini–Hochberg", "holm": "Holm"}
_KEYS = ("dataset", "structure", "metric", "grouping")


def _subgroup_models(order: Sequence[str], *present: pd.Series) -> list[str]:
    """Models of ``order`` in ``present`` with the pseudo-model ``"average"`` moved last."""
    models = _models(order, *present)
    return [m for m in models if m != AVERAGE_MODEL] + [m for m in models if m == AVERAGE_MODEL]


def pretty_grouping(grouping: str) -> str:
    """Readable name of a grouping: ``"age:decades"`` → ``"age (decades)"``, ``"sex"`` as is."""
    name, _, spec = str(grouping).partition(":")
    return f"{name.strip()} ({spec.strip()})" if spec.strip() else name.strip()


def _real_groups(subgroups: pd.DataFrame) -> list[str]:
    """The real groups of one grouping in order of appearance (skipped ones included)."""
    if subgroups.empty:
        return []
    groups = dict.fromkeys(subgroups["group"].astype(object))
    return [g for g in groups if g not in SPECIAL_GROUPS]


def subgroup_styles(subgroups: pd.DataFrame) -> pd.DataFrame:
    """Colour, marker and legend label of every group of one grouping.

    The styles depend only on the full ordered list of groups in ``subgroups`` (order of
    appearance, i.e. bin order, skipped groups included), never on which groups a figure
    draws, so a group looks the same in every figure of its grouping. Real group ``j`` of
    ``g`` gets ``MARKERS[j mod 12]`` and, when the groups are ordered bins (labels like
    ``"[30, 40)"``) or more than six, viridis sampled at ``0.85 · j / (g − 1)`` (the yellow end
    is left out: invisible on white); otherwise the j-th Okabe–Ito colour (yellow left out).
    The special groups ``(unassigned)`` and ``(no metadata)`` (never drawn) are grey. ``n`` is
    the largest n over the models (0 when none) and ``label`` is ``"<group> n=<n>"``.

    Returns
    -------
    DataFrame with columns group, color (hex), marker, n, label.
    """
    columns = ["group", "color", "marker", "n", "label"]
    if subgroups.empty:
        return pd.DataFrame(columns=columns)
    groups = list(dict.fromkeys(subgroups["group"].astype(object)))
    real = [g for g in groups if g not in SPECIAL_GROUPS]
    ordered = len(real) > 6 or (bool(real) and all(_BIN_LABEL.match(str(g)) for g in real))
    if ordered:
        shades = np.linspace(0.0, 0.85, len(real)) if len(real) > 1 else [0.0]
        palette = [mpl.colors.to_hex(mpl.colormaps["viridis"](t)) for t in shades]
    else:
        palette = [OKABE_ITO[j] for j in range(len(real))]  # at most 6: never the yellow
    n_max = subgroups.groupby("group", sort=False)["n"].max()
    rows = []
    for g in groups:
        n = int(np.nan_to_num(n_max.get(g, 0)))
        if g in SPECIAL_GROUPS:
            rows.append((g, "#808080", "x", n, f"{g} n={n}"))
        else:
            j = real.index(g)
            rows.append((g, palette[j], MARKERS[j % len(MARKERS)], n, f"{g} n={n}"))
    return pd.DataFrame(rows, columns=columns).astype({"group": object})


def subgroup_points(subgroups: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Mean and CI per (model, group) of one (dataset, structure, metric, grouping).

    Skipped groups (too small, or special) are left out. Models follow ``order`` except the
    pseudo-model ``"average"``, which comes last; ``panel`` is the model's index in that
    order. ``x`` is the group's index among the real groups of ``subgroups`` (in order of
    appearance, skipped ones included, so a group keeps its slot in every panel); the mean and
    its CI are drawn at ``x + MEAN_OFFSET``. ``ci_low``/``ci_high`` are NaN where the frame has
    no CI columns.

    Returns
    -------
    DataFrame with columns model, panel, group, x, mean, ci_low, ci_high, n.
    """
    _one_slice(subgroups, _KEYS, "subgroup_points")
    columns = ["model", "panel", "group", "x", "mean", "ci_low", "ci_high", "n"]
    if subgroups.empty:
        return pd.DataFrame(columns=columns)
    slot = {g: i for i, g in enumerate(_real_groups(subgroups))}
    kept = subgroups[~subgroups["skipped"].eq(True) & subgroups["group"].isin(slot)]
    models = _subgroup_models(order, kept["model"])
    panel = {m: i for i, m in enumerate(models)}
    kept = kept[kept["model"].isin(panel)]
    points = pd.DataFrame(
        {
            "model": kept["model"].astype(object),
            "group": kept["group"].astype(object),
            "mean": kept["mean"].astype(float),
            "ci_low": kept["ci_low"].astype(float) if "ci_low" in kept else np.nan,
            "ci_high": kept["ci_high"].astype(float) if "ci_high" in kept else np.nan,
            "n": kept["n"],
        }
    )
    points["panel"] = points["model"].map(panel).astype(int)
    points["x"] = points["group"].map(slot).astype(float)
    points = points.sort_values(["panel", "x"], kind="stable")
    return points.loc[:, columns].reset_index(drop=True)


def subgroup_cases(
    values: pd.DataFrame, cases: pd.DataFrame, subgroups: pd.DataFrame, order: Sequence[str]
) -> pd.DataFrame:
    """Per-case points of the boxes of :func:`subgroup_plot`, with a deterministic jitter.

    ``values`` are the per-case values of one (dataset, structure, metric) (columns model,
    case_id, value), ``cases`` the members of the grouping's groups (columns group, case_id;
    :attr:`assay.stats.Analysis.subgroup_cases`). A (model, group) is drawn when
    :func:`subgroup_points` draws it (not skipped); its points are the model's finite values
    on the group's cases — exactly the sample the analysis tested. The ``"average"`` model's
    value of a case is the mean over the models that have it, as in the analysis.
    ``x = slot + u`` with ``u ~ U(-0.17, 0.17)`` from ``numpy.random.default_rng(0)`` over the
    rows sorted by panel, slot and case id.

    Returns
    -------
    DataFrame with columns model, panel, group, case_id, value, x.
    """
    columns = ["model", "panel", "group", "case_id", "value", "x"]
    drawn = subgroup_points(subgroups, order)
    if drawn.empty or values.empty or cases.empty:
        return pd.DataFrame(columns=columns)
    _one_slice(values, ("dataset", "structure", "metric"), "subgroup_cases")
    vals = values.loc[:, ["model", "case_id", "value"]].astype(
        {"model": object, "case_id": str, "value": float}
    )
    vals = vals[np.isfinite(vals["value"])]
    if AVERAGE_MODEL in set(drawn["model"]):
        mean = vals[vals["model"] != AVERAGE_MODEL].groupby("case_id", sort=True)["value"].mean()
        vals = pd.concat(
            [vals, pd.DataFrame({"model": AVERAGE_MODEL, "case_id": mean.index, "value": mean})],
            ignore_index=True,
        )
    members = cases.loc[:, ["group", "case_id"]].astype({"group": object, "case_id": str})
    points = vals.merge(members, on="case_id").merge(
        drawn[["model", "group", "panel", "x"]], on=["model", "group"]
    )
    points = points.sort_values(["panel", "x", "case_id"], kind="stable")
    rng = np.random.default_rng(JITTER_SEED)
    half = JITTER_WIDTH / 2
    points["x"] = points["x"] + rng.uniform(-half, half, size=len(points))
    return points.loc[:, columns].reset_index(drop=True)


def subgroup_boxes(per_case: pd.DataFrame) -> pd.DataFrame:
    """Box statistics of every drawn (model, group) of :func:`subgroup_cases`' points.

    ``matplotlib.cbook.boxplot_stats`` with ``whis=1.5`` (what ``Axes.boxplot`` draws):
    linear quartiles ``q1``, ``median``, ``q3``; whiskers at the most extreme values within
    1.5 IQR of the box (at the box edge when none is). ``x`` is the group's slot (the points'
    x without jitter).

    Returns
    -------
    DataFrame with columns model, panel, group, x, q1, median, q3, whislo, whishi, n.
    """
    columns = ["model", "panel", "group", "x", "q1", "median", "q3", "whislo", "whishi", "n"]
    rows = []
    if len(per_case):
        values = per_case["value"].to_numpy(dtype=float)
        xs = per_case["x"].to_numpy(dtype=float)
        groups = per_case.groupby(["panel", "model", "group"], sort=True, observed=True)
        for (panel, model, group), at in groups.indices.items():
            rows.append((model, int(panel), group, *_box_stats(values[at], xs[at])))
    boxes = pd.DataFrame(rows, columns=columns).astype({"model": object, "group": object})
    return boxes.sort_values(["panel", "x"], kind="stable").reset_index(drop=True)


def _box_stats(v: np.ndarray, x: np.ndarray) -> tuple[float, ...]:
    """(x, q1, median, q3, whislo, whishi, n) of one box: ``cbook.boxplot_stats(v,
    whis=1.5)`` without the statistics it computes and this figure does not draw."""
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    iqr = q3 - q1
    high = v[v <= q3 + 1.5 * iqr]
    low = v[v >= q1 - 1.5 * iqr]
    whishi = q3 if len(high) == 0 or np.max(high) < q3 else np.max(high)
    whislo = q1 if len(low) == 0 or np.min(low) > q1 else np.min(low)
    slot = float(np.round(x.mean()))  # jitter is symmetric and < 0.5: the slot
    return slot, q1, med, q3, whislo, whishi, len(v)


def _draw_boxes(ax: Axes, boxes: pd.DataFrame, colour: dict[str, str]) -> None:
    """Boxes, whiskers and medians of one panel as three collections (fast to draw)."""
    half = BOX_WIDTH / 2
    rects, segments, medians = [], [], []
    for b in boxes.itertuples(index=False):
        x = b.x
        rects.append([(x - half, b.q1), (x + half, b.q1), (x + half, b.q3), (x - half, b.q3)])
        segments += [
            [(x, b.q1), (x, b.whislo)],
            [(x, b.q3), (x, b.whishi)],
            [(x - half / 2, b.whislo), (x + half / 2, b.whislo)],
            [(x - half / 2, b.whishi), (x + half / 2, b.whishi)],
        ]
        medians.append([(x - half, b.median), (x + half, b.median)])
    colours = [colour[g] for g in boxes["group"]]
    ax.add_collection(
        PolyCollection(
            rects,
            facecolors=[mpl.colors.to_rgba(c, 0.22) for c in colours],
            edgecolors=colours,
            linewidths=0.8,
            zorder=2,
            gid="boxes",
        )
    )
    ax.add_collection(LineCollection(segments, colors="0.35", linewidths=0.8, zorder=2))
    ax.add_collection(
        LineCollection(medians, colors="black", linewidths=1.2, zorder=4, gid="medians")
    )


def significance_stars(p_adj: float, alpha: float = 0.05) -> str:
    """``"***"`` for p < α/100, ``"**"`` for p < α/10, ``"*"`` for p < α, else ``""``."""
    if not np.isfinite(p_adj) or p_adj >= alpha:
        return ""
    return "***" if p_adj < alpha / 100 else "**" if p_adj < alpha / 10 else "*"


def subgroup_marks(
    subgroup_tests: pd.DataFrame, order: Sequence[str], *, alpha: float = 0.05
) -> pd.DataFrame:
    """Significant pairwise Mann–Whitney tests to bracket, one row per bracket.

    Rows of ``subgroup_tests`` with ``test == "mannwhitneyu"`` and ``significant`` True for a
    model of ``order``, in model order with ``"average"`` last (the omnibus Kruskal–Wallis
    rows are not marked); ``stars`` is :func:`significance_stars` of ``p_adj``.

    Returns
    -------
    DataFrame with columns model, group_a, group_b, p_adj, stars.
    """
    columns = ["model", "group_a", "group_b", "p_adj", "stars"]
    if subgroup_tests.empty:
        return pd.DataFrame(columns=columns)
    models = _subgroup_models(order, subgroup_tests["model"])
    keep = (
        subgroup_tests["test"].eq("mannwhitneyu")
        & subgroup_tests["significant"].eq(True)
        & subgroup_tests["model"].isin(models)
    )
    marks = subgroup_tests.loc[keep, columns[:-1]].astype(
        {"model": object, "group_a": object, "group_b": object, "p_adj": float}
    )
    marks["stars"] = [significance_stars(p, alpha) or "*" for p in marks["p_adj"]]
    marks = marks.assign(_pos=marks["model"].map({m: i for i, m in enumerate(models)}))
    return marks.sort_values("_pos", kind="stable").loc[:, columns].reset_index(drop=True)


def _family_text(subgroup_tests: pd.DataFrame) -> str:
    """How the Mann–Whitney p were corrected, e.g. "Bonferroni over all 4,120 tests of ..."."""
    rows = subgroup_tests[subgroup_tests["test"].eq("mannwhitneyu")]
    names = dict.fromkeys(str(c) for c in rows.get("correction", pd.Series()).dropna())
    how = "/".join(_CORRECTIONS.get(c, c) for c in names if c != "none") or "adjusted"
    families = set(rows.get("family", pd.Series(dtype=object)).dropna().astype(str))
    if families == {"all"}:
        sizes = sorted(set(rows["family_size"].dropna().astype(int)))
        m = f"{sizes[0]:,} " if len(sizes) == 1 else ""
        return (
            f"{how} over all {m}Mann–Whitney tests of the dataset and metric (every model, "
            "grouping and structure)"
        )
    return f"{how} within model"


def _subgroup_caption(
    subgroup_tests: pd.DataFrame, models: Sequence[str], alpha: float, ci_label: str, boxes: bool
) -> str:
    note = []
    if boxes:
        note.append(
            "Box: median and quartiles of the per-case values (whiskers 1.5 IQR), dots: cases."
        )
    ci = f" ({ci_label})" if ci_label else ""
    note.append(f"Diamond and bar: group mean and its 95 % CI{ci}.")
    note.append("Groups too small to test are not drawn.")
    if AVERAGE_MODEL in models:
        note.append(f'"{AVERAGE_LABEL}": per-case mean over the models.')
    if len(subgroup_tests) and subgroup_tests["test"].eq("mannwhitneyu").any():
        note.append(
            "Brackets: two-sided Mann–Whitney U significant after "
            f"{_family_text(subgroup_tests)}; * p_adj < {alpha:g}, ** < {alpha / 10:g}, "
            f"*** < {alpha / 100:g}."
        )
    return " ".join(note)


def _panel_grid(n_panels: int, n_groups: int) -> tuple[int, int, float]:
    """(rows, columns, panel width in inches) of the panel grid."""
    width = max(1.5, 0.3 * n_groups + 0.5)
    ncols = max(1, min(n_panels, 5, int(14.0 // width)))
    return math.ceil(n_panels / ncols), ncols, width


def _layout(
    nrows: int, ncols: int, width: float, tick_h: float, legend_rows: int, caption: str
) -> tuple[tuple[float, float], dict[str, float], float]:
    """Fixed layout in inches (much faster to draw than a constrained layout of many axes).

    Returns the figure size, the ``gridspec_kw`` of the panels and the legend's top (figure
    fraction). Every panel has its title above and its tick labels (``tick_h`` in) below.
    """
    left, right, gap, panel_h, title_h = 0.7, 0.15, 0.12, 1.7, 0.28
    fig_w = left + ncols * width + (ncols - 1) * gap + right
    lines = len(textwrap.wrap(caption, width=max(30, int(fig_w * 14)), break_on_hyphens=False))
    top = 0.38 + legend_rows * 0.2 + 0.12 + title_h  # suptitle, legend, first panel title
    bottom = tick_h + 0.12 + lines * 0.15 + 0.1
    row_gap = tick_h + title_h
    fig_h = top + nrows * panel_h + (nrows - 1) * row_gap + bottom
    grid = {
        "left": left / fig_w,
        "right": 1 - right / fig_w,
        "top": 1 - top / fig_h,
        "bottom": bottom / fig_h,
        "wspace": gap / width,
        "hspace": row_gap / panel_h,
    }
    return (fig_w, fig_h), grid, 1 - 0.36 / fig_h


def subgroup_plot(
    subgroups: pd.DataFrame,
    subgroup_tests: pd.DataFrame,
    order: Sequence[str],
    *,
    values: pd.DataFrame | None = None,
    cases: pd.DataFrame | None = None,
    title: str = "",
    alpha: float = 0.05,
    ci_label: str = "",
) -> Figure:
    """Box plots per group and model of one (dataset, structure, metric, grouping).

    One panel per model of :func:`subgroup_points` (shared y axis; the pseudo-model
    ``"average"`` last, titled "all models" in bold), the real groups side by side in each
    (slot ``x`` of the group, the same in every panel; colours from :func:`subgroup_styles`).
    Given ``values`` and ``cases``, each drawn (model, group) gets a box (median, quartiles,
    whiskers 1.5 IQR, no fliers) and its per-case points (:func:`subgroup_cases`, gid
    ``"cases"``, rasterized above :data:`RASTERIZE_ABOVE` points); always, the group mean and
    its CI are drawn right of the box (gid ``"mean"``). Each significant pair of
    :func:`subgroup_marks` gets a bracket over its two slots and its stars as a Text of gid
    ``"significant"``, narrowest pairs lowest; beyond :data:`MAX_BRACKETS` brackets in a
    panel the rest are counted in a "+k more" note (gid ``"more_pairs"``). A caption states
    the test, the correction and its family (from ``subgroup_tests``), the CI (``ci_label``,
    e.g. "percentile bootstrap, B = 2,000, seed 0") and ``alpha``. An empty slice gives a
    figure with a "no subgroup data" note.
    """
    points = subgroup_points(subgroups, order)
    marks = subgroup_marks(subgroup_tests, order, alpha=alpha)
    styles = subgroup_styles(subgroups).set_index("group")
    groups = _real_groups(subgroups)
    models = list(dict.fromkeys(points["model"]))
    per_case = (
        subgroup_cases(values, cases, subgroups, order)
        if values is not None and cases is not None
        else pd.DataFrame(columns=["model", "panel", "group", "case_id", "value", "x"])
    )
    grouping = str(subgroups["grouping"].iloc[0]) if len(subgroups) else ""
    pretty = pretty_grouping(grouping) if grouping else ""
    metric = _metric_of(subgroups)
    if title and grouping:
        title = title.replace(f"by {grouping}", f"by {pretty}")
    title = title or f"Subgroups by {pretty or 'group'} ({metric or 'metric'})"
    if points.empty:
        fig = Figure(figsize=(5.0, 3.0), layout="constrained")
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no subgroup data", ha="center", va="center", color="0.35")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title)
        return fig
    handles: list[Artist] = [
        Patch(
            facecolor=mpl.colors.to_rgba(styles.loc[g, "color"], 0.22),
            edgecolor=styles.loc[g, "color"],
            label=styles.loc[g, "label"],
        )
        for g in groups
    ]
    handles.append(
        Line2D([], [], color="black", marker="D", mfc="white", ms=4, label="mean, 95 % CI")
    )
    legend_cols = min(len(handles), 6)
    legend_rows = math.ceil(len(handles) / legend_cols) + (1 if pretty else 0)
    caption = _subgroup_caption(subgroup_tests, models, alpha, ci_label, bool(len(per_case)))
    long = len(groups) > 3 and max(len(str(g)) for g in groups) > 3  # rotate the labels
    tick_h = 0.1 + 0.06 * max(len(str(g)) for g in groups) if long else 0.22
    nrows, ncols, width = _panel_grid(len(models), len(groups))
    size, grid, legend_top = _layout(nrows, ncols, width, tick_h, legend_rows, caption)
    fig = Figure(figsize=size)
    # one y range for every panel, set on each below (sharey=True costs a transform
    # invalidation across all panels per change: seconds over a report's figures)
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw=grid).ravel()
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    for ax in axes:  # both limits are set below: no autoscaling of the shared y per artist
        ax.set_autoscale_on(False)
    rasterize = len(per_case) > RASTERIZE_ABOVE
    boxes = subgroup_boxes(per_case)
    colour = styles["color"].to_dict()
    ys = [points["mean"], points["ci_high"], points["ci_low"], per_case["value"]]
    finite = np.concatenate([np.asarray(y, dtype=float) for y in ys])
    finite = finite[np.isfinite(finite)]
    low, high = float(finite.min()), float(finite.max())
    step = 0.075 * ((high - low) or max(abs(high), 1.0))
    most = 0
    for i, model in enumerate(models):
        ax = axes[i]
        mine = points[points["model"] == model]
        dots = per_case[per_case["model"] == model]
        if len(dots):
            _draw_boxes(ax, boxes[boxes["model"] == model], colour)
            ax.scatter(
                dots["x"],
                dots["value"],
                s=4,
                c=[colour[g] for g in dots["group"]],
                alpha=0.45,
                linewidths=0,
                zorder=3,
                gid="cases",
            ).set_rasterized(rasterize)
        xm = mine["x"] + MEAN_OFFSET
        err = np.vstack([mine["mean"] - mine["ci_low"], mine["ci_high"] - mine["mean"]])
        bars = ax.errorbar(
            xm,
            mine["mean"],
            yerr=np.where(np.isfinite(err), err, 0.0),
            fmt="D",
            ms=3.5,
            mfc="white",
            mec="black",
            mew=0.8,
            ecolor="black",
            elinewidth=1.0,
            capsize=0,
            zorder=5,
        )
        bars[0].set_gid("mean")
        tops = [
            mine["ci_high"].max(),
            mine["mean"].max(),
            dots["value"].max() if len(dots) else np.nan,
        ]
        top = float(np.nanmax(tops))
        slot = dict(zip(mine["group"], mine["x"], strict=True))
        pairs = [
            (m.group_a, m.group_b, m.stars)
            for m in marks[marks["model"] == model].itertuples(index=False)
            if m.group_a in slot and m.group_b in slot
        ]
        pairs.sort(key=lambda p: (abs(slot[p[1]] - slot[p[0]]), min(slot[p[0]], slot[p[1]])))
        for level, (a, b, stars) in enumerate(pairs[:MAX_BRACKETS], start=1):
            xa, xb = sorted((slot[a], slot[b]))
            y = top + level * step
            ax.plot([xa, xa, xb, xb], [y - step / 3, y, y, y - step / 3], color="black", lw=0.7)
            ax.text((xa + xb) / 2, y, stars, ha="center", va="bottom", fontsize=8, gid=SIGNIFICANT)
        most = max(most, min(len(pairs), MAX_BRACKETS))
        if len(pairs) > MAX_BRACKETS:
            ax.text(
                0.98,
                0.98,
                f"+{len(pairs) - MAX_BRACKETS} more pairs",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize="x-small",
                gid="more_pairs",
            )
        is_average = model == AVERAGE_MODEL
        ax.set_title(
            AVERAGE_LABEL if is_average else model,
            fontsize="small",
            fontweight="bold" if is_average else "normal",
        )
        ax.set_xticks(
            range(len(groups)), [str(g) for g in groups], rotation=90 if long else 0,
            fontsize="x-small",
        )  # fmt: skip
        ax.set_xlim(-0.6, len(groups) - 1 + MEAN_OFFSET + 0.4)
        ax.tick_params(axis="y", labelsize="x-small")
        ax.grid(axis="y", color="0.92")
        ax.set_axisbelow(True)
        if i % ncols == 0:
            ax.set_ylabel(_metric_label(metric), fontsize="small")
        else:  # as a shared y axis: tick labels only on the first panel of a row
            ax.tick_params(axis="y", labelleft=False)
    for ax in axes:
        ax.set_ylim(low - step, high + (most + 1.2) * step)
    fig.legend(
        handles=handles,
        title=pretty or None,
        loc="upper center",
        bbox_to_anchor=(0.5, legend_top),
        ncols=legend_cols,
        frameon=False,
        fontsize="x-small",
        title_fontsize="small",
    )
    fig.suptitle(title, fontsize="medium", y=1 - 0.08 / size[1], va="top")
    _caption(fig, caption)
    return fig
