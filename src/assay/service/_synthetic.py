"""A small synthetic challenge for the service's quick start, tests and load benchmark.

Deterministic for a seed: a reference set of ``n_cases`` small CT-like cases (three
structures as ellipsoids on a 40×40×24 grid of 1.5×1.5×2.5 mm, ``CASE/STRUCTURE.nii.gz``),
per-case metadata (sex, age group, scanner), and predictions of a model of a given
``quality`` (0 = perfect; larger = boundaries shifted further and structures missed more
often), as label maps (``CASE.nii.gz``) ready to zip.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from assay.io import write_image

#: Structures of the synthetic challenge (label values 1, 2, 3 in sorted order).
SYNTHETIC_STRUCTURES = ("kidney_left", "liver", "spleen")
SHAPE = (40, 40, 24)
SPACING = (1.5, 1.5, 2.5)


def affine() -> np.ndarray:
    """The grid of every synthetic case."""
    out = np.diag([*SPACING, 1.0])
    out[:3, 3] = (-30.0, -30.0, -30.0)
    return out


def _ellipsoid(centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=float)
    d = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return np.asarray(d <= 1.0)


def case_masks(case: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The reference masks of case number ``case``."""
    rng = np.random.default_rng([seed, case])
    base = {
        "liver": (np.array([14.0, 20.0, 12.0]), np.array([8.0, 10.0, 6.0])),
        "spleen": (np.array([28.0, 12.0, 12.0]), np.array([5.0, 4.0, 4.0])),
        "kidney_left": (np.array([28.0, 28.0, 12.0]), np.array([4.0, 3.0, 4.0])),
    }
    out = {}
    for name, (centre, radii) in base.items():
        c = centre + rng.uniform(-1.5, 1.5, 3)
        r = radii * rng.uniform(0.85, 1.15, 3)
        out[name] = _ellipsoid(c, r)
    return out


def write_reference(root: str | Path, n_cases: int, *, seed: int = 0) -> Path:
    """Write the reference set (and ``metadata.csv`` next to it); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed + 7)
    rows = []
    for i in range(n_cases):
        case_id = f"case{i:04d}"
        for name, mask in case_masks(i, seed).items():
            write_image(root / case_id / f"{name}.nii.gz", mask.astype(np.uint8), affine())
        rows.append(
            {
                "case_id": case_id,
                "sex": rng.choice(["F", "M"]),
                "age": rng.choice(["<50", "50-70", ">70"], p=[0.3, 0.5, 0.2]),
                "scanner": rng.choice(["A", "B", "C"], p=[0.5, 0.4, 0.1]),
            }
        )
    with (root.parent / f"{root.name}_metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["case_id", "sex", "age", "scanner"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def metadata_path(root: str | Path) -> Path:
    """Where :func:`write_reference` put the metadata of ``root``."""
    root = Path(root)
    return root.parent / f"{root.name}_metadata.csv"


def predicted_label_map(
    case: int, quality: float, *, seed: int = 0, model_seed: int = 1, flip: int | None = None
) -> np.ndarray:
    """A model's label map for case ``case``: structures shifted by about ``quality``
    voxels, one missed with probability ``quality / 10``. ``flip`` = this case number gets
    an empty prediction (the probing attack's one-case change)."""
    rng = np.random.default_rng([seed, case, model_seed, 99])
    out = np.zeros(SHAPE, dtype=np.uint8)
    if flip is not None and case == flip:
        return out
    for value, name in enumerate(SYNTHETIC_STRUCTURES, start=1):
        mask = case_masks(case, seed)[name]
        if rng.random() < quality / 10:
            continue
        shift = np.round(rng.normal(0.0, quality, 3)).astype(int)
        moved = np.roll(mask, tuple(shift), axis=(0, 1, 2))
        out[moved & (out == 0)] = value
    return out


def write_predictions(
    folder: str | Path,
    cases: list[str],
    quality: float,
    *,
    seed: int = 0,
    model_seed: int = 1,
    flip: int | None = None,
) -> Path:
    """Write a model's label maps ``CASE.nii.gz`` for ``cases`` (ids ``caseNNNN``)."""
    folder = Path(folder)
    for case_id in cases:
        i = int(case_id.removeprefix("case"))
        label_map = predicted_label_map(i, quality, seed=seed, model_seed=model_seed, flip=flip)
        write_image(folder / f"{case_id}.nii.gz", label_map, affine())
    return folder


#: CT-like intensity (HU) of each synthetic structure in the images.
INTENSITY = {"kidney_left": 150, "liver": 60, "spleen": 40}


def write_images(folder: str | Path, n_cases: int, *, seed: int = 0) -> Path:
    """The cases' input images ``CASE.nii.gz`` (int16, structures at their intensity plus
    noise of SD 2 HU on a background of -100 HU), what a model submission is run on."""
    folder = Path(folder)
    for i in range(n_cases):
        rng = np.random.default_rng([seed, i, 5])
        image = np.full(SHAPE, -100.0)
        for name, mask in case_masks(i, seed).items():
            image[mask] = INTENSITY[name]
        image += rng.normal(0.0, 2.0, SHAPE)
        write_image(folder / f"case{i:04d}.nii.gz", np.round(image).astype(np.int16), affine())
    return folder


#: A model that needs nothing but Python's standard library (it runs as an unprivileged user
#: that cannot see assay's environment): labels voxels by intensity band.
THRESHOLD_MODEL = '''\
"""Label a synthetic CT by intensity: kidney 130-170, liver 50-70, spleen 30-50 HU."""
import array, gzip, struct, sys

src, dst = sys.argv[1], sys.argv[2]
raw = gzip.open(src).read()
offset = int(struct.unpack("<f", raw[108:112])[0])
voxels = array.array("h", raw[offset:])
bands = ((130, 170, 1), (50, 70, 2), (30, 50, 3))
labels = bytearray(len(voxels))
for k, v in enumerate(voxels):
    for low, high, value in bands:
        if low <= v < high:
            labels[k] = value
header = bytearray(raw[:348])
header[70:72] = struct.pack("<h", 2)      # datatype uint8
header[72:74] = struct.pack("<h", 8)      # bitpix
header[108:112] = struct.pack("<f", 352)  # vox_offset
header[112:120] = struct.pack("<ff", 0, 0)  # no scaling
with gzip.open(dst, "wb") as out:
    out.write(bytes(header) + bytes(4) + bytes(labels))
'''


def write_model(folder: str | Path, script: str = THRESHOLD_MODEL) -> Path:
    """A model submission folder: ``model.py`` and ``assay-model.yaml`` (its command)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(script, encoding="utf-8")
    (folder / "assay-model.yaml").write_text(
        "command: python3 model.py {input} {output_file}\n", encoding="utf-8"
    )
    return folder
