"""Winner rules: the co-winner test matches the aggregate it decorates (issue 9 §1).

Oracles: ``scipy.stats.permutation_test`` (``permutation_type="samples"``: values swapped
within pairs, the same null as sign flips of the paired differences) with the same
statistic, and ``statsmodels`` ``multipletests(method="holm")``. Exact enumeration is
compared bit for bit; Monte-Carlo p-values within a stated binomial tolerance.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
from report_inputs import make_report_data
from scipy import stats
from statsmodels.stats.multitest import multipletests

from assay.errors import InputError
from assay.report import _tables
from assay.report._data import ReportData
from assay.report._format import number_format
from assay.report._leaderboard import leaderboard_markdown
from assay.report._site import write_site
from assay.stats import analyze, inversions, pairwise_tests, winners
from assay.stats._aggregate import aggregate


def _rows(values: dict[str, np.ndarray], structure: str = "liver", metric: str = "dsc"):
    return pd.DataFrame(
        [
            {
                "dataset": "D",
                "model": model,
                "case_id": f"c{i:03d}",
                "structure": structure,
                "metric": metric,
                "value": float(v),
                "status": "ok",
            }
            for model, x in values.items()
            for i, v in enumerate(x)
        ]
    )


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _median_diff(x, y, axis=-1):
    return np.median(x, axis=axis) - np.median(y, axis=axis)


def _scipy_p(a, b, statistic, alternative, n_resamples=10**6, rng=None):
    if np.all(a == b):
        return 1.0  # assay's rule: all differences zero -> p = 1
    return stats.permutation_test(
        (a, b), statistic, permutation_type="samples", alternative=alternative,
        n_resamples=n_resamples, vectorized=True, rng=rng,
    ).pvalue  # fmt: skip


# ------------------------------------------------------------------------- parity with scipy


@pytest.mark.parametrize("kind", ["dyadic_random", "tied", "with_zeros"])
@pytest.mark.parametrize("rule", ["mean", "median"])
def test_exact_p_equals_scipy_permutation_test(kind, rule):
    """Exact enumeration (2^n <= budget) gives scipy's exact p bit for bit, both directions.

    Values are dyadic rationals (k / 2^20 random, or eighths with ties, or with equal pairs):
    every sum is exact in float64, so both libraries see the same null distribution.
    """
    rng = np.random.default_rng({"dyadic_random": 1, "tied": 2, "with_zeros": 3}[kind])
    statistic = _mean_diff if rule == "mean" else _median_diff
    checked = 0
    for _ in range(30):
        n = int(rng.integers(2, 13))
        if kind == "dyadic_random":
            a = rng.integers(0, 2**20, n) / 2**20
            b = rng.integers(0, 2**20, n) / 2**20
        else:
            a = rng.integers(0, 9, n) / 8
            b = rng.integers(0, 9, n) / 8
            if kind == "with_zeros":
                b[: n // 2] = a[: n // 2]
        pw = pairwise_tests(_rows({"A": a, "B": b}), rule=rule).set_index(["model_a", "model_b"])
        assert pw["exact"].all()
        assert pw.loc[("A", "B"), "p_value"] == _scipy_p(a, b, statistic, "greater")
        assert pw.loc[("B", "A"), "p_value"] == _scipy_p(a, b, statistic, "less")
        checked += 1
    assert checked == 30


def test_exact_p_on_continuous_data_within_one_pattern_of_scipy():
    """On float data scipy's own observed statistic and its identity permutation can differ
    by rounding near 0 (it then misses one pattern): agreement within 2^-n, and exactly
    equal where the observed mean difference is not tiny."""
    rng = np.random.default_rng(4)
    equal = 0
    for _ in range(50):
        n = int(rng.integers(3, 13))
        a, b = rng.normal(0.8, 0.1, n), rng.normal(0.78, 0.1, n)
        got = pairwise_tests(_rows({"A": a, "B": b})).set_index(["model_a", "model_b"])
        ref = _scipy_p(a, b, _mean_diff, "greater")
        assert abs(got.loc[("A", "B"), "p_value"] - ref) <= 2.0**-n
        if abs(np.mean(a - b)) > 1e-3:
            assert got.loc[("A", "B"), "p_value"] == ref
            equal += 1
    assert equal > 40


@pytest.mark.parametrize("rule", ["mean", "median"])
def test_monte_carlo_p_agrees_with_scipy_within_binomial_error(rule):
    """n = 40 (2^40 patterns): Monte Carlo with B = 20,000 in both; |Δp| <= 4.5 SD of the
    difference of two independent binomial estimates + 2/B (the +1 correction)."""
    rng = np.random.default_rng(5)
    budget = 20_000
    statistic = _mean_diff if rule == "mean" else _median_diff
    for shift in (0.0, 0.01, 0.02):
        a = rng.normal(0.80 + shift, 0.05, 40)
        b = rng.normal(0.80, 0.05, 40)
        got = pairwise_tests(_rows({"A": a, "B": b}), rule=rule, n_permutations=budget, seed=3)
        p = float(got.set_index(["model_a", "model_b"]).loc[("A", "B"), "p_value"])
        assert not got["exact"].any()
        ref = _scipy_p(a, b, statistic, "greater", n_resamples=budget, rng=np.random.default_rng(9))
        sd = np.sqrt(2 * max(ref * (1 - ref), 1 / budget) / budget)
        assert abs(p - ref) <= 4.5 * sd + 2 / budget, (shift, p, ref)


def test_monte_carlo_is_seeded_and_family_independent():
    rng = np.random.default_rng(6)
    vals = _rows({m: rng.normal(0.8, 0.05, 30) for m in "ABC"})
    other = _rows({m: rng.normal(0.8, 0.05, 30) for m in "ABC"}, structure="spleen")
    p1 = pairwise_tests(vals, seed=1)["p_value"].to_numpy()
    assert np.array_equal(p1, pairwise_tests(vals, seed=1)["p_value"].to_numpy())
    assert not np.array_equal(p1, pairwise_tests(vals, seed=2)["p_value"].to_numpy())
    both = pairwise_tests(pd.concat([vals, other], ignore_index=True), seed=1)
    assert np.array_equal(both[both.structure == "liver"]["p_value"].to_numpy(), p1)


def test_holm_within_family_and_lower_is_better():
    """p_holm is statsmodels' Holm over the k(k-1) ordered pairs of one (structure, metric);
    for a distance the alternative flips (lower is better)."""
    rng = np.random.default_rng(7)
    dsc, hd = (0.9, 0.85, 0.8, 0.8), (3.0, 4.0, 5.0, 5.0)
    vals = pd.concat(
        [
            _rows({m: rng.normal(mu, 0.05, 11) for m, mu in zip("ABCD", dsc, strict=True)}),
            _rows(
                {m: rng.normal(mu, 1.0, 11) for m, mu in zip("ABCD", hd, strict=True)},
                metric="hd95",
            ),
        ],
        ignore_index=True,
    )
    pw = pairwise_tests(vals)
    for metric, fam in pw.groupby("metric"):
        ref = multipletests(fam["p_value"].to_numpy(), method="holm")[1]
        assert np.array_equal(fam["p_holm"].to_numpy(), ref)
        assert len(fam) == 12
        sub = vals[vals.metric == metric]
        for r in fam.itertuples():
            a = sub[sub.model == r.model_a].sort_values("case_id")["value"].to_numpy()
            b = sub[sub.model == r.model_b].sort_values("case_id")["value"].to_numpy()
            alt = "greater" if metric == "dsc" else "less"
            assert r.p_value == _scipy_p(a, b, _mean_diff, alt)
            assert r.mean_difference == pytest.approx(np.mean(a - b), abs=1e-15)
    assert pairwise_tests(_rows({"A": np.ones(5), "B": np.ones(5)}))["p_value"].eq(1.0).all()


def test_bad_rule_and_budget():
    vals = _rows({"A": np.ones(3), "B": np.zeros(3)})
    with pytest.raises(InputError, match="Unknown winner rule 'wilcoxon'"):
        pairwise_tests(vals, rule="wilcoxon")
    with pytest.raises(InputError, match="n_permutations"):
        pairwise_tests(vals, n_permutations=10)


# ------------------------------------------------------------ the rule agrees with the ranking


def _catastrophes() -> pd.DataFrame:
    """Closed-form construction (60 cases): B = 0.80 everywhere; A = 0.82 on 50 cases and 0.0
    on 10 (mean 0.683 < 0.80); C = 0.60 everywhere.

    Differences B − A: −0.02 × 50, +0.80 × 10. Wilcoxon: W+(B − A) = 10 · 55.5 = 555 of
    1830 (E = 915), so B is not better than A and A's 50 small wins make A "better" than B;
    the mean test: Σ(B − A) = 7.0 is reached only when the 10 large differences keep their
    sign (p ≈ 2^-10), so B is significantly better than A by its mean.
    """
    a = np.r_[np.full(50, 0.82), np.zeros(10)]
    return _rows({"A": a, "B": np.full(60, 0.80), "C": np.full(60, 0.60)})


def test_wilcoxon_rule_crowns_a_lower_mean_model_and_the_mean_rule_does_not():
    scores = _catastrophes()
    mean = analyze(scores, n_bootstrap=200)
    paper = analyze(scores, n_bootstrap=200, winner_rule="touchstone")
    for res in (mean, paper):
        liver = res.aggregates[res.aggregates.structure == "liver"].set_index("model")
        assert liver["rank"].to_dict() == {"B": 1.0, "A": 2.0, "C": 3.0}  # by mean
    won = {
        rule: set(r.aggregates[(r.aggregates.structure == "liver") & r.aggregates.winner].model)
        for rule, r in (("mean", mean), ("touchstone", paper))
    }
    assert won == {"mean": {"B"}, "touchstone": {"A", "B"}}
    # the Touchstone rule even finds A significantly better than B, ranked above it
    inv = paper.inversions[paper.inversions.structure == "liver"]
    assert inv[["model", "better_than"]].values.tolist() == [["A", "B"]]
    assert mean.inversions[mean.inversions.structure == "liver"].empty
    pw = mean.pairwise.set_index(["structure", "model_a", "model_b"])
    assert pw.loc[("liver", "B", "A"), "p_value"] < 2e-3
    assert mean.params["winner_rule"] == "mean"
    assert "sign-flip permutation test of the mean difference" in mean.params["winners"]
    assert "Wilcoxon" in paper.params["tests"]["test"]


def test_median_rule_ranks_by_median_and_tests_medians():
    rng = np.random.default_rng(8)
    scores = _rows({"A": rng.normal(0.9, 0.02, 30), "B": rng.normal(0.8, 0.02, 30)})
    res = analyze(scores, n_bootstrap=200, winner_rule="median")
    agg = res.aggregates[res.aggregates.structure == "liver"].set_index("model")
    assert agg.loc["A", "rank"] == 1 and bool(agg.loc["A", "winner"])
    assert not bool(agg.loc["B", "winner"])
    assert res.params["ranked_by"] == "median"
    assert (res.pairwise["test"].str.contains("difference of medians")).all()


def test_inversion_when_models_have_different_cases():
    """Under ``exclude`` a model is ranked on its own cases; on the common cases the other
    model is significantly better: a lower-ranked model significantly better than a
    higher-ranked one, marked ‡ in Markdown, HTML and the terminal text."""
    n = 40
    good = np.full(n, 0.60)
    good[:20] = 0.95  # A is excellent on the 20 easy cases ...
    a = good.copy()
    b = good + 0.01  # ... B is better on every case by 0.01
    scores = _rows({"A": a, "B": b, "C": np.full(n, 0.5)})
    hard = scores["model"].eq("A") & scores["case_id"].isin([f"c{i:03d}" for i in range(20, n)])
    scores.loc[hard, ["value", "status"]] = [np.nan, "missing_prediction"]  # A skips hard cases
    res = analyze(scores, policy="exclude", n_bootstrap=200)
    liver = res.aggregates[res.aggregates.structure == "liver"].set_index("model")
    assert liver.loc["A", "rank"] == 1 and liver.loc["B", "rank"] == 2  # 0.95 vs 0.785
    inv = res.inversions[res.inversions.structure == "liver"]
    assert inv[["model", "better_than", "rank", "rank_better_than"]].values.tolist() == [
        ["B", "A", 2.0, 1.0]
    ]
    assert any("contradict the ranking" in w for w in res.warnings)
    data = ReportData(title="t", analyses={"dsc": res}, scores=scores)
    text = leaderboard_markdown(data)
    section = text.split("<summary>liver")[1].split("</details>")[0]
    # B is also a co-winner (A is not significantly better on the common cases)
    assert "| 🏆 2‡ | B (‡significantly better than A (Holm p < 0.001)) |" in section
    assert "‡ significantly better than a model ranked above it" in section
    table = _tables.structure_table(data, "dsc", "D", "liver")
    ranks = {row[1].text: row[0] for row in table.rows}
    assert ranks["B"].text == "2‡" and "significantly better than A" in ranks["B"].title
    assert any(n.startswith("‡ significantly better") for n in table.notes)


def test_html_rows_carry_dagger_and_notes_have_distinct_marks(tmp_path):
    """The † of a co-winner below a non-winner is on the HTML row (not only in a footnote),
    the rule that made the 🏆 is stated, and no two notes share a leading mark."""
    data = make_report_data()
    analysis = data.analyses["dsc"]
    agg = analysis.aggregates.copy()
    agg["winner"] = agg["model"].isin(["alpha", "delta"])
    edited = dataclasses.replace(
        data, analyses={"dsc": dataclasses.replace(analysis, aggregates=agg)}
    )
    write_site(edited, tmp_path, {})
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "</span></span> 4†</td>" in index  # the trophy badge, then the rank and †
    assert "winner rule mean: best mean, and every model not significantly worse" in index
    page = (tmp_path / "toy--average.html").read_text(encoding="utf-8")
    notes = page.split('<ul class="table-notes">')[1].split("</ul>")[0]
    items = [li.split("</li>")[0].strip() for li in notes.split("<li>")[1:]]
    assert len(items) == 3  # average convention, winner rule, †
    assert len({item[:2] for item in items}) == 3
    css = (tmp_path / "assets" / "site.css").read_text() if (tmp_path / "assets").is_dir() else ""
    assert 'content: "* "' not in css


def test_one_number_format_per_metric_tells_ranked_models_apart():
    """Two means that round to the same 1-decimal percentage get a second decimal; the
    format is the same object for the Markdown, the HTML tables and the terminal."""
    agg = aggregate(_rows({"A": np.full(5, 0.9961), "B": np.full(5, 0.9964)}))
    fmt = number_format(agg, "dsc")
    assert fmt.digits == 2 and fmt(0.9961) == "99.61" and fmt(0.9964) == "99.64"
    assert (
        number_format(aggregate(_rows({"A": np.full(5, 0.9), "B": np.full(5, 0.8)})), "dsc").digits
        == 1
    )
    hd = aggregate(_rows({"A": np.full(5, 3.0), "B": np.full(5, 4.0)}, metric="hd95"))
    assert number_format(hd, "hd95")(3.0) == "3.00"


def test_winners_and_inversions_api_directly():
    """winners() marks the rule's best aggregate; inversions() only reports ranked pairs."""
    vals = _catastrophes()
    agg = aggregate(vals)
    pw = pairwise_tests(vals, rule="touchstone")
    won = winners(agg, pw, rule="touchstone")
    liver = won[won.structure == "liver"].set_index("model")
    assert bool(liver.loc["B", "best"]) and bool(liver.loc["A", "winner"])
    ranked = won.assign(rank=won.groupby("structure")["mean"].rank(ascending=False, method="min"))
    inv = inversions(ranked, pw)
    assert set(map(tuple, inv[["model", "better_than"]].values)) >= {("A", "B")}
    for r in itertools.islice(inv.itertuples(), 5):
        assert r.rank > r.rank_better_than and r.p_holm < 0.05


