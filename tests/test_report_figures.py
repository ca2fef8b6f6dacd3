"""Report figures: the drawn data, not pixels (src/assay/report/_figures.py).

Expected numbers come from hand-made frames (stated inline) or from the fixture
``tests/report_inputs.py`` (four models alpha > beta > gamma > delta, 24 cases, B = 200).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from report_inputs import N_CASES, make_report_data

from assay.errors import InputError
from assay.report._data import ReportData
from assay.report._figures import (
    MAX_BLOB_AREA,
    RASTERIZE_ABOVE,
    SCHEMES,
    blob_points,
    case_distribution,
    case_points,
    heatmap_cells,
    rank_blobs,
    ranking_robustness,
    robustness_ranks,
    save_figure,
    significance_heatmap,
    speed_bars,
    speed_plot,
    subgroup_marks,
    subgroup_plot,
    subgroup_points,
    subgroup_styles,
    tau_summary,
    tau_violin,
)

ORDER = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(scope="module")
def data() -> ReportData:
    return make_report_data()


def _slice(frame: pd.DataFrame, structure: str = "average") -> pd.DataFrame:
    return frame[frame["structure"] == structure]


def _significant_texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_gid() == "significant"]


def _layers(fig: Figure, *gids: str) -> list[PathCollection]:
    """Scatter layers of ``fig`` (those with one of ``gids`` when given)."""
    return [
        c
        for ax in fig.axes
        for c in ax.collections
        if isinstance(c, PathCollection) and (not gids or c.get_gid() in gids)
    ]


def _scatter_offsets(fig: Figure) -> np.ndarray:
    """Offsets of the per-case point layers (regular and policy-set, not the means)."""
    return np.concatenate([c.get_offsets() for c in _layers(fig, "cases", "imputed")])


def _caption(fig: Figure) -> str:
    """The figure's caption with its line wrapping undone."""
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_gid() == "caption"]
    return " ".join(" ".join(texts).split())


def _pairwise(significant: dict[tuple[str, str], float], models: list[str]) -> pd.DataFrame:
    """Every ordered pair of ``models``; p_holm 0.01 for the keys of ``significant``, else 0.6."""
    rows = [
        (a, b, significant.get((a, b), 0.6), (a, b) in significant)
        for a in models
        for b in models
        if a != b
    ]
    frame = pd.DataFrame(rows, columns=["model_a", "model_b", "p_holm", "significant"])
    return frame.assign(dataset="toy", structure="liver", metric="dsc")


# ---------------------------------------------------------------------------- heatmap


def test_heatmap_marks_exactly_the_significant_cells() -> None:
    # Hand-made: of the 6 ordered pairs of A, B, C only A>B and A>C are significant.
    pairwise = _pairwise({("A", "B"): 0.01, ("A", "C"): 0.01}, ["A", "B", "C"])
    cells = heatmap_cells(pairwise, ["A", "B", "C"])
    assert len(cells) == 6  # 3 × 3 grid minus the diagonal
    marked = cells.loc[cells["significant"], ["row", "col"]]
    assert sorted(map(tuple, marked.to_numpy())) == [("A", "B"), ("A", "C")]
    texts = _significant_texts(significance_heatmap(pairwise, ["A", "B", "C"]))
    # imshow coordinates: x = column index (B = 1, C = 2), y = row index (A = 0).
    assert sorted(t.get_position() for t in texts) == [(1, 0), (2, 0)]


def test_heatmap_follows_order_and_skips_absent_models() -> None:
    pairwise = _pairwise({("A", "B"): 0.01}, ["A", "B", "C"])
    fig = significance_heatmap(pairwise, ["C", "Z", "B", "A"])  # Z has no test: skipped
    cells = heatmap_cells(pairwise, ["C", "Z", "B", "A"])
    assert set(cells["row"]) | set(cells["col"]) == {"A", "B", "C"}
    # Order C, B, A: row A is index 2, column B is index 1.
    assert [t.get_position() for t in _significant_texts(fig)] == [(1, 2)]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["C", "B", "A"]


