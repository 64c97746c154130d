"""ANI-2x adapters (torchani): AEV descriptor and ensemble hidden layers. The NeuroChem files from the local
weights folder are converted into a fresh temporary cache here (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from adapter_checks import check_batched_matches_single, check_invariance, check_output_matches_description
from cpd_core.data.qm9 import load_qm9
from cpd_core.errors import CPDInputError
from cpd_core.models import ani

HARTREE_TO_EV = 27.211386245988


@pytest.fixture(scope="module")
def molecules():
    mols = load_qm9(6, seed=11).to_atoms_list()
    assert len({len(a) for a in mols}) > 1  # different sizes, so the batch is padded
    return mols


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory, molecules):
    """Convert the NeuroChem files into an empty cache (molecules are loaded first, from the normal cache)."""
    if ani._neurochem_files() is None:
        pytest.fail(f"{ani.NEUROCHEM_INFO} is missing from the local weights folder (CPD_WEIGHTS_DIR)")
    cache = tmp_path_factory.mktemp("cpd_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPD_CACHE_DIR", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        adapter = ani.load(ani.NETS_ID)
    return cache, adapter


@pytest.fixture(scope="module")
def nets(converted_cache):
    return converted_cache[1]


@pytest.fixture(scope="module")
def aev():
    return ani.load(ani.AEV_ID)


def test_conversion_goes_to_the_cache_and_water_energy(converted_cache):
    cache, adapter = converted_cache
    assert (cache / "weights" / "torchani" / "StateDicts" / ani.STATE_DICT).is_file()
    water = molecule("H2O")
    species = torch.tensor(water.numbers[None])
    coords = torch.tensor(water.positions[None], dtype=torch.float32)
    with torch.no_grad():
        energy = adapter.model((species, coords)).energies.item()
    assert energy == pytest.approx(-76.388, abs=2e-3)  # Hartree, the 8-network ensemble
    water.calc = adapter.ase_calculator()
    assert water.get_potential_energy() / HARTREE_TO_EV == pytest.approx(energy, abs=1e-5)


@pytest.mark.parametrize("model_id", ani.MODEL_IDS)
def test_describe_matches_loaded_model(model_id, aev, nets, molecules):
    adapter = {ani.AEV_ID: aev, ani.NETS_ID: nets}[model_id]
    info = ani.describe(model_id)
    assert info.layers == adapter.info.layers
    assert info.elements == ("H", "C", "N", "O", "S", "F", "Cl")
    assert ani.offline_available(model_id)
    check_output_matches_description(adapter, info, molecules)
    if model_id == ani.AEV_ID:
        assert info.family == "handcrafted descriptor" and info.layers == {"aev": "1008x0e"}
    else:
        assert info.family == "learned invariant"
        assert list(info.layers) == ["hidden_1", "hidden_2", "hidden_3"]
        assert "averaged over the 8 ensemble members" in info.notes.lower()
        assert info.weights_hash


def test_aev_matches_the_ensembles_aev(aev, nets, molecules):
    a = aev.forward_batch(molecules)["aev"]
    with torch.no_grad():
        for i, m in enumerate(molecules):
            elem = nets.model.species_converter(torch.tensor(m.numbers[None]))
            ref = nets.model.aev_computer(elem, torch.tensor(m.positions[None], dtype=torch.float32))[0]
            start = sum(len(x) for x in molecules[:i])
            np.testing.assert_allclose(a[start:start + len(m)], ref.numpy(), rtol=1e-5, atol=1e-6)


def test_element_blocks_and_no_padding_rows(nets, molecules):
    """Each atom fills only its own element's block; padding atoms never appear as rows."""
    out = nets.forward_batch(molecules)
    symbols = [s for a in molecules for s in a.get_chemical_symbols()]
    for k, name in enumerate(out):
        offsets = nets._offsets[k]
        for row, s in enumerate(symbols):
            width = nets._widths[s][k]
            block = out[name][row, offsets[s]:offsets[s] + width]
            rest = np.delete(out[name][row], np.arange(offsets[s], offsets[s] + width))
            assert np.abs(block).sum() > 0
            assert not rest.any()


@pytest.mark.parametrize("model_id", ani.MODEL_IDS)
def test_invariance(model_id, aev, nets, molecules):
    check_invariance({ani.AEV_ID: aev, ani.NETS_ID: nets}[model_id], molecules[0])


@pytest.mark.parametrize("model_id", ani.MODEL_IDS)
def test_batched_matches_single(model_id, aev, nets, molecules):
    check_batched_matches_single({ani.AEV_ID: aev, ani.NETS_ID: nets}[model_id], molecules)


MIXED_ELEMENTS = ("CH4", "H2O", "NH3", "CH3OH", "HCN", "CH3Cl", "SH2", "CH3SH", "CF4", "CH3CONH2", "ClF", "NF3")


