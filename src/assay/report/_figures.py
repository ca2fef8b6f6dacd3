"""Report figures (DESIGN.md §5): one tidy slice in, one :class:`matplotlib.figure.Figure` out.

Every figure has a pure data-preparation companion that returns exactly what gets drawn
(:func:`heatmap_cells`, :func:`case_points`, :func:`blob_points`, :func:`robustness_ranks`,
:func:`speed_bars`; the subgroup figures are in :mod:`assay.report._subgroup_figures`), so
tests check data, not pixels. Figures are built on :class:`~matplotlib.figure.Figure`
directly (never pyplot: no global state, safe under any backend) with the colour-blind-safe
Okabe–Ito palette and the viridis colour map. Models are placed in the given ``order`` (rank
order); models of ``order`` absent from a frame are skipped. Markers that tests count carry
the gid ``"significant"``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, FuncNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import blended_transform_factory

from assay.errors import InputError
from assay.metrics import metric_info

__all__ = [
    "SCHEMES",
    "blob_points",
    "case_distribution",
    "case_points",
    "heatmap_cells",
    "rank_blobs",
    "ranking_robustness",
    "robustness_ranks",
    "save_figure",
    "save_figure_to",
    "significance_heatmap",
    "speed_bars",
    "speed_plot",
    "tau_summary",
    "tau_violin",
]

#: Okabe & Ito (2008) colour-blind-safe palette (black omitted: it is used for annotations).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
VERMILLION = "#D55E00"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", "p", ">", "h", "*")
GREY = "#d9d9d9"
SIGNIFICANT = "significant"  # gid of every significance marker
CAPTION = "caption"  # gid of the explanatory footnote of a figure
JITTER_SEED = 0
JITTER_WIDTH = 0.36  # total width of the horizontal jitter of case points, in model slots
RASTERIZE_ABOVE = 2_000  # rasterize the points layer above this many points
SVG_RASTER_DPI = 120  # resolution of rasterized layers in SVGs (screen: ~96 dpi); keeps them small
MAX_BLOB_AREA = 600.0  # marker area (pt²) of a blob with frequency 1
P_FLOOR = 1e-4  # lower end of the p-value colour scale
_LUMA = np.array((0.299, 0.587, 0.114))  # luminance weights of RGB
#: Ranking schemes (label, column of the ``rankings`` frame), DESIGN.md §4.
SCHEMES = (
    ("aggregate-then-rank", "rank_by_mean"),
    ("rank-then-aggregate", "rank_by_case_rank"),
    ("test-then-rank", "rank_by_tests"),
)
_SAVE_FORMATS = ("svg", "pdf", "png")
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {"Software": None}}


# ---------------------------------------------------------------------------- helpers


def _one_slice(frame: pd.DataFrame, keys: Sequence[str], what: str) -> None:
    """Raise :class:`InputError` when ``frame`` holds more than one slice over ``keys``."""
    present = [k for k in keys if k in frame.columns]
    if frame.empty or not present:
        return
    n = len(frame.loc[:, present].drop_duplicates())
    if n > 1:
        raise InputError(
            f"{what}: expected the rows of one ({', '.join(present)}) slice, got {n} slices. "
            "Filter the frame to one slice before plotting."
        )


def _models(order: Sequence[str], *present: pd.Series) -> list[str]:
    """Models of ``order`` (in that order, without repeats) that occur in any of ``present``."""
    seen: set[str] = set()
    for column in present:
        seen.update(column.dropna().astype(str))
    return [m for m in dict.fromkeys(order) if m in seen]


def _metric_of(frame: pd.DataFrame) -> str:
    """The single metric of a slice, or ``""`` when the frame has none."""
    if "metric" not in frame.columns or frame.empty:
        return ""
    return str(frame["metric"].iloc[0])


def _metric_label(metric: str) -> str:
    """Axis label of a metric with its orientation, e.g. ``"hd95 (lower is better)"``."""
    if not metric:
        return "value"
    direction = metric_info(metric).higher_is_better  # the registry, as the analysis reads it
    if direction is None:  # a measurement: the analysis' own error (SciPy loads only here)
        from assay.stats import higher_is_better_for

        direction = higher_is_better_for(metric)
    better = "higher" if direction else "lower"
    return f"{metric} ({better} is better)"


def _model_span(n: int) -> float:
    """Inches along an axis holding ``n`` models (0.45 in each, 4 in at least)."""
    return max(4.0, 1.6 + 0.45 * n)


def _model_xaxis(ax: Axes, models: Sequence[str]) -> None:
    """Models on the x axis at 0..n-1 with labels rotated so that long names stay readable."""
    ax.set_xticks(range(len(models)), list(models), rotation=45, ha="right")
    for label in ax.get_xticklabels():
        label.set_rotation_mode("anchor")
    ax.set_xlim(-0.6, len(models) - 0.4)


def _new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _caption(fig: Figure, text: str) -> None:
    """Explanatory footnote under the figure (wrapped to its width), gid ``"caption"``."""
    width = max(30, int(fig.get_figwidth() * 14))
    wrapped = "\n".join(textwrap.wrap(text, width=width, break_on_hyphens=False))
    fig.supxlabel(wrapped, fontsize="small", color="0.3").set_gid(CAPTION)


def _no_data(ax: Axes, note: str) -> None:
    ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------- heatmap


def _heatmap_models(pairwise: pd.DataFrame, order: Sequence[str]) -> list[str]:
    """Models of ``order`` in ``pairwise``; all of ``order`` when there is no pair at all."""
    if pairwise.empty:
        return list(dict.fromkeys(order))
    return _models(order, pairwise["model_a"], pairwise["model_b"])


def heatmap_cells(pairwise: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Cells of the significance heatmap of one (dataset, structure, metric).

    One row per ordered pair of distinct models of ``order`` found in ``pairwise``, in
    ``order`` × ``order`` reading order (row-major). ``row`` is ``model_a`` (tested as better),
    ``col`` is ``model_b``; ``p_holm`` is NaN and ``significant`` False for pairs without a
    test. A pair is significant only with a non-NaN ``p_holm``. A pairwise frame without rows
    (a single model has no pairs) keeps every model of ``order``: one model gives no cells.

    Returns
    -------
    DataFrame with columns row, col, p_holm (float), significant (bool).
    """
    _one_slice(pairwise, ("dataset", "structure", "metric"), "heatmap_cells")
    models = _heatmap_models(pairwise, order)
    grid = pd.DataFrame(
        [(a, b) for a in models for b in models if a != b], columns=["row", "col"], dtype=object
    )
    tests = pairwise.loc[:, ["model_a", "model_b", "p_holm", "significant"]].astype(
        {"model_a": object, "model_b": object}
    )
    tests = tests.rename(columns={"model_a": "row", "model_b": "col"})
    cells = grid.merge(tests, on=["row", "col"], how="left", validate="one_to_one")
    cells["p_holm"] = cells["p_holm"].astype(float)
    cells["significant"] = cells["significant"].eq(True) & cells["p_holm"].notna()
    return cells.reset_index(drop=True)


