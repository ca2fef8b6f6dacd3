"""Every path of the exact distance engine against brute force and the DeepMind oracle.

The engine (:mod:`assay.metrics._distances`, :mod:`assay.metrics._edt`) has several exact
paths: numba shell search, k-d tree for a few far points, and the column transform with a
pruned ``scan`` or an ``envelope`` per plane, run on threads by ``surface_distances``. Each
must give the smallest float64 lattice distance ``sqrt(((o0·s0)² + (o1·s1)²) + (o2·s2)²)``
over all targets, bit for bit (``np.array_equal``): the oracle is that formula evaluated on
every (query, target) pair (:func:`assay.metrics.lattice_distance`, scipy's order of
operations), and for surfels DeepMind ``surface-distance`` 0.1 (exact up to its one-ulp tie
choices, as in ``test_metrics_parity.py``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numba
import numpy as np
import pytest
from numpy.typing import NDArray

import assay.metrics._distances as distances_module
from assay.metrics import bounding_box, lattice_distance, nearest_distances, surface_distances
from assay.metrics._edt import nearest_squared, run_concurrently
from assay.metrics._geometry import (
    _box_strided,
    neighbour_codes,
    padded_crop,
    surfel_area_table,
    voxel_surface,
)
from assay.metrics._surface import _surfel_points, _voxel_points

BoolArray = NDArray[np.bool_]
Spacing = tuple[float, float, float]
FULL_BOX = (slice(None), slice(None), slice(None))
SPACINGS: list[Spacing] = [
    (1.0, 1.0, 1.0),  # isotropic: many real ties that differ by an ulp in float64
    (0.9, 0.9, 0.9),
    (0.8, 0.8, 1.5),
    (0.7, 1.3, 2.5),
    (3.0, 0.5, 0.5),  # coarse axis 0: the column axis of the transform
]
PATHS = ["auto", "scan", "envelope"]


def _brute(query: BoolArray, target: BoolArray, spacing: Spacing) -> NDArray[np.float64]:
    """Smallest lattice distance from every query voxel (C order) to any target voxel."""
    t = np.argwhere(target)
    if len(t) == 0:
        return np.full(np.count_nonzero(query), np.inf)
    return np.array([lattice_distance(t - q, spacing).min() for q in np.argwhere(query)])


def _transform(target: BoolArray, query: BoolArray, spacing: Spacing, path: str) -> Any:
    return np.sqrt(nearest_squared(target, np.nonzero(query), spacing, path=path))  # type: ignore[arg-type]


def _ellipsoid(shape: tuple[int, int, int], centre: Any, radii: Any) -> BoolArray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0  # type: ignore[no-any-return]


def _border(mask: BoolArray) -> BoolArray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# The column transform: each path == brute force
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_transform_paths_equal_brute_force_on_random_masks(spacing: Spacing, path: str) -> None:
    """Sparse and dense random targets (far points, ties), random queries: == brute force."""
    rng = np.random.default_rng(int(sum(spacing) * 100) + PATHS.index(path))
    for _ in range(5):
        shape = tuple(int(v) for v in rng.integers(6, 30, 3))
        target = rng.random(shape) < rng.choice([0.0005, 0.004, 0.03, 0.3])
        target[tuple(int(rng.integers(0, s)) for s in shape)] = True
        query = rng.random(shape) < 0.08
        assert np.array_equal(
            _transform(target, query, spacing, path), _brute(query, target, spacing)
        )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_transform_paths_on_adversarial_inputs(spacing: Spacing, path: str) -> None:
    """Single target voxel in a corner, targets only on the grid faces, a one-voxel-thick
    grid along each axis, queries on top of targets and in a single plane: == brute force."""
    cases: list[tuple[BoolArray, BoolArray]] = []
    corner = np.zeros((9, 11, 7), dtype=bool)
    corner[0, 0, 0] = True
    cases.append((corner, np.ones_like(corner)))
    faces = np.zeros((10, 9, 8), dtype=bool)
    faces[0], faces[:, -1], faces[:, :, 0] = True, True, True
    cases.append((faces, ~faces | (np.indices(faces.shape).sum(axis=0) % 5 == 0)))
    for axis in range(3):
        shape = [7, 8, 9]
        shape[axis] = 1
        thin = np.zeros(shape, dtype=bool)
        thin.flat[[0, thin.size // 2, thin.size - 1]] = True
        cases.append((thin, np.ones_like(thin)))
    plane = np.zeros((12, 10, 10), dtype=bool)
    plane[2, 3, 4] = plane[11, 9, 0] = True
    q = np.zeros_like(plane)
    q[7] = True
    cases.append((plane, q))
    for target, query in cases:
        assert np.array_equal(
            _transform(target, query, spacing, path), _brute(query, target, spacing)
        )


@pytest.mark.parametrize("path", PATHS)
def test_envelope_three_way_tie_beyond_the_current_parabola(path: str) -> None:
    """Targets at offsets (2, -14, 0), (10, -10, 0) and (14, -2, 0) from the query at
    (0.8, 0.8, 1.5) mm: all three are sqrt(128) mm in real numbers; in float64 the middle one
    is 128.0 and the others 128.00000000000003. The three model parabolas of the envelope
    cross exactly at the query, a crossing flagged while a parabola left of the query is
    added; the flag must survive until the query is evaluated (the first transform cleared
    it, and returned the larger value here, as found on the 'shift 16' benchmark profile)."""
    spacing = (0.8, 0.8, 1.5)
    target = np.zeros((20, 20, 3), dtype=bool)
    query = np.zeros_like(target)
    x, y, z = 2, 16, 1
    query[x, y, z] = True
    for o in [(2, -14, 0), (10, -10, 0), (14, -2, 0)]:
        target[x + o[0], y + o[1], z + o[2]] = True
    got = _transform(target, query, spacing, path)
    assert got[0] == np.sqrt(128.0) == _brute(query, target, spacing)[0]


def test_transform_int64_columns_for_a_long_axis_0() -> None:
    """Axis 0 longer than uint16 can count: the column distances switch to int64; still ==
    brute force (a 70,000-voxel line)."""
    target = np.zeros((70_000, 1, 2), dtype=bool)
    target[3, 0, 1] = target[69_990, 0, 0] = True
    query = np.zeros_like(target)
    query[[0, 35_000, 69_999], 0, :] = True
    for path in PATHS:
        got = _transform(target, query, (0.5, 1.0, 1.0), path)
        t = np.argwhere(target)
        want = np.array(
            [lattice_distance(t - q, (0.5, 1.0, 1.0)).min() for q in np.argwhere(query)]
        )
        assert np.array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# nearest_distances: every policy branch == brute force
# ---------------------------------------------------------------------------------------------


def _shifted_pair(shift: int) -> tuple[BoolArray, BoolArray]:
    ref = _border(_ellipsoid((44, 36, 30), (20, 18, 15), (11, 9, 8)))
    pred = np.zeros_like(ref)
    pred[shift:] = ref[: ref.shape[0] - shift]
    return ref, pred


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 1.5), (0.7, 1.3, 2.5)])
def test_nearest_distances_branches_equal_brute_force(
    spacing: Spacing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shells only (shift 2), the up-front switch of every point to the transform (shift 12,
    minimum point count lowered for a small grid) on the estimated cost of all shells and on
    that of the first shells alone, shells then the k-d tree (a far blob), and shells cut by
    the budget then the transform: each == brute force, and the branch is the one named
    (spies on the transform and the tree)."""
    calls: dict[str, list[int]] = {"transform": [], "tree": []}
    transform, tree = distances_module.nearest_squared, distances_module._tree_distances

    def spy_transform(target: Any, q: Any, spacing_mm: Any) -> Any:
        calls["transform"].append(int(q[0].size))
        return transform(target, q, spacing_mm)

    def spy_tree(q_idx: Any, which: Any, target: Any, spacing_mm: Any) -> Any:
        calls["tree"].append(int(which.size))
        return tree(q_idx, which, target, spacing_mm)

    monkeypatch.setattr(distances_module, "nearest_squared", spy_transform)
    monkeypatch.setattr(distances_module, "_tree_distances", spy_tree)
    monkeypatch.setattr(distances_module, "_EDT_MIN_POINTS", 50)

    def run(query: BoolArray, target: BoolArray) -> tuple[int, int]:
        for v in calls.values():
            v.clear()
        got = nearest_distances(query, target, spacing)
        assert np.array_equal(got, _brute(query, target, spacing))
        return len(calls["transform"]), len(calls["tree"])

    ref, pred = _shifted_pair(2)
    assert run(ref, pred) == (0, 0)  # shells settle every point
    ref, pred = _shifted_pair(12)
    n = np.count_nonzero(ref)
    assert run(ref, pred) == (1, 0) and calls["transform"] == [n]  # every point at once
    far = np.zeros((90, 36, 30), dtype=bool)
    far[:44] = ref
    query = far.copy()
    query[85:88, 2:5, 2:5] = True  # 27 points > 40 voxels from the target: the tree
    assert run(query, far) == (0, 1) and calls["tree"] == [27]
    monkeypatch.setattr(distances_module, "_SWITCH_RATIO", 1e9)  # no switch on total cost
    ref, pred = _shifted_pair(12)
    # ... but the first shells would leave many points to the transform: all at once
    assert run(ref, pred) == (1, 0) and calls["transform"] == [n]
    monkeypatch.setattr(distances_module, "_SWITCH_FIRST_TESTS", math.inf)  # no up-front switch
    monkeypatch.setattr(distances_module, "_TREE_TESTS_PER_TARGET", 0)  # no shells past R1
    t, _ = run(ref, pred)
    assert t == 1 and 0 < calls["transform"][0] < n  # shells first, the rest transformed