def test_heatmap_nan_p_is_untested_and_never_significant() -> None:
    pairwise = _pairwise({("A", "B"): 0.01, ("B", "A"): 0.01}, ["A", "B"])
    pairwise.loc[pairwise["model_a"] == "B", "p_holm"] = np.nan  # B>A untested, flag ignored
    cells = heatmap_cells(pairwise, ["A", "B"]).set_index(["row", "col"])
    assert cells.loc[("A", "B"), "significant"]
    assert not cells.loc[("B", "A"), "significant"]
    assert np.isnan(cells.loc[("B", "A"), "p_holm"])
    image = significance_heatmap(pairwise, ["A", "B"]).axes[0].images[0]
    assert image.get_array().mask[1, 0]  # masked: drawn in the grey "bad" colour
    assert len(_significant_texts(significance_heatmap(pairwise, ["A", "B"]))) == 1


def test_heatmap_single_model_has_one_cell_and_no_marks() -> None:
    empty = _pairwise({}, ["A"])  # one model: no pairs at all
    assert heatmap_cells(empty, ["A"]).empty
    fig = significance_heatmap(empty, ["A"])
    assert fig.axes[0].images[0].get_array().shape == (1, 1)
    assert _significant_texts(fig) == []


def test_heatmap_colours_split_at_alpha_and_labels_say_the_direction() -> None:
    # Hand-made: A>B p = 0.01 (< alpha), A>C p = 0.6, B>C untested (NaN).
    pairwise = _pairwise({("A", "B"): 0.01}, ["A", "B", "C"])
    pairwise.loc[(pairwise["model_a"] == "B") & (pairwise["model_b"] == "C"), "p_holm"] = np.nan
    fig = significance_heatmap(pairwise, ["A", "B", "C"], alpha=0.05)
    ax = fig.axes[0]
    image = ax.images[0]
    norm, cmap = image.norm, image.cmap
    # alpha sits exactly on the boundary of the two halves of the colour scale.
    assert norm(0.05) == pytest.approx(0.5)
    assert norm(0.049) < 0.5 <= norm(0.051)
    # Small p: saturated (dark) blue; p >= alpha: pale, nearly grey (r ≈ g ≈ b, bright).
    small, large = np.array(cmap(norm(1e-4))[:3]), np.array(cmap(norm(1.0))[:3])
    assert small[2] > small[0] + 0.2 and small.mean() < 0.3
    assert np.ptp(large) < 0.02 and large.mean() > 0.9
    assert np.ptp(cmap(norm(0.06))[:3]) < 0.02  # just above alpha: already grey
    assert "row model" in ax.get_ylabel() and "column model" in ax.get_xlabel()
    bar_labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert "α = 0.05" in bar_labels
    caption = _caption(fig)
    assert "Wilcoxon" in caption and "Holm-adjusted p" in caption and "p < 0.05" in caption
    assert "not tested" in caption.lower()
    untested = [p for p in ax.patches if p.get_gid() == "untested"]
    assert [(p.get_x(), p.get_y()) for p in untested] == [(1.5, 0.5)]  # row B, column C
    # Every pair tested: no word about untested cells; another alpha moves the split.
    complete = _pairwise({("A", "B"): 0.01}, ["A", "B", "C"])
    fig = significance_heatmap(complete, ["A", "B", "C"], alpha=0.01)
    assert "not tested" not in _caption(fig).lower()
    assert fig.axes[0].images[0].norm(0.01) == pytest.approx(0.5)
    with pytest.raises(InputError, match="alpha"):
        significance_heatmap(complete, ["A", "B", "C"], alpha=1.5)


def test_heatmap_on_fixture_matches_pairwise_flags(data: ReportData) -> None:
    pairwise = _slice(data.analyses["dsc"].pairwise)
    cells = heatmap_cells(pairwise, ORDER)
    assert len(cells) == 12  # 4 models: 4 × 3 ordered pairs
    expected = int(pairwise["significant"].sum())  # the analysis' own Holm decisions
    assert int(cells["significant"].sum()) == expected
    assert len(_significant_texts(significance_heatmap(pairwise, ORDER))) == expected


