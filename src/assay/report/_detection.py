"""The tumour-detection report: ``leaderboard.md`` and a self-contained site.

From a :class:`~assay.stats.DetectionAnalysis` and the per-case rows it was computed from:

* ``leaderboard.md`` — per tumour type, the AbdomenAtlas 2.0 columns (model, paper, code,
  P-Sen, T-Sen, Spe, AUC, DSC), each value with its 95 % CI and 🏆 for every co-winner of
  its column; T-Sen by lesion size; the protocol, controls, intervals and tests used;
* ``detection.html`` — the same tables (sortable), ROC curves with each model's operating
  point, FROC curves when lesion confidences exist, T-Sen by size, and a sortable per-lesion
  table (size, detected, Dice) — with ``assets/`` (the site's CSS and sorting script);
* ``figures/detection_<type>_{roc,froc,size}.svg`` (and PDF/PNG on request).

No network requests: every figure is an SVG file next to the page.
"""

from __future__ import annotations

import html
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.errors import InputError
from assay.metrics import SIZE_BIN_LABELS, SMALL_TUMOUR_MM, metric_info
from assay.store import ResultStore

#: Leaderboard columns, in the AbdomenAtlas 2.0 order.
COLUMNS = ("p_sen", "t_sen", "spe", "auc", "dsc")
_ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class DetectionReportFiles:
    """What :func:`write_detection_report` wrote."""

    leaderboard: Path
    page: Path
    figures: tuple[Path, ...]


@dataclass(frozen=True)
class DetectionReport:
    """What :func:`detection_report_for_store` computed and wrote."""

    analysis: Any
    protocol: str
    control_scope: str
    notes: tuple[str, ...]
    fallback: tuple[str, ...]
    files: tuple[Path, ...]
    leaderboard: Path
    page: Path


def detection_report_for_store(
    store: ResultStore,
    dataset: str,
    out_dir: Path,
    *,
    profile: str | None = None,
    run_ids: Sequence[str] | None = None,
    cards: Mapping[str, Any] | None = None,
    figure_formats: Sequence[str] = ("svg",),
    policy: str = "worst",
    bootstrap: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    control_scope: str | None = None,
    proportion_ci: str = "bootstrap",
) -> DetectionReport:
    """Load a dataset's detection runs, analyse them and write the tables and the report.

    Writes ``detection_summary.csv``, ``detection_by_size.csv``,
    ``detection_comparisons.csv``, ``detection_volume_sweep.csv``, ``detection_froc.csv``,
    ``lesions.csv``, ``leaderboard.md``, ``detection.html``, the figures, and the results
    bundle (``bundle/``: per-case inputs, published tables, ``detection.json``) that
    ``assay reanalyze`` re-verifies, into ``out_dir``. ``control_scope`` None: the
    protocol's (``rsuper``: patients without a tumour of the row's type).
    """
    from assay.stats import analyze_detection, cases_from_scores
    from assay.stats._detection import with_controls

    scores, lesions, protocol = load_detection(store, dataset, profile, run_ids)
    if control_scope is None:  # the protocol's own (rsuper: per-organ controls)
        from assay.metrics import get_profile

        detection = get_profile(protocol).detection
        control_scope = detection.control_scope if detection else "any_type"
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
        frame.to_csv(path, index=False, float_format="%.17g")
        files.append(path)
    files.append(
        write_detection_bundle(
            out_dir / "bundle", scores=scores, lesions=lesions, analysis=result,
            dataset=dataset, protocol=protocol,
            options={"policy": policy, "bootstrap": bootstrap, "seed": seed, "alpha": alpha,
                     "control_scope": control_scope, "proportion_ci": proportion_ci},
        )
    )  # fmt: skip
    runs = store.runs()
    with_csv = {
        str(r.model)
        for r in runs.itertuples()
        if r.run_id in set(scores["run_id"]) and r.manifest.get("inputs", {}).get("patient_scores")
    }
    fallback = [m for m in _score_fallback(reference, predicted) if m not in with_csv]
    if with_csv:
        notes = [*notes, f"Patient scores from a CSV file: {', '.join(sorted(with_csv))}."]
    method = _method_lines(protocol, control_scope, bootstrap, seed, alpha, proportion_ci,
                           notes, fallback)  # fmt: skip
    written = write_detection_report(
        result, with_controls(cases, control_scope), reference, out_dir, dataset=dataset,
        protocol=protocol, method_lines=method, cards=cards, figure_formats=figure_formats,
    )  # fmt: skip
    files += [written.leaderboard, written.page]
    return DetectionReport(
        analysis=result,
        protocol=protocol,
        control_scope=control_scope,
        notes=tuple(notes),
        fallback=tuple(fallback),
        files=tuple(files),
        leaderboard=written.leaderboard,
        page=written.page,
    )


