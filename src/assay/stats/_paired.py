"""Paired one-sided tests of every ordered pair of models, Holm correction, and co-winners.

A *winner rule* names the aggregate a leaderboard ranks by and the paired test that decides
its co-winners, so that the two always agree (DESIGN §4):

* ``mean`` (default): rank by the mean; one-sided paired sign-flip permutation test of the
  mean of the paired differences (exact when :math:`2^m` ≤ the permutation budget, else
  Monte Carlo, seeded);
* ``median``: rank by the median; one-sided paired permutation test (values swapped within
  each case) of the difference of the two medians;
* ``touchstone``: rank by the mean; one-sided Wilcoxon signed-rank test (Touchstone's
  published rule, kept to reproduce the paper's marks: a rank test next to a mean ranking
  can crown a model with a lower mean).

Every rule Holm-adjusts within a (dataset, structure, metric) family of ordered pairs.
"""

from __future__ import annotations

import itertools
import warnings
import zlib
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from assay.errors import InputError
from assay.stats._aggregate import check_values
from assay.stats._policy import check_scores

__all__ = [
    "LOWER_IS_BETTER",
    "WINNER_RULES",
    "higher_is_better_for",
    "inversions",
    "pairwise_tests",
    "pairwise_wilcoxon",
    "rule_aggregate",
    "rule_description",
    "winners",
]

WinnerRule = Literal["mean", "median", "touchstone"]

#: Named winner rules: rule -> (aggregate ranked by, test, one-line description).
WINNER_RULES: dict[str, tuple[str, str, str]] = {
    "mean": (
        "mean",
        "paired sign-flip permutation test of the mean difference",
        "best mean, and every model not significantly worse by a one-sided paired sign-flip "
        "permutation test of the mean difference (Holm)",
    ),
    "median": (
        "median",
        "paired permutation test (swaps within cases) of the difference of medians",
        "best median, and every model not significantly worse by a one-sided paired "
        "permutation test of the difference of medians (Holm)",
    ),
    "touchstone": (
        "mean",
        "one-sided Wilcoxon signed-rank (scipy, zero_method wilcox)",
        "best mean, and every model not significantly worse by a one-sided Wilcoxon "
        "signed-rank test (Holm) — Touchstone's published rule; the rank test can crown a "
        "model whose mean is lower",
    ),
}

#: Default permutation budget of the permutation tests (exact below it).
N_PERMUTATIONS = 10_000

#: Metrics for which a lower value is better (distances in mm). Every other metric (Dice,
#: NSD, ...) is treated as higher-is-better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"hd", "hd95", "assd", "masd"})

_FAMILY = ["dataset", "structure", "metric"]
_PAIR_COLUMNS = [
    "dataset",
    "structure",
    "metric",
    "model_a",
    "model_b",
    "n_paired",
    "n_differing",
    "mean_difference",
    "median_difference",
    "p_value",
    "p_holm",
    "significant",
    "higher_is_better",
    "test",
    "exact",
]
_BLOCK = 2048  # permutations per block (bounds memory: block × cases signs)


def higher_is_better_for(metric: str, override: bool | None = None) -> bool:
    """Direction of a metric: ``override`` if given, else ``metric not in LOWER_IS_BETTER``."""
    if override is not None:
        return bool(override)
    return metric not in LOWER_IS_BETTER


def check_rule(rule: str) -> None:
    """Raise :class:`InputError` unless ``rule`` is one of :data:`WINNER_RULES`."""
    if rule not in WINNER_RULES:
        raise InputError(
            f"Unknown winner rule {rule!r}; expected one of {', '.join(WINNER_RULES)}."
        )


def rule_aggregate(rule: str) -> str:
    """The aggregate column (``mean`` or ``median``) a winner rule ranks by."""
    check_rule(rule)
    return WINNER_RULES[rule][0]


def rule_description(rule: str) -> str:
    """One line saying which models a winner rule marks 🏆."""
    check_rule(rule)
    return WINNER_RULES[rule][2]


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha!r}.")


