"""Missing-value policies: which per-case values enter the statistics, and what each policy changed.

A score row (DESIGN §2) carries a ``status``. Statistics never silently drop a value: every
change a policy makes is counted per (dataset, model, structure, metric) in the ``changes``
table so that a report can state it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from assay.errors import InputError
from assay.metrics import is_registered, metric_info
from assay.stats._options import POLICIES

__all__ = [
    "KEY_COLUMNS",
    "NOT_APPLICABLE",
    "POLICIES",
    "SCORE_COLUMNS",
    "STATUSES",
    "apply_policy",
    "default_worst_value",
]

#: Columns that identify one score row.
KEY_COLUMNS: tuple[str, ...] = ("dataset", "model", "case_id", "structure", "metric")
#: Columns a tidy score table must have.
SCORE_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "value", "status")
#: Every allowed ``status``.
STATUSES: frozenset[str] = frozenset(
    {"ok", "both_empty", "empty_reference", "empty_prediction", "missing_prediction", "failed"}
)
#: Statuses that mean "the structure is absent from the reference": never scored.
NOT_APPLICABLE: frozenset[str] = frozenset({"both_empty", "empty_reference"})
_KEEP: frozenset[str] = frozenset({"ok", "empty_prediction"})

Policy = Literal["worst", "exclude", "paper"]

#: Counts of what the policy did, per (dataset, model, structure, metric).
CHANGE_COLUMNS = (
    "n_values",
    "n_missing",
    "n_implicit_missing",
    "n_failed",
    "n_not_applicable",
    "n_set_worst",
    "n_dropped",
)


def default_worst_value(metric: str) -> float | None:
    """Return the built-in worst value of a metric (the metric registry's), or ``None``.

    Dice (``dsc``) and every NSD variant (``nsd``, ``nsd@1.5mm``, ...) are fractions in [0, 1]
    where 0 is the worst possible value. Distances (``hd``, ``hd95``, ``assd``, ``masd``) have no
    natural worst value (DESIGN §4: the image diagonal or a configured cap), so they have none;
    nor has a metric the registry does not know.
    """
    return metric_info(metric).worst if is_registered(metric) else None


def check_scores(scores: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    """Raise :class:`~assay.errors.InputError` unless ``scores`` is a DataFrame with ``columns``."""
    if not isinstance(scores, pd.DataFrame):
        raise InputError(
            f"{what} must be a pandas DataFrame, got {type(scores).__name__}. "
            f"Pass a tidy table with columns {list(columns)}."
        )
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {missing}; expected columns {list(columns)}, "
            f"got {list(scores.columns)}."
        )


def check_unique(scores: pd.DataFrame, what: str) -> None:
    dup = scores.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        first = scores.loc[dup, list(KEY_COLUMNS)].iloc[0].to_dict()
        raise InputError(
            f"{what} has {int(dup.sum())} rows sharing a key {list(KEY_COLUMNS)}, e.g. {first}. "
            "Keep exactly one row per (dataset, model, case_id, structure, metric)."
        )


def apply_policy(
    scores: pd.DataFrame,
    *,
    policy: Policy = "worst",
    worst_values: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply a missing-value policy to a tidy score table.

    Parameters
    ----------
    scores : pandas.DataFrame
        Long table with columns ``dataset, model, case_id, structure, metric, value, status``,
        one row per (dataset, model, case_id, structure, metric). Not modified.
    policy : {"worst", "exclude", "paper"}
        What happens to missing and failed predictions:

        - ``worst`` (default): they get the worst value of the metric, so a model is not
          rewarded for failing on hard cases;
        - ``exclude``: they are dropped (the model is judged on the cases it predicted);
        - ``paper``: the convention of published tables such as Touchstone's (mean over the
          cases that have a value). Identical in effect to ``exclude``; a separate name so a
          report can say "as published".
    worst_values : Mapping[str, float], optional
        Worst value per metric for the ``worst`` policy. Overrides the defaults (0.0 for
        ``dsc`` and ``nsd``/``nsd@…``); distance metrics have no default and must be given
        here when a missing or failed value of them has to be filled.

    Returns
    -------
    values : pandas.DataFrame
        The values that enter statistics: columns ``dataset, model, case_id, structure, metric,
        value, status, imputed`` sorted by key. ``status`` is the original status
        (``missing_prediction`` for implicit rows) and ``imputed`` is True where the policy set
        the value. Contains no NaN.
    changes : pandas.DataFrame
        One row per (dataset, model, structure, metric) with integer counts:
        ``n_values`` (rows in ``values``), ``n_missing`` (missing predictions, explicit and
        implicit), ``n_implicit_missing`` (of which implicit), ``n_failed``,
        ``n_not_applicable``, ``n_set_worst`` and ``n_dropped``. For every row
        ``n_values + n_dropped + n_not_applicable`` equals the number of (case) rows of the
        completed table, and ``n_set_worst + n_dropped == n_missing + n_failed``.

    Raises
    ------
    InputError
        Missing columns, unknown status or policy, duplicate keys, a NaN value for status
        ``ok``/``empty_prediction``, a reserved structure name ``average``, or (policy
        ``worst``) a metric with missing/failed values and no known worst value.

    Notes
    -----
    Rules, applied per row:

    - ``both_empty`` and ``empty_reference`` (structure absent from the reference) are not
      applicable and never enter statistics, whatever the policy;
    - ``ok`` and ``empty_prediction`` keep their value (an empty prediction of a present
      structure is a real failure: Dice 0, distances +inf);
    - ``missing_prediction`` and ``failed`` are set to the worst value (``worst``) or dropped
      (``exclude``, ``paper``).

    *Implicit missing predictions*: Touchstone publishes a missing prediction as a missing row.
    The table is therefore completed first: for every (dataset, structure, metric, case_id)
    that has a row for any model, each model of that dataset without a row gets one. Its status
    is ``missing_prediction``, unless another model's row shows the reference to be empty
    (status ``both_empty`` or ``empty_reference``), in which case the structure is not
    applicable for that case and the implicit row counts as ``n_not_applicable``. A model with
    no row at all for a structure (it does not segment it) is thus missing on every case. The
    same holds for *explicit* ``missing_prediction``/``failed`` rows: where another model's row
    shows the reference to be empty, they count as not applicable.
    """
    check_scores(scores, SCORE_COLUMNS, "scores")
    if policy not in POLICIES:
        raise InputError(f"Unknown policy {policy!r}; expected one of {list(POLICIES)}.")
    unknown = sorted(set(scores["status"].dropna().unique()) - STATUSES)
    if unknown or scores["status"].isna().any():
        raise InputError(
            f"scores has unknown status value(s) {unknown or ['<NA>']}; "
            f"expected one of {sorted(STATUSES)}."
        )
    if (scores["structure"] == "average").any():
        raise InputError(
            "scores uses the structure name 'average', which is reserved for the average row "
            "of aggregates; rename that structure."
        )
    check_unique(scores, "scores")

    df = scores.loc[:, list(SCORE_COLUMNS)].copy()
    df["value"] = pd.to_numeric(df["value"], errors="raise").astype(np.float64)
    bad = df["status"].isin(_KEEP) & df["value"].isna()
    if bad.any():
        row = df.loc[bad, list(KEY_COLUMNS)].iloc[0].to_dict()
        raise InputError(
            f"{int(bad.sum())} row(s) with status 'ok' or 'empty_prediction' have no value, "
            f"e.g. {row}. Give them a value or the status 'missing_prediction'/'failed'."
        )
    df["implicit"] = False

    # Complete the table: every (dataset, structure, metric, case) × every model of the dataset.
    cells = df.loc[:, ["dataset", "structure", "metric", "case_id"]].drop_duplicates()
    models = df.loc[:, ["dataset", "model"]].drop_duplicates()
    full = cells.merge(models, on="dataset", how="inner")
    full = full.merge(
        df.loc[:, list(KEY_COLUMNS)].assign(_present=True), how="left", on=list(KEY_COLUMNS)
    )
    absent = full.loc[full["_present"].isna(), list(KEY_COLUMNS)]
    if len(absent):
        na_cells = (
            df.loc[df["status"].isin(NOT_APPLICABLE), ["dataset", "structure", "metric", "case_id"]]
            .drop_duplicates()
            .assign(_na=True)
        )
        absent = absent.merge(
            na_cells, how="left", on=["dataset", "structure", "metric", "case_id"]
        )
        implicit = absent.loc[:, list(KEY_COLUMNS)].copy()
        implicit["value"] = np.nan
        implicit["status"] = np.where(
            absent["_na"].eq(True), "empty_reference", "missing_prediction"
        )
        implicit["implicit"] = True
        df = pd.concat([df, implicit], ignore_index=True)

    # An explicit missing/failed row where another model's row shows the reference to be empty
    # is not applicable either (the reference is shared): e.g. an imported Touchstone case with
    # no prediction, for a structure that case does not have.
    df = df.reset_index(drop=True)
    cell = ["dataset", "structure", "metric", "case_id"]
    na_any = df.loc[df["status"].isin(NOT_APPLICABLE), cell].drop_duplicates().assign(_na=True)
    in_na = df[cell].merge(na_any, on=cell, how="left")["_na"].eq(True).to_numpy()
    df.loc[in_na & df["status"].isin(["missing_prediction", "failed"]).to_numpy(), "status"] = (
        "empty_reference"
    )

    status = df["status"]
    is_na = status.isin(NOT_APPLICABLE)
    is_missing = status.eq("missing_prediction")
    is_failed = status.eq("failed")
    is_fill = is_missing | is_failed

    out = df.loc[~is_na].copy()
    out["imputed"] = False
    if policy == "worst":
        worst = {} if worst_values is None else dict(worst_values)
        fill = out["status"].isin(["missing_prediction", "failed"])
        for metric in sorted(out.loc[fill, "metric"].unique()):
            w = worst.get(metric, default_worst_value(metric))
            if w is None or np.isnan(w):
                raise InputError(
                    f"Policy 'worst' needs a worst value for metric {metric!r}, which has "
                    f"{int((fill & out['metric'].eq(metric)).sum())} missing or failed value(s); "
                    f"give it one, e.g. the image diagonal in mm (--worst-value {metric}=500, "
                    f"or worst_values={{{metric!r}: 500.0}}), or use the exclude policy."
                )
            sel = fill & out["metric"].eq(metric)
            out.loc[sel, "value"] = float(w)
            out.loc[sel, "imputed"] = True
    else:
        out = out.loc[~out["status"].isin(["missing_prediction", "failed"])]

    values = (
        out.loc[:, [*KEY_COLUMNS, "value", "status", "imputed"]]
        .sort_values(list(KEY_COLUMNS), kind="mergesort")
        .reset_index(drop=True)
    )

    group = ["dataset", "model", "structure", "metric"]
    counts = pd.DataFrame(
        {
            **{c: df[c] for c in group},
            "n_missing": is_missing.astype(np.int64),
            "n_implicit_missing": (is_missing & df["implicit"]).astype(np.int64),
            "n_failed": is_failed.astype(np.int64),
            "n_not_applicable": is_na.astype(np.int64),
            "n_set_worst": (is_fill & (policy == "worst")).astype(np.int64),
            "n_dropped": (is_fill & (policy != "worst")).astype(np.int64),
            "n_values": (~is_na & ~(is_fill & (policy != "worst"))).astype(np.int64),
        }
    )
    changes = counts.groupby(group, sort=True).sum().reset_index()
    changes = changes.loc[:, [*group, *CHANGE_COLUMNS]]
    return values, changes
