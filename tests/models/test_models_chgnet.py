"""CHGNet 0.3.0 adapter (checkpoint from the `chgnet` wheel, no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from adapter_checks import (
    calculator_energies,
    check_batched_matches_single,
    check_equivariance,
    check_invariance,
    check_output_matches_description,
    check_rejects_bad_structures,
    offline_adapter,
)
from cpd_core.data.qm9 import load_qm9
from cpd_core.errors import CPDInputError
from cpd_core.models import chgnet as chgnet_adapter
from cpd_core.models import registry

MODEL_ID = "chgnet-0.3.0"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def adapter():
    return offline_adapter(chgnet_adapter, MODEL_ID, "CHGNet 0.3.0 checkpoint missing from the chgnet wheel")


@pytest.fixture(scope="module")
def molecules():
    return load_qm9(4, seed=5).to_atoms_list()


def test_registry_and_describe():
    assert MODEL_ID in registry.model_ids()
    assert registry.offline_available(MODEL_ID)
    info = registry.describe_model(MODEL_ID)
    assert info.family == "learned invariant"
    assert info.input == "any"
    assert info.cutoff == 6.0
    assert list(info.layers) == ["atom_conv_1", "atom_conv_2", "atom_conv_3", "atom_conv_4", "readout_input"]
    assert set(info.layers.values()) == {"64x0e"}
    assert info.weights_hash and "pretrained" in info.weights_source
    assert info.elements[0] == "H" and info.elements[-1] == "Pu" and len(info.elements) == 94
    assert "box" in info.notes


def test_describe_matches_loaded_model(adapter, molecules, crystals):
    info = chgnet_adapter.describe(MODEL_ID)
    model = adapter.model
    assert model.atom_embedding.embedding.num_embeddings == len(info.elements)  # Z = 1..94
    assert model.graph_converter.atom_graph_cutoff == info.cutoff
    assert len(model.atom_conv_layers) == 4 and model.atom_conv_layers[0].mlp_out.layers[-1].out_features == 64
    structures = molecules[:2] + crystals[:1]
    assert set(info.layers.values()) == {"64x0e"}
    out = check_output_matches_description(adapter, info, structures)
    # states, not increments: consecutive layers differ, and readout_input is the LayerNorm of atom_conv_4
    assert not np.allclose(out["atom_conv_3"], out["atom_conv_4"])
    normed = model.readout_norm(torch.from_numpy(out["atom_conv_4"])).detach().numpy()
    np.testing.assert_allclose(out["readout_input"], normed, atol=1e-5)


def test_states_match_chgnet_outputs(adapter, molecules, crystals):
    """CHGNet's own predict_graph returns the atom features after atom_conv_3 (`atom_fea`) and the pooled crystal
    feature (`crystal_fea`): they equal our atom_conv_3 and readout_input summed over each structure's atoms."""
    structures = molecules[:2] + crystals
    ours = adapter.forward_batch(structures)
    graphs = adapter.graphs(structures)
    preds = adapter.model.predict_graph(graphs, task="e", return_atom_feas=True, return_crystal_feas=True,
                                        batch_size=len(graphs))
    starts = np.concatenate([[0], np.cumsum([len(a) for a in structures])])
    scale = np.abs(ours["atom_conv_3"]).max()
    for k, pred in enumerate(preds):
        sl = slice(starts[k], starts[k + 1])
        # float32 noise only: molecules take the numpy union graph here, the boxed pymatgen graph in CHGNet
        np.testing.assert_allclose(ours["atom_conv_3"][sl], pred["atom_fea"], atol=2e-5 * scale, rtol=0)
        np.testing.assert_allclose(ours["readout_input"][sl].sum(0), pred["crystal_fea"], rtol=1e-5, atol=1e-4)


