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
    tau_summary,
    tau_violin,
)
from assay.report._subgroup_figures import (
    BOX_WIDTH,
    MAX_BRACKETS,
    MEAN_OFFSET,
    subgroup_boxes,
    subgroup_cases,
    subgroup_marks,
    subgroup_plot,
    subgroup_points,
    subgroup_styles,
)

ORDER = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(scope="module")
def data() -> ReportData:
    return make_report_data()


def _slice(frame: pd.DataFrame, structure: str = "average") -> pd.DataFrame:
    return frame[frame["structure"] == structure]


def _significant_texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_gid() == "significant"]


def _heatmap_marks(fig: Figure) -> list[tuple[float, float]]:
    """(x, y) of the heatmap's significance marks: the offsets of its one scatter layer of
    gid ``"significant"`` (x = column index, y = row index), sorted."""
    layers = _layers(fig, "significant")
    assert len(layers) <= 1  # all marks in one layer, not one artist each
    assert not _significant_texts(fig)  # and no Text marks
    return sorted((float(x), float(y)) for c in layers for x, y in c.get_offsets())


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
    marks = _heatmap_marks(significance_heatmap(pairwise, ["A", "B", "C"]))
    # imshow coordinates: x = column index (B = 1, C = 2), y = row index (A = 0).
    assert marks == [(1, 0), (2, 0)]


def test_heatmap_follows_order_and_skips_absent_models() -> None:
    pairwise = _pairwise({("A", "B"): 0.01}, ["A", "B", "C"])
    fig = significance_heatmap(pairwise, ["C", "Z", "B", "A"])  # Z has no test: skipped
    cells = heatmap_cells(pairwise, ["C", "Z", "B", "A"])
    assert set(cells["row"]) | set(cells["col"]) == {"A", "B", "C"}
    # Order C, B, A: row A is index 2, column B is index 1.
    assert _heatmap_marks(fig) == [(1, 2)]
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
    assert _heatmap_marks(significance_heatmap(pairwise, ["A", "B"])) == [(1, 0)]


def test_heatmap_single_model_has_one_cell_and_no_marks() -> None:
    empty = _pairwise({}, ["A"])  # one model: no pairs at all
    assert heatmap_cells(empty, ["A"]).empty
    fig = significance_heatmap(empty, ["A"])
    assert fig.axes[0].images[0].get_array().shape == (1, 1)
    assert _heatmap_marks(fig) == []


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
    assert len(_heatmap_marks(significance_heatmap(pairwise, ORDER))) == expected


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


