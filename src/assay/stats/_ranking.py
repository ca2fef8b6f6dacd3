"""Ranking schemes (aggregate-then-rank, rank-then-aggregate, test-then-rank) and consensus."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from assay.errors import InputError
from assay.stats._aggregate import check_values
from assay.stats._paired import higher_is_better_for
from assay.stats._policy import check_scores

__all__ = ["CONSENSUS_SCHEMES", "consensus_ranking", "rankings"]

#: Named consensus schemes.
CONSENSUS_SCHEMES: tuple[str, ...] = ("mean",)

_FAMILY = ["dataset", "structure", "metric"]
_RANK_COLUMNS = [
    "dataset",
    "structure",
    "metric",
    "model",
    "mean",
    "median",
    "rank_by_mean",
    "rank_by_median",
    "mean_case_rank",
    "rank_by_case_rank",
    "n_significant_wins",
    "rank_by_tests",
]


def _rank_min(x: np.ndarray) -> np.ndarray:
    """Ranks 1..k of ascending ``x`` (1 = smallest), ties share the minimum; NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    ok = ~np.isnan(x)
    if ok.any():
        out[ok] = rankdata(x[ok], method="min")
    return out


def _case_ranks(fam: pd.DataFrame, models: list[str], hib: bool) -> np.ndarray:
    """Mean over cases of the within-case rank of each model (missing = worst rank)."""
    wide = (
        fam.pivot(index="case_id", columns="model", values="value")
        .reindex(columns=models)
        .astype(np.float64)
    )
    arr = wide.to_numpy()
    if arr.shape[0] == 0:
        return np.full(len(models), np.nan)
    key = -arr if hib else arr  # rank 1 = best
    ranks = rankdata(key, method="min", axis=1, nan_policy="omit")
    n_present = np.sum(~np.isnan(arr), axis=1, keepdims=True)
    ranks = np.where(np.isnan(arr), n_present + 1.0, ranks)
    return np.asarray(ranks.mean(axis=0), dtype=np.float64)


