"""Lesion detection of one (case, tumour type): instances, matching, patient call and score.

:func:`detect_lesions` applies a :class:`~assay.metrics.DetectionProtocol` to a predicted
mask (and optionally a probability map and an organ mask) against a reference mask:

1. binarise a probability map given without a mask (``p > probability_threshold``);
2. resample to ``resample_mm`` when asked (nearest for masks, linear for probabilities);
3. crop to the lesions (exact: the margin covers every dilation and opening);
4. prediction filter: organ gate (``multiply``), morphology, then per component the minimum
   volume, minimum equivalent radius and organ gate (``touch``);
5. connected components of reference and retained prediction (cc3d);
6. matching by the protocol's rule, from one overlap table of (reference, prediction)
   component voxel counts;
7. per reference lesion: volume, longest axial and equivalent diameters, detected, Dice with
   its matched predictions; per predicted lesion: volume, confidence, ``tp``/``fp``/
   ``ignored``; per case: counts, patient call, patient score, Dice, lesion-wise Dice.

Edge cases: no reference lesion (a control for this type) gives T-Sen undefined (no
reference lesions to find) and every retained prediction a false positive; both empty gives
Dice NaN (as for organs) and lesion-wise Dice NaN; the patient score is 0 when nothing is
retained (``score_region="retained"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cc3d
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from assay.errors import GeometryError, InputError
from assay.metrics._detection_protocol import DetectionProtocol
from assay.metrics._geometry import bounding_box, union_box
from assay.metrics._lesion_size import (
    equivalent_diameter_mm,
    longest_axial_diameter_mm,
)

BoolArray = NDArray[np.bool_]
PredictedStatus = Literal["tp", "fp", "ignored"]
ScoreSource = Literal["probability", "volume"]

#: Values stored per (case, tumour type) by a detection run, in storage order (registry keys).
DETECTION_CASE_METRICS: tuple[str, ...] = (
    "lesions_ref",
    "lesions_pred",
    "lesion_tp",
    "lesion_fn",
    "lesion_fp",
    "lesion_ignored",
    "patient_call",
    "patient_score",
    "dsc",
    "lesion_dice",
    "volume_ref_ml",
    "retained_volume_ml",
)

_BOX3 = np.ones((3, 3, 3), dtype=bool)
_BALL18 = ndimage.generate_binary_structure(3, 2)


@dataclass(frozen=True)
class ReferenceLesion:
    """One reference lesion (a connected component of the reference mask).

    ``dice`` is the Dice of the lesion with the union of its matched predictions (0 when
    missed); ``confidence`` the largest confidence of those predictions (NaN without a
    probability map or when missed); ``counted`` is False for lesions a protocol's minimum
    reference volume leaves out of TP and FN.
    """

    index: int
    voxels: int
    volume_ml: float
    diameter_mm: float
    equivalent_diameter_mm: float
    detected: bool
    counted: bool
    dice: float
    confidence: float
    matched: tuple[int, ...]


@dataclass(frozen=True)
class PredictedLesion:
    """One retained predicted lesion (a connected component after the filter)."""

    index: int
    voxels: int
    volume_ml: float
    confidence: float
    status: PredictedStatus
    matched: tuple[int, ...]


@dataclass(frozen=True)
class DetectionResult:
    """Lesion detection of one (case, tumour type) under one protocol.

    ``tp``/``fn`` count counted reference lesions found / missed; ``fp`` counts retained
    predicted lesions that are false positives; ``ignored`` those neither TP nor FP.
    """

    protocol: str
    n_reference: int
    n_predicted: int
    tp: int
    fn: int
    fp: int
    ignored: int
    reference_volume_ml: float
    predicted_volume_ml: float
    reference_positive: bool
    patient_call: bool
    patient_score: float
    score_source: ScoreSource
    dice: float
    lesion_dice: float
    reference: tuple[ReferenceLesion, ...]
    predicted: tuple[PredictedLesion, ...]

    def values(self) -> dict[str, float]:
        """The stored per-case values, keyed as :data:`DETECTION_CASE_METRICS`."""
        return {
            "lesions_ref": float(self.n_reference),
            "lesions_pred": float(self.n_predicted),
            "lesion_tp": float(self.tp),
            "lesion_fn": float(self.fn),
            "lesion_fp": float(self.fp),
            "lesion_ignored": float(self.ignored),
            "patient_call": float(self.patient_call),
            "patient_score": self.patient_score,
            "dsc": self.dice,
            "lesion_dice": self.lesion_dice,
            "volume_ref_ml": self.reference_volume_ml,
            "retained_volume_ml": self.predicted_volume_ml,
        }

    def summary(self) -> dict[str, Any]:
        """The per-case values as a flat dict (no lesion records)."""
        return {
            k: getattr(self, k)
            for k in (
                "n_reference",
                "n_predicted",
                "tp",
                "fn",
                "fp",
                "ignored",
                "reference_volume_ml",
                "predicted_volume_ml",
                "reference_positive",
                "patient_call",
                "patient_score",
                "score_source",
                "dice",
                "lesion_dice",
            )
        }


def detect_lesions(
    pred: NDArray[Any] | None,
    ref: NDArray[Any],
    spacing_mm: Sequence[float],
    protocol: DetectionProtocol,
    *,
    probability: NDArray[Any] | None = None,
    organ: NDArray[Any] | None = None,
    axial_axis: int = 2,
    probability_max: float | None = None,
) -> DetectionResult:
    """Detect and match the lesions of one tumour type.

    Parameters
    ----------
    pred
        Predicted binary mask, or None when ``probability`` is given (binarised at
        ``p > protocol.probability_threshold``).
    ref
        Reference binary mask of the same shape.
    spacing_mm
        Voxel spacing in array-axis order (mm).
    protocol
        The detection protocol (see :data:`~assay.metrics.DETECTION_PROTOCOLS`).
    probability
        Optional per-voxel probability map in [0, 1] of the same shape: lesion confidences
        (maximum per component) and the patient score.
    organ
        Optional organ mask for ``organ_gate``.
    axial_axis
        Array axis normal to the axial slices, for the longest axial diameter.
    probability_max
        The maximum of the whole probability map when ``probability`` is a crop of it (for
        ``score_region="map"``); default: the maximum of ``probability``.

    Raises
    ------
    GeometryError
        When the arrays' shapes differ.
    InputError
        For a probability map outside [0, 1] or not finite, a missing organ mask for an
        organ gate, or no prediction at all.
    """
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"Spacing must be three positive numbers in mm, got {spacing_mm!r}.")
    ref_b = _as_mask(ref, "reference")
    prob = None if probability is None else _as_probability(probability, ref_b.shape)
    if pred is None:
        if prob is None:
            raise InputError("Give a predicted mask, a probability map, or both.")
        pred_b = prob > protocol.probability_threshold
    else:
        pred_b = _as_mask(pred, "prediction")
        _same_shape(pred_b, ref_b, "prediction")
    organ_b = None
    if protocol.organ_gate != "none":
        if organ is None:
            raise InputError(
                f"Detection protocol {protocol.name!r} gates predictions by an organ mask "
                f"(organ_gate={protocol.organ_gate!r}), but none was given."
            )
        organ_b = _as_mask(organ, "organ")
        _same_shape(organ_b, ref_b, "organ mask")

    if protocol.resample_mm is not None:
        pred_b, ref_b, prob, organ_b, spacing = _resample(
            pred_b, ref_b, prob, organ_b, spacing, protocol.resample_mm
        )
        if pred is None and prob is not None:  # R-Super: resample the map, then threshold
            pred_b = prob > protocol.probability_threshold
    voxel_mm3 = spacing[0] * spacing[1] * spacing[2]

    score_map_max = float(prob.max()) if prob is not None and prob.size else 0.0
    if probability_max is not None and protocol.resample_mm is None:
        score_map_max = max(score_map_max, float(probability_max))
    references: list[ReferenceLesion] = []
    predicted: list[PredictedLesion] = []
    totals = np.zeros(8, dtype=np.float64)  # ref vox, retained vox, inter, tp, fn, fp, ign, max p
    totals[7] = -math.inf
    for box, only in _regions(pred_b, ref_b, protocol):
        pred_r, ref_r = pred_b[box], ref_b[box]
        if only is not None:  # keep this region's components only
            pred_r, ref_r = pred_r & only, ref_r & only
        part_ref, part_pred, part_totals = _detect_region(
            pred_r,
            ref_r,
            None if prob is None else prob[box],
            None if organ_b is None else organ_b[box],
            protocol,
            spacing,
            axial_axis,
            len(references),
            len(predicted),
        )
        references += part_ref
        predicted += part_pred
        totals[:7] += part_totals[:7]
        totals[7] = max(totals[7], part_totals[7])
    return _result(
        protocol,
        tuple(references),
        tuple(predicted),
        totals,
        voxel_mm3,
        prob is not None,
        score_map_max,
    )


def _detect_region(
    pred_c: BoolArray,
    ref_c: BoolArray,
    prob_c: NDArray[np.float64] | None,
    organ_c: BoolArray | None,
    protocol: DetectionProtocol,
    spacing: tuple[float, ...],
    axial_axis: int,
    ref_offset: int,
    pred_offset: int,
) -> tuple[list[ReferenceLesion], list[PredictedLesion], NDArray[np.float64]]:
    """Steps 4-7 on one region: its lesions (indices after the offsets) and its totals
    (reference voxels, retained voxels, their intersection, TP, FN, FP, ignored, and the
    largest probability on a retained voxel)."""
    voxel_mm3 = spacing[0] * spacing[1] * spacing[2]
    retained = _filter_prediction(pred_c, organ_c, protocol, voxel_mm3)
    pred_labels, n_pred = _components(retained, protocol.connectivity)
    ref_labels, n_ref, touch_labels = _reference_instances(ref_c, protocol)
    pred_vox = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:].astype(np.int64)
    ref_vox = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)[1:].astype(np.int64)
    inter = _overlap_table(ref_labels, pred_labels, n_ref, n_pred)
    touch = (
        inter if touch_labels is None else _overlap_table(touch_labels, pred_labels, n_ref, n_pred)
    )
    counted = ref_vox * voxel_mm3 > protocol.min_reference_volume_mm3
    detected, pred_status, matches = _match(inter, touch, ref_vox, pred_vox, counted, protocol)
    confidences = _confidences(prob_c, pred_labels, n_pred)
    boxes = ndimage.find_objects(ref_labels) if n_ref else []
    references = []
    for i in range(n_ref):
        mine = list(matches[i])
        matched_vox = int(pred_vox[mine].sum())
        inter_vox = int(inter[i, mine].sum())
        volume_mm3 = float(ref_vox[i]) * voxel_mm3
        box = boxes[i]
        assert box is not None
        references.append(
            ReferenceLesion(
                index=ref_offset + i + 1,
                voxels=int(ref_vox[i]),
                volume_ml=volume_mm3 / 1000.0,
                diameter_mm=longest_axial_diameter_mm(
                    ref_labels[box] == i + 1, spacing, axial_axis=axial_axis
                ),
                equivalent_diameter_mm=equivalent_diameter_mm(volume_mm3),
                detected=bool(detected[i]),
                counted=bool(counted[i]),
                dice=2.0 * inter_vox / (int(ref_vox[i]) + matched_vox),
                confidence=max((confidences[j] for j in mine), default=math.nan),
                matched=tuple(pred_offset + j + 1 for j in mine),
            )
        )
    by_pred: list[list[int]] = [[] for _ in range(n_pred)]
    for i, mine_t in enumerate(matches):
        for j in mine_t:
            by_pred[j].append(ref_offset + i + 1)
    predicted = [
        PredictedLesion(
            index=pred_offset + j + 1,
            voxels=int(pred_vox[j]),
            volume_ml=float(pred_vox[j]) * voxel_mm3 / 1000.0,
            confidence=confidences[j],
            status=pred_status[j],
            matched=tuple(by_pred[j]),
        )
        for j in range(n_pred)
    ]
    retained_max = float(prob_c[retained].max()) if prob_c is not None and n_pred else -math.inf
    totals = np.array(
        [
            ref_vox.sum(),
            pred_vox.sum(),
            inter.sum(),
            (detected & counted).sum(),
            (~detected & counted).sum(),
            sum(1 for x in pred_status if x == "fp"),
            sum(1 for x in pred_status if x == "ignored"),
            retained_max,
        ],
        dtype=np.float64,
    )
    return references, predicted, totals


def _result(
    protocol: DetectionProtocol,
    references: tuple[ReferenceLesion, ...],
    predicted: tuple[PredictedLesion, ...],
    totals: NDArray[np.float64],
    voxel_mm3: float,
    has_probability: bool,
    score_map_max: float,
) -> DetectionResult:
    """Case-level values from the regions' totals (see :func:`_detect_region`)."""
    n_ref_vox, n_ret, inter = int(totals[0]), int(totals[1]), int(totals[2])
    tp, fn, fp, ignored = (int(v) for v in totals[3:7])
    dice = math.nan if n_ref_vox + n_ret == 0 else 2.0 * inter / (n_ref_vox + n_ret)
    predicted_mm3 = n_ret * voxel_mm3
    call = n_ret > 0 and predicted_mm3 >= protocol.patient_min_volume_mm3
    source: ScoreSource
    if not has_probability:
        score, source = predicted_mm3, "volume"
    elif protocol.score_region == "map":
        score, source = score_map_max, "probability"
    else:
        score = float(totals[7]) if n_ret else 0.0
        source = "probability"
    counted = [r for r in references if r.counted]
    denominator = len(counted) + fp
    lesion_dice = (
        math.nan if denominator == 0 else sum(r.dice for r in counted if r.detected) / denominator
    )
    return DetectionResult(
        protocol=protocol.name,
        n_reference=len(references),
        n_predicted=len(predicted),
        tp=tp,
        fn=fn,
        fp=fp,
        ignored=ignored,
        reference_volume_ml=n_ref_vox * voxel_mm3 / 1000.0,
        predicted_volume_ml=predicted_mm3 / 1000.0,
        reference_positive=n_ref_vox > 0,
        patient_call=call,
        patient_score=score,
        score_source=source,
        dice=dice,
        lesion_dice=lesion_dice,
        reference=references,
        predicted=predicted,
    )


