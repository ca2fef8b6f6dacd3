"""``assay run``: predictions (running models where needed) → scores → analysis → report.

Resumable at every stage: a case a model has already predicted (recorded ``ok`` in the
inference log, its outputs present) is not run again, a scored case is not scored again, and
the analysis and report are rebuilt from the database. Work is mapped over cases by the
executor (local processes, or a Dask cluster with ``scheduler``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assay.datasets import (
    DEFAULT_SCHEMA,
    DatasetCard,
    LabelSchema,
    content_hash,
    discover_cases,
    read_label_map_spec,
)
from assay.errors import AssayError, LayoutError
from assay.metrics import get_profile
from assay.models import ModelCard
from assay.models._runner import InferenceRecord, InferenceTask, run_case
from assay.runs._config import Benchmark
from assay.runs._spot_check import SpotCheckResult, spot_check
from assay.scoring import map_unordered, score
from assay.store import ResultStore, read_metadata


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
    status: str = "ok"  # ok | spot_check_failed
    n_cases: int = 0
    case_statuses: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (case, message)
    spot: SpotCheckResult | None = None
    speed_cm3_per_s: float | None = None
    slow: str = ""


@dataclass
class RunSummary:
    """Outcomes per (dataset, model), the report (if built) and notes."""

    outcomes: list[ModelOutcome]
    report: Any = None
    notes: list[str] = field(default_factory=list)

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
    store = ResultStore(db or bench.db)
    profile = get_profile(bench.profile)
    outcomes: list[ModelOutcome] = []
    notes: list[str] = []
    steps = len(bench.datasets) * len(bench.models) + int(bench.report)
    ui.overall(0, steps)
    for dataset in bench.datasets:
        schema = LabelSchema.from_file(dataset.schema) if dataset.schema else DEFAULT_SCHEMA
        labels = read_label_map_spec(dataset.labels, schema) if dataset.labels else None
        problems: dict[str, str] = {}
        ui.stage(f"{dataset.name}: reading the reference", None)
        reference = discover_cases(dataset.root, layout=dataset.layout, schema=schema,  # type: ignore[arg-type]
                                   labels=labels, role="reference", problems=problems)  # fmt: skip
        case_ids = sorted(set(reference) | set(problems))
        ui.stage(f"{dataset.name}: hashing {len(case_ids)} cases", None)
        digest = content_hash(dataset)
        if dataset.metadata is not None:
            table, id_column = read_metadata(dataset.metadata, id_column=dataset.id_column)
            store.write_metadata(dataset.name, table, id_column=id_column)
        for model in bench.models:
            ui.overall(len(outcomes), steps)
            outcome = ModelOutcome(dataset=dataset.name, model=model.name, n_cases=len(case_ids))
            outcomes.append(outcome)
            failures: dict[str, str] = {}
            inference: dict[str, Any] | None = None
            if model.runner is not None:
                folder = bench.output / "predictions" / dataset.name / model.name
                log = bench.output / "inference" / dataset.name / f"{model.name}.jsonl"
                first = case_ids[: bench.spot_check.cases] if bench.spot_check else []
                records = _infer(model, dataset, first, folder, log, bench, scheduler, ui)
                if not _spot_ok(outcome, bench, reference, folder, model, schema, first, ui):
                    continue
                records = _infer(model, dataset, case_ids, folder, log, bench, scheduler, ui)
                failures = {c: f"inference failed: {r.message}" for c, r in records.items()
                            if r.status != "ok"}  # fmt: skip
                inference = _inference_summary(records, model, outcome)
            else:
                folder = model.predictions  # type: ignore[assignment]
                first = case_ids[: bench.spot_check.cases] if bench.spot_check else []
                if not _spot_ok(outcome, bench, reference, folder, model, schema, first, ui):
                    continue
            pred_labels = (
                read_label_map_spec(model.prediction_labels, schema)
                if model.prediction_labels
                else None
            )
            ui.stage(f"{dataset.name}: scoring {model.name}", None)
            try:
                report = _score(
                    dataset, model, folder, profile, store, bench, labels, pred_labels, schema,
                    failures, scheduler, ui,
                )  # fmt: skip
            except AssayError as exc:  # this model's inputs are unusable: the others go on
                outcome.status = "failed"
                outcome.failures = [("*", str(exc))]
                ui.note(f"{dataset.name} / {model.name}: {exc}")
                continue
            notes += [f"{dataset.name} / {model.name}: {n}" for n in report.notes]
            _record(store, report.run_id, model, dataset, digest, inference, failures)
            cases = store.cases([report.run_id])
            outcome.case_statuses = dict(Counter(cases["status"]))
            outcome.failures = [
                (str(r.case_id), str(r.message))
                for r in cases.itertuples()
                if r.status in ("failed", "missing_prediction")
            ]
    summary = RunSummary(outcomes=outcomes, notes=notes)
    ui.overall(len(outcomes), steps)
    scored = [o for o in outcomes if o.status == "ok"]
    if bench.report and scored:
        summary.report = _report(bench, store, scored, ui)
    ui.overall(steps, steps)
    return summary


def _score(
    dataset: DatasetCard,
    model: ModelCard,
    folder: Path,
    profile: Any,
    store: ResultStore,
    bench: Benchmark,
    labels: Any,
    pred_labels: Any,
    schema: LabelSchema,
    failures: dict[str, str],
    scheduler: str | None,
    ui: Progress,
) -> Any:
    description = f"{dataset.name}: scoring {model.name}"
    return score(
        dataset.root, folder, model=model.name, dataset=dataset.name,  # type: ignore[arg-type]
        profile=profile, store=store, workers=bench.workers, layout=dataset.layout,
        prediction_layout=model.prediction_layout, labels=labels,
        prediction_labels=pred_labels, schema=schema, failures=failures,
        scheduler=scheduler, on_start=lambda n: ui.stage(description, n),
        on_case=lambda _r: ui.advance(),
    )  # fmt: skip


def _spot_ok(
    outcome: ModelOutcome,
    bench: Benchmark,
    reference: Any,
    folder: Path,
    model: ModelCard,
    schema: LabelSchema,
    first: list[str],
    ui: Progress,
) -> bool:
    """Run the spot check; False (and the outcome marked) when the model looks misaligned."""
    if bench.spot_check is None or not first:
        return True
    ui.stage(f"{outcome.dataset}: spot check of {model.name}", None)
    labels = (
        read_label_map_spec(model.prediction_labels, schema) if model.prediction_labels else None
    )
    try:
        predictions = discover_cases(folder, layout=model.prediction_layout, schema=schema,
                                     labels=labels, role="prediction", problems={})  # fmt: skip
    except LayoutError:
        return True  # nothing predicted yet for these cases: scoring records it
    result = spot_check(reference, predictions, first, model=model.name,
                        min_dice=bench.spot_check.min_dice)  # fmt: skip
    outcome.spot = result
    if result.ok:
        return True
    outcome.status = "spot_check_failed"
    ui.note(f"spot check failed: {result.finding}")
    return False


def _infer(
    model: ModelCard,
    dataset: DatasetCard,
    case_ids: list[str],
    folder: Path,
    log: Path,
    bench: Benchmark,
    scheduler: str | None,
    ui: Progress,
) -> dict[str, InferenceRecord]:
    """Run the model on the cases not yet predicted; return every case's latest record."""
    folder.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    done = _read_log(log)
    todo = [
        c for c in case_ids
        if not (done.get(c) and done[c].status == "ok" and _has_output(folder, c))
    ]  # fmt: skip
    if todo:
        ui.stage(f"{dataset.name}: running {model.name}", len(todo))
        spec = model.runner
        if spec is None:
            raise ValueError(f"model {model.name!r} has no runner")
        tasks: Iterable[InferenceTask] = (
            InferenceTask(case_id=c, image=dataset.image_path(c), output_dir=folder, spec=spec)
            for c in todo
        )
        with log.open("a", encoding="utf-8") as fh:
            for record in map_unordered(run_case, tasks, bench.workers, scheduler=scheduler):
                fh.write(json.dumps(asdict(record), default=str) + "\n")
                fh.flush()
                done[record.case_id] = record
                ui.advance()
                if record.status != "ok":
                    ui.note(f"{model.name} / {record.case_id}: {record.status}: {record.message}")
    return {c: done[c] for c in case_ids if c in done}


def _read_log(log: Path) -> dict[str, InferenceRecord]:
    out: dict[str, InferenceRecord] = {}
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                raw = json.loads(line)
                out[raw["case_id"]] = InferenceRecord(**raw)
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
    failures: dict[str, str],
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


def _report(bench: Benchmark, store: ResultStore, scored: list[ModelOutcome], ui: Progress) -> Any:
    from assay.report._build import build_report
    from assay.report._collect import collect_report_data
    from assay.scoring import software_versions

    datasets = sorted({o.dataset for o in scored})
    ui.stage("analysing", None)
    cards = {m.name: m for m in bench.models}
    options = dict(bench.analysis)
    options.setdefault("training_data", training_overlap(bench.models, bench.datasets))
    data, metadata = collect_report_data(
        store, datasets, options=options, profile=bench.profile, cards=cards,
        dataset_cards={d.name: d for d in bench.datasets if d.name in datasets},
        title=bench.name, software=software_versions(),
    )  # fmt: skip
    ui.stage("report figures", None)
    return build_report(data, bench.output / "report", metadata=metadata,
                        workers=bench.workers, on_figure=lambda _s: ui.advance())  # fmt: skip
