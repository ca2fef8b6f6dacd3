"""Time the full analysis at Touchstone's private-set scale.

A synthetic per-case table: 20 models x 10 structures x 2 metrics (dsc, nsd) x 5,160 cases
(Beta-distributed scores with model effects; 3 models miss 5 % of cases; about 8 % of
(case, structure) pairs not applicable), case metadata with 6 groupings. Then
``assay.stats.analyze`` for each metric: policy, aggregates, 2,000 paired bootstrap
resamples (CIs and rank stability), the default mean-rule sign-flip permutation tests and
Touchstone's one-sided Wilcoxon for all ordered pairs with Holm,
winners, rankings, and 6 subgroup groupings. Prints the time of each stage and the total.

Usage: ``python benchmarks/bench_stats.py [--cases 5160] [--models 20] [--bootstrap 2000]
[--stages-only]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from assay.stats import (
    aggregate,
    analyze,
    apply_policy,
    bootstrap_ci,
    case_averages,
    pairwise_tests,
    pairwise_wilcoxon,
    rank_stability,
    rankings,
    subgroup_analysis,
    winners,
)

STRUCTURES = ("aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas",
              "postcava", "spleen", "stomach", "bladder")  # fmt: skip
GROUPS = {
    "sex": "sex",
    "age": "age:decades",
    "scanner": "scanner",
    "site": "site",
    "contrast": "contrast",
    "older_women": {"older_women": 'sex == "F" and age >= 60'},
}


def synthetic_scores(n_cases: int, n_models: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cases = [f"c{i:05d}" for i in range(n_cases)]
    frames = []
    not_applicable = rng.random((n_cases, len(STRUCTURES))) < 0.08
    for m in range(n_models):
        skill = 6 + 4 * m / max(1, n_models - 1)
        missing = rng.random(n_cases) < (0.05 if m % 7 == 3 else 0.0)
        for metric in ("dsc", "nsd"):
            values = rng.beta(skill, 1.2, size=(n_cases, len(STRUCTURES)))
            status = np.where(not_applicable, "empty_reference", "ok").astype(object)
            status[missing] = "missing_prediction"
            values = np.where(status == "ok", values, np.nan)
            frames.append(pd.DataFrame({
                "dataset": "private", "model": f"model_{m:02d}",
                "case_id": np.repeat(cases, len(STRUCTURES)),
                "structure": np.tile(STRUCTURES, n_cases), "metric": metric,
                "value": values.ravel(), "status": status.ravel(),
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def synthetic_metadata(n_cases: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    return pd.DataFrame({
        "case_id": [f"c{i:05d}" for i in range(n_cases)],
        "sex": rng.choice(["F", "M"], n_cases),
        "age": rng.integers(18, 90, n_cases),
        "scanner": rng.choice(["GE", "Siemens", "Philips", "Toshiba"], n_cases),
        "site": rng.choice([f"site{i}" for i in range(8)], n_cases),
        "contrast": rng.choice(["arterial", "venous", "none"], n_cases),
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5160)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument(
        "--stages-only", action="store_true", help="skip the end-to-end analyze() timing"
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    scores = synthetic_scores(args.cases, args.models)
    metadata = synthetic_metadata(args.cases)
    shape = f"{args.models} models x {len(STRUCTURES)} structures x 2 metrics x {args.cases:,}"
    built = time.perf_counter() - t0
    print(f"table: {len(scores):,} rows ({shape} cases), built in {built:.1f} s")

    stages: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = fn(*a, **kw)
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t
        return out

    for metric in ("dsc", "nsd"):
        part = scores[scores["metric"] == metric]
        values, _ = timed("policy (worst)", apply_policy, part, policy="worst")
        agg = timed("aggregates", aggregate, values)
        with_avg = timed("per-case averages", lambda v: pd.concat([v, case_averages(v)]), values)
        timed("bootstrap CIs", bootstrap_ci, with_avg, n_resamples=args.bootstrap)
        pw = timed("pairwise mean permutation + Holm", pairwise_tests, with_avg)
        timed("pairwise Wilcoxon + Holm (touchstone rule)", pairwise_wilcoxon, with_avg)
        timed("winners", winners, agg, pw)
        timed("rankings", rankings, with_avg, agg, pw)
        timed("rank stability", rank_stability, with_avg, n_resamples=args.bootstrap)
        timed("subgroups (6 groupings)", subgroup_analysis, values, metadata, GROUPS)
    for name, seconds in stages.items():
        print(f"  {name:<44} {seconds:7.2f} s")
    print(f"  {'sum of stages':<44} {sum(stages.values()):7.2f} s")
    core = sum(stages[k] for k in ("bootstrap CIs", "pairwise mean permutation + Holm"))
    print(f"  {'bootstrap CIs + mean-rule tests':<44} {core:7.2f} s (goal < 10 s)")
    if args.stages_only:
        return

    t = time.perf_counter()
    for metric in ("dsc", "nsd"):
        analyze(scores, metric=metric, n_bootstrap=args.bootstrap, metadata=metadata,
                groups=GROUPS)  # fmt: skip
    total = time.perf_counter() - t
    verdict = "MET" if total < 60 else "NOT MET"
    print(f"assay.stats.analyze, both metrics, end to end: {total:.1f} s (goal < 60 s: {verdict})")


if __name__ == "__main__":
    main()