def _demo_pancreas(n: int) -> pd.DataFrame:
    """The demo's pancreas (closed form): ``misses_small`` scores 0 on the odd cases and
    exactly the best model's 0.996 on the even ones; ``dilated`` is 0.879 on every case;
    three more models make K = 30 ordered pairs."""
    best = np.full(n, 0.996)
    misses = np.where(np.arange(n) % 2 == 1, 0.0, 0.996)
    return _rows(
        {"best": best, "twin": best.copy(), "close": best - 0.001, "dilated": np.full(n, 0.879),
         "misses_small": misses, "noise": np.full(n, 0.768)}, structure="pancreas",
    )  # fmt: skip


def test_twelve_cases_cannot_beat_a_model_that_differs_on_six_and_says_so():
    """With 12 cases misses_small differs from the best on m = 6: the smallest p is 2^-6 and
    30 × 2^-6 = 0.47 > 0.05, so no test can make it lose — the analysis warns that its 🏆
    means 'not enough evidence'. With 24 cases (m = 12, 30 × 2^-12 = 0.007) it loses."""
    small = analyze(_demo_pancreas(12), n_bootstrap=200)
    agg = small.aggregates[small.aggregates.structure == "pancreas"].set_index("model")
    assert bool(agg.loc["misses_small", "winner"]) and not bool(agg.loc["dilated", "winner"])
    pw = small.pairwise.set_index(["structure", "model_a", "model_b"])
    assert pw.loc[("pancreas", "best", "misses_small"), "n_differing"] == 6
    assert pw.loc[("pancreas", "best", "misses_small"), "p_value"] == 2.0**-6
    (warning,) = [w for w in small.warnings if "too few cases for any test" in w]
    assert "misses_small on pancreas (dsc, 6 cases)" in warning
    large = analyze(_demo_pancreas(24), n_bootstrap=200)
    agg = large.aggregates[large.aggregates.structure == "pancreas"].set_index("model")
    assert not bool(agg.loc["misses_small", "winner"]) and not bool(agg.loc["dilated", "winner"])
    assert not [w for w in large.warnings if "misses_small on pancreas" in w]