def _p_norm(alpha: float) -> FuncNorm:
    """Colour scale of p: log-spaced, ``P_FLOOR``..alpha on [0, 0.5), alpha..1 on [0.5, 1].

    ``f(p) = 0.5 · log(p / floor) / log(alpha / floor)`` below alpha and
    ``0.5 + 0.5 · log(p / alpha) / log(1 / alpha)`` from alpha on, so that alpha falls exactly
    on the boundary between the two halves of :func:`_p_cmap` (p is clipped to [floor, 1]).
    """
    floor = min(P_FLOOR, alpha / 10)

    def forward(p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=float), floor, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            low = 0.5 * np.log(p / floor) / np.log(alpha / floor)
            high = 0.5 + 0.5 * np.log(p / alpha) / np.log(1.0 / alpha)
        scaled: np.ndarray = np.where(p < alpha, low, high)
        return scaled

    def inverse(f: np.ndarray) -> np.ndarray:
        f = np.clip(np.asarray(f, dtype=float), 0.0, 1.0)
        low = floor * (alpha / floor) ** (2 * f)
        high = alpha * (1.0 / alpha) ** (2 * f - 1)
        return np.where(f < 0.5, low, high)

    return FuncNorm((forward, inverse), vmin=floor, vmax=1.0, clip=True)


def _p_cmap() -> Colormap:
    """Two-part map: saturated blues below alpha (darkest = smallest p), pale greys above."""
    blues = mpl.colormaps["Blues"](np.linspace(1.0, 0.45, 256))
    greys = mpl.colormaps["Greys"](np.linspace(0.22, 0.04, 256))
    return ListedColormap(np.vstack([blues, greys]), name="p_split").with_extremes(bad="white")


