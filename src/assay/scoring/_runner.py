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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

from assay.datasets import (
    DEFAULT_SCHEMA,
    CaseSource,
    LabelMapFile,
    LabelSchema,
    discover_cases,
)
from assay.errors import InputError, LayoutError
from assay.metrics import Profile, get_profile
from assay.scoring._case import CaseTask, score_case
from assay.scoring._executor import map_unordered
from assay.scoring._records import CaseRecord

#: Case statuses that a re-run does not recompute.
FINAL_CASE_STATUSES = ("ok",)

_VERSIONED = ("numpy", "scipy", "nibabel", "SimpleITK", "pandas", "SQLAlchemy", "isal")


class CaseStore(Protocol):
    """Where a run keeps its cases (implemented by :class:`assay.store.ResultStore`)."""

    def manifest(self, run_id: str) -> dict[str, Any] | None: ...

    def ensure_run(
        self, run_id: str, *, dataset: str, model: str, profile: str, manifest: Mapping[str, Any]
    ) -> None: ...

    def delete_run(self, run_id: str) -> None: ...

    def delete_cases(self, run_id: str, case_ids: Sequence[str]) -> None: ...

    def stored_cases(self, run_id: str) -> dict[str, str]: ...

    def write_case(self, run_id: str, dataset: str, model: str, record: CaseRecord) -> None: ...


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
    store: CaseStore,
    workers: int = 1,
    force: bool = False,
    layout: str | None = None,
    prediction_layout: str | None = None,
    labels: Mapping[int, str] | None = None,
    prediction_labels: Mapping[int, str] | None = None,
    schema: LabelSchema = DEFAULT_SCHEMA,
    resample: str | None = None,
    on_case: Callable[[CaseRecord], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    failures: Mapping[str, str] | None = None,
    scheduler: str | None = None,
) -> ScoreReport:
    """Score every reference case against ``predictions`` and store one row per metric.

    Parameters
    ----------
    reference, predictions : folders in the ``structures`` or ``labelmap`` layout.
    model, dataset : names stored with every row.
    profile : metric protocol (a :class:`~assay.metrics.Profile` or a built-in name).
    store : where cases are kept, e.g. ``assay.store.ResultStore("assay.db")``.
    workers : local processes (1 = in this process).
    force : recompute cases that are already stored (required to resume a run from other
        inputs: another prediction or reference folder, labels or resampling).
    layout, prediction_layout : override layout detection (``structures``/``labelmap``).
    labels : label value -> structure for label maps (default: a ``dataset.json`` in the
        folder or its parent). Applies to the predictions too, unless they have their own.
    prediction_labels : the predictions' labels, when they differ from the reference's
        (default: the prediction folder's own ``dataset.json``, else ``labels``, else the
        reference's label spec).
    schema : structure names and synonyms.
    resample : ``"nearest"`` to resample predictions on a different grid (else failure).
    on_case : called with each stored :class:`CaseRecord` (progress).
    on_start : called once with the number of cases to compute.
    failures : case id -> why its prediction could not be made (e.g. the model command
        crashed); those cases are stored as ``failed`` with the message.
    scheduler : address of a Dask distributed scheduler (``tcp://host:8786``) to score on
        instead of local processes; its workers must see the same paths.
    """
    t0 = time.perf_counter()
    prof = get_profile(profile) if isinstance(profile, str) else profile
    db = store
    notes: list[str] = []
    ref_problems: dict[str, str] = {}
    pred_problems: dict[str, str] = {}
    ref_cases = discover_cases(
        reference, layout=layout, schema=schema, labels=labels, role="reference",
        problems=ref_problems,
    )  # fmt: skip
    prediction_labels = resolve_prediction_labels(predictions, labels, prediction_labels, ref_cases)
    try:
        pred_cases = discover_cases(
            predictions, layout=prediction_layout, schema=schema, labels=prediction_labels,
            role="prediction", problems=pred_problems,
        )  # fmt: skip
    except LayoutError:
        if not _empty_folder(predictions):
            raise
        pred_cases = {}
        notes.append(
            f"The prediction folder {predictions} is empty: every case is recorded as a "
            "missing prediction."
        )
    structures = _structures(ref_cases)
    if not structures:
        raise InputError(
            f"No structures found in the reference folder {reference}; expected masks named "
            "after structures (layout A) or a label map with a label schema (layout B)."
        )
    all_ids = sorted(set(ref_cases) | set(ref_problems))
    case_ids = [c for c in all_ids if _storable(c)]
    if len(case_ids) < len(all_ids):
        bad = [c.encode("utf-8", "backslashreplace").decode() for c in all_ids if not _storable(c)]
        notes.append(
            f"Skipped {len(bad)} case(s) whose names are not valid UTF-8 ({', '.join(bad[:3])}); "
            "rename them to score them."
        )
    unmatched = tuple(sorted((set(pred_cases) | set(pred_problems)) - set(all_ids)))

    run_id = run_id_for(dataset, model, prof)
    inputs = _inputs(reference, predictions, layout, prediction_layout, labels,
                     prediction_labels, resample)  # fmt: skip
    previous = db.manifest(run_id)
    stored = db.stored_cases(run_id)
    if previous is not None and stored and not force and previous.get("inputs") != inputs:
        changed = sorted(k for k in inputs if previous.get("inputs", {}).get(k) != inputs[k])
        raise InputError(
            f"Run {run_id} ({dataset} / {model} / profile {prof.name}) already holds "
            f"{len(stored)} case(s) scored from other inputs ({', '.join(changed)} differ). "
            "Pass --force to rescore them, or use another --model or --dataset name."
        )
    manifest = _manifest(dataset, model, prof, inputs, structures, len(case_ids), workers, previous)
    db.ensure_run(run_id, dataset=dataset, model=model, profile=prof.name, manifest=manifest)
    if force:
        db.delete_run(run_id)
        stored = {}
    stale = sorted(set(stored) - set(case_ids))
    if stale:
        db.delete_cases(run_id, stale)
        notes.append(
            f"Removed {len(stale)} stored case(s) no longer in the reference folder: "
            f"{', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}"
        )
    todo = [c for c in case_ids if stored.get(c) not in FINAL_CASE_STATUSES]
    if on_start is not None:
        on_start(len(todo))

    failures = failures or {}
    tasks = (
        _task(c, ref_cases, pred_cases, ref_problems, pred_problems, structures, prof,
              resample, failures.get(c, ""))
        for c in todo
    )  # fmt: skip
    n_scored = 0
    for record in map_unordered(score_case, tasks, workers, scheduler=scheduler):
        db.write_case(run_id, dataset, model, record)
        n_scored += 1
        if on_case is not None:
            on_case(record)
    seconds = time.perf_counter() - t0
    manifest["timings"] = {"last_call_seconds": round(seconds, 3), "cases_scored": n_scored}
    manifest["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    db.ensure_run(run_id, dataset=dataset, model=model, profile=prof.name, manifest=manifest)
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
    failure: str = "",
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
        failure=failure,
    )


