"""Subgroup analysis over case metadata (DESIGN.md §4).

Cases are grouped by a metadata column (``sex``), a binned numeric column (``age:decades``,
``age:0,40,60,120``) or named pandas query expressions (``older_women: sex == "f" and
age >= 60``). Per group and model (plus an ``average`` model, the per-case mean over models)
the n, mean, median and a seeded bootstrap CI of the mean are reported; groups below
``min_size`` are reported as skipped, never dropped. Across the groups that qualify, a
Kruskal–Wallis test and pairwise two-sided Mann–Whitney U tests are run.

Multiplicity (:data:`FAMILIES`): by default (``family="all"``) the p-values are adjusted
(Bonferroni, or Benjamini–Hochberg) over *every* Mann–Whitney test of one (dataset, metric)
— all models including the ``average`` model, all groupings, all structures including the
average — and, separately, over every Kruskal–Wallis test of that (dataset, metric), so the
stated error rate (family-wise for Bonferroni, false discovery rate for BH) holds across
models, groupings and structures. ``family="model"`` adjusts only over the pairs of one
(dataset, structure, metric, grouping, model), as per-model analyses (and Touchstone) do; it
makes some model look different by chance as soon as many models or structures are tested.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations, pairwise
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from assay.errors import InputError
from assay.stats._bootstrap import SLICE_KEYS, intervals, iter_slices, paired_bootstrap_means
from assay.stats._options import GroupSpec

#: Name of the pseudo-model whose value for a case is the mean over the models that have it.
AVERAGE_MODEL = "average"
#: Default significance level for the ``significant`` column of the tests.
ALPHA = 0.05
#: Multiple-testing families: ``all`` = every test (of one kind) of a (dataset, metric);
#: ``model`` = the tests of one (dataset, structure, metric, grouping, model).
FAMILIES = ("all", "model")
#: Columns that identify one family of :data:`FAMILIES` in the ``tests`` frame.
FAMILY_KEYS = {
    "all": ("dataset", "metric", "test"),
    "model": ("dataset", "structure", "metric", "grouping", "model", "test"),
}
CORRECTIONS = ("bonferroni", "fdr_bh")
_CORRECTION_TEXT = {
    "bonferroni": "Bonferroni (family-wise error rate)",
    "fdr_bh": "Benjamini–Hochberg (false discovery rate)",
}

_EDGES = re.compile(r"^\s*-?[\d.]+(?:[eE][-+]?\d+)?(?:\s*,\s*-?[\d.]+(?:[eE][-+]?\d+)?)+\s*$")
_UNASSIGNED = "(unassigned)"
#: SciPy's ``mannwhitneyu`` may use its exact distribution when a sample has at most this many
#: values; above it (both samples), always the normal approximation.
_MWU_EXACT_MAX_N = 8
_NO_METADATA = "(no metadata)"


def parse_group_spec(text: str) -> tuple[str, GroupSpec]:
    """Parse a command-line group specification into ``(name, spec)``.

    Forms
    -----
    - ``"sex"`` → ``("sex", "sex")``: one group per value of the column;
    - ``"age:decades"`` → ``("age:decades", "age:decades")``: bins [0, 10), [10, 20), ...;
    - ``"age:0,40,60,120"`` → same string: bins [0, 40), [40, 60), [60, 120);
    - ``'older_women: sex == "f" and age >= 60'`` →
      ``("older_women", {"older_women": 'sex == "f" and age >= 60'})``: one named query.

    The part after the first ``:`` is a bin spec when it is ``decades`` or a comma-separated
    list of at least two numbers, and a query otherwise.

    Raises
    ------
    InputError
        If the name or the part after ``:`` is empty.
    """
    head, sep, tail = text.partition(":")
    name, rest = head.strip(), tail.strip()
    if not name or (sep and not rest):
        raise InputError(
            f"Group spec {text!r} is incomplete: expected 'column', 'column:decades', "
            "'column:0,40,60', or 'name: <pandas query>'."
        )
    if not sep:
        return name, name
    if rest == "decades" or _EDGES.match(rest):
        spec = f"{name}:{rest.replace(' ', '')}"
        return spec, spec
    return name, {name: rest}


@dataclass(frozen=True)
class _Group:
    label: str
    cases: frozenset[str]
    special: bool  # not a real group: reported as skipped, never tested
    reason: str = ""
    include_unknown: bool = False  # also holds slice cases that have no metadata row


def _format_edge(edge: float) -> str:
    return f"{edge:g}"


def _numeric(metadata: pd.DataFrame, column: str, grouping: str) -> pd.Series:
    raw = metadata[column]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & raw.notna()
    if bad.any():
        example = raw[bad].iloc[0]
        raise InputError(
            f"Grouping {grouping!r}: column {column!r} holds non-numeric value {example!r} "
            f"(and {int(bad.sum()) - 1} more); binning needs numbers. Clean the metadata or "
            "group by the column without bins."
        )
    return num


def _resolve(grouping: str, spec: GroupSpec, metadata: pd.DataFrame) -> list[_Group]:
    """Turn a spec into groups of case ids (real groups first, then special ones)."""
    case_ids = metadata["case_id"]
    known = frozenset(case_ids)
    if isinstance(spec, Mapping):
        groups = []
        for label, query in spec.items():
            try:
                selected = metadata.query(query)
            except Exception as exc:  # pandas raises many types for a bad expression
                raise InputError(
                    f"Grouping {grouping!r}: query {query!r} for group {label!r} failed "
                    f"({type(exc).__name__}: {exc}). Use column names of the metadata, e.g. "
                    "'sex == \"f\" and age >= 60'."
                ) from exc
            groups.append(_Group(str(label), frozenset(selected["case_id"]), False))
        groups.append(
            _Group(_NO_METADATA, frozenset(), True, "case has no metadata row: not tested", True)
        )
        return groups
    column, sep, bins = spec.partition(":")
    if column not in metadata.columns:
        raise InputError(
            f"Grouping {grouping!r}: metadata has no column {column!r}; available: "
            f"{[c for c in metadata.columns if c != 'case_id']}."
        )
    if not sep:
        labels = metadata[column]
        groups = [
            _Group(str(v), frozenset(case_ids[labels == v]), False)
            for v in sorted(labels.dropna().unique(), key=str)
        ]
    else:
        num = _numeric(metadata, column, grouping)
        if bins == "decades":
            if num.notna().any():
                lo = math.floor(num.min() / 10) * 10
                hi = math.floor(num.max() / 10) * 10 + 10
                edges = [float(e) for e in range(int(lo), int(hi) + 1, 10)]
            else:
                edges = []
        else:
            edges = [float(e) for e in bins.split(",")]
            if any(b <= a for a, b in pairwise(edges)):
                raise InputError(
                    f"Grouping {grouping!r}: bin edges {edges} must increase strictly, "
                    "e.g. 'age:0,40,60,120'."
                )
        groups = [
            _Group(
                f"[{_format_edge(a)}, {_format_edge(b)})",
                frozenset(case_ids[(num >= a) & (num < b)]),
                False,
            )
            for a, b in pairwise(edges)
        ]
    assigned = frozenset().union(*(g.cases for g in groups))
    groups.append(
        _Group(
            _UNASSIGNED,
            known - assigned,
            True,
            "metadata missing, NaN or outside the bins: not tested",
            True,
        )
    )
    return groups


def _check_metadata(metadata: pd.DataFrame) -> pd.DataFrame:
    if "case_id" not in metadata.columns:
        raise InputError(
            f"Metadata lacks a 'case_id' column (has {list(metadata.columns)}): add one that "
            "matches the case ids of the results."
        )
    meta = metadata.reset_index(drop=True).copy()
    meta["case_id"] = meta["case_id"].astype(str)
    dup = meta["case_id"].duplicated()
    if dup.any():
        raise InputError(
            f"Metadata lists case {meta.loc[dup, 'case_id'].iloc[0]!r} more than once: "
            "expected one row per case_id."
        )
    return meta


@functools.cache
def _rank_sum_kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]:
    """Compiled ``(2·U₁, Σ(t³ − t))`` of two samples, row by row (numba, cached on disk).

    ``counts(a, b, twice_u, ties)``: ``a`` (k, n₁) and ``b`` (k, n₂) sorted along rows; per
    row j, one merge of the two sorted rows gives ``twice_u[j]`` =
    :math:`\\sum_{x \\in a} (2\\,\\#\\{y \\in b: y < x\\} + \\#\\{y \\in b: y = x\\}) = 2 U_1`
    and ``ties[j]`` = :math:`\\sum_v (t_v^3 - t_v)` over the distinct values v of a ∪ b,
    :math:`t_v` their multiplicities: exact integers.
    """
    from numba import njit

    @njit(cache=True, nogil=True)
    def counts(
        a: np.ndarray, b: np.ndarray, twice_u: np.ndarray, ties: np.ndarray
    ) -> None:  # pragma: no cover - compiled
        n1, n2 = a.shape[1], b.shape[1]
        for j in range(a.shape[0]):
            x, y = a[j], b[j]
            i = k = 0
            u2 = 0
            tt = 0
            while i < n1 or k < n2:
                v = x[i] if k >= n2 or (i < n1 and x[i] < y[k]) else y[k]
                below = k
                ca = 0
                while i < n1 and x[i] == v:
                    ca += 1
                    i += 1
                cb = 0
                while k < n2 and y[k] == v:
                    cb += 1
                    k += 1
                u2 += ca * (2 * below + cb)
                t = ca + cb
                tt += t * t * t - t
            twice_u[j] = u2
            ties[j] = tt

    return counts


def _mann_whitney(
    samples: list[np.ndarray], pairs: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``scipy.stats.mannwhitneyu(samples[a], samples[b], axis=0)`` for each pair:
    (U₁, p) arrays of shape (pairs, k).

    Pairs with more than 8 values in both samples, where SciPy's ``method="auto"`` uses the
    normal approximation with tie and continuity corrections, are computed here: each
    sample is sorted once, U₁ and the tie term of each pair come from one merge
    (:func:`_rank_sum_kernel`, exact integers, as SciPy's sums of average ranks are), and z
    and p follow SciPy's operations in the same order, so the floats are the same. Other
    pairs (SciPy may run its exact test) are passed to SciPy.
    """
    k = samples[0].shape[1]
    u = np.empty((len(pairs), k))
    p = np.empty((len(pairs), k))
    ordered = [np.sort(x.T, axis=1) for x in samples]
    counts = _rank_sum_kernel()
    for row, (a, b) in enumerate(pairs):
        n1, n2 = samples[a].shape[0], samples[b].shape[0]
        if n1 <= _MWU_EXACT_MAX_N or n2 <= _MWU_EXACT_MAX_N:
            res = stats.mannwhitneyu(samples[a], samples[b], alternative="two-sided")
            u[row], p[row] = np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue)
            continue
        twice_u = np.empty(k, dtype=np.int64)
        ties = np.empty(k, dtype=np.int64)
        counts(ordered[a], ordered[b], twice_u, ties)
        u1 = twice_u / 2.0
        big = np.maximum(u1, n1 * n2 - u1)
        n = n1 + n2
        s = np.sqrt(n1 * n2 / 12 * ((n + 1) - ties.astype(np.float64) / (n * (n - 1))))
        numerator = big - n1 * n2 / 2
        numerator -= 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            z = numerator / s
        pv = special.ndtr(-z)
        pv *= 2
        u[row], p[row] = u1, np.clip(pv, 0.0, 1.0)
    return u, p


