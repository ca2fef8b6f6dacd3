"""Exact nearest-surface distances between two sets of lattice points.

For every True voxel q of ``query`` the distance to the nearest True voxel t of ``target`` is

    d(q) = sqrt(((o0·s0)² + (o1·s1)²) + (o2·s2)²),   o = t - q (integer voxel offsets),

evaluated in float64 in exactly that order, which is the order scipy's Euclidean distance
transform uses; so distances equal scipy's (and hence DeepMind's and MedPy's) to the last bit
whenever the nearest voxel is unique. Decisions ``d <= tolerance`` are then exact.

Algorithm: offsets within a radius R are enumerated once per spacing and sorted by their
exact distance; a compiled kernel tests each query point against them, nearest first, and
the first offset that holds a target voxel settles it. Most surface points of a reasonable
prediction lie within a few voxels of the other surface, so almost all settle in the first
shells. Before any shell, a sample of the points shows what the shells would cost: when
that is more than the exact separable transform of :mod:`assay.metrics._edt` (numba, the
same float64 minimum) would cost (a large shift, a missed part: see ``_SWITCH_RATIO``), or
when the points the first shells leave would go to the transform anyway and those shells
are not cheap (a shift by 8 voxels: ``_SWITCH_FIRST_TESTS``), every point goes to the
transform at once. Otherwise the shells run up to a first radius
for every point and on for the rest while cheaper than a k-d tree; points left then go to
the transform when they are many, and to a k-d tree over the target points when few (a
small false-positive blob), whose answer is recomputed from integer offsets as above.

Ties: when several targets lie at the same real distance but their float64 distances differ
by an ulp, every path takes the smallest float64 value. scipy's EDT (hence DeepMind and MedPy)
may return the other one (e.g. offsets (-5, 0, -1) and (-3, -4, -1) at (0.8, 0.8, 1.5) mm:
4.272001872658765 vs 4.272001872658766), so agreement with them is exact except at such ties.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from assay.metrics._edt import _compiled, nearest_squared

Spacing = tuple[float, float, float]

#: Shells always cover about this many lattice offsets (radius ≈ 3–4 voxels) ...
_SHELL_OFFSETS = 250
#: ... and at most this many; beyond the first radius, shells go on only while they cost
#: less than building a k-d tree over the target would: this many point-offset tests per
#: target voxel in all.
_MAX_SHELL_OFFSETS = 4000
_TREE_TESTS_PER_TARGET = 16
#: Nearest candidates the k-d tree returns per far point, to resolve float64 ties exactly.
_TIE_CANDIDATES = 8
#: Target points sampled to bound far points' distances before building the k-d tree.
_PRUNE_SAMPLE = 1024
#: When more query points than this are left after the shells, they are all settled by the
#: exact separable transform of :mod:`assay.metrics._edt` ...
_EDT_MIN_POINTS = 2000
#: ... provided it is not much dearer than the k-d tree: its cost is one pass over the box,
#: compared with this many box voxels per remaining query point.
_EDT_VOXELS_PER_POINT = 400
#: Before any shell, every point may go to the transform at once. The choice is made from
#: a sample of the points whose settling shells are found directly: the transform is taken
#: when the shells would cost more point-offset tests than ``_SWITCH_RATIO`` per box voxel
#: plus ``_SWITCH_PER_POINT`` per point (measured: the transform's pass over the box costs
#: about one test per voxel, its scan at a query point a few hundred; a shift by 4 voxels
#: needs ~0.5 tests per voxel, a shift by 8 needs 5–8).
_SWITCH_SAMPLE = 256
_SWITCH_RATIO = 1.5
_SWITCH_PER_POINT = 200
#: Every point also goes to the transform at once when the sample shows that the points left
#: after the first radius would go to it anyway and the shells up to that radius cost this
#: many tests per point: the transform's pass over the box is then paid in any case, and it
#: settles a near point for less than that (a shift by 8 voxels: ~120 tests per point).
_SWITCH_FIRST_TESTS = 60


def lattice_distance(offsets: NDArray[np.integer], spacing_mm: Spacing) -> NDArray[np.float64]:
    """Exact float64 length in mm of integer voxel offsets of shape (n, 3), scipy's order."""
    o = offsets.astype(np.float64)
    a = o[:, 0] * spacing_mm[0]
    b = o[:, 1] * spacing_mm[1]
    c = o[:, 2] * spacing_mm[2]
    out: NDArray[np.float64] = np.sqrt((a * a + b * b) + c * c)
    return out


def _ball_radius(spacing_mm: Spacing, n_offsets: int) -> float:
    """Radius (mm) of a ball holding about ``n_offsets`` lattice points, ≥ the coarsest step."""
    voxel_volume = spacing_mm[0] * spacing_mm[1] * spacing_mm[2]
    return float(max(max(spacing_mm), (3 * n_offsets * voxel_volume / (4 * np.pi)) ** (1 / 3)))


