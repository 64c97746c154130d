"""MACE adapter: the real small MACE trained on SPICE from the local weights folder (no network)."""

from __future__ import annotations

import os

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
from cpd_core.models import mace as mace_adapter

MODEL_ID = "mace-spice"


@pytest.fixture(scope="module")
def adapter():
    return offline_adapter(mace_adapter, MODEL_ID,
                           "mace/MACE_SPICE.model is missing from the local weights folder (CPD_WEIGHTS_DIR)")


@pytest.fixture(scope="module")
def molecules():
    return load_qm9(5, seed=3).to_atoms_list()


def test_describe_matches_loaded_model(adapter, molecules):
    info = mace_adapter.describe(MODEL_ID)
    assert info.family == "tensor-product equivariant"
    assert list(info.layers) == ["interaction_1_message", "product_1", "interaction_2_message", "product_2"]
    assert info.layers == adapter.info.layers
    assert info.elements == adapter.info.elements
    assert info.cutoff == pytest.approx(adapter.info.cutoff)
    assert info.weights_hash and info.weights_hash == adapter.info.weights_hash
    # messages carry L up to 3; the last product keeps only scalars
    assert {ir.l for _, ir in o3.Irreps(info.layers["interaction_1_message"])} == {0, 1, 2, 3}
    assert o3.Irreps(info.layers["product_2"]).lmax == 0
    check_output_matches_description(adapter, info, molecules)


