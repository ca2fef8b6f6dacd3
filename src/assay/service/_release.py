"""The release gate: what of a submission's private per-case scores may be published.

Input is always the private long table of per-case scores (columns ``model, case_id,
structure, metric, value, status``; ``model`` is the submission id). Output is a JSON-able
payload built only from aggregates, rounded as the phase's
:class:`~assay.service._phase.PrivacyPolicy` says. Statistics are assay's own
(:func:`assay.stats.analyze`: paired bootstrap CIs, one-sided paired tests with Holm,
co-winners, rank stability), so the service publishes what ``assay analyze`` would.

Rounding (policy mode): one case moves a mean over n cases by up to R/n for a metric of range
R, so a value is released at the resolution ``r = 10^ceil(log10(2R/n))``, capped at
``10^-max_decimals``; means and medians are rounded to the nearest multiple of r, CI bounds
outward (down and up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from assay.metrics import metric_info
from assay.service._phase import PhaseConfig, PrivacyPolicy

#: Structure name of the per-case average over structures (assay.stats' convention).
AVERAGE = "average"


def metric_range(metric: str, policy: PrivacyPolicy) -> float:
    """R in the rounding rule: 1 for fractions, ``policy.mm_range`` for distances."""
    info = metric_info(metric)
    return 1.0 if info.percent or info.unit == "" else policy.mm_range


def resolution(metric: str, n: int, policy: PrivacyPolicy) -> float:
    """The release resolution of a mean of ``metric`` over ``n`` cases (module docstring)."""
    if n <= 0:
        return metric_range(metric, policy)
    exponent = math.ceil(math.log10(2.0 * metric_range(metric, policy) / n))
    return float(10.0 ** max(exponent, -policy.max_decimals))


def _decimals(step: float) -> int:
    return max(0, -round(math.log10(step)))


def round_to(value: float, step: float, how: str = "nearest") -> float | None:
    """``value`` rounded to a multiple of ``step`` (``nearest``, ``down`` or ``up``)."""
    if value is None or not math.isfinite(value):
        return None
    q = value / step
    k = {"nearest": round(q), "down": math.floor(q + 1e-9), "up": math.ceil(q - 1e-9)}[how]
    return round(k * step, _decimals(step))


def worst_values(metrics: Sequence[str], policy: PrivacyPolicy) -> dict[str, float]:
    """Worst values for the ``worst`` missing-value policy: distances get ``mm_range``."""
    out = {}
    for metric in metrics:
        info = metric_info(metric)
        out[metric] = info.worst if info.worst is not None else policy.mm_range
    return out


def _frame(scores: pd.DataFrame, dataset: str) -> pd.DataFrame:
    df = scores.copy()
    df["dataset"] = dataset
    df["run_id"] = df["model"]
    if "message" not in df.columns:
        df["message"] = ""
    return df


def analyze_metric(
    scores: pd.DataFrame, metric: str, phase: PhaseConfig, *, n_permutations: int = 10000
) -> Any:
    """:func:`assay.stats.analyze` of one metric with the phase's policy parameters."""
    from assay.stats import analyze

    return analyze(
        _frame(scores, phase.reference_set),
        metric=metric,
        n_bootstrap=phase.policy.n_bootstrap,
        seed=phase.policy.seed,
        alpha=phase.policy.alpha,
        worst_values=worst_values(phase.metrics, phase.policy),
        n_permutations=n_permutations,
    )


def primary_values(scores: pd.DataFrame, phase: PhaseConfig) -> pd.Series:
    """Per-case primary scores (average over structures, after the ``worst`` policy),
    indexed by case id: what the Ladder compares."""
    from assay.stats import apply_policy, case_averages

    df = _frame(scores[scores["metric"] == phase.primary], phase.reference_set)
    values, _ = apply_policy(
        df, policy="worst", worst_values=worst_values(phase.metrics, phase.policy)
    )
    avg = case_averages(values)
    return avg.set_index("case_id")["value"].astype(float).sort_index()


