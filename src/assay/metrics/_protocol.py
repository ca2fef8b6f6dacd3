"""Metric protocols (profiles) and the per-structure metric computation.

A :class:`Profile` names a complete protocol so published numbers can be reproduced exactly;
every stored result records its profile's :meth:`Profile.params`.

Edge cases (DESIGN.md §3), decided before any distance is computed:

==================  =====  =====  ====================  =================
case                Dice   NSD    HD, HD95, ASSD, MASD  status
==================  =====  =====  ====================  =================
both empty          NaN    NaN    NaN                   both_empty
R empty, P not      0      0      +inf                  empty_reference
P empty, R not      0      0      +inf                  empty_prediction
==================  =====  =====  ====================  =================

Volumes are reported in every case (0 ml for an empty mask).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from assay.errors import InputError, InputTypeError
from assay.metrics._detection_protocol import DetectionProtocol, get_detection_protocol
from assay.metrics._distances import Spacing
from assay.metrics._geometry import BoolArray, Box, bounding_box, union_box
from assay.metrics._registry import metric_info
from assay.metrics._surface import (
    HD95Variant,
    NSDVariant,
    assd,
    hausdorff,
    hausdorff_percentile,
    masd,
    nsd,
    surface_distances,
)

Status = Literal["ok", "both_empty", "empty_reference", "empty_prediction"]

#: Metrics every profile reports, in storage order (``nsd@<τ>mm`` extras follow ``nsd``).
BASE_METRICS = ("dsc", "nsd", "hd", "hd95", "assd", "masd", "volume_ref_ml", "volume_pred_ml")


@dataclass(frozen=True)
class Profile:
    """A complete metric protocol.

    Parameters
    ----------
    name : profile name recorded with every result.
    dice_smooth : added to the Dice denominator: 2|R∧P| / (|R| + |P| + smooth).
    nsd_variant : ``"surfel"`` (DeepMind areas) or ``"voxel"`` (MONAI counts).
    tolerance_mm : default NSD tolerance τ.
    structure_tolerance_mm : per-structure τ overriding ``tolerance_mm``.
    extra_tolerances_mm : further τ values, reported as metrics ``nsd@{τ}mm``.
    hd95_variant : ``"max"`` (MONAI), ``"pooled"`` (MedPy) or ``"surfel"`` (DeepMind).
    detection : a lesion-detection protocol: the profile then scores tumour detection
        (:func:`~assay.metrics.detect_lesions`) instead of segmentation metrics; see
        :func:`detection_profile`.
    """

    name: str
    dice_smooth: float = 0.0
    nsd_variant: NSDVariant = "surfel"
    tolerance_mm: float = 2.0
    structure_tolerance_mm: Mapping[str, float] = field(default_factory=dict, hash=False)
    extra_tolerances_mm: tuple[float, ...] = ()
    hd95_variant: HD95Variant = "max"
    detection: DetectionProtocol | None = None

    def __post_init__(self) -> None:
        # read-only, so the built-in PROFILES cannot be changed in place
        object.__setattr__(
            self, "structure_tolerance_mm", MappingProxyType(dict(self.structure_tolerance_mm))
        )
        if self.nsd_variant not in ("surfel", "voxel"):
            raise InputError(f"Profile {self.name!r}: nsd_variant must be 'surfel' or 'voxel'.")
        if self.hd95_variant not in ("max", "pooled", "surfel"):
            raise InputError(
                f"Profile {self.name!r}: hd95_variant must be 'max', 'pooled' or 'surfel'."
            )
        taus = [self.tolerance_mm, *self.structure_tolerance_mm.values(), *self.extra_tolerances_mm]
        if not all(math.isfinite(t) and t >= 0 for t in taus):
            raise InputError(f"Profile {self.name!r}: tolerances must be finite and >= 0 mm.")
        if len(set(self.metrics)) != len(self.metrics):
            raise InputError(
                f"Profile {self.name!r}: extra tolerances {list(self.extra_tolerances_mm)} give "
                "duplicate metric names (nsd@<τ>mm uses 6 significant digits); drop duplicates."
            )

    def __getstate__(self) -> dict[str, Any]:  # mapping proxies do not pickle
        state = dict(self.__dict__)
        state["structure_tolerance_mm"] = dict(self.structure_tolerance_mm)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {
            **state,
            "structure_tolerance_mm": MappingProxyType(state["structure_tolerance_mm"]),
        }
        self.__dict__.update(state)

    def tolerance_for(self, structure: str | None) -> float:
        """NSD tolerance (mm) for ``structure``."""
        if structure is None:
            return self.tolerance_mm
        return self.structure_tolerance_mm.get(structure, self.tolerance_mm)

    @property
    def task(self) -> str:
        """``detection`` for a detection profile, else ``segmentation``."""
        return "segmentation" if self.detection is None else "detection"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the metrics this profile reports, in storage order."""
        if self.detection is not None:
            from assay.metrics._lesions import DETECTION_CASE_METRICS

            return DETECTION_CASE_METRICS
        extras = tuple(f"nsd@{t:g}mm" for t in self.extra_tolerances_mm)
        return BASE_METRICS[:2] + extras + BASE_METRICS[2:]

    @property
    def needs_surfels(self) -> bool:
        return self.nsd_variant == "surfel" or self.hd95_variant == "surfel"

    def params(self) -> dict[str, Any]:
        """Every parameter of the protocol, JSON-serialisable."""
        if self.detection is not None:
            return {
                "profile": self.name,
                "task": "detection",
                "detection": self.detection.params(),
                "dice_smooth": 0.0,
                "volume_unit": "ml (voxel count x voxel volume, after any resampling)",
            }
        return {
            "profile": self.name,
            "dice_smooth": self.dice_smooth,
            "nsd_variant": self.nsd_variant,
            "tolerance_mm": self.tolerance_mm,
            "structure_tolerance_mm": dict(self.structure_tolerance_mm),
            "extra_tolerances_mm": list(self.extra_tolerances_mm),
            "hd_surfaces": "voxel (mask XOR 6-connected erosion, border 0)",
            "hd95_variant": self.hd95_variant,
            "hd95_percentile": 95.0,
            "percentile_method": "linear (numpy default)",
            "assd": "pooled mean of both directed voxel-surface distance sets",
            "masd": "mean of the two directed mean voxel-surface distances",
            "distance_dtype": "float64",
        }


PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "default": Profile("default"),
        "touchstone": Profile("touchstone", dice_smooth=1.0, nsd_variant="voxel", tolerance_mm=1.5),
        "monai": Profile("monai", nsd_variant="voxel", tolerance_mm=2.0, hd95_variant="max"),
        "deepmind": Profile("deepmind", nsd_variant="surfel", hd95_variant="surfel"),
        "medpy": Profile("medpy", nsd_variant="voxel", hd95_variant="pooled"),
    }
)


def detection_profile(protocol: DetectionProtocol | str) -> Profile:
    """The profile of a detection run with ``protocol`` (a preset name or a protocol): its
    name is ``detection:<protocol name>``."""
    p = get_detection_protocol(protocol) if isinstance(protocol, str) else protocol
    return Profile(f"detection:{p.name}", detection=p)


def get_profile(name: str) -> Profile:
    """Look up a built-in profile by name (error lists the known ones); ``detection:NAME``
    gives the detection profile of a built-in detection protocol."""
    if name.startswith("detection:"):
        return detection_profile(name.split(":", 1)[1])
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise InputError(
            f"Unknown profile {name!r}; known profiles: {known} (and detection:PROTOCOL for "
            "tumour detection)."
        ) from None


@dataclass(frozen=True)
class StructureResult:
    """Metric values of one structure of one case, with its status."""

    status: Status
    values: Mapping[str, float]


def dice(pred: BoolArray, ref: BoolArray, smooth: float = 0.0) -> float:
    """Dice = 2|R∧P| / (|R| + |P| + smooth); NaN when both masks are empty (any smooth),
    as in :func:`structure_metrics`."""
    n = np.count_nonzero(pred) + np.count_nonzero(ref)
    return float(2 * np.count_nonzero(pred & ref) / (n + smooth)) if n else math.nan


