"""Simulated segmentation models with distinct, measurable error profiles.

Every model turns a phantom's reference label map into a predicted label map on the same grid.
Work is done per structure inside its bounding box (plus a small margin), so predictions of
CT-sized phantoms stay fast. Where perturbed structures compete for a voxel, the structure
earlier in :data:`assay.synthetic.PAINT_ORDER` wins; a voxel that belongs to another structure
in the reference is never claimed by growth (so a dilated structure always contains its
reference).
"""

from __future__ import annotations

import math
import zlib
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from assay.errors import InputError
from assay.synthetic._phantom import _LABEL_OF, LABELS, PAINT_ORDER, Phantom, smooth_noise

__all__ = ["MODELS", "simulate_prediction"]

MODELS: Final[dict[str, str]] = {
    "near_perfect": "Reference with a handful of boundary voxels flipped per structure.",
    "boundary_noise": "Boundaries displaced by smooth random noise of ±1–2 voxels.",
    "dilated": "Every structure dilated by one voxel (6-connectivity): over-segmentation.",
    "misses_small": "Good boundaries; gallbladder always missed, pancreas missed for odd seeds.",
    "false_positives": "Good boundaries; for even seeds one or two liver/spleen blobs far away.",
    "flipped_orientation": "Identical to near_perfect, but written flipped along axis 0.",
}
"""Simulated model name -> one-line description of its error profile."""

# Stream of each model's random numbers; flipped_orientation deliberately shares near_perfect's,
# so that a reader that reorients its files recovers exactly the near_perfect prediction.
_STREAM: Final[dict[str, int]] = {
    name: zlib.crc32(name.encode()) for name in MODELS if name != "flipped_orientation"
}
_STREAM_OF: Final[dict[str, int]] = {**_STREAM, "flipped_orientation": _STREAM["near_perfect"]}

_SIX: Final = ndimage.generate_binary_structure(3, 1)
_BOUNDARY_NOISE_VOXELS: Final = 1.3  # standard deviation of the displacement field, in voxels
_BOUNDARY_NOISE_MAX: Final = 2.0  # displacement clipped to ±2 voxels
_FP_MIN_GAP_MM: Final = 40.0


