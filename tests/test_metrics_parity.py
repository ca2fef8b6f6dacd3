"""Parity of :mod:`assay.metrics` with the reference implementations (DESIGN.md §3).

Oracles and the tolerance each one is held to:

* DeepMind ``surface-distance`` 0.1 (``compute_surface_distances(mask_gt, mask_pred, spacing)``,
  note the (reference, prediction) argument order): surfel distance and surfel area multisets
  equal **exactly** (float64 bit for bit, ``np.array_equal`` after sorting by (distance, area),
  DeepMind's own order); ``compute_robust_hausdorff`` equal exactly; the NSD of
  ``compute_surface_dice_at_tolerance`` within 1e-12 relative (the same decisions ``d <= τ``;
  only the order of the area sums differs); the area lookup table equal exactly.
  Known limitation: surface-distance 0.1 still uses ``np.Inf``/``np.NaN`` on its empty-mask
  paths, which crash under numpy 2, so it is only ever called on non-empty pairs here; it
  also calls the deprecated ``scipy.ndimage.filters``/``morphology`` namespaces, whose
  ``DeprecationWarning`` is silenced locally around the call.
* MedPy 0.5.2 ``medpy.metric.binary`` (arguments ``(result=pred, reference=ref, voxelspacing)``):
  ``hd`` exactly; ``hd95`` (one percentile over both directions pooled) within 1e-12 relative;
  ``assd`` — in 0.5.2 the **pooled** mean ``concatenate([d(P→R), d(R→P)]).mean()`` — equals
  assay ``assd`` within 1e-12 relative; the mean of ``asd(pred, ref)`` and ``asd(ref, pred)``
  equals assay ``masd`` within 1e-12 relative; ``dc`` equals ``dsc`` exactly.
* scipy directly: ``distance_transform_edt(~border(R), sampling=s)[border(P)]`` with
  ``border(m) = m ^ binary_erosion(m)`` gives the voxel-surface distance multisets, equal
  exactly after sorting.
* MONAI 1.6 (``[1, 1, X, Y, Z]`` float tensors, ``include_background=True`` because the
  default ``False`` would drop our single channel): MONAI casts distances to float32 and
  compares ``d <= τ`` in float32, so NSD ``voxel`` is compared within 1e-6 absolute and
  HD / HD95 (``max`` over directions of ``torch.quantile``) / symmetric ASD within 1e-6
  relative. Its warnings (deprecated ``always_return_as_numpy`` argument) are silenced
  locally inside the call.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

import assay.metrics._distances as distances_module
from assay.metrics import (
    PROFILES,
    Profile,
    StructureResult,
    assd,
    dice,
    hausdorff,
    hausdorff_percentile,
    label_map_metrics,
    masd,
    nearest_distances,
    nsd,
    structure_metrics,
    surface_distances,
    surfel_area_table,
)

BoolArray = NDArray[np.bool_]
Spacing = tuple[float, float, float]
FULL_BOX = (slice(None), slice(None), slice(None))

# ---------------------------------------------------------------------------------------------
# Fixtures: deterministic (seeded) masks, all ≤ 64³.
# ---------------------------------------------------------------------------------------------


def _ellipsoid(shape: tuple[int, int, int], centre: Any, radii: Any) -> BoolArray:
    g = np.indices(shape, dtype=np.float64)
    r2 = sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return np.asarray(r2 <= 1.0)


def _blob(shape: tuple[int, int, int], seed: int, sigma: float, threshold: float) -> BoolArray:
    """Gaussian-filtered white noise, thresholded: an irregular, possibly multi-part mask."""
    rng = np.random.default_rng(seed)
    return np.asarray(ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > threshold)


def _build_far_false_positive() -> tuple[BoolArray, BoolArray, Spacing]:
    shape = (64, 48, 48)
    ref = _ellipsoid(shape, (14, 20, 20), (8, 8, 7))
    pred = _ellipsoid(shape, (15, 21, 20), (8, 7, 8))
    pred[55:60, 40:45, 40:45] = True  # ≥ 35 voxels from the reference along axis 0
    return ref, pred, (0.8, 0.8, 1.5)


def _build_border() -> tuple[BoolArray, BoolArray, Spacing]:
    ref = np.zeros((20, 20, 20), dtype=bool)
    ref[0:8, 0:10, 5:20] = True  # touches three array faces
    pred = np.zeros_like(ref)
    pred[0:9, 1:10, 4:20] = True
    pred[15:20, 15:20, 0:3] = True  # a second blob in the opposite corner
    return ref, pred, (1.5, 1.0, 0.8)


def _build_single_voxels() -> tuple[BoolArray, BoolArray, Spacing]:
    ref = np.zeros((10, 10, 10), dtype=bool)
    ref[3, 4, 5] = True
    pred = np.zeros_like(ref)
    pred[5, 4, 7] = True
    return ref, pred, (0.8, 0.8, 1.5)


def _build_voxel_in_ellipsoid() -> tuple[BoolArray, BoolArray, Spacing]:
    ref = _ellipsoid((24, 24, 24), (12, 12, 12), (6, 5, 4))
    pred = np.zeros_like(ref)
    pred[12, 12, 12] = True  # one voxel deep inside the reference
    return ref, pred, (1.0, 2.5, 0.7)


_BUILDERS: dict[str, Callable[[], tuple[BoolArray, BoolArray, Spacing]]] = {
    "ellipsoids_0.8x0.8x1.5": lambda: (
        _ellipsoid((40, 40, 40), (20, 20, 20), (12, 10, 8)),
        _ellipsoid((40, 40, 40), (21.3, 19, 20.5), (11, 11.5, 9)),
        (0.8, 0.8, 1.5),
    ),
    "ellipsoids_1.0x2.5x0.7": lambda: (
        _ellipsoid((36, 20, 48), (18, 10, 24), (10, 5, 16)),
        _ellipsoid((36, 20, 48), (16, 11, 22), (12, 4, 14)),
        (1.0, 2.5, 0.7),
    ),
    "ellipsoids_1.5_isotropic": lambda: (
        _ellipsoid((32, 32, 32), (16, 16, 16), (9, 7, 8)),
        _ellipsoid((32, 32, 32), (15, 17, 16), (8, 8, 8)),
        (1.5, 1.5, 1.5),
    ),
    "blobs_isotropic": lambda: (
        _blob((32, 32, 32), seed=1, sigma=2.0, threshold=0.05),
        _blob((32, 32, 32), seed=2, sigma=2.0, threshold=0.05),
        (1.0, 1.0, 1.0),
    ),
    "blobs_1.0x2.5x0.7": lambda: (
        _blob((32, 24, 40), seed=3, sigma=2.5, threshold=0.02),
        _blob((32, 24, 40), seed=4, sigma=2.5, threshold=0.02),
        (1.0, 2.5, 0.7),
    ),
    "identical_blob": lambda: (
        _blob((24, 24, 24), seed=5, sigma=2.0, threshold=0.0),
        _blob((24, 24, 24), seed=5, sigma=2.0, threshold=0.0),
        (0.8, 0.8, 1.5),
    ),
    "touching_border": _build_border,
    "single_voxels": _build_single_voxels,
    "voxel_in_ellipsoid": _build_voxel_in_ellipsoid,
    "far_false_positive": _build_far_false_positive,
}
CASES = list(_BUILDERS)


@functools.cache
def _case(name: str) -> tuple[BoolArray, BoolArray, Spacing]:
    """(ref, pred, spacing); arrays are read-only so an in-place write by the engine fails."""
    ref, pred, spacing = _BUILDERS[name]()
    assert ref.any() and pred.any(), name  # DeepMind 0.1 crashes on empty masks (numpy 2)
    ref.setflags(write=False)
    pred.setflags(write=False)
    return ref, pred, spacing


def _taus(spacing: Spacing) -> list[float]:
    """τ values hitting lattice distances exactly: each spacing, the (1, 1, 0) diagonal
    sqrt(s0² + s1²) in float64 (same operation order as the engine and scipy), and round mm."""
    s0, s1, s2 = spacing
    diagonal = math.sqrt(s0 * s0 + s1 * s1)
    return sorted({0.0, s0, s1, s2, diagonal, 1.0, 2.0, 3.0})


def _sd(name: str, surfels: bool = True) -> Any:
    ref, pred, spacing = _case(name)
    return surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=surfels)


# ---------------------------------------------------------------------------------------------
# DeepMind surface-distance 0.1
# ---------------------------------------------------------------------------------------------


@functools.cache
def _deepmind(name: str) -> dict[str, NDArray[np.float64]]:
    import surface_distance

    ref, pred, spacing = _case(name)
    with warnings.catch_warnings():
        # surface-distance 0.1 uses scipy.ndimage.filters / .morphology (deprecated namespaces).
        warnings.simplefilter("ignore", DeprecationWarning)
        out: dict[str, NDArray[np.float64]] = surface_distance.compute_surface_distances(
            ref, pred, spacing
        )
    return out


def _sorted_pairs(d: Any, a: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    order = np.lexsort((a, d))  # by distance, then area: DeepMind's own sort
    return d[order], a[order]


@pytest.mark.parametrize("name", CASES)
def test_deepmind_surfel_distances_and_areas_exact(name: str) -> None:
    """Surfel distance/area multisets == DeepMind compute_surface_distances, bit for bit."""
    sd = _sd(name)
    dm = _deepmind(name)
    d_rp, a_r = _sorted_pairs(sd.surfel_ref_to_pred, sd.surfel_area_ref)
    d_pr, a_p = _sorted_pairs(sd.surfel_pred_to_ref, sd.surfel_area_pred)
    assert np.array_equal(d_rp, dm["distances_gt_to_pred"])
    assert np.array_equal(a_r, dm["surfel_areas_gt"])
    assert np.array_equal(d_pr, dm["distances_pred_to_gt"])
    assert np.array_equal(a_p, dm["surfel_areas_pred"])


@pytest.mark.parametrize("name", CASES)
def test_deepmind_surface_dice_at_tolerance(name: str) -> None:
    """NSD surfel == compute_surface_dice_at_tolerance within 1e-12 relative, at τ on lattice
    distances (where float32 or an epsilon would flip decisions)."""
    import surface_distance

    sd = _sd(name)
    dm = _deepmind(name)
    for tau in _taus(_case(name)[2]):
        expected = surface_distance.compute_surface_dice_at_tolerance(dm, tau)
        assert nsd(sd, tau, "surfel") == pytest.approx(expected, rel=1e-12, abs=0), tau


@pytest.mark.parametrize("name", CASES)
def test_deepmind_robust_hausdorff_exact(name: str) -> None:
    """hausdorff_percentile(…, 'surfel') == compute_robust_hausdorff exactly."""
    import surface_distance

    sd = _sd(name)
    dm = _deepmind(name)
    for percent in (50.0, 90.0, 95.0, 99.0, 100.0):
        expected = surface_distance.compute_robust_hausdorff(dm, percent)
        assert hausdorff_percentile(sd, percent, "surfel") == expected, percent


@pytest.mark.parametrize("name", ["ellipsoids_0.8x0.8x1.5", "blobs_1.0x2.5x0.7", "single_voxels"])
def test_deepmind_profile_end_to_end(name: str) -> None:
    """structure_metrics(profile='deepmind'): nsd at τ = 2 mm within 1e-12 rel, hd95 exact."""
    import surface_distance

    ref, pred, spacing = _case(name)
    dm = _deepmind(name)
    prof = Profile("dm", nsd_variant="surfel", hd95_variant="surfel", extra_tolerances_mm=(1.0,))
    for profile in (PROFILES["deepmind"], prof):
        res = structure_metrics(pred, ref, spacing, profile)
        assert res.status == "ok"
        nsd_2 = surface_distance.compute_surface_dice_at_tolerance(dm, 2.0)
        assert res.values["nsd"] == pytest.approx(nsd_2, rel=1e-12, abs=0)
        assert res.values["hd95"] == surface_distance.compute_robust_hausdorff(dm, 95)
    nsd_1 = surface_distance.compute_surface_dice_at_tolerance(dm, 1.0)
    assert res.values["nsd@1mm"] == pytest.approx(nsd_1, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "spacing",
    [(1.0, 1.0, 1.0), (0.8, 0.8, 1.5), (1.0, 2.5, 0.7), (0.3, 3.0, 1.1), (0.976562, 0.976562, 5.0)],
)
def test_surfel_area_table_matches_deepmind(spacing: Spacing) -> None:
    """surfel_area_table == lookup_tables.create_table_neighbour_code_to_surface_area, exactly."""
    from surface_distance import lookup_tables

    expected = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    assert np.array_equal(surfel_area_table(spacing), expected)


# ---------------------------------------------------------------------------------------------
# MedPy 0.5.2 and scipy's EDT
# ---------------------------------------------------------------------------------------------


def _border(m: BoolArray) -> BoolArray:
    return np.asarray(m ^ ndimage.binary_erosion(m))


@pytest.mark.parametrize("name", CASES)
def test_voxel_surface_distances_match_scipy_edt_exact(name: str) -> None:
    """Voxel-surface distance multisets == scipy distance_transform_edt on erosion borders
    (MedPy's construction), exactly after sorting."""
    ref, pred, spacing = _case(name)
    sd = _sd(name, surfels=False)
    pred_to_ref = ndimage.distance_transform_edt(~_border(ref), sampling=spacing)[_border(pred)]
    ref_to_pred = ndimage.distance_transform_edt(~_border(pred), sampling=spacing)[_border(ref)]
    assert np.array_equal(np.sort(sd.pred_to_ref), np.sort(pred_to_ref))
    assert np.array_equal(np.sort(sd.ref_to_pred), np.sort(ref_to_pred))


@pytest.mark.parametrize("name", CASES)
def test_medpy_distances_and_dice(name: str) -> None:
    """MedPy hd (exact), hd95 pooled, assd (pooled mean), mean of asd both ways (1e-12 rel),
    dc (exact)."""
    from medpy.metric import binary as medpy

    ref, pred, spacing = _case(name)
    sd = _sd(name, surfels=False)
    assert hausdorff(sd) == medpy.hd(pred, ref, voxelspacing=spacing)
    expected_hd95 = medpy.hd95(pred, ref, voxelspacing=spacing)
    assert hausdorff_percentile(sd, 95.0, "pooled") == pytest.approx(expected_hd95, rel=1e-12)
    assert assd(sd) == pytest.approx(medpy.assd(pred, ref, voxelspacing=spacing), rel=1e-12)
    expected_masd = (
        medpy.asd(pred, ref, voxelspacing=spacing) + medpy.asd(ref, pred, voxelspacing=spacing)
    ) / 2
    assert masd(sd) == pytest.approx(expected_masd, rel=1e-12)
    assert dice(pred, ref) == medpy.dc(pred, ref)

    res = structure_metrics(pred, ref, spacing, "medpy")
    assert res.values["dsc"] == medpy.dc(pred, ref)
    assert res.values["hd"] == medpy.hd(pred, ref, voxelspacing=spacing)
    assert res.values["hd95"] == pytest.approx(expected_hd95, rel=1e-12)
    assert res.values["assd"] == pytest.approx(
        medpy.assd(pred, ref, voxelspacing=spacing), rel=1e-12
    )
    assert res.values["masd"] == pytest.approx(expected_masd, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# MONAI 1.6 (float32 internally)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monai_metrics() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # import-time deprecation noise from torch/monai
        import monai.metrics
        import torch
    return monai.metrics, torch


def _monai_call(
    monai_metrics: Any, fn_name: str, pred: BoolArray, ref: BoolArray, **kw: Any
) -> float:
    mm, torch = monai_metrics
    y_pred = torch.from_numpy(pred.astype(np.float32)[None, None])
    y = torch.from_numpy(ref.astype(np.float32)[None, None])
    with warnings.catch_warnings():
        # MONAI 1.6 warns about its own deprecated `always_return_as_numpy` argument.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        out = getattr(mm, fn_name)(y_pred, y, include_background=True, **kw)
    return float(out.item())


@pytest.mark.parametrize("name", CASES)
def test_monai_surface_dice_voxel(name: str, monai_metrics: Any) -> None:
    """NSD voxel == MONAI compute_surface_dice within 1e-6 absolute (MONAI is float32)."""
    ref, pred, spacing = _case(name)
    sd = _sd(name, surfels=False)
    for tau in _taus(spacing):
        expected = _monai_call(
            monai_metrics,
            "compute_surface_dice",
            pred,
            ref,
            class_thresholds=[tau],
            spacing=spacing,
        )
        assert nsd(sd, tau, "voxel") == pytest.approx(expected, abs=1e-6), tau
        prof = Profile("monai-tau", nsd_variant="voxel", tolerance_mm=tau)
        assert structure_metrics(pred, ref, spacing, prof).values["nsd"] == nsd(sd, tau, "voxel")


@pytest.mark.parametrize("name", CASES)
def test_monai_hausdorff_and_assd(name: str, monai_metrics: Any) -> None:
    """HD, HD95 ('max' of directed torch.quantile) and symmetric ASD == MONAI within 1e-6 rel."""
    ref, pred, spacing = _case(name)
    res = structure_metrics(pred, ref, spacing, "monai")
    hd95 = _monai_call(
        monai_metrics, "compute_hausdorff_distance", pred, ref, percentile=95, spacing=spacing
    )
    hd = _monai_call(monai_metrics, "compute_hausdorff_distance", pred, ref, spacing=spacing)
    asd = _monai_call(
        monai_metrics,
        "compute_average_surface_distance",
        pred,
        ref,
        symmetric=True,
        spacing=spacing,
    )
    assert res.values["hd95"] == pytest.approx(hd95, rel=1e-6, abs=1e-12)
    assert res.values["hd"] == pytest.approx(hd, rel=1e-6, abs=1e-12)
    assert res.values["assd"] == pytest.approx(asd, rel=1e-6, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The far false positive really goes through the k-d tree fallback
# ---------------------------------------------------------------------------------------------


def test_far_false_positive_exercises_kdtree_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The far-FP fixture is > 15 voxels away, beyond the shell search: the k-d tree path runs,
    and its distances still equal scipy's EDT exactly."""
    ref, pred, spacing = _case("far_false_positive")
    calls: list[int] = []
    original = distances_module._tree_distances

    def spy(q_idx: Any, which: Any, target: Any, spacing_mm: Any) -> Any:
        calls.append(int(which.size))
        return original(q_idx, which, target, spacing_mm)

    monkeypatch.setattr(distances_module, "_tree_distances", spy)
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=True)
    assert calls and sum(calls) > 0
    assert hausdorff(sd) > 15 * max(spacing)
    expected = ndimage.distance_transform_edt(~_border(ref), sampling=spacing)[_border(pred)]
    assert np.array_equal(np.sort(sd.pred_to_ref), np.sort(expected))
    dm = _deepmind("far_false_positive")
    assert np.array_equal(np.sort(sd.surfel_pred_to_ref), np.sort(dm["distances_pred_to_gt"]))


# ---------------------------------------------------------------------------------------------
# label_map_metrics == structure_metrics per structure
# ---------------------------------------------------------------------------------------------


def _same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _assert_results_equal(got: StructureResult, expected: StructureResult) -> None:
    assert got.status == expected.status
    assert list(got.values) == list(expected.values)
    for key, value in expected.values.items():
        assert _same_value(got.values[key], value), (key, got.values[key], value)


def _label_maps() -> tuple[NDArray[np.uint8], NDArray[np.uint8], Mapping[int, str], Spacing]:
    shape = (48, 40, 36)
    ref = np.zeros(shape, dtype=np.uint8)
    pred = np.zeros(shape, dtype=np.uint8)
    ref[_ellipsoid(shape, (15, 15, 15), (10, 9, 8))] = 1
    pred[_ellipsoid(shape, (16, 14, 15), (9, 9, 9))] = 1
    ref[_ellipsoid(shape, (34, 28, 20), (8, 7, 9))] = 2
    pred[_ellipsoid(shape, (33, 27, 21), (8, 8, 8))] = 2
    ref[_blob(shape, seed=7, sigma=2.0, threshold=0.1) & (ref == 0)] = 3
    pred[_blob(shape, seed=8, sigma=2.0, threshold=0.1) & (pred == 0)] = 3
    pred[44:47, 2:5, 30:34] = 5  # only in the prediction → empty_reference
    ref[2:4, 36:39, 2:4] = 6  # only in the reference → empty_prediction
    labels = {1: "liver", 2: "spleen", 3: "lesion", 4: "absent", 5: "fp_only", 6: "fn_only"}
    return pred, ref, labels, (0.8, 0.8, 1.5)


@pytest.mark.parametrize(
    "profile",
    [
        *PROFILES,
        Profile(
            "custom",
            structure_tolerance_mm={"liver": 1.5, "lesion": 0.8},
            extra_tolerances_mm=(1.0, 3.0),
            hd95_variant="surfel",
        ),
    ],
    ids=lambda p: p if isinstance(p, str) else p.name,
)
def test_label_map_metrics_equals_structure_loop(profile: str | Profile) -> None:
    """label_map_metrics == structure_metrics(pred == v, ref == v, …, structure=name), exactly."""
    pred, ref, labels, spacing = _label_maps()
    got = label_map_metrics(pred, ref, labels, spacing, profile)
    assert list(got) == list(labels.values())
    statuses = {name: r.status for name, r in got.items()}
    assert statuses == {
        "liver": "ok",
        "spleen": "ok",
        "lesion": "ok",
        "absent": "both_empty",
        "fp_only": "empty_reference",
        "fn_only": "empty_prediction",
    }
    for value, name in labels.items():
        expected = structure_metrics(pred == value, ref == value, spacing, profile, structure=name)
        _assert_results_equal(got[name], expected)


# ---------------------------------------------------------------------------------------------
# Regression: tied far nearest voxels (k-d tree fallback must take the exact minimum over ties,
# e.g. offsets (7,0,0) and (2,3,6) at 0.9 mm: 6.3 vs 6.300000000000001 in float64)
# ---------------------------------------------------------------------------------------------


def test_tied_far_nearest_voxels_match_scipy() -> None:
    """Oracles: brute-force lattice minimum and scipy distance_transform_edt (exact); voxel NSD
    from scipy's EDT multisets (exact); DeepMind compute_surface_dice_at_tolerance (1e-12)."""
    import surface_distance

    spacing = (0.9, 0.9, 0.9)
    # nearest_distances directly: query (1,1,1); targets at offsets (7,0,0) and (2,3,6).
    query = np.zeros((10, 10, 10), dtype=bool)
    target = np.zeros_like(query)
    query[1, 1, 1] = True
    target[8, 1, 1] = target[3, 4, 7] = True
    edt = ndimage.distance_transform_edt(~target, sampling=spacing)[query]
    assert edt[0] == 7 * 0.9 == 6.3
    nearest_ok = bool(np.array_equal(nearest_distances(query, target, spacing), edt))

    # End to end: the same tie inside structure_metrics (voxel and surfel NSD at τ = 6.3 mm).
    ref = np.zeros((12, 7, 12), dtype=bool)
    pred = np.zeros_like(ref)
    ref[0, 0, 0] = ref[4, 3, 5] = True
    pred[11, 3, 5] = pred[6, 6, 11] = True
    d_rp = ndimage.distance_transform_edt(~pred, sampling=spacing)[ref]
    d_pr = ndimage.distance_transform_edt(~ref, sampling=spacing)[pred]
    voxel_oracle = (np.sum(d_rp <= 6.3) + np.sum(d_pr <= 6.3)) / (d_rp.size + d_pr.size)  # 0.5
    voxel = structure_metrics(
        pred, ref, spacing, Profile("v", nsd_variant="voxel", tolerance_mm=6.3)
    ).values["nsd"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        dm = surface_distance.compute_surface_distances(ref, pred, spacing)
    surfel_oracle = surface_distance.compute_surface_dice_at_tolerance(dm, 6.3)
    surfel = structure_metrics(pred, ref, spacing, Profile("s", tolerance_mm=6.3)).values["nsd"]
    expected = (True, voxel_oracle, pytest.approx(surfel_oracle, rel=1e-12))
    assert (nearest_ok, voxel, surfel) == expected


def test_many_tied_far_candidates_take_the_exact_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """54 target voxels at squared lattice norm 49 around one query voxel at 0.9 mm: the 6
    axis offsets (7,0,0) and the 48 signed permutations of (2,3,6). More ties than the k-d
    tree's candidate count, so the ball-query path resolves them. Oracle: scipy
    distance_transform_edt (exact, the smaller float64 value 6.3)."""
    from itertools import permutations, product

    from scipy.ndimage import distance_transform_edt

    calls: list[int] = []
    original = distances_module._tree_distances

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(distances_module, "_tree_distances", spy)
    spacing = (0.9, 0.9, 0.9)
    centre = np.array([10, 10, 10])
    query = np.zeros((21, 21, 21), dtype=bool)
    target = np.zeros_like(query)
    query[tuple(centre)] = True
    offsets = {p for p in permutations((7, 0, 0))}
    offsets |= {
        tuple(s * v for s, v in zip(signs, p, strict=True))
        for p in permutations((2, 3, 6))
        for signs in product((-1, 1), repeat=3)
    }
    assert len(offsets) == 51  # (7,0,0): 3 positive axis offsets here; (2,3,6): 48
    for o in offsets:
        target[tuple(centre + np.array(o))] = True
    got = nearest_distances(query, target, spacing)
    expected = distance_transform_edt(~target, sampling=spacing)[query]
    assert calls, "the k-d tree fallback must be exercised"
    assert np.array_equal(got, expected) and got[0] == 6.3


# ---------------------------------------------------------------------------------------------
# The exact separable transform (assay.metrics._edt) on hard inputs: large errors, far blobs,
# missed parts, ties on lattice distances. Oracles: brute-force minimum of the float64 lattice
# distance over all targets, the shell/k-d tree engine, scipy's EDT and DeepMind, all exact.
# ---------------------------------------------------------------------------------------------


def _brute_force(query: BoolArray, target: BoolArray, spacing: Spacing) -> NDArray[np.float64]:
    from assay.metrics import lattice_distance

    t = np.argwhere(target)
    return np.array([lattice_distance(t - q, spacing).min() for q in np.argwhere(query)])


@pytest.mark.parametrize(
    "spacing",
    [(1.0, 1.0, 1.0), (0.9, 0.9, 0.9), (0.3, 0.3, 0.3), (0.8, 0.8, 1.5), (0.7, 1.3, 2.5),
     (3.0, 0.5, 0.5)],
)  # fmt: skip
def test_transform_equals_brute_force_lattice_minimum(spacing: Spacing) -> None:
    """Sparse random targets (many far points and float64 ties on isotropic grids): every
    distance equals the smallest float64 lattice distance, bit for bit."""
    from assay.metrics._edt import nearest_squared

    rng = np.random.default_rng(int(sum(spacing) * 1000))
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(8, 40, 3))
        target = rng.random(shape) < rng.choice([0.0005, 0.003, 0.02])
        target[tuple(int(rng.integers(0, s)) for s in shape)] = True
        query = rng.random(shape) < 0.05
        got = np.sqrt(nearest_squared(target, np.nonzero(query), spacing))  # type: ignore[arg-type]
        assert np.array_equal(got, _brute_force(query, target, spacing))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 1.5), (3.0, 0.5, 0.5)])
