"""Score a folder of predictions against a folder of references into the results store.

Runs are identified by (dataset, model, metric protocol): the same command again resumes
(cases already stored are skipped; failed or missing ones are retried), ``force`` recomputes
everything. Each finished case is committed at once, so an interrupted run loses nothing.
A stored case whose reference or prediction files changed since it was scored (a content
fingerprint per case, kept in the run's manifest) is scored again.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

from assay.datasets import (
    DEFAULT_SCHEMA,
    LAYOUTS,
    TUMOUR_ORGANS,
    CaseSource,
    LabelMapFile,
    LabelSchema,
    discover_cases,
    file_sha256,
)
from assay.errors import InputError, LayoutError
from assay.io import RESAMPLE_METHODS, image_suffix
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
    #: Stored cases whose input files changed since they were scored (scored again).
    changed_cases: tuple[str, ...] = ()


def check_score_options(
    *,
    reference: str | Path | None = None,
    predictions: str | Path | None = None,
    model: str,
    dataset: str,
    workers: int = 1,
    layout: str | None = None,
    prediction_layout: str | None = None,
    resample: str | None = None,
    scheduler: str | None = None,
) -> None:
    """Validate the options of :func:`score` before any work (``assay score`` calls it before
    opening the database).

    Raises
    ------
    InputError
        An empty or blank model or dataset name, ``workers`` < 1, an unknown layout or
        resampling method, or an empty scheduler address; one line naming the option and the
        accepted values.
    LayoutError
        A ``reference`` or ``predictions`` folder (when given) that is missing or a file.
    """
    for option, folder in (("--reference", reference), ("--predictions", predictions)):
        if folder is None:
            continue
        if not str(folder).strip():
            raise InputError(f"{option} must name a folder (got '').")
        if not Path(folder).is_dir():
            what = "is a file, not a folder" if Path(folder).exists() else "does not exist"
            raise LayoutError(
                f"The {option[2:].rstrip('s')} folder {folder} {what}; pass the folder that "
                "holds the cases."
            )
    for option, value in (("--model", model), ("--dataset", dataset)):
        if not isinstance(value, str) or not value.strip():
            raise InputError(
                f"{option} must be a non-empty name (got {value!r}); it is stored with every "
                "row and identifies the run."
            )
        if value != value.strip():
            raise InputError(
                f"{option} {value!r} has leading or trailing spaces; pass {value.strip()!r}."
            )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers must be a whole number >= 1 (got {workers!r}).")
    for option, chosen in (("--layout", layout), ("--prediction-layout", prediction_layout)):
        if chosen is not None and chosen not in LAYOUTS:
            raise InputError(
                f"Unknown {option} {chosen!r}; expected one of {', '.join(LAYOUTS)} (or leave "
                "it out to detect the layout)."
            )
    if resample is not None and resample not in RESAMPLE_METHODS:
        raise InputError(
            f"Unknown --resample method {resample!r}; expected {', '.join(RESAMPLE_METHODS)} "
            "(or leave it out to require matching grids)."
        )
    if scheduler is not None and not scheduler.strip():
        raise InputError(
            "--scheduler must be a Dask scheduler address such as tcp://HOST:8786 (got an "
            "empty one); leave it out to score with local processes."
        )


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
    probabilities: str | Path | None = None,
    patient_scores: str | Path | None = None,
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
    probabilities : detection only: a folder of per-voxel probability maps in [0, 1]
        (``CASE/STRUCTURE.nii.gz`` on the reference grid), for lesion confidences, the
        patient score (AUC) and FROC; a structure with a map but no mask is binarised at the
        protocol's threshold.
    patient_scores : detection only: a CSV of per-case patient scores for AUC (columns
        ``case_id``, ``score`` and optionally ``structure``; without ``structure`` a score
        applies to every tumour type of the case); they replace the probability or volume
        score of those cases.
    """
    t0 = time.perf_counter()
    check_score_options(model=model, dataset=dataset, workers=workers, layout=layout,
                        prediction_layout=prediction_layout, resample=resample,
                        scheduler=scheduler)  # fmt: skip
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
    prob_cases: dict[str, CaseSource] = {}
    prob_problems: dict[str, str] = {}
    if probabilities is not None:
        if prof.detection is None:
            raise InputError(
                "Probability maps (--probabilities) are for tumour detection; add --task "
                "detection, or leave them out."
            )
        prob_cases = discover_cases(
            probabilities, layout="structures", schema=schema, role="probability maps",
            problems=prob_problems,
        )  # fmt: skip
    case_scores: dict[str, tuple[tuple[str, float], ...]] = {}
    if patient_scores is not None:
        if prof.detection is None:
            raise InputError(
                "Patient scores (--patient-scores) are for tumour detection; add --task "
                "detection, or leave them out."
            )
        case_scores = read_patient_scores(patient_scores, schema)
    structures = _structures(ref_cases)
    if prof.detection is not None:
        organs = [x for x in structures if not is_tumour(x)]
        structures = tuple(x for x in structures if is_tumour(x))
        if not structures:
            raise InputError(
                f"No tumour structures in the reference folder {reference} (found "
                f"{', '.join(organs) or 'none'}); a detection run scores tumour masks such as "
                f"{', '.join(TUMOUR_ORGANS)}. Name the files after them, or use --schema "
                "for other names."
            )
        if organs:
            notes.append(
                "Detection scores tumour structures only; not scored: " + ", ".join(organs)
            )
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
    extra: dict[str, int] = {}  # predicted structures the reference never has
    for c, src in pred_cases.items():
        if c in ref_cases and not isinstance(src, LabelMapFile):
            for name in set(src.files) - set(structures):
                extra[name] = extra.get(name, 0) + 1
    if extra:
        notes.append(
            "Prediction files for structures the reference does not have were not scored: "
            + ", ".join(f"{k} ({v} case{'s' if v != 1 else ''})" for k, v in sorted(extra.items()))
        )
    if Path(reference).resolve() == Path(predictions).resolve():
        notes.append(
            f"The prediction folder is the reference folder ({reference}): every case is "
            "scored against itself."
        )
    pred_ids = set(pred_cases) | set(pred_problems)
    unmatched = tuple(sorted(pred_ids - set(all_ids)))
    if pred_ids and not pred_ids & set(all_ids) and not failures:
        raise InputError(_no_match_message(reference, predictions, all_ids, sorted(pred_ids)))

    run_id = run_id_for(dataset, model, prof)
    inputs = _inputs(reference, predictions, layout, prediction_layout, labels,
                     prediction_labels, resample)  # fmt: skip
    if probabilities is not None:  # only then: older runs' inputs stay comparable
        inputs["probabilities"] = str(Path(probabilities).resolve())
    if patient_scores is not None:
        inputs["patient_scores"] = {
            "path": str(Path(patient_scores).resolve()),
            "sha256": file_sha256(Path(patient_scores)),
        }
        strays = sorted(set(case_scores) - set(case_ids))
        if strays:
            notes.append(
                f"{len(strays)} case(s) of {patient_scores} are not in the reference and were "
                f"ignored: {_some(strays)}"
            )
        without = [c for c in case_ids if c not in case_scores]
        if without:
            notes.append(
                f"{len(without)} case(s) have no patient score in {patient_scores}; they keep "
                f"the probability or volume score: {_some(without)}"
            )
    previous = db.manifest(run_id)
    stored = db.stored_cases(run_id)
    kept = [c for c, status in stored.items() if status in FINAL_CASE_STATUSES]
    if previous is not None and kept and not force and previous.get("inputs") != inputs:
        # only cases that a re-run would keep can mix with the new inputs; failed, partial
        # and missing ones are scored again anyway (e.g. after a run with a wrong option)
        changed = sorted(k for k in inputs if previous.get("inputs", {}).get(k) != inputs[k])
        raise InputError(
            f"Run {run_id} ({dataset} / {model} / profile {prof.name}) already holds "
            f"{len(kept)} case(s) scored from other inputs ({', '.join(changed)} differ). "
            "Pass --force to rescore them, or use another --model or --dataset name."
        )
    fingerprints, changed_cases = _fingerprints(
        case_ids,
        ("reference", Path(reference), ref_cases, ref_problems),
        ("prediction", Path(predictions), pred_cases, pred_problems),
        *(
            [("probability", Path(probabilities), prob_cases, prob_problems)]
            if probabilities is not None
            else []
        ),
        previous=(previous or {}).get("case_inputs", {}) if not force else {},
        kept=kept,
    )
    manifest = _manifest(dataset, model, prof, inputs, structures, len(case_ids), workers, previous)
    manifest["case_inputs"] = fingerprints
    if force:
        db.delete_run(run_id)
        stored = {}
    elif changed_cases:
        # scores of changed inputs are stale: drop them before the new fingerprints are
        # recorded, so an interrupted run can never keep them
        db.delete_cases(run_id, changed_cases)
        stored = {c: st for c, st in stored.items() if c not in set(changed_cases)}
        unknown = "case_inputs" not in (previous or {})
        notes.append(
            f"{len(changed_cases)} case{'s' if len(changed_cases) != 1 else ''} "
            + ("scored without an input fingerprint (an older assay): rescored"
               if unknown else "changed since the last run: rescored")
            + f" ({_some(changed_cases)})"
        )  # fmt: skip
    db.ensure_run(run_id, dataset=dataset, model=model, profile=prof.name, manifest=manifest)
    stale = sorted(set(stored) - set(case_ids))
    if stale:
        db.delete_cases(run_id, stale)
        notes.append(
            f"Removed {len(stale)} stored case(s) no longer in the reference folder: {_some(stale)}"
        )
    todo = [c for c in case_ids if stored.get(c) not in FINAL_CASE_STATUSES]
    if on_start is not None:
        on_start(len(todo))

    failures = failures or {}
    tasks = (
        replace(
            _task(c, ref_cases, pred_cases, ref_problems, pred_problems, structures, prof,
                  resample, failures.get(c, "")),
            probability=prob_cases.get(c),
            probability_problem=prob_problems.get(c, ""),
            patient_scores=case_scores.get(c, ()),
        )
        for c in todo
    )  # fmt: skip
    n_scored = 0
    # A pool of processes for fewer cases than workers starts processes that get nothing
    # (a re-run that retries one case would pay for a whole pool): one case runs here.
    pool = min(workers, len(todo)) if len(todo) > 1 else 1
    for record in map_unordered(score_case, tasks, pool, scheduler=scheduler):
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
            f"{_some(unmatched)}"
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
        changed_cases=tuple(changed_cases),
    )