def _match(
    inter: NDArray[np.int64],
    touch: NDArray[np.int64],
    ref_vox: NDArray[np.int64],
    pred_vox: NDArray[np.int64],
    counted: NDArray[np.bool_],
    protocol: DetectionProtocol,
) -> tuple[NDArray[np.bool_], list[PredictedStatus], list[tuple[int, ...]]]:
    """Apply the protocol's match rule to the overlap tables.

    Returns per reference lesion whether it is detected and which predicted lesions
    (0-based) it is matched to, and per predicted lesion its status.
    """
    n_ref, n_pred = inter.shape
    detected = np.zeros(n_ref, dtype=bool)
    matches: list[tuple[int, ...]] = [() for _ in range(n_ref)]
    status: list[PredictedStatus] = ["fp"] * n_pred
    rule = protocol.match
    if rule in ("overlap", "dilated_overlap"):
        hits = touch > 0
        detected = np.asarray(hits.any(axis=1), dtype=bool)
        matches = [tuple(int(j) for j in np.flatnonzero(hits[i])) for i in range(n_ref)]
        for j in range(n_pred):
            column = hits[:, j]
            if (column & counted).any():
                status[j] = "tp"
            elif column.any():
                status[j] = "ignored"
    elif rule in ("iou_greedy", "iou_hungarian"):
        iou = _iou(inter, ref_vox, pred_vox)
        eligible = (inter > 0) & (iou >= protocol.iou_threshold)
        pairs = _greedy(iou, eligible) if rule == "iou_greedy" else _hungarian(iou, eligible)
        for i, j in pairs:
            detected[i] = True
            matches[i] = (j,)
            status[j] = "tp"
        if rule == "iou_hungarian" and protocol.ignore_overlapping_unmatched:
            for j in range(n_pred):
                if status[j] == "fp" and eligible[:, j].any():
                    status[j] = "ignored"
    else:  # merged_iou
        for refs, preds in _overlap_groups(inter):
            i_sum = int(inter[np.ix_(refs, preds)].sum())
            union = int(ref_vox[refs].sum()) + int(pred_vox[preds].sum()) - i_sum
            found = i_sum > protocol.iou_threshold * union
            for i in refs:
                detected[i] = found
                matches[i] = tuple(preds) if found else ()
            for j in preds:
                status[j] = "tp" if found else "fp"
    for j in range(n_pred):  # a prediction whose only matches are uncounted lesions
        if status[j] == "tp":
            mine = [i for i in range(n_ref) if j in matches[i]]
            if mine and not counted[mine].any():
                status[j] = "ignored"
    return detected, status, matches


