"""Tests for assay.io: reading/writing images, binary masks, grid alignment.

Expected values are closed-form (the affines and arrays written by the test itself); affines
round-trip through float32 NIfTI headers, so values are chosen exactly representable in
float32 and compared exactly unless a tolerance is stated.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (conventional alias)

from assay.errors import AssayError, GeometryError, InputError
from assay.io import (
    GRID_ATOL,
    Image,
    align_to_reference,
    binary_mask,
    image_suffix,
    read_image,
    write_image,
)

# Oblique-free but non-trivial: axes permuted and flipped, anisotropic spacing, offset origin.
AFFINE = np.array(
    [
        [0.0, 0.0, -2.0, 10.0],
        [1.5, 0.0, 0.0, -3.0],
        [0.0, 0.5, 0.0, 7.25],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture
def mask() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((5, 6, 7)) > 0.5).astype(np.uint8)


def _sitk_copy(src: Path, dst: Path) -> None:
    """Convert with SimpleITK, copying only geometry and voxels (no NIfTI metadata)."""
    image = sitk.ReadImage(str(src))
    clean = sitk.GetImageFromArray(sitk.GetArrayFromImage(image))
    clean.CopyInformation(image)
    sitk.WriteImage(clean, str(dst))


# --- Image -------------------------------------------------------------------------------


def test_image_properties_from_affine(mask: np.ndarray) -> None:
    image = Image(mask, AFFINE)
    assert image.shape == (5, 6, 7)
    # column norms of AFFINE[:3, :3]: (1.5, 0.5, 2.0) mm, closed form
    assert image.spacing_mm == (1.5, 0.5, 2.0)
    assert image.affine.dtype == np.float64


def test_image_rejects_non_3d() -> None:
    with pytest.raises(InputError, match="3-D"):
        Image(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(InputError, match="4x4"):
        Image(np.zeros((4, 4, 4)), np.eye(3))


# --- read / write ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_array_dtype_and_affine(
    tmp_path: Path, mask: np.ndarray, suffix: str
) -> None:
    path = write_image(tmp_path / f"m{suffix}", mask, AFFINE)
    image = read_image(path)
    assert image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, mask)
    np.testing.assert_array_equal(image.affine, AFFINE)
    assert image.path == path


def test_write_image_downcasts_bool_and_int64(tmp_path: Path) -> None:
    bool_mask = np.zeros((3, 3, 3), dtype=bool)
    bool_mask[1, 1, 1] = True
    assert read_image(write_image(tmp_path / "b.nii.gz", bool_mask, np.eye(4))).array.dtype == (
        np.uint8
    )
    labels = np.arange(27, dtype=np.int64).reshape(3, 3, 3) * 10  # max 260 -> int16
    image = read_image(write_image(tmp_path / "l.nii.gz", labels, np.eye(4)))
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, labels)


def test_write_image_rejects_other_suffix(tmp_path: Path, mask: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"\.nii"):
        write_image(tmp_path / "m.mha", mask, AFFINE)


def test_scaled_nifti_gives_float_values(tmp_path: Path) -> None:
    raw = np.array([0, 1, 2, 3], dtype=np.int16).reshape(1, 2, 2)
    img = nib.Nifti1Image(raw, np.eye(4), dtype=np.int16)
    img.header.set_slope_inter(0.5, 0.0)
    nib.save(img, tmp_path / "s.nii.gz")
    array = read_image(tmp_path / "s.nii.gz").array
    assert array.dtype.kind == "f"
    np.testing.assert_array_equal(array.ravel(), [0.0, 0.5, 1.0, 1.5])


def test_nifti2_is_read(tmp_path: Path, mask: np.ndarray) -> None:
    nib.save(nib.Nifti2Image(mask, AFFINE, dtype=np.uint8), tmp_path / "n2.nii.gz")
    image = read_image(tmp_path / "n2.nii.gz")
    np.testing.assert_array_equal(image.array, mask)
    np.testing.assert_array_equal(image.affine, AFFINE)


def test_uncompressed_nifti_named_gz_is_read(tmp_path: Path, mask: np.ndarray) -> None:
    write_image(tmp_path / "m.nii", mask, AFFINE)
    (tmp_path / "m.nii").rename(tmp_path / "raw.nii.gz")
    np.testing.assert_array_equal(read_image(tmp_path / "raw.nii.gz").array, mask)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_sitk_formats_match_nifti(tmp_path: Path, mask: np.ndarray, suffix: str) -> None:
    nifti = read_image(write_image(tmp_path / "m.nii.gz", mask, AFFINE))
    _sitk_copy(tmp_path / "m.nii.gz", tmp_path / f"m{suffix}")
    other = read_image(tmp_path / f"m{suffix}")
    np.testing.assert_array_equal(other.array, nifti.array)
    assert other.array.dtype == nifti.array.dtype
    # ITK re-derives direction/spacing from the float32 header in float64: 1e-6 mm tolerance
    np.testing.assert_allclose(other.affine, nifti.affine, rtol=0, atol=1e-6)


def test_mha_lps_geometry_is_converted_to_ras(tmp_path: Path) -> None:
    array_zyx = np.zeros((4, 3, 2), dtype=np.uint8)  # SimpleITK order (z, y, x)
    array_zyx[3, 2, 1] = 1
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((0.5, 1.0, 2.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    sitk.WriteImage(image, str(tmp_path / "m.mha"))
    result = read_image(tmp_path / "m.mha")
    assert result.shape == (2, 3, 4)
    assert result.array[1, 2, 3] == 1
    # identity LPS direction -> RAS affine diag(-0.5, -1, 2) with origin (-10, -20, 30)
    expected = np.array([[-0.5, 0, 0, -10.0], [0, -1.0, 0, -20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(result.affine, expected)


def test_4d_with_singleton_is_squeezed(tmp_path: Path, mask: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(mask[..., None], AFFINE, dtype=np.uint8), tmp_path / "s.nii.gz")
    image = read_image(tmp_path / "s.nii.gz")
    assert image.shape == mask.shape
    np.testing.assert_array_equal(image.array, mask)


def test_4d_volume_is_rejected(tmp_path: Path, mask: np.ndarray) -> None:
    data = np.stack([mask, mask], axis=-1)
    nib.save(nib.Nifti1Image(data, AFFINE, dtype=np.uint8), tmp_path / "v.nii.gz")
    with pytest.raises(InputError, match=r"4-D with shape \(5, 6, 7, 2\)") as info:
        read_image(tmp_path / "v.nii.gz")
    assert "v.nii.gz" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_nifti_gz_raises_input_error(
    tmp_path: Path, mask: np.ndarray, keep: float
) -> None:
    path = write_image(tmp_path / "t.nii.gz", mask, AFFINE)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="truncated") as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_uncompressed_nifti_raises_input_error(tmp_path: Path, mask: np.ndarray) -> None:
    path = write_image(tmp_path / "t.nii", mask, AFFINE)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError, match=re.escape(str(path))):
        read_image(path)


@pytest.mark.parametrize("name", ["r.nii.gz", "r.nii", "r.mha", "r.nrrd"])
def test_random_bytes_raise_input_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_multi_member_gzip_is_read(tmp_path: Path, mask: np.ndarray) -> None:
    raw = write_image(tmp_path / "m.nii", mask, AFFINE).read_bytes()
    half = len(raw) // 2
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\x00" * 8)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, mask)
    np.testing.assert_array_equal(image.affine, AFFINE)


def test_corrupt_gzip_stream_raises_input_error(tmp_path: Path, mask: np.ndarray) -> None:
    path = write_image(tmp_path / "c.nii.gz", mask, AFFINE)
    data = bytearray(path.read_bytes())
    data[20:60] = bytes(range(40))  # overwrite deflate data after the 10-byte gzip header
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=re.escape(str(path))):
        read_image(path)


def test_gzip_of_garbage_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "g.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 40))
    with pytest.raises(InputError, match="not a NIfTI"):
        read_image(path)


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=r"\.nii\.gz, \.nii, \.nrrd, \.nhdr, \.mha, \.mhd"):
        read_image(path)


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "absent.nii.gz")


def test_image_suffix_is_case_insensitive_and_needs_a_stem() -> None:
    assert image_suffix("CT.NII.GZ") == ".nii.gz"
    assert image_suffix("a/liver.nii") == ".nii"
    assert image_suffix("x.json") is None
    assert image_suffix(".nii.gz") is None


# --- binary_mask -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int16, np.float32, np.float64])
def test_binary_mask_accepts_zero_one(dtype: type) -> None:
    array = np.zeros((2, 2, 2), dtype=dtype)
    array[0, 0, 0] = 1
    result = binary_mask(Image(array, np.eye(4)), what="for case 'a'")
    assert result.dtype == np.bool_
    assert int(result.sum()) == 1 and bool(result[0, 0, 0])


def test_binary_mask_does_not_mutate_input() -> None:
    array = np.zeros((2, 2, 2), dtype=np.uint8)
    array[1, 1, 1] = 1
    before = array.copy()
    binary_mask(Image(array, np.eye(4)), what="x")
    np.testing.assert_array_equal(array, before)


def test_binary_mask_rejects_label_map_with_values(tmp_path: Path) -> None:
    array = np.arange(8, dtype=np.uint8).reshape(2, 2, 2) % 3  # values 0, 1, 2
    path = write_image(tmp_path / "liver.nii.gz", array, np.eye(4))
    with pytest.raises(InputError) as info:
        binary_mask(read_image(path), what="for case 's0001', structure 'liver'")
    message = str(info.value)
    assert "found values [0, 1, 2]" in message
    assert "case 's0001'" in message and str(path) in message
    assert "--layout labelmap" in message


@pytest.mark.parametrize(
    ("value", "listed"), [(255, "255"), (-1, "-1"), (0.5, "0.5"), (np.nan, "nan")]
)
def test_binary_mask_rejects_other_values(value: float, listed: str) -> None:
    dtype = np.int16 if isinstance(value, int) else np.float32
    array = np.zeros((2, 2, 2), dtype=dtype)
    array[0, 0, 0] = value
    with pytest.raises(InputError, match=f"found values .*{listed}"):
        binary_mask(Image(array, np.eye(4)), what="x")


def test_binary_mask_lists_at_most_a_few_values() -> None:
    array = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    with pytest.raises(InputError, match=r"\[0, 1, 2, 3, 4, 5, \.\.\. \(27 distinct\)\]"):
        binary_mask(Image(array, np.eye(4)), what="x")


# --- align_to_reference ------------------------------------------------------------------


def test_same_grid_returns_array_unchanged(mask: np.ndarray) -> None:
    ref = Image(mask, AFFINE)
    pred = Image(mask.copy(), AFFINE + GRID_ATOL / 2)  # within tolerance
    array, flags = align_to_reference(pred, ref, where="case 'a'")
    assert flags == ()
    assert array is pred.array


def test_flipped_and_permuted_prediction_is_reoriented_exactly(
    tmp_path: Path, mask: np.ndarray
) -> None:
    ref = Image(mask, AFFINE)
    # Same voxels stored with axis 0 flipped and axes 1/2 swapped: the affine follows the data.
    flipped = np.flip(mask, axis=0)
    flip_aff = AFFINE @ np.array(
        [[-1, 0, 0, mask.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float
    )
    data = np.transpose(flipped, (0, 2, 1))
    aff = flip_aff[:, [0, 2, 1, 3]]
    path = write_image(tmp_path / "p.nii.gz", data, aff)
    pred = read_image(path)
    before = pred.array.copy()
    array, flags = align_to_reference(pred, ref, where="case 'a'")
    assert flags == ("reoriented",)
    np.testing.assert_array_equal(array, mask)
    assert array.dtype == mask.dtype
    np.testing.assert_array_equal(pred.array, before)  # input untouched


def test_geometry_mismatch_message_names_case_and_property(mask: np.ndarray) -> None:
    ref = Image(mask, np.diag([0.8, 0.8, 3.0, 1.0]))
    pred = Image(mask, np.diag([0.8, 0.8, 1.5, 1.0]))
    with pytest.raises(GeometryError) as info:
        align_to_reference(pred, ref, where="case 's0001', structure 'liver'")
    message = str(info.value)
    assert "case 's0001', structure 'liver'" in message
    assert "spacing" in message and "(0.8, 0.8, 1.5) mm" in message
    assert "(0.8, 0.8, 3) mm" in message
    assert "origin" not in message and "shape" not in message
    assert "--resample nearest" in message
    assert isinstance(info.value, AssayError) and isinstance(info.value, ValueError)


def test_geometry_mismatch_reports_shape_origin_and_direction(mask: np.ndarray) -> None:
    ref = Image(mask, np.eye(4))
    shifted = np.eye(4)
    shifted[:3, 3] = (5.0, 0.0, 0.0)
    with pytest.raises(GeometryError, match=r"origin prediction \(5, 0, 0\) mm"):
        align_to_reference(Image(mask, shifted), ref, where="case 'b'")
    with pytest.raises(GeometryError, match=r"shape prediction \(5, 6, 8\)"):
        align_to_reference(Image(np.zeros((5, 6, 8), np.uint8), np.eye(4)), ref, where="c")
    rotated = np.eye(4)
    angle = np.deg2rad(10.0)
    rotated[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    with pytest.raises(GeometryError, match="direction"):
        align_to_reference(Image(mask, rotated), ref, where="d")


def test_resample_nearest_on_same_physical_grid_is_exact() -> None:
    # Prediction at 1 mm, reference at 2 mm with the same origin: nearest neighbour picks
    # prediction voxel 2*i for reference voxel i (closed form).
    pred_array = np.zeros((8, 8, 8), dtype=bool)
    pred_array[2:6, 2:6, 2:6] = True
    ref = Image(np.zeros((4, 4, 4), dtype=np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    pred = Image(pred_array, np.eye(4))
    with pytest.raises(GeometryError):
        align_to_reference(pred, ref, where="case 'a'")
    array, flags = align_to_reference(pred, ref, where="case 'a'", resample="nearest")
    assert flags == ("resampled",)
    assert array.dtype == np.bool_ and array.shape == (4, 4, 4)
    np.testing.assert_array_equal(array, pred_array[::2, ::2, ::2])


def test_unknown_resample_method_is_rejected(mask: np.ndarray) -> None:
    with pytest.raises(InputError, match="linear"):
        align_to_reference(Image(mask, AFFINE), Image(mask, AFFINE), where="x", resample="linear")
