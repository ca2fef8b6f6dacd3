"""assay: evaluation and benchmarking of medical image segmentation."""

from assay.errors import (
    AssayError,
    GeometryError,
    InputError,
    InputTypeError,
    LayoutError,
    SchemaError,
)
from assay.metrics import PROFILES, Profile, label_map_metrics, structure_metrics

__version__ = "0.1.0"

__all__ = [
    "PROFILES",
    "AssayError",
    "GeometryError",
    "InputError",
    "InputTypeError",
    "LayoutError",
    "Profile",
    "SchemaError",
    "__version__",
    "label_map_metrics",
    "structure_metrics",
]
