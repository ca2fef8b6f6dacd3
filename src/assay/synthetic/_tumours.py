"""A synthetic tumour-detection benchmark: phantoms with tumours, and detection models.

Each patient is a :func:`~assay.synthetic.make_phantom` abdomen on a 2 × 2 × 3 mm grid.
Two patients in three carry one to three spherical-ish tumours inside the liver, pancreas or
a kidney (diameters 4–40 mm, several below 10 mm); the rest are tumour-free controls. Six
simulated detection models have distinct profiles (:data:`DETECTION_MODELS`). Everything is
deterministic for a seed.

Layout (label maps; ``dataset.json`` names the tumour labels)::

    out/dataset.json
    out/reference/<case>.nii.gz
    out/predictions/<model>/<case>.nii.gz
    out/probabilities/<model>/<case>/<tumour type>.nii.gz   (models that write maps)
    out/tumours.csv                                          (the planted tumours)
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from assay.errors import InputError
from assay.io import write_image
from assay.synthetic._phantom import Phantom, make_phantom

#: Tumour type -> (label value in the label maps, organs it grows in).
TUMOUR_TYPES: Final[dict[str, tuple[int, tuple[str, ...]]]] = {
    "liver_tumor": (1, ("liver",)),
    "pancreas_tumor": (2, ("pancreas",)),
    "kidney_tumor": (3, ("kidney_left", "kidney_right")),
}

DETECTION_MODELS: Final[dict[str, str]] = {
    "near_perfect": "Every tumour, boundaries within a voxel; no false positives.",
    "finds_large": "Only tumours of 10 mm or more; small ones are missed.",
    "sensitive_fp": "Every tumour, slightly dilated, plus one or two false positives per patient.",
    "probabilistic": "Probability maps (confident on large tumours, unsure on small ones, "
    "low-probability false positives); its mask is p > 0.5.",
    "splits_lesions": "Tumours of 12 mm or more come out as two pieces (a slab missing).",
    "merges_neighbours": "Tumours of one organ closer than 25 mm are joined into one lesion.",
}
"""Simulated detection model -> its error profile."""

_SHAPE: Final = (160, 128, 100)
_SPACING: Final = (2.0, 2.0, 3.0)


@dataclass(frozen=True)
class TumourBenchmarkPaths:
    """Where :func:`write_tumour_benchmark` wrote things."""

    root: Path
    reference: Path
    labels: Path
    predictions: dict[str, Path]
    probabilities: dict[str, Path]
    tumours: Path


@dataclass(frozen=True)
class _Tumour:
    structure: str
    centre: tuple[float, float, float]  # voxel coordinates
    diameter_mm: float


def write_tumour_benchmark(
    out_dir: str | Path, *, n_cases: int = 45, seed: int = 0
) -> TumourBenchmarkPaths:
    """Write the benchmark (see the module docstring) and return its paths.

    Raises
    ------
    InputError
        For fewer than 3 cases.
    """
    if n_cases < 3:
        raise InputError(f"A tumour benchmark needs at least 3 cases, got {n_cases}.")
    root = Path(out_dir)
    reference = root / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    labels = root / "dataset.json"
    labels.write_text(
        json.dumps(
            {"labels": {"background": 0, **{k: v[0] for k, v in TUMOUR_TYPES.items()}}},
            indent=2,
        )
    )
    predictions = {m: root / "predictions" / m for m in DETECTION_MODELS}
    probabilities = {"probabilistic": root / "probabilities" / "probabilistic"}
    rows = []
    for i in range(n_cases):
        case = f"patient_{i + 1:03d}"
        phantom = make_phantom(seed * 1_000_000 + 500_000 + i, shape=_SHAPE, spacing_mm=_SPACING)
        rng = np.random.default_rng([seed, i, 7])
        tumours = _plant(phantom, rng, positive=i % 3 != 2)
        ref = _paint(tumours, phantom.labels.shape)
        write_image(reference / f"{case}.nii.gz", ref, phantom.affine)
        for t in tumours:
            rows.append(f"{case},{t.structure},{t.diameter_mm:.1f}")
        for model, folder in predictions.items():
            mrng = np.random.default_rng([seed, i, zlib.crc32(model.encode())])
            pred, prob = _simulate(model, tumours, phantom, mrng)
            folder.mkdir(parents=True, exist_ok=True)
            write_image(folder / f"{case}.nii.gz", pred, phantom.affine)
            if prob is not None:
                for structure, p in prob.items():
                    target = probabilities[model] / case / f"{structure}.nii.gz"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_image(target, p.astype(np.float32), phantom.affine)
    tumours_csv = root / "tumours.csv"
    tumours_csv.write_text("case_id,structure,diameter_mm\n" + "\n".join(rows) + "\n")
    return TumourBenchmarkPaths(root, reference, labels, predictions, probabilities, tumours_csv)


def _plant(phantom: Phantom, rng: np.random.Generator, *, positive: bool) -> list[_Tumour]:
    """1-3 tumours inside organs for a positive patient (none for a control); a second
    tumour grows within 30 mm of the first, in the same organ."""
    if not positive:
        return []
    n = int(rng.choice([1, 1, 2, 3]))
    out: list[_Tumour] = []
    types = list(TUMOUR_TYPES)
    for k in range(n):
        structure = types[int(rng.integers(len(types)))] if k == 0 else out[0].structure
        if k == 2:
            structure = types[int(rng.integers(len(types)))]
        organs = TUMOUR_TYPES[structure][1]
        organ = organs[int(rng.integers(len(organs)))]
        inside = np.argwhere(phantom.mask(organ))
        if len(inside) == 0:
            continue
        diameter = float(np.exp(rng.uniform(math.log(4.0), math.log(40.0))))
        if structure == "pancreas_tumor":
            diameter = min(diameter, 25.0)
        if k == 1 and out:  # a neighbour of the first tumour, in the same organ
            near = inside[
                np.linalg.norm((inside - np.array(out[0].centre)) * _SPACING, axis=1) < 30.0
            ]
            inside = near if len(near) else inside
        centre = inside[int(rng.integers(len(inside)))].astype(float)
        out.append(_Tumour(structure, (centre[0], centre[1], centre[2]), diameter))
    return out


def _box(t: _Tumour, shape: tuple[int, ...], radius_mm: float) -> tuple[slice, ...]:
    """Voxel box holding a ball of ``radius_mm`` around the tumour centre (plus 2 voxels)."""
    return tuple(
        slice(max(math.floor(c - radius_mm / s) - 2, 0), min(math.ceil(c + radius_mm / s) + 3, n))
        for c, s, n in zip(t.centre, _SPACING, shape, strict=True)
    )


def _local_ball(t: _Tumour, box: tuple[slice, ...], scale: float = 1.0) -> NDArray[np.bool_]:
    """The tumour's ball (diameter x ``scale``) inside ``box``; at least its centre voxel."""
    r = t.diameter_mm * scale / 2.0
    grid = np.ogrid[box]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, t.centre, _SPACING, strict=True))
    ball = np.asarray(d2 <= r * r)
    if not ball.any():  # a tumour smaller than a voxel is one voxel
        ball[tuple(round(c) - b.start for c, b in zip(t.centre, box, strict=True))] = True
    return ball


