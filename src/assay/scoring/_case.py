"""Score one case: read its reference and prediction, align grids, compute every metric.

Failures never escape: a bad file, a geometry mismatch or a missing prediction becomes a
status with a one-line message on the affected structures (or the whole case), and every
(structure, metric) still gets a row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from assay.datasets import CaseSource, LabelMapFile, StructureFiles
from assay.errors import AssayError, InputError
from assay.io import Image, align_to_reference, binary_mask, read_image, same_grid
from assay.metrics import (
    Box,
    DetectionProtocol,
    DetectionResult,
    Profile,
    bounding_box,
    detect_lesions,
    equivalent_diameter_mm,
    label_boxes,
    structure_metrics,
    union_box,
)
from assay.scoring._records import CaseRecord, LesionRow, ScoreRow


@dataclass(frozen=True)
class CaseTask:
    """Everything needed to score one case (picklable, sent to workers).

    ``prediction`` is None when the model has no prediction for the case; ``failure`` says why
    when producing it failed (a model command that crashed or timed out: every structure is
    then ``failed`` with that message). ``problem`` and
    ``reference_problem`` hold discovery problems of the prediction or reference case (an
    unknown structure file name, two files for one structure) to record with the case; with a
    reference problem, structures without a reference file fail instead of counting as empty.
    ``probability`` (detection only) holds the case's probability maps, one file per tumour
    type; ``probability_problem`` their discovery problem. ``patient_scores``: (structure or
    ``*``, score) pairs from a patient-score CSV, replacing the case's patient score.
    """

    case_id: str
    reference: CaseSource | None
    prediction: CaseSource | None
    structures: tuple[str, ...]
    profile: Profile
    resample: str | None = None
    problem: str = ""
    reference_problem: str = ""
    failure: str = ""
    probability: CaseSource | None = None
    probability_problem: str = ""
    patient_scores: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class _Sparse:
    """A binary mask kept as the crop of its bounding box (box None = empty mask)."""

    box: Box | None
    crop: NDArray[np.bool_] | None

    def embed(self, box: Box) -> NDArray[np.bool_]:
        """The mask on ``box`` (the part of the crop inside it; zeros elsewhere)."""
        out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
        if self.box is not None and self.crop is not None:
            lo = [max(a.start, b.start) for a, b in zip(self.box, box, strict=True)]
            hi = [min(a.stop, b.stop) for a, b in zip(self.box, box, strict=True)]
            if all(h > low for low, h in zip(lo, hi, strict=True)):
                dst = tuple(
                    slice(low - b.start, h - b.start) for low, h, b in zip(lo, hi, box, strict=True)
                )
                src = tuple(
                    slice(low - a.start, h - a.start)
                    for low, h, a in zip(lo, hi, self.box, strict=True)
                )
                out[dst] = self.crop[src]
        return out


_EMPTY = _Sparse(None, None)


def _sparse(mask: NDArray[np.bool_]) -> _Sparse:
    box = bounding_box(mask)
    return _EMPTY if box is None else _Sparse(box, mask[box].copy())


@dataclass(frozen=True)
class _Failure:
    """A structure-level problem: its status and message are recorded; the case goes on."""

    status: str
    message: str


def score_case(task: CaseTask) -> CaseRecord:
    """Score one case; never raises for bad input (it is recorded in the result)."""
    start = time.perf_counter()
    flags: set[str] = set()
    notes: list[str] = []  # problems that leave the scores valid (recorded with the case)
    where = f"case {task.case_id!r}"
    results: dict[str, tuple[str, Mapping[str, float], str]] = {}
    lesions: list[LesionRow] = []
    detection = task.profile.detection
    organs: dict[str, _Sparse | _Failure] = {}
    case_status = "ok"
    try:
        ref_grid, ref_masks = _load_reference(task, notes)
        if task.failure:
            case_status = "failed"
            for s in task.structures:
                results[s] = ("failed", {}, task.failure)
        elif task.prediction is None or _no_files(task.prediction):
            case_status = "missing_prediction"
            msg = (
                f"No prediction for {where}: expected it next to the other predictions; "
                "add it, or the case counts as missing."
            )
            for s in task.structures:
                results[s] = ("missing_prediction", {}, msg)
        else:
            pred_masks = _load_prediction(task, ref_grid, flags, notes)
            if detection is not None and detection.organ_gate != "none":
                organs = _organ_masks(task, ref_grid, flags)
            spacing = ref_grid.spacing_mm
            for s in task.structures:
                ref_s, pred_s = ref_masks.get(s), pred_masks.get(s)
                if ref_s is None and task.reference_problem:
                    # a reference file may have been skipped (unknown name, duplicate): never
                    # score this structure against an assumed-empty reference
                    ref_s = _Failure("failed", f"Reference problem: {task.reference_problem}")
                elif (
                    ref_s is None
                    and isinstance(pred_s, _Failure)
                    and pred_s.status == "missing_prediction"
                ):
                    pred_s = None  # in neither reference nor prediction: both empty
                if isinstance(ref_s, _Failure):
                    results[s] = (ref_s.status, {}, ref_s.message)
                elif isinstance(pred_s, _Failure):
                    results[s] = (pred_s.status, {}, pred_s.message)
                else:
                    r = ref_s if ref_s is not None else _EMPTY
                    p = pred_s if pred_s is not None else _EMPTY
                    if detection is None:
                        results[s] = _compute(p, r, spacing, task.profile, s)
                    else:
                        organ = organs.get(s) if detection.organ_gate != "none" else None
                        results[s] = _detect_structure(task, p, r, ref_grid, s, lesions, organ)
        if detection is not None:
            _score_missing_as_empty(task, ref_masks, ref_grid, detection, results, lesions)
    except Exception as exc:  # a case-level failure: every structure records it
        message = _one_line(exc, where)
        case_status = "failed"
        results = {s: ("failed", {}, message) for s in task.structures}
        lesions = []
    rows: list[ScoreRow] = []
    for s in task.structures:
        status, values, message = results[s]
        for metric in task.profile.metrics:
            rows.append(ScoreRow(s, metric, values.get(metric, math.nan), status, message))
    statuses = {st for st, _, _ in results.values()}
    if case_status == "missing_prediction" and "missing_prediction" not in statuses:
        case_status = "ok"  # detection: every structure was predicted by its probability map
    if case_status == "ok":
        if "failed" in statuses or task.reference_problem:
            case_status = "failed"
        elif "missing_prediction" in statuses or task.problem or notes:
            case_status = "partial"
    problems = ({task.reference_problem, task.problem, task.probability_problem} - {""}) | set(
        notes
    )
    messages = sorted({m for _, _, m in results.values() if m} | problems)
    return CaseRecord(
        case_id=task.case_id,
        status=case_status,
        seconds=time.perf_counter() - start,
        rows=tuple(rows),
        message=" | ".join(messages),
        flags=tuple(sorted(flags)),
        lesions=tuple(lesions),
    )


#: Organs made of parts in the label schema (a kidney tumour is gated by either kidney).
_ORGAN_PARTS = {"kidney": ("kidney_left", "kidney_right")}


def _organ_masks(task: CaseTask, grid: Image, flags: set[str]) -> dict[str, _Sparse | _Failure]:
    """Tumour type -> the prediction's mask of its organ (for an organ gate), or why not."""
    from assay.datasets import TUMOUR_ORGANS

    wanted = {s: TUMOUR_ORGANS.get(s, s.removesuffix("_tumor")) for s in task.structures}
    names = sorted({p for o in wanted.values() for p in _ORGAN_PARTS.get(o, (o,))})
    loaded = _load_prediction(replace(task, structures=tuple(names)), grid, flags, [])
    out: dict[str, _Sparse | _Failure] = {}
    for structure, organ in wanted.items():
        parts = [loaded.get(p) for p in _ORGAN_PARTS.get(organ, (organ,))]
        masks = [p for p in parts if isinstance(p, _Sparse)]
        if not masks:
            out[structure] = _Failure(
                "failed",
                f"The detection protocol gates {structure!r} by the organ, but the prediction "
                f"of case {task.case_id!r} has no {organ} mask; add the model's organ mask "
                f"(named {' or '.join(_ORGAN_PARTS.get(organ, (organ,)))}), or drop the gate.",
            )
            continue
        box = masks[0].box
        for m in masks[1:]:
            box = union_box(box, m.box)
        if box is None:
            out[structure] = _EMPTY
            continue
        merged = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
        for m in masks:
            merged |= m.embed(box)
        out[structure] = _Sparse(box, merged)
    return out


