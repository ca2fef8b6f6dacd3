"""Tests of assay.synthetic: phantoms, simulated models and the on-disk benchmark.

Expected volumes come from adult organ volumes in CT (liver ≈ 1500 ml, spleen ≈ 200 ml, kidney
≈ 150 ml, gallbladder ≈ 40 ml, pancreas ≈ 80 ml, stomach ≈ 300 ml; vessels are cylinders of
radius 10–13 mm and length ≈ 200 mm, π r² L ≈ 60–110 ml), widened for the generator's ±25 %
per-seed variation. Dice is computed here directly as 2|A∩B| / (|A| + |B|).
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from assay.errors import AssayError, InputError, LayoutError, SchemaError
from assay.synthetic import (
    LABELS,
    MODELS,
    STRUCTURES,
    BenchmarkPaths,
    Phantom,
    make_phantom,
    simulate_prediction,
    write_benchmark,
)
from assay.synthetic._benchmark import case_seed

SEEDS = (0, 1, 2, 3)

# structure: (min ml, max ml) — see the module docstring for the source of each range
VOLUME_RANGES_ML = {
    "liver": (1000.0, 2200.0),
    "spleen": (110.0, 320.0),
    "kidney_left": (80.0, 240.0),
    "kidney_right": (80.0, 240.0),
    "gallbladder": (20.0, 70.0),
    "pancreas": (40.0, 130.0),
    "stomach": (150.0, 480.0),
    "aorta": (50.0, 130.0),
    "postcava": (45.0, 120.0),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) of two boolean arrays (NaN when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else math.nan


def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


@pytest.fixture(scope="module")
def phantoms() -> dict[int, Phantom]:
    return {seed: make_phantom(seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchmarkPaths, float]:
    out = tmp_path_factory.mktemp("bench")
    start = time.perf_counter()
    paths = write_benchmark(out)
    return paths, time.perf_counter() - start


# --------------------------------------------------------------------------- phantom


def test_labels_follow_structures() -> None:
    assert STRUCTURES[0] == "liver" and STRUCTURES[-1] == "postcava"
    assert {i + 1: name for i, name in enumerate(STRUCTURES)} == LABELS
    assert len(STRUCTURES) == 9


def test_phantom_types_and_geometry(phantoms: dict[int, Phantom]) -> None:
    phantom = phantoms[0]
    assert phantom.image.dtype == np.int16
    assert phantom.labels.dtype == np.uint8
    assert phantom.image.shape == phantom.labels.shape == (96, 96, 64)
    assert phantom.spacing_mm == (4.0, 4.0, 5.0)
    assert phantom.affine.shape == (4, 4)
    np.testing.assert_array_equal(np.diag(phantom.affine)[:3], [4.0, 4.0, 5.0])
    # the centre of the field of view is at the world origin (exact: half-integer steps)
    centre = phantom.affine @ np.array([95 / 2, 95 / 2, 63 / 2, 1.0])
    np.testing.assert_array_equal(centre, [0.0, 0.0, 0.0, 1.0])


def test_same_seed_gives_identical_phantom(phantoms: dict[int, Phantom]) -> None:
    again = make_phantom(0)
    np.testing.assert_array_equal(again.image, phantoms[0].image)
    np.testing.assert_array_equal(again.labels, phantoms[0].labels)
    np.testing.assert_array_equal(again.affine, phantoms[0].affine)


def test_different_seeds_give_different_phantoms(phantoms: dict[int, Phantom]) -> None:
    assert not np.array_equal(phantoms[0].labels, phantoms[1].labels)
    assert not np.array_equal(phantoms[0].image, phantoms[1].image)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_structure_present_with_plausible_volume(
    phantoms: dict[int, Phantom], seed: int
) -> None:
    phantom = phantoms[seed]
    assert set(np.unique(phantom.labels)) == set(range(10))  # disjoint by construction
    voxel_ml = math.prod(phantom.spacing_mm) / 1000.0
    for structure in STRUCTURES:
        volume_ml = int(phantom.mask(structure).sum()) * voxel_ml
        assert volume_ml == pytest.approx(phantom.volume_ml(structure))
        low, high = VOLUME_RANGES_ML[structure]
        assert low <= volume_ml <= high, (structure, seed, volume_ml)


def test_masks_are_disjoint(phantoms: dict[int, Phantom]) -> None:
    phantom = phantoms[2]
    total = sum(phantom.mask(s).astype(np.int32) for s in STRUCTURES)
    assert int(np.max(total)) == 1
    np.testing.assert_array_equal(total > 0, phantom.labels > 0)


def test_volumes_do_not_depend_on_the_grid(phantoms: dict[int, Phantom]) -> None:
    # same anatomy at twice the resolution (2 x 2 x 2.5 mm): volumes agree within the
    # partial-volume error of the coarse grid (5 %; 10 % for the 40 ml gallbladder)
    fine = make_phantom(1, shape=(192, 192, 128), spacing_mm=(2.0, 2.0, 2.5))
    coarse = phantoms[1]
    for structure in STRUCTURES:
        tolerance = 0.10 if structure == "gallbladder" else 0.05
        assert fine.volume_ml(structure) == pytest.approx(
            coarse.volume_ml(structure), rel=tolerance
        ), structure


def test_anatomical_placement(phantoms: dict[int, Phantom]) -> None:
    # RAS+: +x is the patient's left, +y anterior, +z superior
    phantom = phantoms[3]

    def centroid_mm(structure: str) -> np.ndarray:
        index = np.argwhere(phantom.mask(structure)).mean(axis=0)
        return (phantom.affine @ np.append(index, 1.0))[:3]

    liver, spleen = centroid_mm("liver"), centroid_mm("spleen")
    left, right = centroid_mm("kidney_left"), centroid_mm("kidney_right")
    aorta, cava = centroid_mm("aorta"), centroid_mm("postcava")
    assert liver[0] < 0 < spleen[0]
    assert right[0] < 0 < left[0]
    assert cava[0] < aorta[0]
    assert centroid_mm("stomach")[0] > 0
    assert left[1] < liver[1] and right[1] < liver[1]  # kidneys posterior
    assert centroid_mm("gallbladder")[2] < liver[2]  # under the liver
    # spine: bone (> 300 HU) lies posterior of the aorta, near the midline
    bone = np.argwhere(phantom.image > 300).mean(axis=0)
    bone_mm = (phantom.affine @ np.append(bone, 1.0))[:3]
    assert bone_mm[1] < aorta[1] and abs(bone_mm[0]) < 10.0


def test_intensities(phantoms: dict[int, Phantom]) -> None:
    phantom = phantoms[0]
    image = phantom.image
    assert int(image[0, 0, 0]) < -900  # air in the corner
    # organ medians within the per-seed jitter (±5 HU) and noise of their nominal HU
    expected = {"liver": 60, "spleen": 50, "kidney_left": 150, "aorta": 200, "postcava": 150}
    for structure, hu in expected.items():
        assert float(np.median(image[phantom.mask(structure)])) == pytest.approx(hu, abs=8)
    assert int(np.count_nonzero(image > 400)) > 0  # bone
    stomach = image[phantom.mask("stomach")]
    assert int(np.count_nonzero(stomach < -500)) > 0  # air pocket


def test_mask_of_unknown_structure_raises(phantoms: dict[int, Phantom]) -> None:
    with pytest.raises(SchemaError) as info:
        phantoms[0].mask("inferior_vena_cava")
    assert isinstance(info.value, KeyError) and isinstance(info.value, AssayError)
    assert "postcava" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"seed": 0, "shape": (96, 96)},
        {"seed": 0, "shape": (96, 0, 64)},
        {"seed": 0, "spacing_mm": (4.0, -4.0, 5.0)},
    ],
)
def test_invalid_phantom_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        make_phantom(**kwargs)  # type: ignore[arg-type]


def test_ci_phantom_is_fast() -> None:
    start = time.perf_counter()
    make_phantom(7)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- models


def test_model_names() -> None:
    assert tuple(MODELS) == (
        "near_perfect",
        "boundary_noise",
        "dilated",
        "misses_small",
        "false_positives",
        "flipped_orientation",
    )
    assert all(isinstance(text, str) and text for text in MODELS.values())


@pytest.mark.parametrize("model", list(MODELS))
def test_prediction_is_a_label_map_and_input_untouched(
    phantoms: dict[int, Phantom], model: str
) -> None:
    phantom = phantoms[0]
    labels_before = phantom.labels.copy()
    pred = simulate_prediction(phantom, model, 0)
    assert pred.dtype == np.uint8 and pred.shape == phantom.labels.shape
    assert int(pred.max()) <= 9
    np.testing.assert_array_equal(phantom.labels, labels_before)
    np.testing.assert_array_equal(simulate_prediction(phantom, model, 0), pred)  # deterministic


def test_unknown_model_lists_known_ones(phantoms: dict[int, Phantom]) -> None:
    with pytest.raises(ValueError) as info:
        simulate_prediction(phantoms[0], "nnunet", 0)
    assert isinstance(info.value, InputError)
    assert all(name in str(info.value) for name in MODELS)


@pytest.mark.parametrize("seed", SEEDS)
def test_near_perfect(phantoms: dict[int, Phantom], seed: int) -> None:
    phantom = phantoms[seed]
    pred = simulate_prediction(phantom, "near_perfect", seed)
    assert dice(pred == 1, phantom.mask("liver")) > 0.98
    for value, structure in LABELS.items():
        assert dice(pred == value, phantom.mask(structure)) > 0.95, structure
    changed = int(np.count_nonzero(pred != phantom.labels))
    assert 0 < changed <= 9 * 14  # at most 7 removed + 7 added per structure


@pytest.mark.parametrize("seed", SEEDS)
def test_boundary_noise(phantoms: dict[int, Phantom], seed: int) -> None:
    phantom = phantoms[seed]
    pred = simulate_prediction(phantom, "boundary_noise", seed)
    for structure in ("liver", "stomach"):
        value = STRUCTURES.index(structure) + 1
        assert 0.75 < dice(pred == value, phantom.mask(structure)) < 0.97, structure
    # displacement is at most 2 voxels: no predicted voxel farther than that from its structure
    for value, structure in LABELS.items():
        distance = ndimage.distance_transform_edt(~phantom.mask(structure))
        assert float(distance[pred == value].max()) <= 2.5, structure


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_dilated_is_strict_superset(phantoms: dict[int, Phantom], seed: int) -> None:
    phantom = phantoms[seed]
    pred = simulate_prediction(phantom, "dilated", seed)
    six = ndimage.generate_binary_structure(3, 1)
    for value, structure in LABELS.items():
        ref, got = phantom.mask(structure), pred == value
        assert np.all(got[ref]), structure  # superset
        assert got.sum() > ref.sum(), structure  # strictly bigger
        assert not np.any(got & ~ndimage.binary_dilation(ref, six)), structure  # by one voxel


@pytest.mark.parametrize("seed", SEEDS)
def test_misses_small(phantoms: dict[int, Phantom], seed: int) -> None:
    phantom = phantoms[seed]
    pred = simulate_prediction(phantom, "misses_small", seed)
    assert not np.any(pred == STRUCTURES.index("gallbladder") + 1)
    has_pancreas = bool(np.any(pred == STRUCTURES.index("pancreas") + 1))
    assert has_pancreas == (seed % 2 == 0)  # documented: missed for odd seeds
    assert dice(pred == 1, phantom.mask("liver")) > 0.98


@pytest.mark.parametrize("seed", SEEDS)
def test_false_positives(phantoms: dict[int, Phantom], seed: int) -> None:
    phantom = phantoms[seed]
    pred = simulate_prediction(phantom, "false_positives", seed)
    components = 0
    for structure in ("liver", "spleen"):
        value = STRUCTURES.index(structure) + 1
        ref = phantom.mask(structure)
        got = pred == value
        extra = got & ~ndimage.binary_dilation(ref, iterations=2)
        if np.any(extra):
            # every false-positive blob is far (> 40 mm) from the organ and inside the body
            distance = ndimage.distance_transform_edt(~ref, sampling=phantom.spacing_mm)
            assert float(distance[extra].min()) > 40.0
            assert int(phantom.image[extra].min()) > -500
            components += int(ndimage.label(extra)[1])
    if seed % 2 == 0:
        assert 1 <= components <= 2
    else:
        assert components == 0


def test_flipped_orientation_predicts_like_near_perfect(phantoms: dict[int, Phantom]) -> None:
    phantom = phantoms[1]
    np.testing.assert_array_equal(
        simulate_prediction(phantom, "flipped_orientation", 5),
        simulate_prediction(phantom, "near_perfect", 5),
    )


# --------------------------------------------------------------------------- benchmark


def test_benchmark_layout(benchmark: tuple[BenchmarkPaths, float]) -> None:
    paths, seconds = benchmark
    root = paths.reference.parent
    assert seconds < 10.0  # 6 cases x 6 models at the CI size; typically ~3 s
    case_ids = [f"case_{i:04d}" for i in range(1, 7)]
    assert sorted(p.name for p in paths.reference.iterdir()) == case_ids
    for case_id in case_ids:
        assert (paths.reference / case_id / "ct.nii.gz").is_file()
        seg = paths.reference / case_id / "segmentations"
        assert sorted(p.name for p in seg.iterdir()) == sorted(f"{s}.nii.gz" for s in STRUCTURES)
    assert set(paths.predictions) == set(MODELS)
    for model, folder in paths.predictions.items():
        assert folder == root / "predictions" / model
        expected = case_ids[:-1] if model == "boundary_noise" else case_ids
        assert sorted(p.name for p in folder.iterdir()) == expected, model
        for case_id in expected:
            files = sorted(p.name for p in (folder / case_id).iterdir())
            assert files == sorted(f"{s}.nii.gz" for s in STRUCTURES), (model, case_id)


def test_benchmark_reference_files_match_phantom(benchmark: tuple[BenchmarkPaths, float]) -> None:
    paths, _ = benchmark
    phantom = make_phantom(case_seed(0, 1))
    image, affine = read(paths.reference / "case_0002" / "ct.nii.gz")
    assert image.dtype == np.int16
    np.testing.assert_array_equal(image, phantom.image)
    np.testing.assert_array_equal(affine, phantom.affine)
    for structure in STRUCTURES:
        mask, _ = read(paths.reference / "case_0002" / "segmentations" / f"{structure}.nii.gz")
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, phantom.mask(structure).astype(np.uint8))


def test_benchmark_missing_structures_are_empty_files(
    benchmark: tuple[BenchmarkPaths, float],
) -> None:
    paths, _ = benchmark
    folder = paths.predictions["misses_small"]
    for case_id in ("case_0001", "case_0002"):
        mask, _ = read(folder / case_id / "gallbladder.nii.gz")
        assert mask.dtype == np.uint8 and not np.any(mask)
    # case_0002 has an odd seed: its pancreas is missed too
    mask, _ = read(folder / "case_0002" / "pancreas.nii.gz")
    assert not np.any(mask)


def test_benchmark_flipped_orientation(benchmark: tuple[BenchmarkPaths, float]) -> None:
    paths, _ = benchmark
    seed = case_seed(0, 2)
    phantom = make_phantom(seed)
    expected = simulate_prediction(phantom, "flipped_orientation", seed)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, phantom.shape[0] - 1
    for value, structure in LABELS.items():
        path = paths.predictions["flipped_orientation"] / "case_0003" / f"{structure}.nii.gz"
        mask, affine = read(path)
        np.testing.assert_array_equal(mask, np.flip(expected == value, axis=0).astype(np.uint8))
        np.testing.assert_allclose(affine, phantom.affine @ flip, rtol=0, atol=1e-6)
        # a reader that reorients recovers the near_perfect prediction and the reference grid
        canonical = nib.as_closest_canonical(nib.load(path))
        np.testing.assert_allclose(canonical.affine, phantom.affine, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(
            np.asanyarray(canonical.dataobj),
            (simulate_prediction(phantom, "near_perfect", seed) == value).astype(np.uint8),
        )


def test_benchmark_metadata_and_labels(benchmark: tuple[BenchmarkPaths, float]) -> None:
    paths, _ = benchmark
    with paths.metadata.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case_id", "age", "sex", "scanner"]
    assert [row["case_id"] for row in rows] == [f"case_{i:04d}" for i in range(1, 7)]
    for row in rows:
        assert 20 <= int(row["age"]) <= 85
        assert row["sex"] in {"F", "M"}
        assert row["scanner"]
    schema = json.loads(paths.labels.read_text(encoding="utf-8"))
    assert schema == {"labels": {"background": 0, **{n: v for v, n in LABELS.items()}}}


def test_benchmark_is_deterministic(
    benchmark: tuple[BenchmarkPaths, float], tmp_path: Path
) -> None:
    paths, _ = benchmark
    again = write_benchmark(tmp_path, n_cases=1, models=("boundary_noise", "dilated"))
    # the same seed gives the same first case, metadata row and predictions
    first_rows = paths.metadata.read_text(encoding="utf-8").splitlines()[:2]
    assert again.metadata.read_text(encoding="utf-8").splitlines() == first_rows
    # a single case is the last case: boundary_noise has no prediction at all
    assert list(again.predictions["boundary_noise"].iterdir()) == []
    for structure in STRUCTURES:
        relative = Path("case_0001") / f"{structure}.nii.gz"
        first, _ = read(paths.predictions["dilated"] / relative)
        second, _ = read(again.predictions["dilated"] / relative)
        np.testing.assert_array_equal(first, second)


def test_benchmark_labelmap_layout(tmp_path: Path) -> None:
    paths = write_benchmark(
        tmp_path,
        n_cases=2,
        models=("near_perfect", "boundary_noise", "flipped_orientation"),
        layout="labelmap",
        seed=3,
    )
    assert sorted(p.name for p in paths.reference.iterdir()) == [
        "case_0001.nii.gz",
        "case_0002.nii.gz",
    ]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "case_0001_0000.nii.gz",
        "case_0002_0000.nii.gz",
    ]
    assert [p.name for p in paths.predictions["boundary_noise"].iterdir()] == ["case_0001.nii.gz"]
    phantom = make_phantom(case_seed(3, 1))
    reference, affine = read(paths.reference / "case_0002.nii.gz")
    assert reference.dtype == np.uint8
    np.testing.assert_array_equal(reference, phantom.labels)
    np.testing.assert_array_equal(affine, phantom.affine)
    flipped, flipped_affine = read(paths.predictions["flipped_orientation"] / "case_0002.nii.gz")
    near, _ = read(paths.predictions["near_perfect"] / "case_0002.nii.gz")
    np.testing.assert_array_equal(flipped, np.flip(near, axis=0))
    assert flipped_affine[0, 0] == pytest.approx(-4.0)
    # origin moved to the other end of axis 0
    np.testing.assert_allclose(flipped_affine[:3, 3], (affine @ [95.0, 0.0, 0.0, 1.0])[:3])
    assert json.loads(paths.labels.read_text())["labels"]["postcava"] == 9


def test_benchmark_refuses_to_mix_and_can_overwrite(tmp_path: Path) -> None:
    write_benchmark(tmp_path, n_cases=1, models=("dilated",))
    with pytest.raises(LayoutError):
        write_benchmark(tmp_path, n_cases=1, models=("dilated",))
    paths = write_benchmark(tmp_path, n_cases=1, models=("near_perfect",), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["near_perfect"]
    assert set(paths.predictions) == {"near_perfect"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"models": ("nnunet",)},
        {"models": ("dilated", "dilated")},
        {"n_cases": 0},
        {"layout": "nnunet"},
        {"seed": -1},
    ],
)
def test_benchmark_invalid_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        write_benchmark(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())  # validated before anything is written
