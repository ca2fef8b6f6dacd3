"""A per-structure summary of a scoring run (counts by status, mean Dice and NSD)."""

from __future__ import annotations

import pandas as pd

#: Every status a score row can have, in display order (DESIGN.md §2).
STATUSES = (
    "ok",
    "both_empty",
    "empty_reference",
    "empty_prediction",
    "missing_prediction",
    "failed",
)


#: Statuses whose values enter the summary means: scored cases, an empty prediction counting
#: 0. ``empty_reference`` and ``both_empty`` are not applicable (the structure is absent from
#: the reference, as in Touchstone); missing and failed rows have no value. Those are counted.
AVERAGED = ("ok", "empty_prediction")

MEANS_NOTE = (
    "Means over ok and empty-prediction rows (an empty prediction counts 0); structures absent "
    "from the reference are not applicable; missing and failed rows are counted, not averaged. "
    "Leaderboards (assay analyze/report) set missing and failed values to the metric's worst "
    "value by default (policy worst), so a model with missing cases has a lower mean there."
)


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model and structure: n by status, mean Dice and mean NSD.

    Means are over the rows whose status is in :data:`AVERAGED`; see :data:`MEANS_NOTE`.
    Columns: model, structure, one count per status, n, mean_dsc, mean_nsd.
    """
    if scores.empty:
        return pd.DataFrame(columns=["model", "structure", *STATUSES, "n", "mean_dsc", "mean_nsd"])
    one_metric = scores[scores["metric"] == "dsc"]
    counts = (
        one_metric.groupby(["model", "structure"])["status"]
        .value_counts()
        .unstack(fill_value=0)
        .reindex(columns=list(STATUSES), fill_value=0)
    )
    counts["n"] = counts.sum(axis=1)
    valued = scores["metric"].isin(["dsc", "nsd"]) & scores["status"].isin(AVERAGED)
    means = (
        scores[valued]
        .groupby(["model", "structure", "metric"])["value"]
        .mean()
        .unstack()
        .reindex(columns=["dsc", "nsd"])
        .rename(columns={"dsc": "mean_dsc", "nsd": "mean_nsd"})
    )
    out = counts.join(means).reset_index()
    out.columns.name = None
    return out


def case_problems(cases: pd.DataFrame) -> pd.DataFrame:
    """Cases that did not score cleanly (status other than ok, or flagged), with messages."""
    bad = cases[(cases["status"] != "ok") | (cases["flags"] != "") | (cases["message"] != "")]
    return bad[["run_id", "case_id", "status", "flags", "message"]].reset_index(drop=True)