def _detect_structure(
    task: CaseTask,
    pred: _Sparse | None,
    ref: _Sparse,
    grid: Image,
    structure: str,
    lesions: list[LesionRow],
    organ: _Sparse | _Failure | None = None,
) -> tuple[str, Mapping[str, float], str]:
    """Detection of one tumour type with its probability map, if the case has one; a bad map
    (unreadable, another grid, values outside [0, 1]) fails the structure with its message.
    ``pred`` None: the map is the prediction (binarised by the protocol)."""
    assert task.profile.detection is not None
    if isinstance(organ, _Failure):
        return organ.status, {}, organ.message
    mine: list[LesionRow] = []
    try:
        prob = _probability_map(task, structure, grid)
        if pred is None and prob is None:
            raise InputError("no prediction")  # the caller never asks for this
        result = _detect(pred, ref, grid, task.profile.detection, structure, mine, prob, organ)
    except InputError as exc:
        return "failed", {}, " ".join(str(exc).split())
    lesions.extend(mine)
    given = dict(task.patient_scores)
    score = given.get(structure, given.get("*"))
    if score is not None:
        status, values, message = result
        result = (status, {**values, "patient_score": score}, message)
    return result


def _probability_map(task: CaseTask, structure: str, grid: Image) -> NDArray[np.floating] | None:
    """The structure's probability map on the reference grid, or None without one."""
    src = task.probability
    if not isinstance(src, StructureFiles):
        return None
    where = f"case {task.case_id!r}, structure {structure!r}"
    if structure in src.problems:
        raise InputError(f"Probability map of {where}: {src.problems[structure]}")
    path = src.files.get(structure)
    if path is None:
        return None
    image = _check_grid(read_image(path))
    array, _ = align_to_reference(image, grid, where=f"{where} (probability map)")
    if array.dtype.kind not in "fiub":
        raise InputError(f"Probability map {path} has dtype {array.dtype}; write floats in [0, 1].")
    lo, hi = float(np.min(array)), float(np.max(array))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise InputError(
            f"Probability map {path} of {where} holds values in [{lo:.4g}, {hi:.4g}], outside "
            "[0, 1]; write probabilities (apply a sigmoid or softmax), not logits."
        )
    return array