def test_nearest_distances_empty_and_single_voxel() -> None:
    """Empty target: +inf; empty query: empty; one voxel each on the grid border: the exact
    lattice distance."""
    shape = (6, 7, 8)
    a = np.zeros(shape, dtype=bool)
    b = np.zeros(shape, dtype=bool)
    a[0, 0, 0] = True
    assert np.array_equal(nearest_distances(a, b, (1.0, 1.0, 1.0)), [np.inf])
    assert nearest_distances(b, a, (1.0, 1.0, 1.0)).size == 0
    b[5, 6, 7] = True
    got = nearest_distances(a, b, (0.8, 0.8, 1.5))
    assert got[0] == lattice_distance(np.array([[5, 6, 7]]), (0.8, 0.8, 1.5))[0]


# ---------------------------------------------------------------------------------------------
# Threads: surface_distances on two threads == one thread, DeepMind surfels
# ---------------------------------------------------------------------------------------------


def test_run_concurrently_keeps_order_and_runs_sequentially_on_one_thread() -> None:
    """Results come back in task order with threads and without (one numba thread)."""
    tasks = [lambda k=k: k * k for k in range(7)]
    assert run_concurrently(tasks) == [k * k for k in range(7)]
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert run_concurrently(tasks) == [k * k for k in range(7)]
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 1.5), (1.0, 1.0, 1.0)])
def test_surface_distances_threads_equal_sequential_and_deepmind(spacing: Spacing) -> None:
    """A 9-voxel shift plus a far blob, the structure touching the grid border: the four
    directed arrays on threads == sequential == brute force; surfel distances == DeepMind's
    up to its one-ulp tie choices (never above them)."""
    ref = _ellipsoid((40, 34, 28), (19, 16, 13), (11, 9, 8))
    ref[:, :, :3] |= _ellipsoid((40, 34, 28), (19, 16, 0), (6, 6, 6))[:, :, :3]  # on a face
    pred = np.zeros_like(ref)
    pred[9:] = ref[:-9]
    pred[0:3, 30:33, 24:27] = True
    box = bounding_box(ref | pred)
    assert box is not None
    threaded = surface_distances(pred, ref, spacing, box=box, surfels=True)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        sequential = surface_distances(pred, ref, spacing, box=box, surfels=True)
    finally:
        numba.set_num_threads(before)
    fields = ("ref_to_pred", "pred_to_ref", "surfel_ref_to_pred", "surfel_pred_to_ref")
    for field in (*fields, "surfel_area_ref", "surfel_area_pred"):
        assert np.array_equal(getattr(threaded, field), getattr(sequential, field)), field
    sr, sp = _border(ref), _border(pred)
    assert np.array_equal(threaded.ref_to_pred, _brute(sr, sp, spacing))
    assert np.array_equal(threaded.pred_to_ref, _brute(sp, sr, spacing))
    import surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        dm = surface_distance.compute_surface_distances(ref, pred, spacing)
    for got, want in [
        (np.sort(threaded.surfel_ref_to_pred), dm["distances_gt_to_pred"]),  # type: ignore[arg-type]
        (np.sort(threaded.surfel_pred_to_ref), dm["distances_pred_to_gt"]),  # type: ignore[arg-type]
    ]:
        assert got.shape == want.shape and np.all(got <= want)
        differ = got != want
        assert np.all(want[differ] - got[differ] <= 2 * np.spacing(want[differ]))
        assert np.count_nonzero(differ) <= 0.01 * got.size


