"""SO3Net adapter (matgl): the pretrained SO3Net-ANI-1x-Subset-PES from the local weights folder (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3

from adapter_checks import (
    check_batched_matches_single,
    check_equivariance,
    check_invariance,
    check_output_matches_description,
    offline_adapter,
)
from cpd_core.data.qm9 import load_qm9
from cpd_core.errors import CPDInputError
from cpd_core.models import so3net

MODEL_ID = "so3net-ani1x"


@pytest.fixture(scope="module")
def adapter():
    return offline_adapter(so3net, MODEL_ID,
                           "matgl/SO3Net-ANI-1x-Subset-PES is missing from the local weights folder (CPD_WEIGHTS_DIR)")


@pytest.fixture(scope="module")
def molecules():
    hcno = [a for a in load_qm9(20, seed=5).to_atoms_list() if set(a.get_chemical_symbols()) <= set("HCNO")]
    return hcno[:4]


def test_describe_matches_loaded_model(adapter, molecules):
    info = so3net.describe(MODEL_ID)
    assert info.family == "tensor-product equivariant"
    assert info.elements == ("H", "C", "N", "O") == adapter.info.elements
    assert info.layers == adapter.info.layers == {f"gc_{i}": "64x0e+64x1o+64x2e" for i in (1, 2, 3)}
    assert info.cutoff == pytest.approx(adapter.info.cutoff)
    assert info.weights_hash
    check_output_matches_description(adapter, info, molecules)


def test_basis_change_is_orthogonal_and_preserves_norms(adapter, molecules):
    for O in adapter._basis:
        np.testing.assert_allclose(O.double() @ O.double().T, np.eye(O.shape[0]), atol=1e-6)
    features, _ = adapter._run(molecules[:1])
    x = features["gc_2"]
    y = adapter.to_e3nn(x)
    irreps = o3.Irreps(adapter.info.layers["gc_2"])
    for (mul, ir), sl, comp in zip(irreps, irreps.slices(), ((0, 1), (1, 4), (4, 9))):
        ours = y[:, sl].reshape(len(x), mul, ir.dim).norm(dim=2)
        theirs = x[:, comp[0]:comp[1], :].norm(dim=1)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_invariance(adapter, molecules):
    check_invariance(adapter, molecules[0])


@pytest.mark.parametrize("layer", ["gc_1", "gc_3"])
def test_equivariance(adapter, molecules, layer):
    check_equivariance(adapter, molecules[1], layer)


def test_batched_matches_single(adapter, molecules):
    check_batched_matches_single(adapter, molecules)


def test_readout_on_last_state_reproduces_energy(adapter, molecules):
    """Bookkeeping: matgl's own readout on the captured last state (L=0 block of gc_3) gives the potential's
    energies, as computed by matgl's ASE calculator one molecule at a time."""
    states = adapter.forward_batch(molecules)
    _, graph = adapter._run(molecules)
    pot = adapter.potential
    scalars = o3.Irreps(adapter.info.layers["gc_3"]).slices()[0]
    with torch.no_grad():
        atomic = pot.model.final_layer(torch.from_numpy(states["gc_3"][:, scalars])).squeeze(-1).double()
        starts = np.cumsum([0] + [len(a) for a in molecules[:-1]])
        per_molecule = np.add.reduceat(atomic.numpy(), starts)
        energies = float(pot.data_std) * per_molecule + float(pot.data_mean)
        energies = energies + pot.element_refs(graph).double().numpy()
    calc = adapter.ase_calculator()
    reference = []
    for atoms in molecules:
        atoms = atoms.copy()
        atoms.calc = calc
        reference.append(atoms.get_potential_energy())
    np.testing.assert_allclose(energies, reference, rtol=1e-6, atol=1e-3)


def test_unsupported_element(adapter, molecules):
    fluorinated = Atoms("CH3F", positions=[[0, 0, 0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6], [0.6, -0.6, -0.6],
                                           [-0.8, 0.8, -0.8]])
    with pytest.raises(CPDInputError, match="element\\(s\\) F"):
        adapter.forward_batch([molecules[0], fluorinated])


def test_empty_structure(adapter):
    with pytest.raises(CPDInputError, match="no atoms"):
        adapter.forward_batch([Atoms()])


def test_dense_convolution_matches_matgls_own_forward(adapter, molecules):
    """The reordered neighbour sum used for extraction gives matgl's features (molecules of different sizes, so
    the per-molecule padding is exercised), and matgl's own convolution is restored afterwards."""
    mixed = molecules + [Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                                [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])]
    dense = adapter.forward_batch(mixed, dense=True)
    reference = adapter.forward_batch(mixed, dense=False)
    for name in reference:
        np.testing.assert_allclose(dense[name], reference[name], atol=2e-5 * np.abs(reference[name]).max())
    assert all("forward" not in conv.__dict__ for conv in adapter.model.so3convs)


def test_runs_bound_the_pair_tensors(adapter, molecules, monkeypatch):
    """A batch whose pair tensors would exceed MAX_PAIRS cells runs in consecutive groups that fit (a structure
    too large for the bound runs alone), with the same features in the same order as one run."""
    whole = adapter.forward_batch(molecules)
    largest = max(len(m) for m in molecules)
    monkeypatch.setattr(adapter, "MAX_PAIRS", 2 * largest ** 2)  # at most two molecules per run
    runs = adapter.runs(molecules)
    assert len(runs) >= 2 and [a for run in runs for a in run] == list(molecules)
    assert all(len(run) * max(map(len, run)) ** 2 <= adapter.MAX_PAIRS for run in runs)
    split = adapter.forward_batch(molecules)
    for name in whole:
        np.testing.assert_allclose(split[name], whole[name], atol=1e-5 * np.abs(whole[name]).max())
    monkeypatch.setattr(adapter, "MAX_PAIRS", 1)
    assert [len(run) for run in adapter.runs(molecules)] == [1] * len(molecules)


def test_molecule_graph_matches_matgls_converter(adapter, molecules, monkeypatch):
    """The whole-batch graph of molecules has the edges of matgl's converter and gives the same features."""
    from torch_geometric.data import Batch

    ours = adapter.molecule_graph(molecules)
    theirs = Batch.from_data_list([adapter._graph(a) for a in molecules])
    assert sorted(map(tuple, ours.edge_index.T.tolist())) == sorted(map(tuple, theirs.edge_index.T.tolist()))
    assert torch.equal(ours.node_type.long(), theirs.node_type.long())
    features = adapter.forward_batch(molecules)
    monkeypatch.setattr(adapter, "_batch", lambda atoms_list: Batch.from_data_list([adapter._graph(a)
                                                                                   for a in atoms_list]))
    reference = adapter.forward_batch(molecules)
    for name in reference:
        np.testing.assert_allclose(features[name], reference[name], atol=1e-5 * np.abs(reference[name]).max())


def test_periodic_images_keep_matgls_convolution(adapter):
    """In a small periodic box an atom pair is joined by several edges (images); the dense pair tensors hold one
    edge per pair, so such batches must run matgl's own convolution, and give its features."""
    box = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                                  [0.63, -0.63, -0.63]], cell=[4.0, 4.0, 4.0], pbc=True)
    dense = adapter.forward_batch([box], dense=True)
    reference = adapter.forward_batch([box], dense=False)
    for name in reference:
        np.testing.assert_allclose(dense[name], reference[name], rtol=1e-6, atol=1e-6)
