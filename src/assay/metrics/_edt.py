"""Exact float64 nearest-target squared distances by a separable transform (numba).

For a query voxel q and the target voxels t the result is

    D(q) = min_t fl(fl(A[|t0 - q0|] + B[|t1 - q1|]) + C[|t2 - q2|]),
    A[d] = fl(fl(d·s0)²),  B[d] = fl(fl(d·s1)²),  C[d] = fl(fl(d·s2)²),

i.e. the smallest of the float64 values scipy's EDT (and :func:`lattice_distance`) computes
for the offsets to all targets, in the same order of operations. ``sqrt(D)`` then equals the
distance of the current engine bit for bit, ties included (the smallest float wins).

Why a separable computation is exact here: correctly rounded addition is monotone,
``u <= u'  =>  fl(u + v) <= fl(u' + v)``, so a minimum can be taken before the addition:

    D(q) = min_{t2} fl(G1(q0, q1, t2) + C[|t2 - q2|]),
    G1(q0, q1, t2) = min_{t1} fl(G0(q0, t1, t2) + B[|t1 - q1|]),
    G0(q0, t1, t2) = A[min_{t0} |t0 - q0|]     (A is non-decreasing).

Stage 1 (axis 0) is two scans. Stage 2 (axis 1) is the lower envelope of parabolas
(Felzenszwalb & Huttenlocher 2012) computed on the real-valued model g[p] + s1²(q - p)²;
the float64 minimum can differ from the model's only at (near) ties, i.e. where two model
parabolas cross within ``_TOL`` of an integer q. Such q are evaluated on every envelope
parabola whose breakpoint is that close, and where a parabola was dropped at a (near)
triple crossing, by a direct scan of the row. Stage 3 (axis 2) is evaluated at the query
points only, by a direct scan outward from q that stops once C[d] reaches the best value
(every later term is at least C[d]). Every minimum is therefore taken over float64 values
computed exactly as above: no tolerance enters a result.

Stages 1 and 2 run fused, one plane of constant axis 2 at a time (the axis-0 distances of a
plane stay in a cache-sized buffer and each row's envelope goes straight into the result),
and only for the planes of axis 0 that hold query points: stage 3 reads no other plane, so
a missed part or a cut-off query set costs only its own planes.

The kernels are compiled with ``@njit(cache=True, parallel=True)``; the first call in a
fresh environment compiles them (a few seconds, then cached on disk next to this file).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

_F = TypeVar("_F", bound=Callable[..., Any])

#: Crossings of model parabolas closer than this (in voxels) to an integer are (near) ties.
_TOL = 1e-6


def _compiled(parallel: bool) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], njit(cache=True, parallel=parallel, nogil=True))


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
    for p in range(n):
        risky[p] = False
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
def _stages01(
    target_t: NDArray[np.bool_],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    inv_s: float,
    need: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """G1 (stages 1 and 2 fused, one plane of constant axis 2 at a time).

    ``target_t`` and the result are in (axis 0, axis 2, axis 1) layout, so that the lines of
    the envelope (along axis 1) are contiguous. Per plane, the axis-0 scans fill a small
    buffer (cache-resident) and each row's envelope is written straight into the result.
    Only planes of axis 0 with ``need[x]`` (those holding query points) are computed; the
    others are left uninitialised (stage 3 never reads them).
    """
    n0, n2, n1 = target_t.shape
    far = 2 * n0 + 2  # farther than any line: no target on that side
    g = np.empty((n0, n2, n1), dtype=np.float64)
    for z in prange(n2):
        last = np.empty(n1, dtype=np.int32)
        fwd = np.empty((n0, n1), dtype=np.int32)
        row = np.empty(n1, dtype=np.float64)
        v = np.empty(n1 + 1, dtype=np.int32)
        hv = np.empty(n1 + 1, dtype=np.float64)
        zz = np.empty(n1 + 1, dtype=np.float64)
        risky = np.empty(n1, dtype=np.bool_)
        last[:] = -far
        for x in range(n0):
            tx = target_t[x, z]
            fx = fwd[x]
            for y in range(n1):
                if tx[y]:
                    last[y] = x
                fx[y] = x - last[y]
        last[:] = far
        for x in range(n0 - 1, -1, -1):
            tx = target_t[x, z]
            if not need[x]:
                for y in range(n1):
                    if tx[y]:
                        last[y] = x
                continue
            fx = fwd[x]
            empty = True
            for y in range(n1):
                if tx[y]:
                    last[y] = x
                d = min(fx[y], last[y] - x)
                if d < n0:
                    row[y] = a[d]
                    empty = False
                else:
                    row[y] = np.inf
            gx = g[x, z]
            if empty:
                gx[:] = np.inf
            else:
                _envelope_row(row, b, inv_s, gx, v, hv, zz, risky)
    return g


@_compiled(parallel=True)
def _stage2(
    g: NDArray[np.float64],
    c: NDArray[np.float64],
    q0: NDArray[np.int64],
    q1: NDArray[np.int64],
    q2: NDArray[np.int64],
) -> NDArray[np.float64]:
    """D at the query points: direct pruned scan of G1 along axis 2 (layout as stage 0)."""
    n2 = g.shape[1]
    m = q0.size
    out = np.empty(m, dtype=np.float64)
    for i in prange(m):
        x, y, z = q0[i], q1[i], q2[i]
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
) -> NDArray[np.float64]:
    """D(q) of the module docstring for query voxels ``q`` (index arrays into ``target``).

    Parameters
    ----------
    target : bool 3-D array, at least one True voxel.
    q : three integer index arrays of equal length, inside ``target``'s shape.
    spacing_mm : voxel spacing in mm, array-axis order.

    Returns
    -------
    float64 squared distances in mm², one per query point; ``sqrt`` of them are the exact
    nearest-target distances. Memory: one float64 array the size of ``target`` (plus a
    transposed bool copy of it).
    """
    n = max(target.shape)
    a, b, c = (square_table(n, s) for s in spacing_mm)
    need = np.zeros(target.shape[0], dtype=np.bool_)
    need[q[0]] = True
    inv_s = 1.0 / (spacing_mm[1] * spacing_mm[1])
    g = _stages01(np.ascontiguousarray(target.transpose(0, 2, 1)), a, b, inv_s, need)
    out: NDArray[np.float64] = _stage2(g, c, *(np.ascontiguousarray(x, dtype=np.int64) for x in q))
    return out


def warm_up() -> float:
    """Compile (or load from the cache) every kernel; returns the seconds it took."""
    import time

    t0 = time.perf_counter()
    t = np.zeros((3, 3, 3), dtype=bool)
    t[0, 0, 0] = True
    idx = np.array([2], dtype=np.intp)
    nearest_squared(t, (idx, idx, idx), (1.0, 1.0, 1.0))
    return math.fsum([time.perf_counter() - t0])
