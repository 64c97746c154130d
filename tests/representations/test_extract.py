"""Pooling and batching, model-independent: hand-computed pools and the input order of rows."""

from __future__ import annotations

import ase
import numpy as np
import pytest

from cpd_core.errors import CPDInputError
from cpd_core.representations.extract import extract_invariants
from cpd_core.representations.invariants import pool_invariants
from cpd_core.models.base import ModelAdapter, ModelInfo

IRREPS = "2x0e+3x1o"


def test_pool_invariants_matches_a_loop_over_structures():
    rng = np.random.default_rng(0)
    n_atoms = np.array([3, 1, 5])
    features = rng.normal(size=(n_atoms.sum(), 2 + 3 * 3)).astype(np.float32)
    pooled = pool_invariants(features, IRREPS, n_atoms, "layer")
    start = 0
    for s, n in enumerate(n_atoms):
        rows = features[start:start + n].astype(np.float64)
        start += n
        scalars, vectors = rows[:, :2], rows[:, 2:].reshape(n, 3, 3)  # e3nn layout: mul-major, then components
        np.testing.assert_allclose(pooled["layer/L0/sum"][s], scalars.sum(0), rtol=1e-6)
        np.testing.assert_allclose(pooled["layer/L0/mean"][s], scalars.mean(0), rtol=1e-6)
        np.testing.assert_allclose(pooled["layer/L1/mean/atom_norm"][s], np.linalg.norm(vectors, axis=2).mean(0),
                                   rtol=1e-6)
        np.testing.assert_allclose(pooled["layer/L1/sum/pooled_norm"][s], np.linalg.norm(vectors.sum(0), axis=1),
                                   rtol=1e-6)
        np.testing.assert_allclose(pooled["layer/L1/mean/pooled_norm"][s], np.linalg.norm(vectors.mean(0), axis=1),
                                   rtol=1e-6)
    assert all(v.dtype == np.float32 and v.shape[0] == 3 for v in pooled.values())


def test_pooling_rejects_empty_structures_and_mismatched_rows():
    with pytest.raises(CPDInputError, match="no atoms"):
        pool_invariants(np.zeros((2, 11)), IRREPS, np.array([2, 0]), "layer")
    with pytest.raises(CPDInputError, match="atom rows"):
        pool_invariants(np.zeros((3, 11)), IRREPS, np.array([2, 2]), "layer")


class RecordingAdapter(ModelAdapter):
    """Per-atom feature = the structure's first x coordinate (its id), so rows can be traced; records batches."""

    def __init__(self):
        self.info = ModelInfo(id="recording", family="handcrafted descriptor", elements=("H",), cutoff=1.0,
                              layers={"id": "1x0e"}, weights_source="none")
        self.batches: list[list[int]] = []

    def forward_batch(self, atoms_list):
        self.batches.append([len(a) for a in atoms_list])
        return {"id": np.concatenate([np.full((len(a), 1), a.positions[0, 0]) for a in atoms_list])}


def test_structures_are_batched_by_size_and_rows_come_back_in_input_order():
    sizes = [5, 1, 4, 2, 5, 3, 1]
    structures = [ase.Atoms(f"H{n}", positions=[[float(i), 0, k] for k in range(n)]) for i, n in enumerate(sizes)]
    adapter = RecordingAdapter()
    out = extract_invariants(adapter, structures, batch_size=3)
    np.testing.assert_array_equal(out["id/L0/mean"][:, 0], np.arange(len(sizes)))
    assert adapter.batches == [[1, 1, 2], [3, 4, 5], [5]]


def test_keep_freed_memory_applies_once_and_can_be_turned_off(monkeypatch):
    from cpd_core.representations import memory

    monkeypatch.setattr(memory, "_applied", None)
    calls = []
    monkeypatch.setattr(memory, "_mallopt", lambda: calls.append(1) or True)
    monkeypatch.setenv("CPD_KEEP_FREED_MEMORY", "0")
    assert memory.keep_freed_memory() is False and calls == []
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.delenv("CPD_KEEP_FREED_MEMORY")
    assert memory.keep_freed_memory() is True and memory.keep_freed_memory() is True
    assert calls == [1]


def test_glibc_accepts_the_allocator_setting():
    """This project runs on Linux with glibc (CI included): mallopt must accept both values."""
    from cpd_core.representations import memory

    assert memory._mallopt() is True
