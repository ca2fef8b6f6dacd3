"""Reading and writing 3-D images and masks.

NIfTI goes through nibabel (gzip decompression through ISA-L's ``isal_zlib`` for speed);
NRRD and MetaImage go through SimpleITK and are converted to nibabel's conventions: array axes
in file order (x, y, z) and a voxel-index -> RAS+ mm affine.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk  # noqa: N813 (conventional alias)
from isal import isal_zlib
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from assay.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "binary_mask",
    "image_suffix",
    "read_image",
    "write_image",
]

#: File suffixes :func:`read_image` understands, longest first so ``.nii.gz`` wins over ``.nii``.
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_GZIP_MAGIC = b"\x1f\x8b"
# Exceptions the readers raise on damaged or foreign files.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    OSError,  # includes gzip.BadGzipFile and nibabel's "could the file be damaged?"
    ValueError,
    RuntimeError,  # SimpleITK
    MemoryError,  # a garbage header that claims a huge array
    ImageFileError,
    HeaderDataError,
    WrapStructError,
    zlib.error,
    cast("type[BaseException]", isal_zlib.error),  # its stub calls it an instance
)
# Integer types NIfTI stores without surprises, smallest first (used by write_image).
_INT_TYPES = (np.uint8, np.int16, np.int32)
_MAX_LISTED_VALUES = 6


@dataclass(frozen=True)
class Image:
    """A 3-D image that carries its geometry.

    Parameters
    ----------
    array : numpy.ndarray
        Voxel values, 3-D, axes in the file's array order (as nibabel gives them).
    affine : numpy.ndarray
        4x4 float64 matrix mapping voxel indices to RAS+ millimetres (nibabel convention).
    path : pathlib.Path or None
        File the image was read from, if any (used in error messages).

    Raises
    ------
    InputError
        If ``array`` is not 3-D or ``affine`` is not a finite 4x4 matrix.

    Notes
    -----
    The dataclass is frozen but the array is not copied or locked; assay never writes to it.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray) or self.array.ndim != 3:
            shape = getattr(self.array, "shape", None)
            raise InputError(
                f"Image {self._label()} has array shape {shape}; assay expects a 3-D numpy "
                "array. Pass one 3-D mask per image."
            )
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InputError(
                f"Image {self._label()} has an invalid affine (shape {affine.shape}); expected "
                "a finite 4x4 voxel-to-RAS matrix. Check the file header."
            )
        object.__setattr__(self, "affine", affine)
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))

    def _label(self) -> str:
        return str(self.path) if self.path is not None else "(in memory)"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape, in array-axis order."""
        x, y, z = self.array.shape
        return (int(x), int(y), int(z))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size in mm per array axis (column norms of ``affine[:3, :3]``)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))


def image_suffix(path: str | Path) -> str | None:
    """Return the image suffix of ``path`` (lower-case, e.g. ``".nii.gz"``), or None.

    Matching is on the full file name, case-insensitively, so ``CT.NII.GZ`` gives ``.nii.gz``.
    """
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def read_image(path: str | Path) -> Image:
    """Read a 3-D image from NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or
    MetaImage (``.mha``, ``.mhd``).

    Parameters
    ----------
    path : str or pathlib.Path
        Image file.

    Returns
    -------
    Image
        Array in file axis order with its voxel -> RAS+ affine. NIfTI scaling (``scl_slope``)
        is applied; integer data without scaling keeps its integer dtype. Non-native byte order
        is converted to native.

    Raises
    ------
    InputError
        If the file does not exist, has an unsupported suffix, is truncated or corrupt, or is
        not 3-D. A 4-D (or 5-D) image whose extra dimensions are all 1 is squeezed to 3-D.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if suffix is None:
        raise InputError(
            f"Unsupported image file {path}: suffix not recognised; supported suffixes are "
            f"{', '.join(IMAGE_SUFFIXES)}. Convert the file to NIfTI."
        )
    if not path.is_file():
        raise InputError(f"Cannot read image {path}: no such file. Check the path.")
    try:
        if suffix in _NIFTI_SUFFIXES:
            array, affine = _read_nifti(path)
        else:
            array, affine = _read_sitk(path)
    except InputError:
        raise
    except _DECODE_ERRORS as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"Cannot read image {path}: the file is truncated, corrupt or not a {suffix} image "
            f"({type(exc).__name__}: {detail}). Re-export or re-download it."
        ) from exc
    array = _as_3d(array, path)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return Image(array=array, affine=affine, path=path)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:  # also accept gzip data named .nii, and raw data named .nii.gz
        data = _gunzip(data)
    image_class = _nifti_class(data, path)
    header = image_class.header_class.from_fileobj(io.BytesIO(data))
    slope, inter = header.get_slope_inter()
    shape = header.get_data_shape()
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    count = int(np.prod(shape))
    unscaled = slope in (None, 1.0) and inter in (None, 0.0)
    if unscaled and offset + count * dtype.itemsize <= len(data):
        # Fast path: a read-only view on the decompressed bytes (no copy), Fortran order as
        # NIfTI stores it; equal to nibabel's dataobj for unscaled data.
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return array.reshape(shape, order="F"), np.asarray(
            header.get_best_affine(), dtype=np.float64
        )
    image = image_class.from_bytes(data)
    return np.asarray(np.asanyarray(image.dataobj)), np.asarray(image.affine, dtype=np.float64)


