"""Tests of the core statistics: policies, aggregates, paired tests, winners and rankings.

Every expected number is computed independently in the test (numpy/pandas/scipy/statsmodels
on the raw table, never with the functions under test) or read off a tiny hand-made table,
with the closed form cited next to it.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from assay.errors import AssayError, InputError
from assay.stats._aggregate import aggregate, case_averages
from assay.stats._paired import LOWER_IS_BETTER, pairwise_wilcoxon, winners
from assay.stats._policy import apply_policy
from assay.stats._ranking import consensus_ranking, rankings

TOUCHSTONE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "touchstone_totalsegmentator"
).resolve()
STRUCTURES = [
    "aorta",
    "gall_bladder",
    "kidney_left",
    "kidney_right",
    "liver",
    "pancreas",
    "postcava",
    "spleen",
    "stomach",
]


def _row(model, case, structure, value, status="ok", metric="dsc", dataset="D"):
    return {
        "dataset": dataset,
        "model": model,
        "case_id": case,
        "structure": structure,
        "metric": metric,
        "value": value,
        "status": status,
    }


@pytest.fixture
def small_scores() -> pd.DataFrame:
    """Hand-made table: explicit and implicit missing rows, failures, not-applicable rows."""
    nan = np.nan
    rows = [
        # liver: A misses c2 and fails on c3; B has an empty prediction on c2; C has only c1.
        _row("A", "c1", "liver", 0.9),
        _row("A", "c2", "liver", nan, "missing_prediction"),
        _row("A", "c3", "liver", nan, "failed"),
        _row("B", "c1", "liver", 0.8),
        _row("B", "c2", "liver", 0.0, "empty_prediction"),
        _row("B", "c3", "liver", 0.7),
        _row("C", "c1", "liver", 0.6),
        # spleen: absent from the reference of c2; C has no spleen rows at all.
        _row("A", "c1", "spleen", 0.5),
        _row("A", "c2", "spleen", nan, "both_empty"),
        _row("B", "c1", "spleen", 0.4),
        _row("B", "c2", "spleen", 0.0, "empty_reference"),
    ]
    return pd.DataFrame(rows)


def _lookup(frame: pd.DataFrame, **key) -> pd.Series:
    sel = np.logical_and.reduce([frame[k] == v for k, v in key.items()])
    sub = frame.loc[sel]
    assert len(sub) == 1, key
    return sub.iloc[0]


# --------------------------------------------------------------------------------- policies


def test_worst_policy_values_and_counts(small_scores):
    before = small_scores.copy()
    values, changes = apply_policy(small_scores, policy="worst")
    pd.testing.assert_frame_equal(small_scores, before)  # input not mutated

    # Hand-made expectations: missing/failed/implicit -> Dice 0; not applicable never enters.
    got = {(r.model, r.case_id, r.structure): r.value for r in values.itertuples(index=False)}
    expected = {
        ("A", "c1", "liver"): 0.9,
        ("A", "c2", "liver"): 0.0,
        ("A", "c3", "liver"): 0.0,
        ("B", "c1", "liver"): 0.8,
        ("B", "c2", "liver"): 0.0,
        ("B", "c3", "liver"): 0.7,
        ("C", "c1", "liver"): 0.6,
        ("C", "c2", "liver"): 0.0,  # implicit missing row
        ("C", "c3", "liver"): 0.0,  # implicit missing row
        ("A", "c1", "spleen"): 0.5,
        ("B", "c1", "spleen"): 0.4,
        ("C", "c1", "spleen"): 0.0,  # implicit; c2 spleen is not applicable (empty reference)
    }
    assert got == expected
    assert not values["value"].isna().any()
    assert _lookup(values, model="C", case_id="c2", structure="liver")["imputed"]
    assert not _lookup(values, model="B", case_id="c2", structure="liver")["imputed"]

    a = _lookup(changes, model="A", structure="liver")
    assert (a.n_values, a.n_missing, a.n_failed, a.n_not_applicable) == (3, 1, 1, 0)
    assert (a.n_set_worst, a.n_dropped, a.n_implicit_missing) == (2, 0, 0)
    c = _lookup(changes, model="C", structure="liver")
    assert (c.n_values, c.n_missing, c.n_implicit_missing, c.n_set_worst) == (3, 2, 2, 2)
    cs = _lookup(changes, model="C", structure="spleen")
    assert (cs.n_values, cs.n_missing, cs.n_not_applicable, cs.n_set_worst) == (1, 1, 1, 1)
    b = _lookup(changes, model="B", structure="spleen")
    assert (b.n_values, b.n_not_applicable, b.n_set_worst, b.n_dropped) == (1, 1, 0, 0)
    assert len(changes) == 6


@pytest.mark.parametrize("policy", ["exclude", "paper"])
def test_exclude_and_paper_drop_missing(small_scores, policy):
    values, changes = apply_policy(small_scores, policy=policy)
    liver_a = values.loc[(values.model == "A") & (values.structure == "liver")]
    assert liver_a["case_id"].tolist() == ["c1"]
    assert values.loc[values.model == "C", "case_id"].tolist() == ["c1"]
    a = _lookup(changes, model="A", structure="liver")
    assert (a.n_values, a.n_set_worst, a.n_dropped) == (1, 0, 2)
    c = _lookup(changes, model="C", structure="spleen")
    assert (c.n_values, c.n_dropped, c.n_not_applicable) == (0, 1, 1)
    # B's empty prediction keeps its value (0), it is not a missing prediction.
    assert _lookup(values, model="B", case_id="c2", structure="liver")["value"] == 0.0
    assert not values["imputed"].any()


def test_paper_equals_exclude(small_scores):
    ve, ce = apply_policy(small_scores, policy="exclude")
    vp, cp = apply_policy(small_scores, policy="paper")
    pd.testing.assert_frame_equal(ve, vp)
    pd.testing.assert_frame_equal(ce, cp)


def test_changes_balance(small_scores):
    # Every completed (case) row is either a value, dropped, or not applicable.
    for policy in ("worst", "exclude"):
        _, ch = apply_policy(small_scores, policy=policy)
        total = ch.n_values + ch.n_dropped + ch.n_not_applicable
        # completed table: 3 models x (3 liver cases + 2 spleen cases)
        assert total.groupby(ch.structure).sum().to_dict() == {"liver": 9, "spleen": 6}
        assert (ch.n_set_worst + ch.n_dropped == ch.n_missing + ch.n_failed).all()


def test_worst_needs_value_for_distances():
    scores = pd.DataFrame(
        [
            _row("A", "c1", "liver", 3.0, metric="hd95"),
            _row("B", "c1", "liver", np.nan, "failed", metric="hd95"),
        ]
    )
    with pytest.raises(InputError):
        apply_policy(scores, policy="worst")
    with pytest.raises(AssayError):  # the project base error catches it too
        apply_policy(scores, policy="worst")
    values, changes = apply_policy(scores, policy="worst", worst_values={"hd95": 250.0})
    assert _lookup(values, model="B")["value"] == 250.0
    assert _lookup(changes, model="B").n_set_worst == 1
    # exclude needs no worst value
    values, _ = apply_policy(scores, policy="exclude")
    assert values["model"].tolist() == ["A"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda df: df.assign(status="weird"),
        lambda df: df.drop(columns="status"),
        lambda df: pd.concat([df, df.iloc[:1]]),
        lambda df: df.assign(value=np.nan),  # ok rows without a value
    ],
)
def test_policy_rejects_bad_input(small_scores, mutate):
    with pytest.raises(InputError):
        apply_policy(mutate(small_scores))


def test_unknown_policy(small_scores):
    with pytest.raises(InputError):
        apply_policy(small_scores, policy="optimistic")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- aggregates


def _random_values(seed: int, n_cases: int = 20, metric: str = "dsc") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for model, structure in itertools.product(["A", "B", "C"], ["liver", "spleen", "aorta"]):
        loc = {"A": 0.85, "B": 0.8, "C": 0.83}[model]
        # continuous values (no ties): scipy's exact Wilcoxon distribution applies, and no
        # slow permutation test is triggered (scipy uses one for ties with n <= 13)
        vals = rng.normal(loc, 0.04, n_cases)
        for i, v in enumerate(vals):
            rows.append(_row(model, f"s{i:03d}", structure, float(v), metric=metric))
    df = pd.DataFrame(rows)
    # structure absent for some cases (all models), and model C lacks some cases
    drop = ((df.structure == "aorta") & df.case_id.isin(["s000", "s001", "s002"])) | (
        (df.model == "C") & df.case_id.isin(["s005", "s006"])
    )
    return df.loc[~drop].reset_index(drop=True)


def test_aggregate_per_structure_matches_numpy():
    vals = _random_values(0)
    agg = aggregate(vals)
    per = agg.loc[agg.structure != "average"]
    assert len(per) == 9
    for r in per.itertuples(index=False):
        x = vals.loc[(vals.model == r.model) & (vals.structure == r.structure), "value"].to_numpy()
        assert r.n == len(x)
        assert r.mean == pytest.approx(np.mean(x), rel=1e-12)
        assert r.sd == pytest.approx(np.std(x, ddof=1), rel=1e-12)
        assert r.median == pytest.approx(np.median(x), rel=1e-12)
        assert r.q1 == pytest.approx(np.percentile(x, 25), rel=1e-12)
        assert r.q3 == pytest.approx(np.percentile(x, 75), rel=1e-12)


def test_aggregate_average_conventions():
    vals = _random_values(1)
    ts = aggregate(vals, convention="touchstone").set_index(["model", "structure"])
    de = aggregate(vals, convention="default").set_index(["model", "structure"])
    for model in ["A", "B", "C"]:
        sub = vals.loc[vals.model == model]
        means = [sub.loc[sub.structure == s, "value"].mean() for s in ["aorta", "liver", "spleen"]]
        sds = [sub.loc[sub.structure == s, "value"].std() for s in ["aorta", "liver", "spleen"]]
        # Touchstone README: mean of the structure means, ± mean of the structure SDs.
        assert ts.loc[(model, "average"), "mean"] == pytest.approx(np.mean(means), rel=1e-12)
        assert ts.loc[(model, "average"), "sd"] == pytest.approx(np.mean(sds), rel=1e-12)
        assert np.isnan(ts.loc[(model, "average"), "median"])
        # default: statistics of each case's mean over the structures it has
        per_case = {}
        for r in sub.itertuples(index=False):
            per_case.setdefault(r.case_id, []).append(r.value)
        x = np.array([np.mean(v) for v in per_case.values()])
        row = de.loc[(model, "average")]
        assert row["n"] == len(x) == ts.loc[(model, "average"), "n"]
        assert row["mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert row["median"] == pytest.approx(np.median(x), rel=1e-12)
        assert row["q3"] == pytest.approx(np.percentile(x, 75), rel=1e-12)
    # a case without aorta still counts in the default average (averaged over 2 structures)
    assert de.loc[("A", "average"), "n"] == 20


def test_aggregate_single_case_and_errors():
    vals = pd.DataFrame([_row("A", "c1", "liver", 0.7)])
    agg = aggregate(vals)
    liver = _lookup(agg, structure="liver")
    assert (liver.n, liver["mean"], liver["median"], liver.q1) == (1, 0.7, 0.7, 0.7)
    assert np.isnan(liver.sd)  # sample SD undefined for n = 1
    assert np.isnan(_lookup(aggregate(vals, convention="touchstone"), structure="average").sd)
    with pytest.raises(InputError):
        aggregate(vals, convention="median")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        aggregate(vals.assign(value=np.nan))  # no silent dropna
    with pytest.raises(InputError):
        aggregate(vals.assign(structure="average"))


# ------------------------------------------------------------------------ paired tests


def _reference_pairwise(vals: pd.DataFrame, alternative_for) -> pd.DataFrame:
    """Straightforward loop: scipy.stats.wilcoxon on common cases + statsmodels Holm."""
    out = []
    for (ds, st, me), fam in vals.groupby(["dataset", "structure", "metric"]):
        series = {m: g.set_index("case_id")["value"] for m, g in fam.groupby("model")}
        rows = []
        for a, b in itertools.permutations(sorted(series), 2):
            common = sorted(set(series[a].index) & set(series[b].index))
            x = series[a].loc[common].to_numpy(float)
            y = series[b].loc[common].to_numpy(float)
            if len(common) == 0 or np.all(x == y):
                p = 1.0
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p = stats.wilcoxon(x, y, alternative=alternative_for(me)).pvalue
            rows.append([ds, st, me, a, b, len(common), np.median(x - y) if common else np.nan, p])
        holm = multipletests([r[-1] for r in rows], method="holm")[1]
        out += [[*r, h] for r, h in zip(rows, holm, strict=True)]
    cols = ["dataset", "structure", "metric", "model_a", "model_b", "n", "med", "p", "p_holm"]
    return pd.DataFrame(out, columns=cols)


def test_pairwise_matches_scipy_statsmodels_loop():
    dsc = _random_values(2, n_cases=15)
    hd = _random_values(3, n_cases=15, metric="hd95").assign(value=lambda d: 10 * d.value)
    vals = pd.concat([dsc, hd], ignore_index=True)
    got = pairwise_wilcoxon(vals)
    ref = _reference_pairwise(vals, lambda m: "less" if m in LOWER_IS_BETTER else "greater")
    key = ["dataset", "structure", "metric", "model_a", "model_b"]
    m = got.merge(ref, on=key, validate="one_to_one")
    assert len(m) == len(got) == len(ref) == 2 * 3 * 6
    assert (m.n_paired == m.n).all()
    np.testing.assert_allclose(m.median_difference, m.med, rtol=1e-12)
    np.testing.assert_allclose(m.p_value, m.p, rtol=1e-12)
    np.testing.assert_allclose(m.p_holm_x, m.p_holm_y, rtol=1e-12)
    assert (m.significant == (m.p_holm_y < 0.05)).all()
    assert (got.higher_is_better == (got.metric == "dsc")).all()
    # common cases: C lacks s005, s006
    assert _lookup(got, structure="liver", metric="dsc", model_a="A", model_b="C").n_paired == 13


def test_all_zero_differences_give_p_one():
    rows = [_row(m, f"c{i}", "liver", v) for m in ("A", "B") for i, v in enumerate([0.5, 0.7])]
    got = pairwise_wilcoxon(pd.DataFrame(rows))
    assert got.p_value.tolist() == [1.0, 1.0]
    assert got.p_holm.tolist() == [1.0, 1.0]
    assert got.median_difference.tolist() == [0.0, 0.0]
    assert not got.significant.any()


def test_single_case_and_disjoint_models():
    rows = [
        _row("A", "c1", "liver", 0.9),
        _row("B", "c1", "liver", 0.8),
        _row("C", "c2", "liver", 0.7),  # no case in common with A or B
    ]
    got = pairwise_wilcoxon(pd.DataFrame(rows))  # warnings are errors: none may escape
    ab = _lookup(got, model_a="A", model_b="B")
    # n = 1, d > 0: exact null distribution of W+ is {0, 1} with probability 1/2 each,
    # so P(W+ >= 1) = 0.5 (Wilcoxon 1945 exact distribution).
    assert ab.n_paired == 1
    assert ab.p_value == pytest.approx(0.5, abs=1e-12)
    assert _lookup(got, model_a="B", model_b="A").p_value == pytest.approx(1.0, abs=1e-12)
    ac = _lookup(got, model_a="A", model_b="C")
    assert ac.n_paired == 0 and ac.p_value == 1.0 and np.isnan(ac.median_difference)


def test_pairwise_direction_override():
    vals = _random_values(4, n_cases=12)
    normal = pairwise_wilcoxon(vals)
    flipped = pairwise_wilcoxon(vals, higher_is_better=False)
    ref = _reference_pairwise(vals, lambda m: "less")
    np.testing.assert_allclose(flipped.p_value, ref.p, rtol=1e-12)
    assert not flipped.higher_is_better.any() and normal.higher_is_better.all()


# ------------------------------------------------------------------------------- winners


def _agg(structure, metric, means):
    return pd.DataFrame(
        {
            "dataset": "D",
            "model": list(means),
            "structure": structure,
            "metric": metric,
            "mean": list(means.values()),
        }
    )


def _pw(structure, metric, p_holm):
    return pd.DataFrame(
        [
            {
                "dataset": "D",
                "structure": structure,
                "metric": metric,
                "model_a": a,
                "model_b": b,
                "p_holm": p,
            }
            for (a, b), p in p_holm.items()
        ]
    )


def test_winners_best_and_not_significantly_worse():
    aggs = pd.concat(
        [
            _agg("liver", "dsc", {"A": 0.9, "B": 0.8, "C": 0.85}),
            _agg("liver", "hd95", {"A": 5.0, "B": 3.0, "C": 4.0}),
            _agg("average", "dsc", {"A": 0.9, "B": 0.8, "C": 0.85}),
        ],
        ignore_index=True,
    )
    pw = pd.concat(
        [
            # A is best; A beats B significantly, not C.
            _pw("liver", "dsc", {("A", "B"): 0.01, ("A", "C"): 0.2, ("C", "B"): 0.03}),
            # lower is better: B is best (3.0); B beats A, not C.
            _pw("liver", "hd95", {("B", "A"): 0.001, ("B", "C"): 0.07}),
        ],
        ignore_index=True,
    )
    got = winners(aggs, pw, alpha=0.05).set_index(["structure", "metric", "model"]).sort_index()
    assert got.loc[("liver", "dsc"), "winner"].to_dict() == {"A": True, "B": False, "C": True}
    assert got.loc[("liver", "dsc"), "best"].to_dict() == {"A": True, "B": False, "C": False}
    assert got.loc[("liver", "hd95"), "winner"].to_dict() == {"A": False, "B": True, "C": True}
    assert got.loc[("liver", "hd95"), "best"].to_dict() == {"A": False, "B": True, "C": False}
    # no tests for the average row: winner is unknown, not claimed
    assert got.loc[("average", "dsc"), "winner"].isna().all()
    # at alpha = 0.005 only B -> A on hd95 stays significant
    strict = winners(aggs, pw, alpha=0.005).set_index(["structure", "metric", "model"]).sort_index()
    assert strict.loc[("liver", "dsc"), "winner"].all()


def test_winners_end_to_end_with_average_tests():
    vals = _random_values(5, n_cases=30)
    with_avg = pd.concat([vals, case_averages(vals)], ignore_index=True)
    agg = aggregate(vals)
    pw = pairwise_wilcoxon(with_avg)
    got = winners(agg, pw)
    assert got.winner.notna().all()
    for (st, _me), fam in got.groupby(["structure", "metric"]):
        best = fam.loc[fam["mean"].idxmax(), "model"]
        for r in fam.itertuples(index=False):
            p = (
                _lookup(pw, structure=st, model_a=best, model_b=r.model).p_holm
                if (r.model != best)
                else 1.0
            )
            assert r.winner == (r.model == best or p >= 0.05)


# ------------------------------------------------------------------------------- ranking


def test_rankings_ties_share_minimum_and_schemes():
    # Hand-made: means 0.9, 0.8, 0.8, 0.7 -> ranks 1, 2, 2, 4 (ties share the minimum).
    vals = pd.DataFrame(
        [
            _row("A", "c1", "liver", 0.9),
            _row("A", "c2", "liver", 0.9),
            _row("B", "c1", "liver", 0.8),
            _row("B", "c2", "liver", 0.8),
            _row("C", "c1", "liver", 0.7),
            _row("C", "c2", "liver", 0.9),
            _row("D", "c1", "liver", 0.7),  # D misses c2 -> worst rank there
        ]
    )
    agg = aggregate(vals)
    pw = pd.DataFrame(
        [
            {
                "dataset": "D",
                "structure": "liver",
                "metric": "dsc",
                "model_a": a,
                "model_b": b,
                "significant": s,
            }
            for a, b, s in [
                ("A", "B", True),
                ("A", "D", True),
                ("B", "D", True),
                ("C", "D", True),
                ("A", "C", False),
                ("B", "A", False),
            ]
        ]
    )
    r = rankings(vals, agg, pw).set_index(["structure", "model"]).loc["liver"]
    assert r.rank_by_mean.to_dict() == {"A": 1, "B": 2, "C": 2, "D": 4}
    # medians: A 0.9, B 0.8, C 0.8, D 0.7
    assert r.rank_by_median.to_dict() == {"A": 1, "B": 2, "C": 2, "D": 4}
    # within-case ranks: c1: A1 B2 C3 D3 ; c2: A1 C1 B3 D4 (missing = k_c + 1 = 4)
    assert r.mean_case_rank.to_dict() == {"A": 1.0, "B": 2.5, "C": 2.0, "D": 3.5}
    assert r.rank_by_case_rank.to_dict() == {"A": 1, "B": 3, "C": 2, "D": 4}
    # significant wins: A 2, B 1, C 1, D 0 -> ranks 1, 2, 2, 4
    assert r.n_significant_wins.to_dict() == {"A": 2, "B": 1, "C": 1, "D": 0}
    assert r.rank_by_tests.to_dict() == {"A": 1, "B": 2, "C": 2, "D": 4}
    # average row: ranked by mean; no per-case or test ranks unless those were provided
    avg = rankings(vals, agg, pw).set_index(["structure", "model"]).loc["average"]
    assert avg.rank_by_mean.to_dict() == r.rank_by_mean.to_dict()
    assert avg.rank_by_tests.isna().all() and avg.mean_case_rank.isna().all()


def test_rankings_lower_is_better_matches_scipy_rankdata():
    vals = _random_values(6).assign(metric="hd95")
    agg = aggregate(vals)
    r = rankings(vals, agg, pairwise_wilcoxon(vals))
    for (_st,), fam in r.groupby(["structure"]):
        expected = stats.rankdata(fam["mean"].to_numpy(), method="min")  # lower mean = rank 1
        np.testing.assert_array_equal(fam.rank_by_mean.to_numpy(), expected)


def test_consensus_ranking_mean_rank():
    r = pd.DataFrame(
        {
            "dataset": ["D1"] * 3 + ["D2"] * 3,
            "structure": "liver",
            "metric": "dsc",
            "model": ["A", "B", "C"] * 2,
            "rank_by_mean": [1, 2, 3, 3, 1, 2],
        }
    )
    got = consensus_ranking(r).set_index("model")
    assert got.mean_rank.to_dict() == {"A": 2.0, "B": 1.5, "C": 2.5}
    assert got.consensus_rank.to_dict() == {"A": 2, "B": 1, "C": 3}
    assert (got.n_datasets == 2).all()
    with pytest.raises(InputError):
        consensus_ranking(r, scheme="median")  # type: ignore[arg-type]


# -------------------------------------------------------------------- real Touchstone data


@pytest.mark.skipif(
    not (TOUCHSTONE / "results").is_dir(),
    reason=f"Touchstone reference data not found at {TOUCHSTONE} (shared data is not in the repo)",
)
def test_touchstone_paper_aggregates_and_holm():
    models = ["nnU-Net_MedNeXt", "nnU-Net_STU-Net_L", "_MedFormer"]
    wide = {m: pd.read_csv(TOUCHSTONE / "results" / m / "dsc.csv") for m in models}
    long = []
    for m, df in wide.items():
        melted = df.melt(id_vars="name", value_vars=STRUCTURES, var_name="structure")
        melted["status"] = np.where(melted["value"].isna(), "both_empty", "ok")
        long.append(melted.rename(columns={"name": "case_id"}).assign(model=m))
    scores = pd.concat(long, ignore_index=True).assign(dataset="totalsegmentator", metric="dsc")

    values, changes = apply_policy(scores, policy="paper")
    agg = aggregate(values, convention="touchstone").set_index(["model", "structure"])
    for m, df in wide.items():
        for s in STRUCTURES:
            # Touchstone README: mean ± sample SD over the cases that have a value.
            assert agg.loc[(m, s), "mean"] == pytest.approx(df[s].mean(), rel=1e-12)
            assert agg.loc[(m, s), "sd"] == pytest.approx(df[s].std(), rel=1e-12)
            assert agg.loc[(m, s), "n"] == df[s].notna().sum()
        means = [df[s].mean() for s in STRUCTURES]
        sds = [df[s].std() for s in STRUCTURES]
        assert agg.loc[(m, "average"), "mean"] == pytest.approx(np.mean(means), rel=1e-12)
        assert agg.loc[(m, "average"), "sd"] == pytest.approx(np.mean(sds), rel=1e-12)

    # STU-Net-L has 655 of 743 cases: paper drops its missing rows, worst sets them to 0.
    ref, stu = wide["nnU-Net_MedNeXt"], wide["nnU-Net_STU-Net_L"]
    n_absent = int((ref["liver"].notna() & ~ref["name"].isin(stu["name"])).sum())
    assert n_absent > 0
    ch = _lookup(changes, model="nnU-Net_STU-Net_L", structure="liver")
    assert (ch.n_dropped, ch.n_implicit_missing, ch.n_set_worst) == (n_absent, n_absent, 0)
    _, ch_worst = apply_policy(scores, policy="worst")
    assert _lookup(ch_worst, model="nnU-Net_STU-Net_L", structure="liver").n_set_worst == n_absent

    # Holm-adjusted one-sided Wilcoxon p-values vs a straightforward scipy + statsmodels loop.
    got = pairwise_wilcoxon(values)
    rows = []
    for s in STRUCTURES:
        fam = []
        for a, b in itertools.permutations(models, 2):
            j = wide[a][["name", s]].merge(wide[b][["name", s]], on="name").dropna()
            x, y = j[f"{s}_x"].to_numpy(), j[f"{s}_y"].to_numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = stats.wilcoxon(x, y, alternative="greater").pvalue
            fam.append((s, a, b, len(j), p))
        holm = multipletests([f[-1] for f in fam], method="holm")[1]
        rows += [(*f, h) for f, h in zip(fam, holm, strict=True)]
    ref_pw = pd.DataFrame(rows, columns=["structure", "model_a", "model_b", "n", "p", "holm"])
    m = got.merge(ref_pw, on=["structure", "model_a", "model_b"], validate="one_to_one")
    assert len(m) == len(ref_pw) == 9 * 6
    assert (m.n_paired == m.n).all()
    np.testing.assert_allclose(m.p_value, m.p, rtol=1e-10)
    np.testing.assert_allclose(m.p_holm, m.holm, rtol=1e-10)
    assert (m.significant == (m.holm < 0.05)).all()


def test_pairwise_with_ties_and_zeros_matches_scipy():
    # Small n with ties and zero differences (scipy: exact permutation distribution for
    # n <= 13) and larger n with zeros (normal approximation); warnings must not escape.
    a = [0.50, 0.60, 0.70, 0.70, 0.80, 0.90]
    b = [0.50, 0.55, 0.60, 0.60, 0.85, 0.80]
    rng = np.random.default_rng(7)
    big_a = rng.integers(0, 5, 60) / 4
    big_b = rng.integers(0, 5, 60) / 4
    rows = [_row("A", f"c{i}", "liver", v) for i, v in enumerate(a)]
    rows += [_row("B", f"c{i}", "liver", v) for i, v in enumerate(b)]
    rows += [_row("A", f"c{i}", "spleen", v) for i, v in enumerate(big_a)]
    rows += [_row("B", f"c{i}", "spleen", v) for i, v in enumerate(big_b)]
    vals = pd.DataFrame(rows)
    got = pairwise_wilcoxon(vals)
    ref = _reference_pairwise(vals, lambda m: "greater")
    np.testing.assert_allclose(got.p_value, ref.p, rtol=1e-12)
    np.testing.assert_allclose(got.p_holm, ref.p_holm, rtol=1e-12)


def test_sign_flip_p_equals_scipy_permutation_branch_bit_for_bit():
    """Where scipy.stats.wilcoxon (method auto) runs its exact permutation test (ties or
    zeros, n <= 13), assay's vectorised sign-flip p must be identical (==, not approx): 48
    random tied/zero-laden samples, both alternatives, n from 2 to 13 (a 3,000-sample run
    during development also matched exactly)."""
    from assay.stats._paired import _one_sided_p

    rng = np.random.default_rng(11)
    n_compared = 0
    for n in list(range(2, 14)) * 4:
        a, b = rng.integers(0, 5, n) / 4, rng.integers(0, 5, n) / 4
        if not np.any(a != b):
            continue
        for alternative in ("greater", "less"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = stats.wilcoxon(a, b, alternative=alternative, zero_method="wilcox").pvalue
            assert _one_sided_p(a, b, alternative) == float(ref), (a - b, alternative)
            n_compared += 1
    assert n_compared > 80
