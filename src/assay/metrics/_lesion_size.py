"""Size of a lesion: volume, longest axial diameter and equivalent-sphere diameter.

Size strata of tumour-detection benchmarks use the longest axial diameter (RECIST-like):

* **longest axial diameter** — the largest in-plane Feret diameter over the axial slices, of
  the union of the voxels' rectangles (edge to edge, corners included), in mm. A single voxel
  of 0.8 × 0.8 mm has diameter √(0.8² + 0.8²) = 1.131 mm. Computed exactly from the convex
  hull of the voxel corners of each slice.
* **equivalent-sphere diameter** — d_eq = (6V/π)^(1/3), V the lesion volume in mm³.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull

#: Bin edges (mm) of the longest-axial-diameter strata: < 5, 5-10, 10-20, 20-50, >= 50.
SIZE_BIN_EDGES_MM: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0)
SIZE_BIN_LABELS: tuple[str, ...] = ("<5 mm", "5-10 mm", "10-20 mm", "20-50 mm", ">=50 mm")
#: Lesions below this longest axial diameter are "small tumours" (AbdomenAtlas 2.0).
SMALL_TUMOUR_MM = 20.0


def size_bin(diameter_mm: float) -> str:
    """Label of the diameter stratum holding ``diameter_mm`` (lower edges inclusive)."""
    k = int(np.searchsorted(np.asarray(SIZE_BIN_EDGES_MM), diameter_mm, side="right"))
    return SIZE_BIN_LABELS[k]


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Diameter of the sphere of the same volume, (6V/π)^(1/3) mm."""
    return float((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0))


def longest_axial_diameter_mm(
    mask: NDArray[np.bool_], spacing_mm: Sequence[float], axial_axis: int = 2
) -> float:
    """Largest in-plane Feret diameter (mm) of a lesion over its axial slices.

    Parameters
    ----------
    mask
        3-D boolean mask of one lesion (any crop holding it).
    spacing_mm
        Voxel spacing in array-axis order.
    axial_axis
        The array axis normal to the axial slices (2 for NIfTI as stored by CT scanners).

    Returns
    -------
    float
        0.0 for an empty mask; otherwise the largest distance between two corners of the
        slice's voxel rectangles, maximised over slices.
    """
    in_plane = [a for a in range(3) if a != axial_axis]
    su, sv = float(spacing_mm[in_plane[0]]), float(spacing_mm[in_plane[1]])
    moved = np.moveaxis(mask, axial_axis, 0)
    best = 0.0
    offsets = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    for plane in moved:
        if not plane.any():
            continue
        pixels = np.argwhere(_outline(plane))
        corners = np.unique((pixels[:, None, :] + offsets[None]).reshape(-1, 2), axis=0)
        points = corners.astype(np.float64) * np.array([su, sv])
        if len(points) > 8:
            points = points[ConvexHull(points).vertices]
        diff = points[:, None, :] - points[None, :, :]
        best = max(best, float(np.sqrt((diff**2).sum(axis=-1)).max()))
    return best


def _outline(plane: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Pixels of a 2-D mask with a 4-neighbour outside it (their corners hold the hull)."""
    padded = np.pad(plane, 1)
    inner = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return plane & ~inner
