"""Paired bootstrap, rank stability and subgroup analysis against SciPy / statsmodels.

Reference sources: ``scipy.stats.bootstrap`` (percentile and BCa intervals, same resampling
stream), ``scipy.stats.rankdata(method='min')``, ``scipy.stats.kendalltau`` (τ-b),
``scipy.stats.kruskal``, ``scipy.stats.mannwhitneyu`` and
``statsmodels.stats.multitest.multipletests``. Tolerances are float round-off (1e-12)
unless stated.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from assay.errors import InputError
from assay.stats._bootstrap import bootstrap_ci, paired_bootstrap_means
from assay.stats._stability import kendall_tau_b, rank_min, rank_stability
from assay.stats._subgroups import parse_group_spec, subgroup_analysis

TOL = 1e-12


def tidy(
    matrix: np.ndarray,
    models: list[str],
    *,
    structure: str = "liver",
    metric: str = "dsc",
    dataset: str = "d",
) -> pd.DataFrame:
    """Tidy rows from a cases × models matrix; NaN entries become absent rows."""
    n = matrix.shape[0]
    frame = pd.DataFrame(
        {
            "dataset": dataset,
            "model": np.tile(models, n),
            "case_id": np.repeat([f"c{i:04d}" for i in range(n)], len(models)),
            "structure": structure,
            "metric": metric,
            "value": matrix.ravel(),
        }
    )
    return frame[frame["value"].notna()].reset_index(drop=True)


# ---------------------------------------------------------------- paired_bootstrap_means


def test_bootstrap_means_equal_explicit_resampling() -> None:
    """Means equal np.nanmean over rng.integers(0, n, (B, n)) rows, NaN-aware."""
    rng = np.random.default_rng(1)
    x = rng.random((37, 3))
    x[rng.random(x.shape) < 0.2] = np.nan
    got = paired_bootstrap_means(x, n_resamples=300, seed=7)
    idx = np.random.default_rng(7).integers(0, 37, size=(300, 37))
    expected = np.stack([np.nanmean(x[i], axis=0) for i in idx])
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_bootstrap_blocks_continue_one_stream() -> None:
    """Large n forces several resample blocks; rows still match one integers() call."""
    x = np.arange(3000, dtype=float)[:, None]
    got = paired_bootstrap_means(x, n_resamples=1500, seed=3)  # 1500·3000 > 2e6 per block
    idx = np.random.default_rng(3).integers(0, 3000, size=(1500, 3000))
    np.testing.assert_allclose(got[:, 0], x[idx, 0].mean(axis=1), rtol=0, atol=1e-9)


def test_bootstrap_is_paired_and_deterministic() -> None:
    rng = np.random.default_rng(2)
    col = rng.random(40)
    x = np.column_stack([col, col, col + 1.0])
    a = paired_bootstrap_means(x, n_resamples=200, seed=11)
    b = paired_bootstrap_means(x, n_resamples=200, seed=11)
    np.testing.assert_array_equal(a, b)  # same seed ⇒ identical
    np.testing.assert_array_equal(a[:, 0], a[:, 1])  # same cases for every model
    np.testing.assert_allclose(a[:, 2] - a[:, 0], 1.0, rtol=0, atol=1e-12)
    assert not np.array_equal(a, paired_bootstrap_means(x, n_resamples=200, seed=12))


def test_bootstrap_model_missing_every_resampled_case_is_nan() -> None:
    x = np.column_stack([np.arange(5.0), [1.0, np.nan, np.nan, np.nan, np.nan]])
    boot = paired_bootstrap_means(x, n_resamples=500, seed=0)
    idx = np.random.default_rng(0).integers(0, 5, size=(500, 5))
    np.testing.assert_array_equal(np.isnan(boot[:, 1]), ~(idx == 0).any(axis=1))
    assert np.all(boot[~np.isnan(boot[:, 1]), 1] == 1.0)


@pytest.mark.parametrize("bad", [np.zeros((0, 2)), np.zeros(3)])
def test_bootstrap_rejects_bad_shapes(bad: np.ndarray) -> None:
    with pytest.raises(InputError):
        paired_bootstrap_means(bad)


# ---------------------------------------------------------------- bootstrap_ci vs scipy


@pytest.mark.parametrize(("method", "scipy_method"), [("percentile", "percentile"), ("bca", "BCa")])
@pytest.mark.parametrize("n", [12, 80])
def test_ci_reproduces_scipy_bootstrap_exactly(method: str, scipy_method: str, n: int) -> None:
    """Same seed ⇒ scipy draws the same integers(0, n, (B, n)); intervals agree to 1e-12."""
    x = np.random.default_rng(n).gamma(2.0, size=n)
    ours = bootstrap_ci(tidy(x[:, None], ["m"]), n_resamples=999, seed=5, method=method)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=999, method=scipy_method, rng=np.random.default_rng(5)
    )
    row = ours.iloc[0]
    assert row["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=TOL)
    assert row["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=TOL)
    assert row["mean"] == pytest.approx(x.mean(), abs=TOL)
    assert row["n"] == n
    assert row["warning"].startswith("n < 50") == (n < 50)


def test_ci_deterministic_paired_and_missing_cases() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((60, 3))
    x[:, 1] = x[:, 0]
    x[:10, 2] = np.nan
    values = tidy(x, ["a", "b", "c"])
    first = bootstrap_ci(values, n_resamples=400, seed=9, method="bca")
    pd.testing.assert_frame_equal(
        first, bootstrap_ci(values, n_resamples=400, seed=9, method="bca")
    )
    a, b, c = (first.set_index("model").loc[m] for m in "abc")
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])
    assert c["n"] == 50 and c["warning"] == ""
    assert c["mean"] == pytest.approx(np.nanmean(x[:, 2]), abs=TOL)


def test_ci_degenerate_and_single_case() -> None:
    values = pd.concat(
        [tidy(np.full((5, 1), 0.7), ["flat"]), tidy(np.array([[0.3]]), ["one"], structure="spleen")]
    )
    out = bootstrap_ci(values, n_resamples=100, method="bca").set_index("model")
    for model, mean in (("flat", 0.7), ("one", 0.3)):
        assert out.loc[model, "ci_low"] == pytest.approx(mean, abs=TOL)
        assert out.loc[model, "ci_high"] == pytest.approx(mean, abs=TOL)
        assert "degenerate" in out.loc[model, "warning"]


def test_ci_input_errors() -> None:
    values = tidy(np.ones((3, 1)), ["m"])
    with pytest.raises(InputError):
        bootstrap_ci(values, method="basic")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        bootstrap_ci(values.drop(columns="metric"))
    with pytest.raises(InputError):
        bootstrap_ci(pd.concat([values, values.iloc[:1]]))
    with pytest.raises(InputError):
        bootstrap_ci(values.assign(value=np.nan))


# ---------------------------------------------------------------- rank stability


def test_rank_min_matches_scipy_rankdata() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 7)).astype(float)  # many ties
    for hib in (True, False):
        got = rank_min(scores, higher_is_better=hib)
        for row, ranks in zip(scores, got, strict=True):
            expected = stats.rankdata(-row if hib else row, method="min")
            np.testing.assert_array_equal(ranks, expected)
    assert rank_min(np.array([0.5, np.nan, 0.9, np.nan])).tolist() == [2, 3, 1, 3]


def test_kendall_tau_b_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    ref = np.array([1, 2, 2, 4, 5, 6])
    rankings = rng.integers(1, 5, size=(40, 6))
    got = kendall_tau_b(ref, rankings)
    expected = [stats.kendalltau(ref, r).statistic for r in rankings]
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert np.isnan(kendall_tau_b(ref, np.ones((1, 6)))[0])  # constant ranking: undefined


def test_rank_stability_against_direct_computation() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal([0.8, 0.79, 0.6, 0.6], 0.05, size=(30, 4))
    x[:3, 3] = np.nan
    models = ["a", "b", "c", "d"]
    per_model, per_slice = rank_stability(tidy(x, models, metric="hd95"), n_resamples=300, seed=2)
    boot = paired_bootstrap_means(x, n_resamples=300, seed=2)
    ranks = np.array([stats.rankdata(b, method="min") for b in boot])  # lower is better
    full = stats.rankdata(np.nanmean(x, axis=0), method="min")
    got = per_model.set_index("model").loc[models]
    np.testing.assert_array_equal(got["rank"], full)
    np.testing.assert_allclose(got["p_rank1"], (ranks == 1).mean(axis=0), atol=TOL)
    np.testing.assert_allclose(got["mean_rank"], ranks.mean(axis=0), atol=TOL)
    np.testing.assert_allclose(got["median_rank"], np.median(ranks, axis=0), atol=TOL)
    np.testing.assert_allclose(got["rank_ci_low"], np.percentile(ranks, 2.5, axis=0))
    np.testing.assert_allclose(got["rank_ci_high"], np.percentile(ranks, 97.5, axis=0))
    taus = np.array([stats.kendalltau(full, r).statistic for r in ranks])
    row = per_slice.iloc[0]
    assert row["tau_mean"] == pytest.approx(taus.mean(), abs=TOL)
    assert row["tau_median"] == pytest.approx(np.median(taus), abs=TOL)
    assert row["tau_q025"] == pytest.approx(np.percentile(taus, 2.5), abs=TOL)
    assert row["tau_q975"] == pytest.approx(np.percentile(taus, 97.5), abs=TOL)
    assert row["n_tau_undefined"] == 0


def test_rank_stability_orientation_and_ties() -> None:
    x = np.tile([[0.9, 0.9, 0.1]], (20, 1))  # a and b tie at the top for every resample
    values = tidy(x, ["a", "b", "c"])
    higher, _ = rank_stability(values, n_resamples=50)
    assert higher["rank"].tolist() == [1, 1, 3]
    assert higher["p_rank1"].tolist() == [1.0, 1.0, 0.0]
    lower, _ = rank_stability(values, n_resamples=50, higher_is_better=False)
    assert lower["rank"].tolist() == [2, 2, 1]
    dist, _ = rank_stability(values.assign(metric="hd"), n_resamples=50)  # default: lower
    assert dist["rank"].tolist() == [2, 2, 1]


# ---------------------------------------------------------------- subgroups


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sex", ("sex", "sex")),
        ("age:decades", ("age:decades", "age:decades")),
        ("age: 0, 40,60,120", ("age:0,40,60,120", "age:0,40,60,120")),
        (
            'older_women: sex == "f" and age >= 60',
            ("older_women", {"older_women": 'sex == "f" and age >= 60'}),
        ),
    ],
)
def test_parse_group_spec(text: str, expected: tuple[str, object]) -> None:
    assert parse_group_spec(text) == expected


@pytest.mark.parametrize("text", ["", ":x", "age:"])
def test_parse_group_spec_rejects_incomplete(text: str) -> None:
    with pytest.raises(InputError):
        parse_group_spec(text)


@pytest.fixture
def cohort() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(8)
    n = 90
    x = rng.random((n, 2))
    x[:, 1] += np.linspace(0, 0.5, n)  # model b improves with age
    x[:7, 0] = np.nan  # model a lacks 7 cases
    meta = pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(n)],
            "sex": np.where(np.arange(n) % 3 == 0, "f", "m"),
            "age": np.linspace(18, 95, n),
            "site": ["X"] * 5 + ["Y"] * 45 + ["Z"] * 40,  # X is below min_size
        }
    )
    meta.loc[88, "sex"] = None  # one case with missing metadata
    return tidy(x, ["a", "b"]), meta.iloc[:-1], x  # last case has no metadata row


def test_subgroups_against_scipy_and_statsmodels(cohort) -> None:
    values, meta, x = cohort
    groups, tests = subgroup_analysis(values, meta, {"site": "site"}, correction="fdr_bh")
    site = pd.concat([meta["site"], pd.Series([None])], ignore_index=True).to_numpy()
    average = np.nanmean(x, axis=1)
    for j, model in enumerate(["a", "b", "average"]):
        column = average if model == "average" else x[:, j]
        samples = [column[(site == s) & np.isfinite(column)] for s in ("Y", "Z")]
        mine = groups[groups["model"] == model].set_index("group")
        assert bool(mine.loc["X", "skipped"]) and "min_size" in mine.loc["X", "reason"]
        assert mine.loc["X", "n"] == np.isfinite(column[site == "X"]).sum()
        assert bool(mine.loc["(unassigned)", "skipped"]) and mine.loc["(unassigned)", "n"] == 1
        assert mine.loc["Y", "mean"] == pytest.approx(samples[0].mean(), abs=TOL)
        assert mine.loc["Z", "median"] == pytest.approx(np.median(samples[1]), abs=TOL)
        t = tests[tests["model"] == model].set_index("test")
        kw = stats.kruskal(*samples)
        assert t.loc["kruskal", "p"] == pytest.approx(kw.pvalue, abs=TOL)
        mw = stats.mannwhitneyu(samples[0], samples[1], alternative="two-sided")
        assert t.loc["mannwhitneyu", "statistic"] == pytest.approx(mw.statistic, abs=TOL)
        assert t.loc["mannwhitneyu", "p"] == pytest.approx(mw.pvalue, abs=TOL)
        assert (t.loc["mannwhitneyu", "group_a"], t.loc["mannwhitneyu", "group_b"]) == ("Y", "Z")


def test_subgroups_bins_queries_and_correction(cohort) -> None:
    values, meta, x = cohort
    specs = dict(
        parse_group_spec(s)
        for s in ["age:0,40,60,120", "age:decades", 'older: sex == "f" and age >= 60']
    )
    groups, tests = subgroup_analysis(values, meta, specs, family="model")
    b = groups[(groups["model"] == "b") & (groups["grouping"] == "age:0,40,60,120")]
    assert b["group"].tolist() == ["[0, 40)", "[40, 60)", "[60, 120)", "(unassigned)"]
    age = np.linspace(18, 95, 90)
    decades = groups[(groups["model"] == "b") & (groups["grouping"] == "age:decades")]
    assert decades["group"].iloc[0] == "[10, 20)" and decades["group"].iloc[-2] == "[90, 100)"
    assert decades["n"].iloc[:-1].sum() == 89  # every case with metadata in one decade
    samples = [
        x[(age >= lo) & (age < hi) & (np.arange(90) < 89), 1]
        for lo, hi in ((0, 40), (40, 60), (60, 120))
    ]
    t = tests[(tests["model"] == "b") & (tests["grouping"] == "age:0,40,60,120")]
    mw = t[t["test"] == "mannwhitneyu"]
    pvals = [
        stats.mannwhitneyu(samples[i], samples[k], alternative="two-sided").pvalue
        for i, k in ((0, 1), (0, 2), (1, 2))
    ]
    reject, adjusted, _, _ = multipletests(pvals, alpha=0.05, method="bonferroni")
    np.testing.assert_allclose(mw["p"], pvals, rtol=0, atol=TOL)
    np.testing.assert_allclose(mw["p_adj"], adjusted, rtol=0, atol=TOL)
    assert mw["significant"].tolist() == reject.tolist()
    older = groups[(groups["grouping"] == "older") & (groups["model"] == "b")]
    expected = ((meta["sex"] == "f") & (meta["age"] >= 60)).sum()
    assert older.set_index("group").loc["older", "n"] == expected
    assert older.set_index("group").loc["(no metadata)", "n"] == 1
    assert tests[tests["grouping"] == "older"].empty  # one group: nothing to compare


def test_subgroups_identical_values_give_p_one() -> None:
    values = tidy(np.full((30, 1), 0.5), ["m"])
    meta = pd.DataFrame({"case_id": [f"c{i:04d}" for i in range(30)], "sex": ["f", "m"] * 15})
    _, tests = subgroup_analysis(values, meta, {"sex": "sex"})
    assert tests["p"].tolist() == [1.0, 1.0, 1.0, 1.0]  # kruskal + MWU for m and average


def test_subgroups_input_errors(cohort) -> None:
    values, meta, _ = cohort
    with pytest.raises(InputError):
        subgroup_analysis(values, meta, {"x": "nope"})
    with pytest.raises(InputError):
        subgroup_analysis(values, meta, {"q": {"q": "nope >"}})
    with pytest.raises(InputError):
        subgroup_analysis(values, meta, {"s": "sex:decades"})  # non-numeric bins
    with pytest.raises(InputError):
        subgroup_analysis(values, pd.concat([meta, meta.iloc[:1]]), {"sex": "sex"})
    with pytest.raises(InputError):
        subgroup_analysis(values, meta, {"sex": "sex"}, correction="holm")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_batched_intervals_equal_per_column_intervals(method: str) -> None:
    """intervals() gives every column exactly what the 1-D _interval gives (and its notes)."""
    from assay.stats._bootstrap import _interval, intervals

    rng = np.random.default_rng(4)
    x = rng.random((25, 5))
    x[:, 1] = 0.5  # degenerate
    x[3:, 2] = np.nan  # resamples without any case
    boot = paired_bootstrap_means(x, n_resamples=400, seed=1)
    low, high, notes = intervals(x, boot, 0.9, method)  # type: ignore[arg-type]
    for j in range(x.shape[1]):
        lo, hi, note = _interval(x[:, j], boot[:, j], 0.9, method)  # type: ignore[arg-type]
        assert np.array_equal([lo, hi], [low[j], high[j]], equal_nan=True)
        assert note == notes[j]


# ------------------------------------------ compiled rank sums, shared resampling (issue 10)


@pytest.mark.parametrize("kind", ["continuous", "ties", "signed_zeros", "constant", "small"])
def test_mann_whitney_equals_scipy_bit_for_bit(kind: str) -> None:
    """U and p of every pair equal scipy.stats.mannwhitneyu (two-sided, method auto) exactly:
    normal approximation with tie term from merged sorted samples; small samples via SciPy."""
    from assay.stats._subgroups import _mann_whitney

    rng = np.random.default_rng(len(kind))
    sizes = (5, 3, 8) if kind == "small" else (40, 9, 120, 13)

    def sample(n: int) -> np.ndarray:
        if kind == "ties":
            return rng.integers(0, 5, size=(n, 3)) / 4.0
        if kind == "signed_zeros":
            return np.where(rng.random((n, 3)) < 0.5, 0.0, -0.0) + (rng.random((n, 3)) < 0.2)
        if kind == "constant":
            return np.full((n, 3), 0.75)
        return rng.random((n, 3))

    samples = [sample(n) for n in sizes]
    pairs = list(itertools.combinations(range(len(samples)), 2))
    u, p = _mann_whitney(samples, pairs)
    for row, (a, b) in enumerate(pairs):
        ref = stats.mannwhitneyu(samples[a], samples[b], alternative="two-sided")
        assert np.array_equal(u[row], ref.statistic) and np.array_equal(p[row], ref.pvalue)


@pytest.mark.parametrize("kind", ["continuous", "ties", "signed_zeros"])
def test_kruskal_equals_scipy_bit_for_bit(kind: str) -> None:
    """H and p from the pairs' U and the pooled tie term equal scipy.stats.kruskal exactly."""
    from assay.stats._subgroups import _kruskal, _mann_whitney

    rng = np.random.default_rng(3 + len(kind))
    for sizes in ((30, 12, 55), (4, 9), (1, 20, 3, 17)):
        if kind == "ties":
            samples = [rng.integers(0, 4, size=(n, 4)) / 4.0 for n in sizes]
        elif kind == "signed_zeros":
            samples = [np.where(rng.random((n, 4)) < 0.5, 0.0, -0.0) + (rng.random((n, 4)) < 0.3)
                       for n in sizes]  # fmt: skip
        else:
            samples = [rng.random((n, 4)) for n in sizes]
        if (np.ptp(np.concatenate(samples), axis=0) == 0).any():
            continue  # constant columns never reach _kruskal (p = 1 with a note)
        pairs = list(itertools.combinations(range(len(sizes)), 2))
        h, p = _kruskal(samples, pairs, _mann_whitney(samples, pairs)[0])
        ref = stats.kruskal(*samples, axis=0)
        assert np.array_equal(h, ref.statistic) and np.array_equal(p, ref.pvalue)