def read_patient_scores(
    path: str | Path, schema: LabelSchema
) -> dict[str, tuple[tuple[str, float], ...]]:
    """Case id -> ((structure or ``*``, score), ...) from a patient-score CSV.

    Raises
    ------
    InputError
        An unreadable file, a missing ``case_id``/``score`` column, a score that is not a
        finite number, an unknown structure name, or a (case, structure) given twice; the
        message names the file, the row and the fix.
    """
    import math

    import pandas as pd

    where = f"patient-score file {path}"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read the {where}: {exc}. Give a CSV file.") from None
    missing = [c for c in ("case_id", "score") if c not in table.columns]
    if missing:
        raise InputError(
            f"The {where} lacks column(s) {', '.join(missing)}; expected case_id, score and "
            "optionally structure."
        )
    out: dict[str, list[tuple[str, float]]] = {}
    seen: set[tuple[str, str]] = set()
    for row, (case, text, structure) in enumerate(
        zip(
            table["case_id"],
            table["score"],
            table["structure"] if "structure" in table.columns else [""] * len(table),
            strict=True,
        ),
        start=2,
    ):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InputError(
                f"Row {row} of the {where}: score {text!r} is not a finite number; fix it."
            )
        name = schema.canonical(structure, where=f"row {row} of the {where}") if structure else "*"
        if (case, name) in seen:
            raise InputError(f"Row {row} of the {where}: case {case!r} has a second score.")
        seen.add((case, name))
        out.setdefault(case, []).append((name, value))
    return {c: tuple(v) for c, v in out.items()}