def resolve_prediction_labels(
    predictions: str | Path,
    labels: Mapping[int, str] | None,
    prediction_labels: Mapping[int, str] | None,
    ref_cases: Mapping[str, CaseSource],
) -> Mapping[int, str] | None:
    """The predictions' label spec: given, else their folder's ``dataset.json`` (None here:
    discovery reads it), else the reference's ``labels``, else the reference label maps'."""
    if prediction_labels is None and not (Path(predictions) / "dataset.json").is_file():
        return labels if labels is not None else _reference_labels(ref_cases)
    return prediction_labels


def _reference_labels(ref_cases: Mapping[str, CaseSource]) -> Mapping[int, str] | None:
    """The reference's label spec (label-map layout), the predictions' last-resort default."""
    for src in ref_cases.values():
        if isinstance(src, LabelMapFile):
            return src.labels
    return None


def _storable(name: str) -> bool:
    """Whether a name can be stored as text (file names may hold undecodable bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _empty_folder(path: str | Path) -> bool:
    folder = Path(path)
    return folder.is_dir() and not any(p for p in folder.iterdir() if not p.name.startswith("."))


def _inputs(
    reference: str | Path,
    predictions: str | Path,
    layout: str | None,
    prediction_layout: str | None,
    labels: Mapping[int, str] | None,
    prediction_labels: Mapping[int, str] | None,
    resample: str | None,
) -> dict[str, Any]:
    """What the stored scores were computed from; a resumed run must match it."""

    def spec(m: Mapping[int, str] | None) -> dict[str, str] | None:
        return None if m is None else {str(k): v for k, v in sorted(m.items())}

    return {
        "reference": str(Path(reference).resolve()),
        "predictions": str(Path(predictions).resolve()),
        "layout": layout,
        "prediction_layout": prediction_layout,
        "labels": spec(labels),
        "prediction_labels": spec(prediction_labels),
        "resample": resample,
    }


def _manifest(
    dataset: str,
    model: str,
    prof: Profile,
    inputs: dict[str, Any],
    structures: tuple[str, ...],
    n_cases: int,
    workers: int,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    first = (
        previous.get("started_at", now) if previous and previous.get("inputs") == inputs else now
    )
    return {
        "dataset": {"name": dataset, "reference": inputs["reference"]},
        "model": {"name": model, "predictions": inputs["predictions"]},
        "inputs": inputs,
        "protocol": prof.params(),
        "structures": list(structures),
        "n_cases": n_cases,
        "software": software_versions(),
        "host": {"node": platform.node(), "platform": platform.platform(), "workers": workers},
        "seeds": None,
        "started_at": first,
        "last_started_at": now,
    }