def significance_heatmap(
    pairwise: pd.DataFrame, order: Sequence[str], *, title: str = "", alpha: float = 0.05
) -> Figure:
    """Heatmap of Holm-adjusted one-sided p-values, "row model better than column model".

    Models of ``order`` on both axes (rows: the model tested as better, columns: the model it
    is compared with). Cell colour = ``p_holm`` on the two-part scale of :func:`_p_norm`:
    blues for p < ``alpha`` (the smaller, the darker; floored at 1e-4), pale greys for
    p ≥ ``alpha``; alpha is marked on the colour bar. Untested pairs are hatched, the diagonal
    is white; a filled disc sits in every cell where :func:`heatmap_cells` says
    ``significant`` (all discs in one scatter layer of gid ``"significant"``, white on dark
    cells, black on light ones). A caption under the figure states the test.

    Raises
    ------
    InputError
        If ``alpha`` is not in (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise InputError(f"significance_heatmap: alpha is {alpha}; expected 0 < alpha < 1.")
    cells = heatmap_cells(pairwise, order)
    models = _heatmap_models(pairwise, order)
    n = len(models)
    index = {m: i for i, m in enumerate(models)}
    p = np.full((n, n), np.nan)
    for c in cells.itertuples(index=False):
        p[index[c.row], index[c.col]] = c.p_holm
    fig, ax = _new_figure(_model_span(n) + 1.6, _model_span(n) + 0.5)
    metric = _metric_of(pairwise)
    test = (
        str(pairwise["test"].iloc[0])
        if "test" in pairwise.columns and len(pairwise)
        else "one-sided Wilcoxon signed-rank"
    )
    ax.set_title(title or f"Holm-adjusted p, one-sided paired test ({metric or 'metric'})")
    if n == 0:
        _no_data(ax, "no models")
        return fig
    cmap, norm = _p_cmap(), _p_norm(alpha)
    # interpolation "none": SVG and PDF embed the n × n cells as they are (scaled by the
    # viewer, pixelated), instead of an image resampled to the output resolution
    image = ax.imshow(np.ma.masked_invalid(p), cmap=cmap, norm=norm, interpolation="none")
    diagonal = np.ma.masked_where(~np.eye(n, dtype=bool), np.ones((n, n)))
    ax.imshow(diagonal, cmap=ListedColormap(["white"]), interpolation="none")
    untested = cells[cells["p_holm"].isna()]
    for c in untested.itertuples(index=False):
        ax.add_patch(
            Rectangle(
                (index[c.col] - 0.5, index[c.row] - 0.5),
                1,
                1,
                fill=False,
                hatch="////",
                edgecolor="0.6",
                linewidth=0,
                gid="untested",
            )
        )
    marked = cells[cells["significant"]]
    if len(marked):  # one scatter layer for every mark: one artist, not one Text per cell
        xs = marked["col"].map(index).to_numpy(dtype=float)
        ys = marked["row"].map(index).to_numpy(dtype=float)
        luminance = cmap(norm(marked["p_holm"].to_numpy(dtype=float)))[:, :3] @ _LUMA
        size = (6.0 if n <= 12 else 4.6) ** 2  # pt²: the disc of a 9 pt (7 pt) "●"
        ax.scatter(
            xs,
            ys,
            s=size,
            marker="o",
            c=np.where(luminance[:, None] < 0.5, 1.0, 0.0).repeat(3, axis=1),
            linewidths=0,
            gid=SIGNIFICANT,
        )
    _model_xaxis(ax, models)
    ax.set_yticks(range(n), models)
    ax.set_ylim(n - 0.5, -0.5)
    # white lines between the cells: two line collections, not 2(n + 1) minor ticks
    edges = np.arange(n + 1) - 0.5
    ax.hlines(edges, -0.5, n - 0.5, colors="white", linewidth=1.0, gid="cell_edges")
    ax.vlines(edges, -0.5, n - 0.5, colors="white", linewidth=1.0, gid="cell_edges")
    ax.spines[:].set_visible(False)
    ax.set_xlabel("column model (compared with)")
    ax.set_ylabel("row model (tested as better)")
    bar = fig.colorbar(image, ax=ax, extend="min", shrink=0.8)
    bar.set_label("Holm-adjusted p")
    floor = float(norm.vmin if norm.vmin is not None else 0.0)
    ticks = sorted({floor, *(t for t in (1e-3, 1e-2) if floor < t < alpha), alpha, 0.5, 1.0})
    labels = [f"α = {t:g}" if t == alpha else f"{t:g}" for t in ticks]  # no mathtext 10^-k
    bar.set_ticks(ticks, labels=labels)
    bar.ax.minorticks_off()
    bar.ax.axhline(alpha, color="black", linewidth=1.5)
    note = (
        f"Cell: one-sided {test.removeprefix('one-sided ')} “row model better than column "
        f"model”, Holm-adjusted p (● p < {alpha:g})."
    )
    if len(untested):
        note += " Hatched: not tested."
    _caption(fig, note)
    return fig


# ---------------------------------------------------------------------------- cases


def case_points(values: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Per-case points of one (dataset, structure, metric), with a deterministic jitter.

    One row per finite per-case value of a model of ``order`` (NaN values cannot be drawn and
    are left out; the policy of :func:`assay.stats.analyze` leaves none), sorted by model
    position then case id. ``x = position + u`` with ``u ~ U(-0.18, 0.18)`` drawn from
    ``numpy.random.default_rng(0)`` over the sorted rows, so the same input gives the same
    picture. ``imputed`` is True where the missing-value policy set the value.

    Returns
    -------
    DataFrame with columns model, case_id, value, x, imputed.
    """
    _one_slice(values, ("dataset", "structure", "metric"), "case_points")
    models = _models(order, values["model"])
    position = {m: i for i, m in enumerate(models)}
    imputed = values["imputed"].eq(True) if "imputed" in values.columns else False
    points = pd.DataFrame(
        {
            "model": values["model"].astype(object),
            "case_id": values["case_id"].astype(object),
            "value": values["value"].astype(float),
            "imputed": imputed,
        }
    )
    points = points[points["model"].isin(position) & np.isfinite(points["value"])]
    points = points.assign(_pos=points["model"].map(position)).sort_values(
        ["_pos", "case_id"], kind="stable"
    )
    rng = np.random.default_rng(JITTER_SEED)
    half = JITTER_WIDTH / 2
    points["x"] = points["_pos"].astype(float) + rng.uniform(-half, half, size=len(points))
    points["imputed"] = points["imputed"].astype(bool)
    return points.loc[:, ["model", "case_id", "value", "x", "imputed"]].reset_index(drop=True)