def _two_groups() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Hand-made: models A, B and "average"; groups young/old/mid, "mid" of B too small.

    Cases c00..c11: young = c00..c03, old = c04..c07, mid = c08..c11. A's values are
    0.9 (young), 0.5 (old), 0.7 (mid); B is 0.1 below A, with B lacking c11.
    """
    cases = pd.DataFrame(
        {
            "group": ["young"] * 4 + ["old"] * 4 + ["mid"] * 4,
            "case_id": [f"c{i:02d}" for i in range(12)],
        }
    )
    level = {"young": 0.9, "old": 0.5, "mid": 0.7}
    rows = [
        (m, c, level[g] - (0.1 if m == "B" else 0.0) + 0.01 * (i % 4))
        for m in ("A", "B")
        for i, (g, c) in enumerate(zip(cases["group"], cases["case_id"], strict=True))
        if not (m == "B" and c == "c11")
    ]
    values = pd.DataFrame(rows, columns=["model", "case_id", "value"]).assign(
        dataset="toy", structure="liver", metric="dsc"
    )
    stats = []
    for m in ("A", "B", "average"):
        for g in ("young", "old", "mid"):
            members = set(cases.loc[cases["group"] == g, "case_id"])
            v = values[values["case_id"].isin(members)]
            v = v.groupby("case_id")["value"].mean() if m == "average" else v[v["model"] == m]
            x = v if m == "average" else v["value"]
            skipped = m == "B" and g == "mid"
            stats.append((m, g, len(x), float(x.mean()), float(x.mean()) - 0.02,
                          float(x.mean()) + 0.02, skipped))  # fmt: skip
    subgroups = pd.DataFrame(
        stats, columns=["model", "group", "n", "mean", "ci_low", "ci_high", "skipped"]
    ).assign(dataset="toy", structure="liver", metric="dsc", grouping="age")
    tests = pd.DataFrame(
        {
            "model": ["A", "A", "A", "A", "B", "average"],
            "test": [
                "kruskal",
                "mannwhitneyu",
                "mannwhitneyu",
                "mannwhitneyu",
                "mannwhitneyu",
                "mannwhitneyu",
            ],
            "group_a": ["", "young", "young", "old", "young", "young"],
            "group_b": ["", "old", "mid", "mid", "old", "old"],
            "p_adj": [0.001, 0.0001, 0.02, 0.004, 0.5, 0.03],
            "significant": [True, True, True, True, False, True],
            "correction": "bonferroni",
            "family": "all",
            "family_size": 5,
        }
    )
    return subgroups, tests, values, cases


def test_subgroup_points_slots_panels_and_skip() -> None:
    subgroups, _, _, _ = _two_groups()
    points = subgroup_points(subgroups, ["B", "average", "A"])
    assert len(points) == 8  # 9 rows minus the skipped B/mid
    assert list(dict.fromkeys(points["model"])) == ["B", "A", "average"]  # average last
    assert points.groupby("model")["panel"].first().to_dict() == {"B": 0, "A": 1, "average": 2}
    # the slot is the group's index among all real groups (skipped ones keep theirs)
    assert points.set_index(["model", "group"])["x"].to_dict()[("A", "mid")] == 2.0
    assert points.set_index(["model", "group"])["x"].to_dict()[("B", "old")] == 1.0
    assert ("B", "mid") not in set(zip(points["model"], points["group"], strict=True))
    np.testing.assert_allclose(points["ci_high"] - points["ci_low"], 0.04)


def test_subgroup_cases_are_the_tested_samples(data: ReportData) -> None:
    """Per (model, group) the drawn points are exactly the analysis' sample: same n, same mean
    (the "average" model too), and every point stays inside its group's slot."""
    a = data.analyses["dsc"]
    for structure in ("average", "liver"):
        sg = a.subgroups[(a.subgroups["structure"] == structure)]
        values = a.values[a.values["structure"] == structure]
        cases = a.subgroup_cases[a.subgroup_cases["grouping"] == "sex"]
        points = subgroup_cases(values, cases, sg, ORDER)
        drawn = subgroup_points(sg, ORDER).set_index(["model", "group"])
        got = points.groupby(["model", "group"])["value"].agg(["size", "mean"])
        assert set(got.index) == set(drawn.index)
        np.testing.assert_array_equal(got["size"], drawn.loc[got.index, "n"])
        np.testing.assert_allclose(got["mean"], drawn.loc[got.index, "mean"], rtol=0, atol=1e-12)
        slot = points["group"].map(
            dict(zip(drawn.reset_index()["group"], drawn["x"], strict=False))
        )
        assert (abs(points["x"] - slot) <= 0.17 + 1e-12).all()
    assert subgroup_cases(values, cases, sg, ORDER).equals(subgroup_cases(values, cases, sg, ORDER))


def test_subgroup_markers_do_not_overlap() -> None:
    """Within a panel, a group's points, box and mean marker stay in its own slot."""
    subgroups, _, values, cases = _two_groups()
    points = subgroup_cases(values, cases, subgroups, ["A", "B", "average"])
    means = subgroup_points(subgroups, ["A", "B", "average"])
    for panel, part in points.groupby("panel"):
        spans = part.groupby("group")["x"].agg(["min", "max"]).sort_values("min")
        mean_x = means.loc[means["panel"] == panel].set_index("group")["x"] + MEAN_OFFSET
        for (g1, r1), (_, r2) in zip(spans.iloc[:-1].iterrows(), spans.iloc[1:].iterrows(),
                                     strict=True):  # fmt: skip
            assert r1["max"] < mean_x[g1] - 0.1 < mean_x[g1] + 0.1 < r2["min"]
        # box edges (slot ± BOX_WIDTH / 2) of neighbouring groups do not touch the mean marker
        assert ((mean_x - mean_x.round()) > BOX_WIDTH / 2).all()


