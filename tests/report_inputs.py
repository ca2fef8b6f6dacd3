"""A small, fixed benchmark of per-case scores for report tests (no images needed).

Four models of distinct quality on 24 cases and three structures, Dice and NSD, with one
missing prediction, case metadata (sex, age) and model cards, analysed with B = 200.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assay.datasets import DatasetCard
from assay.models import ModelCard
from assay.report._data import ReportData
from assay.stats import analyze

MODELS = {"alpha": 0.92, "beta": 0.90, "gamma": 0.80, "delta": 0.60}
STRUCTURES = ("liver", "spleen", "pancreas")
N_CASES = 24


def make_scores(seed: int = 7) -> pd.DataFrame:
    """Long per-case rows like ``ResultStore.scores`` returns."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, level in MODELS.items():
        for i in range(N_CASES):
            case = f"case_{i:03d}"
            for s, structure in enumerate(STRUCTURES):
                for metric in ("dsc", "nsd"):
                    if model == "delta" and i == 0:
                        rows.append((model, case, structure, metric, np.nan, "missing_prediction"))
                        continue
                    value = float(np.clip(level - 0.05 * s + rng.normal(0, 0.04), 0, 1))
                    rows.append((model, case, structure, metric, value, "ok"))
    frame = pd.DataFrame(
        rows, columns=["model", "case_id", "structure", "metric", "value", "status"]
    )
    frame.insert(0, "dataset", "toy")
    frame.insert(0, "run_id", "run-" + frame["model"])
    frame["message"] = ""
    frame["profile"] = "default"
    return frame


def make_metadata() -> pd.DataFrame:
    cases = [f"case_{i:03d}" for i in range(N_CASES)]
    return pd.DataFrame(
        {
            "case_id": cases,
            "sex": ["F" if i % 2 else "M" for i in range(N_CASES)],
            "age": [30 + 2 * i for i in range(N_CASES)],
            "dataset": "toy",
        }
    )


def make_cards() -> dict[str, ModelCard]:
    return {
        m: ModelCard(
            name=m,
            organisation=f"{m.title()} Lab",
            paper=f"https://arxiv.org/abs/0000.{i:05d}",
            code=f"https://github.com/example/{m}",
        )
        for i, m in enumerate(MODELS)
    }


def make_report_data(n_bootstrap: int = 200) -> ReportData:
    scores = make_scores()
    options = {
        "metrics": ["dsc", "nsd"],
        "policy": "worst",
        "aggregation": "default",
        "n_bootstrap": n_bootstrap,
        "seed": 0,
        "ci_method": "percentile",
        "alpha": 0.05,
        "groups": {"sex": "sex"},
        "min_group_size": 5,
        "correction": "bonferroni",
    }
    analyses = {
        metric: analyze(
            scores,
            metric=metric,
            n_bootstrap=n_bootstrap,
            metadata=make_metadata(),
            groups={"sex": "sex"},
            min_group_size=5,
        )
        for metric in ("dsc", "nsd")
    }
    speed = pd.DataFrame(
        {
            "dataset": "toy",
            "model": list(MODELS),
            "n_cases": N_CASES,
            "seconds": [120.0, 60.0, 30.0, 300.0],
            "volume_cm3": 24 * 9000.0,
        }
    )
    speed["cm3_per_s"] = speed["volume_cm3"] / speed["seconds"]
    runs = pd.DataFrame(
        {
            "run_id": [f"run-{m}" for m in MODELS],
            "dataset": "toy",
            "model": list(MODELS),
            "profile": "default",
            "manifest": [
                {"protocol": {"profile": "default", "nsd_tolerance_mm": 2.0}} for _ in MODELS
            ],
        }
    )
    return ReportData(
        title="Toy benchmark",
        analyses=analyses,
        scores=scores,
        cards=make_cards(),
        datasets={"toy": DatasetCard(name="toy", licence="CC0-1.0", citation="Toy et al. 2026")},
        runs=runs,
        speed=speed,
        options=options,
        software={"assay": "0.1.0", "numpy": np.__version__},
    )


def exit_in_helper(task: int) -> int:
    """``task`` unchanged in the main process; in a spawned helper, end the process (a helper
    that dies, e.g. killed for memory)."""
    import multiprocessing
    import os

    if multiprocessing.parent_process() is not None:
        os._exit(3)
    return task
