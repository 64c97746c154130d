"""Per-structure feature matrices of a model, organised by (layer, channel), from the cache.

A channel is `L0`, `L1`, ... (one irrep order; L>0 made invariant by the chosen method) or `all` (every
channel of the layer side by side). Layers keep the model's depth order.
"""

from __future__ import annotations

import numpy as np

from cpd_core.cache import cached_invariants
from cpd_core.data.structures import StructureSet
from cpd_core.invariants import INVARIANTS, POOLINGS, channels_of, feature_key
from cpd_core.errors import CPDInputError
from cpd_core.models import describe_model


def model_features(model_id: str, structures: StructureSet, pooling: str = "mean",
                   invariant: str = "pooled_norm", progress=None,
                   include_all: bool = True) -> dict[tuple[str, str], np.ndarray]:
    """{(layer, channel): (n, d) float64} for one model; `channel` is 'L<l>' or 'all'."""
    if pooling not in POOLINGS:
        raise CPDInputError(f"Unknown pooling '{pooling}'; choose one of {POOLINGS}.")
    if invariant not in INVARIANTS:
        raise CPDInputError(f"Unknown invariant '{invariant}'; choose one of {INVARIANTS}.")
    info = describe_model(model_id)
    arrays = cached_invariants(model_id, structures, progress=progress)
    out: dict[tuple[str, str], np.ndarray] = {}
    for layer, irreps in info.layers.items():
        blocks = []
        for l in channels_of(irreps):
            H = arrays[feature_key(layer, l, pooling, invariant)].astype(np.float64)
            out[(layer, f"L{l}")] = H
            blocks.append(H)
        if include_all and len(blocks) > 1:
            out[(layer, "all")] = np.hstack(blocks)
        elif include_all:
            out[(layer, "all")] = blocks[0]
    return out


def layer_depths(model_id: str) -> dict[str, int]:
    """Layer name -> depth (1 = first layer) in the model's order."""
    return {layer: i + 1 for i, layer in enumerate(describe_model(model_id).layers)}
