"""Time the full analysis at Touchstone's private-set scale.

A synthetic per-case table: 20 models x 10 structures x 2 metrics (dsc, nsd) x 5,160 cases
(Beta-distributed scores with model effects; 3 models miss 5 % of cases; about 8 % of
(case, structure) pairs not applicable), case metadata with 6 groupings. Then
``assay.stats.analyze`` for each metric: policy, aggregates, 2,000 paired bootstrap
resamples (CIs and rank stability), the default mean-rule sign-flip permutation tests and
Touchstone's one-sided Wilcoxon for all ordered pairs with Holm,
winners, rankings, and 6 subgroup groupings. Prints the time of each stage and the total.
The CIs and the rank stability share one resampling, as in ``analyze``.

With ``--touchstone DIR`` (the ``touchstone_totalsegmentator`` folder of ``../shared/data``)
it also imports the real Touchstone results (19 models x 743 cases) into a temporary SQLite
store and times ``analyze`` of dsc and nsd with the gender and age-decade groupings, as
``assay report --groups gender --groups age:decades`` runs it.

Usage: ``python benchmarks/bench_stats.py [--cases 5160] [--models 20] [--bootstrap 2000]
[--stages-only] [--touchstone ../shared/data/touchstone_totalsegmentator]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from assay.stats import (
    aggregate,
    analyze,
    apply_policy,
    case_averages,
    pairwise_tests,
    pairwise_wilcoxon,
    rankings,
    subgroup_analysis,
    winners,
)
from assay.stats._bootstrap import ci_table, iter_slices, slice_bootstrap_means
from assay.stats._stability import rank_tables

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


def bootstrap_cis(values: pd.DataFrame, n_resamples: int):  # type: ignore[no-untyped-def]
    """Slices, their paired bootstrap means and the CI table (``analyze``'s first steps)."""
    slices = list(iter_slices(values))
    boots = slice_bootstrap_means(slices, n_resamples=n_resamples, seed=0)
    ci = ci_table(slices, boots, n_resamples=n_resamples, seed=0, confidence=0.95,
                  method="percentile")  # fmt: skip
    return slices, boots, ci


def touchstone(folder: Path, n_resamples: int) -> None:
    """Import the Touchstone results into a temporary store and time analyze() on them."""
    from assay.models import load_model_cards
    from assay.report._collect import load_metadata, load_scores
    from assay.store import ResultStore, import_touchstone

    cards = load_model_cards(Path(__file__).parents[1] / "examples" / "touchstone_models.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "ts.db")
        import_touchstone(store, folder / "results", dataset="totalsegmentator", cards=cards,
                          metadata=folder / "metaTotalSeg.csv")  # fmt: skip
        scores = load_scores(store, ["totalsegmentator"], None)
        metadata = load_metadata(store, ["totalsegmentator"])
    groups = {"gender": "gender", "age:decades": "age:decades"}
    t = time.perf_counter()
    for metric in ("dsc", "nsd"):
        analyze(scores, metric=metric, n_bootstrap=n_resamples, metadata=metadata,
                groups=groups)  # fmt: skip
    total = time.perf_counter() - t
    print(f"Touchstone ({scores['model'].nunique()} models, {scores['case_id'].nunique()} cases), "
          f"analyze dsc + nsd with 2 groupings: {total:.1f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5160)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument(
        "--stages-only", action="store_true", help="skip the end-to-end analyze() timing"
    )
    parser.add_argument(
        "--touchstone", type=Path, help="touchstone_totalsegmentator folder: time analyze on it"
    )
    args = parser.parse_args()
    if args.touchstone is not None:
        touchstone(args.touchstone, args.bootstrap)
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
        slices, boots, _ = timed("bootstrap CIs", bootstrap_cis, with_avg, args.bootstrap)
        pw = timed("pairwise mean permutation + Holm", pairwise_tests, with_avg)
        timed("pairwise Wilcoxon + Holm (touchstone rule)", pairwise_wilcoxon, with_avg)
        timed("winners", winners, agg, pw)
        timed("rankings", rankings, with_avg, agg, pw)
        timed("rank stability", rank_tables, slices, boots, n_resamples=args.bootstrap)
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