def test_transform_with_queries_in_few_planes_equals_brute_force(spacing: Spacing) -> None:
    """Queries confined to a few planes of axis 0 (the transform skips the other planes'
    envelopes) and targets spread over the whole grid: still the exact lattice minimum."""
    from assay.metrics._edt import nearest_squared

    rng = np.random.default_rng(7)
    for _ in range(4):
        shape = tuple(int(v) for v in rng.integers(10, 36, 3))
        target = rng.random(shape) < rng.choice([0.001, 0.01])
        target[tuple(int(rng.integers(0, s)) for s in shape)] = True
        query = np.zeros(shape, dtype=bool)
        planes = rng.choice(shape[0], size=int(rng.integers(1, 4)), replace=False)
        query[planes] = rng.random((len(planes), *shape[1:])) < 0.2
        got = np.sqrt(nearest_squared(target, np.nonzero(query), spacing))  # type: ignore[arg-type]
        assert np.array_equal(got, _brute_force(query, target, spacing))


def test_sampled_switch_keeps_the_shells_for_a_small_shift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 3-voxel shift leaves many points after the first shells, but the sample shows the
    next shells settle them cheaply: no transform, values == scipy's."""
    ref = _ellipsoid((48, 48, 40), (24, 24, 20), (16, 14, 12))
    pred = np.zeros_like(ref)
    pred[3:] = ref[:-3]
    spacing = (1.0, 1.0, 1.0)
    monkeypatch.setattr(distances_module, "_EDT_MIN_POINTS", 100)
    calls: list[int] = []
    original = distances_module.nearest_squared

    def spy(target: Any, q: Any, spacing_mm: Any) -> Any:
        calls.append(int(q[0].size))
        return original(target, q, spacing_mm)

    monkeypatch.setattr(distances_module, "nearest_squared", spy)
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=False)
    assert not calls
    expected = ndimage.distance_transform_edt(~_border(pred), sampling=spacing)[_border(ref)]
    _assert_equal_up_to_ties(sd.ref_to_pred, expected)


