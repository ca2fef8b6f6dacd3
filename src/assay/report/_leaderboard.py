"""``leaderboard.md``: Touchstone-style Markdown leaderboards with CIs and co-winners.

Per dataset and metric: the overall table (the ``average`` structure), then per structure
the top five (every co-winner is shown even below rank five), each row with its rank (🏆 for
every co-winner), model, organisation, mean with its 95 % CI, and paper and code links.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from assay.report._data import ReportData
from assay.stats import AVERAGE

#: Metrics reported in percent, one decimal (Touchstone's convention); others in their unit.
PERCENT_METRICS = ("dsc", "nsd")

TOP = 5


def metric_label(metric: str) -> str:
    """Column label of a metric, e.g. ``DSC (%)``, ``HD95 (mm)``."""
    unit = "%" if _is_percent(metric) else "mm"
    return f"{metric.upper()} ({unit})"


def format_value(value: float, metric: str) -> str:
    """``0.9123`` -> ``91.2`` for Dice/NSD (percent, one decimal), ``12.345`` -> ``12.35`` else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}" if _is_percent(metric) else f"{value:.2f}"


def leaderboard_markdown(data: ReportData) -> str:
    """Render the leaderboards of every dataset and metric in ``data`` as Markdown.

    Rows are ordered by rank (aggregate-then-rank, ties share the minimum rank); 🏆 marks
    the best mean and every model not significantly worse (one-sided Wilcoxon, Holm); a model
    trained on the dataset (model card) is listed as ``excl.`` and not ranked.
    """
    lines = [f"# {data.title}", ""]
    lines += _preamble(data)
    for dataset in data.dataset_names:
        lines += [f"## {dataset}", ""]
        card = data.datasets.get(dataset)
        if card is not None and (card.licence or card.citation):
            facts = [f"licence: {card.licence}" if card.licence else "",
                     f"cite: {card.citation}" if card.citation else ""]  # fmt: skip
            lines += ["; ".join(f for f in facts if f).rstrip(".") + ".", ""]
        for metric, analysis in data.analyses.items():
            agg = analysis.aggregates[analysis.aggregates["dataset"] == dataset]
            if agg.empty:
                continue
            lines += [f"### {metric.upper()}", ""]
            missing = _missing(data, dataset, metric)
            lines += _table(data, agg[agg["structure"] == AVERAGE], metric, missing, top=None)
            lines += _missing_note(missing)
            structures = sorted(set(agg["structure"]) - {AVERAGE})
            for structure in structures:
                lines += [f"<details>\n<summary>{structure}</summary>", ""]
                part = agg[agg["structure"] == structure]
                lines += _table(data, part, metric, missing, top=TOP)
                lines += ["</details>", ""]
    for metric, analysis in data.analyses.items():
        if not analysis.consensus.empty:
            lines += _consensus(analysis.consensus, metric)
    warns = sorted({w for a in data.analyses.values() for w in a.warnings})
    if warns:
        lines += ["## Warnings", "", *(f"- {w}" for w in warns), ""]
    return "\n".join(lines).rstrip() + "\n"


def _is_percent(metric: str) -> bool:
    return metric in PERCENT_METRICS or metric.startswith("nsd")


def _is_true(value: object) -> bool:
    """A flag that may be True/False/NaN (NaN for rows that were not tested)."""
    return False if value is None or pd.isna(value) else bool(value)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _link(url: str | None, label: str) -> str:
    return f"[{label}]({url})" if url else "–"


def _missing(data: ReportData, dataset: str, metric: str) -> dict[str, tuple[int, int]]:
    """Model -> (cases without a usable prediction, cases) on (dataset, metric)."""
    m = data.missing_cases()
    m = m[(m["dataset"] == dataset) & (m["metric"] == metric) & (m["n_missing"] > 0)]
    return {str(r.model): (int(r.n_missing), int(r.n_cases)) for r in m.itertuples()}


def _missing_note(missing: dict[str, tuple[int, int]]) -> list[str]:
    if not missing:
        return []
    parts = [f"{_cell(m)}: {k} of {n} cases" for m, (k, n) in sorted(missing.items())]
    return [f"⚠ no usable prediction (missing or failed) for {'; '.join(parts)}.", ""]


