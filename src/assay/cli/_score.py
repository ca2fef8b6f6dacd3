"""``assay score`` and ``assay export``: score a folder of predictions, export the scores."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from assay._console import (
    print_table,
)
from assay.cli import _common as common
from assay.cli._common import _fatal_errors, _fmt, _progress, _run_score, app
from assay.datasets import DEFAULT_SCHEMA, LabelSchema, read_label_map_spec
from assay.errors import InputError
from assay.metrics import (
    DETECTION_PROTOCOLS,
    PROFILES,
    detection_profile,
    get_detection_protocol,
    get_profile,
)
from assay.scoring import MEANS_NOTE, STATUSES, ScoreReport, case_problems, summarize
from assay.store import FORMATS, ResultStore, export_scores


@app.command("score")
def score_command(
    reference: Annotated[Path, typer.Option(help="Folder of reference masks.")],
    predictions: Annotated[Path, typer.Option(help="Folder of the model's predictions.")],
    model: Annotated[str, typer.Option(help="Model name stored with every row.")],
    dataset: Annotated[str, typer.Option(help="Dataset (test set) name.")],
    profile: Annotated[
        str, typer.Option(help=f"Metric protocol: {', '.join(PROFILES)}.")
    ] = "default",
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://HOST:PORT) to score on a cluster."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Recompute cases already stored.")] = False,
    layout: Annotated[
        str | None, typer.Option(help="Reference layout: structures or labelmap (auto).")
    ] = None,
    prediction_layout: Annotated[
        str | None, typer.Option(help="Prediction layout: structures or labelmap (auto).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Label schema for label maps (dataset.json/YAML/JSON).")
    ] = None,
    prediction_labels: Annotated[
        Path | None,
        typer.Option(help="Prediction label schema, if it differs (default: its dataset.json)."),
    ] = None,
    schema: Annotated[
        Path | None, typer.Option(help="Extra structure names/synonyms (YAML/JSON).")
    ] = None,
    resample: Annotated[
        str | None, typer.Option(help="'nearest' resamples predictions on another grid.")
    ] = None,
    tolerance_mm: Annotated[
        float | None, typer.Option(help="Override the profile's NSD tolerance (mm).")
    ] = None,
    structure_tolerance: Annotated[
        list[str] | None,
        typer.Option(
            "--structure-tolerance", help="Per-structure NSD tolerance, NAME=MM (repeatable)."
        ),
    ] = None,
    task: Annotated[
        str,
        typer.Option(help="segmentation (organ metrics) or detection (tumour lesions)."),
    ] = "segmentation",
    protocol: Annotated[
        str,
        typer.Option(
            help=f"Detection protocol with --task detection: {', '.join(DETECTION_PROTOCOLS)}."
        ),
    ] = "atlas2",
    protocol_option: Annotated[
        list[str] | None,
        typer.Option(
            "--protocol-option",
            help="Change a knob of the detection protocol, KEY=VALUE (repeatable), e.g. "
            "iou_threshold=0.3 or organ_gate=touch.",
        ),
    ] = None,
    probabilities: Annotated[
        Path | None,
        typer.Option(
            help="Detection: folder of probability maps in [0, 1] (CASE/STRUCTURE.nii.gz)."
        ),
    ] = None,
    patient_scores: Annotated[
        Path | None,
        typer.Option(
            help="Detection: CSV of per-case patient scores for AUC (case_id, score, "
            "optional structure)."
        ),
    ] = None,
) -> None:
    """Score every case and structure; store one row per metric; print a summary."""
    from assay.scoring import check_score_options

    with _fatal_errors():
        # every option is checked before the database is opened or a case is read
        check_score_options(reference=reference, predictions=predictions, model=model,
                            dataset=dataset, workers=workers, layout=layout,
                            prediction_layout=prediction_layout, resample=resample,
                            scheduler=scheduler)  # fmt: skip
        if not db.strip():
            raise InputError("--db must be an SQLite file or an SQLAlchemy URL (got '').")
        label_schema = LabelSchema.from_file(schema) if schema else DEFAULT_SCHEMA
        if task not in ("segmentation", "detection"):
            raise InputError(f"--task {task!r} is not one of segmentation, detection.")
        if task == "detection" and (
            profile != "default" or tolerance_mm is not None or structure_tolerance
        ):
            raise InputError(
                "--profile, --tolerance-mm and --structure-tolerance set segmentation metrics; "
                "with --task detection choose a --protocol instead."
            )
        if protocol_option and task != "detection":
            raise InputError(
                "--protocol-option changes a detection protocol; add --task detection."
            )
        prof = (
            detection_profile(get_detection_protocol(protocol).with_text_options(protocol_option))
            if task == "detection" and protocol_option
            else detection_profile(protocol)
            if task == "detection"
            else get_profile(profile)
        )
        overrides = []
        if tolerance_mm is not None:
            prof = replace(prof, tolerance_mm=tolerance_mm)
            overrides.append(f"tolerance_mm={tolerance_mm:g}")
        if structure_tolerance:
            per = _structure_tolerances(structure_tolerance, label_schema)
            prof = replace(prof, structure_tolerance_mm={**prof.structure_tolerance_mm, **per})
            overrides += [f"{k}={v:g}mm" for k, v in sorted(per.items())]
        if overrides:  # another protocol: another name, so exports never mix the two
            prof = replace(prof, name=f"{prof.name}[{','.join(overrides)}]")
        label_map = read_label_map_spec(labels, label_schema) if labels else None
        pred_label_map = (
            read_label_map_spec(prediction_labels, label_schema) if prediction_labels else None
        )
        store = ResultStore(db)
        try:
            with _progress() as progress:
                report = _run_score(
                    progress,
                    f"{model}",
                    reference=reference,
                    predictions=predictions,
                    model=model,
                    dataset=dataset,
                    profile=prof,
                    store=store,
                    workers=workers,
                    force=force,
                    layout=layout,
                    prediction_layout=prediction_layout,
                    labels=label_map,
                    prediction_labels=pred_label_map,
                    schema=label_schema,
                    resample=resample,
                    scheduler=scheduler,
                    probabilities=probabilities,
                    patient_scores=patient_scores,
                )
        except KeyboardInterrupt:
            common.err.print("[yellow]interrupted:[/] finished cases are stored; re-run to resume.")
            raise typer.Exit(130) from None
        _print_report(store, report)


def _structure_tolerances(items: list[str], schema: LabelSchema) -> dict[str, float]:
    """Parse ``NAME=MM`` items; names go through the schema (synonyms, unknown-name errors)."""
    tolerances: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            mm = float(value)
        except ValueError:
            mm = math.nan
        if not sep or not name.strip() or not math.isfinite(mm):
            raise InputError(
                f"Invalid --structure-tolerance {item!r}; expected NAME=MM, e.g. liver=1.5."
            )
        tolerances[schema.canonical(name.strip(), where="--structure-tolerance")] = mm
    return tolerances


def _print_report(store: ResultStore, report: ScoreReport) -> None:
    scores = store.scores(run_ids=[report.run_id])
    common.out.print(
        f"[bold]{escape(report.model)}[/] on [bold]{escape(report.dataset)}[/] (profile "
        f"{escape(report.profile)}, run {report.run_id}): {report.n_cases} cases, "
        f"{report.n_scored} scored now, {report.n_skipped} already stored, {report.seconds:.1f} s"
    )
    if report.profile.startswith("detection:"):
        from assay.cli._detect import print_detection_scores

        print_detection_scores(store, report.run_id)
    else:
        _print_summary(summarize(scores))
    cases = store.cases([report.run_id])
    counts = cases["status"].value_counts()
    common.out.print(
        f"cases: {int(counts.get('ok', 0))} ok, {int(counts.get('partial', 0))} partial, "
        f"{int(counts.get('failed', 0))} failed, "
        f"{int(counts.get('missing_prediction', 0))} missing prediction"
    )
    problems = case_problems(cases)
    for row in problems.head(10).itertuples():
        flags = f" [{row.flags}]" if row.flags else ""
        common.out.print(
            escape(f"  {row.case_id}: {row.status}{flags} {row.message}"), highlight=False
        )
    if len(problems) > 10:
        common.out.print(
            f"  ... and {len(problems) - 10} more (see the cases table in the database)"
        )
    for note in report.notes:
        common.out.print(f"[yellow]note:[/] {escape(note)}")


def _print_summary(summary: pd.DataFrame) -> None:
    table = Table(title="Per-structure summary", show_lines=False)
    for col in ("structure", *STATUSES, "mean Dice", "mean NSD"):
        table.add_column(
            col, justify="left" if col == "structure" else "right", no_wrap=col == "structure"
        )
    for row in summary.itertuples(index=False):
        d = row._asdict()
        table.add_row(
            d["structure"],
            *(str(int(d[s])) for s in STATUSES),
            _fmt(d["mean_dsc"]),
            _fmt(d["mean_nsd"]),
        )
    print_table(common.out, table)
    common.out.print(MEANS_NOTE, style="dim")


@app.command("export")
def export_command(
    out_path: Annotated[Path, typer.Option("--out", help="Output file (csv/parquet) or folder.")],
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "csv",
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    profile: Annotated[str | None, typer.Option(help="Only this profile.")] = None,
) -> None:
    """Write per-case scores: tidy CSV/Parquet, or the Touchstone layout."""
    with _fatal_errors():
        files = export_scores(
            ResultStore(db, create=False), fmt, out_path, dataset=dataset, model=model,
            profile=profile,
        )  # fmt: skip
        for f in files:
            common.out.print(escape(f"wrote {f}"), highlight=False)