def test_transform_resolves_three_way_float_ties() -> None:
    """Query (1, 1, 1) with targets at offsets (7, 0, 0) and (2, 3, 6) at 0.9 mm (real ties,
    6.3 vs 6.300000000000001 in float64), plus (6, 3, 2) and (3, 6, 2): the smaller float64
    value wins, as in scipy's EDT."""
    from assay.metrics._edt import nearest_squared

    spacing = (0.9, 0.9, 0.9)
    target = np.zeros((10, 10, 10), dtype=bool)
    for o in [(7, 0, 0), (2, 3, 6), (6, 3, 2), (3, 6, 2), (0, 7, 0), (0, 0, 7)]:
        target[1 + o[0], 1 + o[1], 1 + o[2]] = True
    query = np.zeros_like(target)
    query[1, 1, 1] = True
    got = np.sqrt(nearest_squared(target, np.nonzero(query), spacing))  # type: ignore[arg-type]
    edt = ndimage.distance_transform_edt(~target, sampling=spacing)[query]
    assert got[0] == edt[0] == 6.3


def _hard_cases() -> dict[str, tuple[BoolArray, BoolArray, Spacing]]:
    shape = (56, 52, 40)
    ref = _ellipsoid(shape, (24, 25, 19), (13, 11, 9)) | _ellipsoid(shape, (30, 18, 22), (7, 9, 6))
    shifted = np.zeros_like(ref)
    shifted[9:] = ref[:-9]
    half = ref.copy()
    half[24:] = False
    blob = ref.copy()
    blob[50:54, 40:44, 30:34] = True
    noisy = _blob(shape, seed=3, sigma=1.5, threshold=0.0) & _ellipsoid(
        shape, (24, 25, 19), (16, 14, 12)
    )
    return {
        "shift 9 voxels, anisotropic": (ref, shifted, (0.8, 0.8, 1.5)),
        "half missed": (ref, half, (0.8, 0.8, 1.5)),
        "far blob, isotropic": (ref, blob, (1.0, 1.0, 1.0)),
        "noise, tie-rich 0.9 mm": (ref, noisy, (0.9, 0.9, 0.9)),
        "shift 9, odd spacing": (ref, shifted, (0.7, 1.3, 2.5)),
    }


