"""Write a small synthetic benchmark (reference, predictions of simulated models, metadata)."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from assay.errors import InputError, LayoutError
from assay.io import write_image
from assay.synthetic._models import MODELS, simulate_prediction
from assay.synthetic._phantom import LABELS, make_phantom

__all__ = ["BenchmarkPaths", "write_benchmark"]

_SCANNERS: Final = (
    "Siemens SOMATOM Force",
    "GE Revolution CT",
    "Philips IQon Spectral CT",
    "Canon Aquilion ONE",
)
#: Marker file :func:`write_benchmark` leaves in its folder (what ``overwrite`` may replace).
BENCHMARK_MARKER: Final = ".assay-benchmark"
_MISSING_MODEL: Final = "boundary_noise"  # has no prediction for the last case
_FLIPPED_MODEL: Final = "flipped_orientation"
MAX_CASES: Final = 9999
_T = TypeVar("_T", bound=np.generic)


@dataclass(frozen=True)
class BenchmarkPaths:
    """Where :func:`write_benchmark` put things.

    Parameters
    ----------
    reference : pathlib.Path
        Folder of reference segmentations (``structures``: ``<case_id>/ct.nii.gz`` and
        ``<case_id>/segmentations/<structure>.nii.gz``; ``labelmap``: ``<case_id>.nii.gz``).
    predictions : dict of str to pathlib.Path
        Model name -> folder of its predictions (``<case_id>/<structure>.nii.gz`` or
        ``<case_id>.nii.gz``).
    metadata : pathlib.Path
        CSV with columns ``case_id, age, sex, scanner``.
    labels : pathlib.Path
        nnU-Net v2 style ``dataset.json`` (``{"labels": {"background": 0, "liver": 1, ...}}``).
    """

    reference: Path
    predictions: dict[str, Path]
    metadata: Path
    labels: Path


def case_seed(seed: int, index: int) -> int:
    """Seed of the phantom and of every prediction of case `index` (0-based) of a benchmark."""
    return seed * 1_000_000 + index


def write_benchmark(
    out_dir: str | Path,
    *,
    n_cases: int = 6,
    shape: tuple[int, int, int] = (96, 96, 64),
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 5.0),
    models: Sequence[str] = tuple(MODELS),
    seed: int = 0,
    layout: Literal["structures", "labelmap"] = "structures",
    overwrite: bool = False,
) -> BenchmarkPaths:
    """Write a deterministic synthetic benchmark as NIfTI files.

    Case ``case_0001`` ... ``case_<n>`` is ``make_phantom(seed * 1_000_000 + i)`` (i 0-based),
    and every model's prediction of it uses the same seed in :func:`simulate_prediction`.

    Layout ``structures`` (one 0/1 uint8 file per structure, every structure always written,
    all-zero where a model misses it)::

        out/reference/<case_id>/ct.nii.gz
        out/reference/<case_id>/segmentations/<structure>.nii.gz
        out/predictions/<model>/<case_id>/<structure>.nii.gz

    Layout ``labelmap`` (uint8 label maps with the values of ``dataset.json``)::

        out/images/<case_id>_0000.nii.gz          (the CT, nnU-Net naming)
        out/reference/<case_id>.nii.gz
        out/predictions/<model>/<case_id>.nii.gz

    Both layouts also write ``out/dataset.json`` and ``out/metadata.csv``. Deliberate defects:
    ``boundary_noise`` has no prediction for the last case (a missing prediction), and
    ``flipped_orientation`` is written flipped along axis 0 with the affine adjusted
    (``affine @ F``, F negating axis 0 and moving the origin to its other end), so that its
    physical content equals the ``near_perfect`` prediction exactly.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Output folder, created if needed.
    n_cases : int, default 6
        Number of cases (1 to 9999).
    shape, spacing_mm : tuple, default (96, 96, 64) and (4.0, 4.0, 5.0) mm
        Grid of every phantom, see :func:`make_phantom`.
    models : sequence of str, default all of :data:`MODELS`
        Simulated models to write.
    seed : int, default 0
        Benchmark seed (non-negative).
    layout : {"structures", "labelmap"}, default "structures"
        File layout, see above.
    overwrite : bool, default False
        Replace a benchmark that this function wrote in `out_dir` (its ``reference``,
        ``predictions``, ``images``, ``metadata.csv`` and ``dataset.json``, recognised by the
        ``.assay-benchmark`` marker it writes); without it an existing one is an error,
        because mixing two benchmarks would silently corrupt both. Files of those names that
        it did not write (no marker) are never removed: that is an error too.

    Returns
    -------
    BenchmarkPaths
        Paths of what was written.

    Raises
    ------
    assay.errors.InputError
        If an argument is invalid or a model is unknown.
    assay.errors.LayoutError
        If `out_dir` already holds a benchmark and `overwrite` is false, or holds files of
        those names that were not written by this function.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise InputError(
            f"Unknown simulated model(s) {unknown!r} for write_benchmark. "
            f"Known models: {', '.join(MODELS)}."
        )
    if len(set(models)) != len(models):
        raise InputError(f"Duplicate model names in {list(models)!r}: give each model once.")
    if layout not in ("structures", "labelmap"):
        raise InputError(
            f"Unknown benchmark layout {layout!r}: expected 'structures' or 'labelmap'."
        )
    if isinstance(n_cases, bool) or not isinstance(n_cases, int) or not 1 <= n_cases <= MAX_CASES:
        raise InputError(f"Invalid n_cases {n_cases!r}: expected an integer from 1 to {MAX_CASES}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"Invalid benchmark seed {seed!r}: expected a non-negative integer.")

    out = Path(out_dir)
    owned = [out / "reference", out / "predictions", out / "images"]
    owned_files = [out / "metadata.csv", out / "dataset.json"]
    existing = [p for p in [*owned, *owned_files] if p.exists() or p.is_symlink()]
    marker = out / BENCHMARK_MARKER
    if existing and not overwrite:
        raise LayoutError(
            f"{out} already holds a benchmark ({', '.join(p.name for p in existing)}). "
            "Choose an empty folder or pass overwrite=True to replace it."
        )
    if existing and not marker.is_file():
        raise LayoutError(
            f"{out} holds {', '.join(p.name for p in existing)}, not written by "
            f"write_benchmark (no {BENCHMARK_MARKER} marker); they are not replaced. Choose "
            "an empty folder."
        )
    for path in existing:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        json.dumps({"written_by": "assay.synthetic.write_benchmark", "seed": seed,
                    "n_cases": n_cases, "layout": layout}) + "\n",
        encoding="utf-8",
    )  # fmt: skip

    reference_dir = out / "reference"
    reference_dir.mkdir(parents=True)
    prediction_dirs = {model: out / "predictions" / model for model in models}
    for folder in prediction_dirs.values():
        folder.mkdir(parents=True)
    if layout == "labelmap":
        (out / "images").mkdir()

    case_ids = [f"case_{i + 1:04d}" for i in range(n_cases)]
    for index, case_id in enumerate(case_ids):
        phantom = make_phantom(case_seed(seed, index), shape=shape, spacing_mm=spacing_mm)
        affine = phantom.affine
        if layout == "structures":
            _save(phantom.image, affine, reference_dir / case_id / "ct.nii.gz")
            _save_structures(phantom.labels, affine, reference_dir / case_id / "segmentations")
        else:
            _save(phantom.image, affine, out / "images" / f"{case_id}_0000.nii.gz")
            _save(phantom.labels, affine, reference_dir / f"{case_id}.nii.gz")
        for model in models:
            if model == _MISSING_MODEL and index == n_cases - 1:
                continue
            pred = simulate_prediction(phantom, model, case_seed(seed, index))
            pred_affine = affine
            if model == _FLIPPED_MODEL:
                pred, pred_affine = flip_axis0(pred, affine)
            if layout == "structures":
                _save_structures(pred, pred_affine, prediction_dirs[model] / case_id)
            else:
                _save(pred, pred_affine, prediction_dirs[model] / f"{case_id}.nii.gz")

    labels_path = out / "dataset.json"
    schema = {"labels": {"background": 0, **{name: value for value, name in LABELS.items()}}}
    labels_path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    metadata_path = out / "metadata.csv"
    _write_metadata(metadata_path, case_ids, seed)
    return BenchmarkPaths(
        reference=reference_dir,
        predictions=prediction_dirs,
        metadata=metadata_path,
        labels=labels_path,
    )


