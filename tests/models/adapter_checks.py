"""Shared checks that every model adapter must pass (used by each model's test module).

Invariance: rotating, translating and permuting a structure leaves every pooled invariant vector unchanged.
Equivariance: the L=1 (and higher) blocks of per-atom features rotate with e3nn's Wigner matrices.
Batching: a batch gives the same vectors as one structure at a time.
Description: `forward_batch` returns exactly the layers `describe()` declares, one float32 row per atom.
Bad input: an element the model does not know and an empty structure give clear errors, also inside a batch.
Also the pieces every model's test module shares: loading an adapter offline (failing loudly when its weights are
missing) and energies from the package's own ASE calculator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3
from scipy.spatial.transform import Rotation

from cpd_core.representations.extract import extract_invariants, per_atom_features


def offline_adapter(module, model_id: str, missing: str):
    """`module.load(model_id)`; FAILS (never skips) with `missing` when the weights are not available offline."""
    if not module.offline_available(model_id):
        pytest.fail(missing)
    return module.load(model_id)


def calculator_energies(calc, structures) -> list[float]:
    """Potential energies from a package's own ASE calculator, one structure at a time."""
    energies = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
    return energies


def rotation_matrix(seed: int = 0) -> np.ndarray:
    return Rotation.random(random_state=seed).as_matrix()


def transformed_copies(atoms, seed: int = 0):
    """(rotated, translated, permuted) copies; a periodic cell is rotated with the atoms."""
    R = rotation_matrix(seed)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ R.T
    if atoms.pbc.any():
        rotated.cell = atoms.cell[:] @ R.T
    translated = atoms.copy()
    translated.positions = atoms.positions + np.array([1.7, -2.3, 0.9])
    perm = np.random.default_rng(seed).permutation(len(atoms))
    permuted = atoms[perm]
    return rotated, translated, permuted


def assert_close_arrays(a: dict, b: dict, rtol: float, atol: float, what: str):
    assert a.keys() == b.keys()
    for key in a:
        scale = max(float(np.abs(a[key]).max()), 1.0)
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol * scale, err_msg=f"{what}: {key}")


def check_invariance(adapter, atoms, rtol=1e-3, atol=1e-4, seed=0):
    reference = extract_invariants(adapter, [atoms])
    for name, copy in zip(("rotation", "translation", "permutation"), transformed_copies(atoms, seed)):
        assert_close_arrays(reference, extract_invariants(adapter, [copy]), rtol, atol, name)
    return reference


def check_equivariance(adapter, atoms, layer: str, atol=1e-3, seed=1):
    """Per-atom features of the rotated structure equal D(R) applied to the original's, for every irrep."""
    R = rotation_matrix(seed)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ R.T
    if atoms.pbc.any():
        rotated.cell = atoms.cell[:] @ R.T
    irreps = o3.Irreps(adapter.info.layers[layer])
    D = irreps.D_from_matrix(torch.tensor(R, dtype=torch.float64)).numpy()
    f = per_atom_features(adapter, atoms)[layer].astype(np.float64)
    f_rot = per_atom_features(adapter, rotated)[layer].astype(np.float64)
    scale = max(np.abs(f).max(), 1.0)
    np.testing.assert_allclose(f_rot, f @ D.T, atol=atol * scale, err_msg=f"{adapter.info.id} {layer}")


def check_batched_matches_single(adapter, atoms_list, rtol=1e-3, atol=1e-4):
    batched = extract_invariants(adapter, atoms_list, batch_size=len(atoms_list))
    single = [extract_invariants(adapter, [a], batch_size=1) for a in atoms_list]
    stacked = {k: np.concatenate([s[k] for s in single]) for k in batched}
    assert_close_arrays(batched, stacked, rtol, atol, "batched vs single")


def check_output_matches_description(adapter, info, structures):
    """forward_batch gives the declared layers, in order, each (atoms, irreps dim), float32 and finite."""
    out = adapter.forward_batch(structures)
    assert list(out) == list(info.layers)
    n_atoms = sum(len(a) for a in structures)
    for name, irreps in info.layers.items():
        assert out[name].shape == (n_atoms, o3.Irreps(irreps).dim), name
        assert out[name].dtype == np.float32
        assert np.isfinite(out[name]).all(), name
    return out


def check_rejects_bad_structures(adapter, molecule, foreign, symbol: str):
    """A batch holding `foreign` (an element the model does not support, `symbol`) or an empty structure next to
    a valid `molecule` raises CPDInputError naming the problem, and so does extraction of `foreign` alone."""
    import pytest
    from ase import Atoms

    from cpd_core.errors import CPDInputError

    with pytest.raises(CPDInputError, match=symbol):
        adapter.forward_batch([molecule, foreign])
    with pytest.raises(CPDInputError, match="does not support"):
        extract_invariants(adapter, [foreign])
    with pytest.raises(CPDInputError, match="no atoms"):
        adapter.forward_batch([molecule, Atoms()])