def _detect(
    pred: _Sparse | None,
    ref: _Sparse,
    grid: Image,
    protocol: DetectionProtocol,
    structure: str,
    lesions: list[LesionRow],
    probability: NDArray[np.floating] | None = None,
    organ: _Sparse | None = None,
) -> tuple[str, Mapping[str, float], str]:
    """Detection values of one tumour type; its lesion rows are appended to ``lesions``.

    The masks (and the probability map) are embedded in their union box widened by the
    protocol's largest dilation (exact), or in the whole grid when the protocol resamples
    (zoom depends on the extent). ``pred`` None: the map, binarised, is the prediction.
    """
    shape = tuple(int(n) for n in grid.array.shape[:3])
    map_mask: _Sparse | None = None
    if pred is None:
        assert probability is not None
        map_mask = _sparse(np.asarray(probability > protocol.probability_threshold))
    box = union_box((pred or map_mask or _EMPTY).box, ref.box)
    if box is None:
        box = (slice(0, 1), slice(0, 1), slice(0, 1))
    if protocol.resample_mm is not None:
        box = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    else:
        margin = 1 + max(2, protocol.dilation_voxels, protocol.organ_dilation_voxels)
        b0, b1, b2 = (
            slice(max(b.start - margin, 0), min(b.stop + margin, n))
            for b, n in zip(box, shape, strict=True)
        )
        box = (b0, b1, b2)
    prob_crop = None if probability is None else np.asarray(probability[box], dtype=np.float64)
    result = detect_lesions(
        None if pred is None else pred.embed(box),
        ref.embed(box),
        grid.spacing_mm,
        protocol,
        probability=prob_crop,
        organ=(organ or _EMPTY).embed(box) if protocol.organ_gate != "none" else None,
        axial_axis=axial_axis(grid.affine),
        probability_max=None if probability is None else float(np.max(probability)),
    )
    lesions.extend(lesion_rows(structure, result))
    status = "ok" if result.n_reference or result.n_predicted else "both_empty"
    return status, result.values(), ""


