"""Segmentation metrics: pure functions on arrays (DESIGN.md §3).

Nothing here reads files or mutates its inputs. Entry points:

* :func:`structure_metrics` — every metric of a profile for one binary structure;
* :func:`label_map_metrics` — the same for every label of two multi-label maps;
* :func:`surface_distances` and the reductions :func:`nsd`, :func:`hausdorff`,
  :func:`hausdorff_percentile`, :func:`assd`, :func:`masd` for custom protocols;
* :data:`PROFILES` / :class:`Profile` — named, complete protocols;
* :func:`detect_lesions` with a :class:`DetectionProtocol` (presets in
  :data:`DETECTION_PROTOCOLS`) — lesion instances, matching, patient call and score of one
  tumour type;
* :data:`METRICS` / :func:`metric_info` — the metric registry (direction, unit, worst value,
  display names): the one place a metric's facts live.
"""

from assay.metrics._detection_protocol import (
    DETECTION_PROTOCOLS,
    DetectionProtocol,
    get_detection_protocol,
)
from assay.metrics._distances import lattice_distance, nearest_distances
from assay.metrics._geometry import Box, bounding_box, neighbour_codes, surfel_area_table, union_box
from assay.metrics._lesion_size import (
    SIZE_BIN_EDGES_MM,
    SIZE_BIN_LABELS,
    SMALL_TUMOUR_MM,
    equivalent_diameter_mm,
    longest_axial_diameter_mm,
    size_bin,
)
from assay.metrics._lesions import (
    DETECTION_CASE_METRICS,
    DetectionResult,
    PredictedLesion,
    ReferenceLesion,
    detect_lesions,
)
from assay.metrics._protocol import (
    BASE_METRICS,
    PROFILES,
    Profile,
    Status,
    StructureResult,
    detection_profile,
    dice,
    get_profile,
    label_boxes,
    label_map_metrics,
    structure_metrics,
)
from assay.metrics._registry import (
    METRICS,
    MetricInfo,
    UnknownMetricError,
    is_registered,
    iter_metrics,
    metric_info,
    metric_label,
    metric_title,
    register_metric,
)
from assay.metrics._surface import (
    SurfaceDistances,
    assd,
    hausdorff,
    hausdorff_percentile,
    masd,
    nsd,
    surface_distances,
)

__all__ = [
    "BASE_METRICS",
    "DETECTION_CASE_METRICS",
    "DETECTION_PROTOCOLS",
    "METRICS",
    "PROFILES",
    "SIZE_BIN_EDGES_MM",
    "SIZE_BIN_LABELS",
    "SMALL_TUMOUR_MM",
    "Box",
    "DetectionProtocol",
    "DetectionResult",
    "MetricInfo",
    "PredictedLesion",
    "Profile",
    "ReferenceLesion",
    "Status",
    "StructureResult",
    "SurfaceDistances",
    "UnknownMetricError",
    "assd",
    "bounding_box",
    "detect_lesions",
    "detection_profile",
    "dice",
    "equivalent_diameter_mm",
    "get_detection_protocol",
    "get_profile",
    "hausdorff",
    "hausdorff_percentile",
    "is_registered",
    "iter_metrics",
    "label_boxes",
    "label_map_metrics",
    "lattice_distance",
    "longest_axial_diameter_mm",
    "masd",
    "metric_info",
    "metric_label",
    "metric_title",
    "nearest_distances",
    "neighbour_codes",
    "nsd",
    "register_metric",
    "size_bin",
    "structure_metrics",
    "surface_distances",
    "surfel_area_table",
    "union_box",
]
