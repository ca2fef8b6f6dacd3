"""Model cards: who made a model, how it was trained, where its paper and code are."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.errors import InputError

_FIELDS = ("name", "framework", "organisation", "paper", "code", "training_data", "notes")


@dataclass(frozen=True)
class ModelCard:
    """What a benchmark states about one model.

    ``training_data`` lists dataset names (and optionally ``dataset:case_id`` entries) used to
    train the model, for contamination checks. Unknown fields are None, never guessed.
    """

    name: str
    framework: str | None = None
    organisation: str | None = None
    paper: str | None = None
    code: str | None = None
    training_data: tuple[str, ...] = field(default_factory=tuple)
    notes: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "framework": self.framework,
            "organisation": self.organisation,
            "paper": self.paper,
            "code": self.code,
            "training_data": list(self.training_data),
            "notes": self.notes,
        }


def load_model_cards(path: str | Path) -> dict[str, ModelCard]:
    """Read a YAML mapping ``folder name -> model card`` (see ``examples/``).

    Raises
    ------
    InputError
        Unreadable YAML, a card without ``name``, an unknown field, or two folders with the
        same display name.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"Cannot read model cards {path}: {exc}. Check the file.") from exc
    models = raw.get("models", raw) if isinstance(raw, Mapping) else None
    if not isinstance(models, Mapping) or not models:
        raise InputError(
            f"Model cards {path} must map folder names to cards (optionally under 'models:')."
        )
    cards: dict[str, ModelCard] = {}
    for folder, card in models.items():
        where = f"model {folder!r} in {path}"
        if not isinstance(card, Mapping) or not card.get("name"):
            raise InputError(f"Card for {where} needs at least a 'name'.")
        unknown = sorted(set(card) - set(_FIELDS))
        if unknown:
            raise InputError(
                f"Unknown field(s) {', '.join(unknown)} for {where}; known: {', '.join(_FIELDS)}."
            )
        training = card.get("training_data") or ()
        if isinstance(training, str):
            training = (training,)
        cards[str(folder)] = ModelCard(
            name=str(card["name"]),
            framework=card.get("framework"),
            organisation=card.get("organisation"),
            paper=card.get("paper"),
            code=card.get("code"),
            training_data=tuple(str(t) for t in training),
            notes=card.get("notes"),
        )
    names = [c.name for c in cards.values()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Model cards {path} give the same name to several folders: {dupes}.")
    return cards
