"""Batched extraction: structures -> per-structure invariant vectors per (layer, L, pooling, invariant).

`extract_invariants` runs an adapter over batches with a progress callback and pools each batch as it comes,
so memory stays bounded. `cpd_core.representations.cache.cached_invariants` wraps it with the on-disk cache.

Stage: representations (stage 3 of 5).
"""

from __future__ import annotations

from typing import Callable, Sequence

import ase
import numpy as np

from cpd_core.representations.invariants import pool_invariants
from cpd_core.representations.memory import keep_freed_memory
from cpd_core.models.base import ModelAdapter

Progress = Callable[[int, int], None]  # (structures done, total)


def extract_invariants(adapter: ModelAdapter, atoms_list: Sequence[ase.Atoms], batch_size: int | None = None,
                       progress: Progress | None = None) -> dict[str, np.ndarray]:
    """{feature_key: (n_structures, d) float32} for every layer of the adapter, rows in input order.

    Structures go through the model in order of size, so that a batch holds structures of similar size (adapters
    that pad a batch to its largest structure, ANI and SO3Net, then do little work on padding); the rows are put
    back in input order at the end. Freed tensors are kept for reuse
    (`cpd_core.representations.memory.keep_freed_memory`)."""
    keep_freed_memory()
    atoms_list = list(atoms_list)
    adapter.check_structures(atoms_list)
    batch_size = batch_size or adapter.default_batch_size()
    by_size = np.argsort([len(a) for a in atoms_list], kind="stable")
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(atoms_list), batch_size):
        batch = [atoms_list[i] for i in by_size[start:start + batch_size]]
        per_atom = adapter.forward_batch(batch)
        n_atoms = np.array([len(a) for a in batch])
        for layer, irreps in adapter.info.layers.items():
            for key, value in pool_invariants(per_atom[layer], irreps, n_atoms, layer).items():
                parts.setdefault(key, []).append(value)
        if progress is not None:
            progress(min(start + batch_size, len(atoms_list)), len(atoms_list))
    in_input_order = np.argsort(by_size)
    return {key: np.concatenate(values)[in_input_order] for key, values in parts.items()}


def per_atom_features(adapter: ModelAdapter, atoms: ase.Atoms) -> dict[str, np.ndarray]:
    """Per-atom layer states of one structure (for equivariance checks and the 3D viewer)."""
    adapter.check_structures([atoms])
    return adapter.forward_batch([atoms])


def extract_atom_invariants(adapter: ModelAdapter, atoms_list: Sequence[ase.Atoms], batch_size: int | None = None,
                            progress: Progress | None = None) -> dict[tuple[str, int], np.ndarray]:
    """{(layer, l): (total atoms, mul_l) float32} per-atom invariants (no pooling), atoms in input order
    (structure by structure). Not cached: per-atom arrays are as large as the structures."""
    from cpd_core.representations.invariants import atom_invariants

    keep_freed_memory()
    atoms_list = list(atoms_list)
    adapter.check_structures(atoms_list)
    batch_size = batch_size or adapter.default_batch_size()
    parts: dict[tuple[str, int], list[np.ndarray]] = {}
    for start in range(0, len(atoms_list), batch_size):
        per_atom = adapter.forward_batch(atoms_list[start:start + batch_size])
        for layer, irreps in adapter.info.layers.items():
            for l, values in atom_invariants(per_atom[layer], irreps).items():
                parts.setdefault((layer, l), []).append(values)
        if progress is not None:
            progress(min(start + batch_size, len(atoms_list)), len(atoms_list))
    return {key: np.concatenate(values) for key, values in parts.items()}
