"""Closed-form geometry and property-based invariants of :mod:`assay.metrics` (DESIGN.md §3).

Closed-form tests derive every expected value by hand from the geometry of axis-aligned
cubes, slabs and single voxels; their tolerance is stated in each docstring (exact where the
engine's float64 operation sequence provably reproduces the hand formula, 1e-12 relative
where only the order of a sum differs).

Property tests (hypothesis) use small masks (≤ 12³) built from unions of random boxes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from assay.metrics import (
    PROFILES,
    Profile,
    StructureResult,
    dice,
    hausdorff,
    hausdorff_percentile,
    label_map_metrics,
    nearest_distances,
    nsd,
    structure_metrics,
    surface_distances,
)

BoolArray = NDArray[np.bool_]
Spacing = tuple[float, float, float]
FULL_BOX = (slice(None), slice(None), slice(None))

#: Profiles checked by the invariance properties: every built-in one plus one with extras.
ALL_PROFILES: list[Profile] = [
    *PROFILES.values(),
    Profile("extras", extra_tolerances_mm=(0.5, 1.0, 3.0), hd95_variant="pooled"),
]

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _box_mask(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> BoolArray:
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def _close(a: float, b: float, rel: float) -> bool:
    """NaN-aware, inf-aware relative comparison."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


def _assert_results_close(got: StructureResult, expected: StructureResult, rel: float) -> None:
    assert got.status == expected.status
    assert list(got.values) == list(expected.values)
    for key, value in expected.values.items():
        assert _close(got.values[key], value, rel), (key, got.values[key], value)


def _lattice_distance_py(o: tuple[int, int, int], s: Spacing) -> float:
    """sqrt(((o0 s0)² + (o1 s1)²) + (o2 s2)²): the lattice formula, left to right."""
    a, b, c = o[0] * s[0], o[1] * s[1], o[2] * s[2]
    return math.sqrt((a * a + b * b) + c * c)