@lru_cache(maxsize=32)
def _shells(spacing_mm: Spacing) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.intp]]:
    """Offsets within radius R sorted by exact distance, their distances and group starts.

    R is chosen so the ball holds about ``_MAX_SHELL_OFFSETS`` offsets.
    """
    radius = _ball_radius(spacing_mm, _MAX_SHELL_OFFSETS)
    r = [int(np.floor(radius / s)) for s in spacing_mm]
    grid = np.stack(
        np.meshgrid(*(np.arange(-k, k + 1) for k in r), indexing="ij"), axis=-1
    ).reshape(-1, 3)
    dist = lattice_distance(grid, spacing_mm)
    keep = dist <= radius
    grid, dist = grid[keep], dist[keep]
    order = np.argsort(dist, kind="stable")
    grid, dist = grid[order], dist[order]
    starts = np.flatnonzero(np.r_[True, dist[1:] != dist[:-1]])
    return grid.astype(np.int64), dist, starts


def nearest_distances(
    query: NDArray[np.bool_],
    target: NDArray[np.bool_],
    spacing_mm: Spacing,
    *,
    query_points: tuple[NDArray[np.intp], ...] | None = None,
) -> NDArray[np.float64]:
    """Distance from each True voxel of ``query`` (C order) to the nearest True of ``target``.

    Parameters
    ----------
    query, target : bool arrays of the same 3-D shape.
    spacing_mm : voxel spacing in mm, array-axis order.
    query_points : ``np.nonzero(query)`` when already known (saves a pass over ``query``).

    Returns
    -------
    float64 array with one distance per True voxel of ``query``, in ``np.nonzero`` order.
    ``+inf`` everywhere when ``target`` is empty; empty when ``query`` is.
    """
    q_idx = _nonzero(query) if query_points is None else query_points
    n = q_idx[0].size
    out = np.full(n, np.inf)
    if n == 0 or not target.any():
        return out
    offsets, dist, starts = _shells(spacing_mm)
    box = target.size
    bounds = np.r_[starts, dist.size]
    first_radius = int(
        bounds[np.searchsorted(dist[starts], _ball_radius(spacing_mm, _SHELL_OFFSETS), "right")]
    )
    if _use_transform(n, box):
        cost, cost_first, left = _shells_cost(q_idx, target, offsets, first_radius)
        if cost >= _SWITCH_RATIO * box + _SWITCH_PER_POINT * n or (
            _use_transform(int(left), box) and cost_first >= _SWITCH_FIRST_TESTS * n
        ):
            return np.sqrt(nearest_squared(target, (q_idx[0], q_idx[1], q_idx[2]), spacing_mm))
    r = np.abs(offsets).max(axis=0)
    padded = np.zeros(tuple(s + 2 * int(k) for s, k in zip(target.shape, r, strict=True)), bool)
    padded[tuple(slice(int(k), int(k) + s) for s, k in zip(target.shape, r, strict=True))] = target
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1], dtype=np.int64)
    flat_target = padded.ravel()
    flat_query = (q_idx[0] + r[0]) * strides[0] + (q_idx[1] + r[1]) * strides[1] + (q_idx[2] + r[2])
    deltas = offsets @ strides
    # Shells up to the first radius for every point, then beyond it for the points left,
    # while they cost less than building a k-d tree over the target would.
    remaining = np.arange(n)
    lo = 0
    for hi in (first_radius, -1):
        if hi < 0:  # beyond the first radius: as far as the budget goes, at a shell boundary
            if remaining.size == 0 or _use_transform(remaining.size, box):
                break
            budget = _TREE_TESTS_PER_TARGET * np.count_nonzero(target) // remaining.size
            hi = int(bounds[np.searchsorted(bounds, lo + budget, "right") - 1])
            if hi <= lo:
                break
        first = _first_hits(flat_target, flat_query[remaining], deltas, lo, hi)
        hit = first < hi
        out[remaining[hit]] = dist[first[hit]]
        remaining = remaining[~hit]
        lo = hi
    if _use_transform(remaining.size, box):
        sub = (q_idx[0][remaining], q_idx[1][remaining], q_idx[2][remaining])
        out[remaining] = np.sqrt(nearest_squared(target, sub, spacing_mm))
    elif remaining.size:
        out[remaining] = _tree_distances(q_idx, remaining, target, spacing_mm)
    return out


@_compiled(parallel=False)
def _first_hits(
    flat_target: NDArray[np.bool_],
    base: NDArray[np.int64],
    deltas: NDArray[np.int64],
    lo: int,
    hi: int,
) -> NDArray[np.int64]:
    """Per point, the first k in [lo, hi) with ``flat_target[base + deltas[k]]`` (hi if none).

    Offsets are sorted by exact distance, so the first hit is at the nearest target.
    """
    m = base.size
    out = np.empty(m, dtype=np.int64)
    for i in range(m):
        b = base[i]
        k = lo
        while k < hi and not flat_target[b + deltas[k]]:
            k += 1
        out[i] = k
    return out


