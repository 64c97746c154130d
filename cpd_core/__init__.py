"""CPD Explorer core: data, model representations, Composition Projection Decomposition and probes.

Data flows one way through subpackages named after the stages:

    data (structures, targets, composition) -> models (adapters: per-layer, per-irrep features)
    -> representations (invariants, pooling, cache) -> engine (composition projection, probes, CPD scores)
    -> study (tidy tables, experiments, report) -> dashboard pages and the command line.

`training` trains the zoo's models (their checkpoints become adapters). The names users call most are importable
from here (`from cpd_core import cpd_scores, CompositionProjector, RidgeProbe, load_model, load_dataset`); they
are imported on first use, so `import cpd_core` stays cheap.

Stage: the package root (the stages' public names).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "CPDInputError": "cpd_core.errors",
    "StructureSet": "cpd_core.data",
    "composition_matrix": "cpd_core.data",
    "list_datasets": "cpd_core.data",
    "load_dataset": "cpd_core.data",
    "ModelAdapter": "cpd_core.models",
    "ModelInfo": "cpd_core.models",
    "describe_model": "cpd_core.models",
    "list_models": "cpd_core.models",
    "load_model": "cpd_core.models",
    "model_ids": "cpd_core.models",
    "extract_invariants": "cpd_core.representations.extract",
    "cached_invariants": "cpd_core.representations.cache",
    "CompositionProjector": "cpd_core.engine.projection",
    "RidgeProbe": "cpd_core.engine.probes",
    "make_probe": "cpd_core.engine.probes",
    "cpd_scores": "cpd_core.engine.scores",
    "cpd_grid": "cpd_core.engine.scores",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """Import a public name from its stage module on first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'cpd_core' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