# ------------------------------------------------------- fast Monte-Carlo paths (issue 10)


def test_raw_bit_stream_equals_rng_integers() -> None:
    """The sign patterns read from raw words are NumPy's int8 draws, block after block."""
    from assay.stats._paired import _BLOCK, _flip_blocks, _raw_bits_match

    assert _raw_bits_match()  # the fast path is the one in use here
    for n_perm, n in ((10_000, 7), (5_000, 4_751), (2 * _BLOCK + 3, 33)):
        ref = np.random.default_rng([1, n])
        for got in _flip_blocks(np.random.default_rng([1, n]), n_perm, n):
            want = ref.integers(0, 2, size=got.shape, dtype=np.int8).astype(bool)
            assert np.array_equal(got, want)


def _direct_mean_counts(x, present, pairs, n_perm, rng):
    """The pre-issue-10 product: ±1 patterns @ one difference column per pair."""
    diffs = np.zeros((x.shape[0], len(pairs)))
    for c, (i, j) in enumerate(pairs):
        cm = present[:, i] & present[:, j]
        diffs[cm, c] = x[cm, i] - x[cm, j]
    observed, gamma = diffs.sum(axis=0), np.finfo(float).eps * 100 * np.abs(diffs).sum(axis=0)
    g = np.zeros(len(pairs), dtype=np.int64)
    le = np.zeros(len(pairs), dtype=np.int64)
    for start in range(0, n_perm, 2048):
        size = min(2048, n_perm - start)
        flips = rng.integers(0, 2, size=(size, x.shape[0]), dtype=np.int8).astype(bool)
        null = np.where(flips, -1.0, 1.0) @ diffs
        g += np.count_nonzero(null >= observed - gamma, axis=0)
        le += np.count_nonzero(null <= observed + gamma, axis=0)
    return g, le