def test_frames_of_several_slices_are_refused(data: ReportData) -> None:
    with pytest.raises(InputError, match="one"):
        heatmap_cells(data.analyses["dsc"].pairwise, ORDER)  # four structures at once


# ---------------------------------------------------------------------------- cases


def test_case_points_one_per_value_deterministic_jitter(data: ReportData) -> None:
    values = _slice(data.analyses["dsc"].values, "liver")
    points = case_points(values, ORDER)
    assert len(points) == len(ORDER) * N_CASES  # 4 models × 24 cases, worst policy: no NaN
    pd.testing.assert_frame_equal(points, case_points(values, ORDER))
    position = points["model"].map({m: i for i, m in enumerate(ORDER)})
    assert (points["x"] - position).abs().max() <= 0.18  # jitter U(-0.18, 0.18)
    # delta has no prediction for case_000: the only value set by the policy (report_inputs).
    assert points.loc[points["imputed"], ["model", "case_id"]].to_numpy().tolist() == [
        ["delta", "case_000"]
    ]
    fig = case_distribution(values, ORDER, metric="dsc")
    offsets = _scatter_offsets(fig)
    assert len(offsets) == len(points)
    assert sorted(offsets[:, 1]) == sorted(points["value"])


def test_case_points_skip_nan_and_absent_models_lower_is_better_values_as_is() -> None:
    values = pd.DataFrame(
        {
            "model": ["A", "A", "B", "Z"],
            "case_id": ["c1", "c2", "c1", "c1"],
            "value": [3.0, np.nan, 7.5, 1.0],  # hd95 in mm
            "metric": "hd95",
        }
    )
    points = case_points(values, ["B", "A"])  # Z is not in the order, A/c2 is NaN
    assert points[["model", "case_id", "value"]].to_numpy().tolist() == [
        ["B", "c1", 7.5],
        ["A", "c1", 3.0],
    ]
    fig = case_distribution(values, ["B", "A"], metric="hd95")
    assert sorted(_scatter_offsets(fig)[:, 1]) == [3.0, 7.5]
    assert "lower is better" in fig.axes[0].get_ylabel()


def _uniform_values(n_models: int, n_cases: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "model": np.repeat([f"m{i}" for i in range(n_models)], n_cases),
            "case_id": np.tile([f"c{j:04d}" for j in range(n_cases)], n_models),
            "value": rng.uniform(size=n_models * n_cases),
        }
    )


@pytest.mark.parametrize(("n_cases", "rasterized"), [(666, False), (667, True)])
def test_case_distribution_rasterizes_above_the_threshold(n_cases: int, rasterized: bool) -> None:
    # 3 × 666 = 1,998 points stay vector, 3 × 667 = 2,001 > RASTERIZE_ABOVE = 2,000 are
    # rasterized.
    values = _uniform_values(3, n_cases)
    fig = case_distribution(values, ["m0", "m1", "m2"], metric="dsc")
    points = _layers(fig, "cases", "imputed")
    assert sum(len(c.get_offsets()) for c in points) == 3 * n_cases
    assert all(c.get_rasterized() is (3 * n_cases > RASTERIZE_ABOVE) for c in points)
    assert (3 * n_cases > RASTERIZE_ABOVE) is rasterized
    assert not any(c.get_rasterized() for c in _layers(fig, "mean"))  # 3 markers: vector