# ---------------------------------------------------------------------------------------------
# Closed-form geometry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 6, 9])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.0, 1.5), (0.7, 2.5, 1.0)])
def test_cubes_shifted_by_one_voxel_closed_form(n: int, spacing: Spacing) -> None:
    """Closed-form geometry: cubes of side n, the reference shifted by 1 voxel along axis 0,
    spacing s with s0 ≤ min(s1, s2).

    Voxel surfaces are the two cube shells, each with n³ − (n−2)³ voxels. They share the side
    rings of the n − 1 overlapping slices, 4(n−1)² voxels at distance 0; every other surface
    voxel (a full n×n end face and the (n−2)² interior of the other end face) is exactly one
    step s0 from the other shell (and no lateral step is shorter because s0 is the smallest).
    Hence, per direction: 4(n−1)² zeros and n² + (n−2)² distances equal to s0, so
      Dice = (n−1)/n                            (exact: same rational, one rounding)
      HD = HD95 (max, pooled) = s0              (exact: sqrt(s0²) = s0 and percentile
                                                 interpolation between equal values)
      NSD_voxel(τ) = 4(n−1)² / (n³ − (n−2)³) for 0 ≤ τ < s0, and 1 for τ ≥ s0   (exact)
      ASSD = MASD = s0 (n² + (n−2)²) / (n³ − (n−2)³)                 (1e-12 relative)
    """
    shape = (n + 4, n + 2, n + 2)
    pred = _box_mask(shape, (1, 1, 1), (1 + n, 1 + n, 1 + n))
    ref = _box_mask(shape, (2, 1, 1), (2 + n, 1 + n, 1 + n))
    s0 = spacing[0]
    shell = n**3 - (n - 2) ** 3
    shared = 4 * (n - 1) ** 2
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=False)

    assert sd.ref_to_pred.size == sd.pred_to_ref.size == shell
    assert dice(pred, ref) == (n - 1) / n
    assert hausdorff(sd) == s0
    assert hausdorff_percentile(sd, 95.0, "max") == s0
    assert hausdorff_percentile(sd, 95.0, "pooled") == s0
    assert nsd(sd, 0.0, "voxel") == shared / shell
    assert nsd(sd, math.nextafter(s0, 0.0), "voxel") == shared / shell
    assert nsd(sd, s0, "voxel") == 1.0
    assert nsd(sd, 2 * s0, "voxel") == 1.0
    expected_mean = s0 * (n * n + (n - 2) ** 2) / shell
    res = structure_metrics(pred, ref, spacing, "monai")
    assert res.values["assd"] == pytest.approx(expected_mean, rel=1e-12)
    assert res.values["masd"] == pytest.approx(expected_mean, rel=1e-12)
    assert res.values["dsc"] == (n - 1) / n


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_slabs_shifted_along_one_axis_closed_form(axis: int, k: int) -> None:
    """Closed-form geometry: two slabs of thickness t = 5 voxels spanning the whole array in
    the other two axes (so they touch four array faces), shifted by k voxels along ``axis``.
    Dice = (t − k)/t (exact); HD = k·s_axis (exact: a single nonzero offset component gives
    sqrt((k s)²) = k s); NSD_voxel(τ = k·s_axis) = 1 (exact, every distance ≤ k·s_axis)."""
    spacing: Spacing = (0.8, 2.5, 1.5)
    t = 5
    shape = [9, 8, 7]
    shape[axis] = 14
    lo_p, hi_p = [0, 0, 0], list(shape)
    lo_p[axis], hi_p[axis] = 2, 2 + t
    lo_r, hi_r = list(lo_p), list(hi_p)
    lo_r[axis] += k
    hi_r[axis] += k
    pred = _box_mask(tuple(shape), tuple(lo_p), tuple(hi_p))
    ref = _box_mask(tuple(shape), tuple(lo_r), tuple(hi_r))

    shift_mm = k * spacing[axis]
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=False)
    assert dice(pred, ref) == (t - k) / t
    assert hausdorff(sd) == shift_mm
    assert nsd(sd, shift_mm, "voxel") == 1.0
    res = structure_metrics(
        pred, ref, spacing, Profile("slab", nsd_variant="voxel", tolerance_mm=shift_mm)
    )
    assert res.values["hd"] == shift_mm
    assert res.values["nsd"] == 1.0
    assert res.values["dsc"] == (t - k) / t


@pytest.mark.parametrize(
    "offset", [(0, 0, 1), (1, 0, 0), (2, 0, 3), (-3, 4, 0), (1, 1, 1), (-5, -2, 4), (7, 6, 5)]
)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 1.5), (1.0, 2.5, 0.7)])
def test_single_voxels_closed_form(offset: tuple[int, int, int], spacing: Spacing) -> None:
    """Closed-form geometry: single-voxel ref and pred at offset (a, b, c). Every surface
    metric is d = sqrt(((a s0)² + (b s1)²) + (c s2)²) — exact, because the engine evaluates
    the same float64 operations in the same order (DESIGN.md §3). Dice = 0 (exact);
    NSD voxel = 1 for τ = d, 0 for τ just below d (exact)."""
    shape = (16, 16, 16)
    ref = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    ref[8, 8, 8] = True
    pred[8 + offset[0], 8 + offset[1], 8 + offset[2]] = True
    d = _lattice_distance_py(offset, spacing)

    for profile in ("default", "monai", "medpy", "deepmind"):
        v = structure_metrics(pred, ref, spacing, profile).values
        assert v["dsc"] == 0.0
        assert v["hd"] == v["assd"] == v["masd"] == d
        if profile != "deepmind":  # 'surfel' hd95 uses corner surfels, not voxel centres
            assert v["hd95"] == d
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=False)
    assert nsd(sd, d, "voxel") == 1.0
    assert nsd(sd, math.nextafter(d, 0.0), "voxel") == 0.0
    assert np.array_equal(nearest_distances(pred, ref, spacing), [d])


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies
# ---------------------------------------------------------------------------------------------

#: Dyadic spacings: squares and products are exact in float64, so the lattice distance does
#: not depend on the order of its three terms (needed for exact permutation invariance).
DYADIC = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]