@pytest.mark.parametrize("batch", ["qm9", "mixed elements"])
def test_last_hidden_layer_reproduces_ensemble_energies(nets, molecules, batch):
    """Bookkeeping: each member's last hidden layer through its final linear layer, averaged over members, plus
    the self energies, gives the ensemble's atomic energies; and forward_batch's layers are the members' average.
    The mixed batch has molecules of twelve different element sets (the first layer runs per element set)."""
    molecules = molecules[:3] if batch == "qm9" else [molecule(name) for name in MIXED_ELEMENTS]
    model = nets.model
    symbols = [s for a in molecules for s in a.get_chemical_symbols()]
    n_members = len(nets._members)
    last = f"hidden_{len(nets._offsets)}"
    offsets = nets._offsets[-1]
    atomic = np.zeros(len(symbols))
    mean_hidden = None
    for m, member in enumerate(nets._members):
        hidden = nets.member_hidden(molecules, m)
        mean_hidden = {k: v / n_members + (mean_hidden[k] if mean_hidden else 0) for k, v in hidden.items()}
        with torch.no_grad():
            for s in set(symbols):
                rows = np.array([i for i, x in enumerate(symbols) if x == s])
                width = nets._widths[s][-1]
                h = torch.from_numpy(hidden[last][rows, offsets[s]:offsets[s] + width])
                atomic[rows] += member.atomics[s].final_layer(h).squeeze(-1).double().numpy() / n_members
    averaged = nets.forward_batch(molecules)
    for k in averaged:
        np.testing.assert_allclose(averaged[k], mean_hidden[k], rtol=1e-5, atol=1e-6)
    self_energy = dict(zip(model.symbols, model.energy_shifter.self_energies.double().tolist()))
    atomic += np.array([self_energy[s] for s in symbols])
    starts = np.cumsum([0] + [len(a) for a in molecules[:-1]])
    with torch.no_grad():
        for i, a in enumerate(molecules):
            species = torch.tensor(a.numbers[None])
            coords = torch.tensor(a.positions[None], dtype=torch.float32)
            ref_atomic = model.atomic_energies((species, coords)).energies[0].double().numpy()
            np.testing.assert_allclose(atomic[starts[i]:starts[i] + len(a)], ref_atomic, atol=1e-5)
            total = model((species, coords)).energies.item()
            assert atomic[starts[i]:starts[i] + len(a)].sum() == pytest.approx(total, abs=1e-4)


@pytest.mark.parametrize("model_id", ani.MODEL_IDS)
def test_unsupported_element(model_id, aev, nets, molecules):
    adapter = {ani.AEV_ID: aev, ani.NETS_ID: nets}[model_id]
    silane = Atoms("SiH4", positions=[[0, 0, 0], [0.9, 0.9, 0.9], [-0.9, -0.9, 0.9], [0.9, -0.9, -0.9],
                                      [-0.9, 0.9, -0.9]])
    with pytest.raises(CPDInputError, match="element\\(s\\) Si"):
        adapter.forward_batch([molecules[0], silane])


@pytest.mark.parametrize("model_id", ani.MODEL_IDS)
def test_empty_structure(model_id, aev, nets):
    adapter = {ani.AEV_ID: aev, ani.NETS_ID: nets}[model_id]
    with pytest.raises(CPDInputError, match="no atoms"):
        adapter.forward_batch([Atoms()])


def test_periodic_structures_keep_input_order(aev, molecules):
    """Periodic structures run one at a time with their cell; rows still follow the input order."""
    box = molecule("CH4")
    box.cell = [6.0, 6.0, 6.0]
    box.pbc = True
    box.center()
    flat = box.copy()
    flat.pbc = False
    mixed = aev.forward_batch([molecules[0], box, molecules[1]])["aev"]
    n0 = len(molecules[0])
    np.testing.assert_allclose(mixed[:n0], aev.forward_batch([molecules[0]])["aev"], atol=1e-5)
    np.testing.assert_allclose(mixed[n0:n0 + 5], aev.forward_batch([box])["aev"], atol=1e-6)
    np.testing.assert_allclose(mixed[n0 + 5:], aev.forward_batch([molecules[1]])["aev"], atol=1e-5)
    assert np.abs(mixed[n0:n0 + 5] - aev.forward_batch([flat])["aev"]).max() > 1e-4  # images within the cutoff


def test_isolated_atoms_have_no_neighbours_but_features(nets):
    """An atom with no neighbour within the cutoff has an all-zero AEV; the networks still give it features (the
    first layer's zero-column skipping must cope with a batch where every column is zero)."""
    lone = [Atoms("O", positions=[[0, 0, 0]]), Atoms("H2", positions=[[0, 0, 0], [0, 0, 30.0]])]
    together = nets.forward_batch(lone)
    apart = [nets.forward_batch([a]) for a in lone]
    for name, value in together.items():
        assert np.isfinite(value).all()
        np.testing.assert_allclose(value, np.concatenate([p[name] for p in apart]), atol=1e-6)