def _sign_flip_p(d: np.ndarray, alternative: str) -> float:
    """Exact permutation p of the signed-rank statistic over all sign flips of ``d``.

    :math:`W^+ = \\sum_i r_i [d_i > 0]` with :math:`r` the average ranks of :math:`|d|`
    (zeros dropped beforehand: flipping a zero changes nothing, so the fraction is the same
    over :math:`2^{n}` or :math:`2^{n - n_0}` patterns). ``greater``: the fraction of the
    :math:`2^n` patterns with :math:`W^+ \\ge W^+_{obs}`; ``less``: :math:`\\le`; with
    scipy's relative tolerance of 100 machine epsilons, as ``scipy.stats.permutation_test``.
    """
    ranks = stats.rankdata(np.abs(d))
    observed = float(ranks[d > 0].sum())
    m = d.size
    patterns = (np.arange(2**m)[:, None] >> np.arange(m)) & 1
    null = patterns @ ranks
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    if alternative == "greater":
        count = np.count_nonzero(null >= observed - gamma)
    else:
        count = np.count_nonzero(null <= observed + gamma)
    return float(count / 2**m)


#: scipy (``method="auto"``) runs an exact sign-flip permutation test when the differences
#: have ties or zeros and n <= 13 (2**13 sign patterns).
PERMUTATION_MAX_N = 13


def _one_sided_p(a: np.ndarray, b: np.ndarray, alternative: str) -> float:
    """scipy's one-sided Wilcoxon p for paired a, b; 1.0 when n == 0 or all differences are 0.

    Where scipy would run its exact permutation test (ties or zeros, n <= 13), the same p is
    computed by :func:`_sign_flip_p`, vectorised (scipy's loop takes ~0.7 s per pair).
    """
    d = a - b
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    nonzero = d[d != 0]
    ties = nonzero.size < d.size or np.unique(np.abs(nonzero)).size < nonzero.size
    if ties and d.size <= PERMUTATION_MAX_N:
        return _sign_flip_p(nonzero, alternative)
    with warnings.catch_warnings():
        # scipy warns for small n (normal approximation) and for zeros/ties switching method;
        # these are properties of the data, not errors, and must not escape.
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(a, b, alternative=alternative, zero_method="wilcox")
    p = float(res.pvalue)
    return 1.0 if np.isnan(p) else p


