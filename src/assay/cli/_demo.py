"""``assay demo``: a synthetic benchmark scored, analysed and published end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from assay._console import (
    print_table,
)
from assay.cli import _common as common
from assay.cli._analyze import _build_report, _print_report_files
from assay.cli._common import (
    _fatal_errors,
    _figure_formats,
    _FigureFormats,
    _fmt,
    _progress,
    _run_score,
    app,
)
from assay.scoring import MEANS_NOTE, case_problems, summarize
from assay.store import ResultStore, export_scores


@app.command("demo")
def demo_command(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for data, database, exports.")
    ] = Path("assay-demo"),
    cases: Annotated[
        int,
        typer.Option(
            min=2, help="Number of synthetic cases (24: enough for the tests to separate models)."
        ),
    ] = 24,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    profile: Annotated[str, typer.Option(help="Metric protocol.")] = "default",
    figure_formats: _FigureFormats = "svg",
    tumour_cases: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Patients of the tumour-detection benchmark (default 15/8 of --cases, at "
            "least 6; 0 leaves it out).",
        ),
    ] = None,
) -> None:
    """Generate a synthetic benchmark, score every simulated model, print the results."""
    from assay.runs._demo import check_demo_options, finish_demo_folder, prepare_demo_folder
    from assay.synthetic import MODELS, write_benchmark

    with _fatal_errors():
        check_demo_options(cases=cases, profile=profile)  # before the folder is touched
        formats = _figure_formats(figure_formats)
        replacing = prepare_demo_folder(out_dir)  # never removes what the demo did not write
        if replacing:
            common.out.print(escape(replacing), highlight=False)
        common.out.print(f"Writing a synthetic benchmark ({cases} cases, {len(MODELS)} models) ...")
        paths = write_benchmark(out_dir / "data", n_cases=cases)
        store = ResultStore(out_dir / "assay.db")
        with _progress() as progress:
            reports = [
                _run_score(
                    progress,
                    name,
                    reference=paths.reference,
                    predictions=folder,
                    model=name,
                    dataset="synthetic",
                    profile=profile,
                    store=store,
                    workers=workers,
                )
                for name, folder in paths.predictions.items()
            ]
        summary = summarize(store.scores(dataset="synthetic", profile=profile))
        _print_structure_matrix(summary)
        _print_leaderboard(summary)
        for report in reports:
            problems = case_problems(store.cases([report.run_id]))
            for row in problems.itertuples():
                flags = f" [{row.flags}]" if row.flags else ""
                common.out.print(
                    escape(f"  {report.model} / {row.case_id}: {row.status}{flags} {row.message}"),
                    highlight=False,
                )
        files = export_scores(store, "touchstone", out_dir / "touchstone", profile=profile)
        export_scores(store, "csv", out_dir / "scores.csv", profile=profile)
        common.out.print(
            escape(
                f"database: {store.url}\nscores: {out_dir / 'scores.csv'}\n"
                f"touchstone layout: {files[0].parent.parent} ({len(files)} files)"
            ),
            highlight=False,
        )
        report = _demo_report(
            store, paths, out_dir / "report", profile=profile, workers=max(workers, 2),
            figure_formats=formats,
        )  # fmt: skip
        _print_report_files(report)
        from assay.runs._demo import write_demo_config

        n_tumour = max(6, cases * 15 // 8) if tumour_cases is None else tumour_cases
        if n_tumour:
            _demo_detection(store, out_dir, n_tumour, workers)
        config = write_demo_config(paths, out_dir, workers=max(workers, 2), figure_formats=formats)
        store.close()  # the database complete on disk, before its files are recorded
        finish_demo_folder(out_dir)
        common.out.print(
            escape(
                f"benchmark config: {config} (the same benchmark plus a threshold model that is "
                f"run per case, from one file: assay run {config})"
            ),
            highlight=False,
        )


def _demo_detection(store: ResultStore, out_dir: Path, n_cases: int, workers: int) -> None:
    """The tumour-detection half of the demo: write, score (atlas2), analyse, print."""
    from assay.cli._detect import analyze_detection_command
    from assay.metrics import detection_profile
    from assay.synthetic import DETECTION_MODELS, write_tumour_benchmark

    common.out.print(
        f"Writing a synthetic tumour-detection benchmark ({n_cases} patients, "
        f"{len(DETECTION_MODELS)} detection models) ..."
    )
    paths = write_tumour_benchmark(out_dir / "data" / "tumours", n_cases=n_cases)
    with _progress() as progress:
        for name, folder in paths.predictions.items():
            _run_score(
                progress,
                name,
                reference=paths.reference,
                predictions=folder,
                model=name,
                dataset="synthetic-tumours",
                profile=detection_profile("atlas2"),
                store=store,
                workers=workers,
                probabilities=paths.probabilities.get(name),
            )
    analyze_detection_command(
        store=store, dataset=["synthetic-tumours"], profile=None, out_dir=out_dir / "detection",
        policy="worst", bootstrap=2000, seed=0, alpha=0.05, control_scope=None,
        proportion_ci="bootstrap",
    )  # fmt: skip


def _demo_report(
    store: ResultStore,
    paths: Any,
    out_dir: Path,
    *,
    profile: str,
    workers: int,
    figure_formats: tuple[str, ...] = ("svg",),
) -> Any:
    """The full report of the synthetic benchmark: Dice, NSD and HD95, subgroups by sex."""
    import numpy as np

    from assay.datasets import DatasetCard
    from assay.io import read_image
    from assay.models import ModelCard
    from assay.store import read_metadata
    from assay.synthetic import MODELS

    table, id_column = read_metadata(paths.metadata)
    store.write_metadata("synthetic", table, id_column=id_column)
    first = sorted(paths.reference.glob("*/ct.nii.gz"))[0]
    image = read_image(first)
    diagonal = float(np.linalg.norm(np.array(image.array.shape) * np.array(image.spacing_mm)))
    cards = {
        name: ModelCard(name=name, organisation="assay (simulated)", notes=description)
        for name, description in MODELS.items()
    }
    card = DatasetCard(
        name="synthetic",
        version="assay demo",
        description="Synthetic abdominal CT phantoms with nine organs (assay.synthetic).",
        licence="CC0-1.0 (generated data)",
        citation="assay synthetic benchmark, generated by `assay demo`",
    )
    options = {
        "metrics": ["dsc", "nsd", "hd95"],
        "worst_values": {"hd95": round(diagonal, 1)},
        "groups": {"sex": "sex"},
        "min_group_size": 2,
    }
    return _build_report(
        store, ["synthetic"], out_dir, options=options, profile=profile, cards=cards,
        dataset_cards={"synthetic": card}, title="assay demo: synthetic abdominal CT benchmark",
        workers=workers, figure_formats=figure_formats,
    )  # fmt: skip


def _print_structure_matrix(summary: pd.DataFrame) -> None:
    """Mean Dice per structure (rows) and model (columns)."""
    matrix = summary.pivot(index="structure", columns="model", values="mean_dsc")
    table = Table(title="Mean Dice per structure")
    table.add_column("structure", no_wrap=True)
    for model in matrix.columns:
        table.add_column(escape(str(model)), justify="right")  # stacked at "_" if narrow
    for structure, row in matrix.iterrows():
        table.add_row(str(structure), *("-" if pd.isna(v) else f"{v:.3f}" for v in row))
    print_table(common.out, table)


def _print_leaderboard(summary: pd.DataFrame) -> None:
    by_model = (
        summary.groupby("model")
        .agg(
            mean_dsc=("mean_dsc", "mean"),
            mean_nsd=("mean_nsd", "mean"),
            missing=("missing_prediction", "sum"),
            failed=("failed", "sum"),
        )
        .sort_values("mean_dsc", ascending=False)
    )
    table = Table(title="Models (mean over structures of the per-structure means)")
    for col in ("model", "mean Dice", "mean NSD", "missing", "failed"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for model, row in by_model.iterrows():
        table.add_row(
            str(model),
            _fmt(row.mean_dsc),
            _fmt(row.mean_nsd),
            str(int(row.missing)),
            str(int(row.failed)),
        )
    print_table(common.out, table)
    common.out.print(MEANS_NOTE, style="dim")
