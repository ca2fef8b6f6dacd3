"""Lesion-detection protocols: every knob that changes a detection number, and named presets.

A :class:`DetectionProtocol` fixes how lesions are found (connected components), how the
prediction is filtered before anything else, when a reference lesion counts as detected, when
a patient is called positive and what score ranks patients for AUC (DESIGN.md §3, lesion
detection). Presets name the conventions of published tools so their numbers can be
reproduced by name; ``atlas2`` is the default *reading* of the AbdomenAtlas 2.0 / PanTS prose
definitions (neither publishes an evaluator), not a reproduction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from assay.errors import InputError

MatchRule = Literal["overlap", "dilated_overlap", "iou_greedy", "iou_hungarian", "merged_iou"]
Morphology = Literal["none", "open3", "erode3"]
OrganGate = Literal["none", "multiply", "touch"]
ControlScope = Literal["any_type", "type_negative"]
ScoreRegion = Literal["retained", "map"]

MATCH_RULES: tuple[str, ...] = (
    "overlap",
    "dilated_overlap",
    "iou_greedy",
    "iou_hungarian",
    "merged_iou",
)
MORPHOLOGIES: tuple[str, ...] = ("none", "open3", "erode3")
ORGAN_GATES: tuple[str, ...] = ("none", "multiply", "touch")
CONTROL_SCOPES: tuple[str, ...] = ("any_type", "type_negative")
SCORE_REGIONS: tuple[str, ...] = ("retained", "map")
CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)

#: R-Super's patient-call volume thresholds (mm³), swept by every detection analysis.
RSUPER_VOLUME_SWEEP_MM3: tuple[float, ...] = (
    0.0,
    10.0,
    30.0,
    50.0,
    100.0,
    200.0,
    300.0,
    500.0,
    1000.0,
    2000.0,
    5000.0,
)


@dataclass(frozen=True)
class DetectionProtocol:
    """A complete lesion-detection protocol.

    Parameters
    ----------
    name
        Name recorded with every result (a preset's name, or ``"custom"``).
    connectivity
        Voxel connectivity of lesion instances: 26 (default), 18 or 6.
    resample_mm
        Resample prediction, reference and organ masks (nearest neighbour) and probability
        maps (linear) to this isotropic spacing first, as the JHU scripts do
        (``scipy.ndimage.zoom`` with factor spacing / ``resample_mm``); None keeps the grid.
    morphology
        ``none``; ``open3``: erode with a 3×3×3 box once, dilate twice, keep the voxels of the
        original (R-Super); ``erode3``: erode with a 3×3×3 box and keep the eroded mask
        (RadGPT).
    min_volume_mm3, min_radius_mm
        Drop predicted components smaller than this volume, or whose equivalent-sphere
        radius (3V/4π)^(1/3) is below this radius (DiffTumor: 3 mm).
    organ_gate, organ_dilation_voxels
        ``multiply``: keep only predicted voxels inside the organ mask dilated by k voxels
        (3×3×3 box, k times); ``touch``: keep only components touching it; ``none``.
    match
        When a reference lesion counts as detected: ``overlap`` (any retained predicted voxel
        on it), ``dilated_overlap`` (touching the reference dilated by ``dilation_voxels``
        with an 18-connected element, reference lesions whose dilations touch merged, as in
        BraTS 2023), ``iou_greedy`` (IoU ≥ t, one-to-one, greedily by descending IoU:
        panoptica), ``iou_hungarian`` (IoU ≥ t, one-to-one by Hungarian assignment
        maximising the number of matches, then the IoU: PI-CAI), ``merged_iou`` (references
        and predictions joined through overlaps are merged; detected iff the merged IoU > t,
        strictly: LiTS).
    iou_threshold
        t of the IoU rules.
    ignore_overlapping_unmatched
        With ``iou_hungarian``: an unmatched prediction with IoU ≥ t on some reference lesion
        is ignored instead of counted as a false positive (PI-CAI's default).
    min_reference_volume_mm3
        Reference lesions at or below this volume are recorded but left out of TP and FN
        (BraTS 2023: 50 mm³); predictions touching only such lesions are ignored. 0 keeps all.
    patient_min_volume_mm3
        A patient is called positive when the retained predicted volume is > 0 and ≥ this.
    probability_threshold
        A probability map without a mask is binarised at ``p > threshold``.
    score_region
        Patient score for AUC: the maximum probability over the ``retained`` predicted region
        (0 when nothing is retained) or over the whole ``map``; without probabilities the
        retained predicted volume is the score (flagged as a fallback).
    control_scope
        Controls for specificity: patients with no tumour of ``any_type`` (default) or with
        no tumour of this type (``type_negative``, R-Super's per-organ convention).
    description
        One sentence shown with the results.
    """

    name: str = "custom"
    connectivity: int = 26
    resample_mm: float | None = None
    morphology: Morphology = "none"
    min_volume_mm3: float = 0.0
    min_radius_mm: float = 0.0
    organ_gate: OrganGate = "none"
    organ_dilation_voxels: int = 0
    match: MatchRule = "overlap"
    dilation_voxels: int = 0
    iou_threshold: float = 0.5
    ignore_overlapping_unmatched: bool = False
    min_reference_volume_mm3: float = 0.0
    patient_min_volume_mm3: float = 0.0
    probability_threshold: float = 0.5
    score_region: ScoreRegion = "retained"
    control_scope: ControlScope = "any_type"
    description: str = "a custom detection protocol"

    def __post_init__(self) -> None:
        _check_choice("connectivity", self.connectivity, CONNECTIVITIES)
        _check_choice("morphology", self.morphology, MORPHOLOGIES)
        _check_choice("organ_gate", self.organ_gate, ORGAN_GATES)
        _check_choice("match", self.match, MATCH_RULES)
        _check_choice("score_region", self.score_region, SCORE_REGIONS)
        _check_choice("control_scope", self.control_scope, CONTROL_SCOPES)
        for key in (
            "min_volume_mm3",
            "min_radius_mm",
            "min_reference_volume_mm3",
            "patient_min_volume_mm3",
        ):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(
                    f"Detection protocol option {key}={value!r} is invalid: give a finite "
                    "number >= 0."
                )
        for key in ("dilation_voxels", "organ_dilation_voxels"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 0):
                raise InputError(
                    f"Detection protocol option {key}={value!r} is invalid: give a whole "
                    "number of voxels >= 0."
                )
        if not (0.0 <= self.iou_threshold <= 1.0):
            raise InputError(
                f"Detection protocol option iou_threshold={self.iou_threshold!r} is invalid: "
                "give a number between 0 and 1."
            )
        if not (0.0 <= self.probability_threshold < 1.0):
            raise InputError(
                "Detection protocol option probability_threshold="
                f"{self.probability_threshold!r} is invalid: give a number in [0, 1)."
            )
        if self.resample_mm is not None and not (
            math.isfinite(self.resample_mm) and self.resample_mm > 0
        ):
            raise InputError(
                f"Detection protocol option resample_mm={self.resample_mm!r} is invalid: "
                "give a spacing in mm > 0, or leave it out."
            )
        if self.match == "dilated_overlap" and self.dilation_voxels == 0:
            raise InputError(
                "Detection protocol match='dilated_overlap' needs dilation_voxels >= 1 "
                "(BraTS 2023 uses 3 for gliomas, 1 for metastases)."
            )

    def params(self) -> dict[str, Any]:
        """Every knob as a plain dict, as recorded with the results."""
        return asdict(self)

    def with_options(self, **options: Any) -> DetectionProtocol:
        """A copy with some knobs changed (its name becomes ``<name>+custom``).

        Raises
        ------
        InputError
            For an unknown knob or an invalid value.
        """
        unknown = sorted(set(options) - set(asdict(self)))
        if unknown:
            raise InputError(
                f"Unknown detection protocol option(s) {', '.join(unknown)}; known: "
                f"{', '.join(k for k in asdict(self) if k not in ('name', 'description'))}."
            )
        if not options:
            return self
        name = options.pop("name", None) or (
            self.name if self.name.endswith("+custom") else f"{self.name}+custom"
        )
        return replace(self, name=name, **options)

    def with_text_options(self, items: list[str]) -> DetectionProtocol:
        """A copy with ``KEY=VALUE`` items applied (``--protocol-option``), each value read
        as its knob's type (numbers, ``true``/``false``, names; ``none`` for no resampling).

        Raises
        ------
        InputError
            For an item without ``=``, an unknown knob, or a value of the wrong type.
        """
        fields = {k: v for k, v in asdict(self).items() if k not in ("name", "description")}
        options: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            key, text = key.strip(), text.strip()
            if not sep or not key:
                raise InputError(
                    f"Invalid --protocol-option {item!r}; expected KEY=VALUE, e.g. "
                    "iou_threshold=0.3."
                )
            if key not in fields:
                raise InputError(
                    f"Unknown detection protocol option {key!r}; known: {', '.join(fields)}."
                )
            options[key] = _parse_knob(key, text, fields[key])
        return self.with_options(**options)


def _parse_knob(key: str, text: str, current: object) -> object:
    """``text`` as the type of knob ``key`` (whose current value is ``current``)."""
    lowered = text.lower()
    try:
        if key == "resample_mm":
            return None if lowered in ("none", "") else float(text)
        if isinstance(current, bool):
            if lowered not in ("true", "false"):
                raise ValueError
            return lowered == "true"
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        kind = "true or false" if isinstance(current, bool) else type(current).__name__
        raise InputError(
            f"Detection protocol option {key}={text!r} is invalid: give {kind}."
        ) from None
    return text


def _check_choice(key: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise InputError(
            f"Detection protocol option {key}={value!r} is invalid: choose one of "
            f"{', '.join(str(c) for c in choices)}."
        )


DETECTION_PROTOCOLS: dict[str, DetectionProtocol] = {
    p.name: p
    for p in (
        DetectionProtocol(
            name="atlas2",
            description=(
                "assay's reading of the AbdomenAtlas 2.0 / PanTS definitions (no evaluator is "
                "published): 26-connected lesions, no filter, a tumour is found when any "
                "predicted voxel touches it, a patient is positive with any predicted voxel"
            ),
        ),
        DetectionProtocol(
            name="brats",
            match="dilated_overlap",
            dilation_voxels=3,
            min_reference_volume_mm3=50.0,
            description=(
                "BraTS 2023 lesion-wise: a prediction touching the reference dilated by 3 "
                "voxels (18-connected) finds it; reference lesions of 50 mm³ or less are not "
                "counted; lesion-wise Dice counts each false positive as 0"
            ),
        ),
        DetectionProtocol(
            name="panoptica",
            match="iou_greedy",
            iou_threshold=0.5,
            description=(
                "panoptica's NaiveThresholdMatching: IoU >= 0.5, one-to-one, greedy by "
                "descending IoU"
            ),
        ),
        DetectionProtocol(
            name="picai",
            match="iou_hungarian",
            iou_threshold=0.1,
            ignore_overlapping_unmatched=True,
            score_region="map",
            description=(
                "PI-CAI / PANORAMA (picai_eval): IoU >= 0.1, Hungarian one-to-one, further "
                "overlapping candidates ignored; patient score = maximum of the map"
            ),
        ),
        DetectionProtocol(
            name="lits",
            connectivity=6,
            match="merged_iou",
            iou_threshold=0.5,
            description=(
                "LiTS: 6-connected lesions; references and predictions joined by overlaps "
                "are merged; detected when the merged IoU > 0.5"
            ),
        ),
        DetectionProtocol(
            name="rsuper",
            resample_mm=1.0,
            morphology="open3",
            score_region="map",
            control_scope="type_negative",
            description=(
                "the JHU R-Super patient-level scripts: 1 mm resampling (nearest for masks, "
                "linear for probabilities), 3x3x3 opening, patient call by predicted volume "
                "(swept), per-organ controls, AUC on the maximum probability"
            ),
        ),
    )
}


def get_detection_protocol(name: str) -> DetectionProtocol:
    """The named preset.

    Raises
    ------
    InputError
        For an unknown name; the message lists the presets.
    """
    try:
        return DETECTION_PROTOCOLS[name]
    except KeyError:
        raise InputError(
            f"Unknown detection protocol {name!r}; choose one of {', '.join(DETECTION_PROTOCOLS)}."
        ) from None