def _aggregate_rows(
    aggregates: pd.DataFrame, metric: str, phase: PhaseConfig, raw: bool
) -> list[dict[str, Any]]:
    policy = phase.policy
    rows = []
    for _, a in aggregates.sort_values(
        "structure", key=lambda s: s.map(lambda x: (x == AVERAGE, x))
    ).iterrows():
        n = int(a["n"])
        row: dict[str, Any] = {
            "structure": a["structure"],
            "metric": metric,
            "n_evaluable": n,
            "n_failed": int(a["n_failed"]),
        }
        if raw:
            row.update(
                mean=float(a["mean"]),
                median=float(a["median"]),
                ci_low=float(a["ci_low"]),
                ci_high=float(a["ci_high"]),
            )
        else:
            step = resolution(metric, n, policy)
            row["resolution"] = step
            row["mean"] = round_to(float(a["mean"]), step)
            row["median"] = round_to(float(a["median"]), step) if n >= policy.median_min_n else None
            row["ci_low"] = round_to(float(a["ci_low"]), step, "down")
            row["ci_high"] = round_to(float(a["ci_high"]), step, "up")
        rows.append(row)
    return rows


def submission_release(
    scores: pd.DataFrame,
    phase: PhaseConfig,
    *,
    best: tuple[str, pd.DataFrame, Mapping[str, Any]] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Decide what to release for one scored submission; returns (state, payload).

    ``best`` is the team's best released submission so far (id, its private scores, its
    released payload), for the Ladder. States: ``released``; ``withheld`` (the Ladder found
    it not better than the best: the payload repeats the best's primary value only);
    ``pending_approval`` (phases that release after the organiser approves).
    """
    raw = phase.policy.mode == "raw"
    structures: list[dict[str, Any]] = []
    for metric in phase.metrics:
        analysis = analyze_metric(scores, metric, phase, n_permutations=100)
        structures.extend(_aggregate_rows(analysis.aggregates, metric, phase, raw))
    primary = next(
        r for r in structures if r["structure"] == AVERAGE and r["metric"] == phase.primary
    )
    payload: dict[str, Any] = {
        "phase": phase.name,
        "primary": {"metric": phase.primary, "structure": AVERAGE, "mean": primary["mean"]},
        "results": structures,
        "policy": {"text": phase.policy.describe(), "parameters": phase.as_dict()["policy"]},
    }
    if phase.policy.ladder and not raw and best is not None:
        best_id, best_scores, best_payload = best
        new = primary_values(scores, phase)
        old = primary_values(best_scores, phase).reindex(new.index)
        diff = (new - old).dropna().to_numpy(dtype=float)
        higher = bool(metric_info(phase.primary).higher_is_better)
        gain = float(np.mean(diff)) if diff.size else 0.0
        if not higher:
            gain = -gain
        se = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else math.inf
        # A one-case change has gain == se exactly (both d/n): the relative margin keeps
        # floating-point noise from releasing it.
        better = diff.size > 1 and gain > se * (1.0 + 1e-9)
        payload["ladder"] = {
            "compared_with": best_id,
            "released": better,
            "rule": (
                "released only if the mean paired per-case gain over your best exceeds its "
                "standard error"
            ),
        }
        if not better:
            best_value = best_payload["primary"]["mean"]
            return "withheld", {
                "phase": phase.name,
                "primary": {"metric": phase.primary, "structure": AVERAGE, "mean": best_value},
                "results": [],
                "ladder": {
                    **payload["ladder"],
                    "message": f"not significantly better than your best ({best_value})",
                },
                "policy": payload["policy"],
            }
    state = "released" if phase.policy.auto_release else "pending_approval"
    return state, payload


def _pvalue_bin(p: float) -> str:
    for cut in (0.001, 0.01, 0.05):
        if p < cut:
            return f"<{cut:g}"
    return ">=0.05"


def leaderboard(
    scores: pd.DataFrame,
    phase: PhaseConfig,
    entries: Mapping[str, Mapping[str, Any]],
    *,
    metadata: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The phase leaderboard among frozen entries (final selections and baselines).

    ``scores`` holds the private per-case scores of those entries (``model`` = submission
    id); ``entries`` maps a submission id to its public label (``team``, ``label``).
    Per structure and metric: mean, median, CI (rounded as released), rank, 🏆 co-winner
    (best, and every entry not significantly worse by the one-sided paired test of means,
    Holm), P(rank 1) from the bootstrap. Tests only among these entries; in open phases
    p-values only in bins. Subgroups (final phases, ``metadata`` given): groups of at least
    ``min_subgroup`` cases, complementary cells suppressed.
    """
    raw = phase.policy.mode == "raw"
    rows: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    for metric in phase.metrics:
        analysis = analyze_metric(scores, metric, phase)
        stab = (
            analysis.stability.set_index(["model", "structure"])["p_rank1"]
            if len(analysis.stability)
            else None
        )
        for submission, agg in analysis.aggregates.groupby("model"):
            for rec in _aggregate_rows(agg, metric, phase, raw):
                a = agg[agg["structure"] == rec["structure"]].iloc[0]
                rec.update(
                    entry=str(submission),
                    **dict(entries[str(submission)]),
                    rank=int(a["rank"]) if pd.notna(a["rank"]) else None,
                    winner=bool(a["best"]) or (pd.notna(a["winner"]) and bool(a["winner"])),
                )
                if stab is not None and (submission, rec["structure"]) in stab.index:
                    rec["p_rank1"] = round(float(stab.loc[(submission, rec["structure"])]), 2)
                rows.append(rec)
        for _, t in analysis.pairwise.iterrows():
            p = float(t["p_holm"])
            tests.append(
                {
                    "metric": metric,
                    "structure": t["structure"],
                    "better": str(t["model_a"]),
                    "worse": str(t["model_b"]),
                    "p_holm": (round(p, 4) if phase.kind == "final" else _pvalue_bin(p)),
                }
            )
    out: dict[str, Any] = {
        "phase": phase.name,
        "kind": phase.kind,
        "n_entries": len(entries),
        "rows": rows,
        "tests": tests,
        "policy": {"text": phase.policy.describe(), "parameters": phase.as_dict()["policy"]},
        "method": (
            "mean per structure with a paired bootstrap 95% CI; rank by mean; 🏆 = best and "
            "every entry not significantly worse (one-sided paired sign-flip permutation "
            "test of the mean difference, Holm per structure and metric); among final "
            "selections and baselines only"
        ),
    }
    if metadata is not None and phase.kind == "final" and len(entries):
        out["subgroups"] = subgroups(scores, phase, metadata, entries)
    return out


def subgroups(
    scores: pd.DataFrame,
    phase: PhaseConfig,
    metadata: pd.DataFrame,
    entries: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Primary-score means per metadata group, released only for groups of at least
    ``min_subgroup`` evaluable cases; smaller groups are left out, names included. When
    exactly one group of a grouping is too small, the next smallest is suppressed too (its
    value could otherwise be recovered from the total and the other groups)."""
    minimum = phase.policy.min_subgroup
    values = {sid: primary_values(scores[scores["model"] == sid], phase) for sid in entries}
    out = []
    meta = metadata.set_index("case_id")
    meta = meta[meta.index.isin(set(scores["case_id"]))]
    for column in meta.columns:
        groups = meta[column].dropna().astype(str)
        sizes = groups.value_counts()
        small = set(sizes[sizes < minimum].index)
        if len(small) == 1 and len(sizes) > 1:
            rest = sizes.drop(list(small))
            small.add(rest.idxmin())
        for group, size in sorted(sizes.items()):
            cell: dict[str, Any] = {"grouping": column, "group": group}
            if size < minimum:
                continue  # not even its name: a rare value (a site, a scanner) is private
            if group in small:
                cell.update(suppressed=True, n=f">={minimum}")
                out.append(cell)
                continue
            ids = groups.index[groups == group]
            step = resolution(phase.primary, int(size), phase.policy)
            cell.update(
                suppressed=False,
                n=int(size),
                resolution=step,
                means={
                    sid: round_to(float(v.reindex(ids).mean()), step) for sid, v in values.items()
                },
            )
            out.append(cell)
    return out