def case_distribution(
    values: pd.DataFrame, order: Sequence[str], *, metric: str, title: str = ""
) -> Figure:
    """Box plot per model with every per-case value of :func:`case_points` on top.

    Boxes show median and quartiles, whiskers 1.5 IQR, no fliers (every point is drawn). A
    white diamond (gid ``"mean"``) marks each model's mean over its points, the quantity the
    rankings use. Values set by the missing-value policy are drawn as vermillion crosses
    (gid ``"imputed"``) above the regular points (gid ``"cases"``), with their count per model
    ("×k", gid ``"imputed_count"``) over the plot. The point layers are rasterized above
    :data:`RASTERIZE_ABOVE` points to keep SVGs small. The legend sits right of the axes.
    """
    points = case_points(values, order)
    models = list(dict.fromkeys(points["model"]))
    fig, ax = _new_figure(_model_span(len(models)) + 0.6, 4.6)
    if points.empty:
        _no_data(ax, "no per-case values")
    else:
        groups = [points.loc[points["model"] == m, "value"].to_numpy() for m in models]
        ax.boxplot(
            groups,
            positions=range(len(models)),
            widths=0.6,
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": "#56B4E966", "edgecolor": "#0072B2"},
            medianprops={"color": "black", "linewidth": 1.5},
            whiskerprops={"color": "#0072B2"},
            capprops={"color": "#0072B2"},
        )
        rasterize = len(points) > RASTERIZE_ABOVE
        regular = points[~points["imputed"]]
        imputed = points[points["imputed"]]
        n_imputed = imputed.groupby("model", sort=False).size()
        if len(regular):
            ax.scatter(
                regular["x"],
                regular["value"],
                s=7,
                color="0.25",
                alpha=0.45,
                linewidths=0,
                zorder=3,
                label="case",
                gid="cases",
            ).set_rasterized(rasterize)
        if len(imputed):
            ax.scatter(
                imputed["x"],
                imputed["value"],
                s=16,
                marker="x",
                color=VERMILLION,
                linewidths=1.0,
                zorder=4,
                label=(
                    "average with a value set by policy"
                    if "structure" in values.columns and (values["structure"] == "average").all()
                    else "set by policy"
                )
                + f" (n = {len(imputed):,}; ×k per model on top)",
                gid="imputed",
            ).set_rasterized(rasterize)
            top = blended_transform_factory(ax.transData, ax.transAxes)
            for i, model in enumerate(models):
                if n_imputed.get(model, 0):
                    ax.text(
                        i,
                        1.01,
                        f"×{n_imputed[model]:,}",
                        transform=top,
                        ha="center",
                        va="bottom",
                        fontsize="x-small",
                        color=VERMILLION,
                        clip_on=False,
                        gid="imputed_count",
                    )
        means = points.groupby("model", sort=False)["value"].mean()
        ax.scatter(
            [models.index(m) for m in means.index],
            means.to_numpy(),
            s=36,
            marker="D",
            facecolor="white",
            edgecolor="black",
            linewidths=1.0,
            zorder=5,
            label="mean",
            gid="mean",
        )
        fig.legend(loc="outside lower center", ncols=3, fontsize="small", frameon=False)
        _model_xaxis(ax, models)
    ax.set_ylabel(_metric_label(metric))
    pad = 14.0 if points["imputed"].any() else 6.0  # room for the "×k" counts on top
    ax.set_title(title or f"Per-case {metric or 'values'} ({len(points):,} values)", pad=pad)
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    return fig


