"""Tumour-detection speed (issue 11): one CT-sized case, and a whole detection analysis.

1. **One case**: a 512 x 512 x 400 grid at 0.8 x 0.8 x 1.5 mm with 6 tumour types and 20
   reference lesions (3-40 mm), each type's prediction a shifted, partly missed copy plus a
   false positive, written as 12 ``.nii.gz`` files. Times reading the 12 masks (assay's
   reader) against :func:`assay.metrics.detect_lesions` for the 6 types (``atlas2`` and
   ``panoptica``), best of ``--repeats``.
2. **Analysis**: 20 models x 6 tumour types x ``--patients`` (10,000) patients, 2,000 paired
   bootstrap resamples, :func:`assay.stats.analyze_detection` end to end (summary with CIs,
   comparisons, sizes, sweep), from per-case rows and one reference-lesion row per tumour.

Run: ``.venv/bin/python benchmarks/bench_detection.py [--patients N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from assay.io import read_image, write_image
from assay.metrics import DETECTION_PROTOCOLS, detect_lesions
from assay.stats import analyze_detection

TYPES = (
    "pancreas_tumor",
    "liver_tumor",
    "kidney_tumor",
    "colon_tumor",
    "esophagus_tumor",
    "uterus_tumor",
)
SHAPE = (512, 512, 400)
SPACING = (0.8, 0.8, 1.5)


def _ball(mask: np.ndarray, centre: np.ndarray, diameter_mm: float) -> None:
    r = diameter_mm / 2
    lo = [max(int(c - r / s) - 1, 0) for c, s in zip(centre, SPACING, strict=True)]
    hi = [min(int(c + r / s) + 2, n) for c, s, n in zip(centre, SPACING, SHAPE, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    g = np.ogrid[box]
    d2 = sum(((x - c) * s) ** 2 for x, c, s in zip(g, centre, SPACING, strict=True))
    mask[box] |= d2 <= r * r


def one_case(repeats: int) -> None:
    rng = np.random.default_rng(0)
    affine = np.diag([*SPACING, 1.0])
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        n_lesions = 0
        for k, structure in enumerate(TYPES):
            ref = np.zeros(SHAPE, dtype=bool)
            pred = np.zeros(SHAPE, dtype=bool)
            for _ in range(4 if k < 2 else 3):
                centre = rng.uniform([60, 60, 40], [450, 450, 360])
                d = float(np.exp(rng.uniform(np.log(3), np.log(40))))
                _ball(ref, centre, d)
                n_lesions += 1
                if rng.random() < 0.8:
                    _ball(pred, centre + rng.uniform(-2, 2, 3), d * rng.uniform(0.8, 1.2))
            _ball(pred, rng.uniform([60, 60, 40], [450, 450, 360]), 8.0)
            for role, mask in (("ref", ref), ("pred", pred)):
                path = Path(tmp) / f"{role}_{structure}.nii.gz"
                write_image(path, mask.astype(np.uint8), affine)
                files.append(path)
        read_s = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            masks = {p.name: read_image(p).array != 0 for p in files}
            read_s.append(time.perf_counter() - t0)
        print(f"one case: {len(TYPES)} tumour types, {n_lesions} reference lesions")
        print(f"  read 12 masks (.nii.gz)          {min(read_s):7.3f} s")
        for name in ("atlas2", "panoptica"):
            proto = DETECTION_PROTOCOLS[name]
            det_s = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for structure in TYPES:
                    detect_lesions(
                        masks[f"pred_{structure}.nii.gz"],
                        masks[f"ref_{structure}.nii.gz"],
                        SPACING,
                        proto,
                    )
                det_s.append(time.perf_counter() - t0)
            ratio = min(read_s) / min(det_s)
            print(
                f"  detect_lesions x 6 ({name:9s})  {min(det_s):7.3f} s  "
                f"(reading takes {ratio:.1f}x as long)"
            )


def analysis(n_patients: int, n_models: int = 20) -> None:
    rng = np.random.default_rng(1)
    rows = []
    lesion_rows = []
    for structure in TYPES:
        positive = rng.random(n_patients) < 0.4
        n_tumours = np.where(positive, rng.integers(1, 4, n_patients), 0)
        diam = [rng.lognormal(2.7, 0.7, k) for k in n_tumours]
        for m in range(n_models):
            skill = 0.6 + 0.3 * m / n_models
            found = [rng.random(len(d)) < skill * (1 - np.exp(-d / 8)) for d in diam]
            tp = np.array([int(f.sum()) for f in found])
            fp = rng.poisson(0.2, n_patients)
            call = (tp > 0) | (fp > 0)
            score = np.where(
                positive, rng.beta(2 + 3 * skill, 2, n_patients), rng.beta(2, 4, n_patients)
            )
            frame = pd.DataFrame(
                {
                    "model": f"model_{m:02d}",
                    "case_id": np.arange(n_patients).astype(str),
                    "structure": structure,
                    "reference_positive": positive,
                    "patient_call": call,
                    "patient_score": score,
                    "tp": tp,
                    "fn": n_tumours - tp,
                    "fp": fp,
                    "n_predicted": tp + fp,
                    "ignored": 0,
                    "dice": np.where(positive, rng.uniform(0.3, 0.9, n_patients), np.nan),
                    "predicted_volume_ml": rng.exponential(2.0, n_patients) * call,
                }
            )
            rows.append(frame)
            case_of = np.repeat(np.arange(n_patients), n_tumours).astype(str)
            lesion_rows.append(
                pd.DataFrame(
                    {
                        "model": f"model_{m:02d}",
                        "case_id": case_of,
                        "structure": structure,
                        "diameter_mm": np.concatenate(diam),
                        "detected": np.concatenate(found),
                        "counted": True,
                        "confidence": np.nan,
                    }
                )
            )
    cases = pd.concat(rows, ignore_index=True)
    lesions = pd.concat(lesion_rows, ignore_index=True)
    print(
        f"analysis: {n_models} models x {len(TYPES)} tumour types x {n_patients} patients "
        f"({len(cases)} case rows, {len(lesions)} lesion rows), 2000 resamples"
    )
    t0 = time.perf_counter()
    result = analyze_detection(cases, lesions, n_resamples=2000, seed=0)
    seconds = time.perf_counter() - t0
    print(
        f"  analyze_detection end to end     {seconds:7.1f} s  (goal < 60 s: "
        f"{'met' if seconds < 60 else 'NOT met'}); {len(result.summary)} summary rows, "
        f"{len(result.comparisons)} comparisons"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-case", action="store_true")
    args = parser.parse_args()
    if not args.skip_case:
        one_case(args.repeats)
    analysis(args.patients)


if __name__ == "__main__":
    main()
