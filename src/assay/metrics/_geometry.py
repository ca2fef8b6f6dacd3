"""Bounding boxes, crops and surfaces of binary masks (pure numpy).

Two surface definitions are used (DESIGN.md §3):

* **voxel surfaces** — ``mask XOR erode(mask)`` with 6-connectivity and a border value of 0,
  as in MedPy and MONAI. A voxel on the array border is a surface voxel.
* **surfels** — the corners of a 2×2×2 neighbour-code grid (DeepMind surface-distance): a
  corner is on the surface when its 8 surrounding voxels are neither all outside nor all
  inside; each carries the marching-cubes area of its code for the voxel spacing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assay.metrics._surfel_table import NORMALS_EIGHTHS

Box = tuple[slice, slice, slice]
BoolArray = NDArray[np.bool_]


def bounding_box(mask: BoolArray) -> Box | None:
    """Smallest box holding every True voxel of a 3-D mask, or None if the mask is empty.

    A C- or Fortran-contiguous mask is read as 8-byte words, slowest axis first: the planes
    that hold a True voxel, then within them the lines, then the box's extent along the
    fastest axis (a few times faster than boolean reductions on a CT volume). Any other
    layout takes the reductions, the first along the array's fastest-varying axis.
    """
    if mask.flags.c_contiguous:
        return _box_contiguous(mask)
    if mask.flags.f_contiguous:
        box = _box_contiguous(mask.T)
        return None if box is None else (box[2], box[1], box[0])
    return _box_strided(mask)


def _box_contiguous(mask: BoolArray) -> Box | None:
    """:func:`bounding_box` of a C-contiguous mask (planes, then lines, then the last axis)."""
    n0, n1, n2 = mask.shape
    if mask.size == 0:
        return None
    planes = np.flatnonzero(_any_per_row(mask.reshape(n0, n1 * n2)))
    if planes.size == 0:
        return None
    x0, x1 = int(planes[0]), int(planes[-1]) + 1
    block = mask[x0:x1]
    lines = _any_per_row(block.reshape((x1 - x0) * n1, n2)).reshape(x1 - x0, n1).any(axis=0)
    ys = np.flatnonzero(lines)
    y0, y1 = int(ys[0]), int(ys[-1]) + 1
    zs = np.flatnonzero(block[:, y0:y1].any(axis=(0, 1)))
    return (slice(x0, x1), slice(y0, y1), slice(int(zs[0]), int(zs[-1]) + 1))


def _any_per_row(rows: BoolArray) -> BoolArray:
    """``rows.any(axis=1)`` for a C-contiguous 2-D bool array, 8 bytes at a time if it can."""
    if rows.shape[1] % 8 == 0:
        words = rows.view(np.uint64)
        out: BoolArray = np.asarray(np.bitwise_or.reduce(words, axis=1) != 0)
        return out
    result: BoolArray = np.asarray(rows.any(axis=1))
    return result


def _box_strided(mask: BoolArray) -> Box | None:
    """:func:`bounding_box` by boolean reductions, the first along the fastest axis."""
    fast = int(np.argmin(np.abs(mask.strides)))
    rest = [a for a in range(3) if a != fast]
    plane: BoolArray = np.any(mask, axis=fast)  # 2-D over the other two axes
    lo_hi: dict[int, tuple[int, int]] = {}
    for k, axis in enumerate(rest):
        idx = np.flatnonzero(plane.any(axis=1 - k))
        if idx.size == 0:
            return None
        lo_hi[axis] = (int(idx[0]), int(idx[-1]) + 1)
    sub = mask[tuple(slice(*lo_hi[a]) if a in lo_hi else slice(None) for a in range(3))]
    idx = np.flatnonzero(sub.any(axis=tuple(rest)))
    lo_hi[fast] = (int(idx[0]), int(idx[-1]) + 1)
    return (slice(*lo_hi[0]), slice(*lo_hi[1]), slice(*lo_hi[2]))


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """Smallest box holding both boxes (None stands for an empty mask)."""
    if a is None:
        return b
    if b is None:
        return a
    s0, s1, s2 = (
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )
    return (s0, s1, s2)


def padded_crop(mask: BoolArray, box: Box) -> BoolArray:
    """``mask[box]`` as a new C-ordered bool array with one voxel of zeros on every side.

    Exact for every metric: outside the union bounding box both masks are empty, and the
    zero border reproduces erosion with border value 0 and DeepMind's zero padding.
    """
    crop = mask[box]
    out = np.zeros(tuple(n + 2 for n in crop.shape), dtype=bool)
    out[1:-1, 1:-1, 1:-1] = crop
    return out


def voxel_surface(padded: BoolArray) -> BoolArray:
    """Surface voxels ``m & ~erode(m)`` (6-connectivity) of a zero-padded mask.

    Returns an array the shape of the unpadded crop.
    """
    core = padded[1:-1, 1:-1, 1:-1]
    interior = core.copy()
    interior &= padded[:-2, 1:-1, 1:-1]
    interior &= padded[2:, 1:-1, 1:-1]
    interior &= padded[1:-1, :-2, 1:-1]
    interior &= padded[1:-1, 2:, 1:-1]
    interior &= padded[1:-1, 1:-1, :-2]
    interior &= padded[1:-1, 1:-1, 2:]
    return core & ~interior


def neighbour_codes(padded: BoolArray) -> NDArray[np.uint8]:
    """DeepMind 2×2×2 neighbour codes on the corner grid of a zero-padded mask.

    ``code[i] = Σ_k 2**(7 - 4 k0 - 2 k1 - k2) · padded[i + k]`` for k in {0, 1}³, i.e. the
    correlation with DeepMind's kernel ``[[[128, 64], [32, 16]], [[8, 4], [2, 1]]]``. The
    result has one element fewer than ``padded`` along each axis: one per voxel corner of
    the crop. Computed separably (three shift-or passes).
    """
    p: NDArray[Any] = padded.view(np.uint8)
    t = (p[:, :, :-1] << 1) | p[:, :, 1:]
    t = (t[:, :-1, :] << 2) | t[:, 1:, :]
    out: NDArray[np.uint8] = ((t[:-1] << 4) | t[1:]).astype(np.uint8, copy=False)
    return out


@lru_cache(maxsize=64)
def surfel_area_table(spacing_mm: tuple[float, float, float]) -> NDArray[np.float64]:
    """Area in mm² of the surface inside each of the 256 neighbour codes.

    Follows DeepMind's ``create_table_neighbour_code_to_surface_area`` operation for
    operation, so areas agree bit for bit: per normal n, area = ‖(n0·s1·s2, n1·s0·s2,
    n2·s0·s1)‖, summed over the code's normals.
    """
    s0, s1, s2 = spacing_mm
    table = np.zeros(256)
    for code, normals in enumerate(NORMALS_EIGHTHS):
        total = 0.0
        for n in normals:
            v = np.zeros(3)
            v[0] = n[0] / 8 * s1 * s2
            v[1] = n[1] / 8 * s0 * s2
            v[2] = n[2] / 8 * s0 * s1
            total += float(np.linalg.norm(v))
        table[code] = total
    table.setflags(write=False)
    return table
