"""Pair predictions with references and compute every metric per case (DESIGN.md §1)."""

from assay.scoring._case import CaseTask, score_case
from assay.scoring._executor import WorkerError, map_unordered
from assay.scoring._runner import ScoreReport, run_id_for, score, software_versions

__all__ = [
    "CaseTask",
    "ScoreReport",
    "WorkerError",
    "map_unordered",
    "run_id_for",
    "score",
    "score_case",
    "software_versions",
]
