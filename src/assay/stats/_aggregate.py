"""Descriptive aggregates per (dataset, model, structure, metric), with named conventions."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from assay.errors import InputError
from assay.stats._policy import KEY_COLUMNS, check_scores, check_unique

__all__ = ["AVERAGE", "CONVENTIONS", "aggregate", "case_averages"]

#: Name of the pseudo-structure that summarises all structures of a model.
AVERAGE = "average"
#: Named aggregation conventions.
CONVENTIONS: tuple[str, ...] = ("default", "touchstone")

Convention = Literal["default", "touchstone"]

_GROUP = ["dataset", "model", "structure", "metric"]
_STAT_COLUMNS = ["n", "mean", "sd", "median", "q1", "q3"]


def check_values(
    values: pd.DataFrame, what: str = "values", *, allow_average: bool = False
) -> None:
    """Validate a policy-applied value table (keys + finite-or-infinite, non-NaN ``value``)."""
    check_scores(values, (*KEY_COLUMNS, "value"), what)
    v = pd.to_numeric(values["value"], errors="coerce")
    if v.isna().any():
        row = values.loc[v.isna(), list(KEY_COLUMNS)].iloc[0].to_dict()
        raise InputError(
            f"{what} has {int(v.isna().sum())} NaN or non-numeric value(s), e.g. {row}. "
            "Statistics never drop values silently: pass the output of apply_policy()."
        )
    check_unique(values, what)
    if not allow_average and (values["structure"] == AVERAGE).any():
        raise InputError(
            f"{what} uses the reserved structure name {AVERAGE!r}; rename that structure."
        )


def _describe(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """n, mean, sample SD, median and linear quartiles of ``value`` per ``by`` group."""
    g = frame.groupby(by, sort=True)["value"]
    with np.errstate(invalid="ignore"):  # inf - inf inside the SD/quantiles of +inf distances
        out = pd.DataFrame(
            {
                "n": g.size().astype(np.int64),
                "mean": g.mean(),
                "sd": g.std(ddof=1),
                "median": g.median(),
                "q1": g.quantile(0.25, interpolation="linear"),
                "q3": g.quantile(0.75, interpolation="linear"),
            }
        )
    return out.reset_index()


def case_averages(values: pd.DataFrame) -> pd.DataFrame:
    """Per-case average over structures, as rows of the pseudo-structure ``average``.

    For each (dataset, model, case_id, metric), ``value`` = mean of the values of the
    structures that this case has (after the missing-value policy), i.e.
    :math:`\\bar x_c = \\frac{1}{|S_c|}\\sum_{s \\in S_c} x_{c,s}` with :math:`S_c` the structures
    with a value for case :math:`c`. Cases with no structure have no row. The result has the
    key columns plus ``value`` and can be passed to :func:`aggregate`'s internals, to paired
    tests or to rankings to obtain results for the average. When ``values`` has the policy's
    ``imputed`` column, the average row is ``imputed`` when any of its structure values was
    set by the policy (figures draw such averages as imputed).
    """
    check_values(values)
    by = ["dataset", "model", "case_id", "metric"]
    grouped = values.groupby(by, sort=True)
    avg = grouped["value"].mean().reset_index()
    avg["structure"] = AVERAGE
    if "imputed" not in values.columns:
        return avg.loc[:, [*KEY_COLUMNS, "value"]]
    avg["imputed"] = grouped["imputed"].any().to_numpy(dtype=bool)
    return avg.loc[:, [*KEY_COLUMNS, "value", "imputed"]]


def aggregate(values: pd.DataFrame, *, convention: Convention = "default") -> pd.DataFrame:
    """Aggregate per-case values per (dataset, model, structure, metric), plus an average row.

    Parameters
    ----------
    values : pandas.DataFrame
        Output of :func:`~assay.stats._policy.apply_policy` (columns ``dataset, model, case_id,
        structure, metric, value``; no NaN). Not modified.
    convention : {"default", "touchstone"}
        How the ``average`` row of each (dataset, model, metric) is computed (see Notes).

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset, model, structure, metric, n, mean, sd, median, q1, q3``, one row per
        (dataset, model, structure, metric) present in ``values`` and one row with
        ``structure == "average"`` per (dataset, model, metric); sorted by dataset, model,
        metric, then structure with ``average`` last.

    Raises
    ------
    InputError
        Unknown convention, missing columns, NaN values, duplicate keys, or a structure that is
        already called ``average``.

    Notes
    -----
    Per structure, over the :math:`n` values :math:`x_1, \\dots, x_n`:

    - ``mean`` :math:`\\bar x = \\frac1n \\sum_i x_i`;
    - ``sd`` the sample standard deviation
      :math:`\\sqrt{\\frac{1}{n-1}\\sum_i (x_i-\\bar x)^2}` (ddof = 1), NaN when :math:`n < 2`;
    - ``median``, ``q1``, ``q3``: 50th, 25th, 75th percentiles with linear interpolation
      (numpy's default, ``method="linear"``).

    The ``average`` row:

    - ``default``: statistics of the per-case averages (:func:`case_averages`): each case's
      mean over the structures it has, then n, mean, SD, median and quartiles over cases. A case
      that lacks some structures (not applicable) still counts, averaged over the rest.
    - ``touchstone``: as in the Touchstone paper (see the data README): ``mean`` = the mean
      of the per-structure means, ``sd`` = the mean of the per-structure SDs (NaN if any of
      them is NaN), over the structures the model has; ``median``, ``q1``, ``q3`` are NaN (the
      convention does not define them).

    In both conventions the ``n`` of the average row is the number of distinct cases with at
    least one structure value. Values may be ``+inf`` (distances of empty predictions); the
    mean is then ``inf`` and the SD NaN.
    """
    if convention not in CONVENTIONS:
        raise InputError(
            f"Unknown aggregation convention {convention!r}; expected one of {list(CONVENTIONS)}."
        )
    check_values(values)
    frame = values.loc[:, [*KEY_COLUMNS, "value"]].copy()
    frame["value"] = frame["value"].astype(np.float64)

    per_structure = _describe(frame, _GROUP)

    avg_values = case_averages(frame)
    if convention == "default":
        average = _describe(avg_values, _GROUP)
    else:
        by = ["dataset", "model", "metric"]
        g = per_structure.groupby(by, sort=True)
        average = pd.DataFrame(
            {
                "mean": g["mean"].mean(),
                "sd": g["sd"].agg(lambda s: s.mean() if s.notna().all() else np.nan),
            }
        ).reset_index()
        n_cases = avg_values.groupby(by, sort=True).size().rename("n").reset_index()
        average = average.merge(n_cases, on=by, how="left")
        average["structure"] = AVERAGE
        for col in ("median", "q1", "q3"):
            average[col] = np.nan

    out = pd.concat(
        [per_structure.loc[:, _GROUP + _STAT_COLUMNS], average.loc[:, _GROUP + _STAT_COLUMNS]],
        ignore_index=True,
    )
    out["n"] = out["n"].astype(np.int64)
    out["_avg"] = out["structure"].eq(AVERAGE)
    out = out.sort_values(["dataset", "model", "metric", "_avg", "structure"], kind="mergesort")
    return out.drop(columns="_avg").reset_index(drop=True)
