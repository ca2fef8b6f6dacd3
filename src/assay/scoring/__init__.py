"""Pair predictions with references and compute every metric per case (DESIGN.md §1)."""

from assay.scoring._case import CaseTask, score_case
from assay.scoring._executor import WorkerError, map_unordered
from assay.scoring._records import CaseRecord, ScoreRow
from assay.scoring._runner import (
    CaseStore,
    ScoreReport,
    check_score_options,
    resolve_prediction_labels,
    run_id_for,
    score,
    software_versions,
)
from assay.scoring._summary import AVERAGED, MEANS_NOTE, STATUSES, case_problems, summarize

__all__ = [
    "AVERAGED",
    "MEANS_NOTE",
    "STATUSES",
    "CaseRecord",
    "CaseStore",
    "CaseTask",
    "ScoreReport",
    "ScoreRow",
    "WorkerError",
    "case_problems",
    "check_score_options",
    "map_unordered",
    "resolve_prediction_labels",
    "run_id_for",
    "score",
    "score_case",
    "software_versions",
    "summarize",
]