def load_detection(
    store: ResultStore,
    dataset: str,
    profile: str | None,
    run_ids: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Score rows and lesion rows of the detection runs of ``dataset`` (one per model).

    Raises
    ------
    InputError
        No detection run, or a model with runs of several detection protocols and no
        ``profile`` to choose one.
    """
    scores = store.scores(dataset=dataset, profile=profile, run_ids=run_ids)
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


def write_detection_report(
    analysis: Any,
    cases: pd.DataFrame,
    lesions: pd.DataFrame,
    out_dir: Path,
    *,
    dataset: str,
    protocol: str,
    method_lines: Sequence[str],
    cards: Mapping[str, Any] | None = None,
    figure_formats: Sequence[str] = ("svg",),
) -> DetectionReportFiles:
    """Write the detection leaderboard, page and figures into ``out_dir``.

    Parameters
    ----------
    analysis
        The :class:`~assay.stats.DetectionAnalysis`.
    cases
        The per-(model, case, structure) rows it was computed from (with ``control``).
    lesions
        Reference-lesion rows (``diameter_mm``, ``detected``, ``dice`` ...) for the table.
    method_lines
        Sentences stating the protocol, controls, intervals, tests and policy.
    cards
        Model name -> model card (``paper``, ``code`` links), optional.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    cards = cards or {}
    summary, comparisons = analysis.summary, analysis.comparisons
    structures = sorted(summary["structure"].unique()) if len(summary) else []
    figures: list[Path] = []
    sections: list[str] = []
    md = [
        f"# Tumour detection — {dataset}",
        "",
        f"Protocol `{protocol}`. " + " ".join(method_lines),
        "",
        "🏆 = best value of the column, or not significantly worse than it.",
        "",
    ]
    for structure in structures:
        table = _leaderboard_rows(summary, comparisons, structure, cards)
        md += [f"## {structure}", "", *_markdown_table(table), ""]
        sizes = analysis.by_size[analysis.by_size["structure"] == structure]
        if len(sizes):
            md += ["T-Sen by longest axial diameter:", "", *_markdown_sizes(sizes), ""]
        stem = f"detection_{structure}"
        roc = _roc_figure(cases[cases["structure"] == structure], structure)
        made = [(f"{stem}_roc", roc)]
        froc = analysis.froc[analysis.froc["structure"] == structure] if len(analysis.froc) else []
        froc_fig = _froc_figure(analysis, structure) if len(froc) else None
        if froc_fig is not None:
            made.append((f"{stem}_froc", froc_fig))
        if len(sizes):
            made.append((f"{stem}_size", _size_figure(sizes, structure)))
        names = []
        for name, fig in made:
            for fmt in figure_formats:
                path = figures_dir / f"{name}.{fmt}"
                fig.savefig(path, format=fmt, metadata=_metadata(fmt))
                figures.append(path)
            names.append(name)
        sections.append(_html_section(structure, table, sizes, names, lesions, froc))
    leaderboard = out_dir / "leaderboard.md"
    leaderboard.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    page = out_dir / "detection.html"
    page.write_text(_page(dataset, protocol, method_lines, sections), encoding="utf-8")
    assets = out_dir / "assets"
    assets.mkdir(exist_ok=True)
    for name in ("site.css", "site.js"):
        shutil.copyfile(_ASSETS / name, assets / name)
    return DetectionReportFiles(leaderboard, page, tuple(figures))


def _metadata(fmt: str) -> dict[str, Any] | None:
    """Reproducible files: no creation dates in SVG/PDF."""
    if fmt == "svg":
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None}
    return None


