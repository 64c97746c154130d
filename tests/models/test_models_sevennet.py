"""SevenNet adapters (SevenNet-0 11Jul2024 and SevenNet-l3i5, checkpoints from the `sevenn` wheel, no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111
from ase.data import chemical_symbols
from e3nn import o3

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
from cpd_core.models import registry
from cpd_core.models import sevennet as sevennet_adapter

MODEL_IDS = ("sevennet-0", "sevennet-l3i5")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


_LOADED: dict = {}


def _load(model_id: str):
    if model_id not in _LOADED:
        _LOADED[model_id] = offline_adapter(sevennet_adapter, model_id, f"{model_id}: checkpoint missing from the "
                                                                         "sevenn wheel")
    return _LOADED[model_id]


@pytest.fixture(scope="module", params=MODEL_IDS)
def adapter(request):
    return _load(request.param)


@pytest.fixture(scope="module")
def seven0():
    return _load("sevennet-0")


@pytest.fixture(scope="module")
def l3i5():
    return _load("sevennet-l3i5")


@pytest.fixture(scope="module")
def molecules():
    return load_qm9(4, seed=5).to_atoms_list()


# ------------------------------------------------------------------------------------------ description

def test_registry_and_describe():
    for model_id in MODEL_IDS:
        assert model_id in registry.model_ids()
        assert registry.offline_available(model_id)
        info = registry.describe_model(model_id)
        assert info.family == "tensor-product equivariant"
        assert info.input == "any"
        assert info.cutoff == 5.0
        assert list(info.layers) == [f"interaction_{k}" for k in range(1, 6)]
        assert info.weights_hash and "pretrained_potentials" in info.weights_source
        assert "Rn" not in info.elements and {"H", "C", "N", "O", "F", "Pu"} <= set(info.elements)
    assert registry.describe_model("sevennet-0").layers["interaction_1"] == "128x0e+64x1e+32x2e"
    assert registry.describe_model("sevennet-l3i5").layers["interaction_1"] == "128x0e+64x1e+32x2e+32x3e"


def test_describe_matches_loaded_model(adapter, molecules, crystals):
    info = sevennet_adapter.describe(adapter.info.id)
    model = adapter.model
    # elements and cutoff from the checkpoint's type map / config
    assert set(info.elements) == {chemical_symbols[z] for z in adapter.type_map}
    assert info.cutoff == pytest.approx(adapter.cutoff)
    # declared irreps are the gates' output irreps, in depth order
    gates = [name for name in model._modules if name.endswith("_equivariant_gate")]
    assert [o3.Irreps(model.get_irreps_in(g, "irreps_out")) for g in gates] == [o3.Irreps(v) for v in info.layers.values()]
    structures = molecules[:2] + crystals[:1]
    check_output_matches_description(adapter, info, structures)


# ---------------------------------------------------------------- the captured tensors are the model's states

def _reference_run(adapter, structures):
    """The unmodified sevenn pipeline: sevenn's own graph builder, torch_geometric batch, the model's own forward
    (its e3nn convolutions, readout and energy sum; only the force/stress head is skipped to save time). Returns
    the gate outputs (via hooks) and total energies."""
    from torch_geometric.data import Batch
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph
    import sevenn._keys as KEY

    model = adapter.model
    graphs = [AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(a, adapter.cutoff)) for a in structures]
    batch = Batch.from_data_list(graphs)
    captured = {}
    hooks = []
    for name, layer in adapter._gate_to_layer.items():
        hooks.append(model._modules[name].register_forward_hook(
            lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out[KEY.NODE_FEATURE].detach().clone())))
    try:
        with torch.no_grad():
            data = model._preprocess(batch)
            for name, module in model._modules.items():
                if name != "force_output":
                    data = module(data)
    finally:
        for h in hooks:
            h.remove()
    return {k: v.numpy() for k, v in captured.items()}, data[KEY.PRED_TOTAL_ENERGY].double().numpy()


def test_states_equal_model_internal_states_and_readout_reproduces_energy(adapter, molecules, crystals):
    """forward_batch (own batched graph + regrouped convolution) returns exactly the node features the unmodified
    model computes after each gate, and the model's own readout applied to the returned interaction_5 state gives
    the model's total energies."""
    slab = fcc111("Cu", size=(1, 1, 3), vacuum=6.0)  # pbc = (True, True, False): ASE's neighbour list
    assert list(slab.pbc) == [True, True, False]
    structures = molecules[:2] + crystals + [slab]
    ours = adapter.forward_batch(structures)
    ref_states, ref_energy = _reference_run(adapter, structures)
    for layer in adapter.info.layers:
        scale = np.abs(ref_states[layer]).max()
        np.testing.assert_allclose(ours[layer], ref_states[layer], atol=2e-5 * scale, rtol=0, err_msg=layer)
    energy = adapter.energies_from_last_layer(structures, ours["interaction_5"])
    np.testing.assert_allclose(energy, ref_energy, rtol=1e-6, atol=1e-3)