def test_case_distribution_means_and_policy_crosses_on_top(data: ReportData) -> None:
    values = _slice(data.analyses["dsc"].values, "liver")
    points = case_points(values, ORDER)
    fig = case_distribution(values, ORDER, metric="dsc")
    (means,) = _layers(fig, "mean")
    # One diamond per model at its position, at the mean of all its points (set ones included).
    expected = points.groupby("model")["value"].mean().loc[ORDER]
    np.testing.assert_allclose(means.get_offsets()[:, 0], range(len(ORDER)))
    np.testing.assert_allclose(means.get_offsets()[:, 1], expected)
    (regular,) = _layers(fig, "cases")
    (imputed,) = _layers(fig, "imputed")
    assert imputed.get_zorder() > regular.get_zorder()
    assert means.get_zorder() > regular.get_zorder()
    # delta has one value set by the policy: counted over delta (position 3) and in the legend.
    counts = [t for t in fig.findobj(Text) if t.get_gid() == "imputed_count"]
    assert [(t.get_position()[0], t.get_text()) for t in counts] == [(3, "×1")]
    # The legend is outside the axes (a figure legend), with the mean and the count.
    assert fig.axes[0].get_legend() is None
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0] == "case" and labels[2] == "mean"
    assert labels[1].startswith("set by policy (n = 1")


# ---------------------------------------------------------------------------- blobs


def test_blob_sizes_are_proportional_to_frequency() -> None:
    # Hand-made: A is rank 1 in 75 % of resamples, rank 2 in 25 %; B the other way round.
    rank_counts = pd.DataFrame(
        {
            "model": ["A", "A", "B", "B"],
            "rank": [1, 2, 1, 2],
            "frequency": [0.75, 0.25, 0.25, 0.75],
            "metric": "hd95",  # lower is better: ranks arrive oriented, 1 = best
        }
    )
    stability = pd.DataFrame(
        {
            "model": ["A", "B"],
            "median_rank": [1.0, 2.0],
            "rank_ci_low": [1.0, 1.0],
            "rank_ci_high": [2.0, 2.0],
        }
    )
    blobs = blob_points(rank_counts, stability, ["A", "B"])
    assert blobs["size"].tolist() == [f * MAX_BLOB_AREA for f in (0.75, 0.25, 0.25, 0.75)]
    assert blobs["rank"].tolist() == [1.0, 2.0, 1.0, 2.0]
    fig = rank_blobs(rank_counts, stability, ["A", "B"])
    ax = fig.axes[0]
    blob_layer = ax.collections[0]
    np.testing.assert_allclose(blob_layer.get_sizes(), blobs["size"])
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # rank 1 at the top


