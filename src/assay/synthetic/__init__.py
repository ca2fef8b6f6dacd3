"""Synthetic abdomen-like CT phantoms, simulated models and a small on-disk benchmark.

Everything here is deterministic for a given seed, so tests, ``assay demo`` and performance
benchmarks can generate their data instead of downloading it.
"""

from assay.synthetic._benchmark import BenchmarkPaths, write_benchmark
from assay.synthetic._models import MODELS, simulate_prediction
from assay.synthetic._phantom import LABELS, PAINT_ORDER, STRUCTURES, Phantom, make_phantom
from assay.synthetic._tumours import (
    DETECTION_MODELS,
    TUMOUR_TYPES,
    TumourBenchmarkPaths,
    write_tumour_benchmark,
)

__all__ = [
    "DETECTION_MODELS",
    "LABELS",
    "MODELS",
    "PAINT_ORDER",
    "STRUCTURES",
    "TUMOUR_TYPES",
    "BenchmarkPaths",
    "Phantom",
    "TumourBenchmarkPaths",
    "make_phantom",
    "simulate_prediction",
    "write_benchmark",
    "write_tumour_benchmark",
]