def test_group_summary_means_and_medians_are_the_1d_ones() -> None:
    """Vectorised means/medians of complete columns equal np.mean/np.median of each column."""
    from assay.stats._subgroups import _Group, _group_summary

    rng = np.random.default_rng(8)
    block = rng.random((301, 6)) * 37.0
    block[:, 2] = np.round(block[:, 2])
    block[rng.random(301) < 0.2, 4] = np.nan
    n, mean, median, *_ = _group_summary(block, None, _Group("g", frozenset(), False), 5,
                                         0.95, "percentile")  # fmt: skip
    for j in range(block.shape[1]):
        col = block[np.isfinite(block[:, j]), j]
        assert n[j] == col.size and mean[j] == col.mean() and median[j] == np.median(col)


def test_analyze_shares_one_resampling_with_the_standalone_functions() -> None:
    """analyze() resamples once for CIs and rank stability (no hidden cache): the result equals
    bootstrap_ci and rank_bootstrap called on their own, exactly."""
    from assay.stats import analyze, case_averages
    from assay.stats._stability import rank_bootstrap

    rng = np.random.default_rng(6)
    x = rng.beta(5, 2, size=(60, 4))
    scores = tidy(x, ["a", "b", "c", "d"]).assign(status="ok")
    result = analyze(scores, n_bootstrap=300, seed=2)
    values = scores.drop(columns="status")
    with_avg = pd.concat([values, case_averages(values)], ignore_index=True)
    ci = bootstrap_ci(with_avg, n_resamples=300, seed=2)
    merged = result.aggregates.merge(ci, on=["dataset", "model", "structure", "metric"])
    assert len(merged) == 8
    assert (merged["ci_low_x"] == merged["ci_low_y"]).all()
    assert (merged["ci_high_x"] == merged["ci_high_y"]).all()
    stability, _tau, counts, samples = rank_bootstrap(with_avg, n_resamples=300, seed=2)
    pd.testing.assert_frame_equal(result.stability, stability)
    pd.testing.assert_frame_equal(result.rank_counts, counts)
    pd.testing.assert_frame_equal(result.tau_samples, samples)