def _table(
    data: ReportData,
    part: pd.DataFrame,
    metric: str,
    missing: dict[str, tuple[int, int]],
    *,
    top: int | None,
) -> list[str]:
    part = part.sort_values(["rank", "model"], na_position="last")
    winner = part["winner"].map(_is_true).to_numpy(dtype=bool)
    ranks = part["rank"].to_numpy(dtype=float)
    # a co-winner ranked below a model that is not one: the test and the means disagree
    below = winner & (ranks > np.min(np.where(winner, np.inf, ranks), initial=np.inf))
    position = np.arange(len(part))
    if top is not None:
        keep = (ranks <= top) | winner
        part, winner, below, position = part[keep], winner[keep], below[keep], position[keep]
    head = f"{metric_label(metric)} mean ± SD [95 % CI]"
    lines = [
        f"| rank | model | organisation | {head} | paper | code |",
        "|:-----|:------|:-------------|:------------------:|:-----:|:----:|",
    ]
    previous = -1
    for row, won, late, at in zip(part.itertuples(), winner, below, position, strict=True):
        card = data.cards.get(str(row.model))
        if at > previous + 1:  # rows left out above this one
            lines.append("| … | | | | | |")
        previous = at
        if _is_true(row.contaminated) or pd.isna(row.rank):
            rank = "excl."
        else:
            rank = ("🏆 " if won else "") + str(int(row.rank)) + ("†" if late else "")
        ci = (
            ""
            if pd.isna(row.ci_low)
            else f" [{format_value(row.ci_low, metric)}, {format_value(row.ci_high, metric)}]"
        )
        name = _cell(row.model) + (" ⚠" if str(row.model) in missing else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    rank,
                    name,
                    _cell(card.organisation if card and card.organisation else "–"),
                    f"{format_value(row.mean, metric)} ± {format_value(row.sd, metric)}{ci}",
                    _link(card.paper if card else None, "paper"),
                    _link(card.code if card else None, "code"),
                ]
            )
            + " |"
        )
    lines.append("")
    if below.any():
        lines += [
            "† co-winner ranked below a model that is not: not significantly worse than the "
            "best by the one-sided Wilcoxon test (paired per-case differences), although its "
            "mean is lower.",
            "",
        ]
    return lines


def _consensus(consensus: pd.DataFrame, metric: str) -> list[str]:
    part = consensus[consensus["structure"] == AVERAGE].sort_values(["consensus_rank", "model"])
    lines = [
        f"## Consensus across datasets: {metric.upper()}, average",
        "",
        "| rank | model | mean rank | datasets |",
        "|:-----|:------|----------:|---------:|",
    ]
    for row in part.itertuples():
        lines.append(
            f"| {int(row.consensus_rank)} | {_cell(row.model)} | {row.mean_rank:.2f} "
            f"| {int(row.n_datasets)} |"
        )
    return [*lines, ""]


def _preamble(data: ReportData) -> list[str]:
    first = next(iter(data.analyses.values()), None)
    if first is None:
        return ["No analysis.", ""]
    boot = first.params["bootstrap"]
    tests = first.params["tests"]
    average = {
        "default": "the mean over cases of each case's mean over the structures it has",
        "touchstone": "the mean of the structure means (± the mean of the structure SDs), "
        "as Touchstone publishes it",
    }[first.params["aggregation"]]
    return [
        "🏆 marks the best mean and every model not significantly worse than it "
        f"(one-sided Wilcoxon signed-rank, Holm-adjusted per structure, α = {tests['alpha']}). "
        f"95 % CIs: paired case bootstrap ({boot['method']}, {boot['resamples']} resamples, "
        f"seed {boot['seed']}). Missing or failed predictions: policy "
        f"`{first.params['policy']}`; ⚠ marks models with missing cases. The overall table is "
        f"the average over structures: {average}. Lower is better for distances (mm); higher "
        "for DSC and NSD (%). `excl.`: trained on this dataset (model card), not ranked. "
        "Every number can be recomputed from `bundle/` with `assay reanalyze`.",
        "",
    ]
