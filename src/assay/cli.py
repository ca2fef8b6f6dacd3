"""The ``assay`` command line: one command per stage (DESIGN.md §1)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from assay._console import (
    AnyProgress,
    HelpGroup,
    app_options,
    figure_total,
    make_console,
    make_progress,
    print_table,
)
from assay.datasets import DEFAULT_SCHEMA, LabelSchema, read_label_map_spec
from assay.errors import AssayError, InputError
from assay.metrics import PROFILES, get_profile
from assay.models import load_model_cards
from assay.scoring import MEANS_NOTE, STATUSES, ScoreReport, case_problems, score, summarize
from assay.store import FORMATS, ResultStore, export_scores, import_touchstone

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="assay: exact, fast evaluation of medical image segmentation.",
    rich_markup_mode=None,  # plain help: option names are never cut, at any width
    cls=HelpGroup,  # and command summaries are whole
)
app.callback()(app_options)  # assay --version
out = make_console()  # a terminal's console, or a wide one that never wraps (logs, CI)
err = make_console(stderr=True)


@contextmanager
def _fatal_errors() -> Iterator[None]:
    """Turn assay errors and file-system errors into a one-line message and exit status 2.

    SIGTERM stops the command like Ctrl-C (work in flight is lost, committed work kept), with
    exit status 143 instead of 130.
    """
    import signal
    import threading

    from assay.errors import os_error_message

    terminated: list[int] = []

    def on_sigterm(signum: int, _frame: Any) -> None:
        if not terminated:  # once: a second SIGTERM must not interrupt the cleanup
            terminated.append(signum)
            raise KeyboardInterrupt

    previous: Any = None
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except (AssayError, OSError) as exc:
        text = os_error_message(exc) if isinstance(exc, OSError) else str(exc)
        err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # a command without its own message
        err.print("[yellow]interrupted:[/] finished work is kept; re-run to redo the rest.")
        raise typer.Exit(143 if terminated else 130) from None
    except typer.Exit as exc:
        if terminated and exc.exit_code == 130:  # the command's own Ctrl-C handling
            raise typer.Exit(143) from None
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _progress() -> AnyProgress:
    """Live bars on a terminal; complete progress lines when stderr is a log."""
    return make_progress(err)


def _run_score(progress: AnyProgress, description: str, **kwargs: Any) -> ScoreReport:
    # quiet: in a log the first line is "model: 0/N cases", once the cases are found (an
    # input error before that leaves stderr its one error line)
    task = progress.add_task(escape(description), total=None, quiet=True)
    return score(
        **kwargs,
        on_start=lambda n: progress.update(task, total=n),
        on_case=lambda _record: progress.advance(task),
    )


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
        prof = get_profile(profile)
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
                )
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/] finished cases are stored; re-run to resume.")
            raise typer.Exit(130) from None
        _print_report(store, report)


def _structure_tolerances(items: list[str], schema: LabelSchema) -> dict[str, float]:
    """Parse ``NAME=MM`` items; names go through the schema (synonyms, unknown-name errors)."""
    out: dict[str, float] = {}
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
        out[schema.canonical(name.strip(), where="--structure-tolerance")] = mm
    return out


def _print_report(store: ResultStore, report: ScoreReport) -> None:
    scores = store.scores(run_ids=[report.run_id])
    out.print(
        f"[bold]{escape(report.model)}[/] on [bold]{escape(report.dataset)}[/] (profile "
        f"{escape(report.profile)}, run {report.run_id}): {report.n_cases} cases, "
        f"{report.n_scored} scored now, {report.n_skipped} already stored, {report.seconds:.1f} s"
    )
    _print_summary(summarize(scores))
    cases = store.cases([report.run_id])
    counts = cases["status"].value_counts()
    out.print(
        f"cases: {int(counts.get('ok', 0))} ok, {int(counts.get('partial', 0))} partial, "
        f"{int(counts.get('failed', 0))} failed, "
        f"{int(counts.get('missing_prediction', 0))} missing prediction"
    )
    problems = case_problems(cases)
    for row in problems.head(10).itertuples():
        flags = f" [{row.flags}]" if row.flags else ""
        out.print(escape(f"  {row.case_id}: {row.status}{flags} {row.message}"), highlight=False)
    if len(problems) > 10:
        out.print(f"  ... and {len(problems) - 10} more (see the cases table in the database)")
    for note in report.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


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
    print_table(out, table)
    out.print(MEANS_NOTE, style="dim")


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
            out.print(escape(f"wrote {f}"), highlight=False)


import_app = typer.Typer(
    no_args_is_help=True,
    help="Import published per-case results.",
    rich_markup_mode=None,
    cls=HelpGroup,
)
app.add_typer(import_app, name="import")


@import_app.command("touchstone")
def import_touchstone_command(
    results_dir: Annotated[Path, typer.Argument(help="Folder of <model_dir>/dsc.csv, nsd.csv.")],
    dataset: Annotated[str, typer.Option(help="Dataset (test set) name.")],
    models: Annotated[Path, typer.Option(help="YAML: model folder -> model card.")],
    metadata: Annotated[Path | None, typer.Option(help="Case metadata CSV (, or ;).")] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Case id column of the metadata (default: first).")
    ] = None,
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
) -> None:
    """Load a Touchstone-layout results folder and its case metadata into the database."""
    with _fatal_errors():
        report = import_touchstone(
            ResultStore(db), results_dir, dataset=dataset, cards=load_model_cards(models),
            metadata=metadata, id_column=id_column,
        )  # fmt: skip
        table = Table(title=f"Imported into dataset {escape(report.dataset)}")
        for col in ("folder", "model", "cases", "missing predictions"):
            table.add_column(
                col, justify="right" if col in ("cases", "missing predictions") else "left"
            )
        for m in report.models:
            table.add_row(escape(m.folder), escape(m.name), str(m.n_cases), str(m.n_missing))
        print_table(out, table)
        out.print(
            f"{len(report.models)} models, {len(report.structures)} structures "
            f"({', '.join(report.structures)}), metadata for {report.n_metadata} cases.",
            highlight=False,
        )


# Options shared by `analyze` and `report` (the analysis parameters).
_ProfileFilter = Annotated[str | None, typer.Option(help="Only runs of this profile.")]
_Policy = Annotated[str, typer.Option(help="Missing values: worst, exclude, paper.")]
_Aggregation = Annotated[str, typer.Option(help="Average column convention: default, touchstone.")]
_Bootstrap = Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")]
_Seed = Annotated[int, typer.Option(help="Bootstrap seed.")]
_CI = Annotated[str, typer.Option(help="CI method: percentile, bca.")]
_Alpha = Annotated[float, typer.Option(help="Significance level.")]
_WinnerRule = Annotated[
    str,
    typer.Option(
        help="Ranking + co-winner test: mean (sign-flip permutation test of the mean "
        "difference), median (permutation test of the median difference), touchstone "
        "(one-sided Wilcoxon, the paper's rule)."
    ),
]
_Permutations = Annotated[
    int, typer.Option(min=100, help="Permutation budget of the mean/median tests (exact below).")
]
_Groups = Annotated[
    list[str] | None,
    typer.Option(
        "--groups",
        help="Subgroups: sex | age:decades | age:0,40,60,120 | name: QUERY (repeatable).",
    ),
]
_MinGroupSize = Annotated[int, typer.Option(help="Smallest group analysed.")]
_Correction = Annotated[str, typer.Option(help="Subgroup pairs: bonferroni, fdr_bh.")]
_SubgroupFamily = Annotated[
    str,
    typer.Option(
        help="Subgroup tests corrected together: all (every model, grouping and structure "
        "of a dataset and metric) or model (within one model and grouping)."
    ),
]
_WorstValue = Annotated[
    list[str] | None,
    typer.Option(help="Worst value METRIC=VALUE for missing cases and +inf, e.g. hd95=500."),
]


def _check_analysis_choices(
    policy: str, aggregation: str, ci: str, correction: str, winner_rule: str = "mean"
) -> None:
    from assay.stats import WINNER_RULES

    _choice("winner-rule", winner_rule, tuple(WINNER_RULES))
    _choice("policy", policy, ("worst", "exclude", "paper"))
    _choice("aggregation", aggregation, ("default", "touchstone"))
    _choice("ci", ci, ("percentile", "bca"))
    _choice("correction", correction, ("bonferroni", "fdr_bh"))


@app.command("analyze")
def analyze_command(
    dataset: Annotated[
        list[str], typer.Option(help="Dataset(s) to analyse; several give a consensus ranking.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the CSV/JSON outputs.")],
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
    metric: Annotated[str, typer.Option(help="Metric: dsc, nsd, hd95, ...")] = "dsc",
    profile: _ProfileFilter = None,
    policy: _Policy = "worst",
    aggregation: _Aggregation = "default",
    bootstrap: _Bootstrap = 2000,
    seed: _Seed = 0,
    ci: _CI = "percentile",
    alpha: _Alpha = 0.05,
    winner_rule: _WinnerRule = "mean",
    permutations: _Permutations = 10_000,
    groups: _Groups = None,
    min_group_size: _MinGroupSize = 10,
    correction: _Correction = "bonferroni",
    subgroup_family: _SubgroupFamily = "all",
    models: Annotated[
        Path | None,
        typer.Option(help="Model cards (training data for contamination checks)."),
    ] = None,
    worst_value: _WorstValue = None,
) -> None:
    """Leaderboards with CIs, significance, winners, rank stability and subgroups."""
    from assay.report._collect import load_metadata, load_scores
    from assay.stats import analyze, parse_group_spec

    with _fatal_errors():
        _check_analysis_choices(policy, aggregation, ci, correction, winner_rule)
        _choice("subgroup-family", subgroup_family, ("all", "model"))
        store = ResultStore(db, create=False)
        scores = load_scores(store, dataset, profile)
        spec = dict(parse_group_spec(g) for g in groups or [])
        metadata = load_metadata(store, dataset) if spec else None
        worst = _worst_values(worst_value or [])
        training = _training_data(store, scores, models)
        result = analyze(
            scores, metric=metric, policy=policy, aggregation=aggregation,  # type: ignore[arg-type]
            n_bootstrap=bootstrap, seed=seed, ci_method=ci, alpha=alpha,  # type: ignore[arg-type]
            metadata=metadata, groups=spec, min_group_size=min_group_size,
            correction=correction, training_data=training, worst_values=worst,  # type: ignore[arg-type]
            subgroup_family=subgroup_family,  # type: ignore[arg-type]
            winner_rule=winner_rule, n_permutations=permutations,  # type: ignore[arg-type]
        )  # fmt: skip
        files = _write_analysis(result, out_dir, store, dataset, profile)
        _print_analysis(result)
        for f in files:
            out.print(escape(f"wrote {f}"), highlight=False)


def _training_data(
    store: ResultStore, scores: pd.DataFrame, cards_path: Path | None
) -> dict[str, list[str]]:
    """Model -> declared training data, from --models cards, else from the runs' manifests."""
    if cards_path is not None:
        return {c.name: list(c.training_data) for c in load_model_cards(cards_path).values()}
    from assay.report._collect import cards_from_runs

    runs = store.runs()
    cards = cards_from_runs(runs[runs["run_id"].isin(set(scores["run_id"]))])
    return {name: list(c.training_data) for name, c in cards.items() if c.training_data}


