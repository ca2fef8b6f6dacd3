"""Putting a prediction on its reference's voxel grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from nibabel.processing import resample_from_to

from assay.errors import GeometryError, InputError
from assay.io._image import Image

__all__ = ["GRID_ATOL", "RESAMPLE_METHODS", "align_to_reference", "same_grid"]

#: Absolute tolerance on affine entries for "same grid": 1e-4 mm on origin and voxel axes,
#: i.e. 1e-4 on direction cosines for 1 mm voxels.
GRID_ATOL = 1e-4
#: Values accepted by ``align_to_reference(..., resample=...)``.
RESAMPLE_METHODS = ("nearest",)


def same_grid(pred: Image, ref: Image) -> bool:
    """True when both images have the same shape and affines equal within :data:`GRID_ATOL`."""
    return pred.shape == ref.shape and bool(
        np.allclose(pred.affine, ref.affine, rtol=0.0, atol=GRID_ATOL)
    )


def align_to_reference(
    pred: Image, ref: Image, *, where: str, resample: str | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return the prediction's array on the reference's voxel grid.

    Parameters
    ----------
    pred, ref : Image
        Prediction and reference. Neither is modified.
    where : str
        Location for error messages, e.g. ``"case 's0001', structure 'liver'"``.
    resample : {None, "nearest"}
        What to do when the grids differ by more than axis order/direction. ``None`` (default)
        raises; ``"nearest"`` resamples the prediction with nearest-neighbour interpolation
        (voxels outside the prediction's field of view become 0).

    Returns
    -------
    array : numpy.ndarray
        Prediction values on the reference grid (``pred.array`` itself when the grids match).
    flags : tuple of str
        ``()`` when the grids match; ``("reoriented",)`` when only axis flips/permutations
        differed (exact, no interpolation); ``("resampled",)`` after resampling.

    Raises
    ------
    GeometryError
        If the grids differ and ``resample`` is None. The message names ``where`` and each
        differing property (shape, spacing, origin, direction) with units.
    InputError
        If ``resample`` is not None or ``"nearest"``.

    Notes
    -----
    Grids are equal when shapes are equal and every affine entry agrees within
    :data:`GRID_ATOL` (1e-4 mm on origin and voxel vectors; 1e-4 on direction cosines for
    1 mm voxels). Headers round-trip through float32, so exact equality would be too strict.
    """
    if resample is not None and resample not in RESAMPLE_METHODS:
        raise InputError(
            f"Unknown resample method {resample!r} for {where}; expected one of "
            f"{', '.join(RESAMPLE_METHODS)} (or none to require matching grids)."
        )
    if same_grid(pred, ref):
        return pred.array, ()
    reoriented = _reorient_to(pred, ref)
    if reoriented is not None:
        return reoriented, ("reoriented",)
    if resample == "nearest":
        return _resample_nearest(pred, ref), ("resampled",)
    raise GeometryError(
        f"Geometry mismatch for {where}: {_describe_difference(pred, ref)}. Resample the "
        "prediction onto the reference grid (or pass --resample nearest)."
    )


def _reorient_to(pred: Image, ref: Image) -> np.ndarray | None:
    """The prediction flipped/permuted onto the reference grid, or None if that does not fit."""
    transform = ornt_transform(io_orientation(pred.affine), io_orientation(ref.affine))
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=transform.dtype)
    if np.array_equal(transform, identity):
        return None
    array = apply_orientation(pred.array, transform)
    affine = pred.affine @ inv_ornt_aff(transform, pred.shape)
    candidate = Image(array=array, affine=affine)
    if not same_grid(candidate, ref):
        return None
    return np.ascontiguousarray(array)


def _resample_nearest(pred: Image, ref: Image) -> np.ndarray:
    data = pred.array
    as_bool = data.dtype == np.bool_
    if as_bool:
        data = data.astype(np.uint8)
    source = nib.Nifti1Image(data, pred.affine, dtype=data.dtype)
    result = resample_from_to(source, (ref.shape, ref.affine), order=0)
    out: np.ndarray = np.asarray(result.dataobj)
    if as_bool:
        out = out.astype(bool)
    return out


def _fmt(values: np.ndarray | tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _direction(affine: np.ndarray) -> np.ndarray:
    columns: np.ndarray = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return columns


def _describe_difference(pred: Image, ref: Image) -> str:
    parts: list[str] = []
    if pred.shape != ref.shape:
        parts.append(f"shape prediction {pred.shape} vs reference {ref.shape}")
    spacing_p, spacing_r = np.array(pred.spacing_mm), np.array(ref.spacing_mm)
    if not np.allclose(spacing_p, spacing_r, rtol=0.0, atol=GRID_ATOL):
        parts.append(f"spacing prediction {_fmt(spacing_p)} mm vs reference {_fmt(spacing_r)} mm")
    origin_p, origin_r = pred.affine[:3, 3], ref.affine[:3, 3]
    if not np.allclose(origin_p, origin_r, rtol=0.0, atol=GRID_ATOL):
        parts.append(
            f"origin prediction {_fmt(origin_p)} mm vs reference {_fmt(origin_r)} mm (RAS)"
        )
    dir_p, dir_r = _direction(pred.affine), _direction(ref.affine)
    if not np.allclose(dir_p, dir_r, rtol=0.0, atol=GRID_ATOL):
        codes_p = "".join(nib.aff2axcodes(pred.affine))
        codes_r = "".join(nib.aff2axcodes(ref.affine))
        parts.append(
            f"direction prediction {codes_p} {_fmt(dir_p.T.ravel())} vs reference {codes_r} "
            f"{_fmt(dir_r.T.ravel())} (axis cosines)"
        )
    if not parts:  # each property within tolerance, but their product is not
        worst = float(np.max(np.abs(pred.affine - ref.affine)))
        parts.append(f"affines differ by up to {worst:.6g} mm (tolerance {GRID_ATOL} mm)")
    return "; ".join(parts)