# ---------------------------------------------------------------------------- rank blobs


def blob_points(
    rank_counts: pd.DataFrame, stability: pd.DataFrame, order: Sequence[str]
) -> pd.DataFrame:
    """Blobs of the bootstrap rank distribution of one (dataset, structure, metric).

    One row per (model of ``order`` in ``rank_counts``, rank drawn); ``x`` is the model's
    position, ``size`` the marker area ``frequency × 600 pt²`` (area ∝ frequency; a model's
    frequencies sum to 1). Ranks are oriented by the analysis, 1 = best, for every metric.
    ``stability`` is only checked to be one slice (its intervals are drawn from its rows).

    Returns
    -------
    DataFrame with columns model, x, rank, frequency, size.
    """
    _one_slice(rank_counts, ("dataset", "structure", "metric"), "blob_points")
    _one_slice(stability, ("dataset", "structure", "metric"), "blob_points")
    models = _models(order, rank_counts["model"])
    position = {m: i for i, m in enumerate(models)}
    blobs = rank_counts.loc[rank_counts["model"].isin(position), ["model", "rank", "frequency"]]
    blobs = blobs.astype({"model": object, "rank": float, "frequency": float})
    blobs.insert(1, "x", blobs["model"].map(position).astype(int))
    blobs["size"] = blobs["frequency"] * MAX_BLOB_AREA
    blobs = blobs.sort_values(["x", "rank"], kind="stable")
    return blobs.loc[:, ["model", "x", "rank", "frequency", "size"]].reset_index(drop=True)


def rank_blobs(
    rank_counts: pd.DataFrame,
    stability: pd.DataFrame,
    order: Sequence[str],
    *,
    title: str = "",
) -> Figure:
    """Blob plot of rank stability: x = model, y = bootstrap rank (1 at the top).

    Blob area ∝ the frequency of the rank (:func:`blob_points`); the black line spans the
    95 % bootstrap rank interval (``rank_ci_low`` to ``rank_ci_high``) and the black dash marks
    the median rank (``median_rank``), both from ``stability``.
    """
    blobs = blob_points(rank_counts, stability, order)
    models = list(dict.fromkeys(blobs["model"]))
    fig, ax = _new_figure(_model_span(len(models)) + 1.2, max(3.5, 1.6 + 0.35 * len(models)))
    if blobs.empty:
        _no_data(ax, "no bootstrap ranks")
    else:
        ax.scatter(blobs["x"], blobs["rank"], s=blobs["size"], color=OKABE_ITO[0], alpha=0.6)
        stats = stability[stability["model"].isin(models)]
        x = stats["model"].map({m: i for i, m in enumerate(models)})
        ax.vlines(x, stats["rank_ci_low"], stats["rank_ci_high"], color="black", linewidth=1.2)
        ax.scatter(x, stats["median_rank"], marker="_", s=220, color="black", linewidths=2)
        n_ranks = int(max(blobs["rank"].max(), len(models)))
        ax.set_yticks(range(1, n_ranks + 1))
        ax.set_ylim(n_ranks + 0.6, 0.4)
        _model_xaxis(ax, models)
        handles = [
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                color=OKABE_ITO[0],
                alpha=0.6,
                label=f"{f:g}",
                markersize=np.sqrt(f * MAX_BLOB_AREA),
            )
            for f in (0.1, 0.5, 1.0)
        ]
        handles.append(Line2D([], [], color="black", marker="_", label="median, 95 % interval"))
        ax.legend(
            handles=handles,
            title="frequency",
            loc="upper left",
            bbox_to_anchor=(1, 1),
            frameon=False,
            fontsize="small",
            labelspacing=1.2,
        )
    ax.set_ylabel("bootstrap rank (1 = best)")
    metric = _metric_of(rank_counts)
    ax.set_title(title or f"Rank stability ({metric or 'metric'})")
    ax.grid(axis="y", color="0.92")
    ax.set_axisbelow(True)
    return fig