def _shells_cost(
    q_idx: tuple[NDArray[np.intp], ...],
    target: NDArray[np.bool_],
    offsets: NDArray[np.int64],
    first_radius: int,
) -> tuple[float, float, float]:
    """Estimated point-offset tests the shells ``offsets`` would take to settle ``q_idx``,
    those they take up to the first radius (the first ``first_radius`` offsets), and the
    number of points left unsettled there.

    From an evenly spaced sample: each point costs the offsets up to its first hit (all of
    them when none hits).
    """
    step = max(1, q_idx[0].size // _SWITCH_SAMPLE)
    sample = np.stack([np.ascontiguousarray(c[::step], dtype=np.int64) for c in q_idx], axis=1)
    first = _first_hits_checked(target, sample, offsets)
    scale = q_idx[0].size / len(sample)
    return (
        float(scale * np.minimum(first + 1, len(offsets)).sum()),
        float(scale * np.minimum(first + 1, first_radius).sum()),
        float(scale * np.count_nonzero(first >= first_radius)),
    )


@_compiled(parallel=False)
def _first_hits_checked(
    target: NDArray[np.bool_], points: NDArray[np.int64], offsets: NDArray[np.int64]
) -> NDArray[np.int64]:
    """:func:`_first_hits` over all ``offsets`` for a few (n, 3) points, with bounds checks
    instead of a padded copy of the target."""
    n0, n1, n2 = target.shape
    out = np.empty(len(points), dtype=np.int64)
    for i in range(len(points)):
        k = 0
        while k < len(offsets):
            x = points[i, 0] + offsets[k, 0]
            y = points[i, 1] + offsets[k, 1]
            z = points[i, 2] + offsets[k, 2]
            if 0 <= x < n0 and 0 <= y < n1 and 0 <= z < n2 and target[x, y, z]:
                break
            k += 1
        out[i] = k
    return out


def _use_transform(n_remaining: int, box_voxels: int) -> bool:
    """Whether the separable transform settles ``n_remaining`` far points more cheaply."""
    return n_remaining >= _EDT_MIN_POINTS and n_remaining * _EDT_VOXELS_PER_POINT >= box_voxels


def _tree_distances(
    q_idx: tuple[NDArray[np.intp], ...],
    which: NDArray[np.intp],
    target: NDArray[np.bool_],
    spacing_mm: Spacing,
) -> NDArray[np.float64]:
    """Exact distances for far query points via a k-d tree over the target voxels.

    The tree's own arithmetic can rank two lattice points whose exact distances are equal
    in real numbers but one ulp apart in float64 (e.g. offsets (7, 0, 0) and (2, 3, 6) on an
    isotropic grid) either way. So every target within a relative 1e-9 of the tree's nearest
    is a candidate, and the smallest exactly recomputed distance wins — as with scipy's EDT.
    """
    t = np.stack(_nonzero(target), axis=1)
    q = np.stack([c[which] for c in q_idx], axis=1)
    scale = np.asarray(spacing_mm, dtype=np.float64)
    t = _candidates(t, q, scale)
    tree = cKDTree(t * scale, balanced_tree=False, compact_nodes=False)
    k = min(_TIE_CANDIDATES, len(t))
    dd, jj = tree.query(q * scale, k=k)
    dd, jj = dd.reshape(len(q), k), jj.reshape(len(q), k)
    margin = dd[:, :1] * (1 + 1e-9) + 1e-12
    exact = lattice_distance((t[jj] - q[:, None, :]).reshape(-1, 3), spacing_mm).reshape(dd.shape)
    best = np.where(dd <= margin, exact, np.inf).min(axis=1)
    crowded = np.flatnonzero(dd[:, -1] <= margin[:, 0]) if k < len(t) else np.empty(0, int)
    for i in crowded:  # more tied candidates than k: take them all (rare)
        idx = tree.query_ball_point(q[i] * scale, r=float(margin[i, 0]))
        best[i] = lattice_distance(t[idx] - q[i], spacing_mm).min()
    out: NDArray[np.float64] = best
    return out


def _nonzero(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], ...]:
    """``np.nonzero`` (C order) via the flat indices: several times faster on 3-D masks."""
    return np.unravel_index(np.flatnonzero(mask), mask.shape)


def _candidates(
    t: NDArray[np.intp], q: NDArray[np.intp], scale: NDArray[np.float64]
) -> NDArray[np.intp]:
    """Target points that can be nearest to some query point (exact pruning).

    Distances to a sample of the targets bound each query's nearest distance from above,
    so every nearest target (and every float64 tie of it) lies in the box spanned by the
    queries widened by the largest bound. Far points are usually few and clustered (a false
    positive blob), so the box keeps a fraction of a large surface.
    """
    if len(t) <= 4 * _PRUNE_SAMPLE:
        return t
    sample = t[:: len(t) // _PRUNE_SAMPLE] * scale
    qs = q * scale
    bound = cKDTree(sample).query(qs, k=1)[0].max() * (1 + 1e-6) + 1e-9
    lo, hi = qs.min(axis=0) - bound, qs.max(axis=0) + bound
    ts = t * scale
    keep = np.all((ts >= lo) & (ts <= hi), axis=1)
    return t[keep]