def _tails(
    counts: tuple[np.ndarray, np.ndarray], n_null: int, exact: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p-values (greater, less) from the counts of :func:`_count_tails`.

    As ``scipy.stats.permutation_test``: a Monte-Carlo p adds one to the count and to the
    number of permutations (the observed assignment is one of them); an exact p does not.
    """
    adjustment = 0 if exact else 1
    greater, less = counts
    return (
        (np.asarray(greater) + adjustment) / (n_null + adjustment),
        (np.asarray(less) + adjustment) / (n_null + adjustment),
    )


def _count_tails(
    null: np.ndarray, observed: np.ndarray, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per column: null values ≥ observed and ≤ observed, where values within
    :math:`100 \\varepsilon \\cdot` ``scale`` of the observed value count as ties (scipy's
    rule, with ``scale = |observed|`` by default)."""
    scale = np.abs(observed) if scale is None else scale
    gamma = np.finfo(np.float64).eps * 100 * scale
    return (
        np.count_nonzero(null >= observed - gamma, axis=0),
        np.count_nonzero(null <= observed + gamma, axis=0),
    )


def _patterns(m: int) -> np.ndarray:
    """All :math:`2^m` 0/1 patterns of length ``m`` (rows), as booleans."""
    return ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(bool)


def _family_rng(seed: int, key: tuple[object, ...]) -> np.random.Generator:
    """A generator for one family: the same draws whatever other families are analysed."""
    tag = zlib.crc32("\x1f".join(map(str, key)).encode("utf-8"))
    return np.random.default_rng([seed, tag])


def _median_difference_null(a: np.ndarray, b: np.ndarray, swap: np.ndarray) -> np.ndarray:
    """median(a') − median(b') for each row of ``swap`` (True: a_i and b_i swapped)."""
    a2 = np.where(swap, b, a)
    b2 = np.where(swap, a, b)
    return np.asarray(np.median(a2, axis=1) - np.median(b2, axis=1), dtype=np.float64)


def _permutation_family(
    x: np.ndarray,
    present: np.ndarray,
    pairs: list[tuple[int, int]],
    statistic: str,
    n_permutations: int,
    rng: np.random.Generator,
) -> list[tuple[float, float, bool]]:
    """(p "i better", p "j better", exact) for each pair (i, j) of one family.

    ``x`` is cases × models, oriented so that larger is better, NaN where a model has no
    value. ``statistic`` ``mean``: :math:`T = \\sum_i d_i` over the common cases with
    :math:`d_i = x_{ij} - x_{ik}` (equivalent to the mean difference), null by sign flips;
    ``median``: :math:`T = \\operatorname{median}(x_j) - \\operatorname{median}(x_k)`, null by
    swapping the two values of each case. Cases with equal values are left out of the
    enumeration (swapping them changes nothing). Exact over the :math:`2^m` patterns of the
    ``m`` unequal cases when :math:`2^m \\le` ``n_permutations``, else Monte Carlo with
    ``n_permutations`` random patterns shared by every pair of the family.
    """
    out: list[tuple[float, float, bool] | None] = [None] * len(pairs)
    mc: list[int] = []
    for k, (i, j) in enumerate(pairs):
        common = present[:, i] & present[:, j]
        a, b = x[common, i], x[common, j]
        unequal = a != b
        m = int(unequal.sum())
        if m == 0:
            out[k] = (1.0, 1.0, True)
            continue
        if 2**m > n_permutations:
            mc.append(k)
            continue
        flips = _patterns(m)
        if statistic == "mean":
            d = (a - b)[unequal]
            null = (np.where(flips, -1.0, 1.0) @ d)[:, None]
            observed = null[0]  # row 0 flips nothing: the observed sum, computed alike
        else:
            observed = np.array([np.median(a) - np.median(b)])
            swap = np.zeros((flips.shape[0], a.size), dtype=bool)
            swap[:, unequal] = flips
            null = _median_difference_null(a, b, swap)[:, None]
        g, le = _tails(_count_tails(null, observed), 2**m, exact=True)
        out[k] = (float(g[0]), float(le[0]), True)
    if mc:
        n_cases = x.shape[0]
        cols = [pairs[k] for k in mc]
        commons = [present[:, i] & present[:, j] for i, j in cols]
        if statistic == "mean":
            diffs = np.zeros((n_cases, len(cols)))
            for c, ((i, j), common) in enumerate(zip(cols, commons, strict=True)):
                diffs[common, c] = x[common, i] - x[common, j]
            observed = diffs.sum(axis=0)
            # sums of the same terms in another order differ by rounding: ties within
            # 100 eps of the sum of |d| (not of |observed|, which may cancel to ~0)
            scale: np.ndarray | None = np.abs(diffs).sum(axis=0)
        else:
            scale = None
            observed = np.array(
                [
                    np.median(x[cm, i]) - np.median(x[cm, j])
                    for (i, j), cm in zip(cols, commons, strict=True)
                ]
            )
        greater = np.zeros(len(cols), dtype=np.int64)
        less = np.zeros(len(cols), dtype=np.int64)
        done = 0
        while done < n_permutations:
            size = min(_BLOCK, n_permutations - done)
            flips = rng.integers(0, 2, size=(size, n_cases), dtype=np.int8).astype(bool)
            if statistic == "mean":
                null = np.where(flips, -1.0, 1.0) @ diffs
            else:
                null = np.column_stack(
                    [
                        _median_difference_null(x[cm, i], x[cm, j], flips[:, cm])
                        for (i, j), cm in zip(cols, commons, strict=True)
                    ]
                )
            g_count, l_count = _count_tails(null, observed, scale)
            greater += g_count
            less += l_count
            done += size
        g, le = _tails((greater, less), n_permutations, exact=False)
        for c, k in enumerate(mc):
            out[k] = (float(g[c]), float(le[c]), False)
    return [o for o in out if o is not None]


def pairwise_tests(
    values: pd.DataFrame,
    *,
    rule: WinnerRule | str = "mean",
    alpha: float = 0.05,
    higher_is_better: bool | None = None,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
) -> pd.DataFrame:
    """One-sided paired tests "a better than b" for every ordered pair of models.

    Parameters
    ----------
    values : pandas.DataFrame
        Output of :func:`~assay.stats._policy.apply_policy` (key columns and ``value``),
        optionally with the rows of :func:`~assay.stats._aggregate.case_averages` appended to
        test the ``average`` pseudo-structure too.
    rule : {"mean", "median", "touchstone"}
        Winner rule (:data:`WINNER_RULES`); it picks the test that matches the aggregate
        being ranked.
    alpha : float
        Family-wise significance level for the Holm-adjusted p-values.
    higher_is_better : bool, optional
        Direction of every metric. ``None`` (default) decides per metric: lower is better for
        the distances in :data:`LOWER_IS_BETTER`, higher for every other metric.
    n_permutations : int
        Permutation budget of the ``mean`` and ``median`` tests: exact enumeration of the
        :math:`2^m` sign patterns when :math:`2^m \\le` ``n_permutations`` (m = cases whose
        two values differ), else that many Monte-Carlo patterns. The smallest Monte-Carlo p
        is :math:`1 / (B + 1)`.
    seed : int
        Seed of the Monte-Carlo patterns; each family draws from its own generator
        (``numpy.random.default_rng([seed, crc32(dataset, structure, metric)])``), so a
        family's p-values do not depend on which other families are analysed.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, structure, metric) and ordered pair (``model_a``, ``model_b``):
        ``n_paired`` (cases with a value for both), ``n_differing`` (those where the two
        values differ: only they carry evidence), ``mean_difference`` and
        ``median_difference`` (of :math:`a_i - b_i`; NaN when ``n_paired == 0``),
        ``p_value`` (one-sided, alternative "a better than b"), ``p_holm`` (Holm-adjusted
        within the family), ``significant`` (``p_holm < alpha``), ``higher_is_better``,
        ``test`` (the rule's test) and ``exact`` (False for a Monte-Carlo p).

    Notes
    -----
    ``mean``: the statistic is :math:`\\bar d` over the common cases; under the null
    hypothesis that each case's two values are exchangeable, every sign pattern of
    :math:`d` is equally likely; p is the fraction of patterns with a mean difference at
    least as large as observed (``scipy.stats.permutation_test`` with
    ``permutation_type="samples"`` on the same statistic gives the same p, exactly when both
    enumerate). ``median``: the same, with the statistic
    :math:`\\operatorname{median}(a) - \\operatorname{median}(b)` and values swapped within
    cases. ``touchstone``: ``scipy.stats.wilcoxon`` (``zero_method="wilcox"``, scipy's
    default method; its exact permutation branch vectorised). Edge cases: no common case or
    all differences 0 give ``p_value = 1``. The family of one (dataset, structure, metric)
    holds all :math:`k(k-1)` ordered pairs of its :math:`k` models, including pairs without
    common cases; the Holm step-down adjustment (``statsmodels`` ``multipletests(method=
    "holm")``) controls the family-wise error rate at ``alpha``.
    """
    _check_alpha(alpha)
    check_rule(rule)
    if int(n_permutations) < 100:
        raise InputError(f"n_permutations must be at least 100, got {n_permutations!r}.")
    check_values(values, allow_average=True)
    aggregate_name, test_name, _ = WINNER_RULES[rule]
    rows: list[dict[str, object]] = []
    for key, fam in values.groupby(_FAMILY, sort=True):
        dataset, structure, metric = key
        hib = higher_is_better_for(str(metric), higher_is_better)
        wide = fam.pivot(index="case_id", columns="model", values="value").astype(np.float64)
        models = list(wide.columns)
        arr = wide.to_numpy()
        present = ~np.isnan(arr)
        p: dict[tuple[int, int], tuple[float, bool]] = {}
        if rule == "touchstone":
            alternative = "greater" if hib else "less"
            for i, j in itertools.permutations(range(len(models)), 2):
                common = present[:, i] & present[:, j]
                pv = _one_sided_p(arr[common, i], arr[common, j], alternative)
                p[(i, j)] = (pv, not (common.sum() > PERMUTATION_MAX_N))
        else:
            oriented = arr if hib else -arr
            pairs = list(itertools.combinations(range(len(models)), 2))
            rng = _family_rng(seed, key)
            results = _permutation_family(
                oriented, present, pairs, aggregate_name, int(n_permutations), rng
            )
            for (i, j), (p_ij, p_ji, exact) in zip(pairs, results, strict=True):
                p[(i, j)] = (p_ij, exact)
                p[(j, i)] = (p_ji, exact)
        fam_rows: list[dict[str, object]] = []
        for i, j in itertools.permutations(range(len(models)), 2):
            common = present[:, i] & present[:, j]
            d = arr[common, i] - arr[common, j]
            n = int(common.sum())
            pv, exact = p[(i, j)]
            fam_rows.append(
                {
                    "dataset": dataset,
                    "structure": structure,
                    "metric": metric,
                    "model_a": models[i],
                    "model_b": models[j],
                    "n_paired": n,
                    "n_differing": int(np.count_nonzero(d != 0)),
                    "mean_difference": float(np.mean(d)) if n else np.nan,
                    "median_difference": float(np.median(d)) if n else np.nan,
                    "p_value": min(1.0, pv),
                    "higher_is_better": hib,
                    "test": test_name,
                    "exact": bool(exact),
                }
            )
        if fam_rows:
            pvals = np.array([r["p_value"] for r in fam_rows], dtype=np.float64)
            p_holm = multipletests(pvals, alpha=alpha, method="holm")[1]
            for r, ph in zip(fam_rows, p_holm, strict=True):
                r["p_holm"] = float(ph)
                r["significant"] = bool(ph < alpha)
        rows.extend(fam_rows)
    out = pd.DataFrame(rows, columns=_PAIR_COLUMNS)
    return out.astype(
        {
            "n_paired": np.int64,
            "n_differing": np.int64,
            "mean_difference": np.float64,
            "median_difference": np.float64,
            "p_value": np.float64,
            "p_holm": np.float64,
            "significant": bool,
            "higher_is_better": bool,
            "exact": bool,
        }
    )


def pairwise_wilcoxon(
    values: pd.DataFrame,
    *,
    alpha: float = 0.05,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """One-sided paired Wilcoxon signed-rank tests (the ``touchstone`` rule's test).

    ``pairwise_tests(values, rule="touchstone", ...)``: for the common cases of a and b,
    ``scipy.stats.wilcoxon(a, b, alternative="greater")`` when higher is better and
    ``"less"`` when lower is better, ``zero_method="wilcox"``; p = 1 without common cases or
    when every difference is 0; Holm within the family.
    """
    return pairwise_tests(values, rule="touchstone", alpha=alpha, higher_is_better=higher_is_better)


def winners(
    aggregates: pd.DataFrame,
    pairwise: pd.DataFrame,
    *,
    alpha: float = 0.05,
    higher_is_better: bool | None = None,
    rule: WinnerRule | str = "mean",
) -> pd.DataFrame:
    """Mark the best model and its co-winners per (dataset, structure, metric).

    Parameters
    ----------
    aggregates : pandas.DataFrame
        Output of :func:`~assay.stats._aggregate.aggregate` (needs ``dataset, model,
        structure, metric`` and the rule's aggregate, ``mean`` or ``median``).
    pairwise : pandas.DataFrame
        Output of :func:`pairwise_tests` with the same ``rule`` (needs the family columns,
        ``model_a, model_b, p_holm``).
    alpha : float
        Significance level applied to ``p_holm``.
    higher_is_better : bool, optional
        As in :func:`pairwise_tests`.
    rule : {"mean", "median", "touchstone"}
        Winner rule: which aggregate is "best" (``median`` for ``median``, else ``mean``).

    Returns
    -------
    pandas.DataFrame
        ``aggregates`` (same rows and order) with ``best`` (bool: the best aggregate of its
        family — highest, or lowest for lower-is-better metrics; ties are all best) and
        ``winner`` (nullable ``boolean``): True for every best model and every model ``m``
        for which no best model ``b`` has a significant test "b better than m"; ``<NA>``
        for families without any row in ``pairwise`` ("not significantly worse" cannot be
        claimed without a test).
    """
    _check_alpha(alpha)
    column = rule_aggregate(rule)
    check_scores(aggregates, ("dataset", "model", "structure", "metric", column), "aggregates")
    check_scores(pairwise, (*_FAMILY, "model_a", "model_b", "p_holm"), "pairwise")
    out = aggregates.copy()
    best = pd.Series(False, index=out.index)
    winner = pd.Series(pd.NA, index=out.index, dtype="boolean")
    sig = pairwise.loc[pairwise["p_holm"] < alpha]
    tested = set(map(tuple, pairwise.loc[:, _FAMILY].drop_duplicates().to_numpy().tolist()))
    sig_pairs = {tuple(r) for r in sig.loc[:, [*_FAMILY, "model_a", "model_b"]].to_numpy().tolist()}
    for key, fam in out.groupby(_FAMILY, sort=False):
        dataset, structure, metric = key
        hib = higher_is_better_for(str(metric), higher_is_better)
        score = fam[column].astype(np.float64)
        if score.isna().all():
            continue
        target = score.max() if hib else score.min()
        is_best = score.eq(target)
        best.loc[fam.index] = is_best
        if (dataset, structure, metric) not in tested:
            continue
        best_models = fam.loc[is_best, "model"].tolist()
        for idx, model in fam["model"].items():
            beaten = any((dataset, structure, metric, b, model) in sig_pairs for b in best_models)
            winner.loc[idx] = bool(is_best.loc[idx]) or not beaten
    out["best"] = best.astype(bool)
    out["winner"] = winner
    return out


_INVERSION_COLUMNS = [
    "dataset",
    "structure",
    "metric",
    "model",
    "rank",
    "better_than",
    "rank_better_than",
    "p_holm",
]


def inversions(
    aggregates: pd.DataFrame, pairwise: pd.DataFrame, *, alpha: float = 0.05
) -> pd.DataFrame:
    """Significant pairs that contradict the ranking: a lower-ranked model significantly
    better than a higher-ranked one.

    Parameters
    ----------
    aggregates : pandas.DataFrame
        Needs ``dataset, structure, metric, model, rank`` (NaN rank: not ranked, ignored).
    pairwise : pandas.DataFrame
        Output of :func:`pairwise_tests` (``model_a`` significantly better than
        ``model_b`` when ``p_holm < alpha``).

    Returns
    -------
    pandas.DataFrame
        One row per contradiction: ``model`` (ranked ``rank``) is significantly better than
        ``better_than`` (ranked ``rank_better_than`` < ``rank``), with the Holm p. Under the
        ``mean`` rule with every case scored for every model this cannot happen; it can when
        models have different cases, and routinely under the ``touchstone`` rule.
    """
    check_scores(aggregates, (*_FAMILY, "model", "rank"), "aggregates")
    sig = pairwise.loc[pairwise["p_holm"] < alpha, [*_FAMILY, "model_a", "model_b", "p_holm"]]
    ranks = aggregates.loc[aggregates["rank"].notna(), [*_FAMILY, "model", "rank"]]
    if "contaminated" in aggregates.columns:
        ranks = ranks.loc[~aggregates.loc[ranks.index, "contaminated"].astype(bool)]
    ranks = ranks.drop_duplicates([*_FAMILY, "model"])
    m = sig.merge(
        ranks.rename(columns={"model": "model_a", "rank": "rank"}), on=[*_FAMILY, "model_a"]
    ).merge(
        ranks.rename(columns={"model": "model_b", "rank": "rank_better_than"}),
        on=[*_FAMILY, "model_b"],
    )
    m = m.loc[m["rank"] > m["rank_better_than"]]
    m = m.rename(columns={"model_a": "model", "model_b": "better_than"})
    m = m.sort_values([*_FAMILY, "rank", "model", "rank_better_than", "better_than"])
    return m.loc[:, _INVERSION_COLUMNS].reset_index(drop=True)