# ------------------------------------------- regression against the pre-issue-10 implementation
#
# tests/snapshots/stats_before_issue10.json.gz holds the outputs of the implementation before
# issue 10 (per-pair permutation products, per-resample bincount weights, per-column
# intervals) on the seeded inputs below; it was written by running this module as a script
# against that implementation (``python tests/test_stats_resampling.py OUT``). The faster code
# must reproduce it: point estimates exactly, CIs and p-values within 1e-12, counts exactly.

SNAPSHOT = Path(__file__).parent / "snapshots" / "stats_before_issue10.json.gz"
SNAPSHOT_GROUPS = {
    "sex": "sex",
    "age": "age:decades",
    "site": "site",
    "older_women": {"older_women": 'sex == "F" and age >= 60'},
}
#: Point estimates that must be bit-identical (everything else numeric: within TOL).
EXACT_COLUMNS = {"mean", "median", "mean_difference", "median_difference", "n", "n_paired"}


def snapshot_inputs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded scores and metadata: continuous values with gaps (dataset a, dsc and hd95), and
    discrete values with ties and a duplicated model (dataset b, one 11-case structure)."""
    rng = np.random.default_rng(20261201)
    frames = []
    cases = [f"a{i:03d}" for i in range(150)]
    not_applicable = rng.random((150, 3)) < 0.1
    for m in range(6):
        missing = rng.random(150) < (0.1 if m == 3 else 0.0)
        for metric in ("dsc", "hd95"):
            v = rng.beta(6 + m, 1.5, size=(150, 3))
            if metric == "hd95":
                v = 20 * (1 - v)
            v[not_applicable | missing[:, None]] = np.nan
            for s, structure in enumerate(("liver", "spleen", "kidney")):
                frames.append(
                    pd.DataFrame(
                        {"dataset": "a", "model": f"m{m}", "case_id": cases,
                         "structure": structure, "metric": metric, "value": v[:, s]}
                    )
                )  # fmt: skip
    cases = [f"b{i:03d}" for i in range(60)]
    base = rng.integers(5, 9, size=60) / 8.0
    for metric in ("dsc", "nsd"):
        for structure in ("liver", "tiny"):
            for m in range(5):
                step = rng.integers(-1, 2, size=60) / 8.0
                v = base.copy() if m in (0, 4) else np.clip(base + step, 0, 1)
                if structure == "tiny":
                    v[11:] = np.nan  # 11 cases: exact enumeration
                frames.append(
                    pd.DataFrame(
                        {"dataset": "b", "model": f"m{m}", "case_id": cases,
                         "structure": structure, "metric": metric, "value": v}
                    )
                )  # fmt: skip
    scores = pd.concat(frames, ignore_index=True)
    scores = scores[scores["value"].notna()].reset_index(drop=True)
    ids = [f"a{i:03d}" for i in range(150)] + [f"b{i:03d}" for i in range(60)]
    meta = pd.DataFrame(
        {
            "case_id": ids,
            "sex": rng.choice(["F", "M"], len(ids)),
            "age": rng.integers(18, 90, len(ids)),
            "site": rng.choice(["s1", "s2", "s3"], len(ids)),
        }
    )
    return scores, meta.iloc[:-7]  # a few cases without metadata


def snapshot_outputs(scores: pd.DataFrame, meta: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Bootstrap CIs, the three rules' pairwise tests, rank stability and subgroups."""
    from assay.stats import case_averages, pairwise_tests
    from assay.stats._stability import rank_bootstrap

    with_avg = pd.concat([scores, case_averages(scores)], ignore_index=True)
    out = {}
    for method in ("percentile", "bca"):
        out[f"ci_{method}"] = bootstrap_ci(with_avg, n_resamples=300, seed=3, method=method)
    for rule, n_perm in (("mean", 1000), ("median", 500), ("touchstone", 10_000)):
        out[f"pairwise_{rule}"] = pairwise_tests(with_avg, rule=rule, n_permutations=n_perm, seed=5)
    per_model, per_slice, counts, taus = rank_bootstrap(with_avg, n_resamples=300, seed=3)
    out.update(stability=per_model, stability_tau=per_slice, rank_counts=counts)
    out["tau_samples"] = taus[taus["resample"] < 60].reset_index(drop=True)
    for method in ("percentile", "bca"):
        groups, tests = subgroup_analysis(
            scores, meta, SNAPSHOT_GROUPS, min_size=5, n_bootstrap=200, seed=2, ci_method=method
        )
        out[f"subgroups_{method}"] = groups
        out["subgroup_tests"] = tests  # the CI method changes no test
    return out


