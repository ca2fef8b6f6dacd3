"""``assay analyze``, ``assay report`` and ``assay reanalyze``: statistics and publication."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from assay._console import (
    figure_total,
    print_table,
)
from assay.cli import _common as common
from assay.cli._common import (
    _CI,
    _Aggregation,
    _Alpha,
    _Bootstrap,
    _check_analysis_choices,
    _choice,
    _Correction,
    _fatal_errors,
    _figure_formats,
    _FigureFormats,
    _Groups,
    _MinGroupSize,
    _Permutations,
    _Policy,
    _ProfileFilter,
    _progress,
    _Seed,
    _SubgroupFamily,
    _training_data,
    _WinnerRule,
    _worst_values,
    _WorstValue,
    app,
)
from assay.cli._common import ANALYSIS_DEFAULTS as D
from assay.errors import InputError
from assay.models import load_model_cards
from assay.store import ResultStore


@app.command("analyze")
def analyze_command(
    dataset: Annotated[
        list[str], typer.Option(help="Dataset(s) to analyse; several give a consensus ranking.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the CSV/JSON outputs.")],
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
    metric: Annotated[str, typer.Option(help="Metric: dsc, nsd, hd95, ...")] = "dsc",
    profile: _ProfileFilter = None,
    policy: _Policy = D.policy,
    aggregation: _Aggregation = D.aggregation,
    bootstrap: _Bootstrap = D.n_bootstrap,
    seed: _Seed = D.seed,
    ci: _CI = D.ci_method,
    alpha: _Alpha = D.alpha,
    winner_rule: _WinnerRule = D.winner_rule,
    permutations: _Permutations = D.n_permutations,
    groups: _Groups = None,
    min_group_size: _MinGroupSize = D.min_group_size,
    correction: _Correction = D.correction,
    subgroup_family: _SubgroupFamily = D.subgroup_family,
    models: Annotated[
        Path | None,
        typer.Option(help="Model cards (training data for contamination checks)."),
    ] = None,
    worst_value: _WorstValue = None,
    task: Annotated[
        str, typer.Option(help="segmentation (organs), or detection (tumours: P-Sen, T-Sen, ...).")
    ] = "segmentation",
    control_scope: Annotated[
        str | None,
        typer.Option(
            help="Detection controls: any_type or type_negative (default: the protocol's)."
        ),
    ] = None,
    proportion_ci: Annotated[
        str,
        typer.Option(
            help="Detection P-Sen/Spe/T-Sen intervals: bootstrap, wilson, clopper_pearson."
        ),
    ] = "bootstrap",
) -> None:
    """Leaderboards with CIs, significance, winners, rank stability and subgroups."""
    from assay.report._collect import load_metadata, load_scores
    from assay.stats import analyze, parse_group_spec

    with _fatal_errors():
        _choice("task", task, ("segmentation", "detection"))
        if task == "detection":
            from assay.cli._detect import analyze_detection_command
            from assay.metrics._detection_protocol import CONTROL_SCOPES
            from assay.stats._options import DETECTION_POLICIES, PROPORTION_CIS

            _choice("policy", policy, DETECTION_POLICIES)
            if control_scope is not None:
                _choice("control-scope", control_scope, CONTROL_SCOPES)
            _choice("proportion-ci", proportion_ci, PROPORTION_CIS)
            cards = {}
            for key, card in (load_model_cards(models) if models else {}).items():
                cards[key] = cards[card.name] = card  # by folder name and display name
            analyze_detection_command(
                store=ResultStore(db, create=False), dataset=dataset, profile=profile,
                out_dir=out_dir, policy=policy, bootstrap=bootstrap, seed=seed, alpha=alpha,
                control_scope=control_scope, proportion_ci=proportion_ci, cards=cards,
            )  # fmt: skip
            return
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
            common.out.print(escape(f"wrote {f}"), highlight=False)


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
        print_table(common.out, table)
        notes += [n for n in mark_notes(marks, params, str(metric)) if n not in notes]
    for note in notes:
        common.out.print(escape(note), highlight=False)
    inv = result.inversions
    inv = inv[inv["structure"] != "average"] if len(inv) else inv
    for r in inv.head(20).itertuples(index=False):
        common.out.print(
            escape(
                f"‡ {r.dataset} {r.structure} {r.metric}: {r.model} (rank {int(r.rank)}) is "
                f"significantly better than {r.better_than} (rank {int(r.rank_better_than)}), "
                f"Holm p = {r.p_holm:.3g}"
            ),
            highlight=False,
        )
    if len(inv) > 20:
        common.out.print(f"‡ … and {len(inv) - 20} more (all in inversions.csv).")
    common.out.print(
        f"{winner_legend(params).replace('`', '')} CIs: paired bootstrap, "
        f"{params['bootstrap']['resamples']} resamples, seed "
        f"{params['bootstrap']['seed']}; policy {params['policy']} (→worst: values set to "
        "the worst value, dropped: values left out); excl. = trained on this dataset (model "
        "card), not ranked.",
        highlight=False,
    )
    for w in result.warnings:
        common.out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)


@app.command("report")
def report_command(
    dataset: Annotated[list[str], typer.Option(help="Dataset(s) to report (repeatable).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the site and bundle.")],
    db: Annotated[str, typer.Option(help="SQLite file or SQLAlchemy URL.")] = "assay.db",
    metric: Annotated[
        list[str] | None, typer.Option(help="Metric(s) to report (default: dsc and nsd).")
    ] = None,
    profile: _ProfileFilter = None,
    policy: _Policy = D.policy,
    aggregation: _Aggregation = D.aggregation,
    bootstrap: _Bootstrap = D.n_bootstrap,
    seed: _Seed = D.seed,
    ci: _CI = D.ci_method,
    alpha: _Alpha = D.alpha,
    winner_rule: _WinnerRule = D.winner_rule,
    permutations: _Permutations = D.n_permutations,
    groups: _Groups = None,
    min_group_size: _MinGroupSize = D.min_group_size,
    correction: _Correction = D.correction,
    subgroup_family: _SubgroupFamily = D.subgroup_family,
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
    figure_formats: _FigureFormats = "svg",
) -> None:
    """Leaderboard Markdown, a self-contained HTML site, figures and a results bundle."""
    from assay.datasets import load_dataset_card
    from assay.stats import parse_group_spec

    with _fatal_errors():
        _check_analysis_choices(policy, aggregation, ci, correction, winner_rule)
        _choice("subgroup-family", subgroup_family, ("all", "model"))
        formats = _figure_formats(figure_formats)
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
            figure_formats=formats,
        )  # fmt: skip
        _print_report_files(files)


def _build_report(
    store: ResultStore,
    datasets: list[str],
    out_dir: Path,
    *,
    workers: int = 1,
    figure_formats: tuple[str, ...] = ("svg",),
    **kwargs: Any,
) -> Any:
    """Analyse, print the leaderboards, and write the report folder (with progress)."""
    from assay.report._build import build_report
    from assay.report._collect import collect_report_data
    from assay.report._helpers import helper_pool
    from assay.scoring import software_versions

    analysed: list[str] = []  # the metrics whose analysis has started

    def on_metric(metric: str) -> None:
        analysed.append(metric)
        progress.update(task, description=f"analysing {escape(metric)}")

    with helper_pool(workers) as helpers:  # the helper starts while the scores load
        with _progress() as progress:
            task = progress.add_task("analysing", total=None, unit="metrics")
            data, metadata = collect_report_data(
                store, datasets, software=software_versions(), on_metric=on_metric,
                helpers=helpers, **kwargs,
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
            files = build_report(
                data,
                out_dir,
                metadata=metadata,
                workers=workers,
                on_figure=on_figure,
                formats=figure_formats,
                helpers=helpers,
            )
            progress.update(figures, total=drawn[0], completed=drawn[0])
    return files


def _print_report_files(files: Any) -> None:
    papers = [f.upper() for f in getattr(files, "formats", ("pdf", "png")) if f != "svg"]
    figures = (
        f"figures ({', '.join(papers)}): {files.figures}"
        if papers
        else "figures: SVG in the site (PDF/PNG for papers: --figure-formats svg,pdf,png)"
    )
    common.out.print(
        escape(
            f"site: {files.index} ({len(files.pages)} pages, {files.n_figures} figures; open "
            f"it in a browser)\nleaderboard: {files.leaderboard}\n{figures}\n"
            f"bundle: {files.bundle} (check it with: assay reanalyze {files.bundle})"
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
    from assay.report._detection import BUNDLE_MANIFEST

    if (bundle / BUNDLE_MANIFEST).is_file():  # a detection bundle
        _reanalyze_detection(bundle, update)
        return
    with _fatal_errors():
        result = reanalyze(bundle, update=update)
    for line in result.differences:
        common.out.print(escape(line), highlight=False)
    n = len(result.differences)
    if not n:
        common.out.print(
            f"[green]reproduced[/]: {result.n_checked} numbers of "
            f"{len(result.analyses)} metric(s) match {escape(str(bundle / 'results.json'))}."
        )
        return
    if update:
        common.out.print(
            f"[yellow]updated[/] results.json: {n} difference(s) above were rewritten."
        )
        return
    common.err.print(
        f"[red]drift[/]: {n} difference(s) between the published numbers and a recomputation "
        "from the per-case scores (see above). Nothing was rewritten; --update rewrites."
    )
    raise typer.Exit(1)


def _reanalyze_detection(bundle: Path, update: bool) -> None:
    from assay.report._detection import BUNDLE_TOLERANCE, reanalyze_detection

    with _fatal_errors():
        if update:
            raise InputError(
                "--update rewrites organ bundles only; re-run `assay analyze --task detection` "
                "to rebuild a detection bundle."
            )
        result = reanalyze_detection(bundle)
    for line in result.differences:
        common.out.print(escape(line), highlight=False)
    if not result.differences:
        common.out.print(
            f"[green]reproduced[/]: {result.n_checked} detection numbers match "
            f"{escape(str(bundle))} (within {BUNDLE_TOLERANCE:g})."
        )
        return
    common.err.print(
        f"[red]drift[/]: {len(result.differences)} difference(s) between the published "
        "detection tables and a recomputation from the bundle's per-case rows (see above)."
    )
    raise typer.Exit(1)