def axial_axis(affine: NDArray[np.floating]) -> int:
    """The voxel axis closest to the scanner's superior-inferior (world z) direction."""
    return int(np.argmax(np.abs(np.asarray(affine, dtype=np.float64)[2, :3])))


def lesion_rows(structure: str, result: DetectionResult) -> list[LesionRow]:
    """The lesion records of one detection result as stored rows."""
    rows = [
        LesionRow(
            structure=structure,
            kind="reference",
            index=x.index,
            voxels=x.voxels,
            volume_ml=x.volume_ml,
            diameter_mm=x.diameter_mm,
            equivalent_diameter_mm=x.equivalent_diameter_mm,
            status=("detected" if x.detected else "missed") if x.counted else "uncounted",
            dice=x.dice,
            confidence=x.confidence,
            matched=",".join(map(str, x.matched)),
        )
        for x in result.reference
    ]
    rows += [
        LesionRow(
            structure=structure,
            kind="predicted",
            index=x.index,
            voxels=x.voxels,
            volume_ml=x.volume_ml,
            diameter_mm=math.nan,
            equivalent_diameter_mm=equivalent_diameter_mm(x.volume_ml * 1000.0),
            status=x.status,
            dice=math.nan,
            confidence=x.confidence,
            matched=",".join(map(str, x.matched)),
        )
        for x in result.predicted
    ]
    return rows


def _score_missing_as_empty(
    task: CaseTask,
    ref_masks: Loaded,
    grid: Image,
    protocol: DetectionProtocol,
    results: dict[str, tuple[str, Mapping[str, float], str]],
    lesions: list[LesionRow],
) -> None:
    """Detection: a structure without a usable prediction keeps its status and message but is
    scored as an empty prediction, so its reference lesions are counted (the analysis's
    missing-value policy then decides what a missing call counts as)."""
    for s, (status, values, message) in list(results.items()):
        if status not in ("missing_prediction", "failed") or values:
            continue
        ref_s = ref_masks.get(s)
        if isinstance(ref_s, _Failure):
            continue
        ref_m = ref_s if ref_s is not None else _EMPTY
        if status == "missing_prediction" and _has_probability(task, s):
            results[s] = _detect_structure(task, None, ref_m, grid, s, lesions)
            status, values, message = results[s]  # the map is the prediction ...
            if values:
                continue
        _, empty_values, _ = _detect(_EMPTY, ref_m, grid, protocol, s, lesions)  # ... or none
        results[s] = (status, empty_values, message)


def _has_probability(task: CaseTask, structure: str) -> bool:
    src = task.probability
    return isinstance(src, StructureFiles) and (structure in src.files or structure in src.problems)