def _worst_values(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise InputError(
                f"Invalid --worst-value {item!r}; expected METRIC=VALUE, e.g. hd95=500."
            )
    return out


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"--{option} {value!r} is not one of {', '.join(allowed)}.")


def _write_analysis(
    result: Any, out_dir: Path, store: ResultStore, datasets: list[str], profile: str | None
) -> list[Path]:
    import json

    from assay.scoring import software_versions

    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "aggregates.csv": result.aggregates,
        "pairwise.csv": result.pairwise,
        "inversions.csv": result.inversions,
        "stability.csv": result.stability.merge(
            result.stability_tau, on=["dataset", "structure", "metric"], how="left"
        ),  # per model, with its slice's Kendall τ summary
        "rankings.csv": result.rankings,
        "policy_changes.csv": result.changes,
    }
    if not result.consensus.empty:
        frames["consensus.csv"] = result.consensus
    if not result.subgroups.empty:
        frames["subgroups.csv"] = result.subgroups
        frames["subgroup_tests.csv"] = result.subgroup_tests
    files = []
    for name, frame in frames.items():
        frame.to_csv(out_dir / name, index=False)
        files.append(out_dir / name)
    runs = store.runs()
    runs = runs[runs["dataset"].isin(datasets)]
    info = {
        "datasets": datasets,
        "profile": profile,
        "params": result.params,
        "warnings": list(result.warnings),
        "software": software_versions(),
        "runs": [
            {
                "run_id": r.run_id,
                "model": r.model,
                "profile": r.profile,
                "protocol": r.manifest.get("protocol"),
            }
            for r in runs.itertuples()
        ],
    }
    (out_dir / "analysis.json").write_text(json.dumps(info, indent=2, default=str))
    files.append(out_dir / "analysis.json")
    return files


