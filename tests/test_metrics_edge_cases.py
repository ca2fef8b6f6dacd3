"""Edge-case matrix of :mod:`assay.metrics` for every profile (DESIGN.md §3 edge-case table).

Expected values come from the DESIGN.md §3 table (raw values, penalties belong to
aggregation) and from closed-form voxel counting; all comparisons are exact.

==================  =====  =====  ====================  =================
case                Dice   NSD    HD, HD95, ASSD, MASD  status
==================  =====  =====  ====================  =================
both empty          NaN    NaN    NaN                   both_empty
ref empty, P not    0      0      +inf                  empty_reference
pred empty, R not   0      0      +inf                  empty_prediction
==================  =====  =====  ====================  =================

Volumes are always reported: count × s0·s1·s2 / 1000 ml (0 for an empty mask).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from assay.metrics import (
    PROFILES,
    Profile,
    get_profile,
    label_map_metrics,
    structure_metrics,
    surface_distances,
)

BoolArray = NDArray[np.bool_]
SPACING = (0.8, 0.8, 1.5)
VOXEL_ML = 0.8 * 0.8 * 1.5 / 1000.0
DISTANCE_METRICS = ("hd", "hd95", "assd", "masd")

#: Every built-in profile plus one with extra tolerances (the ``nsd@…`` keys behave like nsd).
PROFILE_CASES: list[Profile] = [
    *PROFILES.values(),
    Profile("with_extras", extra_tolerances_mm=(1.0, 3.5), hd95_variant="pooled"),
]
PROFILE_IDS = [p.name for p in PROFILE_CASES]


def _nsd_keys(profile: Profile) -> list[str]:
    return [m for m in profile.metrics if m == "nsd" or m.startswith("nsd@")]


def _masks() -> tuple[BoolArray, BoolArray, BoolArray]:
    """(empty, small box of 2·3·4 = 24 voxels, other box of 3·3·3 = 27 voxels)."""
    empty = np.zeros((10, 9, 8), dtype=bool)
    a = empty.copy()
    a[1:3, 2:5, 3:7] = True
    b = empty.copy()
    b[2:5, 3:6, 4:7] = True
    return empty, a, b


@pytest.mark.parametrize("profile", PROFILE_CASES, ids=PROFILE_IDS)
def test_both_empty(profile: Profile) -> None:
    """DESIGN §3: both empty → both_empty, every metric NaN, volumes 0 (even with Dice +1)."""
    empty, _, _ = _masks()
    res = structure_metrics(empty, empty.copy(), SPACING, profile)
    assert res.status == "both_empty"
    assert list(res.values) == list(profile.metrics)
    for key in ("dsc", *_nsd_keys(profile), *DISTANCE_METRICS):
        assert math.isnan(res.values[key]), key
    assert res.values["volume_ref_ml"] == 0.0
    assert res.values["volume_pred_ml"] == 0.0


@pytest.mark.parametrize("profile", PROFILE_CASES, ids=PROFILE_IDS)
def test_empty_reference(profile: Profile) -> None:
    """DESIGN §3: ref empty, pred not → empty_reference, Dice 0, NSD 0, distances +inf;
    volume_pred = 24 voxels × voxel volume."""
    empty, pred, _ = _masks()
    res = structure_metrics(pred, empty, SPACING, profile)
    assert res.status == "empty_reference"
    assert list(res.values) == list(profile.metrics)
    assert res.values["dsc"] == 0.0
    for key in _nsd_keys(profile):
        assert res.values[key] == 0.0, key
    for key in DISTANCE_METRICS:
        assert res.values[key] == math.inf, key
    assert res.values["volume_ref_ml"] == 0.0
    assert res.values["volume_pred_ml"] == pytest.approx(24 * VOXEL_ML, rel=1e-15)
    assert res.values["volume_pred_ml"] > 0


@pytest.mark.parametrize("profile", PROFILE_CASES, ids=PROFILE_IDS)
def test_empty_prediction(profile: Profile) -> None:
    """DESIGN §3: pred empty, ref not → empty_prediction, Dice 0, NSD 0, distances +inf;
    volume_ref = 27 voxels × voxel volume."""
    empty, _, ref = _masks()
    res = structure_metrics(empty, ref, SPACING, profile)
    assert res.status == "empty_prediction"
    assert list(res.values) == list(profile.metrics)
    assert res.values["dsc"] == 0.0
    for key in _nsd_keys(profile):
        assert res.values[key] == 0.0, key
    for key in DISTANCE_METRICS:
        assert res.values[key] == math.inf, key
    assert res.values["volume_pred_ml"] == 0.0
    assert res.values["volume_ref_ml"] == pytest.approx(27 * VOXEL_ML, rel=1e-15)


@pytest.mark.parametrize("profile", PROFILE_CASES, ids=PROFILE_IDS)
def test_non_empty_case_is_ok_and_finite(profile: Profile) -> None:
    """Two overlapping boxes: status ok, every metric finite, 0 ≤ Dice, NSD ≤ 1, volumes from
    voxel counts (24 and 27 voxels)."""
    _, pred, ref = _masks()
    res = structure_metrics(pred, ref, SPACING, profile)
    assert res.status == "ok"
    assert list(res.values) == list(profile.metrics)
    assert all(math.isfinite(v) for v in res.values.values())
    for key in ("dsc", *_nsd_keys(profile)):
        assert 0.0 <= res.values[key] <= 1.0
    assert res.values["volume_pred_ml"] == pytest.approx(24 * VOXEL_ML, rel=1e-15)
    assert res.values["volume_ref_ml"] == pytest.approx(27 * VOXEL_ML, rel=1e-15)


def test_touchstone_dice_has_plus_one() -> None:
    """Touchstone profile: Dice = 2|P∧G| / (|P| + |G| + 1). Boxes of 24 and 27 voxels overlap
    in [2:3, 3:5, 4:7] = 1·2·3 = 6 voxels → 12/52 (exact); default profile 12/51 (exact)."""
    _, pred, ref = _masks()
    assert np.count_nonzero(pred & ref) == 6
    assert structure_metrics(pred, ref, SPACING, "touchstone").values["dsc"] == 12 / 52
    assert structure_metrics(pred, ref, SPACING, "default").values["dsc"] == 12 / 51
    assert get_profile("touchstone").dice_smooth == 1.0


def test_single_voxel_identical() -> None:
    """One identical voxel: Dice 1, NSD 1, all distances 0 (closed form), every profile."""
    m = np.zeros((3, 3, 3), dtype=bool)
    m[0, 0, 0] = True  # on the array corner
    for profile in PROFILE_CASES:
        v = structure_metrics(m, m.copy(), SPACING, profile).values
        assert v["dsc"] == (1.0 if profile.dice_smooth == 0 else 2 / 3)
        assert all(v[k] == 1.0 for k in _nsd_keys(profile))
        assert all(v[k] == 0.0 for k in DISTANCE_METRICS)


def test_structure_tolerance_is_used() -> None:
    """Per-structure τ overrides tolerance_mm. Single voxels 2 steps apart along axis 2
    (distance 2 × 1.5 = 3.0 mm, exact): NSD voxel is 0 at τ = 2 and 1 at τ = 3."""
    ref = np.zeros((4, 4, 6), dtype=bool)
    pred = np.zeros_like(ref)
    ref[1, 1, 1] = True
    pred[1, 1, 3] = True
    prof = Profile(
        "p",
        nsd_variant="voxel",
        tolerance_mm=2.0,
        structure_tolerance_mm={"far": 3.0},
        extra_tolerances_mm=(3.0,),
    )
    assert structure_metrics(pred, ref, SPACING, prof).values["nsd"] == 0.0
    v = structure_metrics(pred, ref, SPACING, prof, structure="far").values
    assert v["nsd"] == 1.0
    assert v["nsd@3mm"] == 1.0
    assert v["hd"] == 3.0


# ---------------------------------------------------------------------------------------------
# Inputs are never mutated (DESIGN §7)
# ---------------------------------------------------------------------------------------------


def test_inputs_not_mutated() -> None:
    """structure_metrics, surface_distances and label_map_metrics leave their inputs equal to
    copies taken before the call (and work on read-only arrays and Fortran order)."""
    _, pred, ref = _masks()
    pred_f = np.asfortranarray(pred)
    before = (pred.copy(), ref.copy())
    for profile in PROFILE_CASES:
        structure_metrics(pred, ref, SPACING, profile)
        structure_metrics(pred_f, ref, SPACING, profile)
    surface_distances(pred, ref, SPACING, box=(slice(None),) * 3, surfels=True)
    assert np.array_equal(pred, before[0]) and np.array_equal(ref, before[1])
    assert np.array_equal(pred_f, before[0])

    ro_pred, ro_ref = pred.copy(), ref.copy()
    ro_pred.setflags(write=False)
    ro_ref.setflags(write=False)
    structure_metrics(ro_pred, ro_ref, SPACING, "default")

    pred_map = pred.astype(np.uint8) * 2
    ref_map = ref.astype(np.uint8) * 2
    ref_map[9, 8, 7] = 1
    maps_before = (pred_map.copy(), ref_map.copy())
    label_map_metrics(pred_map, ref_map, {1: "a", 2: "b", 3: "c"}, SPACING, "default")
    assert np.array_equal(pred_map, maps_before[0]) and np.array_equal(ref_map, maps_before[1])


def test_label_map_edge_statuses() -> None:
    """label_map_metrics on all-zero maps: every structure both_empty with NaN metrics."""
    zeros = np.zeros((5, 5, 5), dtype=np.int16)
    out = label_map_metrics(zeros, zeros.copy(), {1: "a", 7: "b"}, SPACING, "default")
    assert {k: r.status for k, r in out.items()} == {"a": "both_empty", "b": "both_empty"}
    assert all(math.isnan(out["a"].values[k]) for k in ("dsc", "nsd", *DISTANCE_METRICS))


# ---------------------------------------------------------------------------------------------
# Invalid input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.float64])
def test_non_bool_input_raises_type_error(dtype: Any) -> None:
    """Masks must be bool (no silent thresholding): TypeError for pred and for ref."""
    _, pred, ref = _masks()
    with pytest.raises(TypeError):
        structure_metrics(pred.astype(dtype), ref, SPACING)
    with pytest.raises(TypeError):
        structure_metrics(pred, ref.astype(dtype), SPACING)


@pytest.mark.parametrize(
    "spacing",
    [
        (0.0, 1.0, 1.0),
        (-0.8, 0.8, 1.5),
        (math.nan, 1.0, 1.0),
        (1.0, math.inf, 1.0),
        (1.0, 1.0),
        (1.0, 1.0, 1.0, 1.0),
    ],
)
def test_bad_spacing_raises_value_error(spacing: tuple[float, ...]) -> None:
    """Spacing must be three positive finite numbers: ValueError, also for empty masks and for
    label maps."""
    empty, pred, ref = _masks()
    with pytest.raises(ValueError):
        structure_metrics(pred, ref, spacing)
    with pytest.raises(ValueError):
        structure_metrics(empty, empty, spacing)
    with pytest.raises(ValueError):
        label_map_metrics(pred.astype(np.uint8), ref.astype(np.uint8), {1: "a"}, spacing)


def test_shape_mismatch_and_dimension_raise_value_error() -> None:
    _, pred, ref = _masks()
    with pytest.raises(ValueError):
        structure_metrics(pred[:-1], ref, SPACING)
    with pytest.raises(ValueError):
        structure_metrics(pred[0], ref[0], SPACING)
    with pytest.raises(ValueError):
        label_map_metrics(pred[:-1].astype(np.uint8), ref.astype(np.uint8), {1: "a"}, SPACING)


def test_negative_labels_raise_value_error() -> None:
    lab = np.zeros((4, 4, 4), dtype=np.int8)
    lab[1, 1, 1] = -1
    with pytest.raises(ValueError):
        label_map_metrics(lab, lab.copy(), {1: "a"}, SPACING)


def test_unknown_profile_raises_value_error_listing_known() -> None:
    """get_profile / structure_metrics with an unknown name: ValueError naming every built-in
    profile so the user can pick one."""
    _, pred, ref = _masks()
    for call in (
        lambda: get_profile("nnunet"),
        lambda: structure_metrics(pred, ref, SPACING, "nnunet"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert all(name in message for name in PROFILES), message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nsd_variant": "area"},
        {"hd95_variant": "mean"},
        {"tolerance_mm": -1.0},
        {"tolerance_mm": math.nan},
        {"extra_tolerances_mm": (1.0, math.inf)},
        {"structure_tolerance_mm": {"liver": -0.5}},
    ],
)
def test_invalid_profile_raises_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Profile("bad", **kwargs)


def test_profiles_record_their_parameters() -> None:
    """Every built-in profile reports its name and a JSON-friendly parameter dict; the
    touchstone profile is Dice +1, NSD voxel at 1.5 mm (DESIGN §3)."""
    for name, profile in PROFILES.items():
        params = profile.params()
        assert params["profile"] == name == profile.name
        assert params["distance_dtype"] == "float64"
    t = PROFILES["touchstone"]
    assert (t.dice_smooth, t.nsd_variant, t.tolerance_mm) == (1.0, "voxel", 1.5)
    assert PROFILES["default"].tolerance_mm == 2.0