def _paint(tumours: list[_Tumour], shape: tuple[int, ...]) -> NDArray[np.uint8]:
    out = np.zeros(shape, dtype=np.uint8)
    for t in tumours:
        box = _box(t, shape, t.diameter_mm / 2.0)
        out[box][_local_ball(t, box)] = TUMOUR_TYPES[t.structure][0]
    return out


def _simulate(
    model: str, tumours: list[_Tumour], phantom: Phantom, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], dict[str, NDArray[np.float64]] | None]:
    """One model's label-map prediction (and probability maps, for ``probabilistic``)."""
    shape = phantom.labels.shape
    pred = np.zeros(shape, dtype=np.uint8)
    prob: dict[str, NDArray[np.float64]] | None = None
    if model == "probabilistic":
        prob = {s: np.zeros(shape) for s in TUMOUR_TYPES}
    for t in tumours:
        value = TUMOUR_TYPES[t.structure][0]
        if model == "finds_large" and t.diameter_mm < 10.0:
            continue
        scale = 1.15 if model == "sensitive_fp" else 1.0
        box = _box(t, shape, t.diameter_mm * scale / 2.0 + 4.0)
        ball = _local_ball(t, box, scale)
        if model == "near_perfect":
            edge = ball ^ ndimage.binary_erosion(ball)
            ball &= ~(edge & (rng.random(ball.shape) < 0.2))
        if model == "splits_lesions" and t.diameter_mm >= 12.0:
            k = round(t.centre[2]) - box[2].start
            ball[:, :, max(k - 1, 0) : k + 1] = False
        if prob is not None:
            confidence = 0.95 if t.diameter_mm >= 10 else float(rng.uniform(0.35, 0.8))
            core = np.clip(ndimage.gaussian_filter(ball.astype(float), 1.0) / 0.5, 0.0, 1.0)
            prob[t.structure][box] = np.maximum(prob[t.structure][box], core * confidence)
            continue
        local = pred[box]
        local[ball & (local == 0)] = value
    if model == "merges_neighbours":
        for a in tumours:
            for b in tumours:
                if a is b or a.structure != b.structure:
                    continue
                pa = [x * s for x, s in zip(a.centre, _SPACING, strict=True)]
                pb = [x * s for x, s in zip(b.centre, _SPACING, strict=True)]
                if math.dist(pa, pb) < 25.0:
                    _bridge(pred, a, b, TUMOUR_TYPES[a.structure][0])
    if model in ("sensitive_fp", "probabilistic"):
        n_fp = int(rng.integers(1, 3)) if model == "sensitive_fp" else int(rng.integers(0, 3))
        for _ in range(n_fp):
            structure = list(TUMOUR_TYPES)[int(rng.integers(len(TUMOUR_TYPES)))]
            organ = TUMOUR_TYPES[structure][1][0]
            inside = np.argwhere(phantom.mask(organ))
            if len(inside) == 0:
                continue
            c = inside[int(rng.integers(len(inside)))].astype(float)
            fake = _Tumour(structure, (c[0], c[1], c[2]), float(rng.uniform(5.0, 12.0)))
            box = _box(fake, shape, fake.diameter_mm / 2.0)
            ball = _local_ball(fake, box)
            if prob is not None:
                p = float(rng.uniform(0.3, 0.6))
                prob[structure][box] = np.maximum(prob[structure][box], ball * p)
            else:
                local = pred[box]
                local[ball & (local == 0)] = TUMOUR_TYPES[structure][0]
    if prob is not None:
        for structure, p_map in prob.items():
            pred[(p_map > 0.5) & (pred == 0)] = TUMOUR_TYPES[structure][0]
    return pred, prob


def _bridge(pred: NDArray[np.uint8], a: _Tumour, b: _Tumour, value: int) -> None:
    """Paint a tube of 4 mm diameter from one tumour centre to the other."""
    for f in np.linspace(0.0, 1.0, 40):
        c = tuple(x + f * (y - x) for x, y in zip(a.centre, b.centre, strict=True))
        step = _Tumour(a.structure, (c[0], c[1], c[2]), 4.0)
        box = _box(step, pred.shape, 2.0)
        pred[box][_local_ball(step, box)] = value