def _print_analysis(result: Any) -> None:
    from assay.report._format import mark_notes, number_format, row_marks, winner_legend

    agg = result.aggregates
    params = result.params
    notes: list[str] = []
    for (dataset, metric), part in agg[agg["structure"] == "average"].groupby(
        ["dataset", "metric"]
    ):
        fmt = number_format(agg, str(metric))
        part = part.sort_values(["rank", "model"], na_position="last")
        marks = row_marks(part, result.inversions)
        title = (
            f"{escape(str(dataset))}: {escape(str(metric))} ({fmt.unit}), average over structures"
        )
        table = Table(title=title)
        for col in ("rank", "model", "mean", "95% CI", "n", "→worst", "dropped"):
            table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for row in part.itertuples():
            mark = marks[str(row.model)]
            trophy = " 🏆" if mark.winner else ""
            rank = "excl." if pd.isna(row.rank) else f"{int(row.rank)}{mark.suffix}{trophy}"
            ci = "-" if pd.isna(row.ci_low) else f"[{fmt(row.ci_low)}, {fmt(row.ci_high)}]"
            table.add_row(
                rank, escape(str(row.model)), fmt(row.mean), ci, str(int(row.n)),
                str(int(row.n_set_worst)), str(int(row.n_dropped)),
            )  # fmt: skip
        print_table(out, table)
        notes += [n for n in mark_notes(marks, params, str(metric)) if n not in notes]
    for note in notes:
        out.print(escape(note), highlight=False)
    inv = result.inversions
    inv = inv[inv["structure"] != "average"] if len(inv) else inv
    for r in inv.head(20).itertuples(index=False):
        out.print(
            escape(
                f"‡ {r.dataset} {r.structure} {r.metric}: {r.model} (rank {int(r.rank)}) is "
                f"significantly better than {r.better_than} (rank {int(r.rank_better_than)}), "
                f"Holm p = {r.p_holm:.3g}"
            ),
            highlight=False,
        )
    if len(inv) > 20:
        out.print(f"‡ … and {len(inv) - 20} more (all in inversions.csv).")
    out.print(
        f"{winner_legend(params).replace('`', '')} CIs: paired bootstrap, "
        f"{params['bootstrap']['resamples']} resamples, seed "
        f"{params['bootstrap']['seed']}; policy {params['policy']} (→worst: values set to "
        "the worst value, dropped: values left out); excl. = trained on this dataset (model "
        "card), not ranked.",
        highlight=False,
    )
    for w in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)