def _iou(
    inter: NDArray[np.int64], ref_vox: NDArray[np.int64], pred_vox: NDArray[np.int64]
) -> NDArray[np.float64]:
    union = ref_vox[:, None] + pred_vox[None, :] - inter
    return np.asarray(inter / np.maximum(union, 1), dtype=np.float64)


def _greedy(iou: NDArray[np.float64], eligible: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """One-to-one pairs by descending IoU; ties by reference, then prediction index."""
    ii, jj = np.nonzero(eligible)
    order = np.lexsort((jj, ii, -iou[ii, jj]))
    used_r: set[int] = set()
    used_p: set[int] = set()
    pairs = []
    for k in order:
        i, j = int(ii[k]), int(jj[k])
        if i in used_r or j in used_p:
            continue
        used_r.add(i)
        used_p.add(j)
        pairs.append((i, j))
    return pairs


def _hungarian(iou: NDArray[np.float64], eligible: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """One-to-one pairs maximising the number of matches, then the total IoU (PI-CAI)."""
    if not eligible.any():
        return []
    weight = np.where(eligible, iou + 1.0, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if eligible[i, j]]


def _overlap_groups(inter: NDArray[np.int64]) -> list[tuple[list[int], list[int]]]:
    """Connected groups of the bipartite overlap graph (singletons of predictions included)."""
    n_ref, n_pred = inter.shape
    parent = list(range(n_ref + n_pred))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(*np.nonzero(inter), strict=True):
        a, b = find(int(i)), find(n_ref + int(j))
        if a != b:
            parent[b] = a
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for node in range(n_ref + n_pred):
        refs, preds = groups.setdefault(find(node), ([], []))
        (refs if node < n_ref else preds).append(node if node < n_ref else node - n_ref)
    return [g for g in groups.values() if g[0] and g[1]] + [
        ([], g[1]) for g in groups.values() if not g[0]
    ]


def _filter_prediction(
    pred: BoolArray, organ: BoolArray | None, protocol: DetectionProtocol, voxel_mm3: float
) -> BoolArray:
    """The retained prediction: organ multiply, morphology, then per-component filters."""
    out = pred
    gate = None
    if organ is not None:
        gate = (
            ndimage.binary_dilation(organ, _BOX3, iterations=protocol.organ_dilation_voxels)
            if protocol.organ_dilation_voxels
            else organ
        )
        if protocol.organ_gate == "multiply":
            out = out & gate
    if protocol.morphology == "open3":
        eroded = ndimage.binary_erosion(out, _BOX3)
        out = ndimage.binary_dilation(eroded, _BOX3, iterations=2) & out
    elif protocol.morphology == "erode3":
        out = ndimage.binary_erosion(out, _BOX3)
    needs_components = (
        protocol.min_volume_mm3 > 0
        or protocol.min_radius_mm > 0
        or (protocol.organ_gate == "touch" and gate is not None)
    )
    if not needs_components or not out.any():
        return np.asarray(out, dtype=bool)
    labels, n = _components(out, protocol.connectivity)
    volume = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64) * voxel_mm3
    keep = np.ones(n + 1, dtype=bool)
    keep[0] = False
    keep[1:] &= volume[1:] >= protocol.min_volume_mm3
    radius = (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)
    keep[1:] &= radius[1:] >= protocol.min_radius_mm
    if protocol.organ_gate == "touch" and gate is not None:
        touching = np.zeros(n + 1, dtype=bool)
        touching[np.unique(labels[gate])] = True
        keep &= touching
    return np.asarray(keep[labels], dtype=bool)


def _reference_instances(
    ref: BoolArray, protocol: DetectionProtocol
) -> tuple[NDArray[np.int64], int, NDArray[np.int64] | None]:
    """Reference lesion labels, their count, and (BraTS) the dilated labels they are found by.

    Under ``dilated_overlap`` the lesions are the components of the reference dilated by k
    voxels (18-connected element), restricted to reference voxels: lesions whose dilations
    touch are one lesion, as in BraTS 2023.
    """
    if protocol.match != "dilated_overlap":
        labels, n = _components(ref, protocol.connectivity)
        return labels, n, None
    dilated = ndimage.binary_dilation(ref, _BALL18, iterations=protocol.dilation_voxels)
    touch, n = _components(dilated, protocol.connectivity)
    return np.where(ref, touch, 0), n, touch


def _components(mask: BoolArray, connectivity: int) -> tuple[NDArray[np.int64], int]:
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int64), 0
    conn: Literal[6, 18, 26] = 26 if connectivity == 26 else 18 if connectivity == 18 else 6
    labels, n = cc3d.connected_components(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=conn, return_N=True
    )
    return labels.astype(np.int64, copy=False), int(n)