def structure_metrics(
    pred: BoolArray,
    ref: BoolArray,
    spacing_mm: Iterable[float],
    profile: Profile | str = "default",
    *,
    structure: str | None = None,
    box: Box | None = None,
) -> StructureResult:
    """All metrics of ``profile`` for one binary structure.

    Parameters
    ----------
    pred, ref : bool 3-D arrays on the same grid (not modified).
    spacing_mm : voxel spacing in mm, array-axis order.
    profile : a :class:`Profile` or the name of a built-in one.
    structure : name used to pick a per-structure tolerance.
    box : union bounding box of both masks when already known (saves a pass); must hold
        every True voxel of both.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    spacing = _spacing(spacing_mm)
    pred, ref = _as_bool(pred, "pred"), _as_bool(ref, "ref")
    if pred.shape != ref.shape or pred.ndim != 3:
        raise InputError(f"pred {pred.shape} and ref {ref.shape} must be 3-D of equal shape.")
    if box is None:
        box = union_box(bounding_box(pred), bounding_box(ref))
    if box is None:
        return _empty_result(prof, "both_empty", 0, 0, spacing)
    p, r = pred[box], ref[box]
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    if n_r == 0:
        return _empty_result(prof, "empty_reference", n_r, n_p, spacing)
    if n_p == 0:
        return _empty_result(prof, "empty_prediction", n_r, n_p, spacing)
    inter = np.count_nonzero(p & r)
    sd = surface_distances(pred, ref, spacing, box=box, surfels=prof.needs_surfels)
    tau = prof.tolerance_for(structure)
    values: dict[str, float] = {
        "dsc": float(2 * inter / (n_p + n_r + prof.dice_smooth)),
        "nsd": nsd(sd, tau, prof.nsd_variant),
    }
    for t in prof.extra_tolerances_mm:
        values[f"nsd@{t:g}mm"] = nsd(sd, t, prof.nsd_variant)
    values.update(
        hd=hausdorff(sd),
        hd95=hausdorff_percentile(sd, 95.0, prof.hd95_variant),
        assd=assd(sd),
        masd=masd(sd),
        **_volumes(n_r, n_p, spacing),
    )
    return StructureResult("ok", values)


def label_map_metrics(
    pred: NDArray[np.integer],
    ref: NDArray[np.integer],
    labels: Mapping[int, str],
    spacing_mm: Iterable[float],
    profile: Profile | str = "default",
) -> dict[str, StructureResult]:
    """Metrics for every structure of two multi-label maps on the same grid.

    The union bounding box of each label is found once per map (bounding box of all
    foreground, then per-label boxes inside it) and every structure is scored on its crop.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    spacing = _spacing(spacing_mm)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise InputError(f"pred {pred.shape} and ref {ref.shape} must be 3-D of equal shape.")
    pred_boxes, _ = label_boxes(pred, max(labels, default=0))
    ref_boxes, _ = label_boxes(ref, max(labels, default=0))
    out: dict[str, StructureResult] = {}
    for value, name in labels.items():
        box = union_box(pred_boxes.get(value), ref_boxes.get(value))
        if box is None:
            out[name] = _empty_result(prof, "both_empty", 0, 0, spacing)
            continue
        out[name] = structure_metrics(
            pred[box] == value,
            ref[box] == value,
            spacing,
            prof,
            structure=name,
            box=(slice(None), slice(None), slice(None)),
        )
    return out


def label_boxes(
    label_map: NDArray[np.integer], max_label: int | None = None
) -> tuple[dict[int, Box], int]:
    """Bounding box of every non-zero label value (up to ``max_label``) of a label map.

    One pass finds the foreground's box, one ``scipy.ndimage.find_objects`` pass inside it
    finds the labels' boxes; values above ``max_label`` are not boxed (so a stray huge value
    costs nothing). Returns the boxes and the largest value present (0 if none).

    Raises
    ------
    InputError
        For non-integer or negative labels.
    """
    from scipy import ndimage

    fg = bounding_box(label_map != 0)
    if fg is None:
        return {}, 0
    sub = label_map[fg]
    if sub.dtype.kind not in "iu":
        raise InputError(f"label maps must hold integers, got dtype {sub.dtype}")
    if sub.dtype.kind == "i" and (low := int(sub.min())) < 0:
        raise InputError(f"label maps must hold non-negative integers, found {low}")
    top = int(sub.max())
    limit = top if max_label is None else min(top, max_label)
    boxes: dict[int, Box] = {}
    if limit <= 0:
        return boxes, top
    for index, sl in enumerate(ndimage.find_objects(sub, max_label=limit)):
        if sl is not None:
            s0, s1, s2 = (
                slice(f.start + s.start, f.start + s.stop) for f, s in zip(fg, sl, strict=True)
            )
            boxes[index + 1] = (s0, s1, s2)
    return boxes, top


def _empty_result(
    prof: Profile, status: Status, n_r: int, n_p: int, spacing: Spacing
) -> StructureResult:
    values: dict[str, float] = {}
    for m in prof.metrics:  # edge values from the registry (DESIGN §3 edge-case table)
        empty = metric_info(m).empty_value
        if empty is not None:
            values[m] = math.nan if status == "both_empty" else empty
    values.update(_volumes(n_r, n_p, spacing))
    return StructureResult(status, values)


def _volumes(n_r: int, n_p: int, spacing: Spacing) -> dict[str, float]:
    ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    return {"volume_ref_ml": float(n_r * ml), "volume_pred_ml": float(n_p * ml)}


def _spacing(spacing_mm: Iterable[float]) -> Spacing:
    s = tuple(float(v) for v in spacing_mm)
    if len(s) != 3 or not all(math.isfinite(v) and v > 0 for v in s):
        raise InputError(f"spacing_mm must be three positive finite numbers, got {s}.")
    return (s[0], s[1], s[2])


def _as_bool(a: NDArray[Any], name: str) -> BoolArray:
    if a.dtype == np.bool_:
        return a
    raise InputTypeError(f"{name} must be a bool array, got dtype {a.dtype}; pass mask != 0.")