def test_subgroup_boxes_are_numpy_quartiles() -> None:
    subgroups, _, values, cases = _two_groups()
    points = subgroup_cases(values, cases, subgroups, ["A", "B", "average"])
    boxes = subgroup_boxes(points)
    for b in boxes.itertuples(index=False):
        v = points.loc[(points["model"] == b.model) & (points["group"] == b.group), "value"]
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        assert (b.q1, b.median, b.q3) == pytest.approx((q1, med, q3), abs=1e-12)
        inside = v[(v >= q1 - 1.5 * (q3 - q1)) & (v <= q3 + 1.5 * (q3 - q1))]
        # whiskers at the extreme values inside the fences, never inside the box (matplotlib)
        low, high = min(inside.min(), q1), max(inside.max(), q3)
        assert (b.whislo, b.whishi) == pytest.approx((low, high), abs=1e-12)
        assert b.n == len(v)


def test_subgroup_plot_brackets_stars_and_caption() -> None:
    subgroups, tests, values, cases = _two_groups()
    order = ["A", "B", "average"]
    marks = subgroup_marks(tests, order)
    # Mann–Whitney rows that are significant; Kruskal–Wallis is never bracketed
    assert marks[["model", "group_a", "group_b"]].to_numpy().tolist() == [
        ["A", "young", "old"], ["A", "young", "mid"], ["A", "old", "mid"],
        ["average", "young", "old"],
    ]  # fmt: skip
    assert marks["stars"].tolist() == ["***", "*", "**", "*"]
    ci = "percentile bootstrap, B = 9"
    title = "toy · liver · dsc by age"
    fig = subgroup_plot(
        subgroups, tests, order, values=values, cases=cases, title=title, ci_label=ci
    )
    texts = _significant_texts(fig)
    assert sorted(t.get_text() for t in texts) == sorted(marks["stars"])
    # brackets over the slots of their groups: A young–old at x = 0.5, young–mid at 1.0
    a_panel = fig.axes[0]
    assert sorted(t.get_position()[0] for t in texts if t.axes is a_panel) == [0.5, 1.0, 1.5]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["A", "B", "all models"]
    caption = _caption(fig)
    assert "Bonferroni over all 5 Mann–Whitney tests" in caption
    assert "percentile bootstrap, B = 9" in caption and "*** < 0.0005" in caption
    assert len(_layers(fig, "cases")) == 3
    assert sum(len(c.get_offsets()) for c in _layers(fig, "cases")) == len(
        subgroup_cases(values, cases, subgroups, order)
    )