def test_blob_frequencies_sum_to_one_per_model(data: ReportData) -> None:
    analysis = data.analyses["nsd"]
    blobs = blob_points(
        _slice(analysis.rank_counts, "spleen"), _slice(analysis.stability, "spleen"), ORDER
    )
    assert list(dict.fromkeys(blobs["model"])) == ORDER
    # rank_counts is a bootstrap distribution per model (count / B), so each sums to 1.
    np.testing.assert_allclose(blobs.groupby("model")["frequency"].sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(blobs["size"] / blobs["frequency"], MAX_BLOB_AREA)


# ---------------------------------------------------------------------------- tau


def test_tau_violin_average_first_nan_counted() -> None:
    tau = pd.DataFrame(
        {
            "structure": ["liver"] * 4 + ["average"] * 4 + ["spleen"] * 3,
            "tau": [1.0, 0.6, np.nan, 0.8, 1.0, 0.9, 0.7, 1.0, 1.0, 1.0, 1.0],  # spleen constant
            "metric": "dsc",
        }
    )
    fig = tau_violin(tau)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["average", "liver\n(1 undefined)", "spleen"]


def test_tau_summary_quantiles_and_violin_axis_fit_the_data() -> None:
    tau = pd.DataFrame(
        {
            "structure": ["liver"] * 5 + ["average"] * 3 + ["kidney"] * 2,
            "tau": [0.2, 0.4, 0.6, 0.8, 1.0, 0.9, np.nan, 1.0, np.nan, np.nan],
            "metric": "dsc",
        }
    )
    summary = tau_summary(tau).set_index("structure")
    assert summary.index.tolist() == ["average", "liver", "kidney"]
    assert summary.loc["liver", ["n", "n_undefined"]].tolist() == [5, 0]
    assert summary.loc["average", ["n", "n_undefined"]].tolist() == [2, 1]
    # numpy linear quantiles of 0.2..1.0: median 0.6, q025 = 0.2 + 0.1 · 0.8, q975 = 0.98.
    np.testing.assert_allclose(summary.loc["liver", ["median", "q025", "q975"]], [0.6, 0.22, 0.98])
    assert summary.loc["kidney", ["median", "q025", "q975"]].isna().all()  # no defined τ
    fig = tau_violin(tau)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low == pytest.approx(0.2 - 0.05)  # min τ − 0.05 ...
    assert 1.0 <= high <= 1.05  # ... up to 1
    (medians,) = [c for c in ax.collections if c.get_gid() == "median"]
    np.testing.assert_allclose(medians.get_offsets()[:2, 1], [0.95, 0.6])
    caption = _caption(fig)
    assert "median" in caption and "2.5–97.5 %" in caption
    # A τ near −1 never pushes the axis below −1.
    low_tau = tau.assign(tau=tau["tau"].where(tau["tau"] != 0.2, -0.99))
    assert tau_violin(low_tau).axes[0].get_ylim()[0] == pytest.approx(-1.0)


def test_tau_violin_fixture(data: ReportData) -> None:
    fig = tau_violin(data.analyses["dsc"].tau_samples)  # pancreas τ is constant (all 1)
    assert fig.axes[0].get_xticklabels()[0].get_text() == "average"


# ---------------------------------------------------------------------------- robustness


def test_robustness_ranks_equal_rankings_columns(data: ReportData) -> None:
    rankings = _slice(data.analyses["dsc"].rankings)
    ranks = robustness_ranks(rankings, ORDER)
    assert len(ranks) == len(ORDER) * len(SCHEMES)
    by_model = rankings.set_index("model")
    for scheme, column in SCHEMES:
        part = ranks[ranks["scheme"] == scheme]
        assert part["model"].tolist() == ORDER
        np.testing.assert_array_equal(part["rank"], by_model.loc[ORDER, column].astype(float))
    fig = ranking_robustness(rankings, ORDER)
    layers = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    for layer, (scheme, _) in zip(layers, SCHEMES, strict=True):
        np.testing.assert_array_equal(
            layer.get_offsets()[:, 0], ranks.loc[ranks["scheme"] == scheme, "rank"]
        )


def test_robustness_skips_absent_models() -> None:
    rankings = pd.DataFrame(
        {"model": ["B", "A"], "rank_by_mean": [2, 1], "rank_by_case_rank": [1, 2]}
    ).assign(rank_by_tests=1)
    ranks = robustness_ranks(rankings, ["A", "X", "B"])
    assert ranks["model"].tolist() == ["A"] * 3 + ["B"] * 3
    assert ranks["rank"].tolist() == [1.0, 2.0, 1.0, 2.0, 1.0, 1.0]


# ---------------------------------------------------------------------------- subgroups


def test_subgroup_marks_match_significant_tests(data: ReportData) -> None:
    analysis = data.analyses["dsc"]
    subgroups = _slice(analysis.subgroups, "pancreas")
    tests = _slice(analysis.subgroup_tests, "pancreas")
    points = subgroup_points(subgroups, tests, ORDER)
    assert len(points) == len(ORDER) * 2  # two groups (F, M), none skipped (12 cases each)
    expected = tests[tests["significant"] & tests["test"].eq("mannwhitneyu")]
    marks = subgroup_marks(tests, ORDER)
    assert marks[["model", "group_a", "group_b"]].to_numpy().tolist() == (
        expected[["model", "group_a", "group_b"]].to_numpy().tolist()
    )
    assert len(_significant_texts(subgroup_plot(subgroups, tests, ORDER))) == len(expected)


def test_subgroup_points_dodge_and_skip() -> None:
    # Hand-made: groups young/old/mid; "mid" of B is skipped (too small).
    subgroups = pd.DataFrame(
        {
            "model": ["A", "A", "A", "B", "B", "B"],
            "group": ["young", "old", "mid"] * 2,
            "mean": [0.9, 0.8, 0.85, 0.7, 0.6, np.nan],
            "n": [10, 10, 10, 10, 10, 2],
            "skipped": [False] * 5 + [True],
            "grouping": "age",
        }
    )
    tests = pd.DataFrame(
        {
            "model": ["A", "A", "B"],
            "test": ["kruskal", "mannwhitneyu", "mannwhitneyu"],
            "group_a": ["", "young", "young"],
            "group_b": ["", "old", "old"],
            "p_adj": [0.01, 0.02, 0.5],
            "significant": [True, True, False],
        }
    )
    points = subgroup_points(subgroups, tests, ["B", "A"])
    assert len(points) == 5  # 6 rows minus the skipped one
    # Three groups: width 0.6 / 3 = 0.2, offsets -0.2, 0, +0.2 in order of appearance.
    x = points.set_index(["model", "group"])["x"]
    np.testing.assert_allclose(
        [x[("B", "young")], x[("B", "old")], x[("A", "young")], x[("A", "mid")]],
        [-0.2, 0.0, 0.8, 1.2],
    )
    fig = subgroup_plot(subgroups, tests, ["B", "A"])
    texts = _significant_texts(fig)
    assert len(texts) == 1  # only the Mann–Whitney A young vs old (Kruskal is not marked)
    assert texts[0].get_position()[0] == pytest.approx((0.8 + 1.0) / 2)


def _decade_frame(skipped: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hand-made: nine decade bins for models A, B and the pseudo-model "average"."""
    groups = [f"[{10 * k}, {10 * k + 10})" for k in range(1, 10)]
    rows = [
        (m, g, 5 if g in skipped else 10 + j + (m == "average"), 0.9 - 0.01 * j, g in skipped)
        for m in ("A", "B", "average")
        for j, g in enumerate(groups)
    ]
    frame = pd.DataFrame(rows, columns=["model", "group", "n", "mean", "skipped"])
    frame = frame.assign(grouping="age:decades", metric="dsc")
    tests = pd.DataFrame(
        {
            "model": ["A", "A"],
            "test": ["kruskal", "mannwhitneyu"],
            "group_a": ["", "[20, 30)"],
            "group_b": ["", "[30, 40)"],
            "p_adj": [0.01, 0.01],
            "correction": ["none", "bonferroni"],
            "significant": [True, True],
        }
    )
    return frame, tests


def _group_colours(fig: Figure) -> dict[str, tuple[tuple[float, ...], str]]:
    out = {}
    for layer in _layers(fig):
        gid = layer.get_gid() or ""
        if gid.startswith("group:"):
            out[gid.removeprefix("group:")] = tuple(np.round(layer.get_facecolor()[0], 6))
    return out


def test_subgroup_styles_are_fixed_per_group_across_figures() -> None:
    all_drawn, _ = _decade_frame(set())
    fewer, tests = _decade_frame({"[10, 20)", "[20, 30)", "[60, 70)"})
    one = _group_colours(subgroup_plot(all_drawn, tests, ["A", "B", "average"]))
    two = _group_colours(subgroup_plot(fewer, tests, ["A", "B", "average"]))
    assert len(one) == 9 and len(two) == 6
    assert all(two[g] == one[g] for g in two)  # same group, same colour, whatever is drawn
    styles = subgroup_styles(fewer)
    assert styles["group"].tolist() == list(dict.fromkeys(fewer["group"]))  # bin order
    assert styles.equals(subgroup_styles(all_drawn).assign(n=styles["n"], label=styles["label"]))
    assert len(set(zip(styles["color"], styles["marker"], strict=True))) == 9  # all distinct
    # Viridis without its yellow end: no colour has a high red+green and a low blue.
    rgb = np.array([matplotlib.colors.to_rgb(c) for c in styles["color"]])
    assert not ((rgb[:, 0] > 0.8) & (rgb[:, 1] > 0.8) & (rgb[:, 2] < 0.3)).any()
    # Group size in the label: the largest n over the models (average has one more here).
    assert styles.set_index("group").loc["[90, 100)", "label"] == "[90, 100) n=19"


def test_subgroup_plot_average_last_caption_and_pretty_grouping() -> None:
    frame, tests = _decade_frame({"[10, 20)"})
    fig = subgroup_plot(
        frame, tests, ["average", "B", "A"], title="toy · average · dsc by age:decades"
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["B", "A", "all models"]
    (divider,) = [line for line in ax.get_lines() if line.get_gid() == "divider"]
    assert divider.get_xdata()[0] == pytest.approx(1.5)  # between A (1) and all models (2)
    assert ax.get_title() == "toy · average · dsc by age (decades)"
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "age (decades)"
    assert legend.get_texts()[0].get_text() == "[20, 30) n=12"
    caption = _caption(fig)
    assert "* pairwise Mann–Whitney U, Bonferroni within model, p_adj < 0.05" in caption
    assert '"all models"' in caption
    points = subgroup_points(frame, tests, ["average", "B", "A"])
    assert list(dict.fromkeys(points["model"])) == ["B", "A", "average"]


def test_subgroup_plot_without_data_says_so(data: ReportData) -> None:
    analysis = data.analyses["dsc"]
    empty, no_tests = analysis.subgroups.iloc[:0], analysis.subgroup_tests.iloc[:0]
    fig = subgroup_plot(empty, no_tests, ORDER)
    assert "no subgroup data" in [t.get_text() for t in fig.findobj(Text)]
    assert subgroup_points(empty, no_tests, ORDER).empty
    assert subgroup_marks(no_tests, ORDER).empty


# ---------------------------------------------------------------------------- speed


def test_speed_bars_sorted_with_cm3_per_s(data: ReportData) -> None:
    bars = speed_bars(data.speed)
    # report_inputs: 216,000 cm³ in 120, 60, 30, 300 s for alpha, beta, gamma, delta.
    assert bars["model"].tolist() == ["gamma", "beta", "alpha", "delta"]
    assert bars["cm3_per_s"].tolist() == [7200.0, 3600.0, 1800.0, 720.0]
    fig = speed_plot(data.speed, min_speed=1000.0)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches if isinstance(p, Rectangle)]
    assert widths == [7200.0, 3600.0, 1800.0, 720.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == bars["model"].tolist()
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [1000.0]


# ---------------------------------------------------------------------------- saving


def test_save_figure_writes_three_files_with_deterministic_svg(
    data: ReportData, tmp_path: Path
) -> None:
    fig = significance_heatmap(_slice(data.analyses["dsc"].pairwise), ORDER, title="toy")
    paths = save_figure(fig, tmp_path / "a" / "heatmap--toy--nsd@2.0mm--liver")
    assert [p.name for p in paths] == [
        f"heatmap--toy--nsd@2.0mm--liver.{ext}" for ext in ("svg", "pdf", "png")
    ]
    assert all(p.stat().st_size > 0 for p in paths)
    first = paths[0].read_bytes()
    (again,) = save_figure(fig, tmp_path / "b" / "heatmap", formats=("svg",))
    assert again.read_bytes() == first
    assert b"<text" in first  # svg.fonttype none: text stays text


def test_save_figure_rasterized_svg_is_deterministic(tmp_path: Path) -> None:
    values = pd.DataFrame(
        {
            "model": "m",
            "case_id": [f"c{i}" for i in range(6_000)],
            "value": np.linspace(0, 1, 6_000),
        }
    )
    fig = case_distribution(values, ["m"], metric="dsc")
    (one,) = save_figure(fig, tmp_path / "one", formats=("svg",))
    (two,) = save_figure(fig, tmp_path / "two", formats=("svg",))
    assert one.read_bytes() == two.read_bytes()


def test_save_figure_refuses_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="jpg"):
        save_figure(Figure(), tmp_path / "x", formats=("jpg",))
