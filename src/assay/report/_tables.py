"""Tables of the report site: cell formatting and one builder per table (no HTML here).

Every builder returns a :class:`Table` of :class:`Cell` objects that the templates render
(``templates/_macros.html``). Units are explicit: ``n`` and "missing cases" count cases,
"values set worst" counts structure × case values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from assay.report._data import ReportData
from assay.report._format import (
    NumberFormat,
    RowMarks,
    better_than_text,
    is_percent,
    mark_notes,
    number_format,
    row_marks,
    winner_legend,
)
from assay.report._format import is_missing as _isnan
from assay.report._render import ALL_MODELS, _slice, _structures, all_models, pairwise_alpha
from assay.stats import AVERAGE, rule_description
from assay.stats._policy import CHANGE_COLUMNS as POLICY_CHANGE_COLUMNS

#: Columns of the missing-value policy counts (``Analysis.changes``), in display order.
CHANGE_COLUMNS = (*POLICY_CHANGE_COLUMNS, "n_contaminated")


#: Ranking schemes as the robustness figure names them: (label, ``rankings`` column, tooltip).
SCHEMES = (
    ("aggregate-then-rank", "rank_by_mean", "rank of the mean over cases"),
    ("rank-then-aggregate", "rank_by_case_rank", "rank of the mean per-case rank"),
    ("test-then-rank", "rank_by_tests", "rank by the number of significant pairwise wins"),
)

SET_WORST_TIP = (
    "structure × case values set to the metric's worst value by the missing-value policy "
    "(one case can contribute one value per structure)"
)
MISSING_CASES_TIP = (
    "cases with at least one score row of status missing_prediction or failed for this model"
)
_SAFE_URL = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)


# --------------------------------------------------------------------------- formatting


def _digits(metric: str, aggregates: pd.DataFrame | None = None) -> NumberFormat:
    """The metric's one format (:func:`~assay.report._format.number_format`): percent for
    Dice and NSD, mm for distances, decimals enough to tell ranked models apart."""
    return number_format(pd.DataFrame() if aggregates is None else aggregates, metric)


def _num(value: Any, digits: int | NumberFormat) -> str:
    if isinstance(digits, NumberFormat):
        return digits(value)
    return "—" if _isnan(value) else f"{float(value):.{digits}f}"


def _count(value: Any) -> str:
    return "—" if _isnan(value) else str(int(value))


def _rank(value: Any) -> str:
    if _isnan(value):
        return "—"
    v = float(value)
    return str(int(v)) if v.is_integer() else f"{v:.2f}"


def _p(value: Any) -> str:
    if _isnan(value):
        return "—"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _key(value: Any) -> str:
    """``data-sort`` value of a numeric cell; empty (sorted last) for NaN."""
    return "" if _isnan(value) else repr(float(value))


def _url(value: Any) -> str | None:
    """``value`` when it is an http(s) or mailto URL (never ``javascript:``), else None."""
    return str(value) if isinstance(value, str) and _SAFE_URL.match(value) else None


def _true(value: Any) -> bool:
    return (not _isnan(value)) and bool(value)


def _text(value: Any) -> str:
    """A text cell's content: ``"—"`` for None, NaN and the empty string."""
    return "—" if _isnan(value) or str(value).strip() == "" else str(value)


# --------------------------------------------------------------------------- page model


@dataclass
class Cell:
    """One table cell: ``text`` shown, ``sort`` its ``data-sort`` (None: sort by text).

    ``kind`` selects the template's rendering: ``text``, ``rank`` (a co-winner badge when
    ``win``), ``ci`` (numbers plus a bar at ``bar = (left %, width %, mean %)``), ``links``
    (``links = [(label, url)]``). ``title`` becomes the cell's tooltip.
    """

    text: str = ""
    sort: str | None = None
    kind: str = "text"
    win: bool = False
    bar: tuple[float, float, float] | None = None
    links: list[tuple[str, str]] = field(default_factory=list)
    cls: str = ""
    title: str = ""


@dataclass
class Table:
    """A sortable table: ``columns`` are (label, numeric, tooltip); ``notes`` are footnotes
    shown under it (a ``🏆`` in a note is drawn as the co-winner badge)."""

    columns: list[tuple[str, bool, str]]
    rows: list[list[Cell]]
    cls: str = ""
    caption: str = ""
    notes: list[str] = field(default_factory=list)


def _n(v: Any) -> Cell:
    return Cell(_count(v), _key(v))