def _leaderboard_rows(
    summary: pd.DataFrame, comparisons: pd.DataFrame, structure: str, cards: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One dict per model (sorted by P-Sen, then T-Sen, then name): cells and trophies."""
    part = summary[summary["structure"] == structure].set_index(["model", "metric"])
    comp = comparisons[comparisons["structure"] == structure]
    winners = {(r.metric, r.model) for r in comp.itertuples() if r.winner}
    rows = []
    for model in sorted(part.index.get_level_values(0).unique()):
        row: dict[str, Any] = {"model": model, "cells": {}}
        card = cards.get(model)
        row["paper"] = getattr(card, "paper", None) or ""
        row["code"] = getattr(card, "code", None) or ""
        for metric in COLUMNS:
            r = part.loc[(model, metric)]
            row["cells"][metric] = (
                float(r["value"]),
                float(r["ci_low"]),
                float(r["ci_high"]),
                (metric, model) in winners,
            )
        row["patients"] = int(part.loc[(model, "p_sen")]["n_patients"])
        rows.append(row)

    def key(r: dict[str, Any]) -> tuple[float, float, str]:
        p, t = r["cells"]["p_sen"][0], r["cells"]["t_sen"][0]
        return (
            -p if math.isfinite(p) else math.inf,
            -t if math.isfinite(t) else math.inf,
            r["model"],
        )

    return sorted(rows, key=key)


def ci_text(value: float, lo: float, hi: float) -> str:
    """A fraction in percent with its interval, ``86.4 [70.0, 100.0]`` (``—`` when undefined)."""
    if not math.isfinite(value):
        return "—"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _link(url: str, label: str) -> str:
    return f"[{label}]({url})" if url else "—"


def _markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    labels = [metric_info(m).column_label for m in COLUMNS]
    out = [
        "| model | paper | code | " + " | ".join(labels) + " | patients |",
        "|---|---|---|" + "---:|" * len(COLUMNS) + "---:|",
    ]
    for r in rows:
        cells = []
        for metric in COLUMNS:
            value, lo, hi, win = r["cells"][metric]
            cells.append(ci_text(value, lo, hi) + (" 🏆" if win else ""))
        model = r["model"].replace("|", "\\|")
        out.append(
            f"| {model} | {_link(r['paper'], 'paper')} | {_link(r['code'], 'code')} | "
            + " | ".join(cells)
            + f" | {r['patients']} |"
        )
    return out


def _strata() -> list[str]:
    return [*SIZE_BIN_LABELS, f"<{SMALL_TUMOUR_MM:g} mm"]


def _markdown_sizes(sizes: pd.DataFrame) -> list[str]:
    strata = _strata()
    out = ["| model | " + " | ".join(strata) + " |", "|---|" + "---:|" * len(strata)]
    for model, part in sizes.groupby("model", sort=True):
        by = part.set_index("size_bin")
        cells = []
        for s in strata:
            if s not in by.index or int(by.loc[s, "tumours"]) == 0:
                cells.append("—")
                continue
            r = by.loc[s]
            cells.append(
                ci_text(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]))
                + f" (n={int(r['tumours'])})"
            )
        out.append(f"| {str(model).replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    return out


# -- figures -----------------------------------------------------------------------------------


def _figure(width: float = 5.2, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.14, right=0.97, top=0.9, bottom=0.13)
    return fig


def roc_points(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (false-positive rate, true-positive rate) with one point per distinct score,
    from (0, 0) to (1, 1), as ``sklearn.metrics.roc_curve(drop_intermediate=False)``."""
    order = np.argsort(-score, kind="stable")
    s, y = score[order], positive[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def _roc_figure(cases: pd.DataFrame, structure: str) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, ls="--")
    for model, part in cases.groupby("model", sort=True):
        keep = part["reference_positive"].astype(bool) | part["control"].astype(bool)
        part = part[keep]
        pos = part["reference_positive"].to_numpy(dtype=bool)
        if not pos.any() or pos.all():
            continue
        fpr, tpr = roc_points(part["patient_score"].to_numpy(dtype=np.float64), pos)
        (line,) = ax.plot(fpr, tpr, lw=1.3, label=str(model))
        call = part["patient_call"].to_numpy(dtype=bool)
        ax.plot(
            [float(call[~pos].mean())],
            [float(call[pos].mean())],
            "o",
            color=line.get_color(),
            ms=5,
        )
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("patient-wise sensitivity")
    ax.set_title(f"{structure}: ROC (dots: operating points)", fontsize=10)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _froc_figure(analysis: Any, structure: str) -> Any | None:
    """Sensitivity against false positives per patient, per model with confidences."""
    from assay.stats._detection import FROC_FPPI

    froc = analysis.froc[analysis.froc["structure"] == structure]
    if froc.empty:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for row in froc.to_dict("records"):
        values = [float(row[f"sens@{f:g}"]) for f in FROC_FPPI]
        ax.plot(FROC_FPPI, values, marker="o", ms=3, lw=1.3, label=str(row["model"]))
    ax.set_xscale("log", base=2)
    ax.set_xticks(FROC_FPPI, [f"{f:g}" for f in FROC_FPPI])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false positives per patient")
    ax.set_ylabel("tumour-wise sensitivity")
    ax.set_title(f"{structure}: FROC", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _size_figure(sizes: pd.DataFrame, structure: str) -> Any:
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    strata = list(SIZE_BIN_LABELS)
    models = sorted(sizes["model"].unique())
    width = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        by = sizes[sizes["model"] == model].set_index("size_bin")
        values = [float(by.loc[s, "value"]) if s in by.index else math.nan for s in strata]
        ax.bar(np.arange(len(strata)) + k * width - 0.4 + width / 2, values, width, label=model)
    ax.set_xticks(range(len(strata)), strata)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("tumour-wise sensitivity")
    ax.set_title(f"{structure}: sensitivity by longest axial diameter", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig


# -- HTML ----------------------------------------------------------------------------------


def _th(label: str, numeric: bool) -> str:
    kind = "num" if numeric else "text"
    return (
        f'<th scope="col" aria-sort="none" data-type="{kind}"><button type="button">'
        f"{html.escape(label)}</button></th>"
    )


def _td(text: str, sort: float | None = None, cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if sort is not None and math.isfinite(sort):
        attrs += f' data-sort="{sort:.6g}"'
    return f"<td{attrs}>{text}</td>"


def _html_link(url: str, label: str) -> str:
    if not url:
        return "—"
    return f'<a href="{html.escape(url, quote=True)}">{label}</a>'


def _html_section(
    structure: str,
    rows: list[dict[str, Any]],
    sizes: pd.DataFrame,
    figures: list[str],
    lesions: pd.DataFrame,
    froc: Any,
) -> str:
    head = "".join(
        [_th("model", False), _th("paper", False), _th("code", False)]
        + [_th(metric_info(m).column_label, True) for m in COLUMNS]
        + [_th("patients", True)]
    )
    body = []
    for r in rows:
        cells = [_td(html.escape(r["model"])), _td(_html_link(r["paper"], "paper")),
                 _td(_html_link(r["code"], "code"))]  # fmt: skip
        for metric in COLUMNS:
            value, lo, hi, win = r["cells"][metric]
            text = html.escape(ci_text(value, lo, hi)) + (" 🏆" if win else "")
            cells.append(_td(text, 100 * value, "num"))
        cells.append(_td(str(r["patients"]), r["patients"], "num"))
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts = [
        f'<section id="{html.escape(structure)}"><h2>{html.escape(structure)}</h2>',
        '<div class="table-wrap"><table class="sortable"><thead><tr>' + head + "</tr></thead>"
        "<tbody>" + "".join(body) + "</tbody></table></div>",
    ]
    for name in figures:
        parts.append(
            f'<figure><img src="figures/{html.escape(name)}.svg" alt="{html.escape(name)}">'
            "</figure>"
        )
    mine = lesions[lesions["structure"] == structure] if len(lesions) else lesions
    if len(mine):
        head = "".join(
            _th(label, numeric)
            for label, numeric in (
                ("model", False), ("case", False), ("lesion", True), ("diameter (mm)", True),
                ("volume (ml)", True), ("detected", False), ("Dice", True),
            )
        )  # fmt: skip
        body = []
        for r in mine.itertuples():
            dice = float(r.dice)
            body.append(
                "<tr>"
                + _td(html.escape(str(r.model)))
                + _td(html.escape(str(r.case_id)))
                + _td(str(int(r.lesion)), float(r.lesion), "num")
                + _td(f"{float(r.diameter_mm):.1f}", float(r.diameter_mm), "num")
                + _td(f"{float(r.volume_ml):.3f}", float(r.volume_ml), "num")
                + _td(html.escape(str(r.status)))
                + _td("—" if math.isnan(dice) else f"{dice:.3f}", dice, "num")
                + "</tr>"
            )
        parts.append(
            f"<h3>Reference lesions ({len(mine)})</h3>"
            '<div class="table-wrap"><table class="sortable lesions"><thead><tr>'
            + head
            + "</tr></thead><tbody>"
            + "".join(body)
            + "</tbody></table></div>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _page(dataset: str, protocol: str, method_lines: Sequence[str], sections: list[str]) -> str:
    title = f"Tumour detection — {dataset}"
    methods = " ".join(html.escape(line) for line in method_lines)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="data:,">\n<link rel="stylesheet" href="assets/site.css">\n'
        '<script src="assets/site.js" defer></script>\n</head>\n<body>\n<main>\n'
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>Protocol <code>{html.escape(protocol)}</code>. {methods} 🏆 = best value of the "
        "column, or not significantly worse than it.</p>\n"
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )


# -- the detection results bundle and its re-verification ----------------------------------

#: The bundle's manifest file; a folder holding it is a detection bundle.
BUNDLE_MANIFEST = "detection.json"
_BUNDLE_FORMAT = 1
#: The published tables a reanalysis recomputes, and the columns that identify a row.
_TABLES: dict[str, tuple[str, ...]] = {
    "detection_summary": ("structure", "model", "metric"),
    "detection_by_size": ("structure", "model", "size_bin"),
    "detection_comparisons": ("structure", "metric", "model"),
    "detection_volume_sweep": ("structure", "model", "threshold_mm3"),
    "detection_froc": ("structure", "model"),
}
#: Tolerance of a reanalysis: sums in another order may differ in the last bits.
BUNDLE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class DetectionReanalysis:
    """What :func:`reanalyze_detection` found: the differences, and how much it checked."""

    differences: tuple[str, ...]
    n_checked: int


def write_detection_bundle(
    folder: Path,
    *,
    scores: pd.DataFrame,
    lesions: pd.DataFrame,
    analysis: Any,
    dataset: str,
    protocol: str,
    options: Mapping[str, Any],
) -> Path:
    """Write the per-case inputs, the published tables and a manifest into ``folder``.

    Inputs are the detection runs' long score rows and lesion rows (CSV, every float
    written with 17 significant digits, so they read back bit for bit); the manifest holds
    the analysis options and the inputs' SHA-256 (a changed input is an error; a changed
    published table is drift, found by the reanalysis).
    """
    import hashlib
    import json

    folder.mkdir(parents=True, exist_ok=True)
    frames = {"scores": scores, "lesions": lesions}
    frames.update({name: getattr(analysis, _attr(name)) for name in _TABLES})
    digests = {}
    for name, frame in frames.items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False, float_format="%.17g")
        if name in ("scores", "lesions"):  # inputs; an edited published table is drift
            digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {
        "format": _BUNDLE_FORMAT,
        "dataset": dataset,
        "protocol": protocol,
        "options": dict(options),
        "files": digests,
    }
    path = folder / BUNDLE_MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _attr(table: str) -> str:
    return {
        "detection_summary": "summary",
        "detection_by_size": "by_size",
        "detection_comparisons": "comparisons",
        "detection_volume_sweep": "sweep",
        "detection_froc": "froc",
    }[table]


def reanalyze_detection(folder: Path) -> DetectionReanalysis:
    """Recompute every published table of a detection bundle from its per-case rows.

    Raises
    ------
    InputError
        A folder without a readable manifest, or a file whose SHA-256 differs from the
        manifest's (a changed input is reported, never silently used).
    """
    import hashlib
    import json

    from assay.stats import analyze_detection, cases_from_scores

    manifest_path = folder / BUNDLE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        options = dict(manifest["options"])
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{manifest_path} is not a readable detection bundle manifest ({exc}); pass the "
            "bundle folder `assay analyze --task detection` wrote."
        ) from None
    for name, digest in files.items():
        path = folder / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise InputError(
                f"Bundle file {path} is missing or changed since the bundle was written "
                "(SHA-256 differs from detection.json); restore it."
            )
    scores = pd.read_csv(folder / "scores.csv", keep_default_na=False, na_values=[""])
    scores["value"] = scores["value"].astype("float64")
    scores["message"] = scores["message"].astype(str)
    lesions = pd.read_csv(folder / "lesions.csv", keep_default_na=False, na_values=[""])
    for column in ("model", "case_id", "structure", "status", "kind", "matched"):
        if column in lesions:
            lesions[column] = lesions[column].astype(str)
    for frame in (scores, lesions):
        for column in ("model", "case_id", "structure"):
            frame[column] = frame[column].astype(str)
    cases, _ = cases_from_scores(scores, policy=str(options["policy"]))
    kept = cases[["model", "case_id", "structure"]]
    lesions = lesions.assign(matched=lesions["matched"].replace("nan", ""))
    result = analyze_detection(
        cases,
        _lesion_frame(lesions, "reference", kept),
        control_scope=str(options["control_scope"]),
        n_resamples=int(options["bootstrap"]),
        seed=int(options["seed"]),
        alpha=float(options["alpha"]),
        proportion_ci=str(options["proportion_ci"]),
        predicted_lesions=_lesion_frame(lesions, "predicted", kept),
    )
    differences: list[str] = []
    checked = 0
    for name, keys in _TABLES.items():
        published = pd.read_csv(folder / f"{name}.csv")
        fresh = getattr(result, _attr(name))
        diff, n = _compare_tables(name, published, fresh, keys)
        differences += diff
        checked += n
    return DetectionReanalysis(tuple(differences), checked)


def _compare_tables(
    name: str, published: pd.DataFrame, fresh: pd.DataFrame, keys: tuple[str, ...]
) -> tuple[list[str], int]:
    """Differences (one line each) between a published table and its recomputation."""
    if published.empty and fresh.empty:
        return [], 0
    fresh = pd.read_csv(_roundtrip(fresh))  # the published table's types, exactly
    if set(published.columns) != set(fresh.columns) or len(published) != len(fresh):
        return [f"{name}: {len(published)} published rows, {len(fresh)} recomputed"], 1
    a = published.set_index(list(keys)).sort_index()
    b = fresh.set_index(list(keys)).sort_index()[a.columns]
    if not a.index.equals(b.index):
        return [f"{name}: the recomputed rows are not the published ones"], 1
    out, n = [], 0
    for column in a.columns:
        x, y = a[column], b[column]
        n += len(x)
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64)
            same = (
                (np.isnan(xv) & np.isnan(yv)) | (np.abs(xv - yv) <= BUNDLE_TOLERANCE) | (xv == yv)
            )
        else:
            same = (x.astype(str) == y.astype(str)).to_numpy()
        for k in np.flatnonzero(~same)[:5]:
            out.append(
                f"{name} {a.index[k]} {column}: published {x.iloc[k]!r}, recomputed {y.iloc[k]!r}"
            )
    return out, n


def _roundtrip(frame: pd.DataFrame) -> Any:
    import io

    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.17g")
    buffer.seek(0)
    return buffer
