"""Model cards: who made a model, how it was trained, where its paper and code are."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.errors import InputError
from assay.models._runner import RunnerSpec

_FIELDS = (
    "name", "framework", "organisation", "paper", "code", "training_data", "notes", "version",
    "predictions", "runner", "prediction_layout", "prediction_labels", "min_speed_cm3_s",
    "spot_check", "probabilities",
)  # fmt: skip


@dataclass(frozen=True)
class ModelCard:
    """What a benchmark states about one model.

    ``training_data`` lists dataset names (and optionally ``dataset:case_id`` entries) used to
    train the model, for contamination checks. For ``assay run`` a card gives either
    ``predictions`` (a folder of computed predictions) or a ``runner``
    (:class:`~assay.models.RunnerSpec`: a command run per case), the predictions' layout
    and labels when they differ from the reference, and an optional minimum inference speed
    (cm³/s) below which the model is flagged slow; ``spot_check: false`` lets a model that
    is legitimately weak skip the spot check. For tumour detection, ``probabilities`` is a
    folder of per-voxel probability maps (``CASE/STRUCTURE.nii.gz``). Unknown fields are
    None, never guessed.
    """

    name: str
    framework: str | None = None
    organisation: str | None = None
    paper: str | None = None
    code: str | None = None
    training_data: tuple[str, ...] = field(default_factory=tuple)
    notes: str | None = None
    version: str | None = None
    predictions: Path | None = None
    runner: RunnerSpec | None = None
    prediction_layout: str | None = None
    prediction_labels: Path | None = None
    min_speed_cm3_s: float | None = None
    spot_check: bool = True
    probabilities: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        runner = None
        if self.runner is not None:
            runner = {"command": self.runner.command, "timeout_s": self.runner.timeout_s,
                      "env": dict(self.runner.env), "cwd": self.runner.cwd,
                      "batch_size": self.runner.batch_size,
                      "input_name": self.runner.input_name,
                      "workers": self.runner.workers}  # fmt: skip
        return {
            "name": self.name,
            "framework": self.framework,
            "organisation": self.organisation,
            "paper": self.paper,
            "code": self.code,
            "training_data": list(self.training_data),
            "notes": self.notes,
            "version": self.version,
            "predictions": None if self.predictions is None else str(self.predictions),
            "runner": runner,
            "prediction_layout": self.prediction_layout,
            "prediction_labels": (
                None if self.prediction_labels is None else str(self.prediction_labels)
            ),
            "min_speed_cm3_s": self.min_speed_cm3_s,
            "spot_check": self.spot_check,
            **({} if self.probabilities is None else {"probabilities": str(self.probabilities)}),
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
        cards[str(folder)] = model_card_from_mapping(card, where=where, base=path.parent)
    names = [c.name for c in cards.values()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Model cards {path} give the same name to several folders: {dupes}.")
    return cards


def load_model_card(path: str | Path) -> ModelCard:
    """Read one model card from a YAML file (``name`` required)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"Cannot read model card {path}: {exc}. Check the file.") from exc
    if not isinstance(raw, Mapping):
        raise InputError(f"Model card {path} must be a YAML mapping with at least a 'name'.")
    return model_card_from_mapping(raw, where=f"model card {path}", base=path.parent)


def model_card_from_mapping(card: Mapping[str, Any], *, where: str, base: Path) -> ModelCard:
    """A :class:`ModelCard` from a mapping; relative paths are relative to ``base``.

    Raises
    ------
    InputError
        No ``name``, an unknown field, a ``predictions`` folder that does not exist, or an
        invalid runner; each message names ``where``, the field and the fix.
    """
    if not card.get("name"):
        raise InputError(f"Card for {where} needs at least a 'name'.")
    unknown = sorted(set(map(str, card)) - set(_FIELDS))
    if unknown:
        raise InputError(
            f"Unknown field(s) {', '.join(unknown)} for {where}; known: {', '.join(_FIELDS)}."
        )
    training = card.get("training_data") or ()
    if isinstance(training, str):
        training = (training,)
    predictions = labels = None
    if card.get("predictions") is not None:
        predictions = (base / str(card["predictions"])).resolve()
        if not predictions.is_dir():
            raise InputError(
                f"{where}: predictions folder {predictions} does not exist; fix 'predictions' "
                "(relative to the card file) or give a 'runner' instead."
            )
    if card.get("prediction_labels") is not None:
        labels = (base / str(card["prediction_labels"])).resolve()
    probabilities = None
    if card.get("probabilities") is not None:
        probabilities = (base / str(card["probabilities"])).resolve()
        if not probabilities.is_dir():
            raise InputError(
                f"{where}: probabilities folder {probabilities} does not exist; fix "
                "'probabilities' (relative to the card file)."
            )
    runner = None
    if card.get("runner") is not None:
        if not isinstance(card["runner"], Mapping):
            raise InputError(f"{where}: 'runner' must be a mapping with at least a 'command'.")
        raw_runner = {"cwd": ".", **card["runner"]}  # default: the card's own folder
        runner = RunnerSpec.from_mapping(raw_runner, where=f"{where}, runner", base=base)
        if runner.cwd is not None and not Path(runner.cwd).is_dir():
            raise InputError(
                f"{where}: runner.cwd {runner.cwd} is not a folder; fix it (relative to the "
                "card file)."
            )
    speed = card.get("min_speed_cm3_s")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, int | float)):
        raise InputError(f"{where}: min_speed_cm3_s must be a number (cm³/s), got {speed!r}.")
    if card.get("prediction_layout") not in (None, "structures", "labelmap"):
        raise InputError(
            f"{where}: prediction_layout {card['prediction_layout']!r} is not 'structures' or "
            "'labelmap'."
        )
    return ModelCard(
        name=str(card["name"]),
        framework=card.get("framework"),
        organisation=card.get("organisation"),
        paper=card.get("paper"),
        code=card.get("code"),
        training_data=tuple(str(t) for t in training),
        notes=card.get("notes"),
        version=None if card.get("version") is None else str(card["version"]),
        predictions=predictions,
        runner=runner,
        prediction_layout=card.get("prediction_layout"),
        prediction_labels=labels,
        min_speed_cm3_s=None if speed is None else float(speed),
        spot_check=_flag(card.get("spot_check", True), where, "spot_check"),
        probabilities=probabilities,
    )


def _flag(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{where}: {key} must be true or false, got {value!r}.")
    return value
