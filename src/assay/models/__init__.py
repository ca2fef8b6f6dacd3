"""Models: model cards, and runners that produce predictions by running a model per case."""

from assay.models._card import (
    ModelCard,
    load_model_card,
    load_model_cards,
    model_card_from_mapping,
)
from assay.models._runner import InferenceRecord, InferenceTask, RunnerSpec, run_case
from assay.models._sandbox import Sandbox

__all__ = [
    "InferenceRecord",
    "InferenceTask",
    "ModelCard",
    "RunnerSpec",
    "Sandbox",
    "load_model_card",
    "load_model_cards",
    "model_card_from_mapping",
    "run_case",
]
