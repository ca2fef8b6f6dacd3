"""``assay run BENCHMARK.yaml``: every stage of a benchmark from one config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from assay._console import (
    AnyProgress,
    print_table,
)
from assay.cli import _common as common
from assay.cli._analyze import _print_report_files
from assay.cli._common import _fatal_errors, _figure_formats, _progress, app


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="BENCHMARK.yaml (datasets, models, options).")],
    db: Annotated[
        str | None, typer.Option(help="SQLite file or SQLAlchemy URL (overrides the config).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://HOST:PORT): run on that cluster."),
    ] = None,
    figure_formats: Annotated[
        str | None,
        typer.Option(
            "--figure-formats",
            help="Figure files, comma-separated: svg (always), pdf, png; overrides the "
            "config's figure_formats (default: svg).",
        ),
    ] = None,
) -> None:
    """Run a whole benchmark: predictions, scoring, analysis and report, resumably."""
    from dataclasses import replace

    from assay.runs import load_benchmark, run_benchmark

    with _fatal_errors():
        bench = load_benchmark(config)
        if figure_formats is not None:
            bench = replace(bench, figure_formats=_figure_formats(figure_formats))
        try:
            with _progress() as progress:
                summary = run_benchmark(
                    bench, db=db, scheduler=scheduler, progress=_RichStages(progress)
                )
        except KeyboardInterrupt:
            common.err.print("[yellow]interrupted:[/] finished work is kept; re-run to resume.")
            raise typer.Exit(130) from None
    _print_run_summary(summary)
    for line in summary.resumed:  # what was skipped (already scored, unchanged analysis)
        common.out.print(escape(line), highlight=False)
    if summary.report is not None:
        from assay.report._detection import DetectionReport

        reports = summary.report if isinstance(summary.report, list) else [summary.report]
        for report in reports:
            if isinstance(report, DetectionReport):
                from assay.cli._detect import print_detection_notes

                print_detection_notes(report)
                for f in report.files:
                    common.out.print(escape(f"wrote {f}"), highlight=False)
            else:
                _print_report_files(report)
    stopped = [o for o in summary.outcomes if o.status != "ok"]
    if stopped:
        common.err.print(
            f"[red]{len(stopped)} (dataset, model) pair(s) were not scored[/] (see above); the "
            "others are in the database and the report."
        )
        raise typer.Exit(1)


class _RichStages:
    """The pipeline's progress on one rich progress bar per stage."""

    def __init__(self, progress: AnyProgress) -> None:
        self.progress = progress
        self.task: Any = None
        self.description = ""
        self.total: Any = None

    def overall(self, done: int, total: int) -> None:
        if self.total is None:
            self.total = self.progress.add_task("[bold]benchmark", total=total, unit="steps")
        self.progress.update(self.total, completed=done)

    def stage(self, description: str, total: int | None) -> None:
        if self.task is not None and description == self.description:
            self.progress.update(self.task, total=total)  # the same stage now knows its size
            return
        if self.task is not None:  # close the previous stage
            done = next(t for t in self.progress.tasks if t.id == self.task)
            # a stage without counts (hashing, reading, analysing) ends at 0/0: shown done,
            # with no count or rate, never as "1/1"
            n = int(done.completed) if done.total is None else int(done.total)
            self.progress.update(self.task, total=n, completed=n)
        self.description = description
        unit = "figures" if description.endswith("figures") else "cases"
        self.task = self.progress.add_task(escape(description), total=total, unit=unit)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def note(self, text: str) -> None:
        self.progress.console.print(f"[yellow]{escape(text)}[/]", highlight=False)


def _print_run_summary(summary: Any) -> None:
    table = Table(title="Benchmark run")
    for col in ("dataset", "model", "status", "cases", "ok", "partial", "failed", "missing",
                "cm³/s"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("dataset", "model", "status") else "right")
    for o in summary.outcomes:
        st = o.case_statuses
        speed = "-" if o.speed_cm3_per_s is None else f"{o.speed_cm3_per_s:.1f}"
        label = escape(o.label)  # e.g. "failed: 0 of 4 scored", "incomplete: 3 of 4 scored"
        if o.status != "ok" and not st:
            table.add_row(escape(o.dataset), escape(o.model), f"[red]{label}[/]",
                          str(o.n_cases), "not scored", "", "", "", speed)  # fmt: skip
            continue
        if o.status != "ok" or label != "ok":
            label = f"[{'red' if o.status != 'ok' else 'yellow'}]{label}[/]"
        table.add_row(
            escape(o.dataset), escape(o.model), label, str(o.n_cases), str(st.get("ok", 0)),
            str(st.get("partial", 0)), str(st.get("failed", 0)),
            str(st.get("missing_prediction", 0)), speed,
        )  # fmt: skip
    print_table(common.out, table)
    for o in summary.outcomes:
        if o.spot is not None and not o.spot.ok:
            common.out.print(f"[red]spot check:[/] {escape(o.spot.finding)}", highlight=False)
        if o.slow:
            common.out.print(f"[yellow]slow:[/] {escape(o.slow)}", highlight=False)
        if o.error:
            common.out.print(f"[red]not scored:[/] {escape(o.dataset)} / {escape(o.model)}: "
                      f"{escape(o.error)}", highlight=False)  # fmt: skip
        reasons: dict[str, list[str]] = {}
        for case, message in o.failures:
            reasons.setdefault(message.splitlines()[0] if message else "no message", []).append(
                case
            )
        for message, cases in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(cases[:5]) + (" ..." if len(cases) > 5 else "")
            common.out.print(
                escape(f"  {o.dataset} / {o.model}: {len(cases)} case(s) [{shown}]: {message}"),
                highlight=False,
            )
    for note in summary.notes:
        common.out.print(f"[dim]{escape(note)}[/]", highlight=False)