def _compute(
    pred: _Sparse, ref: _Sparse, spacing: tuple[float, float, float], profile: Profile, s: str
) -> tuple[str, Mapping[str, float], str]:
    box = union_box(pred.box, ref.box)
    if box is None:  # both empty: the metrics layer decides values and status
        empty = np.zeros((1, 1, 1), dtype=bool)
        res = structure_metrics(empty, empty, spacing, profile, structure=s)
    else:
        full = (slice(None), slice(None), slice(None))
        res = structure_metrics(
            pred.embed(box), ref.embed(box), spacing, profile, structure=s, box=full
        )
    return res.status, res.values, ""


# -- reading ------------------------------------------------------------------------------------
Loaded = dict[str, "_Sparse | _Failure"]


def _load_reference(task: CaseTask, notes: list[str]) -> tuple[Image, Loaded]:
    """The reference grid and each structure's sparse mask (absent file = empty mask)."""
    src = task.reference
    where = f"case {task.case_id!r}"
    if src is None:
        raise InputError(task.reference_problem or f"No reference for {where}.")
    if isinstance(src, LabelMapFile):
        if src.problem:
            raise InputError(f"Reference problem: {src.problem}")
        image = _check_grid(read_image(src.path))
        split = _split_label_map(
            image.array, src.labels, task.structures, where, "reference", notes
        )
        return image, split
    assert isinstance(src, StructureFiles)
    grid: Image | None = None
    out: Loaded = {}
    for s in task.structures:
        path = src.files.get(s)
        if s in src.problems:
            out[s] = _Failure("failed", f"Reference problem: {src.problems[s]}")
            continue
        if path is None:
            continue
        what = f"for case {task.case_id!r}, structure {s!r} (reference)"
        try:
            image = _check_grid(read_image(path))
            mask = binary_mask(image, what=what)
        except InputError as exc:
            out[s] = _Failure("failed", f"Reference problem: {exc}")
            continue
        if grid is None:
            grid = image
        elif not same_grid(image, grid):
            out[s] = _Failure(
                "failed",
                f"Reference structure {s!r} of {where} ({path}) is on a different grid than the "
                "case's other reference files; fix the reference masks.",
            )
            continue
        out[s] = _sparse(mask)
    if grid is None:
        detail = (
            f"every reference file in {_folder(src)} failed"
            if src.files
            else "every structure's reference has a problem"
            if src.problems
            else "its reference folder holds no mask files"
        )
        if src.problems and not src.files:
            detail += f" ({' | '.join(src.problems.values())})"
        raise InputError(f"No readable reference mask for {where}: {detail}.")
    return grid, out


def _load_prediction(task: CaseTask, ref_grid: Image, flags: set[str], notes: list[str]) -> Loaded:
    src = task.prediction
    where = f"case {task.case_id!r}"
    if isinstance(src, LabelMapFile):
        if src.problem:
            return {s: _Failure("failed", src.problem) for s in task.structures}
        image = _check_grid(read_image(src.path))
        array, f = align_to_reference(image, ref_grid, where=where, resample=task.resample)
        flags.update(f)
        return _split_label_map(array, src.labels, task.structures, where, "prediction", notes)
    assert isinstance(src, StructureFiles)
    out: Loaded = {}
    for s in task.structures:
        path = src.files.get(s)
        swhere = f"case {task.case_id!r}, structure {s!r}"
        if s in src.problems:
            out[s] = _Failure("failed", src.problems[s])
            continue
        if path is None:
            out[s] = _Failure("missing_prediction", _missing_file(src, swhere, task.problem))
            continue
        try:
            image = _check_grid(read_image(path))
            mask = binary_mask(image, what=f"for {swhere} (prediction)")
            moved = Image(mask.view(np.uint8), image.affine, image.path)
            array, f = align_to_reference(moved, ref_grid, where=swhere, resample=task.resample)
        except InputError as exc:
            out[s] = _Failure("failed", " ".join(str(exc).split()))
            continue
        flags.update(f)
        out[s] = _sparse(array.view(bool) if array.dtype == np.uint8 else array != 0)
    return out


