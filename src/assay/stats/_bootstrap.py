"""Paired case bootstrap: resampled means and confidence intervals (DESIGN.md §4).

The bootstrap is *paired*: every resample draws one vector of case indices and applies it to
every model, so model comparisons within a resample see the same cases. Resampling is seeded
(``numpy.random.default_rng(seed)``) and the case indices are drawn exactly as
:func:`scipy.stats.bootstrap` draws them (``rng.integers(0, n, size=(B, n))``), so a single
complete model column gives the same bootstrap distribution as SciPy with the same seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from assay.errors import InputError
from assay.stats._aggregate import check_values as check_aggregate_values

#: Columns that identify one statistical slice (one cases × models matrix).
SLICE_KEYS = ("dataset", "structure", "metric")
#: Below this many cases a bootstrap interval is flagged as unreliable.
MIN_RELIABLE_N = 50
#: Upper bound on the elements of one (resamples × cases) weight block, to bound memory.
_BLOCK_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class SliceMatrix:
    """One (dataset, structure, metric) slice pivoted to a cases × models matrix.

    Attributes
    ----------
    key : (dataset, structure, metric).
    cases : case ids, one per row, sorted.
    models : model names, one per column, sorted.
    matrix : float array of shape (n_cases, n_models); NaN where a model lacks a case.
    """

    key: tuple[str, str, str]
    cases: list[str]
    models: list[str]
    matrix: np.ndarray


def check_values(values: pd.DataFrame) -> None:
    """Validate a tidy ``values`` frame (the ``average`` structure allowed); see
    :func:`assay.stats._aggregate.check_values`."""
    check_aggregate_values(values, allow_average=True)


def pivot_slice(frame: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray]:
    """Pivot the rows of one slice into a cases × models matrix.

    Parameters
    ----------
    frame : rows of one (dataset, structure, metric) with columns model, case_id, value.

    Returns
    -------
    cases : sorted case ids (rows), the union over models.
    models : sorted model names (columns).
    matrix : float64 array (n_cases, n_models), NaN where a model lacks a case.
    """
    wide = frame.pivot(index="case_id", columns="model", values="value").sort_index(axis=0)
    wide = wide.sort_index(axis=1)
    matrix = wide.to_numpy(dtype=np.float64)
    return [str(c) for c in wide.index], [str(m) for m in wide.columns], matrix


def iter_slices(values: pd.DataFrame) -> Iterator[SliceMatrix]:
    """Yield every (dataset, structure, metric) slice of ``values`` as a :class:`SliceMatrix`.

    Slices come in sorted key order. ``values`` is validated with :func:`check_values` first.
    """
    check_values(values)
    for key, frame in values.groupby(list(SLICE_KEYS), sort=True, observed=True):
        cases, models, matrix = pivot_slice(frame)
        dataset, structure, metric = (str(k) for k in key)
        yield SliceMatrix((dataset, structure, metric), cases, models, matrix)


@functools.cache
def _count_kernel() -> Callable[[np.ndarray, np.ndarray], None]:
    """The compiled counting loop (numba, compiled on first use and cached on disk)."""
    from numba import njit

    @njit(cache=True, nogil=True)
    def count(idx: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for b in range(idx.shape[0]):
            row = out[b]
            for k in range(idx.shape[1]):
                row[idx[b, k]] += 1.0

    return count


def _weight_blocks(n_cases: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (block, n_cases) float arrays of resample counts, block after block.

    Row ``b`` holds how often each case was drawn in resample ``b``. The indices are drawn
    block by block from one generator; consecutive ``rng.integers`` calls continue the same
    stream, so the rows equal those of one ``rng.integers(0, n, size=(B, n))`` call (int32
    draws equal int64 draws: both take one bounded 32-bit Lemire draw per index).
    """
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BLOCK_ELEMENTS // max(n_cases, 1)))
    dtype = np.int32 if n_cases < 2**31 else np.int64
    count = _count_kernel()
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        idx = rng.integers(0, n_cases, size=(size, n_cases), dtype=dtype)
        weights = np.zeros((size, n_cases), dtype=np.float64)
        count(idx, weights)
        yield weights


