"""Everything a report shows, gathered in one object (built by the CLI or the Python API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # annotations only: a figure worker imports this module without them
    from assay.datasets import DatasetCard
    from assay.models import ModelCard
    from assay.stats import Analysis

#: Score statuses that mean "no usable prediction for this case".
NO_PREDICTION = ("missing_prediction", "failed")

#: Columns of :attr:`ReportData.speed` (inference speed, Touchstone's cm³/s).
SPEED_COLUMNS = ("dataset", "model", "n_cases", "seconds", "volume_cm3", "cm3_per_s")


@dataclass(frozen=True)
class ReportData:
    """The inputs of a report.

    Attributes
    ----------
    title : page and document title.
    analyses : metric -> :class:`~assay.stats.Analysis` over every reported dataset.
    scores : the raw per-case rows (run_id, dataset, model, case_id, structure, metric,
        value, status, message, profile) the analyses started from.
    cards : model name (as in ``scores``) -> model card; models without a card have none.
    datasets : dataset name -> dataset card (licence, citation); may be empty.
    runs : one row per run: run_id, dataset, model, profile, manifest (dict).
    speed : inference speed per (dataset, model), columns :data:`SPEED_COLUMNS`; empty when
        no run recorded inference timing.
    options : the analysis options as given (metric list, policy, bootstrap, ...).
    software : package versions of the machine that built the report.
    """

    title: str
    analyses: Mapping[str, Analysis]
    scores: pd.DataFrame
    cards: Mapping[str, ModelCard] = field(default_factory=dict)
    datasets: Mapping[str, DatasetCard] = field(default_factory=dict)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    speed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SPEED_COLUMNS)))
    options: Mapping[str, Any] = field(default_factory=dict)
    software: Mapping[str, str] = field(default_factory=dict)
    #: Values derived once from the (immutable) inputs, e.g. the figure job list that both
    #: the progress total and the drawing use; not part of the data (no init, repr or eq).
    _derived: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @property
    def dataset_names(self) -> list[str]:
        """Datasets in the report, sorted."""
        return sorted({d for a in self.analyses.values() for d in a.aggregates["dataset"]})

    def missing_cases(self, structure: str | None = None) -> pd.DataFrame:
        """Cases without a usable prediction, per (dataset, model, metric).

        Columns dataset, model, metric, n_cases (distinct cases of the model's rows),
        n_missing (cases with a :data:`NO_PREDICTION` status in any structure, or in
        ``structure`` only) and n_values (such score rows).
        """
        columns = ["dataset", "model", "metric", "n_cases", "n_missing", "n_values"]
        s = self.scores
        keys = ["dataset", "model", "metric"]
        if s.empty or not {*keys, "case_id", "status", "structure"} <= set(s.columns):
            return pd.DataFrame(columns=columns)
        if structure is not None:
            s = s[s["structure"] == structure]
        bad = s["status"].isin(NO_PREDICTION)
        out = s.groupby(keys).agg(n_cases=("case_id", "nunique")).reset_index()
        hit = (
            s[bad].groupby(keys).agg(n_missing=("case_id", "nunique"), n_values=("case_id", "size"))
        )
        out = out.merge(hit.reset_index(), on=keys, how="left")
        out[["n_missing", "n_values"]] = out[["n_missing", "n_values"]].fillna(0).astype(int)
        return out[columns]

    def missing_counts(self, metric: str, dataset: str, structure: str) -> dict[str, int]:
        """model -> cases without a usable prediction on (dataset, structure, metric).

        For the ``average`` structure: distinct cases with a missing or failed row in any
        structure (:meth:`missing_cases`). For a structure: the missing or failed values of
        cases whose reference contains it (``n_missing + n_failed`` of the analysis'
        policy counts; a case without the structure is not applicable, not missing).
        """
        if structure == "average":
            m = self.missing_cases()
            m = m[(m["dataset"] == dataset) & (m["metric"] == metric) & (m["n_missing"] > 0)]
            return {str(r.model): int(r.n_missing) for r in m.itertuples()}
        ch = self.analyses[metric].changes
        ch = ch[(ch["dataset"] == dataset) & (ch["structure"] == structure)]
        k = ch["n_missing"].astype(int) + ch["n_failed"].astype(int)
        return {str(m): int(v) for m, v in zip(ch["model"], k, strict=True) if v > 0}

    def model_order(self, metric: str, dataset: str, structure: str = "average") -> list[str]:
        """Models by rank on (dataset, structure) for ``metric`` (unranked last), then name."""
        agg = self.analyses[metric].aggregates
        part = agg[(agg["dataset"] == dataset) & (agg["structure"] == structure)]
        part = part.sort_values(["rank", "model"], na_position="last")
        return [str(m) for m in part["model"]]