@app.command("report")
def report_command(
    dataset: Annotated[list[str], typer.Option(help="Dataset(s) to report (repeatable).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the site and bundle.")],
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
    metric: Annotated[
        list[str] | None, typer.Option(help="Metric(s) to report (default: dsc and nsd).")
    ] = None,
    profile: _ProfileFilter = None,
    policy: _Policy = "worst",
    aggregation: _Aggregation = "default",
    bootstrap: _Bootstrap = 2000,
    seed: _Seed = 0,
    ci: _CI = "percentile",
    alpha: _Alpha = 0.05,
    winner_rule: _WinnerRule = "mean",
    permutations: _Permutations = 10_000,
    groups: _Groups = None,
    min_group_size: _MinGroupSize = 10,
    correction: _Correction = "bonferroni",
    subgroup_family: _SubgroupFamily = "all",
    models: Annotated[
        Path | None,
        typer.Option(help="Model cards YAML (organisation, links, training data)."),
    ] = None,
    dataset_card: Annotated[
        list[Path] | None,
        typer.Option(help="Dataset card YAML (name, version, licence, citation); repeatable."),
    ] = None,
    worst_value: _WorstValue = None,
    title: Annotated[str | None, typer.Option(help="Title of the site.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes drawing figures.")] = 2,
) -> None:
    """Leaderboard Markdown, a self-contained HTML site, figures and a results bundle."""
    from assay.datasets import load_dataset_card
    from assay.stats import parse_group_spec

    with _fatal_errors():
        _check_analysis_choices(policy, aggregation, ci, correction, winner_rule)
        _choice("subgroup-family", subgroup_family, ("all", "model"))
        cards = dict(load_model_cards(models)) if models is not None else None
        dataset_cards = {c.name: c for c in map(load_dataset_card, dataset_card or [])}
        options = {
            "metrics": list(metric or []), "policy": policy, "aggregation": aggregation,
            "n_bootstrap": bootstrap, "seed": seed, "ci_method": ci, "alpha": alpha,
            "worst_values": _worst_values(worst_value or []),
            "groups": dict(parse_group_spec(g) for g in groups or []),
            "min_group_size": min_group_size, "correction": correction,
            "subgroup_family": subgroup_family,
            "winner_rule": winner_rule, "n_permutations": permutations,
        }  # fmt: skip
        store = ResultStore(db, create=False)
        files = _build_report(
            store, dataset, out_dir, options=options, profile=profile, cards=cards,
            dataset_cards=dataset_cards, title=title, workers=workers,
        )  # fmt: skip
        _print_report_files(files)