def _assert_equal_up_to_ties(got: NDArray[np.float64], scipy_values: NDArray[np.float64]) -> None:
    """``got <= scipy_values`` everywhere, equal except at one-ulp float64 ties (< 1 %)."""
    assert got.shape == scipy_values.shape
    assert np.all(got <= scipy_values)
    differ = got != scipy_values
    assert np.all(scipy_values[differ] - got[differ] <= 2 * np.spacing(scipy_values[differ]))
    assert np.count_nonzero(differ) <= 0.01 * got.size


def _engine(monkeypatch: pytest.MonkeyPatch, transform: bool) -> None:
    """Force every far point through the transform, or keep it out entirely."""
    monkeypatch.setattr(distances_module, "_EDT_MIN_POINTS", 0 if transform else 10**18)
    monkeypatch.setattr(distances_module, "_EDT_VOXELS_PER_POINT", 10**9 if transform else 0)


@pytest.mark.parametrize("name", list(_hard_cases()))
def test_transform_equals_shell_engine_and_oracles_on_hard_inputs(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large shifts, a missed half, far blobs: with the transform forced on, every surface
    distance array equals (==) the shell/k-d tree engine's, scipy's EDT (voxel surfaces) and
    DeepMind's (surfels), and all metrics of every profile are identical."""
    ref, pred, spacing = _hard_cases()[name]
    calls: list[int] = []
    original = distances_module.nearest_squared

    def spy(target: Any, q: Any, spacing_mm: Any) -> Any:
        calls.append(int(q[0].size))
        return original(target, q, spacing_mm)

    monkeypatch.setattr(distances_module, "nearest_squared", spy)
    _engine(monkeypatch, transform=True)
    new = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=True)
    new_results = {p: structure_metrics(pred, ref, spacing, p) for p in PROFILES}
    assert calls and sum(calls) > 0
    _engine(monkeypatch, transform=False)
    old = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=True)
    for field in ("ref_to_pred", "pred_to_ref", "surfel_ref_to_pred", "surfel_pred_to_ref"):
        assert np.array_equal(getattr(new, field), getattr(old, field)), field
    for p, result in new_results.items():
        _assert_results_equal(result, structure_metrics(pred, ref, spacing, p))
    # scipy's EDT (and so DeepMind) breaks float64 ties between lattice offsets of equal real
    # length its own way, e.g. (-5, 0, -1) vs (-3, -4, -1) at (0.8, 0.8, 1.5): 4.272001872658765
    # vs ...766; the engine's rule (shared with the shell/k-d tree engine) takes the smaller.
    # So: never above scipy's value, and equal up to such one-ulp ties.
    expected = ndimage.distance_transform_edt(~_border(ref), sampling=spacing)[_border(pred)]
    _assert_equal_up_to_ties(new.pred_to_ref, expected)
    import surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        dm = surface_distance.compute_surface_distances(ref, pred, spacing)
    _assert_equal_up_to_ties(np.sort(new.surfel_ref_to_pred), dm["distances_gt_to_pred"])
    _assert_equal_up_to_ties(np.sort(new.surfel_pred_to_ref), dm["distances_pred_to_gt"])
    for tau in (*_taus(spacing), 7.2, 9 * 0.8):
        want = surface_distance.compute_surface_dice_at_tolerance(dm, tau)
        assert nsd(new, tau, "surfel") == pytest.approx(want, rel=1e-12, abs=0)


def test_default_policy_uses_the_transform_for_a_large_shift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The policy's own switch (only its minimum point count lowered for a small grid): a
    9-voxel shift leaves most points unsettled by the first shells, so they go to the
    transform, and the values stay scipy's."""
    ref, pred, spacing = _hard_cases()["shift 9 voxels, anisotropic"]
    monkeypatch.setattr(distances_module, "_EDT_MIN_POINTS", 100)
    calls: list[int] = []
    original = distances_module.nearest_squared

    def spy(target: Any, q: Any, spacing_mm: Any) -> Any:
        calls.append(int(q[0].size))
        return original(target, q, spacing_mm)

    monkeypatch.setattr(distances_module, "nearest_squared", spy)
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=True)
    assert calls
    expected = ndimage.distance_transform_edt(~_border(pred), sampling=spacing)[_border(ref)]
    _assert_equal_up_to_ties(sd.ref_to_pred, expected)
