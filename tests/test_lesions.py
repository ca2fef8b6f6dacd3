"""Lesion detection (assay.metrics.detect_lesions): closed-form cases and oracle parity.

Closed-form cases follow the parity table of ../shared/research/tumour_detection.md §6 (a 1 mm
grid, 26-connectivity unless noted; a cube ``[a:b]`` spans indices a..b-1). The oracles are
the real libraries installed from PyPI: panoptica 2.1.7 (NaiveThresholdMatching: TP/FP/FN,
RQ/SQ/PQ, recall by volume) and picai_eval 1.4.13 (``evaluate_case``: lesion TP/FP/FN,
matched overlap, case confidence). Counts must be equal; IoU/Dice values within 1e-12 (the
same ratios of integers; picai adds 1e-8 to numerator and denominator, so its overlaps are
compared within 1e-7).
"""

from __future__ import annotations

import math
import warnings

import cc3d
import numpy as np
import pytest

from assay.errors import GeometryError, InputError
from assay.metrics._detection_protocol import (
    DETECTION_PROTOCOLS,
    DetectionProtocol,
    get_detection_protocol,
)
from assay.metrics._lesion_size import (
    equivalent_diameter_mm,
    longest_axial_diameter_mm,
    size_bin,
)
from assay.metrics._lesions import detect_lesions

ATLAS2 = DETECTION_PROTOCOLS["atlas2"]
ONE_MM = (1.0, 1.0, 1.0)


def grid(n: int = 64) -> np.ndarray:
    return np.zeros((n, n, n), dtype=bool)


def cube(a: int, b: int, n: int = 64) -> np.ndarray:
    m = grid(n)
    m[a:b, a:b, a:b] = True
    return m