def _build_report(
    store: ResultStore, datasets: list[str], out_dir: Path, *, workers: int = 1, **kwargs: Any
) -> Any:
    """Analyse, print the leaderboards, and write the report folder (with progress)."""
    from assay.report._build import build_report
    from assay.report._collect import collect_report_data
    from assay.scoring import software_versions

    analysed: list[str] = []  # the metrics whose analysis has started

    def on_metric(metric: str) -> None:
        analysed.append(metric)
        progress.update(task, description=f"analysing {escape(metric)}")

    with _progress() as progress:
        task = progress.add_task("analysing", total=None, unit="metrics")
        data, metadata = collect_report_data(
            store, datasets, software=software_versions(), on_metric=on_metric, **kwargs,
        )  # fmt: skip
        n = len(analysed)
        progress.update(task, description="analysed", total=n, completed=n)
    for result in data.analyses.values():
        _print_analysis(result)
    drawn = [0]  # figures drawn (on_figure is called once per figure, written or not)

    def on_figure(_stem: str) -> None:
        drawn[0] += 1
        progress.advance(figures)

    with _progress() as progress:  # the total is known up front: counts and an ETA
        figures = progress.add_task("figures", total=figure_total(data), unit="figures")
        files = build_report(data, out_dir, metadata=metadata, workers=workers, on_figure=on_figure)
        progress.update(figures, total=drawn[0], completed=drawn[0])
    return files


def _print_report_files(files: Any) -> None:
    out.print(
        escape(
            f"site: {files.index} ({len(files.pages)} pages, {files.n_figures} figures; open "
            f"it in a browser)\nleaderboard: {files.leaderboard}\nfigures (PDF, PNG): "
            f"{files.figures}\nbundle: {files.bundle} (check it with: assay reanalyze "
            f"{files.bundle})"
        ),
        highlight=False,
    )