@pytest.mark.parametrize("kind", ["continuous", "discrete", "gaps"])
def test_decomposed_sign_flip_counts_equal_direct_product(kind: str) -> None:
    """Per-model columns (with near-tie recomputation) count exactly as per-pair columns."""
    from assay.stats._paired import _mean_null_counts

    rng = np.random.default_rng(11)
    x = rng.beta(8, 1.5, size=(400, 7))
    if kind == "discrete":  # many exact ties of the null sums with the observed sum
        x = np.round(x * 4) / 4 + 0.3
    present = np.ones(x.shape, dtype=bool)
    if kind == "gaps":
        present[rng.random(x.shape) < 0.1] = False
    xm = np.where(present, x, np.nan)
    pairs = list(itertools.combinations(range(7), 2))
    commons = [present[:, i] & present[:, j] for i, j in pairs]
    got = _mean_null_counts(xm, commons, pairs, 3000, np.random.default_rng(5))
    want = _direct_mean_counts(xm, present, pairs, 3000, np.random.default_rng(5))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("n", [1, 4, 7, 30])
def test_signed_sums_form_nibble_codes_and_add_in_table_order(n: int) -> None:
    """The kernel forms each row's 4-case codes from the 0/1 bytes (as _nibble_codes) and adds
    the table rows chunk by chunk: equal, bit for bit, to that sum done step by step."""
    from assay.stats._paired import _nibble_codes, _sign_tables, _signed_sums_kernel

    rng = np.random.default_rng(n)
    columns = rng.normal(size=(n, 5))
    bits = rng.integers(0, 2, size=(64, n), dtype=np.uint8)
    table = _sign_tables(columns)
    got = np.empty((64, 5))
    _signed_sums_kernel()(bits, table, got)
    codes = _nibble_codes(bits)
    for b in range(64):
        acc = np.zeros(5)
        for c in range(table.shape[0]):
            acc += table[c, codes[b, c]]
        assert np.array_equal(got[b], acc)
    np.testing.assert_allclose(got, (1.0 - 2.0 * bits) @ columns, rtol=0, atol=1e-12)


def test_holm_equals_statsmodels_bit_for_bit() -> None:
    from assay.stats._paired import holm

    rng = np.random.default_rng(2)
    for m in (1, 2, 7, 380):
        p = np.round(rng.random(m) ** 3, 3)  # ties, zeros-ish and ones
        p[: m // 5] = 1.0
        assert np.array_equal(holm(p), multipletests(p, alpha=0.05, method="holm")[1])
