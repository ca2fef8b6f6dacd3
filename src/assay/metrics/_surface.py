"""Surface-distance metrics from one pair of nearest-surface queries.

:func:`surface_distances` computes, once per structure, the directed distances between the
reference and predicted surfaces (voxel surfaces, and optionally DeepMind surfels with their
areas). Every surface metric and every tolerance is then a cheap reduction of those arrays:

* NSD ``surfel`` (DeepMind ``compute_surface_dice_at_tolerance``):
  (Σ area_R[d_R→P ≤ τ] + Σ area_P[d_P→R ≤ τ]) / (Σ area_R + Σ area_P).
* NSD ``voxel`` (MONAI ``compute_surface_dice``, Touchstone):
  (#{d_R→P ≤ τ} + #{d_P→R ≤ τ}) / (#R + #P) over voxel surfaces.
* HD = max of all voxel-surface distances.
* HD95 ``max`` (MONAI): max over the two directions of the 95th percentile (numpy ``linear``).
  ``pooled`` (MedPy ``hd95``): one percentile over both directions together.
  ``surfel`` (DeepMind ``compute_robust_hausdorff``): area-weighted percentile per direction.
* ASSD (MONAI ``symmetric=True``, MedPy 0.5.2 ``assd``) = mean of the pooled distances; MASD =
  mean of the two directed means (mean of MedPy ``asd`` both ways).

All functions assume both masks are non-empty; empty cases are handled by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from assay.errors import InputError
from assay.metrics._distances import Spacing, nearest_distances
from assay.metrics._edt import run_concurrently
from assay.metrics._geometry import (
    BoolArray,
    Box,
    neighbour_codes,
    padded_crop,
    surfel_area_table,
    voxel_surface,
)

FloatArray = NDArray[np.float64]
NSDVariant = Literal["surfel", "voxel"]
HD95Variant = Literal["max", "pooled", "surfel"]


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed nearest-surface distances (mm) between a reference R and a prediction P.

    ``ref_to_pred[i]`` is the distance from the i-th reference surface voxel (C order) to
    the predicted surface; likewise for the other arrays. Surfel arrays are None when not
    requested.
    """

    ref_to_pred: FloatArray
    pred_to_ref: FloatArray
    surfel_ref_to_pred: FloatArray | None = None
    surfel_pred_to_ref: FloatArray | None = None
    surfel_area_ref: FloatArray | None = None
    surfel_area_pred: FloatArray | None = None

    def _surfels(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        if (
            self.surfel_ref_to_pred is None
            or self.surfel_pred_to_ref is None
            or self.surfel_area_ref is None
            or self.surfel_area_pred is None
        ):
            raise InputError(
                "Surfel distances were not computed; call surface_distances(..., surfels=True)."
            )
        return (
            self.surfel_ref_to_pred,
            self.surfel_pred_to_ref,
            self.surfel_area_ref,
            self.surfel_area_pred,
        )


def surface_distances(
    pred: BoolArray,
    ref: BoolArray,
    spacing_mm: Spacing,
    *,
    box: Box,
    voxels: bool = True,
    surfels: bool = True,
) -> SurfaceDistances:
    """Directed surface distances between ``ref`` and ``pred`` inside ``box``.

    Parameters
    ----------
    pred, ref : bool 3-D arrays of the same shape (not modified).
    spacing_mm : voxel spacing in mm, array-axis order.
    box : a box holding every True voxel of both masks (e.g. their union bounding box).
    voxels, surfels : which surface definitions to compute.
    """
    p = padded_crop(pred, box)
    r = padded_crop(ref, box)
    empty = np.empty(0)
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))

    def voxel_sets() -> tuple[BoolArray, BoolArray]:
        return voxel_surface(r), voxel_surface(p)

    def surfel_sets() -> tuple[BoolArray, BoolArray, FloatArray, FloatArray]:
        cr, cp = neighbour_codes(r), neighbour_codes(p)
        br = (cr != 0) & (cr != 255)
        bp = (cp != 0) & (cp != 255)
        table = surfel_area_table(spacing)
        return br, bp, table[cr.ravel()[np.flatnonzero(br)]], table[cp.ravel()[np.flatnonzero(bp)]]

    # Surfaces first, then the (up to four) directed queries, on two or more threads where
    # numba allows it (:func:`run_concurrently`); the heavier surfel queries go first.
    sets: list[Callable[[], tuple[Any, ...]]] = []
    if surfels:
        sets.append(surfel_sets)
    if voxels:
        sets.append(voxel_sets)
    made = run_concurrently(sets)
    queries: list[Callable[[], FloatArray]] = []
    for found in made:
        a, b = found[0], found[1]
        queries.append(partial(nearest_distances, a, b, spacing_mm))
        queries.append(partial(nearest_distances, b, a, spacing_mm))
    dist = run_concurrently(queries)
    ref_to_pred, pred_to_ref = (dist[-2], dist[-1]) if voxels else (empty, empty)
    if not surfels:
        return SurfaceDistances(ref_to_pred, pred_to_ref)
    return SurfaceDistances(
        ref_to_pred,
        pred_to_ref,
        surfel_ref_to_pred=dist[0],
        surfel_pred_to_ref=dist[1],
        surfel_area_ref=made[0][2],
        surfel_area_pred=made[0][3],
    )


