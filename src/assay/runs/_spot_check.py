"""Spot check: catch a misaligned model on its first few cases, before publishing zeros.

A model whose mean Dice over the first cases is below a threshold is examined: if flipping
its masks along an axis, or reading one of its structures as another, matches the reference
much better, the finding says so (mirrored outputs, swapped labels); otherwise it says what
to check. Orientation problems that assay repairs itself (an axis permutation recorded in the
affine, flagged ``reoriented`` when scoring) are not findings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.datasets import CaseSource, LabelMapFile, StructureFiles
from assay.errors import AssayError
from assay.io import Image, align_to_reference, binary_mask, read_image
from assay.metrics import dice

_AXES = ("left–right", "anterior–posterior", "superior–inferior")


@dataclass(frozen=True)
class SpotCheckResult:
    """``mean_dice`` over the (case, structure) pairs that could be scored; ``finding`` is
    empty when nothing looks wrong, else one line saying what to check."""

    n_cases: int
    mean_dice: float
    finding: str = ""

    @property
    def ok(self) -> bool:
        return not self.finding


def spot_check(
    reference: Mapping[str, CaseSource],
    predictions: Mapping[str, CaseSource],
    case_ids: Sequence[str],
    *,
    model: str,
    min_dice: float = 0.1,
) -> SpotCheckResult:
    """Check ``model``'s predictions of ``case_ids`` against the reference.

    Dice is computed on the reference grid (predictions reoriented like scoring does);
    structures empty in both are skipped. With mean Dice < ``min_dice``: for each axis the
    Dice of the flipped prediction, and for each predicted structure its best-matching
    reference structure, are compared with the plain Dice; a gain to more than 0.5 names the
    cause.
    """
    plain: list[float] = []
    flipped: list[list[float]] = [[], [], []]
    swaps: dict[tuple[str, str], list[float]] = {}
    n = 0
    first_error = ""
    for case in case_ids:
        if case not in predictions or case not in reference:
            continue
        try:
            ref = _masks(reference[case], None)
            grid = read_image(_first_file(reference[case]))
            pred = _masks(predictions[case], grid)
        except (AssayError, OSError, ValueError) as exc:
            first_error = first_error or f"case {case!r}: {exc}"
            continue
        n += 1
        for name, r in ref.items():
            p = pred.get(name)
            if p is None or (not r.any() and not p.any()):
                continue
            plain.append(dice(p, r))
            for axis in range(3):
                flipped[axis].append(dice(np.flip(p, axis=axis), r))
        for got, p in pred.items():
            for name, r in ref.items():
                if name != got and r.any() and p.any():
                    swaps.setdefault((got, name), []).append(dice(p, r))
    if not plain:
        if first_error:
            return SpotCheckResult(n, float("nan"), (
                f"{model}: none of the first {len(case_ids)} case(s) could be compared with "
                f"the reference ({first_error}). Check the predictions' geometry and format."
            ))  # fmt: skip
        if not any(c in predictions for c in case_ids):
            return SpotCheckResult(n, float("nan"), (
                f"{model}: no prediction for any of the first case(s) "
                f"({', '.join(case_ids[:3])}); found {', '.join(sorted(predictions)[:3]) or 'none'}"
                ". Check that the predictions are named after the reference cases."
            ))  # fmt: skip
        return SpotCheckResult(n, float("nan"), "")
    mean = float(np.mean(plain))
    if mean >= min_dice:
        return SpotCheckResult(n, mean)
    gains = [float(np.mean(f)) for f in flipped]
    best_axis = int(np.argmax(gains))
    if gains[best_axis] > 0.5:
        return SpotCheckResult(n, mean, (
            f"{model}: mean Dice {mean:.3f} on the first {n} case(s), but {gains[best_axis]:.3f}"
            f" when its masks are flipped along the {_AXES[best_axis]} axis: the outputs look "
            "mirrored. Check the orientation (affine) the model writes."
        ))  # fmt: skip
    swapped = sorted(((float(np.mean(v)), k) for k, v in swaps.items()), reverse=True)
    if swapped and swapped[0][0] > 0.5:
        value, (got, name) = swapped[0]
        return SpotCheckResult(n, mean, (
            f"{model}: mean Dice {mean:.3f} on the first {n} case(s), but its {got!r} matches "
            f"the reference's {name!r} (Dice {value:.3f}): the labels look swapped. Check the "
            "model's label values or structure names (prediction_labels in its card)."
        ))  # fmt: skip
    return SpotCheckResult(n, mean, (
        f"{model}: mean Dice {mean:.3f} < {min_dice} on the first {n} case(s). Check that the "
        "predictions belong to these cases, their label values, and the layout."
    ))  # fmt: skip


def runner_failed(model: str, errors: Mapping[str, str]) -> SpotCheckResult:
    """The finding for a model whose runner failed on every case of the spot check:
    ``errors`` maps each case to the runner's error (the most common one is quoted)."""
    counts: dict[str, list[str]] = {}
    for case, message in errors.items():
        counts.setdefault(message.splitlines()[0] if message else "no message", []).append(case)
    message, cases = max(counts.items(), key=lambda kv: len(kv[1]))
    also = (
        f" ({len(errors) - len(cases)} other case(s) failed otherwise)" if len(counts) > 1 else ""
    )
    return SpotCheckResult(0, float("nan"), (
        f"{model}: the runner failed on all {len(errors)} spot-check case(s), e.g. "
        f"{cases[0]!r}: {message}{also}. Fix the model command (runner in its card), then "
        "re-run; set spot_check: false in the card to run every case anyway."
    ))  # fmt: skip


def _first_file(source: CaseSource) -> Path:
    if isinstance(source, LabelMapFile):
        return source.path
    return next(iter(source.files.values()))


def _masks(source: CaseSource, grid: Image | None) -> dict[str, np.ndarray]:
    """Structure -> boolean mask of a case (on ``grid`` when given, as scoring aligns it)."""
    where = f"case {source.case_id!r}"
    if isinstance(source, LabelMapFile):
        image = read_image(source.path)
        array = image.array if grid is None else align_to_reference(image, grid, where=where)[0]
        return {name: array == value for value, name in source.labels.items()}
    if not isinstance(source, StructureFiles):
        raise TypeError(f"unknown case source {type(source).__name__}")
    out = {}
    for name, path in source.files.items():
        image = read_image(path)
        mask = binary_mask(image, what=str(path))
        if grid is not None:
            mask = align_to_reference(
                Image(mask, image.affine, image.path), grid, where=f"{where}, {name}"
            )[0]
        out[name] = np.asarray(mask, dtype=bool)
    return out
