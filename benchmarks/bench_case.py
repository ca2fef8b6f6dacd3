"""Time one whole CT-sized case as `assay score` processes it: read time vs metric time.

Writes a synthetic 512×512×400 case (spacing 0.8×0.8×1.5 mm, 9 structures) as per-structure
.nii.gz files (layout A) for the reference and a `boundary_noise` prediction, then measures:

* read: reading and validating all 18 masks (``read_image`` + ``binary_mask``);
* metrics: all metrics of the profile for the 9 structures on in-memory masks;
* case: ``score_case`` end to end (what a worker does per case), and its peak RSS, measured
  first in a fresh process.

Usage: ``python benchmarks/bench_case.py [--profile default|touchstone] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from assay.datasets import discover_cases
from assay.io import binary_mask, read_image, write_image
from assay.metrics import get_profile, structure_metrics
from assay.scoring import CaseTask, score_case
from assay.synthetic import STRUCTURES, make_phantom, simulate_prediction

SHAPE = (512, 512, 400)
SPACING = (0.8, 0.8, 1.5)


def write_case(root: Path) -> None:
    phantom = make_phantom(7, shape=SHAPE, spacing_mm=SPACING)
    pred = simulate_prediction(phantom, "boundary_noise", seed=7)
    for value, name in enumerate(STRUCTURES, start=1):
        write_image(root / "ref/ct_case/segmentations" / f"{name}.nii.gz",
                    (phantom.labels == value).astype(np.uint8), phantom.affine)  # fmt: skip
        write_image(root / "pred/ct_case" / f"{name}.nii.gz",
                    (pred == value).astype(np.uint8), phantom.affine)  # fmt: skip


def _task(root: Path, profile: str) -> CaseTask:
    ref = discover_cases(root / "ref")["ct_case"]
    pred = discover_cases(root / "pred", role="prediction")["ct_case"]
    return CaseTask("ct_case", ref, pred, tuple(sorted(STRUCTURES)), get_profile(profile))


def measure(root: Path, profile: str) -> dict[str, float]:
    """Run in a fresh process: read, metrics and whole-case times, and peak RSS."""
    task = _task(root, profile)
    t0 = time.perf_counter()
    record = score_case(task)
    case = time.perf_counter() - t0
    assert record.status == "ok", record.message
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # score_case only
    t0 = time.perf_counter()
    masks = {}
    for side, src in (("ref", task.reference), ("pred", task.prediction)):
        for s, path in src.files.items():  # type: ignore[union-attr]
            masks[side, s] = binary_mask(read_image(path), what=s)
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in task.structures:
        structure_metrics(masks["pred", s], masks["ref", s], SPACING, task.profile, structure=s)
    metrics = time.perf_counter() - t0
    return {"read_s": read, "metrics_s": metrics, "case_s": case, "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--keep", type=Path, help="write the case here and keep it")
    parser.add_argument("--_measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure, args.profile)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        write_case(root)
        print(f"wrote a 9-structure {SHAPE} case in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run(
            [sys.executable, __file__, "--profile", args.profile, "--_measure", str(root)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"profile {args.profile}: 18 masks of {SHAPE} (9 structures, reference + prediction)")
    print(f"  read + validate all masks : {r['read_s']:6.2f} s")
    print(f"  all metrics, 9 structures : {r['metrics_s']:6.2f} s "
          f"({r['metrics_s'] / r['read_s']:.2f} × read time)")  # fmt: skip
    print(f"  score_case end to end     : {r['case_s']:6.2f} s")
    print(f"  peak RSS of score_case    : {r['peak_rss_mb']:6.0f} MB")


if __name__ == "__main__":
    main()
