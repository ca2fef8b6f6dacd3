"""One call that turns per-case scores into a benchmark's full analysis.

:func:`analyze` applies the missing-value policy, aggregates, bootstraps CIs, tests every
ordered pair of models, picks winners, ranks under every scheme, measures rank stability
and (given metadata and groupings) analyses subgroups — recording every parameter that can
change a number in :attr:`Analysis.params`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from assay.errors import InputError
from assay.stats._aggregate import AVERAGE, aggregate, case_averages
from assay.stats._bootstrap import (
    MIN_RELIABLE_N,
    ci_table,
    iter_slices,
    paired_bootstrap_means,
    slice_bootstrap_means,
)
from assay.stats._options import N_PERMUTATIONS, WINNER_RULES, AnalysisOptions, GroupSpec
from assay.stats._paired import (
    check_rule,
    higher_is_better_for,
    inversions,
    pairwise_tests,
    rule_aggregate,
    winners,
)
from assay.stats._policy import apply_policy
from assay.stats._ranking import consensus_ranking, rankings
from assay.stats._stability import rank_tables
from assay.stats._subgroups import (
    family_description,
    subgroup_analysis,
    subgroup_members,
)

_SLICE = ["dataset", "model", "structure", "metric"]


@dataclass(frozen=True)
class Analysis:
    """Tidy results of :func:`analyze` (see each frame's columns in the README).

    ``values`` are the per-case values the statistics used (after the policy and the
    contamination rules, plus the per-case ``average`` rows); ``rank_counts`` and
    ``tau_samples`` are the bootstrap distributions behind ``stability`` (for plots);
    ``inversions`` the significant pairs whose better model is ranked lower
    (:func:`~assay.stats._paired.inversions`).
    """

    params: dict[str, Any]
    changes: pd.DataFrame
    aggregates: pd.DataFrame
    pairwise: pd.DataFrame
    rankings: pd.DataFrame
    stability: pd.DataFrame
    stability_tau: pd.DataFrame
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    subgroup_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Which case is in which subgroup: dataset, grouping, group, case_id (for plots).
    subgroup_cases: pd.DataFrame = field(default_factory=pd.DataFrame)
    consensus: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: tuple[str, ...] = ()
    values: pd.DataFrame = field(default_factory=pd.DataFrame)
    rank_counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    tau_samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    inversions: pd.DataFrame = field(default_factory=pd.DataFrame)


def analyze(
    scores: pd.DataFrame,
    *,
    metric: str = "dsc",
    policy: Literal["worst", "exclude", "paper"] = "worst",
    aggregation: Literal["default", "touchstone"] = "default",
    n_bootstrap: int = 2000,
    seed: int = 0,
    ci_method: Literal["percentile", "bca"] = "percentile",
    alpha: float = 0.05,
    worst_values: Mapping[str, float] | None = None,
    metadata: pd.DataFrame | None = None,
    groups: Mapping[str, GroupSpec] | None = None,
    min_group_size: int = 10,
    correction: Literal["bonferroni", "fdr_bh"] = "bonferroni",
    subgroup_family: Literal["all", "model"] = "all",
    training_data: Mapping[str, Collection[str]] | None = None,
    winner_rule: Literal["mean", "median", "touchstone"] = "mean",
    n_permutations: int = N_PERMUTATIONS,
) -> Analysis:
    """Analyse the per-case scores of one metric (all datasets, models and structures).

    The ``average`` structure is analysed like the others on per-case averages over
    structures (its aggregate row follows ``aggregation``; its CI, tests, ranks and
    stability use the per-case averages). Aggregate rows get ``ci_low``/``ci_high``
    (paired bootstrap), ``rank`` (by the winner rule's aggregate, the mean unless
    ``winner_rule="median"``; ties share the minimum) and ``winner`` (the best and every
    model not significantly worse by the rule's one-sided paired test, Holm within the
    (dataset, structure, metric) family; see :data:`~assay.stats._paired.WINNER_RULES`:
    ``mean`` — sign-flip permutation test of the mean difference, ``median`` — permutation
    test of the difference of medians, ``touchstone`` — Wilcoxon signed-rank, the paper's
    rule). ``inversions`` lists every significant pair whose better model is ranked lower.

    Contamination: ``training_data`` maps a model to the datasets (``"name"``) or cases
    (``"name:case_id"``) it was trained on. A model trained on a dataset keeps its
    aggregate rows there, flagged ``contaminated``, but is left out of tests, winners, ranks
    and stability; a model trained on some cases is analysed without them (counted in
    ``n_contaminated``). With several datasets, ``consensus`` ranks models by their mean rank.
    """
    check_rule(winner_rule)
    AnalysisOptions(  # one place checks every option: choices and ranges
        policy=policy, aggregation=aggregation, n_bootstrap=n_bootstrap, seed=seed,
        ci_method=ci_method, alpha=alpha, winner_rule=winner_rule, n_permutations=n_permutations,
        min_group_size=min_group_size, correction=correction, subgroup_family=subgroup_family,
        worst_values=worst_values, groups=groups,
    )  # fmt: skip
    # an unregistered metric has no direction (refuse it, never guess), and a measurement
    # (a volume) has none to rank by: say so before the policy asks for a worst value
    higher_is_better_for(metric)
    part = scores[scores["metric"] == metric]
    if part.empty:
        known = ", ".join(sorted(scores["metric"].unique())) or "none"
        raise InputError(f"No scores for metric {metric!r}; metrics present: {known}.")
    part, n_capped = _cap_infinite(part, metric, worst_values)
    values, changes = apply_policy(part, policy=policy, worst_values=worst_values)
    if values.empty:
        raise InputError(f"No values left for metric {metric!r} under policy {policy!r}.")
    values, changes, excluded, notes = _contamination(values, changes, training_data or {})
    tainted = values.merge(excluded, on=["model", "dataset"]) if len(excluded) else values[:0]
    if len(excluded):
        keys = pd.MultiIndex.from_frame(excluded[["model", "dataset"]])
        values = values[~pd.MultiIndex.from_frame(values[["model", "dataset"]]).isin(keys)]
    aggregates = aggregate(values, convention=aggregation)
    with_avg = pd.concat([values, case_averages(values)], ignore_index=True)
    slices = list(iter_slices(with_avg))  # one pivot and one resampling for CIs and stability
    boots = slice_bootstrap_means(slices, n_resamples=n_bootstrap, seed=seed)
    ci = ci_table(
        slices, boots, n_resamples=n_bootstrap, seed=seed, confidence=0.95, method=ci_method
    )
    pairwise = pairwise_tests(
        with_avg, rule=winner_rule, alpha=alpha, n_permutations=n_permutations, seed=seed
    )
    ranks = rankings(with_avg, aggregates, pairwise)
    aggregates = winners(aggregates, pairwise, alpha=alpha, rule=winner_rule)
    rank_column = f"rank_by_{rule_aggregate(winner_rule)}"
    if aggregation == "touchstone":  # the average is the mean of structure means: bootstrap that
        ci = pd.concat(
            [ci[ci["structure"] != AVERAGE], _mean_of_means_ci(values, n_bootstrap, seed)],
            ignore_index=True,
        )
    aggregates = aggregates.merge(
        ci[[*_SLICE, "ci_low", "ci_high"]], on=_SLICE, how="left", validate="one_to_one"
    ).merge(
        ranks[[*_SLICE, rank_column]].rename(columns={rank_column: "rank"}),
        on=_SLICE,
        how="left",
        validate="one_to_one",
    )
    counts = changes.groupby(["dataset", "model", "metric"], as_index=False)[
        [c for c in changes.columns if c.startswith("n_")]
    ].sum()
    counts["structure"] = AVERAGE
    changes_all = pd.concat([changes, counts], ignore_index=True)
    aggregates = aggregates.merge(changes_all, on=_SLICE, how="left", validate="one_to_one")
    aggregates["contaminated"] = False
    if len(tainted):
        extra = aggregate(tainted, convention=aggregation).assign(contaminated=True)
        extra = extra.merge(changes_all, on=_SLICE, how="left", validate="one_to_one")
        aggregates = pd.concat([aggregates, extra], ignore_index=True)
    contradictions = inversions(aggregates, pairwise, alpha=alpha)
    stability, tau, rank_counts, tau_samples = rank_tables(slices, boots, n_resamples=n_bootstrap)
    del boots
    subgroups = subgroup_tests = subgroup_cases = pd.DataFrame()
    if groups:
        if metadata is None or metadata.empty:
            raise InputError("Subgroup analysis needs case metadata (import it with --metadata).")
        parts, members = [], []
        for dataset, vals in with_avg.groupby("dataset", sort=True):
            meta = metadata
            if "dataset" in metadata.columns:  # one table for several datasets: ids per dataset
                meta = metadata[metadata["dataset"] == dataset].drop(columns="dataset")
            parts.append(
                subgroup_analysis(
                    vals,
                    meta,
                    groups,
                    min_size=min_group_size,
                    correction=correction,
                    family=subgroup_family,
                    alpha=alpha,
                    n_bootstrap=n_bootstrap,
                    seed=seed,
                    ci_method=ci_method,
                )
            )
            members.append(subgroup_members(meta, groups).assign(dataset=dataset))
        subgroups = pd.concat([g for g, _ in parts], ignore_index=True)
        subgroup_tests = pd.concat([t for _, t in parts], ignore_index=True)
        subgroup_cases = pd.concat(members, ignore_index=True)
    consensus = pd.DataFrame()
    if values["dataset"].nunique() > 1:
        consensus = consensus_ranking(ranks)
    small = aggregates[(aggregates["n"] < MIN_RELIABLE_N) & (aggregates["structure"] != AVERAGE)]
    warns = tuple(notes) + tuple(
        f"n < {MIN_RELIABLE_N} for {len(small)} (model, structure) rows: intervals and tests "
        "there are unreliable."
        for _ in [0]
        if len(small)
    )
    warns += _powerless_families(pairwise, alpha, winner_rule, n_permutations)
    warns += _powerless_pairs(aggregates, pairwise, alpha)
    if len(contradictions):
        warns += (
            f"{len(contradictions)} significant pair(s) contradict the ranking (a lower-ranked "
            "model significantly better than a higher-ranked one); they are marked next to "
            "the rows.",
        )
    params = {
        "metric": metric,
        "policy": policy,
        "worst_values": dict(worst_values or {}),
        "infinite_values_capped": n_capped,
        "infinite_values": "distances of +inf (empty prediction or reference) are set to the "
        "metric's worst value (a cap such as the image diagonal) before any statistic",
        "aggregation": aggregation,
        "bootstrap": {
            "resamples": n_bootstrap,
            "seed": seed,
            "method": ci_method,
            "paired": True,
            "confidence": 0.95,
        },
        "winner_rule": winner_rule,
        "ranked_by": rule_aggregate(winner_rule),
        "tests": {
            "test": WINNER_RULES[winner_rule][1],
            "alternative": "one-sided, a better than b",
            "correction": "Holm, per (dataset, structure, metric) over ordered pairs",
            "alpha": alpha,
            "all_zero_differences": "p = 1",
            **(
                {}
                if winner_rule == "touchstone"
                else {
                    "permutations": n_permutations,
                    "seed": seed,
                    "exact": "all 2^m sign patterns when 2^m <= permutations (m = cases "
                    "with unequal values), else Monte Carlo, p = (count + 1) / (B + 1)",
                }
            ),
        },
        "winners": WINNER_RULES[winner_rule][2],
        "average_structure": (
            "aggregate row per the aggregation convention (touchstone: mean of the structure "
            "means, its CI the percentile bootstrap of that mean over resampled cases); tests, "
            "ranks, stability (and the default convention's CI) on per-case means over the "
            "structures each case has"
        ),
        "ranking_ties": "share the minimum rank",
        "stability_ranked_by": "mean (bootstrap ranks of resampled means, under every rule)",
        "training_data": {k: sorted(v) for k, v in (training_data or {}).items()},
        "contamination": (
            "a model trained on a dataset is not tested or ranked on it (aggregates flagged); "
            "training cases are excluded from that model's values"
        ),
        "consensus": "mean rank (by mean) across datasets",
        "subgroups": {
            "groups": {k: v if isinstance(v, str) else dict(v) for k, v in (groups or {}).items()},
            "min_size": min_group_size,
            "correction": correction,
            "family": subgroup_family,
            "family_description": family_description(subgroup_family, correction),
            "alpha": alpha,
            "tests": "Kruskal–Wallis, and pairwise two-sided Mann–Whitney U (scipy)",
            "ci": f"{ci_method} bootstrap of each group mean, resampling the group's cases "
            f"(default_rng(seed), the same cases for every model), {n_bootstrap} resamples",
        },
    }
    return Analysis(
        params=params,
        changes=changes,
        aggregates=aggregates,
        pairwise=pairwise,
        rankings=ranks,
        stability=stability,
        stability_tau=tau,
        subgroups=subgroups,
        subgroup_tests=subgroup_tests,
        subgroup_cases=subgroup_cases,
        consensus=consensus,
        warnings=warns,
        values=with_avg,
        rank_counts=rank_counts,
        tau_samples=tau_samples,
        inversions=contradictions,
    )


def _powerless_families(
    pairwise: pd.DataFrame, alpha: float, rule: str, n_permutations: int
) -> tuple[str, ...]:
    """Warn where no pair can be significant, so every model is a co-winner by construction.

    With n paired cases the smallest one-sided p is :math:`2^{-n}` (all differences of one
    sign: exact Wilcoxon, exact permutation), and a Monte-Carlo permutation p is at least
    :math:`1 / (B + 1)`; Holm multiplies the smallest p of a family of K ordered pairs by K:
    no test of the family can reach α when :math:`K \\cdot p_{min} > α`.
    """
    if pairwise.empty:
        return ()
    fam = pairwise.groupby(["dataset", "structure", "metric"]).agg(
        k=("model_a", "size"), n=("n_paired", "max")
    )
    p_min = np.exp2(-fam["n"].astype(float))
    if rule != "touchstone":
        p_min = np.maximum(p_min, 1.0 / (n_permutations + 1))
    floor = np.minimum(1.0, fam["k"] * p_min)
    weak = fam[floor > alpha]
    if weak.empty:
        return ()
    worst = weak.loc[floor[weak.index].idxmax()]
    budget = (
        f" or raise the permutation budget (now {n_permutations})"
        if rule != "touchstone" and 1.0 / (n_permutations + 1) * worst["k"] > alpha
        else ""
    )
    return (
        f"Too few cases for any significant difference in {len(weak)} of {len(fam)} "
        f"(dataset, structure) families: with n = {int(worst['n'])} paired cases and "
        f"{int(worst['k'])} ordered pairs the smallest attainable Holm-adjusted p is "
        f"{float(floor[weak.index].max()):.3g} > alpha = {alpha}, so every model there is a "
        f"co-winner by construction. Add cases{budget} before reading the winners.",
    )


def _powerless_pairs(
    aggregates: pd.DataFrame, pairwise: pd.DataFrame, alpha: float
) -> tuple[str, ...]:
    """Warn about co-winners that no test could have beaten: the best model and the co-winner
    differ on so few cases m that even the smallest p, :math:`2^{-m}`, times the K pairs of
    the family exceeds α (e.g. a model that misses a structure in 6 of 12 cases and equals
    the best on the rest)."""
    if pairwise.empty or "n_differing" not in pairwise.columns:
        return ()
    is_best = aggregates["best"].eq(True)
    won = aggregates.loc[aggregates["winner"].eq(True) & ~is_best]
    best = aggregates.loc[is_best, ["dataset", "structure", "metric", "model"]]
    if won.empty or best.empty:
        return ()
    fam = ["dataset", "structure", "metric"]
    k = pairwise.groupby(fam).size().rename("k").reset_index()
    pairs = (
        best.rename(columns={"model": "model_a"})
        .merge(won[[*fam, "model"]].rename(columns={"model": "model_b"}), on=fam)
        .merge(pairwise[[*fam, "model_a", "model_b", "n_differing"]], on=[*fam, "model_a",
                                                                         "model_b"])
        .merge(k, on=fam)
    )  # fmt: skip
    n_max = pairwise.groupby(fam)["n_paired"].max().rename("n_max").reset_index()
    pairs = pairs.merge(n_max, on=fam)
    # families where no pair at all can be significant are reported by _powerless_families
    whole = pairs["k"] * np.exp2(-pairs["n_max"].astype(float)) > alpha
    weak = pairs[~whole & (pairs["k"] * np.exp2(-pairs["n_differing"].astype(float)) > alpha)]
    if weak.empty:
        return ()
    examples = ", ".join(
        f"{r.model_b} on {r.structure} ({r.metric}, {int(r.n_differing)} cases)"
        for r in weak.drop_duplicates(["model_b", "structure", "metric"]).head(4).itertuples()
    )
    return (
        f"{len(weak.drop_duplicates([*fam, 'model_b']))} co-winner(s) differ from the best "
        f"model on too few cases for any test to reach alpha = {alpha} after Holm, e.g. "
        f"{examples}: a 🏆 there means 'not enough evidence', not 'as good'. Add cases.",
    )


def _mean_of_means_ci(
    values: pd.DataFrame, n_bootstrap: int, seed: int, confidence: float = 0.95
) -> pd.DataFrame:
    """Percentile CI of the mean of per-structure means, resampling cases (paired).

    Cases are resampled once per dataset, the same for every model and structure; each
    resample's structure means (over the drawn cases that have a value) are averaged.
    """
    rows = []
    for (dataset, metric), part in values.groupby(["dataset", "metric"], sort=True):
        wide = part.pivot_table(
            index="case_id", columns=["model", "structure"], values="value", aggfunc="first"
        )
        boot = paired_bootstrap_means(wide.to_numpy(), n_resamples=n_bootstrap, seed=seed)
        per = pd.DataFrame(boot, columns=wide.columns)
        by_model = per.T.groupby(level="model").mean().T  # mean over structures, per resample
        lo, hi = (1 - confidence) / 2, 1 - (1 - confidence) / 2
        for model in by_model.columns:
            col = by_model[model].dropna()
            rows.append({"dataset": dataset, "model": model, "structure": AVERAGE,
                         "metric": metric, "ci_low": col.quantile(lo),
                         "ci_high": col.quantile(hi)})  # fmt: skip
    return pd.DataFrame(rows)


def _contamination(
    values: pd.DataFrame, changes: pd.DataFrame, training: Mapping[str, Collection[str]]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """Drop training cases; list (model, dataset) pairs trained on; count and explain both."""
    datasets = set(values["dataset"])
    pairs, cases, notes = [], [], []
    for model, entries in training.items():
        for entry in entries:
            name, sep, case = str(entry).partition(":")
            if name not in datasets:
                continue
            if sep:
                cases.append((model, name, case))
            else:
                pairs.append((model, name))
                notes.append(
                    f"{model} was trained on {name} (model card): shown, but not tested or ranked."
                )
    changes = changes.assign(n_contaminated=0)
    if cases:
        drop = pd.DataFrame(cases, columns=["model", "dataset", "case_id"]).assign(_drop=True)
        marked = values.merge(drop, on=["model", "dataset", "case_id"], how="left")
        hit = marked["_drop"].eq(True).to_numpy()
        counts = values[hit].groupby(["dataset", "model", "structure", "metric"]).size()
        changes = changes.set_index(["dataset", "model", "structure", "metric"])
        changes["n_contaminated"] = counts.reindex(changes.index, fill_value=0).to_numpy()
        changes = changes.reset_index()
        values = values[~hit]
        for (model, dataset), n in drop.groupby(["model", "dataset"]).size().items():
            notes.append(
                f"{model}: {n} case(s) of {dataset} are in its training data (model card); "
                "they were excluded from its values."
            )
    excluded = pd.DataFrame(sorted(set(pairs)), columns=["model", "dataset"])
    return values, changes, excluded, notes


def _cap_infinite(
    part: pd.DataFrame, metric: str, worst_values: Mapping[str, float] | None
) -> tuple[pd.DataFrame, int]:
    """Replace ±inf values (an empty mask's distances) by the metric's worst value.

    Means, bootstrap, rank and rank-sum tests cannot treat +inf consistently, so a distance
    metric with infinite values needs a finite cap (DESIGN §4: e.g. the image diagonal).
    """
    infinite = np.isinf(part["value"].to_numpy(dtype=np.float64))
    n = int(infinite.sum())
    if not n:
        return part, 0
    cap = (worst_values or {}).get(metric)
    if cap is None or not np.isfinite(cap):
        raise InputError(
            f"Metric {metric!r} has {n} infinite value(s) (empty predictions or references); "
            f"give it a finite worst value, e.g. --worst-value {metric}=500 (the image diagonal "
            "in mm), so statistics can use it."
        )
    return part.assign(value=np.where(infinite, float(cap), part["value"])), n