def test_outputs_match_pre_issue10_snapshot() -> None:
    with gzip.open(SNAPSHOT, "rt") as fh:
        before = json.load(fh)
    after = snapshot_outputs(*snapshot_inputs())
    assert sorted(after) == sorted(before)
    for name, frame in after.items():
        ref = pd.DataFrame(**before[name])
        assert list(frame.columns) == list(ref.columns), name
        assert len(frame) == len(ref), name
        for col in frame.columns:
            got, want = frame[col].to_numpy(), ref[col].to_numpy()
            if frame[col].dtype.kind in "fiu" and frame[col].dtype != bool:
                got, want = got.astype(np.float64), want.astype(np.float64)
                assert np.array_equal(np.isnan(got), np.isnan(want)), (name, col)
                ok = ~np.isnan(got)
                if col in EXACT_COLUMNS:
                    assert np.array_equal(got[ok], want[ok]), (name, col)
                else:
                    np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=TOL, err_msg=name)
            else:
                assert got.tolist() == want.tolist(), (name, col)


if __name__ == "__main__":  # write the snapshot (only ever with the pre-issue-10 code)
    import sys

    result = snapshot_outputs(*snapshot_inputs())
    with gzip.open(sys.argv[1], "wt") as fh:
        json.dump({k: v.to_dict(orient="split") for k, v in result.items()}, fh)
