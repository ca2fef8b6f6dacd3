"""The public manifest of a reference set: case ids, grids and labels, never the masks.

:func:`build_manifest` reads a reference folder once (on the scorer's side) and returns what
participants may see: for each case its shape and voxel-to-RAS affine, the structures it
has, and the label values a label-map prediction uses. Its ``digest`` is the SHA-256 of the
reference files (:func:`~assay.datasets.content_hash`): a scorer refuses a reference folder
whose content has changed since registration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from assay.datasets import (
    DatasetCard,
    LabelMapFile,
    StructureFiles,
    content_hash,
    discover_cases,
)
from assay.errors import InputError
from assay.io import read_image


def reference_digest(root: str | Path) -> str:
    """SHA-256 over every file of the reference folder (paths, sizes, contents)."""
    card = DatasetCard(name="reference", root=Path(root))
    return content_hash(card)


def build_manifest(name: str, root: str | Path) -> dict[str, Any]:
    """The public manifest of the reference folder ``root`` (see the module docstring).

    Returns a JSON-able dict: ``name``, ``digest``, ``labels`` (value -> structure, as
    strings), ``structures`` and ``cases`` (case id -> ``shape``, ``affine``,
    ``structures``).

    Raises
    ------
    InputError
        The folder cannot be read as a reference set, or its cases have no masks.
    """
    root = Path(root)
    found = discover_cases(root, role="reference")
    cases: dict[str, Any] = {}
    structures: set[str] = set()
    for case_id, src in found.items():
        if isinstance(src, LabelMapFile):
            image = read_image(src.path)
            present = {int(v) for v in np.unique(image.array)} - {0}
            names = sorted({src.labels[v] for v in present if v in src.labels})
        elif isinstance(src, StructureFiles):
            if not src.files:
                raise InputError(f"Reference case {case_id!r} in {root} has no masks.")
            image = read_image(next(iter(src.files.values())))
            names = sorted(src.files)
        else:  # pragma: no cover - CaseSource is one of the two
            raise InputError(f"Unknown case source for {case_id!r}.")
        structures.update(names)
        cases[case_id] = {
            "shape": [int(s) for s in image.shape],
            "affine": [[float(x) for x in row] for row in np.asarray(image.affine)],
            "structures": names,
        }
    if not cases:
        raise InputError(f"No reference cases in {root}.")
    labels = {str(i + 1): s for i, s in enumerate(sorted(structures))}
    first = next(iter(found.values()))
    if isinstance(first, LabelMapFile):
        labels = {str(v): s for v, s in sorted(first.labels.items())}
    return {
        "name": name,
        "digest": reference_digest(root),
        "labels": labels,
        "structures": sorted(structures),
        "cases": cases,
    }


def phase_manifest(manifest: Mapping[str, Any], cases: tuple[str, ...] | None) -> dict[str, Any]:
    """The manifest restricted to a phase's cases (what that phase publishes)."""
    chosen = manifest["cases"] if cases is None else {c: manifest["cases"][c] for c in cases}
    return {
        "name": manifest["name"],
        "labels": dict(manifest["labels"]),
        "structures": list(manifest["structures"]),
        "cases": dict(chosen),
        "prediction_layouts": [
            "CASE.nii.gz: one label map per case with the label values above",
            "CASE/STRUCTURE.nii.gz: one 0/1 mask per structure",
        ],
    }


def manifest_json(manifest: Mapping[str, Any]) -> str:
    """The canonical JSON text of a manifest (sorted keys)."""
    return json.dumps(manifest, sort_keys=True)