def _check_grid(image: Image) -> Image:
    """``image`` if its voxel grid is usable: every voxel axis a finite, non-zero length, and
    the axes independent (a singular affine would make every distance wrong)."""
    spacing = image.spacing_mm
    det = float(np.linalg.det(image.affine[:3, :3]))
    if not all(math.isfinite(v) and v > 0 for v in spacing) or abs(det) <= 1e-6 * math.prod(
        spacing
    ):
        raise InputError(
            f"Image {image.path} has a degenerate voxel grid (spacing "
            f"{tuple(round(v, 6) for v in spacing)} mm, affine determinant {det:.3g}): "
            "distances on it would be wrong. Fix the file's header (sform/qform)."
        )
    return image


def _split_label_map(
    array: NDArray[np.integer],
    labels: Mapping[int, str],
    structures: tuple[str, ...],
    where: str,
    role: str,
    notes: list[str],
) -> Loaded:
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and bool(np.all(np.mod(array, 1) == 0)):
            array = array.astype(np.int64)
        else:
            raise InputError(
                f"Label map of {where} has dtype {array.dtype} with non-integer values; "
                "a label map must hold integer labels."
            )
    known_max = max(labels, default=0)
    try:
        boxes, top = label_boxes(array, max_label=known_max)
    except ValueError as exc:
        raise InputError(f"{role.capitalize()} label map of {where}: {exc}") from None
    parts = [", ".join(map(str, sorted(set(boxes) - set(labels))))]
    if top > known_max:
        parts.append(f"values above {known_max}, up to {top}")
    listed = "; ".join(p for p in parts if p)
    if listed:
        notes.append(
            f"{role.capitalize()} label map of {where} holds label values the label schema does "
            f"not name ({listed}); they were ignored. Add them to the labels if they matter."
        )
    out: Loaded = {}
    named = set(labels.values())
    for value, s in labels.items():
        if s in structures:
            box = boxes.get(value)
            out[s] = _EMPTY if box is None else _Sparse(box, array[box] == value)
    for s in structures:
        if s not in named and role == "prediction":
            out[s] = _Failure(
                "missing_prediction",
                f"The prediction labels of {where} do not name structure {s!r}; add it to the "
                "prediction's label schema if the model predicts it.",
            )
    return out


def _missing_file(src: StructureFiles, where: str, problem: str) -> str:
    """Why a structure has no prediction file, naming files that may have been meant for it."""
    text = f"No prediction file for {where} in {_folder(src)}"
    if src.unrecognised:
        names = ", ".join(p.name for p in src.unrecognised)
        return (
            f"{text}, which holds files named after no known structure ({names}): rename the "
            "one meant for it, add its name with --schema, or write one (an all-zero mask if "
            "the structure is absent)."
        )
    if problem:
        return f"{text}; some of the case's files could not be used ({problem})."
    return f"{text}; write one (an all-zero mask if the structure is absent)."


def _no_files(src: CaseSource) -> bool:
    return isinstance(src, StructureFiles) and not src.files and not src.problems


def _folder(src: CaseSource) -> str:
    if isinstance(src, LabelMapFile):
        return str(src.path.parent)
    if src.folder is not None:
        return str(src.folder)
    paths = list(src.files.values())
    return str(paths[0].parent) if paths else "(no files)"


def _one_line(exc: BaseException, where: str) -> str:
    if isinstance(exc, AssayError):
        text = str(exc)
    else:  # an unexpected error: keep its type so it can be reported upstream
        text = f"Unexpected {type(exc).__name__} while scoring {where}: {exc}"
    return " ".join(text.split())
