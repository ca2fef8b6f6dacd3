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

import functools
import itertools
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from assay.errors import InputError
from assay.metrics import METRICS, metric_info
from assay.stats._aggregate import check_values
from assay.stats._options import N_PERMUTATIONS, WINNER_RULES
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


#: The built-in lower-is-better metrics (from the metric registry, at import; metrics
#: registered later are known to :func:`higher_is_better_for`).
LOWER_IS_BETTER: frozenset[str] = frozenset(
    m.key for m in METRICS.values() if m.higher_is_better is False
)

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
    """Direction of a metric: ``override`` if given, else the metric registry's.

    Raises
    ------
    InputError
        The metric is not registered (:class:`~assay.metrics.UnknownMetricError`), or it is a
        measurement without a direction (a volume) and cannot be ranked.
    """
    if override is not None:
        return bool(override)
    info = metric_info(metric)
    if info.higher_is_better is None:
        raise InputError(
            f"Metric {metric!r} ({info.title}) is a measurement, not a score: it has no "
            "better direction and cannot be ranked or tested; analyse dsc, nsd, hd95, ..."
        )
    return info.higher_is_better


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


def _bits_from_raw(rng: np.random.Generator, sizes: list[int], n: int) -> Iterator[np.ndarray]:
    """``rng.integers(0, 2, size=(size, n), dtype=np.int8)`` for each size, from raw words.

    NumPy draws each such int8 from one byte of its 32-bit stream (bytes low to high, a new
    32-bit word per call's first byte, bounded Lemire with range 2 keeping the byte's top
    bit, never rejecting); the 32-bit stream is the 64-bit output split low half first,
    continued across calls. Reading the bytes of ``random_raw`` directly gives the same bits
    about 10 times faster; :func:`_raw_bits_match` checks the equivalence once per process.
    """
    bitgen = rng.bit_generator
    pending = np.empty(0, dtype="<u4")
    for size in sizes:
        words = -(-size * n // 4)
        fresh = -(-(words - pending.size) // 2)
        stream = np.concatenate([pending, bitgen.random_raw(max(fresh, 0)).view("<u4")])
        pending = stream[words:]
        yield (stream[:words].view(np.uint8)[: size * n] >> 7).reshape(size, n)


@functools.cache
def _raw_bits_match() -> bool:
    """Whether :func:`_bits_from_raw` reproduces ``rng.integers`` on this NumPy."""
    if sys.byteorder != "little" or not isinstance(
        np.random.default_rng(0).bit_generator, np.random.PCG64
    ):
        return False
    sizes = [3, 5, 2, 7]
    for n in (1, 5, 13, 64):
        ref = np.random.default_rng([7, n])
        fast = _bits_from_raw(np.random.default_rng([7, n]), sizes, n)
        for size, got in zip(sizes, fast, strict=True):
            want = ref.integers(0, 2, size=(size, n), dtype=np.int8)
            if not np.array_equal(got, want):
                return False
    return True


def _flip_blocks(rng: np.random.Generator, n_permutations: int, n: int) -> Iterator[np.ndarray]:
    """Random flip patterns (True: flipped), in blocks of :data:`_BLOCK` rows.

    Block after block ``rng.integers(0, 2, size=(size, n), dtype=np.int8).astype(bool)``, the
    stream every Monte-Carlo p of this module is defined by (drawn faster from the raw
    words where :func:`_raw_bits_match`).
    """
    sizes = [min(_BLOCK, n_permutations - s) for s in range(0, n_permutations, _BLOCK)]
    if _raw_bits_match():
        for bits in _bits_from_raw(rng, sizes, n):
            yield bits.view(bool)
    else:
        for size in sizes:
            yield rng.integers(0, 2, size=(size, n), dtype=np.int8).astype(bool)


def _mean_null_plan(
    x: np.ndarray, commons: list[np.ndarray], cols: list[tuple[int, int]], diffs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns whose sign-flipped sums give every pair's null sum, with fewer columns.

    For pairs sharing one set of common cases c, :math:`s \\cdot d_{jk} = s \\cdot (x_j c)
    - s \\cdot (x_k c)`: one column per model instead of one per pair. A group of pairs is
    decomposed so when it has more pairs than models, else its differences are used directly.

    Returns
    -------
    columns : (n, n_columns) matrix to multiply the ±1 patterns with.
    left, right : per pair, the column indices; the null sum is ``left - right`` (``right``
        is -1 for a direct column).
    """
    groups: dict[bytes, list[int]] = {}
    for c, common in enumerate(commons):
        groups.setdefault(np.packbits(common).tobytes(), []).append(c)
    columns: list[np.ndarray] = []
    left = np.empty(len(cols), dtype=np.int64)
    right = np.full(len(cols), -1, dtype=np.int64)
    for members in groups.values():
        models = sorted({m for c in members for m in cols[c]})
        if len(models) >= len(members):
            for c in members:
                left[c] = len(columns)
                columns.append(diffs[:, c])
            continue
        common = commons[members[0]]
        where = {}
        for m in models:
            where[m] = len(columns)
            columns.append(np.where(common, x[:, m], 0.0))
        for c in members:
            left[c], right[c] = where[cols[c][0]], where[cols[c][1]]
    return np.column_stack(columns), left, right


@functools.cache
def _signed_sums_kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """Compiled ``out[b] = Σ_c table[c, code(b, c)]`` (numba, cached on disk).

    ``bits`` is (rows, n) of 0/1 bytes; the code of row b and chunk c is
    :math:`b_{4c} + 2 b_{4c+1} + 4 b_{4c+2} + 8 b_{4c+3}` (bits past n count 0), the
    :func:`_nibble_codes` of the row, formed on the fly.
    """
    from numba import njit

    @njit(cache=True, nogil=True)
    def signed_sums(
        bits: np.ndarray, table: np.ndarray, out: np.ndarray
    ) -> None:  # pragma: no cover
        n = bits.shape[1]
        full = n // 4
        width = table.shape[2]
        acc = np.empty(width)
        for b in range(bits.shape[0]):
            row_bits = bits[b]
            acc[:] = 0.0
            for c in range(table.shape[0]):
                t = 4 * c
                if c < full:
                    code = (
                        row_bits[t]
                        + 2 * row_bits[t + 1]
                        + 4 * row_bits[t + 2]
                        + 8 * row_bits[t + 3]
                    )
                else:
                    code = 0
                    for u in range(n - t):
                        code += row_bits[t + u] << u
                row = table[c, code]
                for j in range(width):
                    acc[j] += row[j]
            out[b] = acc

    return signed_sums


def _nibble_codes(bits: np.ndarray) -> np.ndarray:
    """(rows, ⌈n/4⌉) uint8 codes b₀ + 2b₁ + 4b₂ + 8b₃ of each run of 4 0/1 bytes (the codes
    :func:`_signed_sums_kernel` forms; kept as its reference in the tests)."""
    rows, n = bits.shape
    padded = np.zeros((rows, -(-n // 4) * 4), dtype=np.uint8)
    padded[:, :n] = bits
    words = padded.view("<u4")  # byte t of a word lands on bit 24 + t:
    mixed = words * np.uint32((1 << 24) | (1 << 17) | (1 << 10) | (1 << 3))
    return ((mixed >> np.uint32(24)) & np.uint32(15)).astype(np.uint8)


def _sign_tables(columns: np.ndarray) -> np.ndarray:
    """(n_chunks, 16, width) partial sums: entry [c, code] = Σ_t ±columns[4c + t], the sign
    of term t negative where bit t of ``code`` is set (cases past n count 0)."""
    n, width = columns.shape
    padded = np.zeros((-(-n // 4) * 4, width))
    padded[:n] = columns
    signs = 1.0 - 2.0 * ((np.arange(16)[:, None] >> np.arange(4)) & 1)
    table: np.ndarray = np.einsum("st,ctj->csj", signs, padded.reshape(-1, 4, width))
    return table


def _mean_null_counts(
    x: np.ndarray,
    commons: list[np.ndarray],
    cols: list[tuple[int, int]],
    n_permutations: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo tail counts of the sign-flip test of the summed difference, every pair.

    The null sums are ``±1 patterns @ differences`` (patterns of :func:`_flip_blocks`).
    They are computed faster, as sums of the same terms in another order, from the columns
    of :func:`_mean_null_plan` and 4-case tables (:func:`_sign_tables`); since any order of
    summing n terms errs by at most :math:`\\gamma_n \\sum |t|`
    (:math:`\\gamma_n = nu/(1 - nu)`), a sum within twice that bound of a tie threshold is
    recomputed as the direct product, so every count equals the one of the direct product.
    """
    n_cases = x.shape[0]
    diffs = np.zeros((n_cases, len(cols)))
    for c, ((i, j), common) in enumerate(zip(cols, commons, strict=True)):
        diffs[common, c] = x[common, i] - x[common, j]
    observed = diffs.sum(axis=0)
    # sums of the same terms in another order differ by rounding: ties within
    # 100 eps of the sum of |d| (not of |observed|, which may cancel to ~0)
    scale = np.abs(diffs).sum(axis=0)
    tol = np.finfo(np.float64).eps * 100 * scale
    low, high = observed - tol, observed + tol
    columns, left, right = _mean_null_plan(x, commons, cols, diffs)
    u = np.finfo(np.float64).eps / 2
    gamma = n_cases * u / (1 - n_cases * u)
    size = np.abs(columns).sum(axis=0)
    terms = size[left] + np.where(right >= 0, size[right], 0.0)
    margin = 2.0 * (gamma + 2 * u) * (terms + scale)
    decomposed = np.flatnonzero(right >= 0)
    table = _sign_tables(columns)
    signed_sums = _signed_sums_kernel()
    greater = np.zeros(len(cols), dtype=np.int64)
    less = np.zeros(len(cols), dtype=np.int64)
    for flips in _flip_blocks(rng, n_permutations, n_cases):
        bits = flips.view(np.uint8)
        prod = np.empty((bits.shape[0], columns.shape[1]))
        signed_sums(bits, table, prod)
        null = prod[:, left]
        null[:, decomposed] -= prod[:, right[decomposed]]
        near = (np.abs(null - low) <= margin) | (np.abs(null - high) <= margin)
        for col in np.flatnonzero(near.any(axis=0)):
            rows = np.flatnonzero(near[:, col])
            null[rows, col] = (1.0 - 2.0 * bits[rows]) @ diffs[:, col]
        greater += np.count_nonzero(null >= low, axis=0)
        less += np.count_nonzero(null <= high, axis=0)
    return greater, less


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
    ``n_permutations`` random patterns (:func:`_flip_blocks`) shared by every pair of the
    family; for the mean, one product of the patterns with a few columns per block
    (:func:`_mean_null_counts`).
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
        cols = [pairs[k] for k in mc]
        commons = [present[:, i] & present[:, j] for i, j in cols]
        if statistic == "mean":
            greater, less = _mean_null_counts(x, commons, cols, n_permutations, rng)
        else:
            observed = np.array(
                [
                    np.median(x[cm, i]) - np.median(x[cm, j])
                    for (i, j), cm in zip(cols, commons, strict=True)
                ]
            )
            greater = np.zeros(len(cols), dtype=np.int64)
            less = np.zeros(len(cols), dtype=np.int64)
            for flips in _flip_blocks(rng, n_permutations, x.shape[0]):
                null = np.column_stack(
                    [
                        _median_difference_null(x[cm, i], x[cm, j], flips[:, cm])
                        for (i, j), cm in zip(cols, commons, strict=True)
                    ]
                )
                g_count, l_count = _count_tails(null, observed)
                greater += g_count
                less += l_count
        g, le = _tails((greater, less), n_permutations, exact=False)
        for c, k in enumerate(mc):
            out[k] = (float(g[c]), float(le[c]), False)
    return [o for o in out if o is not None]


def _describe_pairs(
    arr: np.ndarray, present: np.ndarray
) -> dict[tuple[int, int], tuple[int, int, float, float]]:
    """(n_paired, n_differing, mean, median of a − b) for every ordered pair (a, b).

    Computed once per unordered pair: :math:`fl(b - a) = -fl(a - b)` exactly (zeros +0), so
    the sum and the middle values of the reversed differences are the negated ones, and
    ``0.0 - v`` gives them bit for bit (also keeping a zero +0).
    """
    out: dict[tuple[int, int], tuple[int, int, float, float]] = {}
    for i, j in itertools.combinations(range(arr.shape[1]), 2):
        common = present[:, i] & present[:, j]
        d = arr[common, i] - arr[common, j]
        n = int(d.size)
        mean = float(np.mean(d)) if n else np.nan
        median = float(np.median(d)) if n else np.nan
        differing = int(np.count_nonzero(d))
        out[(i, j)] = (n, differing, mean, median)
        out[(j, i)] = (n, differing, 0.0 - mean, 0.0 - median)
    return out


#: Common cases above which scipy's ``wilcoxon`` (``method="auto"``) always uses the normal
#: approximation, whatever the ties: such pairs are tested in one vectorised call.
_ASYMPTOTIC_N = 50


def _wilcoxon_family(
    arr: np.ndarray, present: np.ndarray, alternative: str
) -> dict[tuple[int, int], tuple[float, bool]]:
    """(p, exact) of :func:`_one_sided_p` for every ordered pair of one family.

    Pairs with the same common cases, more than :data:`_ASYMPTOTIC_N` of them, go through
    one ``scipy.stats.wilcoxon(..., axis=0)`` call (the same formulas column by column, so
    the same p); the others one by one.
    """
    out: dict[tuple[int, int], tuple[float, bool]] = {}
    batches: dict[bytes, list[tuple[int, int]]] = {}
    for i, j in itertools.permutations(range(arr.shape[1]), 2):
        common = present[:, i] & present[:, j]
        if common.sum() > _ASYMPTOTIC_N:
            batches.setdefault(np.packbits(common).tobytes(), []).append((i, j))
        else:
            pv = _one_sided_p(arr[common, i], arr[common, j], alternative)
            out[(i, j)] = (pv, not (common.sum() > PERMUTATION_MAX_N))
    for batch in batches.values():
        i0, j0 = batch[0]
        common = present[:, i0] & present[:, j0]
        a = arr[np.ix_(common, [i for i, _ in batch])]
        b = arr[np.ix_(common, [j for _, j in batch])]
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")
            res = stats.wilcoxon(a, b, alternative=alternative, zero_method="wilcox", axis=0)
        pvalues = np.atleast_1d(np.asarray(res.pvalue, dtype=np.float64))
        for (i, j), pv, zero in zip(batch, pvalues, ~np.any(a != b, axis=0), strict=True):
            out[(i, j)] = (1.0 if zero or np.isnan(pv) else float(pv), False)
    return out


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, computed as ``statsmodels`` ``multipletests(p,
    method="holm")[1]`` does (the same operations, so the same floats), without the
    ``gc.collect()`` that call makes each time (a fifth of a second per family).

    :math:`\\tilde p_{(i)} = \\min(1, \\max_{j \\le i} (m - j + 1) p_{(j)})` over the
    ascending p-values.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate(np.take(p, order) * np.arange(p.size, 0, -1))
    adjusted[adjusted > 1] = 1
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


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
    common cases; the Holm step-down adjustment (:func:`holm`, as ``statsmodels``
    ``multipletests(method="holm")``) controls the family-wise error rate at ``alpha``.
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
            p.update(_wilcoxon_family(arr, present, alternative))
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
        described = _describe_pairs(arr, present)
        fam_rows: list[dict[str, object]] = []
        for i, j in itertools.permutations(range(len(models)), 2):
            n, n_differing, mean_d, median_d = described[(i, j)]
            pv, exact = p[(i, j)]
            fam_rows.append(
                {
                    "dataset": dataset,
                    "structure": structure,
                    "metric": metric,
                    "model_a": models[i],
                    "model_b": models[j],
                    "n_paired": n,
                    "n_differing": n_differing,
                    "mean_difference": mean_d,
                    "median_difference": median_d,
                    "p_value": min(1.0, pv),
                    "higher_is_better": hib,
                    "test": test_name,
                    "exact": bool(exact),
                }
            )
        if fam_rows:
            pvals = np.array([r["p_value"] for r in fam_rows], dtype=np.float64)
            p_holm = holm(pvals)
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