def flip_axis0(
    array: NDArray[_T], affine: NDArray[np.float64]
) -> tuple[NDArray[_T], NDArray[np.float64]]:
    """Flip an array along axis 0 and adjust its affine so the physical content is unchanged.

    Parameters
    ----------
    array : numpy.ndarray
        3-D array (not modified).
    affine : numpy.ndarray
        Its 4 x 4 voxel-to-world matrix (not modified).

    Returns
    -------
    tuple of numpy.ndarray
        Contiguous flipped copy and ``affine @ F``, where F maps voxel index i to n - 1 - i
        along axis 0 (column 0 negated, origin moved to the other end of the axis).
    """
    flip = np.eye(4)
    flip[0, 0] = -1.0
    flip[0, 3] = array.shape[0] - 1
    flipped: NDArray[_T] = np.ascontiguousarray(np.flip(array, axis=0))
    new_affine: NDArray[np.float64] = affine @ flip
    return flipped, new_affine


def _save(array: NDArray[np.generic], affine: NDArray[np.float64], path: Path) -> None:
    write_image(path, array, affine)


def _save_structures(labels: NDArray[np.uint8], affine: NDArray[np.float64], folder: Path) -> None:
    """Write one 0/1 uint8 mask per structure (all-zero when absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    for value, name in LABELS.items():
        _save((labels == value).astype(np.uint8), affine, folder / f"{name}.nii.gz")


def _write_metadata(path: Path, case_ids: list[str], seed: int) -> None:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x6D657461])))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "age", "sex", "scanner"])
        for case_id in case_ids:
            age = int(rng.integers(20, 86))
            sex = "F" if rng.random() < 0.5 else "M"
            scanner = _SCANNERS[int(rng.integers(len(_SCANNERS)))]
            writer.writerow([case_id, age, sex, scanner])