def test_compiled_surfaces_equal_numpy_surfaces() -> None:
    """The compiled surfel and voxel-surface passes of ``surface_distances`` == the numpy
    definitions (:func:`neighbour_codes`, :func:`voxel_surface`), their ``np.nonzero`` points
    and surfel areas, on random masks of every density, thin and one-voxel ones included."""
    rng = np.random.default_rng(3)
    table = surfel_area_table((0.8, 0.8, 1.5))
    for _ in range(60):
        shape = tuple(int(v) for v in rng.integers(1, 14, 3))
        mask = rng.random(shape) < rng.choice([0.0, 0.05, 0.5, 0.95, 1.0])
        padded = padded_crop(mask, FULL_BOX)
        codes = neighbour_codes(padded)
        on = (codes != 0) & (codes != 255)
        grid, *points, area = _surfel_points(padded.view(np.uint8), table)
        assert np.array_equal(grid, on)
        assert all(np.array_equal(u, v) for u, v in zip(points, np.nonzero(on), strict=True))
        assert np.array_equal(area, table[codes[on]])
        surface = voxel_surface(padded)
        grid, *points = _voxel_points(padded.view(np.uint8))
        assert np.array_equal(grid, surface)
        assert all(np.array_equal(u, v) for u, v in zip(points, np.nonzero(surface), strict=True))


