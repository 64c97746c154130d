"""PaiNN and DimeNet++: vectors rotate as e3nn's 1o, layers are states (not increments) that feed the output head,
and the plain-torch angle triplets equal a brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adapter_checks import check_equivariance, rotation_matrix

from cpd_core.data.qm9 import load_qm9
from cpd_core.models import pyg
from cpd_core.models.dimenet import triplets
from cpd_core.models.graphs import radius_edges
from cpd_core.models.painn import painn_to_e3nn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAINN = dict(hidden_channels=16, num_interactions=2, num_rbf=10, mean=0.3, std=0.5)
DIMENET = dict(hidden_channels=16, num_blocks=2, int_emb_size=8, basis_emb_size=4, out_emb_channels=16,
               num_spherical=4, num_radial=4, mean=0.2, std=0.4)


@pytest.fixture(scope="module")
def molecules():
    return load_qm9(6, seed=11).to_atoms_list()


@pytest.fixture(scope="module")
def painn():
    return pyg.random_adapter("painn", PAINN, seed=3, device="cpu")


@pytest.fixture(scope="module")
def dimenet():
    adapter = pyg.random_adapter("dimenetpp", DIMENET, seed=3, device="cpu")
    for block in adapter.model.net.output_blocks:  # PyG starts the output layers at zero: give them weights
        torch.nn.init.normal_(block.lin.weight, std=0.1)
    return adapter


def test_painn_vectors_rotate_as_e3nn_1o(painn, molecules):
    for layer in painn.info.layers:
        check_equivariance(painn, molecules[2], layer)
    # the vector part is not trivially zero after the first interaction, and rotating changes it
    R = rotation_matrix(5)
    rotated = molecules[2].copy()
    rotated.positions = molecules[2].positions @ R.T
    a, b = painn.forward_batch([molecules[2]])["interaction_1"], painn.forward_batch([rotated])["interaction_1"]
    vectors = slice(PAINN["hidden_channels"], None)
    assert np.abs(a[:, vectors]).max() > 1e-3 and np.abs(a[:, vectors] - b[:, vectors]).max() > 1e-3


def test_painn_layers_are_states_that_feed_the_head(painn, molecules):
    model = painn.model
    z, pos, batch = painn._inputs(molecules)
    increments = {}
    hooks = [block.register_forward_hook(lambda m, i, o, k=k, kind=kind: increments.__setitem__((kind, k), o))
             for kind, blocks in (("message", model.messages), ("update", model.updates))
             for k, block in enumerate(blocks)]
    try:
        features = painn.forward_batch(molecules)
    finally:
        for h in hooks:
            h.remove()
    s = model.embedding(z).detach()
    v = torch.zeros(s.shape[0], 3, PAINN["hidden_channels"])
    for k in range(PAINN["num_interactions"]):
        for kind in ("message", "update"):
            ds, dv = increments[(kind, k)]
            s, v = s + ds, v + dv
        state = painn_to_e3nn(s, v).numpy()
        np.testing.assert_allclose(features[f"interaction_{k + 1}"], state, rtol=1e-5, atol=1e-6)
        assert not np.allclose(painn_to_e3nn(*increments[("update", k)]).numpy(), state)
    head = model.head_readout(torch.as_tensor(features["interaction_2"][:, :PAINN["hidden_channels"]]), z, batch)
    np.testing.assert_allclose(head.detach().numpy().ravel(), painn.predict(molecules), rtol=1e-5, atol=1e-6)


def test_dimenet_layers_are_summed_edge_states(dimenet, molecules):
    model = dimenet.model
    z, pos, batch = dimenet._inputs(molecules)
    edges = {}
    hooks = [block.register_forward_hook(lambda m, i, o, k=k: edges.__setitem__(k, o))
             for k, block in enumerate(model.net.interaction_blocks)]
    try:
        features = dimenet.forward_batch(molecules)
    finally:
        for h in hooks:
            h.remove()
    target = radius_edges(pos, batch, model.cutoff, loop=False)[1]
    assert sorted(edges) == [0, 1]
    for k, x in edges.items():
        summed = torch.zeros(len(z), x.shape[1]).index_add_(0, target, x).numpy()
        np.testing.assert_allclose(features[f"interaction_{k + 1}"], summed, rtol=1e-4, atol=1e-5)
    assert not np.allclose(features["interaction_1"], features["interaction_2"])
    prediction = dimenet.predict(molecules)
    assert np.isfinite(prediction).all() and np.std(prediction) > 0


def test_dimenet_invariants_hold_in_double_precision(dimenet, molecules):
    model = dimenet.model.double()
    try:
        z, pos, batch = dimenet._inputs(molecules[:3])
        pos = pos.double()
        R = torch.tensor(rotation_matrix(2))
        with torch.no_grad():
            a = model.states(z, pos, batch)
            b = model.states(z, pos @ R.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), batch)
        for layer in a:
            scale = float(a[layer].abs().max())
            assert scale > 1e-3
            np.testing.assert_allclose(a[layer].numpy(), b[layer].numpy(), atol=1e-9 * scale, err_msg=layer)
    finally:
        model.float()


def test_triplets_match_a_brute_force_enumeration(molecules):
    pos = torch.tensor(np.concatenate([a.positions for a in molecules[:4]]), dtype=torch.float32)
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor([len(a) for a in molecules[:4]]))
    edge_index = radius_edges(pos, batch, 3.0, loop=False)
    i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji = triplets(edge_index, len(pos))
    source, target = edge_index.tolist()
    expected = [(e_ji, e_kj) for e_ji in range(len(source)) for e_kj in range(len(source))
                if target[e_kj] == source[e_ji] and source[e_kj] != target[e_ji]]
    assert list(zip(idx_ji.tolist(), idx_kj.tolist())) == expected and len(expected) > 100
    assert torch.equal(idx_i, edge_index[1][idx_ji]) and torch.equal(idx_j, edge_index[0][idx_ji])
    assert torch.equal(idx_k, edge_index[0][idx_kj]) and bool((idx_i != idx_k).all())
    assert torch.equal(i, edge_index[1]) and torch.equal(j, edge_index[0])
    with pytest.raises(ValueError, match="sorted"):
        triplets(edge_index.flip(1), len(pos))
