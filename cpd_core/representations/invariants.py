"""Per-structure, rotation-invariant vectors from per-atom equivariant features, one block per L.

Irreps are split with e3nn (`Irreps.slices()`), never by hand-computed offsets. L=0 channels are pooled over
atoms (mean or sum). Raw L>0 components are never averaged into a feature; two invariants are offered:

- `atom_norm`:   norm of each channel per atom, then pooled (behaves like an extra L=0 channel);
- `pooled_norm`: each channel's (2l+1)-vector pooled over atoms first, then its norm (a net, dipole-like
                 quantity: rotating the structure rotates the pooled vector, its norm does not change).

Atoms are given as a flat array with per-structure counts, so padding never enters a pool.

Stage: representations (stage 3 of 5).
"""

from __future__ import annotations

import numpy as np
from e3nn import o3

from cpd_core.errors import CPDInputError

POOLINGS = ("mean", "sum")
INVARIANTS = ("atom_norm", "pooled_norm")


def feature_key(layer: str, l: int, pooling: str, invariant: str | None = None) -> str:
    """Name of one per-structure array: `<layer>/L<l>/<pooling>` (+ `/<invariant>` for l > 0)."""
    base = f"{layer}/L{l}/{pooling}"
    return base if l == 0 else f"{base}/{invariant}"


def split_by_l(features: np.ndarray, irreps: str) -> dict[int, np.ndarray]:
    """Per-atom features (atoms, dim) -> {l: (atoms, mul_l, 2l+1)}, grouping every irrep of the same l."""
    ir = o3.Irreps(irreps)
    if features.shape[1] != ir.dim:
        raise CPDInputError(f"Features have {features.shape[1]} columns but irreps {irreps} need {ir.dim}.")
    blocks: dict[int, list[np.ndarray]] = {}
    for (mul, irrep), sl in zip(ir, ir.slices()):
        block = features[:, sl].reshape(len(features), mul, irrep.dim)
        blocks.setdefault(irrep.l, []).append(block)
    return {l: parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1) for l, parts in sorted(blocks.items())}


def _pooling_matrix(n_atoms: np.ndarray):
    """Sparse (structures x atoms) matrix of ones: its product with per-atom values sums them per structure.

    Several times faster than `np.add.reduceat` with a float64 accumulator on wide layers, and the same sums."""
    from scipy import sparse

    if (n_atoms <= 0).any():
        raise CPDInputError("Cannot pool a structure with no atoms.")
    owner = np.repeat(np.arange(len(n_atoms)), n_atoms)
    return sparse.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))),
                             shape=(len(n_atoms), len(owner)))


def _segment_sums(values: np.ndarray, pool, dtype=np.float64) -> np.ndarray:
    """Sum over each structure's atoms, accumulated in `dtype`; values (total_atoms, ...) -> (n_structures, ...)."""
    flat = np.asarray(values, dtype=dtype).reshape(len(values), -1)
    return np.asarray(pool.astype(dtype, copy=False) @ flat).reshape(pool.shape[0], *values.shape[1:])


def pool_invariants(features: np.ndarray, irreps: str, n_atoms: np.ndarray, layer: str) -> dict[str, np.ndarray]:
    """Every pooling x invariant combination for one layer: {feature_key: (n_structures, mul_l)} float32.

    Sums are taken once; a mean is the sum divided by the atom count (for pooled_norm, the norm of the mean
    vector is the norm of the sum over the count). L=0 sums accumulate in float32 like the features themselves
    (a float64 copy of a wide layer cost more than the sum); L>0 sums, whose pooled vectors can cancel, in
    float64."""
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    if features.shape[0] != n_atoms.sum():
        raise CPDInputError(f"{features.shape[0]} atom rows but the structures hold {n_atoms.sum()} atoms.")
    scale = {"sum": np.ones((len(n_atoms), 1)), "mean": 1.0 / n_atoms[:, None]}
    pool = _pooling_matrix(n_atoms)
    out: dict[str, np.ndarray] = {}
    for l, block in split_by_l(np.asarray(features), irreps).items():
        if l == 0:
            sums = {None: _segment_sums(block[:, :, 0], pool, np.float32)}
        else:
            sums = {"atom_norm": _segment_sums(np.linalg.norm(block.astype(np.float64), axis=2), pool),
                    "pooled_norm": np.linalg.norm(_segment_sums(block, pool), axis=2)}
        for pooling in POOLINGS:
            for invariant, total in sums.items():
                out[feature_key(layer, l, pooling, invariant)] = (total * scale[pooling]).astype(np.float32)
    return out


def atom_invariants(features: np.ndarray, irreps: str) -> dict[int, np.ndarray]:
    """Per-atom invariants before pooling: {l: (atoms, mul_l)}; L=0 channels as they are, L>0 channels' norms."""
    out = {}
    for l, block in split_by_l(np.asarray(features), irreps).items():
        out[l] = block[:, :, 0] if l == 0 else np.linalg.norm(block.astype(np.float64), axis=2)
    return {l: v.astype(np.float32) for l, v in out.items()}


def channels_of(irreps: str) -> list[int]:
    """The L values present in an irreps string, sorted."""
    return sorted({ir.l for _, ir in o3.Irreps(irreps)})
