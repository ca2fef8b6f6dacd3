"""Reading and writing masks and images, and geometry checks (DESIGN.md §1, io layer).

* :class:`Image` — a 3-D array with its voxel -> RAS+ affine and source path;
* :func:`read_image` / :func:`write_image` — NIfTI via nibabel, NRRD/MetaImage via SimpleITK;
* :func:`binary_mask` — validate a per-structure mask holds only 0/1;
* :func:`align_to_reference` — put a prediction on its reference's grid (exact reorientation,
  optional nearest-neighbour resampling, otherwise a :class:`~assay.errors.GeometryError`).
"""

from assay.io._geometry import GRID_ATOL, RESAMPLE_METHODS, align_to_reference, same_grid
from assay.io._image import (
    IMAGE_SUFFIXES,
    Image,
    binary_mask,
    image_suffix,
    read_image,
    write_image,
)

__all__ = [
    "GRID_ATOL",
    "IMAGE_SUFFIXES",
    "RESAMPLE_METHODS",
    "Image",
    "align_to_reference",
    "binary_mask",
    "image_suffix",
    "read_image",
    "same_grid",
    "write_image",
]
