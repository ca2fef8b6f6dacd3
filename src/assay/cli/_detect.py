"""Tumour detection in the CLI: ``assay analyze --task detection`` and the score summary.

The commands parse their options and delegate here; this module loads a detection run's
scores and lesions from the store, runs :func:`assay.stats.analyze_detection`, writes its
tables and prints the AbdomenAtlas 2.0-style leaderboard (P-Sen, T-Sen, Spe, AUC, DSC with
95 % CIs and 🏆 for every co-winner).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.markup import escape
from rich.table import Table

from assay._console import print_table
from assay.cli import _common as common
from assay.errors import InputError
from assay.metrics import metric_info
from assay.report._detection import ci_text
from assay.store import ResultStore

#: Leaderboard columns, in the AbdomenAtlas 2.0 order.
LEADERBOARD_METRICS = ("p_sen", "t_sen", "spe", "auc", "dsc")


def analyze_detection_command(
    *,
    store: ResultStore,
    dataset: list[str],
    profile: str | None,
    out_dir: Path,
    policy: str,
    bootstrap: int,
    seed: int,
    alpha: float,
    control_scope: str | None,
    proportion_ci: str,
    cards: Mapping[str, Any] | None = None,
    figure_formats: Sequence[str] = ("svg",),
) -> None:
    """``assay analyze --task detection``: compute, write and print the detection analysis,
    and its report (``leaderboard.md``, ``detection.html``, figures) in ``out_dir``."""
    from assay.report._detection import detection_report_for_store

    if len(dataset) != 1:
        raise InputError(
            "A detection analysis takes one --dataset (consensus rankings across test sets "
            "are for segmentation)."
        )
    name = dataset[0]
    report = detection_report_for_store(
        store, name, out_dir, profile=profile, cards=cards, figure_formats=figure_formats,
        policy=policy, bootstrap=bootstrap, seed=seed, alpha=alpha,
        control_scope=control_scope, proportion_ci=proportion_ci,
    )  # fmt: skip
    result = report.analysis
    print_detection_leaderboard(result.summary, result.comparisons, report.protocol, name)
    print_detection_notes(report)
    common.out.print(
        f"controls: {report.control_scope.replace('_', ' ')}; intervals: "
        + (
            f"paired patient bootstrap, {bootstrap} resamples, seed {seed}"
            if proportion_ci == "bootstrap"
            else f"{proportion_ci.replace('_', '-')} for P-Sen/Spe/T-Sen, bootstrap otherwise"
        )
        + f"; 🏆 = best or not significantly worse (one-sided, Holm, α = {alpha:g})",
        highlight=False,
    )
    for f in report.files:
        common.out.print(escape(f"wrote {f}"), highlight=False)


def print_detection_notes(report: Any) -> None:
    """The policy notes and the volume-score fallback of a detection report."""
    for note in report.notes:
        common.out.print(f"[yellow]note:[/] {escape(note)}")
    if report.fallback:
        common.out.print(
            "[yellow]note:[/] AUC ranks patients by their retained predicted volume (no "
            f"probability maps for {', '.join(report.fallback)}): a fallback, not a probability."
        )


def print_detection_leaderboard(
    summary: pd.DataFrame, comparisons: pd.DataFrame, protocol: str, dataset: str
) -> None:
    """One table per tumour type: model, P-Sen, T-Sen, Spe, AUC, DSC (value [95 % CI], 🏆)."""
    for structure, part in summary.groupby("structure", sort=True):
        comp = comparisons[comparisons["structure"] == structure]
        winners = {(r.metric, r.model) for r in comp.itertuples() if r.winner}
        table = Table(title=f"{structure} — {dataset} ({protocol})", show_lines=False)
        table.add_column("model", no_wrap=True)
        for metric in LEADERBOARD_METRICS:
            table.add_column(metric_info(metric).column_label, justify="right")
        table.add_column("patients", justify="right")
        wide = part.set_index(["model", "metric"])
        models = sorted(part["model"].unique())
        ranked = sorted(models, key=lambda m: _sort_key(wide, m))
        for model in ranked:
            cells = [escape(model)]
            for metric in LEADERBOARD_METRICS:
                row: Any = wide.loc[(model, metric)]
                mark = " 🏆" if (metric, model) in winners else ""
                cells.append(ci_text(row["value"], row["ci_low"], row["ci_high"]) + mark)
            cells.append(str(int(wide.loc[(model, "p_sen")]["n_patients"])))
            table.add_row(*cells)
        print_table(common.out, table)


def _sort_key(wide: pd.DataFrame, model: str) -> tuple[float, str]:
    value = float(wide.loc[(model, "p_sen")]["value"])
    return (-value if math.isfinite(value) else math.inf, model)


def print_detection_scores(store: ResultStore, run_id: str) -> None:
    """The per-tumour-type summary ``assay score --task detection`` prints."""
    scores = store.scores(run_ids=[run_id])
    wide = scores.pivot_table(
        index=["case_id", "structure"], columns="metric", values="value", aggfunc="first"
    ).reset_index()
    table = Table(title="Detection summary (per tumour type)", show_lines=False)
    for col in ("structure", "patients", "with tumour", "tumours", "found", "missed", "FP"):
        table.add_column(col, justify="left" if col == "structure" else "right")
    for structure, part in wide.groupby("structure", sort=True):
        table.add_row(
            str(structure),
            str(len(part)),
            str(int((part["lesions_ref"] > 0).sum())),
            str(int(part["lesions_ref"].sum())),
            str(int(part["lesion_tp"].sum())),
            str(int(part["lesion_fn"].sum())),
            str(int(part["lesion_fp"].sum())),
        )
    print_table(common.out, table)
    common.out.print(
        "Counts over stored cases; `assay analyze --task detection` gives P-Sen, T-Sen, Spe, "
        "AUC and DSC with CIs.",
        style="dim",
    )
