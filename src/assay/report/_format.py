"""What every output of a report shares: one number format per metric, and the row marks.

The Markdown leaderboard, the HTML site and the terminal show a metric's values with the
same :class:`NumberFormat` (Dice and NSD in percent, distances in mm, with the fewest
decimals that tell every two ranked models with different values apart), and mark rows the
same way (:func:`row_marks`, :func:`mark_notes`):

* 🏆 — co-winner under the analysis' winner rule;
* † — a co-winner ranked below a model that is not one (only possible when the test and the
  ranked aggregate disagree, e.g. under the ``touchstone`` rule);
* ‡ — a model significantly better than a model ranked above it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from assay.metrics import metric_info
from assay.stats import higher_is_better_for, rule_description

DAGGER = "†"
DOUBLE_DAGGER = "‡"

_MIN_DIGITS = {True: 1, False: 2}  # percent: 1 decimal (Touchstone), mm: 2
_MAX_DIGITS = 4


def is_percent(metric: str) -> bool:
    """Whether the registry shows ``metric`` in percent (Dice and every NSD variant)."""
    return metric_info(metric).percent


def is_missing(value: Any) -> bool:
    """None, ``pd.NA`` and NaN are missing; any other value (a number, a text) is not."""
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class NumberFormat:
    """How one metric's values are written: percent or mm, ``digits`` decimals."""

    metric: str
    digits: int

    @property
    def scale(self) -> float:
        return 100.0 if is_percent(self.metric) else 1.0

    @property
    def unit(self) -> str:
        return metric_info(self.metric).display_unit

    def __call__(self, value: Any, missing: str = "—") -> str:
        """``0.91234`` -> ``91.2`` (percent, 1 decimal); NaN -> ``missing``."""
        if is_missing(value):
            return missing
        return f"{self.scale * float(value):.{self.digits}f}"


def _distinct(values: Iterable[float], scale: float, digits: int) -> bool:
    """Whether values that differ at :data:`_MAX_DIGITS` decimals still differ at ``digits``.

    Values equal to the last shown decimal at the finest format (e.g. two models 1e-9 apart)
    cannot be told apart by any format we print, so they do not force more digits.
    """
    seen: dict[str, str] = {}
    for v in values:
        text = f"{scale * v:.{digits}f}"
        finest = f"{scale * v:.{_MAX_DIGITS}f}"
        if seen.setdefault(text, finest) != finest:
            return False
    return True


def number_format(aggregates: pd.DataFrame, metric: str) -> NumberFormat:
    """The format of ``metric``: the fewest decimals (1–4 in percent, 2–4 in mm) with which
    the ranked means and medians of every (dataset, structure) family that differ are
    written differently, so two models never show the same number with different ranks
    (unless they are equal to 4 decimals, which no format here could show)."""
    percent = is_percent(metric)
    scale = 100.0 if percent else 1.0
    part = aggregates
    if "metric" in part.columns:
        part = part[part["metric"] == metric]
    families = []
    if not part.empty:
        for _, fam in part.groupby(["dataset", "structure"], sort=False):
            for column in ("mean", "median"):
                if column in fam.columns:
                    vals = pd.to_numeric(fam[column], errors="coerce").dropna()
                    families.append([float(v) for v in vals])
    for digits in range(_MIN_DIGITS[percent], _MAX_DIGITS + 1):
        if all(_distinct(vals, scale, digits) for vals in families):
            return NumberFormat(metric, digits)
    return NumberFormat(metric, _MAX_DIGITS)


@dataclass(frozen=True)
class RowMarks:
    """Marks of one leaderboard row (see the module docstring)."""

    winner: bool = False
    dagger: bool = False
    better_than: tuple[tuple[str, float], ...] = ()  # (higher-ranked model, Holm p)

    @property
    def suffix(self) -> str:
        """``†``/``‡`` to write after the rank."""
        return (DAGGER if self.dagger else "") + (DOUBLE_DAGGER if self.better_than else "")


def _true(value: Any) -> bool:
    return (not is_missing(value)) and bool(value)


def row_marks(family: pd.DataFrame, inversions: pd.DataFrame | None) -> dict[str, RowMarks]:
    """model -> :class:`RowMarks` for the aggregate rows of one (dataset, structure, metric).

    ``family`` needs ``model, rank, winner`` (and optionally ``contaminated``);
    ``inversions`` is :attr:`~assay.stats.Analysis.inversions` (any rows; those of other
    families are ignored when it has the family columns).
    """
    rows = family.to_dict("records")
    ranked = [r for r in rows if not _true(r.get("contaminated")) and not is_missing(r.get("rank"))]
    loser_ranks = [float(r["rank"]) for r in ranked if not _true(r.get("winner"))]
    best_loser = min(loser_ranks, default=math.inf)
    better: dict[str, list[tuple[str, float]]] = {}
    if inversions is not None and len(inversions) and len(rows):
        inv = inversions
        first = rows[0]
        for col in ("dataset", "structure", "metric"):
            if col in inv.columns and col in first:
                inv = inv[inv[col] == first[col]]
        for r in inv.itertuples(index=False):
            better.setdefault(str(r.model), []).append((str(r.better_than), float(r.p_holm)))
    out = {}
    for r in rows:
        model = str(r["model"])
        ranked_row = not _true(r.get("contaminated")) and not is_missing(r.get("rank"))
        win = _true(r.get("winner")) and ranked_row
        out[model] = RowMarks(
            winner=win,
            dagger=win and float(r["rank"]) > best_loser,
            better_than=tuple(better.get(model, ())),
        )
    return out


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def better_than_text(marks: RowMarks) -> str:
    """``significantly better than MedNeXt (Holm p = 0.003)`` for a ``‡`` row, else ``""``."""
    if not marks.better_than:
        return ""
    items = ", ".join(f"{m} (Holm {_p_text(p)})" for m, p in marks.better_than)
    return f"significantly better than {items}"


def winner_legend(params: Mapping[str, Any]) -> str:
    """The sentence saying which rule made the 🏆 (from :attr:`Analysis.params`)."""
    rule = str(params.get("winner_rule", "mean"))
    alpha = params.get("tests", {}).get("alpha", 0.05)
    return f"🏆 winner rule `{rule}`: {rule_description(rule)}, within each structure, α = {alpha}."


def mark_notes(marks: Mapping[str, RowMarks], params: Mapping[str, Any], metric: str) -> list[str]:
    """Footnotes for the marks present in ``marks`` (direction- and rule-aware)."""
    notes = []
    aggregate = str(params.get("ranked_by", "mean"))
    worse = "lower" if higher_is_better_for(metric) else "higher (worse)"
    if any(m.dagger for m in marks.values()):
        rule = str(params.get("winner_rule", "mean"))
        notes.append(
            f"{DAGGER} co-winner ranked below a model that is not one: under the `{rule}` rule "
            f"it is not significantly worse than the best, although its {aggregate} is "
            f"{worse} than that of a model that is not a co-winner."
        )
    inv = [(model, m) for model, m in marks.items() if m.better_than]
    if inv:
        parts = "; ".join(f"{model} is {better_than_text(m)}" for model, m in inv)
        notes.append(
            f"{DOUBLE_DAGGER} significantly better than a model ranked above it (paired test of "
            f"the rule, Holm): {parts}. The ranking by {aggregate} and the test disagree "
            "here (e.g. the models were scored on different cases)."
        )
    return notes