def test_energy_matches_sevennet_ase_calculator(seven0, molecules, crystals):
    from sevenn.calculator import SevenNetCalculator

    calc = seven0.ase_calculator()
    assert isinstance(calc, SevenNetCalculator)
    structures = molecules[:1] + crystals[:1]
    reference = calculator_energies(calc, structures)
    ours = seven0.energies_from_last_layer(structures, seven0.forward_batch(structures)["interaction_5"])
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-3)


def test_fast_convolution_matches_e3nn(adapter):
    for fast in adapter._convolutions.values():
        assert fast.check(seed=3) < 1e-5


def test_molecule_graph_matches_sevenn_builder(molecules):
    """Vectorised all-pairs edges for molecules == sevenn's own (matscipy) neighbour list."""
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    numbers, edge_index, edge_vec, batch, n_half = sevennet_adapter.build_graph(molecules, 5.0)
    assert edge_index.shape[1] == 2 * n_half
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in molecules])])
    ours = {(int(i), int(j)) for i, j in edge_index.T}
    theirs = set()
    for k, atoms in enumerate(molecules):
        ref = unlabeled_atoms_to_graph(atoms, 5.0)
        theirs |= {(int(i) + offsets[k], int(j) + offsets[k]) for i, j in ref["edge_index"].T}
    assert ours == theirs
    pos = np.concatenate([a.positions for a in molecules])
    np.testing.assert_allclose(edge_vec, pos[edge_index[1]] - pos[edge_index[0]])


def test_large_molecules_take_the_neighbour_list_path(seven0, molecules, monkeypatch):
    fast = seven0.forward_batch(molecules[:3])
    monkeypatch.setattr(sevennet_adapter, "LARGE_MOLECULE", 5)  # every QM9 molecule counts as large: ASE list
    slow = seven0.forward_batch(molecules[:3])
    for layer in fast:
        np.testing.assert_allclose(fast[layer], slow[layer], atol=1e-5 * np.abs(fast[layer]).max(), rtol=0)


# ------------------------------------------------------------------------------- symmetry and batching

def test_invariance_molecule(adapter, molecules):
    check_invariance(adapter, molecules[0])


def test_invariance_crystal(seven0, crystals):
    check_invariance(seven0, crystals[0])


# interaction_1..4 share one layout (L = 0, 1, 2 and, for l3i5, 3); interaction_5 is scalar (invariance tests)
@pytest.mark.parametrize("layer", ["interaction_1", "interaction_4"])
def test_equivariance_molecule(seven0, molecules, layer):
    check_equivariance(seven0, molecules[1], layer)


def test_equivariance_crystal(seven0, crystals):
    check_equivariance(seven0, crystals[1], "interaction_2")


def test_equivariance_l3(l3i5, molecules):
    assert {ir.l for _, ir in o3.Irreps(l3i5.info.layers["interaction_4"])} == {0, 1, 2, 3}
    check_equivariance(l3i5, molecules[1], "interaction_4")


def test_batched_matches_single(adapter, molecules, crystals):
    check_batched_matches_single(adapter, molecules[:3] + crystals)


# ----------------------------------------------------------------------------------------- input errors

def test_unsupported_element_and_empty_structure(seven0, molecules):
    radon = Atoms("RnH", positions=[[0, 0, 0], [0, 0, 1.5]])
    check_rejects_bad_structures(seven0, molecules[0], radon, "Rn")


def test_single_atom_without_edges(seven0):
    out = seven0.forward_batch([Atoms("Ne"), Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])])
    assert all(v.shape[0] == 3 and np.isfinite(v).all() for v in out.values())


def test_unknown_model_id():
    with pytest.raises(CPDInputError):
        sevennet_adapter.describe("sevennet-omni")