# ---------------------------------------------------------------------------- tau


def _tau_structures(tau_samples: pd.DataFrame) -> list[str]:
    structures = list(dict.fromkeys(tau_samples["structure"].astype(object)))
    structures.sort(key=lambda s: s != "average")  # stable: keeps the order of the others
    return structures


def tau_summary(tau_samples: pd.DataFrame) -> pd.DataFrame:
    """Per-structure summary of the bootstrap τ drawn by :func:`tau_violin`.

    One row per structure, ``"average"`` first then the others in order of appearance.
    ``n`` counts the defined (finite) τ, ``n_undefined`` the NaN ones (all models tied);
    ``median``, ``q025`` and ``q975`` are ``numpy.quantile`` (linear) at 0.5, 0.025 and 0.975
    of the defined τ, NaN when there are none.

    Returns
    -------
    DataFrame with columns structure, n, n_undefined, median, q025, q975.
    """
    _one_slice(tau_samples, ("dataset", "metric"), "tau_summary")
    rows = []
    for structure in _tau_structures(tau_samples):
        tau = tau_samples.loc[tau_samples["structure"] == structure, "tau"].to_numpy(float)
        finite = tau[np.isfinite(tau)]
        q = np.quantile(finite, (0.5, 0.025, 0.975)) if len(finite) else np.full(3, np.nan)
        rows.append((structure, len(finite), len(tau) - len(finite), *map(float, q)))
    columns = ["structure", "n", "n_undefined", "median", "q025", "q975"]
    return pd.DataFrame(rows, columns=columns).astype({"structure": object})


def tau_violin(tau_samples: pd.DataFrame, *, title: str = "") -> Figure:
    """Violins of Kendall's τ-b between the full-data and each bootstrap ranking.

    One violin per structure, ``"average"`` first then the others in order of appearance;
    NaN τ (undefined: all models tied) are left out and counted in the tick label. A black
    bar spans the 2.5–97.5 % quantiles and a white dot marks the median (:func:`tau_summary`).
    A structure whose τ are all equal is drawn as a short line (a kernel density needs
    spread); one with no defined τ is labelled but not drawn. The y axis runs from
    ``max(min τ − 0.05, −1)`` (−1 when no τ is defined) to 1.
    """
    summary = tau_summary(tau_samples)
    structures = summary["structure"].tolist()
    fig, ax = _new_figure(max(5.0, 1.6 + 0.55 * len(structures)), 4.3)
    labels = []
    for i, row in enumerate(summary.itertuples(index=False)):
        tau = tau_samples.loc[tau_samples["structure"] == row.structure, "tau"].to_numpy(float)
        finite = tau[np.isfinite(tau)]
        n_nan = row.n_undefined
        labels.append(f"{row.structure}\n({n_nan} undefined)" if n_nan else row.structure)
        if len(finite) and np.ptp(finite) > 0:
            parts = ax.violinplot(finite, positions=[i], widths=0.8, showextrema=False)
            for body in list(parts["bodies"]):  # type: ignore[call-overload]
                body.set(facecolor=OKABE_ITO[0], edgecolor=OKABE_ITO[0], alpha=0.45)
        elif len(finite):
            ax.hlines(finite[0], i - 0.3, i + 0.3, color=OKABE_ITO[0], linewidth=2.5)
    if structures:
        x = np.arange(len(structures))
        ax.vlines(x, summary["q025"], summary["q975"], color="black", linewidth=1.5, zorder=3)
        ax.scatter(
            x,
            summary["median"],
            s=22,
            color="white",
            edgecolor="black",
            linewidths=1.0,
            zorder=4,
            gid="median",
        )
        _model_xaxis(ax, labels)
    else:
        _no_data(ax, "no bootstrap τ")
    finite_all = tau_samples["tau"].to_numpy(float)
    finite_all = finite_all[np.isfinite(finite_all)]
    low = max(float(finite_all.min()) - 0.05, -1.0) if len(finite_all) else -1.0
    ax.set_ylim(low, 1.0 + 0.02 * (1.0 - low))
    ax.set_ylabel("Kendall's τ-b to the full-data ranking")
    metric = _metric_of(tau_samples)
    ax.set_title(title or f"Kendall's τ under the bootstrap ({metric or 'metric'})")
    ax.grid(axis="y", color="0.92")
    ax.set_axisbelow(True)
    n_resamples = int(summary["n"].add(summary["n_undefined"]).max()) if structures else 0
    _caption(
        fig,
        f"Violin: τ-b over {n_resamples:,} bootstrap resamples per structure; "
        "white dot: median; black bar: 2.5–97.5 % quantiles.",
    )
    return fig