def simulate_prediction(phantom: Phantom, model: str, seed: int) -> NDArray[np.uint8]:
    """Simulate one model's label-map prediction for a phantom.

    Parameters
    ----------
    phantom : Phantom
        The case; it is not modified.
    model : str
        One of :data:`MODELS`.
    seed : int
        Non-negative seed. Together with `model` it fixes every random choice; the seed's parity
        decides whether ``misses_small`` misses the pancreas (odd) and whether
        ``false_positives`` adds blobs (even), so consecutive case seeds split half and half.

    Returns
    -------
    numpy.ndarray
        uint8 label map (values of :data:`LABELS`) on the phantom's grid, never flipped:
        ``flipped_orientation`` returns exactly the ``near_perfect`` prediction and differs only
        in how :func:`write_benchmark` writes it.

    Raises
    ------
    assay.errors.InputError
        If `model` is unknown (the message lists the known ones) or `seed` is invalid.
    """
    if model not in MODELS:
        raise InputError(f"Unknown simulated model {model!r}. Known models: {', '.join(MODELS)}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"Invalid prediction seed {seed!r}: expected a non-negative integer.")
    stream = np.random.SeedSequence([int(seed), _STREAM_OF[model]])
    rng = np.random.Generator(np.random.PCG64(stream))
    reference = phantom.labels
    boxes = _boxes(reference)
    if model in ("near_perfect", "flipped_orientation"):
        return _near_perfect(reference, boxes, rng)
    if model == "boundary_noise":
        return _boundary_noise(reference, boxes, rng)
    if model == "dilated":
        return _dilated(reference, boxes)
    if model == "misses_small":
        pred = _near_perfect(reference, boxes, rng)
        pred[pred == _LABEL_OF["gallbladder"]] = 0
        if seed % 2 == 1:
            pred[pred == _LABEL_OF["pancreas"]] = 0
        return pred
    # false_positives
    pred = _near_perfect(reference, boxes, rng)
    if seed % 2 == 0:
        _add_false_positives(pred, phantom, boxes, rng)
    return pred


_Box = tuple[slice, slice, slice]


def _boxes(labels: NDArray[np.uint8]) -> dict[int, _Box]:
    """Bounding box of every non-empty label, in one pass."""
    found = ndimage.find_objects(labels, max_label=len(LABELS))
    return {value: (s[0], s[1], s[2]) for value, s in enumerate(found, start=1) if s is not None}


def _grow(box: _Box, margin: int, shape: tuple[int, ...]) -> _Box:
    a, b, c = (
        slice(max(0, s.start - margin), min(n, s.stop + margin))
        for s, n in zip(box, shape, strict=True)
    )
    return (a, b, c)


def _priority() -> list[int]:
    return [_LABEL_OF[name] for name in PAINT_ORDER]


def _near_perfect(
    reference: NDArray[np.uint8], boxes: dict[int, _Box], rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Flip 2–7 inner and 2–7 outer boundary voxels of every structure."""
    pred = reference.copy()
    for value in _priority():
        if value not in boxes:
            continue
        box = _grow(boxes[value], 1, reference.shape)
        ref = reference[box]
        out = pred[box]
        mask = ref == value
        inner = np.flatnonzero(mask & ~ndimage.binary_erosion(mask, _SIX))
        outer = np.flatnonzero(ndimage.binary_dilation(mask, _SIX) & ~mask & (ref == 0))
        n_in, n_out = (int(k) for k in rng.integers(2, 8, size=2))
        drop = rng.choice(inner, size=min(n_in, inner.size), replace=False)
        add = rng.choice(outer, size=min(n_out, outer.size), replace=False)
        out[np.unravel_index(drop, out.shape)] = 0
        idx = np.unravel_index(add, out.shape)
        out[idx] = np.where(out[idx] == 0, value, out[idx])
    return pred


def _boundary_noise(
    reference: NDArray[np.uint8], boxes: dict[int, _Box], rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Move every boundary by a smooth displacement field (voxels) along the distance map."""
    pred = np.zeros_like(reference)
    margin = math.ceil(_BOUNDARY_NOISE_MAX) + 1
    for value in _priority():
        if value not in boxes:
            continue
        box = _grow(boxes[value], margin, reference.shape)
        mask = reference[box] == value
        cells = tuple(max(2, math.ceil(n / 6) + 1) for n in mask.shape)
        field = smooth_noise(rng, mask.shape, cells) * np.float32(_BOUNDARY_NOISE_VOXELS)
        np.clip(field, -_BOUNDARY_NOISE_MAX, _BOUNDARY_NOISE_MAX, out=field)
        # signed distance, half-voxel offset so that a zero field reproduces the mask exactly
        signed = np.where(
            mask,
            0.5 - ndimage.distance_transform_edt(mask),
            ndimage.distance_transform_edt(~mask) - 0.5,
        )
        grown = signed < field
        out = pred[box]
        out[grown & (out == 0)] = value
    return pred


def _dilated(reference: NDArray[np.uint8], boxes: dict[int, _Box]) -> NDArray[np.uint8]:
    """Dilate every structure by one voxel into background; contested voxels by priority."""
    pred = reference.copy()
    for value in _priority():
        if value not in boxes:
            continue
        box = _grow(boxes[value], 1, reference.shape)
        ref = reference[box]
        out = pred[box]
        grown = ndimage.binary_dilation(ref == value, _SIX) & (ref == 0) & (out == 0)
        out[grown] = value
    return pred


def _add_false_positives(
    pred: NDArray[np.uint8],
    phantom: Phantom,
    boxes: dict[int, _Box],
    rng: np.random.Generator,
) -> None:
    """Add one or two ellipsoidal liver/spleen blobs inside the body, far from that organ."""
    spacing = np.asarray(phantom.spacing_mm)
    shape = np.asarray(pred.shape)
    n_blobs = int(rng.integers(1, 3))
    for _ in range(n_blobs):
        value = _LABEL_OF[str(rng.choice(["liver", "spleen"]))]
        radius_mm = float(rng.uniform(8.0, 15.0))
        candidates = rng.integers(0, shape, size=(200, 3))
        if value not in boxes:
            continue
        box = boxes[value]
        lo = np.array([s.start for s in box]) * spacing
        hi = np.array([s.stop - 1 for s in box]) * spacing
        for centre in candidates:
            c = tuple(int(v) for v in centre)
            hu = int(phantom.image[c])
            if phantom.labels[c] != 0 or not -200 <= hu <= 150:
                continue
            point = centre * spacing
            gap = np.maximum(np.maximum(lo - point, point - hi), 0.0)
            if float(np.sqrt((gap**2).sum())) < _FP_MIN_GAP_MM + radius_mm:
                continue
            half = np.ceil(radius_mm / spacing).astype(int)
            start = np.maximum(centre - half, 0)
            stop = np.minimum(centre + half + 1, shape)
            blob_box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
            grids = np.ogrid[blob_box]
            d2 = sum(
                ((g - c0) * s / radius_mm) ** 2
                for g, c0, s in zip(grids, centre, spacing, strict=True)
            )
            blob = (
                (d2 <= 1.0)
                & (phantom.labels[blob_box] == 0)
                & (phantom.image[blob_box] > -500)
                & (pred[blob_box] == 0)
            )
            pred[blob_box][blob] = value
            break