def paired_bootstrap_means(
    matrix: np.ndarray, *, n_resamples: int = 2000, seed: int = 0
) -> np.ndarray:
    """Paired case-bootstrap distribution of every column's NaN-aware mean.

    With ``idx = default_rng(seed).integers(0, n, size=(B, n))`` (the same indices for every
    column), resample ``b`` of column ``j`` is

    .. math:: \\bar x^*_{bj} = \\frac{\\sum_i w_{bi}\\, x_{ij}\\, [x_{ij}\\ \\text{finite}]}
                                    {\\sum_i w_{bi}\\, [x_{ij}\\ \\text{finite}]},

    where :math:`w_{bi}` counts how often case ``i`` occurs in ``idx[b]``; this equals
    ``np.nanmean(matrix[idx[b], j])``. It is computed as one (B × n) @ (n × m') product, in
    blocks of resamples of at most 10⁶ weights, with no Python loop over cases; the
    denominators are computed only for columns with missing values (for a complete column
    they are n).

    Parameters
    ----------
    matrix : array (n_cases, n_models); NaN marks a case the model lacks.
    n_resamples : B, the number of bootstrap resamples (≥ 1).
    seed : seed of ``numpy.random.default_rng``; the same seed gives identical output.

    Returns
    -------
    array (n_resamples, n_models)
        Bootstrap means. NaN where a resample drew none of a column's cases (possible for a
        model with few cases; a column without any finite value is NaN throughout).

    Raises
    ------
    InputError
        If ``matrix`` is not 2-D, has no rows, or ``n_resamples < 1``.
    """
    data = np.asarray(matrix, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        raise InputError(
            f"Bootstrap matrix has shape {data.shape}: expected (n_cases ≥ 1, n_models). "
            "Pivot one (dataset, structure, metric) slice with cases as rows."
        )
    if n_resamples < 1:
        raise InputError(f"n_resamples is {n_resamples}: expected at least 1.")
    n, m = data.shape
    finite = np.isfinite(data)
    gaps = ~finite.all(axis=0)
    rhs = np.hstack([np.where(finite, data, 0.0), finite[:, gaps].astype(np.float64)])
    out = np.empty((n_resamples, m), dtype=np.float64)
    row = 0
    for weights in _weight_blocks(n, n_resamples, seed):
        prod = weights @ rhs
        block = out[row : row + len(weights)]
        block[:] = prod[:, :m] / float(n)
        if gaps.any():
            counts = prod[:, m:]
            with np.errstate(invalid="ignore", divide="ignore"):
                block[:, gaps] = np.where(counts > 0, prod[:, :m][:, gaps] / counts, np.nan)
        row += len(weights)
    return out


def slice_bootstrap_means(
    slices: Sequence[SliceMatrix], *, n_resamples: int = 2000, seed: int = 0
) -> list[np.ndarray]:
    """Paired bootstrap means for several slices, sharing one resampling per case set.

    Slices with the same case ids (typically the structures and metrics of one dataset) are
    stacked column-wise and bootstrapped in one :func:`paired_bootstrap_means` call, so they
    share the resampled cases; the result for each slice equals bootstrapping it alone with
    the same seed. :func:`~assay.stats.analyze` computes them once and hands them to both
    :func:`ci_table` and the rank stability.

    Returns
    -------
    list of arrays (n_resamples, n_models), one per slice, in input order.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, piece in enumerate(slices):
        groups.setdefault(tuple(piece.cases), []).append(i)
    result: list[np.ndarray] = [np.empty(0)] * len(slices)
    for members in groups.values():
        stacked = np.ascontiguousarray(np.hstack([slices[i].matrix for i in members]))
        means = paired_bootstrap_means(stacked, n_resamples=n_resamples, seed=seed)
        col = 0
        for i in members:
            width = slices[i].matrix.shape[1]
            result[i] = means[:, col : col + width]
            col += width
    return result


def _jackknife_acceleration(x: np.ndarray) -> float:
    """Acceleration :math:`\\hat a` of the BCa interval from the jackknife of the mean.

    With leave-one-out means :math:`\\theta_{(i)} = (S - x_i)/(k - 1)` and
    :math:`U_i = (k - 1)(\\bar\\theta_{(\\cdot)} - \\theta_{(i)})`,
    :math:`\\hat a = \\sum U_i^3 / (6 (\\sum U_i^2)^{3/2})` (Efron & Tibshirani 1993, eq. 14.15;
    as in ``scipy.stats.bootstrap``). NaN when k < 2 or all values are equal.
    """
    k = x.size
    if k < 2:
        return float("nan")
    loo = (x.sum() - x) / (k - 1)
    u = (k - 1) * (loo.mean() - loo)
    den = float(np.sum(u**2))
    if den == 0.0:
        return float("nan")
    return float(np.sum(u**3) / (6.0 * den**1.5))


def _interval(
    column: np.ndarray,
    boot: np.ndarray,
    confidence: float,
    method: Literal["percentile", "bca"],
) -> tuple[float, float, list[str]]:
    """Two-sided interval of one column from its bootstrap means; returns notes too."""
    notes: list[str] = []
    x = column[np.isfinite(column)]
    valid = boot[np.isfinite(boot)]
    if valid.size < boot.size:
        notes.append(
            f"{boot.size - valid.size} of {boot.size} resamples drew none of this model's "
            "cases and were left out of the interval"
        )
    if valid.size == 0:
        return float("nan"), float("nan"), notes
    alpha = (1.0 - confidence) / 2.0
    if np.ptp(valid) == 0.0:
        notes.append("degenerate bootstrap distribution: interval collapsed to the estimate")
        return float(valid[0]), float(valid[0]), notes
    if method == "percentile":
        probs = np.array([alpha, 1.0 - alpha])
    else:
        theta = float(x.mean())
        frac = (np.count_nonzero(valid < theta) + np.count_nonzero(valid <= theta)) / (
            2.0 * valid.size
        )
        z0 = float(ndtri(frac))
        a_hat = _jackknife_acceleration(x)
        z = np.array([ndtri(alpha), -ndtri(alpha)])
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = ndtr(z0 + (z0 + z) / (1.0 - a_hat * (z0 + z)))
        if not np.all(np.isfinite(probs)):
            notes.append("BCa interval undefined (estimate outside the bootstrap distribution)")
            return float("nan"), float("nan"), notes
    low, high = np.quantile(valid, probs)
    return float(low), float(high), notes


def intervals(
    matrix: np.ndarray,
    boot: np.ndarray,
    confidence: float,
    method: Literal["percentile", "bca"],
) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """:func:`_interval` of every column of ``matrix`` from its bootstrap column of ``boot``.

    Percentile intervals of columns whose resamples are all finite and not all equal (the
    usual case, without notes) come from one ``np.quantile(..., axis=0)`` call, which
    computes each column as the 1-D call does; every other column goes through
    :func:`_interval`.

    Returns
    -------
    low, high : arrays (n_columns,).
    notes : per column, the notes of :func:`_interval`.
    """
    m = boot.shape[1]
    low, high = np.full(m, np.nan), np.full(m, np.nan)
    notes: list[list[str]] = [[] for _ in range(m)]
    fast = np.zeros(m, dtype=bool)
    if method == "percentile" and boot.shape[0]:
        fast = np.isfinite(boot).all(axis=0) & (np.ptp(boot, axis=0) != 0.0)
    if fast.any():
        alpha = (1.0 - confidence) / 2.0
        q = np.quantile(boot[:, fast], np.array([alpha, 1.0 - alpha]), axis=0)
        low[fast], high[fast] = q[0], q[1]
    for j in np.flatnonzero(~fast):
        low[j], high[j], notes[j] = _interval(matrix[:, j], boot[:, j], confidence, method)
    return low, high, notes


def bootstrap_ci(
    values: pd.DataFrame,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: Literal["percentile", "bca"] = "percentile",
) -> pd.DataFrame:
    """Paired-bootstrap confidence intervals of each model's mean, per slice.

    For each (dataset, structure, metric) the slice is pivoted to cases × models and
    resampled with :func:`paired_bootstrap_means` (the same seed for every slice, so slices
    with the same cases share resamples). With :math:`\\alpha = (1 - c)/2` and the linear
    (Hyndman–Fan 7) quantile :math:`Q` of the finite bootstrap means :math:`\\theta^*`:

    - ``percentile``: :math:`[Q(\\alpha), Q(1 - \\alpha)]`;
    - ``bca``: :math:`[Q(\\alpha_1), Q(\\alpha_2)]` with
      :math:`\\alpha_{1,2} = \\Phi(z_0 + (z_0 + z_{\\alpha,1-\\alpha})
      / (1 - \\hat a (z_0 + z_{\\alpha,1-\\alpha})))`,
      :math:`z_0 = \\Phi^{-1}((\\#\\{\\theta^* < \\hat\\theta\\} + \\#\\{\\theta^* \\le
      \\hat\\theta\\}) / 2B)` and :math:`\\hat a` the jackknife acceleration of the mean
      (Efron & Tibshirani 1993, §14.3; the conventions of ``scipy.stats.bootstrap``).

    Edge cases: a degenerate bootstrap distribution (one case, or all values equal) gives
    ``ci_low = ci_high = mean`` for both methods (SciPy returns NaN there); resamples that drew
    none of a model's cases are left out and counted in ``warning``; a BCa interval whose
    :math:`z_0` is infinite is NaN with a warning.

    Parameters
    ----------
    values : tidy frame with columns dataset, model, case_id, structure, metric, value,
        already passed through a missing-value policy (no NaN; a model may lack cases).
    n_resamples : B (default 2,000).
    seed : seed of ``numpy.random.default_rng``; the same seed gives identical output.
    confidence : two-sided confidence level in (0, 1).
    method : ``"percentile"`` or ``"bca"`` (``"BCa"`` is accepted).

    Returns
    -------
    DataFrame
        One row per (dataset, structure, metric, model): n (cases of the model), mean,
        ci_low, ci_high, confidence, method, n_resamples, seed, and ``warning`` (``""`` or
        notes joined by ``"; "``, starting with ``"n < 50: interval unreliable"`` when n < 50).
    """
    chosen = str(method).lower()
    if chosen not in ("percentile", "bca"):
        raise InputError(
            f"Bootstrap method {method!r} is not supported: expected 'percentile' or 'bca'."
        )
    if not 0.0 < confidence < 1.0:
        raise InputError(f"Confidence level {confidence} is outside (0, 1): use e.g. 0.95.")
    slices = list(iter_slices(values))
    boots = slice_bootstrap_means(slices, n_resamples=n_resamples, seed=seed)
    return ci_table(
        slices,
        boots,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        method="bca" if chosen == "bca" else "percentile",
    )


def ci_table(
    slices: Sequence[SliceMatrix],
    boots: Sequence[np.ndarray],
    *,
    n_resamples: int,
    seed: int,
    confidence: float,
    method: Literal["percentile", "bca"],
) -> pd.DataFrame:
    """The frame of :func:`bootstrap_ci` from the slices and their bootstrap means
    (:func:`slice_bootstrap_means` with the same ``n_resamples`` and ``seed``)."""
    rows = []
    for piece, boot in zip(slices, boots, strict=True):
        lows, highs, all_notes = intervals(piece.matrix, boot, confidence, method)
        for j, model in enumerate(piece.models):
            column = piece.matrix[:, j]
            n = int(np.isfinite(column).sum())
            low, high, notes = float(lows[j]), float(highs[j]), all_notes[j]
            if n < MIN_RELIABLE_N:
                notes.insert(0, f"n < {MIN_RELIABLE_N}: interval unreliable")
            rows.append(
                {
                    "dataset": piece.key[0],
                    "structure": piece.key[1],
                    "metric": piece.key[2],
                    "model": model,
                    "n": n,
                    "mean": float(np.mean(column[np.isfinite(column)])),
                    "ci_low": low,
                    "ci_high": high,
                    "confidence": confidence,
                    "method": method,
                    "n_resamples": n_resamples,
                    "seed": seed,
                    "warning": "; ".join(notes),
                }
            )
    columns = [
        *SLICE_KEYS,
        "model",
        "n",
        "mean",
        "ci_low",
        "ci_high",
        "confidence",
        "method",
        "n_resamples",
        "seed",
        "warning",
    ]
    return pd.DataFrame(rows, columns=columns)