def nsd(sd: SurfaceDistances, tolerance_mm: float, variant: NSDVariant = "surfel") -> float:
    """Normalised surface Dice at ``tolerance_mm`` (``d <= τ`` compared in float64)."""
    if variant == "voxel":
        n = sd.ref_to_pred.size + sd.pred_to_ref.size
        hits = np.count_nonzero(sd.ref_to_pred <= tolerance_mm) + np.count_nonzero(
            sd.pred_to_ref <= tolerance_mm
        )
        return float(hits / n)
    if variant == "surfel":
        d_rp, d_pr, a_r, a_p = sd._surfels()
        inside = a_r[d_rp <= tolerance_mm].sum() + a_p[d_pr <= tolerance_mm].sum()
        return float(inside / (a_r.sum() + a_p.sum()))
    raise InputError(f"Unknown NSD variant {variant!r}; expected 'surfel' or 'voxel'.")


def hausdorff(sd: SurfaceDistances) -> float:
    """Hausdorff distance: the largest voxel-surface distance in either direction (mm)."""
    return float(max(sd.ref_to_pred.max(), sd.pred_to_ref.max()))


def hausdorff_percentile(
    sd: SurfaceDistances, percentile: float = 95.0, variant: HD95Variant = "max"
) -> float:
    """Robust Hausdorff distance at ``percentile`` (mm); see the module docstring."""
    if variant == "max":
        return float(
            max(
                np.percentile(sd.ref_to_pred, percentile), np.percentile(sd.pred_to_ref, percentile)
            )
        )
    if variant == "pooled":
        return float(np.percentile(np.concatenate([sd.ref_to_pred, sd.pred_to_ref]), percentile))
    if variant == "surfel":
        d_rp, d_pr, a_r, a_p = sd._surfels()
        return float(
            max(
                _area_weighted_percentile(d_rp, a_r, percentile),
                _area_weighted_percentile(d_pr, a_p, percentile),
            )
        )
    raise InputError(f"Unknown HD95 variant {variant!r}; expected 'max', 'pooled' or 'surfel'.")


def _area_weighted_percentile(d: FloatArray, area: FloatArray, percentile: float) -> float:
    """DeepMind's robust percentile: sort by (distance, area), first cumulative share ≥ p."""
    order = np.lexsort((area, d))
    cum = np.cumsum(area[order]) / np.sum(area)
    idx = int(np.searchsorted(cum, percentile / 100.0))
    return float(d[order[min(idx, d.size - 1)]])


def assd(sd: SurfaceDistances) -> float:
    """Average symmetric surface distance: mean of all distances of both directions (mm)."""
    n = sd.ref_to_pred.size + sd.pred_to_ref.size
    return float((sd.ref_to_pred.sum() + sd.pred_to_ref.sum()) / n)


def masd(sd: SurfaceDistances) -> float:
    """Mean average surface distance: mean of the two directed mean distances (mm)."""
    return float((sd.ref_to_pred.mean() + sd.pred_to_ref.mean()) / 2)
