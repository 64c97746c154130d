"""The one place where model adapters are registered.

Each adapter module listed in `ADAPTER_MODULES` provides:
    MODEL_IDS: tuple[str, ...]
    describe(model_id) -> ModelInfo        cheap: no weights loaded, no network
    offline_available(model_id) -> bool    True when it runs here without network
    load(model_id) -> ModelAdapter         loads weights (local weights dir first, then the package's download)
Heavy imports (torch, the model packages) stay inside those functions so listing models is fast.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo

ADAPTER_MODULES = (
    "cpd_core.models.ani",
    "cpd_core.models.mace",
    "cpd_core.models.so3net",
    "cpd_core.models.sevennet",
    "cpd_core.models.chgnet",
    "cpd_core.models.pyg",
)


@lru_cache(maxsize=None)
def _modules() -> dict[str, object]:
    """model id -> adapter module, for every adapter module that imports."""
    table = {}
    for name in ADAPTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # adapter not written yet
                continue
            raise
        for model_id in module.MODEL_IDS:
            table[model_id] = module
    return table


def model_ids() -> list[str]:
    return list(_modules())


def _module_for(model_id: str):
    if model_id.startswith("mace-file:"):  # any MACE .model file the user names explicitly
        return importlib.import_module("cpd_core.models.mace")
    table = _modules()
    if model_id not in table:
        raise CPDInputError(f"Unknown model '{model_id}'. Known models: {', '.join(table)}.")
    return table[model_id]


def describe_model(model_id: str) -> ModelInfo:
    return _module_for(model_id).describe(model_id)


def offline_available(model_id: str) -> bool:
    return bool(_module_for(model_id).offline_available(model_id))


def load_model(model_id: str) -> ModelAdapter:
    return _module_for(model_id).load(model_id)


def list_models() -> list[dict]:
    """Every model's info as a dict plus `offline` (runs here without network)."""
    return [dict(describe_model(m).to_dict(), offline=offline_available(m)) for m in model_ids()]