# ---------------------------------------------------------------------------------------------
# Bounding boxes: the word-wise path == boolean reductions
# ---------------------------------------------------------------------------------------------


def test_bounding_box_word_path_equals_reductions() -> None:
    """Random masks (empty, one voxel, voxels on the faces), last axis a multiple of 8 or
    not, C, Fortran and strided layouts: the same box as the boolean reductions."""
    rng = np.random.default_rng(11)
    for _ in range(400):
        shape = (
            int(rng.integers(1, 10)),
            int(rng.integers(1, 10)),
            int(rng.choice([1, 5, 8, 16, 13])),
        )
        m = rng.random(shape) < rng.choice([0.0, 0.002, 0.05, 0.5])
        if rng.random() < 0.2:
            m[:] = False
            m[tuple(int(rng.choice([0, s - 1])) for s in shape)] = True
        for v in (m, np.asfortranarray(m), m[:, ::-1], m.transpose(2, 0, 1)):
            assert bounding_box(v) == _box_strided(v)


def test_envelope_batches_of_planes_equal_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The envelope path's memory bound (planes in batches): one plane per batch gives the
    same values as all planes at once, and both == brute force."""
    import assay.metrics._edt as edt_module

    rng = np.random.default_rng(5)
    target = rng.random((17, 13, 11)) < 0.01
    target[0, 0, 0] = True
    query = rng.random(target.shape) < 0.2
    spacing = (0.8, 0.8, 1.5)
    whole = _transform(target, query, spacing, "envelope")
    monkeypatch.setattr(edt_module, "_ENVELOPE_BATCH_VOXELS", 1)
    batched = _transform(target, query, spacing, "envelope")
    assert np.array_equal(whole, batched)
    assert np.array_equal(batched, _brute(query, target, spacing))


def test_run_concurrently_without_a_thread_safe_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """With numba's workqueue layer (not thread-safe) the tasks run in the calling thread:
    same results, in order, and surface_distances == brute force."""
    import threading

    import assay.metrics._edt as edt_module

    monkeypatch.setattr(edt_module, "_layer_is_thread_safe", lambda: False)
    caller = threading.get_ident()
    assert run_concurrently([threading.get_ident, threading.get_ident]) == [caller, caller]
    ref, pred = _shifted_pair(3)
    sd = surface_distances(pred, ref, (0.8, 0.8, 1.5), box=FULL_BOX, surfels=False)
    assert np.array_equal(sd.ref_to_pred, _brute(ref, pred, (0.8, 0.8, 1.5)))
