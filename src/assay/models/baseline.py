"""A small, real, runnable baseline model for the synthetic phantoms.

``assay-baseline predict -i CT.nii.gz -o OUT_DIR`` writes one 0/1 uint8 NIfTI per structure
(``OUT_DIR/<structure>.nii.gz``) on the input grid. It uses only intensity thresholds on a
median-filtered image, connected components (cc3d) and anatomical priors relative to the spine
(RAS+ world axes: +x is the patient's left, +y anterior). It is a deliberately simple
reference point for runners and leaderboards, not a clinical tool.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from assay.errors import AssayError
from assay.io import read_image, write_image

__all__ = ["STRUCTURES", "main", "segment"]

STRUCTURES = (
    "liver", "spleen", "kidney_left", "kidney_right", "gallbladder",
    "pancreas", "stomach", "aorta", "postcava",
)  # fmt: skip
Mask = NDArray[np.bool_]


def _components(mask: Mask, keep: Callable[[Mask], bool] = lambda c: True) -> Mask:
    """Largest 6-connected component of `mask` for which `keep(component)` holds."""
    labels: NDArray[np.unsignedinteger[Any]]
    labels, n = cc3d.connected_components(mask, connectivity=6, return_N=True)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())[1:]
    for index in np.argsort(sizes)[::-1]:
        component: Mask = labels == index + 1
        if keep(component):
            return component
    return np.zeros_like(mask)


def _fill(mask: Mask) -> Mask:
    """Close small gaps and fill holes slice by slice (axial slices: axis 2)."""
    closed = ndimage.binary_closing(mask, iterations=1, border_value=0) | mask
    filled: Mask = np.stack(
        [ndimage.binary_fill_holes(closed[:, :, k]) for k in range(mask.shape[2])], axis=2
    )
    return filled


def _grow(seed: Mask, allowed: Mask) -> Mask:
    """Add the `allowed` voxels that touch `seed` (recovers thin edges the median filter ate)."""
    grown: Mask = seed | (ndimage.binary_dilation(seed) & allowed)
    return grown


def segment(hu: NDArray[np.generic], affine: NDArray[np.float64]) -> dict[str, Mask]:
    """Segment the nine phantom structures of a CT (HU) array with a voxel -> RAS+ affine."""
    raw = np.asarray(hu, dtype=np.float32)
    image = ndimage.median_filter(raw, size=3)
    i, j, k = np.ogrid[: image.shape[0], : image.shape[1], : image.shape[2]]
    world = [
        (affine[a, 0] * i + affine[a, 1] * j + affine[a, 2] * k + affine[a, 3]) for a in (0, 1)
    ]
    body = _components(image > -500)
    body = np.stack([ndimage.binary_fill_holes(body[:, :, s]) for s in range(body.shape[2])], 2)
    spine = _components((image > 300) & body)
    if spine.any():
        centre = [float(np.mean(np.broadcast_to(w, image.shape)[spine])) for w in world]
    else:  # no bone: assume the spine lies behind the body centre
        centre = [float(np.mean(np.broadcast_to(w, image.shape)[body])) for w in world]
        centre[1] -= 60.0
    x, y = world[0] - centre[0], world[1] - centre[1]  # mm from the spine; +x left, +y anterior

    def mean_x(component: Mask) -> float:
        return float(np.mean(np.broadcast_to(x, image.shape)[component]))

    out: dict[str, Mask] = {}
    out["aorta"] = _components(
        (image > 175) & (image < 300) & body & (np.abs(x) < 50) & (y > 0) & (y < 80)
    )
    out["aorta"] = _grow(out["aorta"], (raw > 172) & (raw < 300))
    bright = (image > 110) & (image <= 175) & body & ~out["aorta"]
    kidneys = bright & (y < 70) & (np.abs(x) > 38)
    out["kidney_left"] = _fill(_components(kidneys, lambda c: mean_x(c) > 40))
    out["kidney_right"] = _fill(_components(kidneys, lambda c: mean_x(c) < -40))
    taken = out["aorta"] | out["kidney_left"] | out["kidney_right"]
    out["postcava"] = _components(bright & ~taken & (np.abs(x) < 45) & (y > 0) & (y < 90))
    out["postcava"] = _grow(out["postcava"], (raw > 110) & (raw < 180) & ~taken)
    taken |= out["postcava"]
    out["liver"] = _fill(_components((image >= 50) & (image < 90) & body & ~taken & (x < 30)))
    out["liver"] &= ~taken
    taken |= out["liver"]
    spleen = (image >= 44) & (image < 60) & body & ~taken & (x > 50) & (y < 70)
    out["spleen"] = _fill(_components(spleen)) & ~taken
    taken |= out["spleen"]
    air = _components((image < -500) & body)
    fluid = (image > 5) & (image < 32) & body & ~taken
    stomach = air | _components(fluid, lambda c: bool((ndimage.binary_dilation(air) & c).any()))
    out["stomach"] = _fill(stomach) & ~taken if air.any() else np.zeros_like(air)
    taken |= out["stomach"]
    gallbladder = (image > -10) & (image < 28) & body & ~taken & (x < 0) & (y > 50)
    near_liver = ndimage.binary_dilation(out["liver"], iterations=2)
    out["gallbladder"] = _fill(_components(gallbladder, lambda c: bool((c & near_liver).any())))
    out["gallbladder"] &= ~taken
    taken |= out["gallbladder"]
    pancreas = (image >= 38) & (image < 54) & body & ~taken & (np.abs(x) < 80) & (y > 35)
    out["pancreas"] = _components(pancreas & (y < 90))
    return {name: out[name] for name in STRUCTURES}


def predict(image_path: Path, out_dir: Path) -> list[Path]:
    """Segment `image_path` and write ``out_dir/<structure>.nii.gz`` (uint8 0/1)."""
    image = read_image(image_path)
    masks = segment(image.array, image.affine)
    return [
        write_image(out_dir / f"{name}.nii.gz", mask.astype(np.uint8), image.affine)
        for name, mask in masks.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``assay-baseline``."""
    parser = argparse.ArgumentParser(
        prog="assay-baseline",
        description="Threshold + connected-components baseline for assay's synthetic phantoms.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("predict", help="segment one CT image")
    run.add_argument("-i", "--input", required=True, type=Path, help="CT image (NIfTI, HU)")
    run.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    args = parser.parse_args(argv)
    try:
        predict(args.input, args.output)
    except AssayError as exc:
        print(f"assay-baseline: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
