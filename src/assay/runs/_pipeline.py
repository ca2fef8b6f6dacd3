"""``assay run``: predictions (running models where needed) → scores → analysis → report.

Resumable at every stage: a case a model has already predicted (recorded ``ok`` in the
inference log, its outputs present) is not run again, a scored case is not scored again, and
the analysis and report are rebuilt from the database. Work is mapped over cases by the
executor (local processes, or a Dask cluster with ``scheduler``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assay.datasets import (
    DEFAULT_SCHEMA,
    CaseSource,
    DatasetCard,
    LabelMapFile,
    LabelSchema,
    StructureFiles,
    content_hash,
    discover_cases,
    read_label_map_spec,
)
from assay.errors import AssayError, InputError, LayoutError, StoreError
from assay.metrics import get_profile
from assay.models import ModelCard
from assay.models._runner import (
    BatchTask,
    InferenceRecord,
    InferenceTask,
    run_batch,
    run_case,
)
from assay.runs._config import Benchmark
from assay.runs._spot_check import SpotCheckResult, runner_failed, spot_check
from assay.scoring import (
    WorkerError,
    map_unordered,
    resolve_prediction_labels,
    run_id_for,
    score,
)
from assay.scoring._executor import check_scheduler_address
from assay.store import ResultStore, read_metadata

#: Case statuses of a case that has scores.
SCORED_CASE_STATUSES = ("ok", "partial")


class Progress(Protocol):
    """What the pipeline tells its caller (the CLI draws progress bars from it): the overall
    progress in steps (one per (dataset, model), one for the report), and each stage's."""

    def overall(self, done: int, total: int) -> None: ...
    def stage(self, description: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def note(self, text: str) -> None: ...


class _Silent:
    def overall(self, done: int, total: int) -> None:
        pass

    def stage(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass
class ModelOutcome:
    """What happened to one model on one dataset."""

    dataset: str
    model: str
    status: str = "ok"  # ok | spot_check_failed | failed (inputs unusable, or no case scored)
    n_cases: int = 0
    case_statuses: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (case, message)
    spot: SpotCheckResult | None = None
    speed_cm3_per_s: float | None = None
    slow: str = ""
    error: str = ""  # a model-level error (its inputs could not be scored at all)
    run_id: str = ""

    @property
    def n_scored(self) -> int:
        """Cases with scores (``ok`` or ``partial``); failed and missing ones have none."""
        return sum(self.case_statuses.get(s, 0) for s in SCORED_CASE_STATUSES)

    @property
    def label(self) -> str:
        """The status as the run summary shows it, e.g. ``failed: 0 of 4 scored``."""
        if self.status == "spot_check_failed":
            return "spot check failed"
        if not self.case_statuses:
            return self.status
        if self.n_scored == self.n_cases and self.status == "ok":
            return "ok"
        word = "incomplete" if self.status == "ok" else self.status
        return f"{word}: {self.n_scored} of {self.n_cases} scored"


@dataclass
class RunSummary:
    """Outcomes per (dataset, model), the report (if built) and notes."""

    outcomes: list[ModelOutcome]
    report: Any = None
    notes: list[str] = field(default_factory=list)
    #: What was skipped or redone, one line each: cases already scored per model, and whether
    #: the analysis and report were kept (their inputs' digest unchanged) or rebuilt and why.
    resumed: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[ModelOutcome]:
        return [o for o in self.outcomes if o.status != "ok" or o.failures or o.slow]


def run_benchmark(
    bench: Benchmark,
    *,
    db: str | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Run every model of ``bench`` on every dataset, score, analyse and report.

    Parameters
    ----------
    bench : a validated configuration (:func:`~assay.runs.load_benchmark`).
    db : results database (overrides ``bench.db``): SQLite file or SQLAlchemy URL.
    scheduler : Dask scheduler address; inference and scoring then run on the cluster,
        whose workers must see the same paths.
    progress : receives stages and advances (None: silent).
    """
    ui = progress or _Silent()
    if scheduler is not None:  # a typo fails now, not after the first model's inference
        scheduler = check_scheduler_address(scheduler)
    if db is not None and not str(db).strip():
        raise InputError("--db must be an SQLite file or an SQLAlchemy URL (got '').")
    bench.output.mkdir(parents=True, exist_ok=True)  # an unwritable output fails before work
    store = ResultStore(db if db is not None else bench.db)
    profile = get_profile(bench.profile)
    outcomes: list[ModelOutcome] = []
    notes: list[str] = []
    resumed: list[str] = []
    steps = len(bench.datasets) * len(bench.models) + int(bench.report)
    ui.overall(0, steps)
    prepared = [_prepare(dataset, bench, ui) for dataset in bench.datasets]  # before any work
    for dataset, ref in zip(bench.datasets, prepared, strict=True):
        ui.stage(f"{dataset.name}: hashing {len(ref.case_ids)} cases", None)
        digest = content_hash(dataset, files=ref.files, cache=bench.output / "hash-cache.json")
        if dataset.metadata is not None:
            table, id_column = read_metadata(dataset.metadata, id_column=dataset.id_column)
            store.write_metadata(dataset.name, table, id_column=id_column)
        for model in bench.models:
            ui.overall(len(outcomes), steps)
            outcome = ModelOutcome(
                dataset=dataset.name, model=model.name, n_cases=len(ref.case_ids)
            )
            outcomes.append(outcome)
            failures: dict[str, str] = {}
            inference: dict[str, Any] | None = None
            first = ref.case_ids[: bench.spot_check.cases] if bench.spot_check else []
            rerun: set[str] = set()
            if model.runner is not None:
                folder = bench.output / "predictions" / dataset.name / model.name
                log = bench.output / "inference" / dataset.name / f"{model.name}.jsonl"
                records, ran = _infer(model, dataset, first, folder, log, bench, scheduler, ui)
                rerun |= ran
                ok_first = [c for c in first if records.get(c) and records[c].status == "ok"]
                crashed = {
                    c: records[c].message for c in first if c in records and c not in ok_first
                }
                if not _spot_ok(outcome, bench, ref, folder, model, ok_first, ui, crashed):
                    continue
                # the cases just run for the spot check are not run again, even if they failed
                records, ran = _infer(
                    model, dataset, ref.case_ids, folder, log, bench, scheduler, ui, skip=ran
                )
                rerun |= ran
                failures = {c: f"inference failed: {r.message}" for c, r in records.items()
                            if r.status != "ok"}  # fmt: skip
                inference = _inference_summary(records, model, outcome)
                inference["concurrency"] = (
                    f"Dask cluster {scheduler}" if scheduler
                    else f"{model.runner.workers or bench.workers} local process(es)"
                )  # fmt: skip
            else:
                folder = model.predictions  # type: ignore[assignment]
                if not _spot_ok(outcome, bench, ref, folder, model, first, ui):
                    continue
            if rerun:  # predictions made anew: their old scores are stale
                store.delete_cases(run_id_for(dataset.name, model.name, profile), sorted(rerun))
            ui.stage(f"{dataset.name}: scoring {model.name}", None)
            before = store.stored_cases(run_id_for(dataset.name, model.name, profile))
            nothing_predicted = model.runner is not None and _empty(folder)
            try:
                report = _score(dataset, model, folder, profile, store, bench, ref, failures,
                                scheduler, ui)  # fmt: skip
            except (StoreError, WorkerError):
                raise  # the database or the workers failed, not this model: stop the run
            except AssayError as exc:  # this model's inputs are unusable: the others go on
                outcome.status = "failed"
                outcome.error = str(exc)
                ui.note(f"{dataset.name} / {model.name}: {exc}")
                continue
            outcome.run_id = report.run_id
            resumed.append(_scored_line(dataset.name, model.name, report, before))
            _record(store, report.run_id, model, dataset, digest, inference)
            cases = store.cases([report.run_id])
            outcome.case_statuses = dict(Counter(cases["status"]))
            outcome.failures = [
                (str(r.case_id), str(r.message))
                for r in cases.itertuples()
                if r.status in ("failed", "missing_prediction")
            ]
            model_notes = list(report.notes)
            if nothing_predicted:  # say what the table says, not "every case is missing"
                model_notes = [n for n in model_notes if not n.startswith(
                    f"The prediction folder {folder} is empty")]  # fmt: skip
                model_notes.append(
                    f"the model wrote no predictions: {outcome.case_statuses.get('failed', 0)} "
                    "case(s) failed, "
                    f"{outcome.case_statuses.get('missing_prediction', 0)} missing."
                )
            notes += [f"{dataset.name} / {model.name}: {n}" for n in model_notes]
            if outcome.n_cases and not outcome.n_scored:  # nothing to rank: not "ok"
                outcome.status = "failed"
                outcome.error = (
                    f"0 of {outcome.n_cases} cases scored "
                    f"({outcome.case_statuses.get('failed', 0)} failed, "
                    f"{outcome.case_statuses.get('missing_prediction', 0)} missing); fix the "
                    "model or its inputs, then re-run."
                )
                ui.note(f"{dataset.name} / {model.name}: {outcome.error}")
    summary = RunSummary(outcomes=outcomes, notes=notes, resumed=resumed)
    ui.overall(len(outcomes), steps)
    scored = [o for o in outcomes if o.status == "ok"]
    if bench.report and scored and bench.task == "detection":
        summary.report = _detection_report(bench, store, scored, ui)
    elif bench.report and scored:
        ui.stage("checking the analysis inputs", None)
        stamp_path = bench.output / STAMP_NAME
        parts = analysis_inputs(bench, store, scored)
        kept = _kept_report(stamp_path, parts, bench.output / "report")
        n_stored = sum(o.n_scored for o in scored)
        if isinstance(kept, KeptReport):
            summary.report = kept
            resumed.append(
                f"{n_stored} cases already scored, analysis unchanged (inputs digest "
                f"{_combined(parts)[:12]}): the report in {bench.output / 'report'} is kept, "
                "not rebuilt."
            )
        else:
            resumed.append(
                f"analysis and report rebuilt ({kept}); the analysis is joint across models, "
                "so every model's numbers and figures are recomputed."
            )
            stamp_path.unlink(missing_ok=True)  # a build cut short leaves no stamp to trust
            summary.report = _report(bench, store, scored, ui)
            if analysis_inputs(bench, store, scored) == parts:  # no writer changed them since
                _write_stamp(stamp_path, parts, bench.output / "report", summary.report)
    ui.overall(steps, steps)
    return summary


@dataclass(frozen=True)
class _Reference:
    """A dataset's reference, discovered once before any work."""

    cases: Mapping[str, CaseSource]
    case_ids: list[str]
    files: list[Path]
    schema: LabelSchema
    labels: Mapping[int, str] | None


def _prepare(dataset: DatasetCard, bench: Benchmark, ui: Progress) -> _Reference:
    """Discover the reference and check what the models need, before any work starts.

    Raises
    ------
    InputError
        An unreadable label spec or schema, a model's unreadable ``prediction_labels``, or
        (for a model that is run) a first case without its input image.
    """
    ui.stage(f"{dataset.name}: reading the reference", None)
    schema = LabelSchema.from_file(dataset.schema) if dataset.schema else DEFAULT_SCHEMA
    labels = read_label_map_spec(dataset.labels, schema) if dataset.labels else None
    problems: dict[str, str] = {}
    cases = discover_cases(dataset.root, layout=dataset.layout, schema=schema,  # type: ignore[arg-type]
                           labels=labels, role="reference", problems=problems)  # fmt: skip
    case_ids = sorted(set(cases) | set(problems))
    if not case_ids:
        raise InputError(f"Dataset {dataset.name!r}: no cases in {dataset.root}.")
    for model in bench.models:
        if model.prediction_labels is not None:
            read_label_map_spec(model.prediction_labels, schema)
        image = dataset.image_path(case_ids[0])
        if model.runner is not None and not image.is_file():
            raise InputError(
                f"Dataset {dataset.name!r}: the input image of case {case_ids[0]!r} is not at "
                f"{image}; fix 'image' in the dataset card (relative to root, e.g. "
                "'{case}/ct.nii.gz', or '../imagesTs/{case}_0000.nii.gz' for nnU-Net), which "
                f"model {model.name!r} needs."
            )
    files = [f for src in cases.values() for f in _source_files(src)]
    files += [p for p in (dataset.labels, dataset.schema, dataset.metadata) if p is not None]
    return _Reference(cases=cases, case_ids=case_ids, files=files, schema=schema, labels=labels)


def _source_files(source: CaseSource) -> list[Path]:
    if isinstance(source, LabelMapFile):
        return [source.path]
    return list(source.files.values()) if isinstance(source, StructureFiles) else []


def _score(
    dataset: DatasetCard,
    model: ModelCard,
    folder: Path,
    profile: Any,
    store: ResultStore,
    bench: Benchmark,
    ref: _Reference,
    failures: dict[str, str],
    scheduler: str | None,
    ui: Progress,
) -> Any:
    description = f"{dataset.name}: scoring {model.name}"
    pred_labels = (
        read_label_map_spec(model.prediction_labels, ref.schema)
        if model.prediction_labels is not None
        else None
    )
    return score(
        dataset.root, folder, model=model.name, dataset=dataset.name,  # type: ignore[arg-type]
        profile=profile, store=store, workers=bench.workers, layout=dataset.layout,
        prediction_layout=model.prediction_layout, labels=ref.labels,
        prediction_labels=pred_labels, schema=ref.schema, failures=failures,
        scheduler=scheduler, on_start=lambda n: ui.stage(description, n),
        on_case=lambda _r: ui.advance(), probabilities=model.probabilities,
    )  # fmt: skip


def _spot_ok(
    outcome: ModelOutcome,
    bench: Benchmark,
    ref: _Reference,
    folder: Path,
    model: ModelCard,
    first: list[str],
    ui: Progress,
    crashed: Mapping[str, str] | None = None,
) -> bool:
    """Run the spot check; False (and the outcome marked) when the model looks misaligned.

    Predictions are found and labelled exactly as scoring will (same label fallbacks). A
    prediction folder that cannot be read at all is a finding too, and so is a runner that
    failed on every case of the spot check (``crashed``: case -> the runner's error; those
    cases are not in ``first``).
    """
    if bench.spot_check is None or not model.spot_check:
        return True
    if not first and crashed:
        outcome.spot = runner_failed(model.name, crashed)
        outcome.status = "spot_check_failed"
        ui.note(f"spot check failed: {outcome.spot.finding}")
        return False
    if not first:
        return True
    ui.stage(f"{outcome.dataset}: spot check of {model.name}", None)
    given = (
        read_label_map_spec(model.prediction_labels, ref.schema)
        if model.prediction_labels is not None
        else None
    )
    labels = resolve_prediction_labels(folder, ref.labels, given, ref.cases)
    try:
        predictions = discover_cases(folder, layout=model.prediction_layout, schema=ref.schema,
                                     labels=labels, role="prediction", problems={})  # fmt: skip
    except LayoutError as exc:
        if _empty(folder):
            return True  # nothing predicted: scoring records every case as missing
        result = SpotCheckResult(0, float("nan"), f"{model.name}: {exc}")
    else:
        result = spot_check(ref.cases, predictions, first, model=model.name,
                            min_dice=bench.spot_check.min_dice)  # fmt: skip
    outcome.spot = result
    if result.ok:
        return True
    outcome.status = "spot_check_failed"
    ui.note(f"spot check failed: {result.finding}")
    return False


def _empty(folder: Path) -> bool:
    return not folder.is_dir() or not any(p for p in folder.iterdir() if not p.name.startswith("."))


def _infer(
    model: ModelCard,
    dataset: DatasetCard,
    case_ids: list[str],
    folder: Path,
    log: Path,
    bench: Benchmark,
    scheduler: str | None,
    ui: Progress,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
) -> tuple[dict[str, InferenceRecord], set[str]]:
    """Run the model on the cases not yet predicted by this very runner.

    A case is done when the log holds an ``ok`` record with the same fingerprint (runner,
    model version, input image) and its output is present, or (``retry_failed: false``) a
    failed one with the same fingerprint, or it is in ``skip`` (run moments ago, by the spot
    check). Returns every case's latest record, and the ids run now (their old scores are
    stale).
    """
    spec = model.runner
    if spec is None:
        raise ValueError(f"model {model.name!r} has no runner")
    folder.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    done = _read_log(log)
    marks = {c: _fingerprint(model, dataset.image_path(c)) for c in case_ids}

    def finished(c: str) -> bool:
        if c not in done or done[c][1] != marks[c]:
            return False  # never run, or run by another runner/version/image
        if done[c][0].status == "ok":
            return _has_output(folder, c)
        return not bench.retry_failed  # a failure stands unless retries are wanted

    todo = [c for c in case_ids if c not in skip and not finished(c)]
    workers = spec.workers or bench.workers
    if todo:
        ui.stage(f"{dataset.name}: running {model.name}", len(todo))
        jobs: Iterable[list[InferenceRecord]]
        if spec.batch_size is None:
            tasks = (
                InferenceTask(case_id=c, image=dataset.image_path(c), output_dir=folder,
                              spec=spec)
                for c in todo
            )  # fmt: skip
            jobs = ([r] for r in map_unordered(run_case, tasks, workers, scheduler=scheduler))
        else:
            size = spec.batch_size
            batches = (
                BatchTask(case_ids=tuple(chunk), output_dir=folder, spec=spec,
                          images=tuple(dataset.image_path(c) for c in chunk))
                for chunk in (todo[i : i + size] for i in range(0, len(todo), size))
            )  # fmt: skip
            jobs = map_unordered(run_batch, batches, workers, scheduler=scheduler)
        if log.is_file() and log.stat().st_size and not log.read_bytes().endswith(b"\n"):
            with log.open("a", encoding="utf-8") as fh:
                fh.write("\n")  # end a line cut by an interruption before appending
        with log.open("a", encoding="utf-8") as fh:
            for record in (r for job in jobs for r in job):
                line = {**asdict(record), "fingerprint": marks[record.case_id]}
                fh.write(json.dumps(line, default=str) + "\n")
                fh.flush()
                done[record.case_id] = (record, marks[record.case_id])
                ui.advance()
                if record.status != "ok":
                    ui.note(f"{model.name} / {record.case_id}: {record.status}: {record.message}")
    return {c: done[c][0] for c in case_ids if c in done}, set(todo)


def _fingerprint(model: ModelCard, image: Path) -> str:
    """What a prediction was made from: the runner, the model version and the input image
    (its path, size and modification time: an image rewritten in place is predicted again)."""
    try:
        st = image.stat()
        stamp = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = None  # a missing image: the runner records the failure
    key = {"runner": model.as_dict()["runner"], "version": model.version, "image": str(image),
           "image_stat": stamp}  # fmt: skip
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _read_log(log: Path) -> dict[str, tuple[InferenceRecord, str]]:
    out: dict[str, tuple[InferenceRecord, str]] = {}
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                raw = json.loads(line)
                mark = str(raw.pop("fingerprint", ""))
                out[raw["case_id"]] = (InferenceRecord(**raw), mark)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by an interruption: that case runs again
    return out


def _has_output(folder: Path, case_id: str) -> bool:
    case_dir = folder / case_id
    if case_dir.is_dir() and any(case_dir.iterdir()):
        return True
    return any(folder.glob(f"{case_id}.nii*"))


def _inference_summary(
    records: dict[str, InferenceRecord], model: ModelCard, outcome: ModelOutcome
) -> dict[str, Any]:
    """Touchstone's speed: total reference image volume / total seconds, over ok cases."""
    ok = [r for r in records.values() if r.status == "ok" and math.isfinite(r.volume_cm3)]
    seconds = sum(r.seconds for r in ok)
    volume = sum(r.volume_cm3 for r in ok)
    speed = volume / seconds if seconds > 0 else None
    outcome.speed_cm3_per_s = speed
    if speed is not None and model.min_speed_cm3_s is not None and speed < model.min_speed_cm3_s:
        outcome.slow = (
            f"{model.name} runs at {speed:.1f} cm³/s, below its minimum of "
            f"{model.min_speed_cm3_s:g} cm³/s."
        )
    return {
        "n_cases": len(ok),
        "seconds": seconds,
        "volume_cm3": volume,
        "cm3_per_s": speed,
        "min_speed_cm3_s": model.min_speed_cm3_s,
        "failed": {c: r.message for c, r in records.items() if r.status != "ok"},
        "per_case_seconds": {c: round(r.seconds, 3) for c, r in records.items()},
    }


def _record(
    store: ResultStore,
    run_id: str,
    model: ModelCard,
    dataset: DatasetCard,
    digest: str,
    inference: dict[str, Any] | None,
) -> None:
    """Add the cards, the dataset's content hash and the inference timing to the manifest."""
    manifest = store.manifest(run_id) or {}
    manifest["model"] = {**manifest.get("model", {}), **model.as_dict()}
    manifest["dataset"] = {**manifest.get("dataset", {}), **dataset.as_dict(),
                           "content_hash": digest}  # fmt: skip
    if inference is not None:
        manifest["inference"] = inference
    runs = store.runs()
    row = runs[runs["run_id"] == run_id].iloc[0]
    store.ensure_run(run_id, dataset=str(row.dataset), model=str(row.model),
                     profile=str(row.profile), manifest=manifest)  # fmt: skip


def training_overlap(
    models: Iterable[ModelCard], datasets: Iterable[DatasetCard]
) -> dict[str, list[str]]:
    """Each model's training data in terms of the test sets, for contamination checks.

    A model card lists the datasets (``"X"``) and cases (``"X:id"``) it was trained on; a
    dataset card's ``provenance`` lists, per source dataset, the test cases taken from it
    (an empty list: the whole test set comes from that source). A model trained on a source
    is contaminated on those test cases (or on the whole test set); entries naming a test set
    directly are kept as they are.
    """
    datasets = list(datasets)
    out: dict[str, list[str]] = {}
    for model in models:
        entries = set(model.training_data)
        for dataset in datasets:
            for source, cases in dataset.provenance.items():
                if source in model.training_data:
                    if cases:
                        entries.update(f"{dataset.name}:{c}" for c in cases)
                    else:
                        entries.add(dataset.name)
        if entries:
            out[model.name] = sorted(entries)
    return out


def _detection_report(
    bench: Benchmark, store: ResultStore, scored: list[ModelOutcome], ui: Progress
) -> Any:
    """The detection analysis and report of every dataset, in ``output/report/<dataset>``
    (or ``output/report`` for one dataset); computed anew on every run (seconds)."""
    from assay.report._detection import detection_report_for_store

    ui.stage("detection analysis and report", None)
    datasets = sorted({o.dataset for o in scored})
    options = dict(bench.analysis)
    files = []
    for name in datasets:
        folder = bench.output / "report" / (name if len(datasets) > 1 else "")
        files.append(
            detection_report_for_store(
                store, name, folder, profile=bench.profile,
                run_ids=[o.run_id for o in scored if o.dataset == name],
                cards={m.name: m for m in bench.models}, figure_formats=bench.figure_formats,
                policy=str(options.get("policy", "worst")),
                bootstrap=int(options.get("bootstrap", 2000)),
                seed=int(options.get("seed", 0)), alpha=float(options.get("alpha", 0.05)),
                control_scope=options.get("control_scope"),
                proportion_ci=str(options.get("proportion_ci", "bootstrap")),
            )
        )  # fmt: skip
    return files[0] if len(files) == 1 else files


def _report(bench: Benchmark, store: ResultStore, scored: list[ModelOutcome], ui: Progress) -> Any:
    from assay.report._build import build_report
    from assay.report._collect import collect_report_data
    from assay.scoring import software_versions

    datasets = sorted({o.dataset for o in scored})
    ui.stage("analysing", None)
    cards = {m.name: m for m in bench.models}
    options = dict(bench.analysis)
    options.setdefault("training_data", training_overlap(bench.models, bench.datasets))
    from assay._console import figure_total
    from assay.report._helpers import helper_pool

    with helper_pool(bench.workers) as helpers:  # the helper starts while the scores load
        data, metadata = collect_report_data(
            store, datasets, options=options, profile=bench.profile, cards=cards,
            run_ids=[o.run_id for o in scored],
            dataset_cards={d.name: d for d in bench.datasets if d.name in datasets},
            title=bench.name, software=software_versions(), helpers=helpers,
        )  # fmt: skip
        ui.stage("report figures", figure_total(data))  # known up front: counts and an ETA
        return build_report(data, bench.output / "report", metadata=metadata,
                            formats=bench.figure_formats, workers=bench.workers,
                            on_figure=lambda _s: ui.advance(), helpers=helpers)  # fmt: skip


# -- skipping an unchanged analysis and report ------------------------------------------------

#: The stamp ``assay run`` writes next to the report folder it built: the digests of the
#: analysis inputs and the SHA-256 of every file of the report.
STAMP_NAME = "report-stamp.json"
_STAMP_FORMAT = 1

#: Manifest entries that change on every scoring call without changing a score (times, and
#: the per-case input fingerprints, whose effect is in the stored rows): not analysis inputs.
_VOLATILE_MANIFEST_KEYS = ("last_started_at", "finished_at", "timings", "case_inputs")


@dataclass(frozen=True)
class KeptReport:
    """A report of an earlier run, kept because its inputs are unchanged (the attributes of
    :class:`~assay.report._build.ReportFiles`, read from the stamp). Its own class so that
    an unchanged re-run never imports the report package (matplotlib, seconds)."""

    index: Path
    leaderboard: Path
    bundle: Path
    figures: Path
    n_figures: int
    pages: tuple[Path, ...]
    formats: tuple[str, ...]


def analysis_inputs(
    bench: Benchmark, store: ResultStore, scored: list[ModelOutcome]
) -> dict[str, str]:
    """Digests of everything the analysis and report of ``scored`` are made from.

    Parts: ``software`` (assay's own files and the library versions), ``options`` (title,
    profile, analysis options, contamination, cards, figure formats), one ``run D / M`` per
    run (its manifest without :data:`_VOLATILE_MANIFEST_KEYS`, its case rows without their
    write times, and every score row: value, status, message) and one ``metadata D`` per
    dataset. Reads only the database and small files: nothing of the analysis is loaded.
    """
    from assay.scoring import software_versions

    run_ids = sorted(o.run_id for o in scored)
    datasets = sorted({o.dataset for o in scored})
    parts = {"software": _digest({"versions": software_versions(), "code": _code_digest()})}
    parts["options"] = _digest({
        "title": bench.name, "profile": bench.profile, "analysis": dict(bench.analysis),
        "training": training_overlap(bench.models, bench.datasets),
        "models": [m.as_dict() for m in bench.models],
        "datasets": [d.as_dict() for d in bench.datasets if d.name in datasets],
        "figure_formats": list(bench.figure_formats),
    })  # fmt: skip
    runs = store.runs()
    runs = runs[runs["run_id"].isin(run_ids)]
    cases = store.cases(run_ids).drop(columns=["finished_at", "seconds"])  # write times
    scores = store.scores(run_ids=run_ids)
    by_run_cases = dict(tuple(cases.groupby("run_id", sort=False)))
    by_run_scores = dict(tuple(scores.groupby("run_id", sort=False)))
    empty_cases, empty_scores = cases.iloc[:0], scores.iloc[:0]
    for row in runs.itertuples():
        manifest = {k: v for k, v in row.manifest.items() if k not in _VOLATILE_MANIFEST_KEYS}
        parts[f"run {row.dataset} / {row.model}"] = _digest({
            "run": [row.run_id, row.dataset, row.model, row.profile, manifest],
            "cases": _frame_digest(by_run_cases.get(row.run_id, empty_cases)),
            "scores": _frame_digest(by_run_scores.get(row.run_id, empty_scores)),
        })  # fmt: skip
    for name in datasets:
        parts[f"metadata {name}"] = _frame_digest(store.metadata(name))
    return parts


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _frame_digest(frame: Any) -> str:
    """SHA-256 over a table's columns, dtypes and per-row hashes (values bit for bit, NaN
    as NaN; rows in the store's order)."""
    import pandas as pd

    h = hashlib.sha256(json.dumps([list(map(str, frame.columns)), len(frame)]).encode())
    if len(frame):
        rows = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False)
        h.update(rows.to_numpy().tobytes())
    return h.hexdigest()


def _code_digest() -> str:
    """SHA-256 of assay's own files (code, templates, assets): an edited assay redoes the
    analysis even when its version number is the same."""
    import assay

    root = Path(assay.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _combined(parts: Mapping[str, str]) -> str:
    return _digest(dict(parts))


def _kept_report(stamp: Path, parts: Mapping[str, str], report_dir: Path) -> KeptReport | str:
    """The report of the last run when ``parts`` equal the stamp's and every file it recorded
    is unchanged; otherwise why it must be rebuilt."""
    from assay.datasets import file_sha256

    if not stamp.is_file():
        return "no report stamp of an earlier run"
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        old = dict(recorded["inputs"])
        files = dict(recorded["files"])
        info = dict(recorded["report"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"the report stamp {stamp} is unreadable"
    if recorded.get("format") != _STAMP_FORMAT:
        return "the report stamp is of another assay version"
    if old != parts:
        return _what_changed(old, parts)
    for name, digest in files.items():
        path = report_dir / name
        try:
            same = path.is_file() and file_sha256(path) == digest
        except OSError:
            same = False
        if not same:
            return f"report file {name} was edited or removed"
    try:
        return KeptReport(
            index=report_dir / info["index"], leaderboard=report_dir / info["leaderboard"],
            bundle=report_dir / info["bundle"], figures=report_dir / info["figures"],
            n_figures=int(info["n_figures"]),
            pages=tuple(report_dir / p for p in info["pages"]),
            formats=tuple(info["formats"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return f"the report stamp {stamp} is unreadable"


def _what_changed(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    reasons = []
    if old.get("software") != new.get("software"):
        reasons.append("assay or its libraries changed")
    if old.get("options") != new.get("options"):
        reasons.append("the analysis or report options or the cards changed")
    keys = sorted((set(old) | set(new)) - {"software", "options"})
    changed = [k for k in keys if k in old and k in new and old[k] != new[k]]
    added = [k for k in keys if k not in old]
    removed = [k for k in keys if k not in new]
    for label, items in (("changed", changed), ("new", added), ("no longer reported", removed)):
        runs = [k.removeprefix("run ") for k in items if k.startswith("run ")]
        meta = [k.removeprefix("metadata ") for k in items if k.startswith("metadata ")]
        if runs:
            reasons.append(f"scores of {', '.join(runs)} {label}")
        if meta:
            reasons.append(f"metadata of {', '.join(meta)} {label}")
    return "; ".join(reasons) or "the inputs changed"


def _write_stamp(stamp: Path, parts: Mapping[str, str], report_dir: Path, files: Any) -> None:
    """Record ``parts`` and the SHA-256 of every file now in ``report_dir``."""
    from assay.datasets import file_sha256

    def rel(path: Path) -> str:
        return str(Path(path).relative_to(report_dir))

    record = {
        "format": _STAMP_FORMAT,
        "inputs": dict(parts),
        "report": {
            "index": rel(files.index), "leaderboard": rel(files.leaderboard),
            "bundle": rel(files.bundle), "figures": rel(files.figures),
            "n_figures": int(files.n_figures), "pages": [rel(p) for p in files.pages],
            "formats": list(getattr(files, "formats", ())),
        },
        "files": {
            str(p.relative_to(report_dir)): file_sha256(p)
            for p in sorted(report_dir.rglob("*")) if p.is_file()
        },
    }  # fmt: skip
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(stamp)


def _scored_line(dataset: str, model: str, report: Any, before: Mapping[str, str]) -> str:
    """E.g. ``synthetic / nnunet: 24 cases already scored, 0 to score``; ``before``: the
    statuses stored before scoring (cases not ``ok`` are retried on every run)."""
    line = f"{dataset} / {model}: {report.n_skipped} cases already scored, "
    if not report.n_scored:
        return line + "0 to score"
    changed = len(report.changed_cases)
    retried = sum(1 for st in before.values() if st != "ok")
    why = [f"{changed} changed since the last run"] if changed else []
    why += [f"{retried} failed, partial or missing before, retried"] if retried else []
    return line + f"{report.n_scored} scored now" + (f" ({'; '.join(why)})" if why else "")
