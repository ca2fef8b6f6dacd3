"""Dataset cards: what a test set is, where it comes from, and under which terms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from assay.errors import InputError

_FIELDS = ("name", "version", "description", "licence", "citation", "url")


@dataclass(frozen=True)
class DatasetCard:
    """What a benchmark states about one test set (licence and citation for the report).

    Unknown fields are None, never guessed.
    """

    name: str
    version: str | None = None
    description: str | None = None
    licence: str | None = None
    citation: str | None = None
    url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "licence": self.licence,
            "citation": self.citation,
            "url": self.url,
        }


def load_dataset_card(path: str | Path) -> DatasetCard:
    """Read a YAML dataset card (``name`` required; see ``examples/``).

    Raises
    ------
    InputError
        Unreadable YAML, no ``name``, or an unknown field (the message lists the known ones).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"Cannot read dataset card {path}: {exc}. Check the file.") from exc
    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise InputError(f"Dataset card {path} must be a YAML mapping with at least a 'name'.")
    unknown = sorted(set(map(str, raw)) - set(_FIELDS))
    if unknown:
        raise InputError(
            f"Unknown field(s) {', '.join(unknown)} in dataset card {path}; "
            f"known: {', '.join(_FIELDS)}."
        )
    return DatasetCard(
        **{k: (None if raw.get(k) is None else str(raw[k]).strip()) for k in _FIELDS[1:6]},
        name=str(raw["name"]),
    )
