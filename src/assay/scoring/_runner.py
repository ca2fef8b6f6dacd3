"""Score a folder of predictions against a folder of references into the results store.

Runs are identified by (dataset, model, metric protocol): the same command again resumes
(cases already stored are skipped; failed or missing ones are retried), ``force`` recomputes
everything. Each finished case is committed at once, so an interrupted run loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from assay.datasets import (
    DEFAULT_SCHEMA,
    CaseSource,
    LabelMapFile,
    LabelSchema,
    discover_cases,
)
from assay.errors import InputError
from assay.metrics import Profile, get_profile
from assay.scoring._case import CaseTask, score_case
from assay.scoring._executor import map_unordered
from assay.store import CaseRecord, ResultStore

#: Case statuses that a re-run does not recompute.
FINAL_CASE_STATUSES = ("ok",)

_VERSIONED = ("numpy", "scipy", "nibabel", "SimpleITK", "pandas", "SQLAlchemy", "isal")


@dataclass(frozen=True)
class ScoreReport:
    """What a scoring call did."""

    run_id: str
    dataset: str
    model: str
    profile: str
    n_cases: int
    n_scored: int
    n_skipped: int
    seconds: float
    unmatched_predictions: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def run_id_for(dataset: str, model: str, profile: Profile) -> str:
    """Deterministic run id: a hash of dataset, model and every protocol parameter."""
    key = json.dumps(
        {"dataset": dataset, "model": model, "protocol": profile.params()}, sort_keys=True
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def software_versions() -> dict[str, str]:
    """Versions of Python, assay and the libraries that can change a number."""
    out = {"python": platform.python_version()}
    for name in ("assay", *_VERSIONED):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def score(
    reference: str | Path,
    predictions: str | Path,
    *,
    model: str,
    dataset: str,
    profile: Profile | str = "default",
    store: ResultStore | str | Path = "assay.db",
    workers: int = 1,
    force: bool = False,
    layout: str | None = None,
    prediction_layout: str | None = None,
    labels: Mapping[int, str] | None = None,
    schema: LabelSchema = DEFAULT_SCHEMA,
    resample: str | None = None,
    on_case: Callable[[CaseRecord], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ScoreReport:
    """Score every reference case against ``predictions`` and store one row per metric.

    Parameters
    ----------
    reference, predictions : folders in the ``structures`` or ``labelmap`` layout.
    model, dataset : names stored with every row.
    profile : metric protocol (a :class:`~assay.metrics.Profile` or a built-in name).
    store : a :class:`~assay.store.ResultStore` or a database path/URL.
    workers : local processes (1 = in this process).
    force : recompute cases that are already stored.
    layout, prediction_layout : override layout detection (``structures``/``labelmap``).
    labels : label value -> structure for label maps (default: ``dataset.json`` lookup).
    schema : structure names and synonyms.
    resample : ``"nearest"`` to resample predictions on a different grid (else failure).
    on_case : called with each stored :class:`~assay.store.CaseRecord` (progress).
    on_start : called once with the number of cases to compute.
    """
    t0 = time.perf_counter()
    prof = get_profile(profile) if isinstance(profile, str) else profile
    db = store if isinstance(store, ResultStore) else ResultStore(store)
    ref_problems: dict[str, str] = {}
    pred_problems: dict[str, str] = {}
    ref_cases = discover_cases(
        reference, layout=layout, schema=schema, labels=labels, role="reference",
        problems=ref_problems,
    )  # fmt: skip
    pred_cases = discover_cases(
        predictions, layout=prediction_layout, schema=schema, labels=labels, role="prediction",
        problems=pred_problems,
    )  # fmt: skip
    structures = _structures(ref_cases)
    if not structures:
        raise InputError(
            f"No structures found in the reference folder {reference}; expected masks named "
            "after structures (layout A) or a label map with a label schema (layout B)."
        )
    case_ids = sorted(set(ref_cases) | set(ref_problems))
    unmatched = tuple(sorted((set(pred_cases) | set(pred_problems)) - set(case_ids)))

    run_id = run_id_for(dataset, model, prof)
    manifest = _manifest(
        dataset, model, prof, reference, predictions, structures, len(case_ids), workers
    )
    db.ensure_run(run_id, dataset=dataset, model=model, profile=prof.name, manifest=manifest)
    if force:
        db.delete_run(run_id)
    stored = db.stored_cases(run_id)
    todo = [c for c in case_ids if stored.get(c) not in FINAL_CASE_STATUSES]
    if on_start is not None:
        on_start(len(todo))

    tasks = (
        _task(c, ref_cases, pred_cases, ref_problems, pred_problems, structures, prof, resample)
        for c in todo
    )
    n_scored = 0
    for record in map_unordered(score_case, tasks, workers):
        db.write_case(run_id, dataset, model, record)
        n_scored += 1
        if on_case is not None:
            on_case(record)
    seconds = time.perf_counter() - t0
    manifest["timings"] = {"last_call_seconds": round(seconds, 3), "cases_scored": n_scored}
    manifest["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    db.ensure_run(run_id, dataset=dataset, model=model, profile=prof.name, manifest=manifest)
    notes = []
    if unmatched:
        notes.append(
            f"{len(unmatched)} prediction case(s) have no reference and were not scored: "
            f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}"
        )
    return ScoreReport(
        run_id=run_id,
        dataset=dataset,
        model=model,
        profile=prof.name,
        n_cases=len(case_ids),
        n_scored=n_scored,
        n_skipped=len(case_ids) - len(todo),
        seconds=seconds,
        unmatched_predictions=unmatched,
        notes=tuple(notes),
    )


def _structures(ref_cases: Mapping[str, CaseSource]) -> tuple[str, ...]:
    names: set[str] = set()
    for src in ref_cases.values():
        names.update(src.labels.values() if isinstance(src, LabelMapFile) else src.files)
    return tuple(sorted(names))


def _task(
    case_id: str,
    ref_cases: Mapping[str, CaseSource],
    pred_cases: Mapping[str, CaseSource],
    ref_problems: Mapping[str, str],
    pred_problems: Mapping[str, str],
    structures: tuple[str, ...],
    profile: Profile,
    resample: str | None,
) -> CaseTask:
    return CaseTask(
        case_id=case_id,
        reference=ref_cases.get(case_id),
        reference_problem=ref_problems.get(case_id, ""),
        prediction=pred_cases.get(case_id),
        structures=structures,
        profile=profile,
        resample=resample,
        problem=pred_problems.get(case_id, ""),
    )


def _manifest(
    dataset: str,
    model: str,
    prof: Profile,
    reference: str | Path,
    predictions: str | Path,
    structures: tuple[str, ...],
    n_cases: int,
    workers: int,
) -> dict[str, Any]:
    return {
        "dataset": {"name": dataset, "reference": str(Path(reference).resolve())},
        "model": {"name": model, "predictions": str(Path(predictions).resolve())},
        "protocol": prof.params(),
        "structures": list(structures),
        "n_cases": n_cases,
        "software": software_versions(),
        "host": {"node": platform.node(), "platform": platform.platform(), "workers": workers},
        "seeds": None,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