def test_import_restores_weights_only_default(monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    mace_adapter._import_mace()
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ


def test_invariance(adapter, molecules):
    check_invariance(adapter, molecules[0])


@pytest.mark.parametrize("layer", ["interaction_1_message", "interaction_2_message", "product_1", "product_2"])
def test_equivariance(adapter, molecules, layer):
    check_equivariance(adapter, molecules[1], layer)


def test_batched_matches_single(adapter, molecules):
    check_batched_matches_single(adapter, molecules)


def test_readouts_on_captured_states_reproduce_energies(adapter, molecules):
    """Bookkeeping: the model's own readouts applied to the captured product states give its node energies."""
    model = adapter.model
    states = adapter.forward_batch(molecules)
    _, outputs, batch = adapter._run(molecules)
    n = batch["positions"].shape[0]
    arange = torch.arange(n)
    heads = batch["head"][batch["batch"]] if "head" in batch else torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        node_inter = torch.zeros(n, dtype=torch.float64)
        for i, readout in enumerate(model.readouts):
            idx = len(model.products) if len(model.readouts) == 1 else i + 1
            x = torch.from_numpy(states[f"product_{idx}"]).to(adapter.dtype)
            node_inter = node_inter + readout(x, heads)[arange, heads].double()
        node_inter = model.scale_shift(node_inter, heads)
        node_e0 = model.atomic_energies_fn(batch["node_attrs"])[arange, heads].double()
    node_energy = (node_e0 + node_inter).numpy()
    np.testing.assert_allclose(node_energy, outputs["node_energy"].double().numpy(), atol=1e-4, rtol=0)
    totals = np.add.reduceat(node_energy, np.cumsum([0] + [len(a) for a in molecules[:-1]]))
    np.testing.assert_allclose(totals, outputs["energy"].double().numpy(), rtol=1e-6)
    # and the package's own ASE calculator agrees with the batched forward pass
    calc = adapter.ase_calculator()
    atoms = molecules[0].copy()
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(float(outputs["energy"][0]), rel=1e-5)


def test_unsupported_element(adapter):
    with pytest.raises(CPDInputError, match="Si"):
        adapter.forward_batch([Atoms("SiH4", positions=np.random.default_rng(0).normal(size=(5, 3)))])


def test_empty_structure(adapter, molecules):
    with pytest.raises(CPDInputError, match="no atoms"):
        adapter.forward_batch([molecules[0], Atoms()])


def test_load_any_model_file(adapter, molecules, monkeypatch):
    monkeypatch.setenv(mace_adapter.TRUSTED_FILES_ENV, "")  # restored after the test
    path = mace_adapter.local_weights(mace_adapter.SPICE_WEIGHTS)
    other = mace_adapter.load_mace_file(path, trusted=True)
    assert other.info.id == f"mace-file:{path.resolve()}"
    assert other.info.layers == adapter.info.layers
    mace_adapter.trust_model_file(path)
    assert mace_adapter.describe(f"mace-file:{path}").layers == adapter.info.layers
    a, b = adapter.forward_batch(molecules[:2]), other.forward_batch(molecules[:2])
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(CPDInputError, match="does not exist"):
        mace_adapter.load_mace_file(path.parent / "missing.model")


def test_a_user_model_file_is_not_unpickled_unless_trusted(tmp_path, monkeypatch, code_payload):
    monkeypatch.delenv(mace_adapter.TRUSTED_FILES_ENV, raising=False)
    save, marker = code_payload
    path = save(tmp_path / "payload.model")
    for load in (lambda: mace_adapter.load_mace_file(path), lambda: mace_adapter.load(f"mace-file:{path}"),
                 lambda: mace_adapter.describe(f"mace-file:{path}")):
        with pytest.raises(CPDInputError, match="runs code stored in the file.*--trust-model-file"):
            load()
    assert not marker.exists()
    mace_adapter.trust_model_file(path)  # the user vouches for it: it is unpickled (and is no MACE model)
    with pytest.raises(CPDInputError, match="is not a MACE model"):
        mace_adapter.load(f"mace-file:{path}")
    assert marker.read_text() == "ran"


def test_foundation_models_resolve_locally_first(monkeypatch, tmp_path):
    """Foundation ids are described without weights; they are offline only when a file is already here."""
    monkeypatch.setenv("CPD_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for model_id in ("mace-mp-0-medium", "mace-off-small"):
        info = mace_adapter.describe(model_id)
        assert info.family == "tensor-product equivariant"
        assert list(info.layers) == ["interaction_1_message", "product_1", "interaction_2_message", "product_2"]
        assert not mace_adapter.offline_available(model_id)
    assert mace_adapter.describe("mace-mp-0-medium").layers["product_1"] == "128x0e+128x1o"
    assert mace_adapter.describe("mace-mp-0-medium").layers["product_2"] == "128x0e"
    # a file in the weights folder, or in mace's own cache under mace's naming, counts as local
    (tmp_path / "weights" / "mace").mkdir(parents=True)
    (tmp_path / "weights" / "mace" / "MACE-OFF23_small.model").write_bytes(b"")
    assert mace_adapter.offline_available("mace-off-small")
    (tmp_path / "xdg" / "mace").mkdir(parents=True)
    (tmp_path / "xdg" / "mace" / "20231203mace128L1_epoch199model").write_bytes(b"")
    assert mace_adapter.offline_available("mace-mp-0-medium")


def test_folded_contractions_match_maces_own(adapter):
    """The inference-time symmetric contraction (element weights folded into the coupling tensors) gives mace's
    own Contraction output; non-one-hot node attributes fall back to mace's code."""
    from cpd_core.models.mace_fast import FoldedContraction

    model = adapter.model
    rng = torch.Generator().manual_seed(0)
    for product in model.products:
        for contraction in product.symmetric_contractions.contractions:
            n_elements = contraction.weights_max.shape[0]
            x = torch.randn(300, contraction.num_features, contraction.U_tensors(1).shape[-2], generator=rng)
            y = torch.nn.functional.one_hot(torch.randint(n_elements, (300,), generator=rng), n_elements).float()
            with torch.no_grad():
                expected = contraction(x, y)
                folded = FoldedContraction(contraction)
                np.testing.assert_allclose(folded(x, y).numpy(), expected.numpy(), rtol=1e-4,
                                           atol=1e-5 * float(expected.abs().max()))
                soft = torch.softmax(torch.randn(300, n_elements, generator=rng), dim=1)
                assert torch.equal(folded(x, soft), contraction(x, soft))


def _check_fused_convolution(tp, graph, rng):
    from mace.tools.scatter import scatter_sum

    from cpd_core.models.mace_fast import FusedConvolution

    sender, receiver = graph["edge_index"]
    n_nodes, n_edges = len(graph["positions"]), sender.numel()
    x = torch.randn(n_nodes, tp.irreps_in1.dim, generator=rng)
    y = torch.randn(n_edges, tp.irreps_in2.dim, generator=rng)
    w = torch.randn(n_edges, tp.weight_numel, generator=rng)
    with torch.no_grad():
        expected = scatter_sum(tp(x[sender], y, w), receiver, dim=0, dim_size=n_nodes)
        fused = FusedConvolution(tp)
        whole = fused(x, y, w, graph["edge_index"])
        np.testing.assert_allclose(whole.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        fused.MAX_PADDED = 3 * fused.per_slot * int(torch.bincount(receiver).max())  # receivers in chunks of 3
        assert torch.equal(fused(x, y, w, graph["edge_index"]), whole)
        assert torch.equal(fused(x[sender], y, w), tp(x[sender], y, w))


def test_fused_convolutions_match_e3nn_and_scatter(adapter, molecules):
    """The fused convolution sums e3nn's per-edge tensor product per receiver, for edges sorted by receiver (our
    molecule graph), in mace's own order, and with a lone atom that has no edges; the per-edge call (mace's
    unfused branch) is the product's own forward. Checked on MACE-SPICE's products (scalar node features) and on
    one built by mace's own recipe from node features up to L=2 (as in MACE-MP-0 large and the QM9 zoo models)."""
    from mace.modules.irreps_tools import tp_out_irreps_with_instructions

    from cpd_core.models.mace_fast import FusedConvolution

    lone = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    graphs = [adapter.molecule_batch(molecules + [lone]), adapter.mace_batch([lone] + molecules).to_dict()]
    products = [it.conv_tp for it in adapter.model.interactions]
    assert all(FusedConvolution.applies(tp) for tp in products)
    node, edge = o3.Irreps("8x0e+8x1o+8x2e"), o3.Irreps("1x0e+1x1o+1x2e+1x3o")
    irreps_mid, instructions = tp_out_irreps_with_instructions(node, edge, o3.Irreps("8x0e+8x1o+8x2e+8x3o"))
    products.append(o3.TensorProduct(node, edge, irreps_mid, instructions=instructions, shared_weights=False,
                                     internal_weights=False))
    assert FusedConvolution.applies(products[-1])
    rng = torch.Generator().manual_seed(0)
    for graph in graphs:
        for tp in products:
            _check_fused_convolution(tp, graph, rng)
    not_uvu = o3.TensorProduct("4x1o", "1x0e+1x1o", "4x1o", [(0, 0, 0, "uvw", True)], shared_weights=False,
                               internal_weights=False)
    assert not FusedConvolution.applies(not_uvu)


def test_extraction_leaves_the_models_own_forward_in_place(adapter, molecules):
    adapter.forward_batch(molecules[:2])
    for product in adapter.model.products:
        assert all("forward" not in c.__dict__ for c in product.symmetric_contractions.contractions)
    for interaction in adapter.model.interactions:
        assert "forward" not in interaction.conv_tp.__dict__ and not hasattr(interaction, "conv_fusion")


def test_molecule_batch_matches_maces_own_data_pipeline(adapter, molecules):
    """The whole-batch graph of molecules has mace's edges, and the model gives the same outputs on it."""
    ours = adapter.molecule_batch(molecules)
    theirs = adapter.mace_batch(molecules).to_dict()
    assert sorted(map(tuple, ours["edge_index"].T.tolist())) == sorted(map(tuple, theirs["edge_index"].T.tolist()))
    for key in ("positions", "node_attrs", "batch", "ptr", "head"):
        assert torch.equal(ours[key], theirs[key]), key
    with torch.no_grad():
        a = adapter.model(ours, training=False, compute_force=False)
        b = adapter.model(theirs, training=False, compute_force=False)
    for key in ("energy", "node_energy", "node_feats"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-5)


def test_threads_sharing_one_adapter_get_their_own_features(adapter, molecules):
    """The dashboard shares one loaded adapter between sessions: concurrent runs must not mix their hooks."""
    from concurrent.futures import ThreadPoolExecutor

    expected = [adapter.forward_batch([m]) for m in molecules]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda m: adapter.forward_batch([m]), molecules * 3))
    for k, got in enumerate(results):
        for name, value in expected[k % len(molecules)].items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)