def _v(v: Any, digits: int | NumberFormat) -> Cell:
    return Cell(_num(v, digits), _key(v))


def _warn_count(k: int) -> Cell:
    """A count that deserves attention when positive (``⚠ k``)."""
    return Cell(f"⚠ {k}" if k > 0 else "0", str(k), cls="warn" if k > 0 else "")


# --------------------------------------------------------------------------- shared facts


def average_label(params: Any) -> tuple[str, str]:
    """Column label and footnote of the ``average`` structure under the analysis' convention.

    ``params["aggregation"]`` ``"touchstone"``: the mean of the structure means; anything
    else (``"default"``): the mean over cases of each case's mean over the structures it has,
    which is not the mean of a row of structure means when cases lack structures.
    """
    convention = params.get("aggregation") if isinstance(params, Mapping) else None
    if convention == "touchstone":
        return (
            "average (of structures)",
            "average (of structures): the mean of the structure means (Touchstone's convention).",
        )
    return (
        "average (per case)",
        "average (per case): the mean over cases of each case's mean over the structures it "
        "contains — not the mean of the structure means, because cases differ in which "
        "structures they contain.",
    )


def missing_cases(
    data: ReportData, metric: str, dataset: str, structure: str = AVERAGE
) -> dict[str, int]:
    """model -> cases without a usable prediction (:meth:`ReportData.missing_counts`)."""
    return data.missing_counts(metric, dataset, structure)


def case_coverage(data: ReportData, dataset: str) -> tuple[int, int]:
    """(cases with at least one evaluated structure, cases in the scores) of ``dataset``.

    Evaluated: the case has an ``average`` row in some analysis' ``values``; the total is the
    distinct ``case_id`` of ``data.scores`` for the dataset.
    """
    sc = data.scores
    total: set[str] = set()
    if not sc.empty and {"dataset", "case_id"} <= set(sc.columns):
        total = set(map(str, sc.loc[sc["dataset"] == dataset, "case_id"]))
    evaluated: set[str] = set()
    for a in data.analyses.values():
        vals = _slice(a.values, dataset=dataset, structure=AVERAGE)
        if "case_id" in vals.columns:
            evaluated |= set(map(str, vals["case_id"]))
    return len(evaluated), len(total | evaluated)


def _legend(params: Any) -> str:
    """The winner rule that made the 🏆, without Markdown backticks."""
    return winner_legend(params).replace("`", "")


def rule_sentence(params: Any) -> str:
    """``rule mean: best mean, and every model ...`` for the site's lead paragraph."""
    rule = str(params.get("winner_rule", "mean"))
    alpha = params.get("tests", {}).get("alpha", 0.05)
    return f"rule {rule}: {rule_description(rule)}, α = {alpha}"


def _rank_tip(params: Any) -> str:
    by = params.get("ranked_by", "mean") if isinstance(params, Mapping) else "mean"
    return (
        f"aggregate-then-rank by the {by}; 🏆 co-winner (rule "
        f"{params.get('winner_rule', 'mean')}); † co-winner below a non-winner; ‡ "
        "significantly better than a model ranked above it"
    )


def _ci_scale(frame: pd.DataFrame) -> tuple[float, float]:
    """Common axis of the CI bars of one table: the CI range padded by 5 %."""
    lows = pd.to_numeric(frame.get("ci_low"), errors="coerce")
    highs = pd.to_numeric(frame.get("ci_high"), errors="coerce")
    means = pd.to_numeric(frame.get("mean"), errors="coerce")
    values = pd.concat([lows, highs, means]).dropna()  # NaN CIs get no bar
    if values.empty:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo) * 0.05, 1e-9)
    return lo - pad, hi + pad


def _ci_cell(
    row: Mapping[str, Any], digits: int | NumberFormat, scale: tuple[float, float]
) -> Cell:
    low, high, mean = row.get("ci_low"), row.get("ci_high"), row.get("mean")
    if _isnan(low) or _isnan(high):
        return Cell("—", "", kind="ci")
    lo, hi = scale
    span = hi - lo

    def pct(x: Any) -> float:
        return round(min(max(100.0 * (float(x) - lo) / span, 0.0), 100.0), 2)

    left = pct(low)
    width = max(round(pct(high) - left, 2), 0.5)
    bar = (left, width, pct(mean) if not _isnan(mean) else left)
    return Cell(f"{_num(low, digits)} – {_num(high, digits)}", _key(low), kind="ci", bar=bar)


