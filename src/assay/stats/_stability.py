"""Rank stability under the paired case bootstrap (DESIGN.md §4).

For every bootstrap resample the models are ranked by their resampled mean; the spread of
those ranks (P(rank 1), mean and median rank, 95 % rank interval) and Kendall's τ between the
full-data ranking and each resampled ranking show whether a leaderboard order is real.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from assay.stats._bootstrap import (
    SLICE_KEYS,
    SliceMatrix,
    iter_slices,
    slice_bootstrap_means,
)
from assay.stats._paired import higher_is_better_for


def metric_higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (the metric registry's direction)."""
    return higher_is_better_for(metric)


def rank_min(scores: np.ndarray, *, higher_is_better: bool = True) -> np.ndarray:
    """Rank the columns of each row, 1 = best, ties sharing the minimum rank.

    :math:`r_{bj} = 1 + \\#\\{k : s_{bk} \\succ s_{bj}\\}` where :math:`\\succ` is "better"
    (``>`` when higher is better, ``<`` otherwise); for finite scores this equals
    ``scipy.stats.rankdata(-s, method='min')`` (or of ``s``) row by row. NaN (no value) ranks
    after every finite score, and all NaN entries of a row share the rank
    ``1 + #finite``: missing counts as worst. Vectorised as an (rows, m, m) comparison.

    Parameters
    ----------
    scores : array (n_rows, m) or (m,).
    higher_is_better : orientation of the scores.

    Returns
    -------
    int array of the same shape as ``scores``.
    """
    s = np.asarray(scores, dtype=np.float64)
    oriented = s if higher_is_better else -s
    oriented = np.where(np.isnan(oriented), -np.inf, oriented)
    better = oriented[..., None, :] > oriented[..., :, None]  # [.., j, k]: k better than j
    ranks: np.ndarray = (1 + better.sum(axis=-1)).astype(np.int64)
    return ranks


def kendall_tau_b(reference: np.ndarray, rankings: np.ndarray) -> np.ndarray:
    """Kendall's τ-b between one ranking and each row of ``rankings``, vectorised.

    Over the pairs :math:`i < j`, with :math:`s^x_{ij} = \\operatorname{sign}(x_i - x_j)`
    and :math:`s^y_{ij} = \\operatorname{sign}(y_i - y_j)`,

    .. math:: \\tau_b = \\frac{\\sum s^x s^y}{\\sqrt{\\sum (s^x)^2 \\sum (s^y)^2}}
              = \\frac{n_c - n_d}{\\sqrt{(n_0 - n_1)(n_0 - n_2)}},

    the tie-corrected statistic of ``scipy.stats.kendalltau`` (its default ``variant='b'``).
    NaN where either ranking is constant (or m < 2), as in SciPy.

    Parameters
    ----------
    reference : array (m,).
    rankings : array (n_rows, m).

    Returns
    -------
    float array (n_rows,).
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(rankings, dtype=np.float64)
    i, j = np.triu_indices(x.size, k=1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(y[:, i] - y[:, j])
    den = np.sqrt(np.sum(sx**2) * np.sum(sy**2, axis=1))
    num = sy @ sx
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def rank_stability(
    values: pd.DataFrame,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    higher_is_better: bool | Callable[[str], bool] = metric_higher_is_better,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bootstrap distribution of each model's rank and of Kendall's τ to the full ranking.

    Per (dataset, structure, metric) slice: the full-data ranking ranks the models' means
    (:func:`rank_min`: 1 = best, ties share the minimum rank, a model without value ranks
    last); each of the B paired bootstrap resamples (:func:`~assay.stats._bootstrap.
    paired_bootstrap_means`, same seed for every slice) is ranked the same way.

    Parameters
    ----------
    values : tidy frame with columns dataset, model, case_id, structure, metric, value,
        already passed through a missing-value policy.
    n_resamples : B (default 2,000).
    seed : seed of ``numpy.random.default_rng``; the same seed gives identical output.
    higher_is_better : one orientation for every metric, or a function of the metric name
        (default :func:`metric_higher_is_better`: distances hd, hd95, assd, masd are
        lower-is-better).

    Returns
    -------
    per_model : DataFrame
        One row per (dataset, structure, metric, model): n, mean, rank (full data),
        p_rank1 (fraction of resamples with rank 1), mean_rank, median_rank, rank_ci_low and
        rank_ci_high (2.5th and 97.5th percentiles of the bootstrap ranks, linear
        interpolation, so they may be half-integers).
    per_slice : DataFrame
        One row per (dataset, structure, metric): n_models, n_cases, n_resamples, tau_mean,
        tau_median, tau_q025, tau_q975 of Kendall's τ-b between the full-data ranking and
        each bootstrap ranking (:func:`kendall_tau_b`), and n_tau_undefined (resamples where
        τ is NaN: fewer than two models or a constant ranking; excluded from the summary,
        which is NaN when no τ is defined).
    """
    per_model, per_slice, _, _ = rank_bootstrap(
        values, n_resamples=n_resamples, seed=seed, higher_is_better=higher_is_better
    )
    return per_model, per_slice