# ---------------------------------------------------------------------------- robustness


def robustness_ranks(rankings: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Each model's rank under the three ranking schemes of one (dataset, structure, metric).

    Long form of the ``rankings`` columns named in :data:`SCHEMES` (aggregate-then-rank =
    ``rank_by_mean``, rank-then-aggregate = ``rank_by_case_rank``, test-then-rank =
    ``rank_by_tests``), models in ``order`` then schemes in that order. A NaN rank (model not
    ranked, e.g. contaminated) is kept as NaN and not drawn.

    Returns
    -------
    DataFrame with columns model, scheme, rank.
    """
    _one_slice(rankings, ("dataset", "structure", "metric"), "robustness_ranks")
    models = _models(order, rankings["model"])
    by_model = rankings.astype({"model": object}).drop_duplicates("model").set_index("model")
    rows = [
        (m, scheme, float(by_model.at[m, column])) for m in models for scheme, column in SCHEMES
    ]
    return pd.DataFrame(rows, columns=["model", "scheme", "rank"]).astype({"model": object})


def ranking_robustness(rankings: pd.DataFrame, order: Sequence[str], *, title: str = "") -> Figure:
    """Dot plot of each model's rank under each ranking scheme, joined by a line per model.

    Horizontal layout (one row per model, in ``order``; x = rank, 1 at the left) so that
    long model names and many models stay readable and tied ranks do not hide each other:
    the schemes differ in colour, marker and a small vertical offset.
    """
    ranks = robustness_ranks(rankings, order)
    models = list(dict.fromkeys(ranks["model"]))
    y = {m: i for i, m in enumerate(models)}
    fig, ax = _new_figure(6.5, max(2.8, 1.4 + 0.32 * len(models)))
    if ranks.empty:
        _no_data(ax, "no rankings")
    else:
        spread = ranks.groupby("model", sort=False)["rank"].agg(["min", "max"])
        ax.hlines(spread.index.map(y), spread["min"], spread["max"], color="0.6", linewidth=1)
        for k, (scheme, _) in enumerate(SCHEMES):
            part = ranks[ranks["scheme"] == scheme]
            ax.scatter(
                part["rank"],
                part["model"].map(y) + (k - 1) * 0.18,
                label=scheme,
                color=OKABE_ITO[k],
                marker=MARKERS[k],
                s=36,
                zorder=3,
            )
        n_ranks = int(np.nanmax([ranks["rank"].max(), len(models)]))
        ax.set_xticks(range(1, n_ranks + 1))
        ax.set_xlim(0.5, n_ranks + 0.5)
        ax.set_yticks(range(len(models)), models)
        ax.set_ylim(len(models) - 0.5, -0.5)
        fig.legend(loc="outside lower center", ncols=3, frameon=False, fontsize="small")
    ax.set_xlabel("rank (1 = best)")
    metric = _metric_of(rankings)
    ax.set_title(title or f"Ranking robustness across schemes ({metric or 'metric'})")
    ax.grid(axis="x", color="0.92")
    ax.set_axisbelow(True)
    return fig


# ---------------------------------------------------------------------------- speed


def speed_bars(speed: pd.DataFrame) -> pd.DataFrame:
    """Inference speed bars of one dataset, fastest first.

    Rows with a finite ``cm3_per_s`` sorted by it, descending (ties by model name); a speed
    that is not finite (unknown) cannot be drawn and is left out.

    Returns
    -------
    DataFrame with columns model, cm3_per_s.
    """
    _one_slice(speed, ("dataset",), "speed_bars")
    bars = speed.loc[:, ["model", "cm3_per_s"]].astype({"model": object, "cm3_per_s": float})
    bars = bars[np.isfinite(bars["cm3_per_s"])]
    bars = bars.sort_values(["cm3_per_s", "model"], ascending=[False, True], kind="stable")
    return bars.reset_index(drop=True)


def speed_plot(speed: pd.DataFrame, *, title: str = "", min_speed: float | None = None) -> Figure:
    """Horizontal bars of inference speed (cm³ of image volume per second), fastest on top.

    ``min_speed`` (cm³/s), when given, is drawn as a dashed vertical line.
    """
    bars = speed_bars(speed)
    fig, ax = _new_figure(6.0, max(2.5, 1.2 + 0.3 * len(bars)))
    if bars.empty:
        _no_data(ax, "no speed measurements")
    else:
        y = np.arange(len(bars))
        ax.barh(y, bars["cm3_per_s"], color=OKABE_ITO[0], height=0.65)
        for yi, v in zip(y, bars["cm3_per_s"], strict=True):
            ax.text(v, float(yi), f" {v:,.0f}", va="center", ha="left", fontsize="small")
        ax.set_yticks(y, bars["model"])
        ax.set_ylim(len(bars) - 0.5, -0.5)
        ax.margins(x=0.15)
    if min_speed is not None:
        ax.axvline(
            min_speed,
            color="#D55E00",
            linestyle="--",
            linewidth=1.2,
            label=f"minimum {min_speed:,g} cm³/s",
        )
        ax.legend(loc="lower right", frameon=False, fontsize="small")
    ax.set_xlabel("speed (cm³/s, higher is faster)")
    ax.set_title(title or "Inference speed")
    ax.grid(axis="x", color="0.92")
    ax.set_axisbelow(True)
    return fig


# ---------------------------------------------------------------------------- saving


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = _SAVE_FORMATS) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format (svg, pdf, png at 200 dpi).

    Rasterized layers (many case points) are embedded at 200 dpi in PDFs and at
    :data:`SVG_RASTER_DPI` in SVGs, which are meant for screens and should stay small.

    Output is reproducible: no dates or software stamps in the metadata, a fixed
    ``svg.hashsalt`` (so SVG ids are the same on every call) and ``svg.fonttype = "none"``
    (text stays text). The figure's layout is computed once at its own dpi and then frozen
    (its layout engine is removed), so all formats share one layout and saving the
    same figure again writes the same SVG bytes. The suffix is appended to the stem's name,
    so dots in the stem (e.g. ``nsd@2.0mm``) are kept. Parent folders are created; the figure
    is not closed.

    Returns
    -------
    The paths written, in ``formats`` order.
    """
    return save_figure_to(fig, {fmt: Path(stem) for fmt in formats})


def save_figure_to(fig: Figure, stems: Mapping[str, Path]) -> list[Path]:
    """:func:`save_figure` with a stem per format (``{"svg": svg/x, "pdf": figures/x}``),
    all from one layout of ``fig``.

    Raises
    ------
    InputError
        A format other than svg, pdf or png.
    """
    unknown = [f for f in stems if f not in _SAVE_FORMATS]
    if unknown:
        where = ", ".join(str(stems[f]) for f in unknown)
        raise InputError(
            f"save_figure: unknown format(s) {unknown} for {where}; "
            f"expected some of {list(_SAVE_FORMATS)}."
        )
    paths = []
    with mpl.rc_context({"svg.hashsalt": "assay", "svg.fonttype": "none"}):
        _freeze_layout(fig)
        for fmt, stem in stems.items():
            stem = Path(stem)
            stem.parent.mkdir(parents=True, exist_ok=True)
            path = stem.parent / f"{stem.name}.{fmt}"
            dpi = SVG_RASTER_DPI if fmt == "svg" else 200  # SVG: dpi of rasterized layers only
            fig.savefig(path, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
            paths.append(path)
    return paths


def _freeze_layout(fig: Figure) -> None:
    """Compute a constrained layout and freeze it (no layout engine left); a figure with
    a fixed layout (no engine, or already frozen) is left as it is."""
    engine = fig.get_layout_engine()
    if engine is None or type(engine).__name__ == "PlaceHolderLayoutEngine":
        return
    # A constrained layout starts from the current positions and is not an exact fixed
    # point (float noise, and a PNG at 200 dpi would move it): lay out, then freeze. One
    # pass reaches the fixed point of a single-axes figure (the same bytes as two); a figure
    # with a colour bar (several axes) moves on a second pass, so it gets two.
    for _ in range(2 if len(fig.axes) > 1 else 1):
        engine.execute(fig)  # the layout alone: the draw around it changes nothing here
    fig.set_layout_engine(None)  # frozen: no engine, so savefig lays out nothing