@app.command("reanalyze")
def reanalyze_command(
    bundle: Annotated[Path, typer.Argument(help="A results bundle folder (results.json).")],
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Rewrite results.json with the recomputed numbers (still reports changes).",
        ),
    ] = False,
) -> None:
    """Recompute every published number from the bundle's per-case scores; fail on drift."""
    from assay.report import reanalyze

    with _fatal_errors():
        result = reanalyze(bundle, update=update)
    for line in result.differences:
        out.print(escape(line), highlight=False)
    n = len(result.differences)
    if not n:
        out.print(
            f"[green]reproduced[/]: {result.n_checked} numbers of "
            f"{len(result.analyses)} metric(s) match {escape(str(bundle / 'results.json'))}."
        )
        return
    if update:
        out.print(f"[yellow]updated[/] results.json: {n} difference(s) above were rewritten.")
        return
    err.print(
        f"[red]drift[/]: {n} difference(s) between the published numbers and a recomputation "
        "from the per-case scores (see above). Nothing was rewritten; --update rewrites."
    )
    raise typer.Exit(1)


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
) -> None:
    """Run a whole benchmark: predictions, scoring, analysis and report, resumably."""
    from assay.runs import load_benchmark, run_benchmark

    with _fatal_errors():
        bench = load_benchmark(config)
        try:
            with _progress() as progress:
                summary = run_benchmark(
                    bench, db=db, scheduler=scheduler, progress=_RichStages(progress)
                )
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/] finished work is kept; re-run to resume.")
            raise typer.Exit(130) from None
    _print_run_summary(summary)
    if summary.report is not None:
        _print_report_files(summary.report)
    stopped = [o for o in summary.outcomes if o.status != "ok"]
    if stopped:
        err.print(
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
    print_table(out, table)
    for o in summary.outcomes:
        if o.spot is not None and not o.spot.ok:
            out.print(f"[red]spot check:[/] {escape(o.spot.finding)}", highlight=False)
        if o.slow:
            out.print(f"[yellow]slow:[/] {escape(o.slow)}", highlight=False)
        if o.error:
            out.print(f"[red]not scored:[/] {escape(o.dataset)} / {escape(o.model)}: "
                      f"{escape(o.error)}", highlight=False)  # fmt: skip
        reasons: dict[str, list[str]] = {}
        for case, message in o.failures:
            reasons.setdefault(message.splitlines()[0] if message else "no message", []).append(
                case
            )
        for message, cases in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(cases[:5]) + (" ..." if len(cases) > 5 else "")
            out.print(
                escape(f"  {o.dataset} / {o.model}: {len(cases)} case(s) [{shown}]: {message}"),
                highlight=False,
            )
    for note in summary.notes:
        out.print(f"[dim]{escape(note)}[/]", highlight=False)


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
) -> None:
    """Generate a synthetic benchmark, score every simulated model, print the results."""
    from assay.runs._demo import check_demo_options, finish_demo_folder, prepare_demo_folder
    from assay.synthetic import MODELS, write_benchmark

    with _fatal_errors():
        check_demo_options(cases=cases, profile=profile)  # before the folder is touched
        replacing = prepare_demo_folder(out_dir)  # never removes what the demo did not write
        if replacing:
            out.print(escape(replacing), highlight=False)
        out.print(f"Writing a synthetic benchmark ({cases} cases, {len(MODELS)} models) ...")
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
                out.print(
                    escape(f"  {report.model} / {row.case_id}: {row.status}{flags} {row.message}"),
                    highlight=False,
                )
        files = export_scores(store, "touchstone", out_dir / "touchstone", profile=profile)
        export_scores(store, "csv", out_dir / "scores.csv", profile=profile)
        out.print(
            escape(
                f"database: {store.url}\nscores: {out_dir / 'scores.csv'}\n"
                f"touchstone layout: {files[0].parent.parent} ({len(files)} files)"
            ),
            highlight=False,
        )
        report = _demo_report(
            store, paths, out_dir / "report", profile=profile, workers=max(workers, 2)
        )
        _print_report_files(report)
        from assay.runs._demo import write_demo_config

        config = write_demo_config(paths, out_dir, workers=max(workers, 2))
        store.close()  # the database complete on disk, before its files are recorded
        finish_demo_folder(out_dir)
        out.print(
            escape(
                f"benchmark config: {config} (the same benchmark plus a threshold model that is "
                f"run per case, from one file: assay run {config})"
            ),
            highlight=False,
        )


def _demo_report(
    store: ResultStore, paths: Any, out_dir: Path, *, profile: str, workers: int
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
        workers=workers,
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
    print_table(out, table)


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
    print_table(out, table)
    out.print(MEANS_NOTE, style="dim")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="assay")


if __name__ == "__main__":
    sys.exit(main())
