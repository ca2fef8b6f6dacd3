"""Whole benchmark runs from one configuration file (DESIGN.md §6): ``assay run``.

* :func:`load_benchmark` — read and validate ``BENCHMARK.yaml`` before any work;
* :func:`run_benchmark` — predictions (running models), scoring, analysis, report;
* :func:`spot_check` — flag a misaligned model on its first cases.
"""

from assay.runs._config import Benchmark, SpotCheck, load_benchmark
from assay.runs._pipeline import ModelOutcome, RunSummary, run_benchmark
from assay.runs._spot_check import SpotCheckResult, spot_check

__all__ = [
    "Benchmark",
    "ModelOutcome",
    "RunSummary",
    "SpotCheck",
    "SpotCheckResult",
    "load_benchmark",
    "run_benchmark",
    "spot_check",
]