@functools.cache
def _tie_term_kernel() -> Callable[[np.ndarray, np.ndarray], None]:
    """Compiled ``ties[j] = Σ_v (t_v³ − t_v)`` over the runs of equal values of each sorted
    row of ``x`` (numba, cached on disk): exact integers."""
    from numba import njit

    @njit(cache=True, nogil=True)
    def tie_term(x: np.ndarray, ties: np.ndarray) -> None:  # pragma: no cover - compiled
        for j in range(x.shape[0]):
            row = x[j]
            total = 0
            start = 0
            for i in range(1, row.size + 1):
                if i == row.size or row[i] != row[start]:
                    t = i - start
                    total += t * t * t - t
                    start = i
            ties[j] = total

    return tie_term


def _kruskal(
    samples: list[np.ndarray], pairs: list[tuple[int, int]], u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.stats.kruskal(*samples, axis=0)``: (H, p) per column, the same floats.

    SciPy's rank sum of group g, :math:`R_g`, is a sum of exact half-integers; it equals
    :math:`n_g (n_g + 1)/2 + \\sum_{h \\ne g} U_{g,h}` with the Mann–Whitney U₁ of the
    pairs (``u``, from :func:`_mann_whitney`, also exact), and the tie term is counted on
    the sorted pooled sample (:func:`_tie_term_kernel`). H, its tie correction and
    p = χ²(k − 1) survival then follow SciPy's operations in the same order.
    """
    sizes = [x.shape[0] for x in samples]
    total = sum(sizes)
    sums = [np.full(u.shape[1], n * (n + 1) / 2) for n in sizes]
    for row, (a, b) in enumerate(pairs):
        sums[a] = sums[a] + u[row]
        sums[b] = sums[b] + (sizes[a] * sizes[b] - u[row])
    pooled = np.sort(np.concatenate(samples).T, axis=1)
    tie_sums = np.empty(pooled.shape[0], dtype=np.int64)
    _tie_term_kernel()(pooled, tie_sums)
    ties = 1 - tie_sums.astype(np.float64) / (total**3 - total)
    ssbn = sum(sums[i] ** 2 / sizes[i] for i in range(len(samples)))
    h = 12.0 / (total * (total + 1)) * ssbn - 3 * (total + 1)
    h /= ties
    return h, special.chdtrc(np.float64(len(samples) - 1), h)


def _tests(samples: list[np.ndarray]) -> list[dict[str, Any]]:
    """Kruskal–Wallis and pairwise Mann–Whitney U tests (unadjusted), k columns at once.

    Each sample is an (n_g, k) array of one group's values for k columns (models), all
    finite; the k columns are tested at once, with the floats of SciPy's ``kruskal`` and
    ``mannwhitneyu`` (:func:`_kruskal`, :func:`_mann_whitney`). Returns, per column, a dict
    with ``kruskal`` = (H, p, note) and ``pairs`` = list of (a, b, U, p) over the pairs of
    sample indices a < b. Adjustment is done per family afterwards
    (:func:`adjust_subgroup_tests`).
    """
    k = samples[0].shape[1]
    pooled = np.concatenate(samples)
    constant = np.ptp(pooled, axis=0) == 0.0  # H is 0/0 there: no evidence of a difference
    pairs = list(combinations(range(len(samples)), 2))
    u, p_mw = _mann_whitney(samples, pairs)  # (pairs, k)
    h = np.full(k, np.nan)
    p_kw = np.ones(k)
    if (~constant).any():
        cols = ~constant
        h[cols], p_kw[cols] = _kruskal([x[:, cols] for x in samples], pairs, u[:, cols])
    return [
        {
            "kruskal": (
                float(h[j]),
                float(p_kw[j]),
                "all values identical: p = 1" if constant[j] else "",
            ),
            "pairs": [(a, b, float(u[i, j]), float(p_mw[i, j])) for i, (a, b) in enumerate(pairs)],
        }
        for j in range(k)
    ]


def family_description(family: str, correction: str) -> str:
    """One sentence stating which tests one adjustment covers, for reports and params."""
    how = _CORRECTION_TEXT.get(correction, correction)
    if family == "all":
        return (
            f"{how} over every Mann–Whitney U test of one (dataset, metric): all models (and "
            "the all-models average), all groupings, all structures (and the average); "
            "Kruskal–Wallis tests adjusted the same way over their own family"
        )
    return (
        f"{how} over the Mann–Whitney U pairs of one (dataset, structure, metric, grouping, "
        "model) only; Kruskal–Wallis unadjusted (a family of one)"
    )


def adjust_subgroup_tests(
    tests: pd.DataFrame,
    *,
    correction: str = "bonferroni",
    family: str = "all",
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Adjust the raw ``p`` of subgroup tests per multiple-testing family.

    Families are the groups of rows sharing :data:`FAMILY_KEYS` ``[family]`` (the ``test``
    column keeps Kruskal–Wallis and Mann–Whitney apart). Within each family ``p_adj`` is
    ``statsmodels.stats.multitest.multipletests(p, alpha, method=correction)`` over the rows
    in frame order, ``significant`` is ``p_adj < alpha``, ``family_size`` the number of tests
    of the family; ``correction`` and ``family`` record the choice. Rows with a NaN ``p``
    keep a NaN ``p_adj`` and do not count in the family.
    """
    _check_choices(correction, family, alpha)
    out = tests.copy()
    out["p_adj"] = np.nan
    out["family_size"] = 0
    if out.empty:
        out["significant"] = pd.Series(dtype=bool)
        out["correction"], out["family"] = correction, family
        return out
    for _, idx in out.groupby(list(FAMILY_KEYS[family]), sort=False).groups.items():
        p = out.loc[idx, "p"].to_numpy(dtype=np.float64)
        ok = np.isfinite(p)
        adj = np.full(p.shape, np.nan)
        if ok.any():
            adj[ok] = multipletests(p[ok], alpha=alpha, method=correction)[1]
        out.loc[idx, "p_adj"] = adj
        out.loc[idx, "family_size"] = int(ok.sum())
    out["significant"] = out["p_adj"].lt(alpha)
    out["correction"], out["family"] = correction, family
    return out


def _check_choices(correction: str, family: str, alpha: float) -> None:
    if correction not in CORRECTIONS:
        raise InputError(
            f"Correction {correction!r} is not supported: expected 'bonferroni' or 'fdr_bh'."
        )
    if family not in FAMILIES:
        raise InputError(
            f"Subgroup test family {family!r} is not supported: expected 'all' (every test of "
            "a dataset and metric, the default) or 'model' (within one model and grouping)."
        )
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha is {alpha}: expected 0 < alpha < 1, e.g. 0.05.")


def subgroup_members(metadata: pd.DataFrame, groupings: Mapping[str, GroupSpec]) -> pd.DataFrame:
    """Which case is in which group: one row per (grouping, real group, case_id).

    The groups of :func:`subgroup_analysis` (the special ``(unassigned)`` and ``(no
    metadata)`` groups, never tested, are left out); query groups may share cases. Columns
    grouping, group, case_id (a string); rows in group order, then case id.
    """
    meta = _check_metadata(metadata)
    rows = [
        (name, group.label, case)
        for name, spec in groupings.items()
        for group in _resolve(name, spec, meta)
        if not group.special
        for case in sorted(group.cases)
    ]
    return pd.DataFrame(rows, columns=["grouping", "group", "case_id"], dtype=object)


def _group_summary(
    block: np.ndarray,
    boot: np.ndarray | None,
    group: _Group,
    min_size: int,
    confidence: float,
    ci_method: Literal["percentile", "bca"],
) -> tuple[np.ndarray, list[float], list[float], list[float], list[float], list[str]]:
    """Per column of one group's rows: n, mean, median, CI bounds and the skip reason.

    Means and medians are those of each column's finite values as a 1-D array: for the
    complete columns, of the contiguous rows of the transposed block, in one call (NumPy
    reduces each contiguous row as it reduces a 1-D array, so the floats are the same); the
    CIs of the qualifying columns come from :func:`~assay.stats._bootstrap.intervals`.
    """
    finite = np.isfinite(block)
    n = finite.sum(axis=0)
    means = np.full(block.shape[1], np.nan)
    medians = np.full(block.shape[1], np.nan)
    full = finite.all(axis=0) if block.shape[0] else np.zeros(block.shape[1], dtype=bool)
    if full.any():
        rows = np.ascontiguousarray(block[:, full].T)
        means[full] = rows.mean(axis=1)
        medians[full] = np.median(rows, axis=1)
    for col in np.flatnonzero(~full):
        x = block[finite[:, col], col]
        if x.size:
            means[col], medians[col] = x.mean(), np.median(x)
    mean: list[float] = means.tolist()
    median: list[float] = medians.tolist()
    if group.special:
        reasons = [group.reason] * block.shape[1]
    else:
        reasons = ["" if k >= min_size else f"n = {k} < min_size = {min_size}" for k in n]
    low = [float("nan")] * block.shape[1]
    high = list(low)
    ok = [j for j, r in enumerate(reasons) if not r]
    if ok and boot is not None:
        lo, hi, _ = intervals(block[:, ok], boot[:, ok], confidence, ci_method)
        for k, j in enumerate(ok):
            low[j], high[j] = float(lo[k]), float(hi[k])
    return n, mean, median, low, high, reasons


def subgroup_analysis(
    values: pd.DataFrame,
    metadata: pd.DataFrame,
    groupings: Mapping[str, GroupSpec],
    *,
    min_size: int = 10,
    correction: Literal["bonferroni", "fdr_bh"] = "bonferroni",
    family: Literal["all", "model"] = "all",
    alpha: float = ALPHA,
    n_bootstrap: int = 2000,
    seed: int = 0,
    ci_method: Literal["percentile", "bca"] = "percentile",
    confidence: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-group descriptive statistics and between-group tests, per slice and model.

    Parameters
    ----------
    values : tidy frame with columns dataset, model, case_id, structure, metric, value,
        already passed through a missing-value policy.
    metadata : one row per case: ``case_id`` plus metadata columns (ids compared as strings).
    groupings : grouping name → :data:`GroupSpec` (see :func:`parse_group_spec`). Bins are
        left-closed, right-open: ``[a, b)``; ``decades`` spans floor(min/10)·10 to
        floor(max/10)·10 + 10, every bin reported even if empty. Query groups may overlap;
        the tests then compare overlapping samples and are only descriptive.
    min_size : a (group, model) with fewer than ``min_size`` cases is reported with
        ``skipped=True`` and a reason, and left out of the tests.
    correction : ``"bonferroni"`` or ``"fdr_bh"`` (``statsmodels`` ``multipletests``).
    family : which tests one adjustment covers (:func:`adjust_subgroup_tests`): ``"all"``
        (default) every Mann–Whitney test of a (dataset, metric) — models × groupings ×
        structures — and separately every Kruskal–Wallis test; ``"model"`` the pairs of one
        (dataset, structure, metric, grouping, model).
    alpha : level of the ``significant`` column (``p_adj < alpha``).
    n_bootstrap, seed, ci_method, confidence : the CI of each group mean. The cases of one
        (dataset, structure, metric, grouping, group), in sorted case-id order, are
        resampled with ``numpy.random.default_rng(seed)`` exactly as
        :func:`assay.stats.paired_bootstrap_means` does (the same resampled cases for every
        model; a model's mean over the drawn cases it has), and the interval is the
        percentile (or BCa) interval of :func:`assay.stats.bootstrap_ci`.

    Returns
    -------
    groups : DataFrame
        One row per (dataset, structure, metric, grouping, group, model), models plus
        ``average`` (per-case mean over the models that have the case): n, mean, median,
        ci_low, ci_high (NaN for skipped groups), skipped, reason. Slice cases outside every
        group appear as group ``(unassigned)`` (column and bin groupings) or, for queries,
        cases without metadata as ``(no metadata)``; both are always skipped. Empty special
        groups are left out.
    tests : DataFrame
        Per (dataset, structure, metric, grouping, model) with at least two qualifying
        groups: one ``test="kruskal"`` row (``scipy.stats.kruskal``; group_a/group_b empty;
        p = 1 with a note when all values are identical, where H is undefined) and one
        ``test="mannwhitneyu"`` row per pair of qualifying groups
        (``scipy.stats.mannwhitneyu``, two-sided, SciPy's default method), with mean_a and
        mean_b (the group means), p_adj, significant (p_adj < alpha), correction, family
        and family_size (see :func:`adjust_subgroup_tests`). Pairwise tests are reported
        whatever the Kruskal–Wallis p.
    """
    _check_choices(correction, family, alpha)
    if min_size < 1:
        raise InputError(f"min_size is {min_size}: expected at least 1.")
    if n_bootstrap < 1:
        raise InputError(f"n_bootstrap is {n_bootstrap}: expected at least 1.")
    meta = _check_metadata(metadata)
    resolved = {name: _resolve(name, spec, meta) for name, spec in groupings.items()}
    known = frozenset(meta["case_id"])
    group_rows: list[dict[str, object]] = []
    test_rows: list[dict[str, object]] = []
    for piece in iter_slices(values):
        finite = np.isfinite(piece.matrix)
        avg = np.where(finite, piece.matrix, 0.0).sum(axis=1) / finite.sum(axis=1)
        matrix = np.column_stack([piece.matrix, avg])
        models = [*piece.models, AVERAGE_MODEL]
        finite_col = np.isfinite(matrix).all(axis=0)
        position = {case: i for i, case in enumerate(piece.cases)}
        slice_cases = frozenset(piece.cases)
        unknown = slice_cases - known
        base = dict(zip(SLICE_KEYS, piece.key, strict=True))
        for grouping, groups in resolved.items():
            rows_of = []
            for group in groups:
                members = group.cases | unknown if group.include_unknown else group.cases
                found = [position[c] for c in members if c in position]
                rows_of.append(np.sort(np.asarray(found, dtype=np.int64)))
            boots = [
                paired_bootstrap_means(matrix[rows], n_resamples=n_bootstrap, seed=seed)
                if rows.size and not group.special
                else None
                for group, rows in zip(groups, rows_of, strict=True)
            ]
            summaries = [
                _group_summary(matrix[rows], boot, group, min_size, confidence, ci_method)
                for group, rows, boot in zip(groups, rows_of, boots, strict=True)
            ]
            qualifying: list[list[tuple[str, np.ndarray]]] = []
            means: dict[tuple[int, str], float] = {}
            for j, model in enumerate(models):
                mine: list[tuple[str, np.ndarray]] = []
                for group, rows, summary in zip(groups, rows_of, summaries, strict=True):
                    n, mean, median, low, high, reasons = summary
                    if group.special and n[j] == 0:
                        continue
                    reason = reasons[j]
                    if not reason:
                        mine.append((group.label, rows))
                    means[(j, group.label)] = mean[j]
                    group_rows.append(
                        {
                            **base,
                            "grouping": grouping,
                            "group": group.label,
                            "model": model,
                            "n": int(n[j]),
                            "mean": mean[j],
                            "median": median[j],
                            "ci_low": low[j],
                            "ci_high": high[j],
                            "skipped": bool(reason),
                            "reason": reason,
                        }
                    )
                qualifying.append(mine)
            # Columns without missing cases share their groups: test them in one SciPy call.
            complete = [j for j in range(len(models)) if finite_col[j] and len(qualifying[j]) > 1]
            batches = [complete] if complete else []
            batches += [
                [j] for j in range(len(models)) if not finite_col[j] and len(qualifying[j]) > 1
            ]
            for cols in batches:
                first = qualifying[cols[0]]
                samples = []
                for _, rows in first:
                    block = matrix[np.ix_(rows, np.asarray(cols, dtype=np.intp))]
                    samples.append(block[np.isfinite(block[:, 0])])
                for j, result in zip(cols, _tests(samples), strict=True):
                    sizes = [int(np.isfinite(matrix[rows, j]).sum()) for _, rows in first]
                    labels = [label for label, _ in first]
                    h, p, note = result["kruskal"]
                    common = {**base, "grouping": grouping, "model": models[j]}
                    test_rows.append(
                        {
                            **common,
                            "test": "kruskal",
                            "group_a": "",
                            "group_b": "",
                            "n_a": sum(sizes),
                            "n_b": 0,
                            "mean_a": float("nan"),
                            "mean_b": float("nan"),
                            "statistic": h,
                            "p": p,
                            "note": note,
                        }
                    )
                    for ga, gb, stat, pu in result["pairs"]:
                        test_rows.append(
                            {
                                **common,
                                "test": "mannwhitneyu",
                                "group_a": labels[ga],
                                "group_b": labels[gb],
                                "n_a": sizes[ga],
                                "n_b": sizes[gb],
                                "mean_a": means[(j, labels[ga])],
                                "mean_b": means[(j, labels[gb])],
                                "statistic": stat,
                                "p": pu,
                                "note": "",
                            }
                        )
    group_columns = [
        *SLICE_KEYS,
        "grouping",
        "group",
        "model",
        "n",
        "mean",
        "median",
        "ci_low",
        "ci_high",
        "skipped",
        "reason",
    ]
    test_columns = [
        *SLICE_KEYS,
        "grouping",
        "model",
        "test",
        "group_a",
        "group_b",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "statistic",
        "p",
        "p_adj",
        "correction",
        "family",
        "family_size",
        "significant",
        "note",
    ]
    adjusted = ("p_adj", "correction", "family", "family_size", "significant")
    tests = adjust_subgroup_tests(
        pd.DataFrame(test_rows, columns=[c for c in test_columns if c not in adjusted]),
        correction=correction,
        family=family,
        alpha=alpha,
    )
    return (
        pd.DataFrame(group_rows, columns=group_columns),
        tests.loc[:, test_columns],
    )