spacings = st.tuples(*[st.floats(0.3, 3.0, allow_nan=False, allow_infinity=False)] * 3)
dyadic_spacings = st.tuples(*[st.sampled_from(DYADIC)] * 3)


@st.composite
def shapes(draw: st.DrawFn, max_side: int = 12) -> tuple[int, int, int]:
    return (
        draw(st.integers(2, max_side)),
        draw(st.integers(2, max_side)),
        draw(st.integers(2, max_side)),
    )


@st.composite
def box_masks(draw: st.DrawFn, shape: tuple[int, int, int]) -> BoolArray:
    """Union of 1–3 random boxes, optionally with a random box carved out (non-convex)."""
    m = np.zeros(shape, dtype=bool)

    def box() -> tuple[slice, slice, slice]:
        sl = []
        for n in shape:
            lo = draw(st.integers(0, n - 1))
            hi = draw(st.integers(lo + 1, min(n, lo + max(2, n // 2 + 1))))
            sl.append(slice(lo, hi))
        return sl[0], sl[1], sl[2]

    for _ in range(draw(st.integers(1, 3))):
        m[box()] = True
    if draw(st.booleans()):
        m[box()] = False
    return m


@st.composite
def mask_pairs(
    draw: st.DrawFn, spacing_strategy: st.SearchStrategy[Spacing] = spacings
) -> tuple[BoolArray, BoolArray, Spacing]:
    """(pred, ref, spacing), both masks non-empty."""
    shape = draw(shapes())
    pred = draw(box_masks(shape))
    ref = draw(box_masks(shape))
    assume(pred.any() and ref.any())
    return pred, ref, draw(spacing_strategy)


@st.composite
def label_maps(draw: st.DrawFn) -> tuple[NDArray[np.uint8], NDArray[np.uint8], Spacing]:
    shape = draw(shapes())

    def one() -> NDArray[np.uint8]:
        m = np.zeros(shape, dtype=np.uint8)
        for _ in range(draw(st.integers(0, 5))):
            m[draw(box_masks(shape))] = draw(st.integers(1, 3))
        return m

    return one(), one(), draw(spacings)


PROPERTY_SETTINGS = settings()  # the profile in conftest.py: 25 derandomized examples in CI

# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(mask_pairs())
def test_dice_symmetric_and_bounded(case: tuple[BoolArray, BoolArray, Spacing]) -> None:
    """Dice(P, G) == Dice(G, P) exactly and 0 ≤ Dice ≤ 1 (definition, DESIGN.md §3)."""
    pred, ref, spacing = case
    d = dice(pred, ref)
    assert d == dice(ref, pred)
    assert 0.0 <= d <= 1.0
    for profile in ("default", "touchstone"):
        a = structure_metrics(pred, ref, spacing, profile).values["dsc"]
        b = structure_metrics(ref, pred, spacing, profile).values["dsc"]
        assert a == b
        assert 0.0 <= a <= 1.0


@PROPERTY_SETTINGS
@given(mask_pairs())
def test_hd95_not_above_hd(case: tuple[BoolArray, BoolArray, Spacing]) -> None:
    """HD95 ≤ HD for the 'max' and 'pooled' variants (percentile ≤ maximum of the same voxel
    surface distances). The 'surfel' variant uses corner surfels while HD uses voxel surfaces,
    so it is not comparable and is left out. Also every value ≥ 0 and finite."""
    pred, ref, spacing = case
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=False)
    hd = hausdorff(sd)
    assert 0.0 <= hd < math.inf
    for variant in ("max", "pooled"):
        assert 0.0 <= hausdorff_percentile(sd, 95.0, variant) <= hd  # type: ignore[arg-type]
    assert hausdorff_percentile(sd, 100.0, "max") == hd
    assert hausdorff_percentile(sd, 100.0, "pooled") == hd


@PROPERTY_SETTINGS
@given(mask_pairs(), st.lists(st.floats(0.0, 12.0), min_size=2, max_size=6))
def test_nsd_non_decreasing_in_tolerance(
    case: tuple[BoolArray, BoolArray, Spacing], taus: list[float]
) -> None:
    """NSD(τ) is non-decreasing in τ and within [0, 1], for both variants; NSD(τ ≥ HD) = 1."""
    pred, ref, spacing = case
    sd = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=True)
    taus = sorted({*taus, *spacing})
    for variant in ("surfel", "voxel"):
        values = [nsd(sd, t, variant) for t in taus]  # type: ignore[arg-type]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert all(a <= b for a, b in itertools.pairwise(values))
    assert nsd(sd, hausdorff(sd), "voxel") == 1.0
    assert sd.surfel_ref_to_pred is not None and sd.surfel_pred_to_ref is not None
    surfel_max = max(sd.surfel_ref_to_pred.max(), sd.surfel_pred_to_ref.max())
    assert nsd(sd, float(surfel_max), "surfel") == pytest.approx(1.0, rel=1e-12)


@PROPERTY_SETTINGS
@given(
    mask_pairs(),
    st.tuples(*[st.integers(0, 5)] * 3),
    st.tuples(*[st.integers(0, 5)] * 3),
)
def test_translation_invariance(
    case: tuple[BoolArray, BoolArray, Spacing],
    before: tuple[int, int, int],
    after: tuple[int, int, int],
) -> None:
    """Embedding both masks in a larger array at an offset changes no metric of any profile
    (all values within 1e-12 relative; in fact exact since the engine crops)."""
    pred, ref, spacing = case
    pad = list(zip(before, after, strict=True))
    big_pred, big_ref = np.pad(pred, pad), np.pad(ref, pad)
    for profile in ALL_PROFILES:
        _assert_results_close(
            structure_metrics(big_pred, big_ref, spacing, profile),
            structure_metrics(pred, ref, spacing, profile),
            rel=1e-12,
        )


@PROPERTY_SETTINGS
@given(mask_pairs(dyadic_spacings), st.permutations([0, 1, 2]))
def test_axis_permutation_invariance(
    case: tuple[BoolArray, BoolArray, Spacing], perm: list[int]
) -> None:
    """Permuting the array axes together with the spacing changes no metric of any profile
    (within 1e-12 relative). Dyadic spacings keep the lattice distance independent of the
    order of its terms, so no NSD decision d ≤ τ can flip by one ulp at a boundary."""
    pred, ref, spacing = case
    p_spacing = (spacing[perm[0]], spacing[perm[1]], spacing[perm[2]])
    p_pred, p_ref = np.transpose(pred, perm), np.transpose(ref, perm)
    for profile in ALL_PROFILES:
        _assert_results_close(
            structure_metrics(p_pred, p_ref, p_spacing, profile),
            structure_metrics(pred, ref, spacing, profile),
            rel=1e-12,
        )


@PROPERTY_SETTINGS
@given(mask_pairs(dyadic_spacings))
def test_crop_box_is_exact(case: tuple[BoolArray, BoolArray, Spacing]) -> None:
    """surface_distances on the whole array == on the union bounding box, array for array
    (cropping is exact, DESIGN.md §3 "Exact speed-ups"). Dyadic spacings: with general ones the
    tied-far-voxel bug (see test_metrics_parity.py) can make the two differ by 1 ulp."""
    pred, ref, spacing = case
    idx = np.nonzero(pred | ref)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    full = surface_distances(pred, ref, spacing, box=FULL_BOX, surfels=True)
    crop = surface_distances(pred, ref, spacing, box=box, surfels=True)  # type: ignore[arg-type]
    for name in (
        "ref_to_pred",
        "pred_to_ref",
        "surfel_ref_to_pred",
        "surfel_pred_to_ref",
        "surfel_area_ref",
        "surfel_area_pred",
    ):
        assert np.array_equal(getattr(full, name), getattr(crop, name)), name


LABELS: Mapping[int, str] = {1: "a", 2: "b", 3: "c", 4: "never_present"}


@PROPERTY_SETTINGS
@given(label_maps())
def test_label_map_metrics_equals_structure_loop(
    case: tuple[NDArray[np.uint8], NDArray[np.uint8], Spacing],
) -> None:
    """label_map_metrics == structure_metrics on each label's binary masks, all values exactly
    (NaN-aware), including per-structure tolerances and extra τ."""
    pred, ref, spacing = case
    profile = Profile(
        "per-structure", structure_tolerance_mm={"a": 1.0, "c": 0.5}, extra_tolerances_mm=(3.0,)
    )
    for prof in (profile, PROFILES["touchstone"]):
        got = label_map_metrics(pred, ref, LABELS, spacing, prof)
        assert list(got) == list(LABELS.values())
        for value, name in LABELS.items():
            expected = structure_metrics(pred == value, ref == value, spacing, prof, structure=name)
            _assert_results_close(got[name], expected, rel=0.0)


def _brute_force_nearest(query: BoolArray, target: BoolArray, spacing: Spacing) -> Any:
    """min over all target voxels of sqrt(((o0 s0)² + (o1 s1)²) + (o2 s2)²), o = t − q."""
    q = np.argwhere(query)
    t = np.argwhere(target)
    o = (t[None, :, :] - q[:, None, :]).astype(np.float64)
    a, b, c = o[..., 0] * spacing[0], o[..., 1] * spacing[1], o[..., 2] * spacing[2]
    return np.sqrt((a * a + b * b) + c * c).min(axis=1, initial=np.inf)


@st.composite
def sparse_masks(draw: st.DrawFn, shape: tuple[int, int, int], max_points: int) -> BoolArray:
    m = np.zeros(shape, dtype=bool)
    for _ in range(draw(st.integers(1, max_points))):
        m[tuple(draw(st.integers(0, n - 1)) for n in shape)] = True
    return m


@st.composite
def nearest_cases(draw: st.DrawFn) -> tuple[BoolArray, BoolArray, Spacing]:
    shape = draw(shapes())

    def make() -> BoolArray:
        if draw(st.booleans()):
            return draw(box_masks(shape))
        return draw(sparse_masks(shape, 6))

    return make(), make(), draw(spacings)


# This property found the tied-far-voxel bug in the k-d tree fallback, now fixed
# and pinned by test_tied_far_nearest_voxels_match_scipy in test_metrics_parity.py.
@PROPERTY_SETTINGS
@given(nearest_cases())
def test_nearest_distances_equals_brute_force(
    case: tuple[BoolArray, BoolArray, Spacing],
) -> None:
    """nearest_distances == brute-force minimum of the lattice formula over every target
    voxel, exactly (float64, same operation order). Sparse targets push far query points into
    the k-d tree fallback, so both code paths are covered."""
    query, target, spacing = case
    got = nearest_distances(query, target, spacing)
    assert got.dtype == np.float64
    assert np.array_equal(got, _brute_force_nearest(query, target, spacing))


def test_nearest_distances_far_points_need_kdtree() -> None:
    """Deterministic far case: two target voxels at opposite corners of a 40³ grid, query on a
    line; distances up to ~39 voxels (> the shell radius) equal the brute force exactly."""
    shape = (40, 40, 40)
    target = np.zeros(shape, dtype=bool)
    target[0, 0, 0] = target[39, 39, 39] = True
    query = np.zeros(shape, dtype=bool)
    query[:, 20, 5] = True
    query[20, :, 33] = True
    for spacing in [(0.8, 0.8, 1.5), (1.0, 2.5, 0.7), (1.0, 1.0, 1.0)]:
        got = nearest_distances(query, target, spacing)
        assert np.array_equal(got, _brute_force_nearest(query, target, spacing))


def test_nearest_distances_empty_inputs() -> None:
    """Documented contract: +inf for every query point when the target is empty; an empty
    array when the query is empty."""
    shape = (5, 6, 7)
    some = np.zeros(shape, dtype=bool)
    some[1, 2, 3] = some[4, 5, 6] = True
    none = np.zeros(shape, dtype=bool)
    assert np.array_equal(nearest_distances(some, none, (1.0, 1.0, 1.0)), [np.inf, np.inf])
    assert nearest_distances(none, some, (1.0, 1.0, 1.0)).size == 0