def is_tumour(structure: str) -> bool:
    """Whether a structure is a tumour type a detection run scores."""
    return structure in TUMOUR_ORGANS or structure.endswith(("_tumor", "_lesion"))


def _structures(ref_cases: Mapping[str, CaseSource]) -> tuple[str, ...]:
    names: set[str] = set()
    for src in ref_cases.values():
        if isinstance(src, LabelMapFile):
            names.update(src.labels.values())
        else:
            names.update(src.files)
            names.update(src.problems)  # a duplicated reference structure still gets rows
    return tuple(sorted(names))


_Side = tuple[str, Path, Mapping[str, CaseSource], Mapping[str, str]]


def _fingerprints(
    case_ids: Sequence[str],
    *sides: _Side,
    previous: Mapping[str, Any],
    kept: Sequence[str],
) -> tuple[dict[str, str], list[str]]:
    """Each case's input fingerprint ``"STAT:CONTENT"``, and the ``kept`` cases whose content
    differs from ``previous`` (or that have none: scored by an older assay).

    STAT hashes the relative path, size and modification time of every visible file of the
    case (reference and prediction) and its discovery problems; CONTENT hashes the path,
    structure and SHA-256 of each file that is scored, and the names of the others. As in
    ``assay run``'s content-hash cache, an unchanged STAT reuses the previous CONTENT without
    reading a file; a changed one (a copy, a touch) reads the case's masks again, and only a
    different CONTENT rescores the case.
    """
    fresh: dict[str, str] = {}
    changed: list[str] = []
    kept_set = set(kept)
    for case_id in case_ids:
        entries: list[tuple[str, Path, str | None]] = []  # (label, file, structure or None)
        problems: list[str] = []
        for role, root, cases, side_problems in sides:
            entries += [(f"{role}\0{_relative(f, root)}", f, st)
                        for f, st in _case_files(cases.get(case_id))]  # fmt: skip
            problems.append(f"{role}\0{side_problems.get(case_id, '')}")
        stat = hashlib.sha256()
        for label, file, _ in entries:
            try:
                info = file.stat()
                stat.update(
                    f"{label}\0{info.st_size}\0{info.st_mtime_ns}\n".encode(
                        errors="surrogateescape"
                    )
                )
            except OSError:
                stat.update(f"{label}\0gone\n".encode(errors="surrogateescape"))
        stat.update("\n".join(problems).encode(errors="surrogateescape"))
        stat_fp = stat.hexdigest()[:16]
        old = previous.get(case_id)
        old_stat, _, old_content = old.partition(":") if isinstance(old, str) else ("", "", "")
        if old_stat == stat_fp:
            fresh[case_id] = str(old)
            continue
        content = hashlib.sha256()
        for label, file, structure in entries:
            digest = "-"
            if structure is not None:
                try:
                    digest = file_sha256(file)
                except OSError:
                    digest = "unreadable"
            content.update(f"{label}\0{structure}\0{digest}\n".encode(errors="surrogateescape"))
        content.update("\n".join(problems).encode(errors="surrogateescape"))
        content_fp = content.hexdigest()[:16]
        fresh[case_id] = f"{stat_fp}:{content_fp}"
        if case_id in kept_set and content_fp != old_content:
            changed.append(case_id)
    return fresh, changed