def rankings(
    values: pd.DataFrame,
    aggregates: pd.DataFrame,
    pairwise: pd.DataFrame,
    *,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """Rank models per (dataset, structure, metric) under four schemes.

    Parameters
    ----------
    values : pandas.DataFrame
        Per-case values (output of :func:`~assay.stats._policy.apply_policy`, optionally with
        :func:`~assay.stats._aggregate.case_averages` rows appended).
    aggregates : pandas.DataFrame
        Output of :func:`~assay.stats._aggregate.aggregate` (``mean``, ``median``); its
        (dataset, structure, metric, model) rows define what is ranked.
    pairwise : pandas.DataFrame
        Output of :func:`~assay.stats._paired.pairwise_wilcoxon` (``significant``).
    higher_is_better : bool, optional
        Direction for every metric; ``None`` decides per metric with
        :data:`~assay.stats._paired.LOWER_IS_BETTER`.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, structure, metric, model) of ``aggregates``, with columns
        ``mean, median`` and:

        - ``rank_by_mean``: aggregate-then-rank on the mean;
        - ``rank_by_median``: aggregate-then-rank on the median;
        - ``mean_case_rank`` and ``rank_by_case_rank``: rank-then-aggregate. Within every case
          of the family (every case with a value for at least one model), the models are ranked
          (1 = best); a model without a value for that case gets the worst rank
          :math:`k_c + 1`, with :math:`k_c` the number of models that have one (DESIGN §4:
          missing = worst rank). ``mean_case_rank`` is the mean of these ranks over the
          cases, and ``rank_by_case_rank`` ranks it ascending. NaN when ``values`` has no row of
          the family;
        - ``n_significant_wins`` and ``rank_by_tests``: test-then-rank. The score of a model is
          the number of models it significantly beats (rows of ``pairwise`` with it as
          ``model_a`` and ``significant``); ranked descending. NaN when ``pairwise`` has no row
          of the family.

        All ranks are 1-based and ties share the minimum rank
        (``scipy.stats.rankdata(method="min")``: e.g. scores 0.9, 0.8, 0.8, 0.7 rank 1, 2, 2, 4).
    """
    check_values(values, allow_average=True)
    check_scores(
        aggregates, ("dataset", "model", "structure", "metric", "mean", "median"), "aggregates"
    )
    check_scores(pairwise, (*_FAMILY, "model_a", "model_b", "significant"), "pairwise")

    val_groups = dict(iter(values.groupby(_FAMILY, sort=False)))
    pw_groups = dict(iter(pairwise.groupby(_FAMILY, sort=False)))
    parts: list[pd.DataFrame] = []
    for key, fam in aggregates.groupby(_FAMILY, sort=True):
        hib = higher_is_better_for(str(key[2]), higher_is_better)
        sign = -1.0 if hib else 1.0
        part = fam.loc[:, ["dataset", "structure", "metric", "model", "mean", "median"]].copy()
        part = part.reset_index(drop=True)
        models = part["model"].astype(str).tolist()
        if len(set(models)) != len(models):
            raise InputError(f"aggregates has duplicate models in family {key}.")
        part["rank_by_mean"] = _rank_min(sign * part["mean"].to_numpy(np.float64))
        part["rank_by_median"] = _rank_min(sign * part["median"].to_numpy(np.float64))

        vfam = val_groups.get(key)
        if vfam is None:
            part["mean_case_rank"] = np.nan
        else:
            part["mean_case_rank"] = _case_ranks(vfam, models, hib)
        part["rank_by_case_rank"] = _rank_min(part["mean_case_rank"].to_numpy(np.float64))

        pfam = pw_groups.get(key)
        if pfam is None:
            part["n_significant_wins"] = np.nan
        else:
            wins = pfam.loc[pfam["significant"].astype(bool)].groupby("model_a").size()
            part["n_significant_wins"] = part["model"].map(wins).fillna(0).to_numpy(np.float64)
        part["rank_by_tests"] = _rank_min(-part["n_significant_wins"].to_numpy(np.float64))
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=_RANK_COLUMNS)
    return pd.concat(parts, ignore_index=True).loc[:, _RANK_COLUMNS]


def consensus_ranking(
    rankings: pd.DataFrame,
    scheme: Literal["mean"] = "mean",
    *,
    rank_column: str = "rank_by_mean",
) -> pd.DataFrame:
    """Consensus ranking across datasets by mean rank.

    Parameters
    ----------
    rankings : pandas.DataFrame
        Output of :func:`rankings` (several datasets).
    scheme : {"mean"}
        Consensus scheme; ``mean``: :math:`\\bar r_m = \\frac{1}{|D_m|}\\sum_{d \\in D_m} r_{m,d}`
        over the datasets :math:`D_m` on which model :math:`m` is ranked.
    rank_column : str
        Which per-dataset rank to combine (default ``rank_by_mean``).

    Returns
    -------
    pandas.DataFrame
        One row per (structure, metric, model): ``n_datasets`` (:math:`|D_m|`, so a model ranked
        on fewer datasets is visible), ``mean_rank`` and ``consensus_rank`` (ascending mean rank,
        ties share the minimum). Rows whose ``rank_column`` is NaN are not counted.
    """
    if scheme not in CONSENSUS_SCHEMES:
        raise InputError(
            f"Unknown consensus scheme {scheme!r}; expected one of {list(CONSENSUS_SCHEMES)}."
        )
    check_scores(rankings, ("dataset", "structure", "metric", "model", rank_column), "rankings")
    r = rankings.loc[rankings[rank_column].notna()]
    g = r.groupby(["structure", "metric", "model"], sort=True)[rank_column]
    out = pd.DataFrame({"n_datasets": g.size().astype(np.int64), "mean_rank": g.mean()})
    out = out.reset_index()
    out["consensus_rank"] = (
        out.groupby(["structure", "metric"], sort=False)["mean_rank"]
        .transform(lambda s: pd.Series(_rank_min(s.to_numpy(np.float64)), index=s.index))
        .astype(np.float64)
    )
    return out
