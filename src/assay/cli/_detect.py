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
from assay.store import ResultStore

#: Leaderboard columns, in the AbdomenAtlas 2.0 order.
LEADERBOARD_METRICS = ("p_sen", "t_sen", "spe", "auc", "dsc")


def load_detection(
    store: ResultStore, dataset: str, profile: str | None
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Score rows and lesion rows of the detection runs of ``dataset`` (one per model).

    Raises
    ------
    InputError
        No detection run, or a model with runs of several detection protocols and no
        ``profile`` to choose one.
    """
    scores = store.scores(dataset=dataset, profile=profile)
    scores = scores[scores["profile"].str.startswith("detection:")]
    if scores.empty:
        raise InputError(
            f"No detection scores for dataset {dataset!r} in {store.location}"
            + (f" with profile {profile!r}" if profile else "")
            + "; score tumour predictions with `assay score --task detection` first."
        )
    runs = scores.groupby("model")["profile"].nunique()
    if (runs > 1).any():
        several = ", ".join(runs[runs > 1].index)
        raise InputError(
            f"{several}: detection runs under several protocols; pass --profile "
            "detection:PROTOCOL to choose one."
        )
    protocols = sorted(scores["profile"].unique())
    if len(protocols) > 1:
        raise InputError(
            f"Models of {dataset!r} were scored under different detection protocols "
            f"({', '.join(protocols)}); pass --profile detection:PROTOCOL."
        )
    lesions = store.lesions(run_ids=sorted(scores["run_id"].unique()))
    return scores, lesions, protocols[0]


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
    control_scope: str,
    proportion_ci: str,
    cards: Mapping[str, Any] | None = None,
    figure_formats: Sequence[str] = ("svg",),
) -> None:
    """``assay analyze --task detection``: compute, write and print the detection analysis,
    and its report (``leaderboard.md``, ``detection.html``, figures) in ``out_dir``."""
    from assay.report._detection import write_detection_report
    from assay.stats import analyze_detection, cases_from_scores
    from assay.stats._detection import with_controls

    if len(dataset) != 1:
        raise InputError(
            "A detection analysis takes one --dataset (consensus rankings across test sets "
            "are for segmentation)."
        )
    name = dataset[0]
    scores, lesions, protocol = load_detection(store, name, profile)
    cases, notes = cases_from_scores(scores, policy=policy)
    kept = cases[["model", "case_id", "structure"]]
    reference = _lesion_frame(lesions, "reference", kept)
    predicted = _lesion_frame(lesions, "predicted", kept)
    result = analyze_detection(
        cases,
        reference,
        control_scope=control_scope,
        n_resamples=bootstrap,
        seed=seed,
        alpha=alpha,
        proportion_ci=proportion_ci,
        predicted_lesions=predicted,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for stem, frame in (
        ("detection_summary", result.summary),
        ("detection_by_size", result.by_size),
        ("detection_comparisons", result.comparisons),
        ("detection_volume_sweep", result.sweep),
        ("detection_froc", result.froc),
        ("lesions", lesions),
    ):
        path = out_dir / f"{stem}.csv"
        frame.to_csv(path, index=False)
        files.append(path)
    fallback = _score_fallback(reference, predicted)
    method = _method_lines(protocol, control_scope, bootstrap, seed, alpha, proportion_ci,
                           notes, fallback)  # fmt: skip
    report = write_detection_report(
        result, with_controls(cases, control_scope), reference, out_dir, dataset=name,
        protocol=protocol, method_lines=method, cards=cards, figure_formats=figure_formats,
    )  # fmt: skip
    files += [report.leaderboard, report.page]
    print_detection_leaderboard(result.summary, result.comparisons, protocol, name)
    for note in notes:
        common.out.print(f"[yellow]note:[/] {escape(note)}")
    if fallback:
        common.out.print(
            "[yellow]note:[/] AUC ranks patients by their retained predicted volume (no "
            f"probability maps for {', '.join(fallback)}): a fallback, not a probability."
        )
    common.out.print(
        f"controls: {control_scope.replace('_', ' ')}; intervals: "
        + (
            f"paired patient bootstrap, {bootstrap} resamples, seed {seed}"
            if proportion_ci == "bootstrap"
            else f"{proportion_ci.replace('_', '-')} for P-Sen/Spe/T-Sen, bootstrap otherwise"
        )
        + f"; 🏆 = best or not significantly worse (one-sided, Holm, α = {alpha:g})",
        highlight=False,
    )
    for f in files:
        common.out.print(escape(f"wrote {f}"), highlight=False)


def _method_lines(
    protocol: str,
    control_scope: str,
    bootstrap: int,
    seed: int,
    alpha: float,
    proportion_ci: str,
    notes: Sequence[str],
    fallback: Sequence[str],
) -> list[str]:
    """What the report says about how its numbers were made."""
    from assay.metrics import get_profile

    detection = get_profile(protocol).detection
    lines = [f"It is {detection.description}."] if detection else []
    lines.append(
        "Controls: patients with no tumour of any type."
        if control_scope == "any_type"
        else "Controls: patients without a tumour of the row's type."
    )
    lines.append(
        f"95 % intervals: paired patient bootstrap ({bootstrap} resamples, seed {seed})"
        + (
            f"; {proportion_ci.replace('_', '-')} intervals for P-Sen, Spe and T-Sen."
            if proportion_ci != "bootstrap"
            else "."
        )
    )
    lines.append(
        "Co-winners: one-sided tests against the best of each column, Holm-adjusted within "
        f"the column, α = {alpha:g}: exact McNemar (P-Sen on positives, Spe on controls), "
        "DeLong (AUC), paired bootstrap (T-Sen, DSC)."
    )
    lines += list(notes)
    if fallback:
        lines.append(
            f"AUC of {', '.join(fallback)} ranks patients by retained predicted volume (no "
            "probability maps): a fallback."
        )
    return lines


def _lesion_frame(lesions: pd.DataFrame, kind: str, kept: pd.DataFrame) -> pd.DataFrame:
    """Lesion rows of one kind, restricted to the analysed (model, case, structure) rows."""
    part = lesions[lesions["kind"] == kind].merge(kept, on=["model", "case_id", "structure"])
    if kind == "reference":
        part = part.assign(
            detected=part["status"] == "detected", counted=part["status"] != "uncounted"
        )
    return part


def _score_fallback(reference: pd.DataFrame, predicted: pd.DataFrame) -> list[str]:
    """Models whose lesions carry no confidence: their patient score is a volume."""
    frames = [f[["model", "confidence"]] for f in (reference, predicted) if len(f)]
    if not frames:
        return []
    both = pd.concat(frames)
    has = both.groupby("model")["confidence"].apply(lambda c: c.notna().any())
    return sorted(m for m, ok in has.items() if not ok)


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
                cells.append(_cell(row["value"], row["ci_low"], row["ci_high"]) + mark)
            cells.append(str(int(wide.loc[(model, "p_sen")]["n_patients"])))
            table.add_row(*cells)
        print_table(common.out, table)


def _sort_key(wide: pd.DataFrame, model: str) -> tuple[float, str]:
    value = float(wide.loc[(model, "p_sen")]["value"])
    return (-value if math.isfinite(value) else math.inf, model)


def _cell(value: float, lo: float, hi: float) -> str:
    if not math.isfinite(value):
        return "—"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


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
