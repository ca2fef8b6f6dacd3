"""Exact float64 nearest-target squared distances by separable computations (numba).

For a query voxel q and the target voxels t the result is

    D(q) = min_t fl(fl(A[|t0 - q0|] + B[|t1 - q1|]) + C[|t2 - q2|]),
    A[d] = fl(fl(d·s0)²),  B[d] = fl(fl(d·s1)²),  C[d] = fl(fl(d·s2)²),

i.e. the smallest of the float64 values scipy's EDT (and :func:`lattice_distance`) computes
for the offsets to all targets, in the same order of operations. ``sqrt(D)`` then equals the
distance of the shell/k-d tree engine bit for bit, ties included (the smallest float wins).

Why a separable computation is exact here: correctly rounded addition is monotone in each
argument, ``u <= u'  =>  fl(u + v) <= fl(u' + v)``, so a minimum can be taken before an
addition:

    D(q) = min_{t1, t2} fl(fl(G0(q0, t1, t2) + B[|t1 - q1|]) + C[|t2 - q2|]),
    G0(q0, t1, t2) = A[min_{t0} |t0 - q0|]     (A is non-decreasing).

Step 1, for the whole box: the column distances ``min_{t0} |t0 - q0|`` along axis 0 (two
branch-free scans that vectorise, 2 bytes per voxel) and their minimum per line of axis 2.
Then, per plane of axis 0 that holds query points, one of two paths, both exact (every
minimum is taken over float64 values computed as above, and a candidate is only ever skipped
when a lower bound of it already reaches the best value):

* ``scan``: at each query point, a direct scan of the terms over (t1, t2), lines of axis 2
  taken outward from the query's, starting from an upper bound (the exact minimum over the
  query's own line of axis 2, taken outward from q2 and cut as it goes, and over the
  nearest part of its line of axis 1). A line at offset d1 is skipped when
  ``fl(A[its smallest column distance] + B[d1])``, a lower bound of all its terms, reaches
  the best value, and the scan stops once ``B[d1]`` does; within a line only the window of
  t2 with ``fl(that bound + C[|t2 - q2|])`` below the best value is evaluated. Its cost is
  at most the area of the ellipse of radius sqrt(D) in the plane, much less where the
  column distances alone show a line to be far (a shift along axis 0): cheap for near and
  moderately far points, dear for very far ones.
* ``envelope``: G1(q0, q1, t2) = min_{t1} fl(G0 + B[|t1 - q1|]) for the whole plane, as the
  lower envelope of parabolas (Felzenszwalb & Huttenlocher 2012) computed on the real-valued
  model g[p] + s1²(q - p)²; the float64 minimum can differ from the model's only at (near)
  ties, where two model parabolas cross within ``_TOL`` of an integer q. Such q are evaluated
  on every envelope parabola whose breakpoint is that close, and where a parabola was dropped
  at a (near) triple crossing, by a direct scan of the row. Then D = min_{t2} fl(G1 + C) by a
  scan outward from q2 at the query points, cut once C[d] reaches the best value. Its cost is
  one pass over the plane, whatever the distances (a missed half, a far blob).

The path is chosen per plane from that upper bound of D at a sample of the plane's queries
(every ``_ESTIMATE_STEP``-th): the scan when its estimated terms stay below
``_SCAN_TERMS_PER_VOXEL`` per voxel of the plane, its terms estimated line by line as if
the best value stayed at that bound (an upper bound; :func:`_estimates`). The first
transform's envelope lost a tie flag raised for a query beyond the parabola being added (at
a three-way crossing), and could return the larger of two float64 values there; the flags
are now cleared first.

The heavy kernels are compiled with ``@njit(cache=True, parallel=True, nogil=True)``: they
use numba's threads when called alone, and release the GIL so that callers can run several
queries on threads instead (:func:`run_concurrently`; ``surface_distances`` runs the four
directed queries of a structure so). The first call in a fresh environment compiles them
(several seconds, then cached on disk next to this file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Literal, TypeVar, cast

import numba
import numpy as np
from numba import get_num_threads, njit, prange
from numpy.typing import NDArray

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")

#: Crossings of model parabolas closer than this (in voxels) to an integer are (near) ties.
_TOL = 1e-6
#: Path choice per plane of axis 0: the pruned scan is taken when its estimated terms for the
#: plane's queries (:func:`_estimates`, an upper bound) are at most this many per voxel of the
#: plane; an envelope costs about 10 scanned terms per voxel.
_SCAN_TERMS_PER_VOXEL = 8.0
#: A line the scan visits costs about as much as this many scanned terms.
_LINE_TERMS = 2.0
#: The envelope path holds its planes' G1 (8 bytes per voxel) for at most this many voxels
#: at a time, so that a CT-sized box stays well under 1 GB.
_ENVELOPE_BATCH_VOXELS = 1 << 24
#: The upper bound of a query's D also looks this many voxels along its line of axis 1.
_BOUND_REACH = 16
#: The path choice estimates the scan's cost from every this many-th query (and the first of
#: each run of queries in one plane); each sample stands for the queries up to the next.
_ESTIMATE_STEP = 32
#: Parallel loops hand out blocks of this many items round-robin, several chunks per thread,
#: so that uneven costs (a missed half, a far blob) spread over the threads.
_BLOCK = 64
_CHUNKS_PER_THREAD = 8

Path = Literal["auto", "scan", "envelope"]


def _compiled(parallel: bool, inline: bool = False) -> Callable[[_F], _F]:
    """numba's ``njit`` with the on-disk cache and the GIL released; ``inline``: inlined into
    its callers by numba (``inline="always"``) instead of called."""
    jit = njit(cache=True, parallel=parallel, nogil=True, inline="always" if inline else "never")
    return cast(Callable[[_F], _F], jit)


def square_table(n: int, step: float) -> NDArray[np.float64]:
    """``fl(fl(d·step)²)`` for d = 0 … n-1 (scipy's per-axis term)."""
    t = np.arange(n, dtype=np.float64) * step
    out: NDArray[np.float64] = t * t
    return out


@_compiled(parallel=False)
def _envelope_row(
    g: NDArray[np.float64],
    w: NDArray[np.float64],
    inv_s: float,
    out: NDArray[np.float64],
    v: NDArray[np.int32],
    hv: NDArray[np.float64],
    zz: NDArray[np.float64],
    risky: NDArray[np.bool_],
) -> None:
    """``out[q] = min_p fl(g[p] + w[|q - p|])`` exactly (module docstring, stage 2)."""
    n = g.size
    k = -1
    hmax = 0.0
    risky[:n] = False  # before the loop: a crossing beyond p may be flagged early
    for p in range(n):
        gp = g[p]
        if gp == np.inf:
            continue
        hp = gp * inv_s + p * p
        hmax = max(hmax, hp)
        if k < 0:
            k = 0
            v[0] = p
            hv[0] = hp
            zz[0] = -np.inf
            continue
        tol = _TOL + 1e-13 * hmax
        while True:
            s = (hp - hv[k]) / (2.0 * (p - v[k]))
            if k > 0 and abs(s - zz[k]) <= tol:
                qi = round(zz[k])
                if abs(zz[k] - qi) <= tol and 0 <= qi < n:
                    risky[int(qi)] = True
            if s <= zz[k]:
                k -= 1
            else:
                break
        k += 1
        v[k] = p
        hv[k] = hp
        zz[k] = s
    if k < 0:
        out[:] = np.inf
        return
    nk = k + 1
    zz[nk] = np.inf
    tol = _TOL + 1e-13 * hmax
    j = 0
    for q in range(n):
        while zz[j + 1] < q:
            j += 1
        p = v[j]
        best = g[p] + w[abs(q - p)]
        i = j
        while i > 0 and zz[i] >= q - tol:
            i -= 1
            p = v[i]
            best = min(best, g[p] + w[abs(q - p)])
        i = j
        while i + 1 < nk and zz[i + 1] <= q + tol:
            i += 1
            p = v[i]
            best = min(best, g[p] + w[abs(q - p)])
        if risky[q]:
            for d in range(n):
                c = w[d]
                if c >= best or (q - d < 0 and q + d >= n):
                    break
                if q - d >= 0:
                    best = min(best, g[q - d] + c)
                if q + d < n:
                    best = min(best, g[q + d] + c)
        out[q] = best


@_compiled(parallel=True)
def _columns(target: NDArray[np.bool_], dtype: Any) -> tuple[NDArray[Any], NDArray[np.int64]]:
    """Column distances and their minimum per line of axis 2.

    ``col[x, y, z]`` is the distance in voxels along axis 0 from (x, y, z) to the nearest
    target of its column, ``n0`` (the length of axis 0) standing for "none";
    ``line_min[x, y] = min_z col[x, y, z]``. Two scans along axis 0, the lines of axis 2
    contiguous, in 32-bit integers and without branches (so that they vectorise; axis 0 is
    far shorter than 2**30 voxels).
    """
    n0, n1, n2 = target.shape
    col = np.empty((n0, n1, n2), dtype=dtype)
    line_min = np.empty((n0, n1), dtype=np.int64)
    none = np.int32(n0)
    for y in prange(n1):
        last = np.empty(n2, dtype=np.int32)
        last[:] = -n0 - 1
        for x in range(n0):
            tx = target[x, y]
            cx = col[x, y]
            xi = np.int32(x)
            for z in range(n2):
                seen = xi if tx[z] else last[z]
                last[z] = seen
                cx[z] = min(xi - seen, none)
        last[:] = 2 * n0 + 1
        for x in range(n0 - 1, -1, -1):
            tx = target[x, y]
            cx = col[x, y]
            xi = np.int32(x)
            low = none
            for z in range(n2):
                seen = xi if tx[z] else last[z]
                last[z] = seen
                d = min(np.int32(cx[z]), seen - xi)
                cx[z] = d
                low = min(low, d)
            line_min[x, y] = low
    return col, line_min


@_compiled(parallel=False)
def _line_min(
    line: NDArray[Any],
    a: NDArray[np.float64],
    b1: float,
    c: NDArray[np.float64],
    z: int,
    low: float,
    best: float,
) -> float:
    """``min(best, min_t fl(fl(a[line[t]] + b1) + c[|t - z|]))`` over one line of axis 2.

    ``low = fl(a[min(line)] + b1)`` bounds every term of the line from below, so only the
    window of t with ``fl(low + c[|t - z|]) < best`` can lower ``best``; it is evaluated
    without branches (``a[n0] = inf`` stands for "no target in this column"), the two sides
    of z as two independent minima (a minimum does not depend on the order it is taken in).
    """
    n2 = line.size
    best = min(best, (a[line[z]] + b1) + c[0])
    w = 0
    while w + 1 < n2 and low + c[w + 1] < best:
        w += 1
    hi = min(n2 - 1 - z, w)
    lo = min(z, w)
    both = min(hi, lo)
    up = best
    down = best
    for k in range(1, both + 1):
        ck = c[k]
        up = min(up, (a[line[z + k]] + b1) + ck)
        down = min(down, (a[line[z - k]] + b1) + ck)
    for k in range(both + 1, hi + 1):
        up = min(up, (a[line[z + k]] + b1) + c[k])
    for k in range(both + 1, lo + 1):
        down = min(down, (a[line[z - k]] + b1) + c[k])
    return min(up, down)


@_compiled(parallel=False)
def _own_line_min(
    line: NDArray[Any], a: NDArray[np.float64], c: NDArray[np.float64], z: int, low: float
) -> float:
    """:func:`_line_min` of the query's own line (``b1 = 0``) from ``best = inf``, taken
    outward from z and cut as soon as ``fl(low + c[k])`` reaches the best value so far (the
    fixed window of :func:`_line_min` would be the whole line)."""
    n2 = line.size
    best: float = a[line[z]] + c[0]
    for k in range(1, n2):
        ck = c[k]
        if low + ck >= best or (z - k < 0 and z + k >= n2):
            break
        if z + k < n2:
            best = min(best, a[line[z + k]] + ck)
        if z - k >= 0:
            best = min(best, a[line[z - k]] + ck)
    return best


@_compiled(parallel=False, inline=True)  # inlined: faster in the scan's loop than a call
def _upper_bound(
    cx: NDArray[Any],
    lm: NDArray[np.int64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    c: NDArray[np.float64],
    y: int,
    z: int,
) -> float:
    """An upper bound of D at (x, y, z), ``cx = col[x]``, ``lm = line_min[x]``: the exact
    minimum over the query's own line of axis 2 and the part of its line of axis 1 within
    ``_BOUND_REACH`` voxels (``inf`` when they hold no target)."""
    n0 = a.size - 1
    n1 = cx.shape[0]
    best = np.inf
    if lm[y] < n0:
        best = _own_line_min(cx[y], a, c, z, a[lm[y]])
    for d in range(1, min(n1, _BOUND_REACH + 1)):
        if b[d] >= best or (y - d < 0 and y + d >= n1):
            break
        if y - d >= 0:
            best = min(best, (a[cx[y - d, z]] + b[d]) + c[0])
        if y + d < n1:
            best = min(best, (a[cx[y + d, z]] + b[d]) + c[0])
    return best


@_compiled(parallel=True)
def _estimates(
    col: NDArray[Any],
    line_min: NDArray[np.int64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    c: NDArray[np.float64],
    q0: NDArray[np.int64],
    q1: NDArray[np.int64],
    q2: NDArray[np.int64],
    s2: float,
) -> NDArray[np.float64]:
    """Per query, the cost of :func:`_scan` in scanned terms if its best value never fell
    below ``best0`` (:func:`_upper_bound`): ``_LINE_TERMS`` per line it visits, plus for each
    line not skipped by its lower bound ``low`` the window of half-width
    ``sqrt(best0 - low) / s2`` that it evaluates; ``inf`` when ``best0`` is."""
    n0, n1, n2 = col.shape
    m = q0.size
    est = np.empty(m, dtype=np.float64)
    for i in prange(m):
        x, y, z = q0[i], q1[i], q2[i]
        cx = col[x]
        lm = line_min[x]
        best = _upper_bound(cx, lm, a, b, c, y, z)
        terms = 0.0 if best < np.inf else np.inf
        for d in range(0, n1 if best < np.inf else 0):
            if b[d] >= best or (y - d < 0 and y + d >= n1):
                break
            for side in range(2 if d > 0 else 1):
                yy = y - d if side == 0 else y + d
                if 0 <= yy < n1:
                    terms += _LINE_TERMS
                    if lm[yy] < n0:
                        room = best - (a[lm[yy]] + b[d])
                        if room > 0.0:
                            terms += 2.0 * min(math.sqrt(room) / s2, n2) + 1.0
        est[i] = terms
    return est


@_compiled(parallel=True)
def _scan(
    col: NDArray[Any],
    line_min: NDArray[np.int64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    c: NDArray[np.float64],
    q0: NDArray[np.int64],
    q1: NDArray[np.int64],
    q2: NDArray[np.int64],
    chunks: int,
) -> NDArray[np.float64]:
    """D at the query points by a pruned scan of their plane of axis 0 (path ``scan``).

    From the upper bound of :func:`_upper_bound`, lines of axis 2 are taken outward from
    the query's own; at offset d1 the scan stops once ``b[d1]`` reaches the best value (a
    lower bound of every term of that line and of farther ones), and skips a line whose own
    lower bound ``fl(a[line_min] + b[d1])`` does.
    """
    n0, n1, _ = col.shape
    m = q0.size
    out = np.empty(m, dtype=np.float64)
    for t in prange(chunks):
        for i0 in range(t * _BLOCK, m, chunks * _BLOCK):
            for i in range(i0, min(i0 + _BLOCK, m)):
                x, y, z = q0[i], q1[i], q2[i]
                cx = col[x]
                lm = line_min[x]
                best = _upper_bound(cx, lm, a, b, c, y, z)
                for d in range(1, n1):
                    if b[d] >= best or (y - d < 0 and y + d >= n1):
                        break
                    if y - d >= 0 and lm[y - d] < n0:
                        low = a[lm[y - d]] + b[d]
                        if low < best:
                            best = _line_min(cx[y - d], a, b[d], c, z, low, best)
                    if y + d < n1 and lm[y + d] < n0:
                        low = a[lm[y + d]] + b[d]
                        if low < best:
                            best = _line_min(cx[y + d], a, b[d], c, z, low, best)
                out[i] = best
    return out


@_compiled(parallel=True)
def _envelopes(
    col: NDArray[Any],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    inv_s: float,
    planes: NDArray[np.int64],
    chunks: int,
) -> NDArray[np.float64]:
    """G1 on the given planes of axis 0 (path ``envelope``), in (plane, axis 2, axis 1) layout
    so that the lines of the envelope (along axis 1) are contiguous."""
    n0, n1, n2 = col.shape
    g = np.empty((planes.size, n2, n1), dtype=np.float64)
    m = planes.size * n2
    for t in prange(chunks):
        row = np.empty(n1, dtype=np.float64)
        v = np.empty(n1 + 1, dtype=np.int32)
        hv = np.empty(n1 + 1, dtype=np.float64)
        zz = np.empty(n1 + 1, dtype=np.float64)
        risky = np.empty(n1, dtype=np.bool_)
        for k0 in range(t * _BLOCK, m, chunks * _BLOCK):
            for k in range(k0, min(k0 + _BLOCK, m)):
                j, z = k // n2, k % n2
                cx = col[planes[j]]
                empty = True
                for y in range(n1):
                    e = cx[y, z]
                    if e < n0:
                        row[y] = a[e]
                        empty = False
                    else:
                        row[y] = np.inf
                gz = g[j, z]
                if empty:
                    gz[:] = np.inf
                else:
                    _envelope_row(row, b, inv_s, gz, v, hv, zz, risky)
    return g


@_compiled(parallel=False)
def _along_axis2(
    g: NDArray[np.float64],
    plane_index: NDArray[np.int64],
    c: NDArray[np.float64],
    q0: NDArray[np.int64],
    q1: NDArray[np.int64],
    q2: NDArray[np.int64],
) -> NDArray[np.float64]:
    """D at the query points: pruned scan of G1 along axis 2 (layout as ``_envelopes``)."""
    n2 = g.shape[1]
    m = q0.size
    out = np.empty(m, dtype=np.float64)
    for i in range(m):
        x, y, z = plane_index[q0[i]], q1[i], q2[i]
        best = g[x, z, y]
        for d in range(1, n2):
            cd = c[d]
            if cd >= best or (z - d < 0 and z + d >= n2):
                break
            if z - d >= 0:
                best = min(best, g[x, z - d, y] + cd)
            if z + d < n2:
                best = min(best, g[x, z + d, y] + cd)
        out[i] = best
    return out


def nearest_squared(
    target: NDArray[np.bool_],
    q: tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]],
    spacing_mm: tuple[float, float, float],
    *,
    path: Path = "auto",
) -> NDArray[np.float64]:
    """D(q) of the module docstring for query voxels ``q`` (index arrays into ``target``).

    Parameters
    ----------
    target : bool 3-D array, at least one True voxel.
    q : three integer index arrays of equal length, inside ``target``'s shape.
    spacing_mm : voxel spacing in mm, array-axis order.
    path : ``"auto"`` chooses per plane of axis 0 (module docstring); ``"scan"`` and
        ``"envelope"`` force one path for every query (tests). All give the same values.

    Returns
    -------
    float64 squared distances in mm², one per query point; ``sqrt`` of them are the exact
    nearest-target distances. Memory: the column distances (2 bytes per voxel of ``target``)
    plus 8 bytes per voxel of the planes that take the envelope path, at most
    ``_ENVELOPE_BATCH_VOXELS`` of them at a time (128 MiB).
    """
    n0, n1, n2 = target.shape
    a, b, c = (square_table(max(target.shape), s) for s in spacing_mm)
    a = np.append(a[:n0], np.inf)  # a[n0]: no target in the column
    q0, q1, q2 = (np.ascontiguousarray(x, dtype=np.int64) for x in q)
    dtype = np.uint16 if n0 <= np.iinfo(np.uint16).max else np.int64
    chunks = _CHUNKS_PER_THREAD * get_num_threads()
    col, line_min = _columns(np.ascontiguousarray(target), dtype)
    s1, s2 = float(spacing_mm[1]), float(spacing_mm[2])
    if path == "auto":  # the scan's estimated terms per plane, from a sample of the queries
        pick = np.flatnonzero((np.arange(q0.size) % _ESTIMATE_STEP == 0) | _plane_starts(q0))
        est = _estimates(col, line_min, a, b, c, q0[pick], q1[pick], q2[pick], s2)
        weight = np.diff(np.append(pick, q0.size))  # each sample stands for the queries after it
        plane_terms = np.bincount(q0[pick], weights=est * weight, minlength=n0)
        scan_plane = plane_terms <= _SCAN_TERMS_PER_VOXEL * (n1 * n2)
    else:
        scan_plane = np.full(n0, path == "scan")
    if scan_plane.all():  # the common case: no copies of the queries
        out: NDArray[np.float64] = _scan(col, line_min, a, b, c, q0, q1, q2, chunks)
        return out
    by_scan = scan_plane[q0]
    out = np.empty(q0.size, dtype=np.float64)
    if by_scan.any():
        s = np.flatnonzero(by_scan)
        out[s] = _scan(col, line_min, a, b, c, q0[s], q1[s], q2[s], chunks)
    if not by_scan.all():
        inv_s = 1.0 / (s1 * s1)
        env_planes = np.unique(q0[~by_scan])
        per_batch = max(1, _ENVELOPE_BATCH_VOXELS // (n1 * n2))
        for k in range(0, env_planes.size, per_batch):  # bounded memory: batches of planes
            planes = env_planes[k : k + per_batch]
            plane_index = np.full(n0, -1, dtype=np.int64)
            plane_index[planes] = np.arange(planes.size)
            e = np.flatnonzero(~by_scan & (plane_index[q0] >= 0))
            g = _envelopes(col, a, b, inv_s, planes, chunks)
            out[e] = _along_axis2(g, plane_index, c, q0[e], q1[e], q2[e])
    return out


def _plane_starts(q0: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether each query starts a run of queries in one plane of axis 0."""
    out = np.ones(q0.size, dtype=bool)
    out[1:] = q0[1:] != q0[:-1]
    return out


def run_concurrently(tasks: Sequence[Callable[[], _T]]) -> list[_T]:
    """The results of ``tasks``, run on up to ``numba.get_num_threads()`` threads.

    The kernels release the GIL and numpy's large array operations do too, so the tasks
    overlap; each thread gets its share of numba's threads for the kernels it launches.
    The tasks run one after the other in the calling thread when there is one thread (e.g.
    ``NUMBA_NUM_THREADS=1``) or numba's threading layer is ``workqueue``, which must not
    launch kernels from several threads at once.
    """
    threads = get_num_threads()
    workers = min(len(tasks), threads)
    if workers <= 1 or not _layer_is_thread_safe():
        return [task() for task in tasks]
    share = max(1, threads // workers)

    def run(task: Callable[[], _T]) -> _T:
        numba.set_num_threads(share)  # this worker thread only
        return task()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, task) for task in tasks]
        return [f.result() for f in futures]


@lru_cache(maxsize=1)
def _layer_is_thread_safe() -> bool:
    """Whether numba's threading layer (started by one tiny kernel call) is omp or tbb."""
    _columns(np.zeros((1, 1, 1), dtype=bool), np.uint16)
    return str(numba.threading_layer()) != "workqueue"  # type: ignore[attr-defined]


def warm_up() -> float:
    """Compile (or load from the cache) every kernel; returns the seconds it took."""
    import time

    t0 = time.perf_counter()
    t = np.zeros((3, 3, 3), dtype=bool)
    t[0, 0, 0] = True
    idx = np.array([2], dtype=np.intp)
    for path in ("scan", "envelope"):
        nearest_squared(t, (idx, idx, idx), (1.0, 1.0, 1.0), path=path)
    return math.fsum([time.perf_counter() - t0])
