"""``leaderboard.md``: Touchstone-style Markdown leaderboards with CIs and co-winners.

Per dataset and metric: the overall table (the ``average`` structure), then per structure
the top five (every co-winner is shown even below rank five), each row with its rank (🏆 for
every co-winner), model, organisation, mean with its 95 % CI, and paper and code links.
"""

from __future__ import annotations

import pandas as pd

from assay.metrics import metric_label
from assay.report._data import ReportData
from assay.report._format import DOUBLE_DAGGER as DOUBLE
from assay.report._format import (
    NumberFormat,
    better_than_text,
    mark_notes,
    number_format,
    row_marks,
    winner_legend,
)
from assay.report._tables import subgroup_gaps_markdown
from assay.stats import AVERAGE

__all__ = ["TOP", "leaderboard_markdown", "metric_label"]

TOP = 5


def leaderboard_markdown(data: ReportData) -> str:
    """Render the leaderboards of every dataset and metric in ``data`` as Markdown.

    Rows are ordered by rank (aggregate-then-rank, ties share the minimum rank); 🏆 marks
    the co-winners of the analysis' winner rule (stated under every table), † a co-winner
    ranked below a non-winner, ‡ a model significantly better than one ranked above it; a
    model trained on the dataset (model card) is listed as ``excl.`` and not ranked. Values
    use one :class:`~assay.report._format.NumberFormat` per metric, as the site does.
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
            fmt = number_format(analysis.aggregates, metric)
            params = analysis.params
            inv = analysis.inversions
            missing = _missing(data, dataset, metric)
            lines += _table(
                data, agg[agg["structure"] == AVERAGE], fmt, params, inv,
                data.missing_counts(metric, dataset, AVERAGE), top=None,
            )  # fmt: skip
            lines += _missing_note(missing)
            lines += [winner_legend(params), ""]
            lines += subgroup_gaps_markdown(data, metric, dataset)
            structures = sorted(set(agg["structure"]) - {AVERAGE})
            for structure in structures:
                part = agg[agg["structure"] == structure]
                lines += [f"<details>\n<summary>{_summary(structure, part)}</summary>", ""]
                counts = data.missing_counts(metric, dataset, structure)
                lines += _table(data, part, fmt, params, inv, counts, top=TOP)
                lines += ["</details>", ""]
    for metric, analysis in data.analyses.items():
        if not analysis.consensus.empty:
            lines += _consensus(analysis.consensus, metric)
    warns = sorted({w for a in data.analyses.values() for w in a.warnings})
    if warns:
        lines += ["## Warnings", "", *(f"- {w}" for w in warns), ""]
    return "\n".join(lines).rstrip() + "\n"


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


def _summary(structure: str, part: pd.DataFrame) -> str:
    """``aorta - NexToU & UCTransNet 🏆`` (Touchstone's summary lines): the co-winners."""
    won = part[part["winner"].map(_is_true) & ~part["contaminated"].map(_is_true)]
    won = won.sort_values(["rank", "model"])
    names = [str(m) for m in won["model"]]
    if not names:
        return structure
    shown = " & ".join(names[:4]) + (f" & {len(names) - 4} more" if len(names) > 4 else "")
    return f"{structure} - {_cell(shown)} 🏆"


def _table(
    data: ReportData,
    part: pd.DataFrame,
    fmt: NumberFormat,
    params: dict[str, object],
    inversions: pd.DataFrame,
    missing: dict[str, int],
    *,
    top: int | None,
) -> list[str]:
    part = part.sort_values(["rank", "model"], na_position="last")
    marks = row_marks(part, inversions)
    ranks = part["rank"].to_numpy(dtype=float)
    winner = part["model"].map(lambda m: marks[str(m)].winner).to_numpy(dtype=bool)
    position = list(range(len(part)))
    if top is not None:
        keep = (ranks <= top) | winner
        keep |= part["model"].map(lambda m: bool(marks[str(m)].better_than)).to_numpy(bool)
        part = part[keep]
        position = [p for p, k in zip(position, keep, strict=True) if k]
    head = f"{metric_label(fmt.metric)} mean ± SD [95 % CI]"
    lines = [
        f"| rank | model | organisation | {head} | paper | code |",
        "|:-----|:------|:-------------|:------------------:|:-----:|:----:|",
    ]
    previous = -1
    for row, at in zip(part.itertuples(), position, strict=True):
        model = str(row.model)
        mark = marks[model]
        card = data.cards.get(model)
        if at > previous + 1:  # rows left out above this one
            lines.append("| … | | | | | |")
        previous = at
        if _is_true(row.contaminated) or pd.isna(row.rank):
            rank = "excl."
        else:
            rank = ("🏆 " if mark.winner else "") + str(int(row.rank)) + mark.suffix
        ci = "" if pd.isna(row.ci_low) else f" [{fmt(row.ci_low)}, {fmt(row.ci_high)}]"
        name = _cell(model) + (f" ⚠ {missing[model]}" if missing.get(model) else "")
        if mark.better_than:
            name += f" ({DOUBLE}{_cell(better_than_text(mark))})"
        lines.append(
            "| "
            + " | ".join(
                [
                    rank,
                    name,
                    _cell(card.organisation if card and card.organisation else "–"),
                    f"{fmt(row.mean, '–')} ± {fmt(row.sd, '–')}{ci}",
                    _link(card.paper if card else None, "paper"),
                    _link(card.code if card else None, "code"),
                ]
            )
            + " |"
        )
    lines.append("")
    notes = mark_notes({str(m): marks[str(m)] for m in part["model"]}, params, fmt.metric)
    lines += [*notes, *([""] if notes else [])]
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
    average = {
        "default": "the mean over cases of each case's mean over the structures it has",
        "touchstone": "the mean of the structure means (± the mean of the structure SDs), "
        "as Touchstone publishes it",
    }[first.params["aggregation"]]
    return [
        f"{winner_legend(first.params)} † marks a co-winner ranked below a model that is not "
        "one, ‡ a model significantly better than a model ranked above it. "
        f"95 % CIs: paired case bootstrap ({boot['method']}, {boot['resamples']} resamples, "
        f"seed {boot['seed']}). Missing or failed predictions: policy "
        f"`{first.params['policy']}`; ⚠ k marks a model with k cases without a usable "
        "prediction (set to the worst value under `worst`, left out under `exclude`/`paper`, "
        "so means differ from a summary over the scored cases only). The overall table is "
        f"the average over structures: {average}. Lower is better for distances (mm); higher "
        "for DSC and NSD (%). `excl.`: trained on this dataset (model card), not ranked. "
        "Every number can be recomputed from `bundle/` with `assay reanalyze`.",
        "",
    ]