def sphere(d: float, n: int = 64) -> np.ndarray:
    """Digital sphere x²+y²+z² <= (d/2)² centred on a voxel corner (c = n/2 - 0.5)."""
    c = n / 2 - 0.5
    x, y, z = np.mgrid[:n, :n, :n]
    return (x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 <= (d / 2) ** 2


def run(pred, ref, name="atlas2", **options):
    protocol = get_detection_protocol(name).with_options(**options)
    return detect_lesions(pred, ref, ONE_MM, protocol)


# -- closed-form cases (research §6, P1-P16) --------------------------------------------------


def test_p1_control_with_empty_prediction_is_a_true_negative():
    r = run(grid(), grid())
    assert (r.n_reference, r.n_predicted, r.tp, r.fn, r.fp) == (0, 0, 0, 0, 0)
    assert not r.reference_positive and not r.patient_call
    assert math.isnan(r.dice) and math.isnan(r.lesion_dice)
    assert r.patient_score == 0.0 and r.score_source == "volume"


def test_p2_control_with_a_false_positive_cube():
    pred = grid()
    pred[30:33, 30:33, 30:33] = True
    prob = np.where(pred, 0.7, 0.0)
    r = detect_lesions(pred, grid(), ONE_MM, ATLAS2, probability=prob)
    assert (r.fp, r.patient_call, r.patient_score, r.score_source) == (1, True, 0.7, "probability")
    assert r.predicted[0].confidence == 0.7 and r.predicted[0].status == "fp"
    assert r.dice == 0.0 and r.lesion_dice == 0.0  # BraTS-style: each FP costs Dice 0
    # R-Super-style patient call by volume: 27 mm³ >= 10 is positive, < 30 is negative.
    assert run(pred, grid(), patient_min_volume_mm3=10.0).patient_call
    assert not run(pred, grid(), patient_min_volume_mm3=30.0).patient_call
    # The 3x3x3 opening keeps a 3-mm cube whole; erosion leaves its centre voxel.
    assert run(pred, grid(), "rsuper").predicted_volume_ml == pytest.approx(0.027, abs=1e-15)
    assert run(pred, grid(), morphology="erode3").predicted_volume_ml * 1000 == 1.0


def test_p3_control_with_a_2mm_cube_is_removed_by_the_opening():
    pred = grid()
    pred[30:32, 30:32, 30:32] = True
    assert run(pred, grid()).fp == 1
    r = run(pred, grid(), "rsuper")
    assert (r.fp, r.patient_call, r.predicted_volume_ml) == (0, False, 0.0)


def test_p4_perfect_prediction():
    g = cube(5, 15)
    for name in ("atlas2", "brats", "panoptica", "picai", "lits"):
        r = run(g, g, name)
        assert (r.tp, r.fn, r.fp, r.dice, r.lesion_dice) == (1, 0, 0, 1.0, 1.0), name
        assert r.reference[0].dice == 1.0


def split_case():
    g = cube(5, 15)
    p = grid()
    p[5:15, 5:15, 5:9] = True
    p[5:15, 5:15, 11:15] = True
    return p, g


def test_p5_one_tumour_split_into_two_predictions():
    p, g = split_case()
    r = run(p, g)
    assert (r.tp, r.fn, r.fp, r.n_predicted) == (1, 0, 0, 2)
    assert r.reference[0].dice == pytest.approx(16 / 18, abs=1e-15)  # BraTS union Dice 0.889
    r = run(p, g, "brats")
    assert (r.tp, r.fp) == (1, 0) and r.lesion_dice == pytest.approx(0.888888, abs=1e-6)
    r = run(p, g, "panoptica")  # both IoU 0.4 < 0.5
    assert (r.tp, r.fn, r.fp) == (0, 1, 2)
    r = run(p, g, "panoptica", iou_threshold=0.1)
    assert (r.tp, r.fn, r.fp) == (1, 0, 1)
    r = run(p, g, "picai")  # one TP, the second overlapping candidate ignored
    assert (r.tp, r.fp, r.ignored) == (1, 0, 1)
    r = run(p, g, "picai", ignore_overlapping_unmatched=False)
    assert (r.tp, r.fp, r.ignored) == (1, 1, 0)
    r = run(p, g, "lits")  # merged IoU 0.8 > 0.5
    assert (r.tp, r.fp) == (1, 0) and r.reference[0].matched == (1, 2)


def test_p6_unequal_split_picks_the_larger_overlap():
    g = cube(5, 15)
    p = grid()
    p[5:15, 5:15, 5:11] = True  # 6 slices: IoU 0.6
    p[5:15, 5:15, 12:14] = True  # 2 slices: IoU 0.2
    for name in ("panoptica", "picai"):
        r = run(p, g, name, iou_threshold=0.1)
        big = next(x for x in r.predicted if x.voxels == 600)
        assert big.status == "tp", name
    assert run(p, g, "panoptica").tp == 1  # 0.6 >= 0.5


def test_p7_two_tumours_merged_by_one_prediction():
    g = grid()
    g[5:10, 5:10, 5:10] = True
    g[5:10, 5:10, 20:25] = True
    p = grid()
    p[5:10, 5:10, 5:25] = True
    r = run(p, g)
    assert (r.tp, r.fn, r.fp) == (2, 0, 0)
    assert [x.dice for x in run(p, g, "brats").reference] == [0.4, 0.4]
    assert (lambda r: (r.tp, r.fn, r.fp))(run(p, g, "panoptica")) == (0, 2, 1)  # IoU 0.25
    assert (lambda r: (r.tp, r.fn, r.fp))(run(p, g, "picai")) == (1, 1, 0)
    assert (lambda r: (r.tp, r.fn, r.fp))(run(p, g, "lits")) == (0, 2, 1)  # IoU 0.5, not > 0.5


def test_p8_tiny_prediction_inside_a_large_tumour():
    g = cube(5, 25)
    p = cube(5, 7)
    r = run(p, g)
    assert (r.tp, r.fp) == (1, 0) and r.reference[0].dice == pytest.approx(16 / 8008, abs=1e-15)
    for name in ("panoptica", "picai", "lits"):
        r = run(p, g, name)
        assert (r.tp, r.fn, r.fp) == (0, 1, 1), name
    assert not run(p, g, "rsuper").patient_call  # opened away: patient FN
    assert run(p, g, "brats").tp == 1


def test_p9_near_miss_two_voxels_away():
    g = grid()
    g[20:30, 20:30, 20:30] = True
    p = grid()
    p[32:35, 22:25, 22:25] = True
    r = run(p, g)
    assert (r.tp, r.fn, r.fp, r.patient_call) == (0, 1, 1, True)  # T-Sen 0, P-Sen TP
    assert run(p, g, "brats").tp == 1  # dilation 3 reaches it
    r = run(p, g, "brats", dilation_voxels=1)
    assert (r.tp, r.fn, r.fp) == (0, 1, 1)


def test_p11_small_spheres_sizes_and_filters():
    s8, s5 = sphere(8), sphere(5)
    assert (int(s8.sum()), int(s5.sum())) == (280, 56)
    r8, r5 = run(s8, s8), run(s5, s5)
    assert r8.tp == 1 and r5.tp == 1
    # d_eq = (6V/π)^(1/3): 8.12 and 4.75 mm, so bins [5, 10) and [0, 5).
    assert r8.reference[0].equivalent_diameter_mm == pytest.approx(8.1168, abs=1e-4)
    assert r5.reference[0].equivalent_diameter_mm == pytest.approx(4.7468, abs=1e-4)
    # The opening keeps the d = 8 sphere whole and removes the d = 5 sphere.
    assert run(s8, s8, "rsuper").predicted_volume_ml * 1000 == 280
    assert run(s5, s5, "rsuper").predicted_volume_ml == 0.0
    # RadGPT's erosion: the eroded d = 8 sphere keeps 56 voxels (< 70: negative; >= 30: positive).
    assert run(s8, s8, morphology="erode3").predicted_volume_ml * 1000 == 56
    assert not run(s8, s8, morphology="erode3", patient_min_volume_mm3=70.0).patient_call
    assert run(s8, s8, morphology="erode3", patient_min_volume_mm3=30.0).patient_call


def test_p12_several_tumours_one_found():
    g = grid()
    g[5:10, 5:10, 5:10] = True
    g[40:45, 40:45, 40:45] = True
    p = grid()
    p[6:9, 6:9, 6:9] = True
    r = run(p, g)
    assert (r.n_reference, r.tp, r.fn, r.patient_call) == (2, 1, 1, True)
    assert [x.detected for x in r.reference] == [True, False]


def test_p14_anisotropic_spacing_and_1mm_resampling():
    g = np.zeros((50, 50, 20), dtype=bool)
    p = g.copy()
    p[10:16, 10:16, 5:7] = True
    spacing = (0.8, 0.8, 2.5)
    base = ATLAS2.with_options(patient_min_volume_mm3=120.0)
    r = detect_lesions(p, g, spacing, base)
    assert r.predicted_volume_ml * 1000 == pytest.approx(115.2, abs=1e-12)
    assert not r.patient_call  # 115.2 mm³ < 120
    resampled = base.with_options(resample_mm=1.0)
    r = detect_lesions(p, g, spacing, resampled)
    assert r.predicted_volume_ml * 1000 == 125.0  # 5 x 5 x 5 voxels after R-Super's zoom
    assert r.patient_call


def test_p16_a_four_voxel_reference_lesion_is_counted_unless_brats_drops_it():
    g = grid()
    g[10:12, 10:12, 10] = True
    p = g.copy()
    r = run(p, g)
    assert (r.tp, r.reference[0].voxels) == (1, 4)
    assert size_bin(r.reference[0].diameter_mm) == "<5 mm"
    r = run(p, g, "brats")  # 4 mm³ <= 50 mm³: recorded, not counted, its prediction ignored
    assert (r.tp, r.fn, r.fp, r.ignored) == (0, 0, 0, 1)
    assert not r.reference[0].counted and math.isnan(r.lesion_dice)


def test_tumour_in_a_patient_with_only_a_wrong_organ_prediction_is_missed():
    # P10 at the level of one tumour type: the liver tumour's mask has no prediction, so the
    # liver call is negative (the pancreas prediction is scored under pancreas_tumor).
    g = cube(5, 15)
    r = run(grid(), g)
    assert (r.tp, r.fn, r.patient_call, r.dice) == (0, 1, False, 0.0)


def test_score_regions_and_thresholded_probabilities():
    g = cube(5, 15)
    prob = np.zeros(g.shape)
    prob[5:15, 5:15, 5:15] = 0.9
    prob[40:42, 40:42, 40:42] = 0.3  # below the 0.5 binarisation
    r = detect_lesions(None, g, ONE_MM, ATLAS2, probability=prob)
    assert (r.tp, r.fp, r.patient_score) == (1, 0, 0.9)
    only_low = np.where(prob == 0.3, 0.3, 0.0)
    r = detect_lesions(None, g, ONE_MM, ATLAS2, probability=only_low)
    assert (r.patient_call, r.patient_score) == (False, 0.0)  # nothing retained
    r = detect_lesions(None, g, ONE_MM, get_detection_protocol("picai"), probability=only_low)
    assert r.patient_score == 0.3  # maximum of the whole map


def test_filters_by_volume_radius_and_organ():
    p = grid()
    p[5:8, 5:8, 5:8] = True  # 27 mm³, r_eq 1.86 mm
    p[30:40, 30:40, 30:40] = True  # 1000 mm³, r_eq 6.2 mm
    g = grid()
    assert run(p, g, min_volume_mm3=28.0).n_predicted == 1
    assert run(p, g, min_radius_mm=3.0).n_predicted == 1
    assert run(p, g, min_radius_mm=7.0).n_predicted == 0
    organ = grid()
    organ[28:45, 28:45, 28:45] = True
    touch = ATLAS2.with_options(organ_gate="touch")
    assert detect_lesions(p, g, ONE_MM, touch, organ=organ).n_predicted == 1
    organ2 = grid()
    organ2[10:20, 10:20, 10:20] = True  # two empty voxels (8, 9) from the small cube
    for k, kept in ((2, 0), (3, 1)):  # the organ dilated by 3 reaches index 7
        gated = ATLAS2.with_options(organ_gate="touch", organ_dilation_voxels=k)
        assert detect_lesions(p, g, ONE_MM, gated, organ=organ2).n_predicted == kept
    multiply = ATLAS2.with_options(organ_gate="multiply")
    r = detect_lesions(p, g, ONE_MM, multiply, organ=organ)
    assert r.predicted_volume_ml * 1000 == 1000


def test_inputs_are_not_mutated_and_cropping_is_exact():
    rng = np.random.default_rng(3)
    p = random_lesions(rng, 6)
    g = random_lesions(rng, 6)
    p[0:4, 0:4, 0:4] = g[0:4, 0:4, 0:4] = True  # a lesion on the grid's corner
    p0, g0 = p.copy(), g.copy()
    for name in DETECTION_PROTOCOLS:
        r = run(p, g, name)
        assert np.array_equal(p, p0) and np.array_equal(g, g0)
        if name == "rsuper":  # resampling depends on the grid's extent
            continue
        # The crop is exact: the same masks inside a larger empty grid give the same result.
        padded = run(np.pad(p, 9), np.pad(g, 9), name)
        assert padded == r, name
    r = run(p, g, "brats")
    assert r.reference[0].detected and r.reference[0].voxels >= 64


def test_bad_inputs_have_one_line_errors():
    g = cube(5, 15, n=20)
    with pytest.raises(InputError, match="outside"):
        detect_lesions(None, g, ONE_MM, ATLAS2, probability=np.full(g.shape, 1.5))
    with pytest.raises(GeometryError, match="differs from the reference shape"):
        detect_lesions(None, g, ONE_MM, ATLAS2, probability=np.zeros((20, 20, 19)))
    with pytest.raises(GeometryError, match="Resample"):
        detect_lesions(np.zeros((20, 20, 19), bool), g, ONE_MM, ATLAS2)
    with pytest.raises(InputError, match="organ mask"):
        detect_lesions(g, g, ONE_MM, ATLAS2.with_options(organ_gate="multiply"))
    with pytest.raises(InputError, match="Unknown detection protocol 'bratz'"):
        get_detection_protocol("bratz")
    with pytest.raises(InputError, match="iou_threshold"):
        DetectionProtocol(iou_threshold=1.5)
    with pytest.raises(InputError, match="Unknown detection protocol option"):
        ATLAS2.with_options(treshold=0.2)
    with pytest.raises(InputError, match="dilation_voxels"):
        DetectionProtocol(match="dilated_overlap")


def test_protocol_records_every_knob_and_names_changes():
    p = ATLAS2.with_options(iou_threshold=0.3)
    assert p.name == "atlas2+custom" and p.params()["iou_threshold"] == 0.3
    assert set(DETECTION_PROTOCOLS) >= {"atlas2", "brats", "panoptica", "picai", "lits", "rsuper"}


# -- sizes -------------------------------------------------------------------------------------


def test_longest_axial_diameter_closed_form():
    m = np.zeros((10, 10, 3), dtype=bool)
    m[2, 2, 1] = True
    # One voxel of 0.8 x 0.8 mm: its diagonal.
    assert longest_axial_diameter_mm(m, (0.8, 0.8, 1.5)) == pytest.approx(math.hypot(0.8, 0.8))
    m[2:7, 2:5, 1] = True  # 5 x 3 voxels: diagonal of 4.0 x 2.4 mm
    assert longest_axial_diameter_mm(m, (0.8, 0.8, 1.5)) == pytest.approx(math.hypot(4.0, 2.4))
    # A long lesion along the slice axis has a small axial diameter.
    tube = np.zeros((5, 5, 40), dtype=bool)
    tube[2, 2, :] = True
    assert longest_axial_diameter_mm(tube, (1.0, 1.0, 1.0)) == pytest.approx(math.sqrt(2))
    assert longest_axial_diameter_mm(tube, (1.0, 1.0, 1.0), axial_axis=0) == pytest.approx(
        math.hypot(1.0, 40.0)
    )


def test_longest_axial_diameter_matches_brute_force():
    rng = np.random.default_rng(11)
    for _ in range(20):
        plane = rng.random((12, 9)) > 0.6
        m = plane[:, :, None]
        su, sv = rng.uniform(0.5, 2.0, size=2)
        pts = np.argwhere(plane)
        corners = (pts[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])).reshape(-1, 2)
        xy = corners * np.array([su, sv])
        brute = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)).max() if len(pts) else 0.0
        assert longest_axial_diameter_mm(m, (su, sv, 1.0)) == pytest.approx(brute, abs=1e-12)