def _overlap_table(
    ref_labels: NDArray[np.int64], pred_labels: NDArray[np.int64], n_ref: int, n_pred: int
) -> NDArray[np.int64]:
    """Voxel counts of every (reference lesion, predicted lesion) intersection."""
    both = (ref_labels > 0) & (pred_labels > 0)
    codes = (ref_labels[both] - 1) * max(n_pred, 1) + (pred_labels[both] - 1)
    table = np.bincount(codes, minlength=n_ref * n_pred)
    return table[: n_ref * n_pred].reshape(n_ref, n_pred).astype(np.int64)


def _confidences(
    prob: NDArray[np.float64] | None, labels: NDArray[np.int64], n: int
) -> list[float]:
    if prob is None or n == 0:
        return [math.nan] * n
    best = ndimage.maximum(prob, labels, index=np.arange(1, n + 1))
    return [float(v) for v in np.atleast_1d(best)]


#: Edge of the coarse blocks that split a case into independent regions.
_BLOCK = 8


def _block_any(mask: BoolArray, start: tuple[int, ...], stop: tuple[int, ...]) -> NDArray[np.bool_]:
    """Which 8³ blocks of the absolute block grid hold a True voxel of ``mask``, for
    ``start:stop`` its bounding box (cells ``start // 8`` to ``ceil(stop / 8)`` of each axis;
    outside the box the mask is empty, so whole blocks may be read).

    The last axis is reduced 8 voxels at a time as 64-bit words when the mask's rows are
    contiguous (one vectorised pass); the other two on the 8-times smaller result.
    """
    if mask.strides[0] == 1 and mask.strides[2] != 1:  # Fortran order (nibabel): transposed
        return np.asarray(_block_any(mask.T, start[::-1], stop[::-1]).T)
    first = [a // _BLOCK for a in start]
    last = [-(-b // _BLOCK) for b in stop]
    lo2, hi2 = first[2] * _BLOCK, min(last[2] * _BLOCK, mask.shape[2])
    rows = mask[start[0] : stop[0], start[1] : stop[1], lo2:hi2]
    if (
        _BLOCK == 8
        and mask.strides[2] == 1
        and (hi2 - lo2) % 8 == 0
        and mask.ctypes.data % 8 == 0
        and all(st % 8 == 0 for st in mask.strides[:2])
    ):
        lanes: NDArray[np.bool_] = np.asarray(rows.view(np.uint64) != 0)
    else:
        n2 = last[2] - first[2]
        padded = np.zeros((*rows.shape[:2], n2 * _BLOCK), dtype=bool)
        padded[:, :, : rows.shape[2]] = rows
        lanes = np.asarray(padded.reshape(*rows.shape[:2], n2, _BLOCK).any(axis=3), dtype=bool)
    n0, n1 = last[0] - first[0], last[1] - first[1]
    grid = np.zeros((n0 * _BLOCK, n1 * _BLOCK, lanes.shape[2]), dtype=bool)
    o0, o1 = start[0] - first[0] * _BLOCK, start[1] - first[1] * _BLOCK
    grid[o0 : o0 + lanes.shape[0], o1 : o1 + lanes.shape[1]] = lanes
    return np.asarray(
        grid.reshape(n0, _BLOCK, n1, _BLOCK, lanes.shape[2]).any(axis=(1, 3)), dtype=bool
    )


def _regions(
    pred: BoolArray, ref: BoolArray, protocol: DetectionProtocol
) -> list[tuple[tuple[slice, ...], BoolArray | None]]:
    """Independent regions of prediction ∪ reference: (box, mask of its voxels or None).

    Lesions far apart never interact: the union is reduced to 8³-voxel blocks, the occupied
    blocks are joined when they lie within twice the protocol's margin (every dilation and
    opening it applies), and each group is one region, boxed with that margin. A component
    lies within one group (its voxels' blocks touch), so each region, restricted to its own
    blocks' voxels, is scored alone, exactly as the whole would be. Resampling protocols
    (the zoom depends on the grid's extent) get their union box as one region.
    """
    margin = 1 + max(2, protocol.dilation_voxels, protocol.organ_dilation_voxels)
    outer = union_box(bounding_box(pred), bounding_box(ref))
    if outer is None:
        return []
    shape = pred.shape

    def widened(lo: tuple[int, ...], hi: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(max(a - margin, 0), min(b + margin, n))
            for a, b, n in zip(lo, hi, shape, strict=True)
        )

    start = tuple(s.start for s in outer)
    stop = tuple(s.stop for s in outer)
    if protocol.resample_mm is not None:
        return [(widened(start, stop), None)]
    # blocks on the absolute grid (cell c holds voxels c*B .. c*B+B-1 of each axis)
    first = tuple(a // _BLOCK for a in start)
    occupied = _block_any(pred, start, stop) | _block_any(ref, start, stop)
    origin = tuple(c * _BLOCK for c in first)
    reach = -(-2 * margin // _BLOCK)
    joined = ndimage.binary_dilation(occupied, _BOX3, iterations=reach)
    labels, n = ndimage.label(joined, structure=_BOX3)
    if n <= 1:
        return [(widened(start, stop), None)]
    owner = np.where(occupied, labels, 0)
    out: list[tuple[tuple[slice, ...], BoolArray | None]] = []
    for k, cell_box in enumerate(ndimage.find_objects(owner), start=1):
        if cell_box is None:
            continue
        lo = tuple(
            max(o + c.start * _BLOCK, a) for o, c, a in zip(origin, cell_box, start, strict=True)
        )
        hi = tuple(
            min(o + c.stop * _BLOCK, e) for o, c, e in zip(origin, cell_box, stop, strict=True)
        )
        box = widened(lo, hi)
        mine = owner[cell_box] == k
        for axis in range(3):
            mine = np.repeat(mine, _BLOCK, axis=axis)
        only = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
        src = tuple(
            slice(max(b.start - (o + c.start * _BLOCK), 0), b.stop - (o + c.start * _BLOCK))
            for b, o, c in zip(box, origin, cell_box, strict=True)
        )
        dst = tuple(
            slice(max(o + c.start * _BLOCK - b.start, 0), None)
            for b, o, c in zip(box, origin, cell_box, strict=True)
        )
        piece = mine[src]
        only[tuple(slice(d.start, d.start + m) for d, m in zip(dst, piece.shape, strict=True))] = (
            piece
        )
        out.append((box, only))
    return out


def _resample(
    pred: BoolArray,
    ref: BoolArray,
    prob: NDArray[np.float64] | None,
    organ: BoolArray | None,
    spacing: tuple[float, ...],
    target_mm: float,
) -> tuple[BoolArray, BoolArray, NDArray[np.float64] | None, BoolArray | None, tuple[float, ...]]:
    """``scipy.ndimage.zoom`` by spacing / target: order 0 for masks, 1 for probabilities."""
    factors = tuple(s / target_mm for s in spacing)

    def zoom_mask(m: BoolArray) -> BoolArray:
        return np.asarray(ndimage.zoom(m.astype(np.uint8), factors, order=0) > 0)

    new_prob = None
    if prob is not None:
        new_prob = np.clip(ndimage.zoom(prob, factors, order=1), 0.0, 1.0)
    return (
        zoom_mask(pred),
        zoom_mask(ref),
        new_prob,
        None if organ is None else zoom_mask(organ),
        (target_mm, target_mm, target_mm),
    )


def _as_mask(a: NDArray[Any], what: str) -> BoolArray:
    arr = np.asarray(a)
    if arr.ndim != 3:
        raise InputError(f"The {what} must be a 3-D mask, got {arr.ndim} dimensions.")
    return arr.astype(bool, copy=False)


def _as_probability(p: NDArray[Any], shape: tuple[int, ...]) -> NDArray[np.float64]:
    arr = np.asarray(p, dtype=np.float64)
    if arr.shape != shape:
        raise GeometryError(
            f"Probability map shape {arr.shape} differs from the reference shape {shape}. "
            "Write the probabilities on the reference grid."
        )
    if arr.size and not np.isfinite(arr).all():
        raise InputError("The probability map holds NaN or infinite values; give values in [0, 1].")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise InputError(
            f"The probability map holds values in [{arr.min():.4g}, {arr.max():.4g}], outside "
            "[0, 1]. Give probabilities (e.g. apply a sigmoid or softmax), not logits."
        )
    return arr


def _same_shape(a: BoolArray, ref: BoolArray, what: str) -> None:
    if a.shape != ref.shape:
        raise GeometryError(
            f"The {what} shape {a.shape} differs from the reference shape {ref.shape}. "
            "Resample it onto the reference grid."
        )