def test_subgroup_plot_caps_brackets_per_panel() -> None:
    groups = [f"[{10 * k}, {10 * k + 10})" for k in range(1, 9)]  # 8 bins: 28 pairs
    rows = [("A", g, 10, 0.5, 0.4, 0.6, False) for g in groups]
    columns = ["model", "group", "n", "mean", "ci_low", "ci_high", "skipped"]
    sg = pd.DataFrame(rows, columns=columns).assign(grouping="age:decades", metric="dsc")
    pairs = [(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]
    tt = pd.DataFrame(
        {
            "model": "A",
            "test": "mannwhitneyu",
            "group_a": [a for a, _ in pairs],
            "group_b": [b for _, b in pairs],
            "p_adj": 0.001,
            "significant": True,
        }
    )
    fig = subgroup_plot(sg, tt, ["A"])
    assert len(_significant_texts(fig)) == MAX_BRACKETS
    (more,) = [t for t in fig.findobj(Text) if t.get_gid() == "more_pairs"]
    assert more.get_text() == f"+{len(pairs) - MAX_BRACKETS} more pairs"
    assert fig.axes[0].get_legend() is None and fig.legends[0].get_title().get_text() == (
        "age (decades)"
    )


def _decade_frame(skipped: set[str]) -> pd.DataFrame:
    """Hand-made: nine decade bins for models A, B and the pseudo-model "average"."""
    groups = [f"[{10 * k}, {10 * k + 10})" for k in range(1, 10)]
    rows = [
        (m, g, 5 if g in skipped else 10 + j + (m == "average"), 0.9 - 0.01 * j, g in skipped)
        for m in ("A", "B", "average")
        for j, g in enumerate(groups)
    ]
    frame = pd.DataFrame(rows, columns=["model", "group", "n", "mean", "skipped"])
    return frame.assign(grouping="age:decades", metric="dsc")


def _legend_colours(fig: Figure) -> dict[str, tuple[float, ...]]:
    handles = fig.legends[0].legend_handles
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    return {
        label.split(" n=")[0]: tuple(np.round(h.get_edgecolor(), 6))
        for h, label in zip(handles, labels, strict=True)
        if " n=" in label
    }


def test_subgroup_styles_are_fixed_per_group_across_figures() -> None:
    all_drawn = _decade_frame(set())
    fewer = _decade_frame({"[10, 20)", "[20, 30)", "[60, 70)"})
    none = pd.DataFrame(columns=["model", "test", "group_a", "group_b", "p_adj", "significant"])
    one = _legend_colours(subgroup_plot(all_drawn, none, ["A", "B", "average"]))
    two = _legend_colours(subgroup_plot(fewer, none, ["A", "B", "average"]))
    assert one == two and len(one) == 9  # same group, same colour, whatever is drawn
    styles = subgroup_styles(fewer)
    assert styles["group"].tolist() == list(dict.fromkeys(fewer["group"]))  # bin order
    assert styles.equals(subgroup_styles(all_drawn).assign(n=styles["n"], label=styles["label"]))
    assert len(set(zip(styles["color"], styles["marker"], strict=True))) == 9  # all distinct
    # Viridis without its yellow end: no colour has a high red+green and a low blue.
    rgb = np.array([matplotlib.colors.to_rgb(c) for c in styles["color"]])
    assert not ((rgb[:, 0] > 0.8) & (rgb[:, 1] > 0.8) & (rgb[:, 2] < 0.3)).any()
    # Group size in the label: the largest n over the models (average has one more here).
    assert styles.set_index("group").loc["[90, 100)", "label"] == "[90, 100) n=19"


def test_subgroup_plot_average_last_and_pretty_grouping() -> None:
    frame = _decade_frame({"[10, 20)"})
    none = pd.DataFrame(columns=["model", "test", "group_a", "group_b", "p_adj", "significant"])
    fig = subgroup_plot(
        frame, none, ["average", "B", "A"], title="toy · average · dsc by age:decades"
    )
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["B", "A", "all models"]
    assert panels[-1].title.get_fontweight() == "bold"
    assert fig.get_suptitle() == "toy · average · dsc by age (decades)"
    assert '"all models"' in _caption(fig)
    assert panels[0].get_xticklabels()[0].get_text() == "[10, 20)"


def test_subgroup_plot_without_data_says_so(data: ReportData) -> None:
    analysis = data.analyses["dsc"]
    empty, no_tests = analysis.subgroups.iloc[:0], analysis.subgroup_tests.iloc[:0]
    fig = subgroup_plot(empty, no_tests, ORDER)
    assert "no subgroup data" in [t.get_text() for t in fig.findobj(Text)]
    assert subgroup_points(empty, ORDER).empty
    assert subgroup_marks(no_tests, ORDER).empty


def test_subgroup_figure_of_the_report_saves(data: ReportData, tmp_path: Path) -> None:
    """The report's own subgroup figure (fixture, average structure) draws and saves."""
    a = data.analyses["dsc"]
    sg = a.subgroups[a.subgroups["structure"] == "average"]
    tests = a.subgroup_tests[a.subgroup_tests["structure"] == "average"]
    values = a.values[a.values["structure"] == "average"]
    fig = subgroup_plot(sg, tests, [*ORDER, "average"], values=values,
                        cases=a.subgroup_cases)  # fmt: skip
    assert len(_significant_texts(fig)) == int(
        (tests["significant"] & tests["test"].eq("mannwhitneyu")).sum()
    )
    paths = save_figure(fig, tmp_path / "sub", formats=("svg",))
    assert paths[0].stat().st_size > 1000


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