def _rank_cell(row: Mapping[str, Any], marks: Mapping[str, RowMarks]) -> Cell:
    """Rank with 🏆 (co-winner), † and ‡ (see :mod:`assay.report._format`)."""
    if _true(row.get("contaminated")):
        return Cell("excl.", "", kind="rank", cls="excl")
    mark = marks.get(str(row["model"]), RowMarks())
    title = better_than_text(mark)
    if mark.dagger:
        title = "; ".join(t for t in ("co-winner ranked below a non-winner", title) if t)
    return Cell(
        _rank(row.get("rank")) + mark.suffix,
        _key(row.get("rank")),
        kind="rank",
        win=_true(row["winner"]),
        cls="inversion" if mark.better_than else "",
        title=title,
    )


def _links_cell(data: ReportData, model: str) -> Cell:
    card = data.cards.get(model)
    links = []
    if card is not None:
        for label, value in (("paper", card.paper), ("code", card.code)):
            url = _url(value)
            if url:
                links.append((label, url))
    return Cell(" ".join(label for label, _ in links), kind="links", links=links)


def _ordered(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Rows of ``frame`` in ``order`` of their model (others last, by name)."""
    pos = {m: i for i, m in enumerate(order)}
    key = frame["model"].map(lambda m: (pos.get(str(m), len(pos)), str(m)))
    return frame.assign(_key=key).sort_values("_key").drop(columns="_key")


# --------------------------------------------------------------------------- index


def leaderboard(data: ReportData, metric: str, dataset: str) -> Table:
    """Leaderboard of the ``average`` structure, models by rank."""
    a = data.analyses[metric]
    agg = _slice(a.aggregates, dataset=dataset, structure=AVERAGE)
    agg = _ordered(agg, data.model_order(metric, dataset))
    missing = missing_cases(data, metric, dataset)
    d = _digits(metric, a.aggregates)
    scale = _ci_scale(agg)
    marks = row_marks(agg, a.inversions)
    rows = []
    for row in agg.to_dict("records"):
        model = str(row["model"])
        card = data.cards.get(model)
        rows.append(
            [
                _rank_cell(row, marks),
                Cell(model, cls="model"),
                Cell((card.organisation if card is not None else None) or "—"),
                _v(row["mean"], d),
                _ci_cell(row, d, scale),
                _v(row["median"], d),
                _n(row["n"]),
                _n(row["n_set_worst"]),
                _warn_count(missing.get(model, 0)),
                _links_cell(data, model),
            ]
        )
    columns = [
        ("Rank", True, _rank_tip(a.params)),
        ("Model", False, ""),
        ("Organisation", False, ""),
        ("Mean", True, ""),
        ("95% CI", True, "percentile bootstrap over cases"),
        ("Median", True, ""),
        ("n", True, "cases"),
        ("values set worst", True, SET_WORST_TIP),
        ("missing cases", True, MISSING_CASES_TIP),
        ("Links", False, ""),
    ]
    caption = f"Mean, CI, median and ranks: {average_label(a.params)[1]}"
    notes = [_legend(a.params), *mark_notes(marks, a.params, metric)]
    return Table(columns, rows, cls="leaderboard", caption=caption, notes=notes)


def matrix(data: ReportData, metric: str, dataset: str) -> Table:
    """Model × structure table of means, the ``average`` column labelled by convention."""
    a = data.analyses[metric]
    agg = _slice(a.aggregates, dataset=dataset)
    structures = _structures(agg)
    d = _digits(metric, a.aggregates)
    rows = []
    for model in data.model_order(metric, dataset):
        cells = [Cell(model, cls="model")]
        for structure in structures:
            part = agg[(agg["model"] == model) & (agg["structure"] == structure)]
            if part.empty:
                cells.append(Cell("—", ""))
                continue
            row = part.iloc[0]
            cell = _v(row["mean"], d)
            if _true(row.get("contaminated")):
                cell.text += " (excl.)"
                cell.cls = "excl"
            elif _true(row.get("winner")):
                cell.cls = "best"
            cells.append(cell)
        rows.append(cells)
    label, note = average_label(a.params)
    columns = [("Model", False, "")]
    columns += [(label, True, note) if s == AVERAGE else (s, True, "") for s in structures]
    caption = "bold: co-winner on that structure"
    notes = [note] if AVERAGE in structures else []
    return Table(columns, rows, cls="matrix", caption=caption, notes=notes)


def consensus(data: ReportData, metric: str) -> Table | None:
    """Consensus ranking across datasets (None when there is none)."""
    cons = data.analyses[metric].consensus
    part = _slice(cons, structure=AVERAGE)
    if part.empty:
        return None
    part = part.sort_values(["consensus_rank", "model"])
    rows = [
        [
            _v(r["consensus_rank"], 0),
            Cell(str(r["model"])),
            _v(r["mean_rank"], 2),
            _n(r["n_datasets"]),
        ]
        for r in part.to_dict("records")
    ]
    columns = [("Consensus rank", True, ""), ("Model", False, ""), ("Mean rank", True, "")]
    return Table([*columns, ("Datasets", True, "datasets the model is ranked on")], rows)


# --------------------------------------------------------------------------- structure pages


def structure_table(data: ReportData, metric: str, dataset: str, structure: str) -> Table:
    """Main results of one (dataset, structure, metric): rank, mean, CI, spread, counts."""
    a = data.analyses[metric]
    agg = _slice(a.aggregates, dataset=dataset, structure=structure)
    agg = _ordered(agg, data.model_order(metric, dataset, structure))
    missing = missing_cases(data, metric, dataset, structure)
    d = _digits(metric, a.aggregates)
    scale = _ci_scale(agg)
    marks = row_marks(agg, a.inversions)
    rows = [
        [
            _rank_cell(row, marks),
            Cell(str(row["model"]), cls="model"),
            _v(row["mean"], d),
            _ci_cell(row, d, scale),
            _v(row["median"], d),
            Cell(f"{_num(row['q1'], d)} – {_num(row['q3'], d)}", _key(row["q1"])),
            _n(row["n"]),
            _n(row["n_set_worst"]),
            _warn_count(missing.get(str(row["model"]), 0)),
        ]
        for row in agg.to_dict("records")
    ]
    columns = [
        ("Rank", True, _rank_tip(a.params)),
        ("Model", False, ""),
        ("Mean", True, ""),
        ("95% CI", True, "percentile bootstrap over cases"),
        ("Median", True, ""),
        ("IQR", True, "first – third quartile"),
        ("n", True, "cases"),
        ("values set worst", True, SET_WORST_TIP),
        ("missing cases", True, MISSING_CASES_TIP),
    ]
    notes = [_legend(a.params), *mark_notes(marks, a.params, metric)]
    if structure == AVERAGE:
        notes.insert(0, average_label(a.params)[1])
    return Table(columns, rows, cls="results", notes=notes)


def rankings_table(data: ReportData, metric: str, dataset: str, structure: str) -> Table:
    """Rank of each model under each scheme, P(rank 1) and the bootstrap rank interval."""
    a = data.analyses[metric]
    order = data.model_order(metric, dataset, structure)
    rk = _slice(a.rankings, dataset=dataset, structure=structure)
    rk = rk.drop_duplicates("model").set_index("model") if not rk.empty else rk
    st = _slice(a.stability, dataset=dataset, structure=structure)
    st = st.drop_duplicates("model").set_index("model") if not st.empty else st
    rows = []
    for model in order:
        r = rk.loc[model] if model in rk.index else {}
        s = st.loc[model] if model in st.index else {}
        cells = [Cell(model, cls="model")]
        for _, column, _ in SCHEMES:
            value = r.get(column) if len(r) else None
            cells.append(Cell(_rank(value), _key(value)))
        p1 = s.get("p_rank1") if len(s) else None
        low = s.get("rank_ci_low") if len(s) else None
        high = s.get("rank_ci_high") if len(s) else None
        interval = "—" if _isnan(low) else f"{_rank(low)}–{_rank(high)}"
        cells += [_v(p1, 3), Cell(interval, _key(low))]
        rows.append(cells)
    columns = [("Model", False, "")]
    columns += [(label, True, tip) for label, _, tip in SCHEMES]
    columns += [
        ("P(rank 1)", True, "bootstrap frequency of rank 1 (aggregate-then-rank)"),
        ("rank 95 % interval", True, "2.5 % – 97.5 % quantiles of the bootstrap rank"),
    ]
    return Table(columns, rows, cls="rankings")


def pairwise_table(data: ReportData, metric: str, dataset: str, structure: str) -> Table:
    """Significant one-sided pairwise differences of one (dataset, structure, metric)."""
    pw = _slice(data.analyses[metric].pairwise, dataset=dataset, structure=structure)
    pw = pw.loc[pw["significant"].map(_true)] if not pw.empty else pw
    d = _digits(metric)
    rows = [
        [
            Cell(str(r["model_a"])),
            Cell(str(r["model_b"])),
            _n(r["n_paired"]),
            _v(r.get("mean_difference"), d),
            _v(r["median_difference"], d),
            Cell(_p(r["p_value"]), _key(r["p_value"])),
            Cell(_p(r["p_holm"]), _key(r["p_holm"])),
        ]
        for r in pw.sort_values(["p_holm", "model_a", "model_b"]).to_dict("records")
    ]
    columns = [
        ("Better", False, "model_a"),
        ("than", False, "model_b"),
        ("Pairs", True, "paired cases"),
        ("Mean difference", True, "mean of a − b over the paired cases"),
        ("Median difference", True, "median of a − b over the paired cases"),
        ("p", True, str(data.analyses[metric].params.get("tests", {}).get("test", ""))),
        ("p (Holm)", True, ""),
    ]
    return Table(columns, rows, cls="pairs")


# --------------------------------------------------------------------------- stability


def stability_tables(data: ReportData, metric: str, dataset: str) -> tuple[Table, Table]:
    """Kendall τ per structure and P(rank 1) of the ``average`` structure."""
    a = data.analyses[metric]
    tau = _slice(a.stability_tau, dataset=dataset)
    tau = tau.assign(_o=tau["structure"].map(lambda s: (s != AVERAGE, str(s)))).sort_values("_o")
    tau_rows = [
        [
            Cell(str(r["structure"])),
            _n(r["n_models"]),
            _n(r["n_cases"]),
            _n(r["n_resamples"]),
            _v(r["tau_mean"], 3),
            _v(r["tau_median"], 3),
            Cell(f"{_num(r['tau_q025'], 3)} – {_num(r['tau_q975'], 3)}", _key(r["tau_q025"])),
            _n(r["n_tau_undefined"]),
        ]
        for r in tau.to_dict("records")
    ]
    tau_cols = [
        ("Structure", False, ""),
        ("Models", True, ""),
        ("Cases", True, ""),
        ("Resamples", True, ""),
        ("Mean τ", True, "Kendall τ-b between the full-data and bootstrap rankings"),
        ("Median τ", True, ""),
        ("95% interval", True, ""),
        ("Undefined", True, "resamples where τ is undefined"),
    ]
    st = _slice(a.stability, dataset=dataset, structure=AVERAGE)
    st = _ordered(st, data.model_order(metric, dataset))
    d = _digits(metric, a.aggregates)
    st_rows = [
        [
            _v(r["rank"], 0),
            Cell(str(r["model"]), cls="model"),
            _v(r["mean"], d),
            _v(r["p_rank1"], 3),
            _v(r["mean_rank"], 2),
            _v(r["median_rank"], 1),
            Cell(f"{_rank(r['rank_ci_low'])}–{_rank(r['rank_ci_high'])}", _key(r["rank_ci_low"])),
        ]
        for r in st.to_dict("records")
    ]
    st_cols = [
        ("Rank", True, ""),
        ("Model", False, ""),
        ("Mean", True, ""),
        ("P(rank 1)", True, "bootstrap frequency of rank 1"),
        ("Mean rank", True, ""),
        ("Median rank", True, ""),
        ("rank 95 % interval", True, ""),
    ]
    return Table(tau_cols, tau_rows), Table(st_cols, st_rows, cls="p-rank1")


# --------------------------------------------------------------------------- subgroups


def _subgroup_format(metric: str) -> NumberFormat:
    """Group means: Touchstone's one decimal in percent (Dice, NSD), two decimals in mm."""
    return NumberFormat(metric, 1 if is_percent(metric) else 2)


def _subgroup_params(params: Any) -> Mapping[str, Any]:
    sub = params.get("subgroups") if isinstance(params, Mapping) else None
    return sub if isinstance(sub, Mapping) else {}


def subgroup_method(data: ReportData, metric: str) -> str:
    """How the subgroup tests of ``metric`` were run and corrected, as one or two sentences."""
    a = data.analyses[metric]
    sub = _subgroup_params(a.params)
    family = sub.get("family_description")
    if not family:  # an analysis that predates correction families: state what is known
        correction = sub.get("correction") or "correction not recorded"
        family = f"{correction}, within each model"
    alpha = sub.get("alpha", pairwise_alpha(a.params))
    level = f", α = {alpha:g}" if isinstance(alpha, (int, float)) else ""
    ci = sub.get("ci")
    text = (
        f"Kruskal–Wallis across groups and two-sided Mann–Whitney U per pair of groups; p "
        f"corrected by {family}{level}."
    )
    return f"{text} Group means with 95 % CIs: {ci}." if ci else text


def subgroup_gaps(data: ReportData, metric: str, dataset: str) -> pd.DataFrame:
    """Which model shows a significant gap between groups, on which grouping and structure.

    One row per (grouping, structure, model) — model ``all models`` for the pseudo-model —
    with at least one Mann–Whitney pair significant after the analysis' correction: the pair
    with the smallest corrected p (group_a, group_b, their means, p, p_adj), how many pairs are
    significant, and the size of the correction family. Rows by grouping, structure
    (``average`` first), then model in rank order (``all models`` last).
    """
    columns = ["grouping", "structure", "model", "group_a", "group_b", "mean_a", "mean_b",
               "p", "p_adj", "n_significant", "n_pairs", "family_size"]  # fmt: skip
    a = data.analyses[metric]
    tests = all_models(_slice(a.subgroup_tests, dataset=dataset, test="mannwhitneyu"))
    if tests.empty:
        return pd.DataFrame(columns=columns)
    tests = tests.assign(significant=tests["significant"].map(_true))
    n_pairs = tests.groupby(["grouping", "structure", "model"]).size().rename("n_pairs")
    hit = tests[tests["significant"]]
    if hit.empty:
        return pd.DataFrame(columns=columns)
    counts = hit.groupby(["grouping", "structure", "model"]).size().rename("n_significant")
    best = hit.sort_values("p_adj", kind="stable").drop_duplicates(
        ["grouping", "structure", "model"]
    )
    if "family_size" not in best.columns:
        best = best.assign(family_size=float("nan"))
    best = best.join(counts, on=["grouping", "structure", "model"]).join(
        n_pairs, on=["grouping", "structure", "model"]
    )
    order = [*data.model_order(metric, dataset), ALL_MODELS]
    rank = {m: i for i, m in enumerate(order)}
    structures = {s: i for i, s in enumerate(_structures(best))}
    best = best.assign(
        _s=best["structure"].map(structures),
        _m=best["model"].map(lambda m: rank.get(str(m), len(rank))),
    ).sort_values(["grouping", "_s", "_m", "model"], kind="stable")
    return best.loc[:, columns].reset_index(drop=True)


def subgroup_summary(data: ReportData, metric: str, dataset: str) -> Table:
    """Table of :func:`subgroup_gaps`: the significant group differences, one row each."""
    a = data.analyses[metric]
    d = _subgroup_format(metric)
    gaps = subgroup_gaps(data, metric, dataset)
    rows = [
        [
            Cell(str(r["grouping"])),
            Cell(str(r["structure"])),
            Cell(str(r["model"]), cls="model all" if r["model"] == ALL_MODELS else "model"),
            Cell(f"{r['group_a']} vs {r['group_b']}"),
            _v(r["mean_a"], d),
            _v(r["mean_b"], d),
            Cell(_p(r["p_adj"]), _key(r["p_adj"]), title=f"uncorrected p {_p(r['p'])}"),
            Cell(f"{_count(r['n_significant'])} of {_count(r['n_pairs'])}", _key(r["n_pairs"])),
        ]
        for r in gaps.to_dict("records")
    ]
    unit = f" ({d.unit})" if isinstance(d, NumberFormat) else ""
    columns = [
        ("Grouping", False, ""),
        ("Structure", False, ""),
        ("Model", False, f"{ALL_MODELS}: per-case mean over the models"),
        ("Pair", False, "the significant pair with the smallest corrected p"),
        (f"Mean A{unit}", True, "mean of the first group of the pair"),
        (f"Mean B{unit}", True, "mean of the second group of the pair"),
        ("p corrected", True, "Mann–Whitney U, corrected over the family stated above"),
        ("Pairs significant", True, "significant pairs of groups of this model"),
    ]
    sub = _subgroup_params(a.params)
    tests = _slice(a.subgroup_tests, dataset=dataset, test="mannwhitneyu")
    size = tests["family_size"].max() if "family_size" in tests.columns and len(tests) else None
    if sub.get("family") == "all" and size is not None and not _isnan(size):
        family = f"over all {int(size):,} Mann–Whitney tests of this dataset and metric"
    else:
        family = "within each model and grouping"
    caption = (
        f"p corrected {family} ({sub.get('correction', 'correction not recorded')}). One row "
        "per model, grouping and structure with a significant difference between two groups: "
        "the pair with the smallest corrected p."
    )
    return Table(columns, rows, cls="subgroup-gaps", caption=caption)


def subgroup_gaps_markdown(data: ReportData, metric: str, dataset: str) -> list[str]:
    """Markdown lines of :func:`subgroup_gaps` for ``leaderboard.md`` (empty without groups)."""
    a = data.analyses[metric]
    if _slice(a.subgroups, dataset=dataset).empty:
        return []
    d = _subgroup_format(metric)
    gaps = subgroup_gaps(data, metric, dataset)
    lines = [f"Subgroup gaps: {subgroup_method(data, metric)}", ""]
    if gaps.empty:
        return [*lines, "No model shows a significant difference between groups.", ""]
    lines += [
        "| Grouping | Structure | Model | Pair | Mean A | Mean B | p corrected |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in gaps.to_dict("records"):
        cells = [r["grouping"], r["structure"], r["model"], f"{r['group_a']} vs {r['group_b']}",
                 _num(r["mean_a"], d), _num(r["mean_b"], d), _p(r["p_adj"])]  # fmt: skip
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return [*lines, ""]


def subgroup_tables(
    data: ReportData, metric: str, dataset: str, grouping: str, structure: str = AVERAGE
) -> tuple[Table, Table]:
    """Wide means table (rows = models, columns = groups, cells "mean [95 % CI] (n)") and the
    significant between-group tests of one (dataset, metric, grouping, structure).

    Kruskal–Wallis rows are left out for a model whose grouping has two tested groups (one
    Mann–Whitney pair): with two groups they carry the same information.
    """
    a = data.analyses[metric]
    d = _subgroup_format(metric)
    where = {"dataset": dataset, "grouping": grouping, "structure": structure}
    sg = all_models(_slice(a.subgroups, **where))
    groups = list(dict.fromkeys(map(str, sg["group"]))) if not sg.empty else []
    order = [*data.model_order(metric, dataset), ALL_MODELS]
    models = [m for m in order if m in set(map(str, sg.get("model", [])))]
    models += sorted(set(map(str, sg.get("model", []))) - set(models))
    by_cell = {(str(r["model"]), str(r["group"])): r for r in sg.to_dict("records")}
    means = []
    for model in models:
        cells = [Cell(model, cls="model all" if model == ALL_MODELS else "model")]
        for group in groups:
            r = by_cell.get((model, group))
            if r is None:
                cells.append(Cell("—", ""))
                continue
            ci = ""
            if not _isnan(r.get("ci_low")) and not _isnan(r.get("ci_high")):
                ci = f" [{_num(r['ci_low'], d)}, {_num(r['ci_high'], d)}]"
            text = f"{_num(r['mean'], d)}{ci} ({_count(r['n'])})"
            cell = Cell(text, _key(r["mean"]))
            if _true(r.get("skipped")):
                cell.cls, cell.title = "excl", f"not tested: {_text(r.get('reason'))}"
                cell.text += " †"
            cells.append(cell)
        means.append(cells)
    unit = f", {d.unit}" if isinstance(d, NumberFormat) else ""
    means_cols = [("Model", False, f"{ALL_MODELS}: per-case mean over the models")]
    means_cols += [
        (g, True, f"mean{unit} ({grouping} = {g}) [95 % CI], n cases in brackets") for g in groups
    ]
    skipped = any(_true(v) for v in sg.get("skipped", []))
    means_notes = ["†: group too small, not tested."] if skipped else []
    tests = all_models(_slice(a.subgroup_tests, **where))
    if not tests.empty:
        pairs = tests.loc[tests["test"] != "kruskal"].groupby("model")["test"].size()
        two_groups = {str(m) for m, k in pairs.items() if k == 1}
        drop = (tests["test"] == "kruskal") & tests["model"].astype(str).isin(two_groups)
        tests = tests.loc[~drop & tests["significant"].map(_true)]
    sig = []
    for r in tests.to_dict("records"):
        kw = r["test"] == "kruskal"
        sig.append(
            [
                Cell(str(r["model"]), cls="model"),
                Cell("Kruskal–Wallis" if kw else "Mann–Whitney U"),
                Cell("all groups" if kw else _text(r["group_a"])),
                Cell(_text(r["group_b"])),
                _n(r["n_a"]),
                Cell("—", "") if kw else _n(r["n_b"]),
                Cell("—", "") if kw else _v(r.get("mean_a"), d),
                Cell("—", "") if kw else _v(r.get("mean_b"), d),
                Cell(_p(r["p"]), _key(r["p"])),
                Cell(_p(r["p_adj"]), _key(r["p_adj"])),
            ]
        )
    sig_cols = [
        ("Model", False, ""),
        ("Test", False, ""),
        ("Group A", False, ""),
        ("Group B", False, ""),
        ("n A", True, "cases"),
        ("n B", True, "cases"),
        (f"mean A{unit}", True, ""),
        (f"mean B{unit}", True, ""),
        ("p", True, "uncorrected"),
        ("p corrected", True, "corrected over the family stated in the caption"),
    ]
    caption = (
        f"{subgroup_method(data, metric)} p: uncorrected; p corrected: as stated. Kruskal–Wallis "
        "rows only for groupings of more than two groups. Significant tests only."
    )
    return (
        Table(means_cols, means, cls="subgroup-means", notes=means_notes),
        Table(sig_cols, sig, cls="significant-pairs", caption=caption),
    )


# --------------------------------------------------------------------------- speed, methods


def speed_table(data: ReportData, dataset: str) -> Table:
    """Inference speed of one dataset, fastest first."""
    sp = _slice(data.speed, dataset=dataset).sort_values("cm3_per_s", ascending=False)
    rows = [
        [
            Cell(str(r["model"]), cls="model"),
            _n(r["n_cases"]),
            _v(r["seconds"], 2),
            _v(r["volume_cm3"], 2),
            _v(r["cm3_per_s"], 2),
        ]
        for r in sp.to_dict("records")
    ]
    columns = [
        ("Model", False, ""),
        ("Cases", True, ""),
        ("Seconds", True, "total inference time"),
        ("Volume (cm³)", True, "total image volume"),
        ("cm³/s", True, "volume processed per second"),
    ]
    return Table(columns, rows, cls="speed")


def changes_table(data: ReportData, metric: str) -> Table:
    """Missing-value policy counts (structure × case values) per model, summed over structures."""
    ch = data.analyses[metric].changes
    cols = [c for c in CHANGE_COLUMNS if c in ch.columns]
    rows = []
    if not ch.empty:
        summed = ch.groupby(["dataset", "model"], sort=True)[cols].sum().reset_index()
        for r in summed.to_dict("records"):
            rows.append([Cell(str(r["dataset"])), Cell(str(r["model"]), cls="model")])
            rows[-1] += [_n(r[c]) for c in cols]
    columns = [("Dataset", False, ""), ("Model", False, "")]
    columns += [
        (c.removeprefix("n_").replace("_", " "), True, f"{c}: structure × case values")
        for c in cols
    ]
    return Table(columns, rows, cls="changes")


def missing_predictions(data: ReportData) -> list[str]:
    """One line per (dataset, model) lacking predictions: ``"k of N cases have no
    prediction"``; N = the dataset's distinct cases in ``data.scores``."""
    m = data.missing_cases()
    m = m[m["n_missing"] > 0]
    lines = []
    for (dataset, model), part in m.groupby(["dataset", "model"], sort=True):
        total = data.scores.loc[data.scores["dataset"] == dataset, "case_id"].nunique()
        k = int(part["n_missing"].max())
        lines.append(f"{model} on {dataset}: {k} of {total} cases have no prediction")
    return lines


def params_items(value: Any, key: str = "") -> Any:
    """Params as nested (key, value) lists for the template; leaves as readable strings.

    Empty mappings and lists and None read ``"none"``, as does a zero count (a key starting
    ``n_`` or containing ``capped``); lists are joined by commas; booleans read ``yes``/``no``.
    """
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return [(str(k), params_items(v, str(k))) for k, v in value.items()]
    if isinstance(value, list | tuple | set):
        items = sorted(map(str, value)) if isinstance(value, set) else [str(v) for v in value]
        return ", ".join(items) if items else "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    is_count = key.startswith("n_") or "capped" in key
    if value is None or (is_count and isinstance(value, int | float) and value == 0):
        return "none"
    return str(value)