def _case_files(src: CaseSource | None) -> list[tuple[Path, str | None]]:
    """(file, structure it is scored as, or None) for every file that can change a case."""
    if src is None:
        return []
    if isinstance(src, LabelMapFile):
        return [(src.path, "*")]
    used = {path: structure for structure, path in src.files.items()}
    if src.folder is None:
        return sorted(used.items())
    return [
        (path, used.get(path))
        for path in sorted(src.folder.rglob("*"))
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(src.folder).parts)
    ]


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _no_match_message(
    reference: str | Path, predictions: str | Path, ref_ids: Sequence[str], pred_ids: Sequence[str]
) -> str:
    """Why no prediction case pairs with a reference case, and what to pass instead."""
    pred_root, ref_set = Path(predictions), set(ref_ids)
    text = (
        f"No prediction case in {pred_root} matches a reference case of {reference}: found "
        f"{len(pred_ids)} ({_some(list(pred_ids), 3)}), expected ids such as "
        f"{_some(list(ref_ids), 3)} ({len(ref_ids)} reference cases)."
    )
    for name in pred_ids:  # a folder of model folders: preds/modelA/<case>/...
        folder = pred_root / name
        inner = sorted(
            p.name if p.is_dir() else p.name[: -len(image_suffix(p) or "")] or p.name
            for p in (folder.iterdir() if folder.is_dir() else ())
            if not p.name.startswith(".") and (p.is_dir() or image_suffix(p) is not None)
        )
        if set(inner) & ref_set:
            example = next(i for i in inner if i in ref_set)
            models = [m for m in pred_ids if (pred_root / m).is_dir()]
            return (
                f"{text} {pred_root} looks like a folder of model folders "
                f"({', '.join(m + '/' for m in models[:3])}{' ...' if len(models) > 3 else ''}"
                f" holding cases such as {name}/{example}): pass one model's folder, e.g. "
                f"--predictions {folder}."
            )
    return (
        f"{text} Pass the folder whose entries are named after the reference cases "
        "(<case>/ folders or <case>.nii.gz label maps), or check --reference."
    )


def _some(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (" ..." if len(items) > n else "")


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