def test_size_bins_and_equivalent_diameter():
    assert [size_bin(d) for d in (0.0, 4.99, 5.0, 10.0, 19.9, 20.0, 50.0)] == [
        "<5 mm",
        "<5 mm",
        "5-10 mm",
        "10-20 mm",
        "10-20 mm",
        "20-50 mm",
        ">=50 mm",
    ]
    assert equivalent_diameter_mm(4.0 / 3.0 * math.pi * 125.0) == pytest.approx(10.0)


# -- oracle parity -----------------------------------------------------------------------------


def random_lesions(rng: np.random.Generator, n: int, shape=(40, 40, 24)) -> np.ndarray:
    """``n`` random boxes and balls, some of them overlapping or touching."""
    m = np.zeros(shape, dtype=bool)
    for _ in range(n):
        c = [int(rng.integers(2, s - 2)) for s in shape]
        r = [int(rng.integers(1, 5)) for _ in shape]
        if rng.random() < 0.5:
            m[tuple(slice(max(ci - ri, 0), ci + ri) for ci, ri in zip(c, r, strict=True))] = True
        else:
            x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
            rad = rng.uniform(1.0, 4.5)
            m |= (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= rad**2
    return m


def jitter(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    """A prediction: the reference shifted by up to 1 voxel, 5 % of its voxels dropped, and
    false positives added."""
    shift = tuple(int(s) for s in rng.integers(-1, 2, size=3))
    p = np.roll(ref, shift, axis=(0, 1, 2))
    p &= rng.random(p.shape) > 0.05
    return p | random_lesions(rng, int(rng.integers(0, 3)), ref.shape)


@pytest.fixture(scope="module")
def panoptica_evaluator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import panoptica
        from panoptica import (
            ConnectedComponentsInstanceApproximator,
            InputType,
            NaiveThresholdMatching,
            Panoptica_Evaluator,
        )
        from panoptica.utils.citation_reminder import disable_citation_reminder

        disable_citation_reminder()

    def evaluate(pred, ref, threshold):
        ev = Panoptica_Evaluator(
            expected_input=InputType.SEMANTIC,
            instance_approximator=ConnectedComponentsInstanceApproximator(),
            instance_matcher=NaiveThresholdMatching(matching_threshold=threshold),
            verbose=False,
            log_times=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ev.evaluate(pred.astype(np.uint8), ref.astype(np.uint8), verbose=False)[
                "ungrouped"
            ]

    assert panoptica.__name__ == "panoptica"
    return evaluate


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.1])
def test_matches_panoptica_naive_threshold_matching(panoptica_evaluator, threshold):
    rng = np.random.default_rng(int(threshold * 100))
    protocol = get_detection_protocol("panoptica").with_options(iou_threshold=threshold)
    checked = 0
    for _ in range(25):
        ref = random_lesions(rng, int(rng.integers(1, 7)))
        pred = jitter(rng, ref)
        ours = detect_lesions(pred, ref, ONE_MM, protocol)
        theirs = panoptica_evaluator(pred, ref, threshold)
        assert (ours.tp, ours.fp, ours.fn) == (theirs.tp, theirs.fp, theirs.fn)
        assert (ours.n_reference, ours.n_predicted) == (
            theirs.n_ref_instances,
            theirs.n_pred_instances,
        )
        rq = ours.tp / (ours.tp + 0.5 * ours.fp + 0.5 * ours.fn)
        assert rq == pytest.approx(theirs.rq, abs=1e-12)
        matched = [r for r in ours.reference if r.detected]
        if matched:
            dsc = [r.dice for r in matched]
            iou = [d / (2 - d) for d in dsc]
            assert np.mean(dsc) == pytest.approx(theirs.sq_dsc, abs=1e-12)
            assert np.mean(iou) == pytest.approx(theirs.sq, abs=1e-12)
            assert np.mean(iou) * rq == pytest.approx(theirs.pq, abs=1e-12)
        edges = [30.0, 100.0]
        rec = theirs.recall_by_volume(edges, volume="voxel_count")
        for k, (lo, hi) in enumerate(zip([0.0, *edges], [*edges, math.inf], strict=True)):
            inside = [r for r in ours.reference if lo <= r.voxels < hi]
            ours_rec = np.mean([r.detected for r in inside]) if inside else math.nan
            assert ours_rec == pytest.approx(rec[f"rec_q{k}"], abs=1e-12, nan_ok=True)
        checked += ours.tp
    assert checked > 10  # the cases exercise matches, not only misses


def picai_case(pred_labels_conf: np.ndarray, ref: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from picai_eval.eval import evaluate_case
    return evaluate_case(pred_labels_conf.astype(np.float32), ref.astype(np.int32))


@pytest.mark.parametrize("seed", range(4))
def test_matches_picai_eval_evaluate_case(seed):
    rng = np.random.default_rng(100 + seed)
    protocol = get_detection_protocol("picai")
    for _ in range(15):
        ref = random_lesions(rng, int(rng.integers(0, 6)))
        pred = jitter(rng, ref)
        # picai's detection map: each candidate at one confidence (distinct, dyadic values).
        labels, n = cc3d.connected_components(pred.astype(np.uint8), connectivity=26, return_N=True)
        conf = np.zeros(n + 1, dtype=np.float32)
        conf[1:] = (np.arange(1, n + 1) + 8) / 64.0
        y_det = conf[labels]
        ours = detect_lesions(pred, ref, ONE_MM, protocol, probability=y_det.astype(np.float64))
        y_list, case_conf, *_ = picai_case(y_det, ref)
        tp = [e for e in y_list if e[0] == 1 and e[1] > 0]
        fn = [e for e in y_list if e[0] == 1 and e[1] == 0]
        fp = [e for e in y_list if e[0] == 0]
        assert (ours.tp, ours.fn, ours.fp) == (len(tp), len(fn), len(fp))
        assert ours.patient_score == pytest.approx(float(case_conf), abs=0)
        ours_tp = sorted(x.confidence for x in ours.predicted if x.status == "tp")
        assert ours_tp == pytest.approx(sorted(e[1] for e in tp), abs=0)
        ours_fp = sorted(x.confidence for x in ours.predicted if x.status == "fp")
        assert ours_fp == pytest.approx(sorted(e[1] for e in fp), abs=0)
        # Matched overlaps: picai's IoU is (I + 1e-8) / (U + 1e-8).
        iou_ours = sorted(r.dice / (2 - r.dice) for r in ours.reference if r.detected)
        assert iou_ours == pytest.approx(sorted(e[2] for e in tp), abs=1e-7)


def _signature(r):
    refs = sorted((x.voxels, x.detected, x.counted, x.dice, x.diameter_mm) for x in r.reference)
    preds = sorted((x.voxels, x.status, x.confidence) for x in r.predicted)
    return (r.tp, r.fn, r.fp, r.ignored, r.dice, r.lesion_dice, r.patient_score, refs, preds)


@pytest.mark.parametrize("name", ["atlas2", "brats", "panoptica", "picai", "lits"])
def test_far_apart_regions_are_scored_as_the_whole(monkeypatch, name):
    """Lesions spread over a large grid are scored region by region (8³ blocks joined within
    twice the margin); with one block spanning the grid there is a single region. Both give
    the same lesions, values and counts (lesion numbering may differ)."""
    import assay.metrics._lesions as lesions_module

    rng = np.random.default_rng(5)
    ref = np.zeros((120, 100, 90), dtype=bool)
    pred = np.zeros_like(ref)
    for _ in range(12):
        c = rng.integers(5, [115, 95, 85])
        r = rng.integers(1, 4, size=3)
        box = tuple(slice(int(a - b), int(a + b)) for a, b in zip(c, r, strict=True))
        ref[box] = True
        if rng.random() < 0.7:
            shifted = tuple(slice(s.start + 1, s.stop + 1) for s in box)
            pred[shifted] = True
    pred[3:6, 3:6, 3:6] = True  # a false positive near the grid's corner
    prob = np.where(pred, rng.uniform(0.5, 1.0, pred.shape), rng.uniform(0, 0.4, pred.shape))
    protocol = get_detection_protocol(name)
    regions = lesions_module._regions(pred, ref, protocol)
    assert len(regions) > 3  # the split is exercised
    split = detect_lesions(pred, ref, (0.8, 0.9, 1.5), protocol, probability=prob)
    monkeypatch.setattr(lesions_module, "_BLOCK", 1024)
    assert len(lesions_module._regions(pred, ref, protocol)) == 1
    whole = detect_lesions(pred, ref, (0.8, 0.9, 1.5), protocol, probability=prob)
    assert _signature(split) == _signature(whole)
    assert split.n_reference == whole.n_reference >= 10


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", [(40, 33, 64), (17, 24, 19), (9, 9, 8)])
def test_block_occupancy_on_every_memory_layout(order, shape):
    """The 8³-block occupancy of a mask within its bounding box (64-bit lanes for contiguous
    rows, a padded reduction otherwise, Fortran order transposed) equals a brute force."""
    from assay.metrics import bounding_box
    from assay.metrics._lesions import _block_any

    rng = np.random.default_rng(len(shape) + shape[0])
    mask = rng.random(shape) > 0.99
    lo = [int(rng.integers(0, n // 2)) for n in shape]
    hi = [int(rng.integers(n // 2 + 1, n + 1)) for n in shape]
    keep = np.zeros(shape, dtype=bool)
    keep[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    mask = np.asarray(mask & keep, order=order)
    mask[tuple(a for a in lo)] = True
    box = bounding_box(mask)
    assert box is not None
    start, stop = tuple(b.start for b in box), tuple(b.stop for b in box)
    got = _block_any(mask, start, stop)
    first = [a // 8 for a in start]
    want = np.zeros([-(-b // 8) - f for b, f in zip(stop, first, strict=True)], dtype=bool)
    for i, j, k in np.argwhere(mask):
        if all(a <= x < b for x, a, b in zip((i, j, k), start, stop, strict=True)):
            want[i // 8 - first[0], j // 8 - first[1], k // 8 - first[2]] = True
    assert got.shape == want.shape and np.array_equal(got, want)
