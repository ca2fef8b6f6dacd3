"""Models: model cards (and, later, runners that produce predictions)."""

from assay.models._card import ModelCard, load_model_cards

__all__ = ["ModelCard", "load_model_cards"]