def test_molecule_union_graph_equals_chgnet_converter_graph(adapter, molecules):
    """The numpy-built graph of a molecule has exactly the directed edges, undirected bonds and angles (bond-graph
    rows) of CHGNet's own converter on the boxed molecule (compared as sets of atom pairs)."""

    def content(graph):
        atom_graph = graph.atom_graph.numpy()
        d2u, u2d = graph.directed2undirected.numpy(), graph.undirected2directed.numpy()
        bond = {u: tuple(sorted(atom_graph[u2d[u]])) for u in range(len(u2d))}
        assert all(bond[d2u[e]] == tuple(sorted(atom_graph[e])) for e in range(len(atom_graph)))
        angles = {(int(r[0]), bond[r[1]], tuple(atom_graph[r[2]]), bond[r[3]], tuple(atom_graph[r[4]]))
                  for r in graph.bond_graph.numpy()}
        assert len(angles) == len(graph.bond_graph)
        return {tuple(e) for e in atom_graph}, sorted(bond.values()), angles

    for mol in molecules[:2]:
        ours = chgnet_adapter.molecule_union_graph([mol], adapter.model.graph_converter)
        theirs = adapter.graphs([mol])[0]
        assert ours.atom_graph.shape == theirs.atom_graph.shape
        assert ours.bond_graph.shape == theirs.bond_graph.shape
        assert content(ours) == content(theirs)


def test_large_molecules_take_the_converter_path(adapter, molecules, monkeypatch):
    fast = adapter.forward_batch(molecules[:3])
    monkeypatch.setattr(chgnet_adapter, "LARGE_MOLECULE", 5)  # every QM9 molecule counts as large: boxed graphs
    slow = adapter.forward_batch(molecules[:3])
    for layer in fast:
        np.testing.assert_allclose(fast[layer], slow[layer], atol=2e-5 * np.abs(fast[layer]).max(), rtol=0)


def test_readout_reproduces_ase_calculator_energy(adapter, molecules, crystals):
    """Bookkeeping: CHGNet's own readout MLP + composition model on the returned readout_input gives the energy
    of CHGNet's own ASE calculator (molecules boxed the same way)."""
    from chgnet.model.dynamics import CHGNetCalculator

    calc = adapter.ase_calculator()
    assert isinstance(calc, CHGNetCalculator)
    structures = molecules[:2] + crystals[:1]
    reference = calculator_energies(calc, structures)
    ours = adapter.energies_from_readout_input(structures, adapter.forward_batch(structures)["readout_input"])
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-3)


def test_box_is_large_enough(adapter, molecules):
    """A molecule's features do not depend on the box: the adapter's numpy graph (no images) equals CHGNet's
    converter graph in the adapter's box and in a much larger one."""
    mol = molecules[0]
    box = chgnet_adapter.boxed(mol)
    assert box.pbc.all() and box.cell.lengths().min() >= np.ptp(mol.positions, axis=0).max() + 12.0
    big = mol.copy()
    big.cell = [60.0, 60.0, 60.0]
    big.pbc = True
    big.center()
    a, b, c = adapter.forward_batch([mol]), adapter.forward_batch([box]), adapter.forward_batch([big])
    for layer in a:
        scale = np.abs(a[layer]).max()  # float32 rounding of fractional coordinates only
        np.testing.assert_allclose(a[layer], b[layer], atol=2e-5 * scale, rtol=0, err_msg=layer)
        np.testing.assert_allclose(a[layer], c[layer], atol=2e-5 * scale, rtol=0, err_msg=layer)


def test_invariance_molecule(adapter, molecules):
    check_invariance(adapter, molecules[0])


def test_invariance_crystal(adapter, crystals):
    check_invariance(adapter, crystals[0])


def test_features_are_invariant_per_atom(adapter, molecules, crystals):
    # 64x0e: e3nn's D(R) is the identity, so per-atom features must not change under rotation
    check_equivariance(adapter, molecules[1], "atom_conv_2")
    check_equivariance(adapter, crystals[1], "readout_input")


def test_batched_matches_single(adapter, molecules, crystals):
    # molecules (one union graph) and crystals (CHGNet graphs) interleaved: atoms must come back in input order
    check_batched_matches_single(adapter, [molecules[0], crystals[0], molecules[1], crystals[1], molecules[2]])


def test_unsupported_element_and_empty_structure(adapter, molecules):
    americium = Atoms("AmO", positions=[[0, 0, 0], [0, 0, 1.9]])  # Z = 95, beyond CHGNet's 94-element embedding
    check_rejects_bad_structures(adapter, molecules[0], americium, "Am")


def test_flat_cell_with_pbc_is_rejected(adapter):
    with pytest.raises(CPDInputError, match="cell"):
        adapter.forward_batch([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], pbc=True)])


def test_unknown_model_id():
    with pytest.raises(CPDInputError):
        chgnet_adapter.describe("chgnet-0.2.0")
