"""Scoring throughput (cases per minute) on CT-sized cases: 1 and 2 local workers, and a
two-worker Dask LocalCluster.

    .venv/bin/python benchmarks/bench_throughput.py [--cases 6] [--shape 512 512 400]

Writes a synthetic benchmark of ``--cases`` phantoms (nine structures each, one simulated
model) once, then scores it three times into fresh SQLite databases and prints cases/min.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from assay.scoring import score
from assay.store import ResultStore
from assay.synthetic import write_benchmark


def _time(label: str, bench, folder: Path, **kwargs) -> float:
    store = ResultStore(folder / f"{label}.db")
    start = time.perf_counter()
    report = score(bench.reference, bench.predictions["near_perfect"], model="m",
                   dataset="d", store=store, **kwargs)  # fmt: skip
    seconds = time.perf_counter() - start
    rate = 60 * report.n_scored / seconds
    print(f"  {label:<28} {report.n_scored} cases in {seconds:6.1f} s = {rate:5.1f} cases/min")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 400))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    start = time.perf_counter()
    bench = write_benchmark(folder / "data", n_cases=args.cases, shape=tuple(args.shape),
                            spacing_mm=(0.8, 0.8, 1.5), models=("near_perfect",))  # fmt: skip
    print(f"{args.cases} cases of {tuple(args.shape)} voxels written in "
          f"{time.perf_counter() - start:.0f} s ({os.cpu_count()} CPUs)")  # fmt: skip
    _time("local, 1 worker", bench, folder, workers=1)
    _time("local, 2 workers", bench, folder, workers=2)
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:  # fmt: skip
        _time("Dask LocalCluster, 2 workers", bench, folder, scheduler=cluster.scheduler_address)


if __name__ == "__main__":
    main()
