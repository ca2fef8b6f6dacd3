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
from numba import prange
from numpy.typing import NDArray

from assay.errors import InputError
from assay.metrics._distances import Spacing, nearest_distances
from assay.metrics._edt import _compiled, run_concurrently
from assay.metrics._geometry import BoolArray, Box, padded_crop, surfel_area_table

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.int64]
Points = tuple[IndexArray, IndexArray, IndexArray]
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
    p = padded_crop(pred, box).view(np.uint8)
    r = padded_crop(ref, box).view(np.uint8)
    empty = np.empty(0)
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))
    table = surfel_area_table(spacing)

    # Surfaces first (one task per mask and definition), then the (up to four) directed
    # queries, on two or more threads where numba allows it (:func:`run_concurrently`); the
    # heavier surfel queries go first.
    sets: list[Callable[[], tuple[Any, ...]]] = []
    if surfels:
        sets += [partial(_surfel_points, r, table), partial(_surfel_points, p, table)]
    if voxels:
        sets += [partial(_voxel_points, r), partial(_voxel_points, p)]
    made = run_concurrently(sets)
    queries: list[Callable[[], FloatArray]] = []
    for k in range(0, len(made), 2):
        (a, *pa), (b, *pb) = made[k][:4], made[k + 1][:4]
        queries.append(partial(nearest_distances, a, b, spacing_mm, query_points=_points(pa)))
        queries.append(partial(nearest_distances, b, a, spacing_mm, query_points=_points(pb)))
    dist = run_concurrently(queries)
    ref_to_pred, pred_to_ref = (dist[-2], dist[-1]) if voxels else (empty, empty)
    if not surfels:
        return SurfaceDistances(ref_to_pred, pred_to_ref)
    return SurfaceDistances(
        ref_to_pred,
        pred_to_ref,
        surfel_ref_to_pred=dist[0],
        surfel_pred_to_ref=dist[1],
        surfel_area_ref=made[0][4],
        surfel_area_pred=made[1][4],
    )


def _points(arrays: list[Any]) -> Points:
    """The three index arrays of a surface (from :func:`_surfel_points`, :func:`_voxel_points`)."""
    return arrays[0], arrays[1], arrays[2]


@_compiled(parallel=False)
def _plane_offsets(counts: IndexArray) -> tuple[IndexArray, IndexArray, IndexArray, IndexArray]:
    """Start of each plane's points in C order, and three coordinate arrays to fill."""
    starts = np.zeros(counts.size + 1, dtype=np.int64)
    for i in range(counts.size):
        starts[i + 1] = starts[i] + counts[i]
    n = starts[-1]
    return (
        starts,
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.int64),
    )


@_compiled(parallel=True)
def _surfel_points(
    padded: NDArray[np.uint8], table: FloatArray
) -> tuple[BoolArray, IndexArray, IndexArray, IndexArray, FloatArray]:
    """DeepMind surfels of a zero-padded mask (as uint8) in one compiled pass.

    Returns the corner-grid mask of :func:`~assay.metrics._geometry.neighbour_codes` codes
    other than 0 and 255 (one element fewer than ``padded`` along each axis), its True
    points in C order (three index arrays) and their areas ``table[code]``: the same as
    ``np.nonzero`` of that mask and ``table[codes[mask]]``.
    """
    n0, n1, n2 = padded.shape
    m0, m1, m2 = n0 - 1, n1 - 1, n2 - 1
    grid = np.zeros((m0, m1, m2), dtype=np.bool_)
    codes = np.empty((m0, m1, m2), dtype=np.uint8)
    counts = np.zeros(m0, dtype=np.int64)
    for i in prange(m0):
        lo, hi = padded[i], padded[i + 1]
        count = 0
        for j in range(m1):
            a0, a1, b0, b1 = lo[j], lo[j + 1], hi[j], hi[j + 1]
            for k in range(m2):
                code = (
                    (a0[k] << 7)
                    | (a0[k + 1] << 6)
                    | (a1[k] << 5)
                    | (a1[k + 1] << 4)
                    | (b0[k] << 3)
                    | (b0[k + 1] << 2)
                    | (b1[k] << 1)
                    | b1[k + 1]
                )
                codes[i, j, k] = code
                on = code != 0 and code != 255
                grid[i, j, k] = on
                count += on
        counts[i] = count
    starts, q0, q1, q2 = _plane_offsets(counts)
    area = np.empty(q0.size, dtype=np.float64)
    for i in prange(m0):
        at = starts[i]
        for j in range(m1):
            for k in range(m2):
                if grid[i, j, k]:
                    q0[at], q1[at], q2[at] = i, j, k
                    area[at] = table[codes[i, j, k]]
                    at += 1
    return grid, q0, q1, q2, area


@_compiled(parallel=True)
def _voxel_points(
    padded: NDArray[np.uint8],
) -> tuple[BoolArray, IndexArray, IndexArray, IndexArray]:
    """:func:`~assay.metrics._geometry.voxel_surface` of a zero-padded mask (as uint8) and
    its True points in C order (three index arrays), in one compiled pass."""
    n0, n1, n2 = padded.shape
    m0, m1, m2 = n0 - 2, n1 - 2, n2 - 2
    grid = np.zeros((m0, m1, m2), dtype=np.bool_)
    counts = np.zeros(m0, dtype=np.int64)
    for i in prange(m0):
        below, here, above = padded[i], padded[i + 1], padded[i + 2]
        count = 0
        for j in range(m1):
            c, lt, rt, dn, up = here[j + 1], here[j], here[j + 2], below[j + 1], above[j + 1]
            for k in range(m2):
                inner = c[k] & c[k + 2] & lt[k + 1] & rt[k + 1] & dn[k + 1] & up[k + 1]
                on = c[k + 1] != 0 and inner == 0
                grid[i, j, k] = on
                count += on
        counts[i] = count
    starts, q0, q1, q2 = _plane_offsets(counts)
    for i in prange(m0):
        at = starts[i]
        for j in range(m1):
            for k in range(m2):
                if grid[i, j, k]:
                    q0[at], q1[at], q2[at] = i, j, k
                    at += 1
    return grid, q0, q1, q2


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
