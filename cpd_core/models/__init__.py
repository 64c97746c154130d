"""Model adapters: per-layer, per-irrep representations of trained atomistic models (see `base` and `registry`).

Stage: models (stage 2 of 5).
"""

from cpd_core.models.base import FAMILIES, ModelAdapter, ModelInfo
from cpd_core.models.registry import describe_model, list_models, load_model, model_ids, offline_available

__all__ = ["FAMILIES", "ModelAdapter", "ModelInfo", "describe_model", "list_models", "load_model", "model_ids",
           "offline_available"]