def _gunzip(data: bytes) -> bytes:
    """Decompress (possibly multi-member) gzip data with ISA-L.

    One ``isal_zlib`` stream per member: about twice as fast as ``isal.igzip.decompress`` and
    2-3x faster than :func:`gzip.decompress` on NIfTI masks. Trailing zero padding is ignored,
    as :mod:`gzip` does.

    Raises
    ------
    EOFError
        If a member ends before its end-of-stream marker (truncated file).
    isal.isal_zlib.error
        On corrupt compressed data.
    """
    parts: list[bytes] = []
    while data:
        stream = isal_zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
        parts.append(stream.decompress(data))
        if not stream.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        data = stream.unused_data.lstrip(b"\x00")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _nifti_class(data: bytes, path: Path) -> type[nib.Nifti1Image] | type[nib.Nifti2Image]:
    """Pick the nibabel class from ``sizeof_hdr`` (348: NIfTI-1, 540: NIfTI-2, either endian)."""
    if len(data) >= 4:
        sizes = {struct.unpack("<i", data[:4])[0], struct.unpack(">i", data[:4])[0]}
        if 348 in sizes:
            return nib.Nifti1Image
        if 540 in sizes:
            return nib.Nifti2Image
    raise InputError(
        f"Cannot read image {path}: not a NIfTI file (header size field is neither 348 nor 540, "
        f"file has {len(data)} bytes after decompression). Re-export or re-download it."
    )


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = sitk.ReadImage(str(path))
    dim = image.GetDimension()
    if dim < 3:
        raise InputError(
            f"Image {path} is {dim}-D with size {image.GetSize()}; assay expects one 3-D mask "
            "per file. Stack the slices into a 3-D volume."
        )
    # SimpleITK arrays are (..., z, y, x) (+ a trailing component axis for vector pixels).
    array = sitk.GetArrayFromImage(image)
    n_spatial = dim
    axes = tuple(reversed(range(n_spatial))) + tuple(range(n_spatial, array.ndim))
    array = np.transpose(array, axes)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[np.newaxis, :]
    affine[:3, 3] = origin
    affine[:2, :] *= -1.0  # LPS (ITK) -> RAS (nibabel)
    return np.ascontiguousarray(array), affine


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3:
        return array
    if array.ndim > 3 and all(n == 1 for n in array.shape[3:]):
        return array.reshape(array.shape[:3])
    raise InputError(
        f"Image {path} is {array.ndim}-D with shape {array.shape}; assay expects one 3-D mask "
        "per file. Split multi-volume files into one file per mask."
    )


def write_image(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 3-D array as NIfTI-1 (``.nii`` or ``.nii.gz``) with spatial units of mm.

    Parameters
    ----------
    path : str or pathlib.Path
        Output file; parent folders are created.
    array : numpy.ndarray
        3-D data. Booleans are stored as uint8; 64-bit integers as the smallest of
        uint8/int16/int32 that holds their range (NIfTI tools handle int64 poorly).
    affine : numpy.ndarray
        4x4 voxel -> RAS+ mm matrix.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    InputError
        On a suffix other than ``.nii``/``.nii.gz``, a non-3-D array, or 64-bit integers out of
        int32 range.
    """
    path = Path(path)
    if image_suffix(path) not in _NIFTI_SUFFIXES:
        raise InputError(
            f"Cannot write {path}: write_image writes NIfTI only; use a .nii or .nii.gz suffix."
        )
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(
            f"Cannot write {path}: array is {array.ndim}-D with shape {array.shape}; "
            "expected a 3-D array."
        )
    array = _storable(array, path)
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), dtype=array.dtype)
    image.header.set_xyzt_units(xyz="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def _storable(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for candidate in _INT_TYPES:
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return array.astype(candidate)
        raise InputError(
            f"Cannot write {path}: integer values span [{lo}, {hi}], outside int32; "
            "store labels in a smaller range."
        )
    return array


def binary_mask(image: Image, *, what: str) -> np.ndarray:
    """Return ``image.array`` as a boolean mask, checking that it holds only 0 and 1.

    Parameters
    ----------
    image : Image
        Per-structure mask: bool, integers in {0, 1}, or floats exactly 0.0/1.0.
    what : str
        Description for error messages, e.g. ``"for case 's0001', structure 'liver'"``.

    Returns
    -------
    numpy.ndarray
        Boolean array of ``image.shape``. For a bool input this is ``image.array`` itself
        (not a copy); do not write to it.

    Raises
    ------
    InputError
        If any other value occurs (e.g. a multi-label map, 255-valued masks, NaN, 0.5).
        The message lists a few of the distinct values found.

    Notes
    -----
    For integer data only ``min``/``max`` are computed unless they show a problem, so the
    check costs two passes over the array.
    """
    array = image.array
    if array.dtype == np.bool_:
        return array
    if array.size == 0:
        return np.zeros(array.shape, dtype=bool)
    if array.dtype.kind in "iu":
        if int(array.min()) >= 0 and int(array.max()) <= 1:
            # uint8/int8 holding 0/1 are valid booleans: a view, no copy
            return array.view(bool) if array.dtype.itemsize == 1 else array.astype(bool)
    elif array.dtype.kind == "f":
        mask: np.ndarray = array != 0
        if bool(np.all(array[mask] == 1)):
            return mask
    values = np.unique(array)
    listed = ", ".join(_format_value(v) for v in values[:_MAX_LISTED_VALUES])
    if values.size > _MAX_LISTED_VALUES:
        listed += f", ... ({values.size} distinct)"
    raise InputError(
        f"Non-binary mask {what} ({image._label()}): found values [{listed}]; per-structure "
        "files must hold 0/1. For a multi-label map use --layout labelmap with a label schema."
    )


def _format_value(value: np.generic) -> str:
    item = value.item()
    if isinstance(item, float) and item.is_integer():
        return str(int(item))
    return str(item)