def rank_bootstrap(
    values: pd.DataFrame,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    higher_is_better: bool | Callable[[str], bool] = metric_higher_is_better,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`rank_stability` plus the distributions behind it (for blob and violin plots).

    Returns
    -------
    per_model, per_slice : as :func:`rank_stability`.
    rank_counts : DataFrame
        dataset, structure, metric, model, rank, count, frequency: how many resamples (and
        which fraction of B) gave the model that rank; ranks never drawn are omitted.
    tau_samples : DataFrame
        dataset, structure, metric, resample, tau: Kendall's τ-b of every resample (NaN
        where undefined).
    """
    slices = list(iter_slices(values))
    boots = slice_bootstrap_means(slices, n_resamples=n_resamples, seed=seed)
    return rank_tables(slices, boots, n_resamples=n_resamples, higher_is_better=higher_is_better)


def rank_tables(
    slices: Sequence[SliceMatrix],
    boots: Sequence[np.ndarray],
    *,
    n_resamples: int,
    higher_is_better: bool | Callable[[str], bool] = metric_higher_is_better,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The frames of :func:`rank_bootstrap` from the slices and their bootstrap means
    (:func:`~assay.stats._bootstrap.slice_bootstrap_means` with ``n_resamples``)."""
    model_rows = []
    slice_rows = []
    count_rows: list[tuple[Any, ...]] = []
    tau_parts = []
    for piece, boot in zip(slices, boots, strict=True):
        metric = piece.key[2]
        hib = higher_is_better(metric) if callable(higher_is_better) else bool(higher_is_better)
        finite = np.isfinite(piece.matrix)
        counts = finite.sum(axis=0)
        means = np.where(finite, piece.matrix, 0.0).sum(axis=0) / np.maximum(counts, 1)
        means = np.where(counts > 0, means, np.nan)
        full = rank_min(means, higher_is_better=hib)
        ranks = rank_min(boot, higher_is_better=hib)
        low, median, high = np.percentile(ranks, [2.5, 50.0, 97.5], axis=0)
        for j, model in enumerate(piece.models):
            model_rows.append(
                {
                    "dataset": piece.key[0],
                    "structure": piece.key[1],
                    "metric": metric,
                    "model": model,
                    "n": int(counts[j]),
                    "mean": float(means[j]),
                    "rank": int(full[j]),
                    "p_rank1": float(np.mean(ranks[:, j] == 1)),
                    "mean_rank": float(ranks[:, j].mean()),
                    "median_rank": float(median[j]),
                    "rank_ci_low": float(low[j]),
                    "rank_ci_high": float(high[j]),
                }
            )
            drawn, count = np.unique(ranks[:, j], return_counts=True)
            count_rows.extend(
                (*piece.key, model, int(r), int(c), float(c / n_resamples))
                for r, c in zip(drawn, count, strict=True)
            )
        tau = kendall_tau_b(full, ranks)
        tau_parts.append(
            pd.DataFrame(
                {
                    "dataset": piece.key[0],
                    "structure": piece.key[1],
                    "metric": metric,
                    "resample": np.arange(tau.size),
                    "tau": tau,
                }
            )
        )
        defined = tau[np.isfinite(tau)]
        if defined.size:
            summary = [float(defined.mean()), *map(float, np.percentile(defined, [50, 2.5, 97.5]))]
        else:
            summary = [float("nan")] * 4
        slice_rows.append(
            {
                "dataset": piece.key[0],
                "structure": piece.key[1],
                "metric": metric,
                "n_models": len(piece.models),
                "n_cases": len(piece.cases),
                "n_resamples": n_resamples,
                "tau_mean": summary[0],
                "tau_median": summary[1],
                "tau_q025": summary[2],
                "tau_q975": summary[3],
                "n_tau_undefined": int(tau.size - defined.size),
            }
        )
    model_columns = [
        *SLICE_KEYS,
        "model",
        "n",
        "mean",
        "rank",
        "p_rank1",
        "mean_rank",
        "median_rank",
        "rank_ci_low",
        "rank_ci_high",
    ]
    slice_columns = [
        *SLICE_KEYS,
        "n_models",
        "n_cases",
        "n_resamples",
        "tau_mean",
        "tau_median",
        "tau_q025",
        "tau_q975",
        "n_tau_undefined",
    ]
    count_columns = [*SLICE_KEYS, "model", "rank", "count", "frequency"]
    tau_columns = [*SLICE_KEYS, "resample", "tau"]
    return (
        pd.DataFrame(model_rows, columns=model_columns),
        pd.DataFrame(slice_rows, columns=slice_columns),
        pd.DataFrame(count_rows, columns=count_columns),
        pd.concat(tau_parts, ignore_index=True) if tau_parts else pd.DataFrame(columns=tau_columns),
    )
