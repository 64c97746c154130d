"""ViSNet, SchNet, PaiNN and DimeNet++ adapters (torch-geometric's message passing): invariance, equivariance, batching, state bookkeeping, input
errors, metadata and checkpoints. Small random models on a handful of QM9 molecules keep this fast."""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch
from adapter_checks import (
    check_batched_matches_single,
    check_equivariance,
    check_invariance,
    rotation_matrix,
)
from e3nn import o3

from cpd_core.data.qm9 import load_qm9
from cpd_core.errors import CPDInputError
from cpd_core.representations.invariants import split_by_l
from cpd_core.models import pyg
from cpd_core.models.base import file_hash
from cpd_core.models.graphs import radius_edges

SMALL = {
    "visnet": dict(hidden_channels=16, num_heads=4, num_layers=2, num_rbf=16, lmax=2),
    "schnet": dict(hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=20, cutoff=5.0,
                   mean=1.5, std=0.7),
    "painn": dict(hidden_channels=16, num_interactions=2, num_rbf=10, mean=0.3, std=0.5),
    "dimenetpp": dict(hidden_channels=16, num_blocks=2, int_emb_size=8, basis_emb_size=4, out_emb_channels=16,
                      num_spherical=4, num_radial=4),
}
ARCHS = tuple(SMALL)
HOOKED_ARCHS = ("visnet", "schnet")  # states vs increments of the other two: tests/models/test_models_painn_dimenet.py


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models run faster on one thread here


@pytest.fixture(scope="module")
def molecules():
    return load_qm9(5, seed=3).to_atoms_list()


@pytest.fixture(scope="module")
def adapters():
    return {arch: pyg.random_adapter(arch, hp, seed=7, device="cpu") for arch, hp in SMALL.items()}


# ------------------------------------------------------------------------------------------- graph

def test_radius_graph_matches_ase(molecules):
    from ase.neighborlist import neighbor_list

    pair = molecules[:2]
    pos = torch.tensor(np.concatenate([a.positions for a in pair]), dtype=torch.float64)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([len(a) for a in pair]))
    edges = radius_edges(pos, batch, 3.0, loop=False).T.tolist()
    expected, offset = [], 0
    for atoms in pair:
        i, j = neighbor_list("ij", atoms, 3.0)
        expected += [(int(b) + offset, int(a) + offset) for a, b in zip(i, j)]
        offset += len(atoms)
    assert sorted(map(tuple, edges)) == sorted(expected)
    receivers = [i for _, i in edges]
    assert receivers == sorted(receivers)  # listed by receiver: MACE's fused convolution then skips its sort
    with_loops = radius_edges(pos, batch, 3.0, loop=True)
    assert with_loops.shape[1] == len(expected) + len(pos)


def test_radius_graph_of_large_structures_uses_a_neighbour_list(molecules, monkeypatch):
    """Structures above LARGE_MOLECULE atoms take their edges from ASE's neighbour list: the same edges in the
    same order (by receiver, then sender) as all pairs, with small and large structures mixed in one batch."""
    from cpd_core.models import graphs

    trio = molecules[:3]
    pos = torch.tensor(np.concatenate([a.positions for a in trio]), dtype=torch.float64)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([len(a) for a in trio]))
    for loop in (False, True):
        all_pairs = radius_edges(pos, batch, 3.0, loop=loop)
        monkeypatch.setattr(graphs, "LARGE_MOLECULE", min(len(a) for a in trio))  # all but the smallest
        large = torch.bincount(batch) > graphs.LARGE_MOLECULE
        assert bool(large.any()) and not bool(large.all())
        assert torch.equal(radius_edges(pos, batch, 3.0, loop=loop), all_pairs)
        monkeypatch.undo()


# ------------------------------------------------------------------------------------------- symmetry

@pytest.mark.parametrize("arch", ARCHS)
def test_invariance(adapters, molecules, arch):
    for atoms in molecules[:2]:
        check_invariance(adapters[arch], atoms)


def test_visnet_layers_rotate_with_e3nn_wigner(adapters, molecules):
    adapter, atoms = adapters["visnet"], molecules[1]
    for layer in adapter.info.layers:
        check_equivariance(adapter, atoms, layer)

    # each L block on its own scale (vector blocks of random weights are ~50x smaller than the scalars)
    R = rotation_matrix(4)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ R.T
    f, f_rot = adapter.forward_batch([atoms]), adapter.forward_batch([rotated])
    for layer in ("interaction_1", "final_norm"):
        blocks = split_by_l(f[layer].astype(np.float64), adapter.info.layers[layer])
        blocks_rot = split_by_l(f_rot[layer].astype(np.float64), adapter.info.layers[layer])
        for l in (1, 2):
            D = o3.Irrep(l, (-1) ** l).D_from_matrix(torch.tensor(R)).numpy()
            scale = np.abs(blocks[l]).max()
            assert scale > 1e-3
            np.testing.assert_allclose(blocks_rot[l], blocks[l] @ D.T, atol=1e-3 * scale, err_msg=f"{layer} L={l}")
            # negative control: a wrong component order (e.g. y, z, x for l=1) must fail this check
            wrong = np.roll(blocks[l], 1, axis=2)
            assert np.abs(blocks_rot[l] - wrong @ D.T).max() > 0.05 * scale


def test_visnet_basis_is_e3nn(adapters):
    """ViSNet's Sphere equals e3nn's real spherical harmonics (l=1: Cartesian x, y, z; e3nn 0.5.1's D of 1o is R),
    so the change of basis is the identity; `_sphere_to_e3nn` would pick up any other orthogonal relation."""
    R = torch.tensor(rotation_matrix(2))
    np.testing.assert_allclose(o3.Irrep("1o").D_from_matrix(R).numpy(), R.numpy(), atol=1e-5)
    for l in (1, 2):
        np.testing.assert_allclose(pyg._sphere_to_e3nn(l), np.eye(2 * l + 1), atol=1e-10)
    # the layout round trip used by the readout test
    x, vec = torch.randn(3, 4), torch.randn(3, 8, 4)
    flat = pyg.visnet_to_e3nn(x, vec)
    assert flat.shape == (3, o3.Irreps(pyg.visnet_irreps(4, 2)).dim)
    assert torch.equal(flat[:, 4:7], vec[:, 0:3, 0])  # channel 0's l=1 components are contiguous
    x2, vec2 = pyg.e3nn_to_visnet(flat, 4, 2)
    assert torch.equal(x2, x) and torch.allclose(vec2, vec)


# ------------------------------------------------------------------------------------------- batching

@pytest.mark.parametrize("arch", ARCHS)
def test_batched_matches_single(adapters, molecules, arch):
    adapter = adapters[arch]
    check_batched_matches_single(adapter, molecules)
    batched = adapter.forward_batch(molecules)
    singles = [adapter.forward_batch([a]) for a in molecules]
    for layer, value in batched.items():
        assert value.dtype == np.float32 and value.shape[0] == sum(len(a) for a in molecules)
        np.testing.assert_allclose(value, np.concatenate([s[layer] for s in singles]), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- bookkeeping

def _hooked_forward(adapter, molecules):
    """Run the model's own forward with hooks; return (embedding state, increments per block, extra outputs)."""
    model = adapter.model
    seen: dict[str, object] = {}
    if adapter.arch == "schnet":
        targets = {"embedding": model.embedding}
        targets.update({f"interaction_{k + 1}": block for k, block in enumerate(model.interactions)})
    else:
        rep = model.representation_model
        targets = {"embedding": rep.neighbor_embedding, "out_norm": rep.out_norm, "vec_out_norm": rep.vec_out_norm}
        targets.update({f"interaction_{k + 1}": block for k, block in enumerate(rep.vis_mp_layers)})
    handles = [module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
               for name, module in targets.items()]
    try:
        prediction = adapter.predict(molecules)
    finally:
        for h in handles:
            h.remove()
    return seen, prediction


@pytest.mark.parametrize("arch", HOOKED_ARCHS)
def test_states_are_sums_of_increments_and_feed_the_head(adapters, molecules, arch):
    adapter = adapters[arch]
    features = adapter.forward_batch(molecules)
    seen, prediction = _hooked_forward(adapter, molecules)
    n_blocks = len(adapter.info.layers) - (2 if arch == "visnet" else 1)

    state = seen["embedding"]
    if arch == "visnet":
        hidden = adapter.hparams["hidden_channels"]
        state = (state, torch.zeros(state.shape[0], 8, hidden))
    np.testing.assert_allclose(features["embedding"], seen["embedding"].numpy(), rtol=1e-5, atol=1e-6)
    for k in range(1, n_blocks + 1):
        inc = seen[f"interaction_{k}"]
        if arch == "visnet":
            state = (state[0] + inc[0], state[1] + inc[1])
            flat = pyg.visnet_to_e3nn(*state)
            # a hook on the block alone sees the increment, which is not the state
            assert not np.allclose(pyg.visnet_to_e3nn(inc[0], inc[1]).numpy(), features[f"interaction_{k}"])
        else:
            state = state + inc
            flat = state
            assert not np.allclose(inc.numpy(), features[f"interaction_{k}"])
        np.testing.assert_allclose(features[f"interaction_{k}"], flat.numpy(), rtol=1e-4, atol=1e-5)

    if arch == "visnet":
        final = pyg.visnet_to_e3nn(seen["out_norm"], seen["vec_out_norm"]).numpy()
        np.testing.assert_allclose(features["final_norm"], final, rtol=1e-4, atol=1e-5)
        head_input = features["final_norm"]
    else:
        head_input = features[f"interaction_{n_blocks}"]
    np.testing.assert_allclose(adapter.readout(head_input, molecules), prediction, rtol=1e-4, atol=1e-5)
    assert prediction.shape == (len(molecules),) and np.isfinite(prediction).all()


# ------------------------------------------------------------------------------------------- input errors

@pytest.mark.parametrize("arch", ARCHS)
def test_bad_input_is_a_cpd_input_error(adapters, molecules, arch):
    adapter = adapters[arch]
    silane = ase.Atoms("SiH4", positions=[[0, 0, 0], [0.9, 0.9, 0.9], [-0.9, -0.9, 0.9], [-0.9, 0.9, -0.9],
                                          [0.9, -0.9, -0.9]])
    with pytest.raises(CPDInputError, match="Si"):
        adapter.forward_batch([molecules[0], silane])
    with pytest.raises(CPDInputError, match="no atoms"):
        adapter.forward_batch([ase.Atoms()])
    periodic = molecules[0].copy()
    periodic.cell, periodic.pbc = np.eye(3) * 10.0, True
    with pytest.raises(CPDInputError, match="molecules only"):
        adapter.forward_batch([periodic])


# ------------------------------------------------------------------------------------------- metadata

@pytest.mark.parametrize("model_id", ["visnet-random", "schnet-random", "painn-random", "dimenetpp-random"])
def test_registered_random_models(molecules, model_id):
    assert model_id in pyg.MODEL_IDS and pyg.offline_available(model_id)
    info = pyg.describe(model_id)
    assert "random" in info.notes and "testing only" in info.description
    assert info.weights_source == f"random init, seed {pyg.RANDOM_SEED}" and len(info.weights_hash) == 16
    assert info.elements == ("H", "C", "N", "O", "F") and info.input == "molecules"
    assert info.family == {"visnet": "vector-scalar equivariant", "schnet": "learned invariant",
                           "painn": "vector-scalar equivariant",
                           "dimenetpp": "directional (angle-based) invariant"}[info.extra["arch"]]
    adapter = pyg.load(model_id, device="cpu")
    assert adapter.info == info
    out = adapter.forward_batch(molecules[:2])
    assert list(out) == list(info.layers)
    for layer, irreps in info.layers.items():
        assert out[layer].shape == (sum(len(a) for a in molecules[:2]), o3.Irreps(irreps).dim)
    if model_id == "visnet-random":
        assert info.layers["interaction_1"] == "128x0e+128x1o+128x2e" and info.layers["embedding"] == "128x0e"
    # same seed, same weights
    again = pyg.load(model_id, device="cpu").forward_batch(molecules[:1])
    for k in again:
        np.testing.assert_allclose(again[k], out[k][:len(molecules[0])], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip(adapters, molecules, tmp_path, monkeypatch, arch):
    adapter = adapters[arch]
    folder = pyg.save_checkpoint(tmp_path / f"{arch}-qm9-test", arch, SMALL[arch], adapter.model, target="gap",
                                 units="eV", description=f"tiny {arch} for a test")
    (tmp_path / "not-a-model").mkdir()
    loaded = pyg.load_checkpoint(folder, device="cpu")
    assert loaded.info.id == f"{arch}-qm9-test" and loaded.info.layers == adapter.info.layers
    assert loaded.info.weights_hash == file_hash(folder / "model.pt", folder / "card.json")
    a, b = adapter.forward_batch(molecules), loaded.forward_batch(molecules)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(adapter.predict(molecules), loaded.predict(molecules))

    # checkpoints in the zoo folder are registered under their folder name
    monkeypatch.setenv("CPD_ZOO_DIR", str(tmp_path))
    assert pyg.discover_checkpoints() == {f"{arch}-qm9-test": folder}
    assert pyg.offline_available(f"{arch}-qm9-test")
    assert pyg.describe(f"{arch}-qm9-test").extra["target"] == "gap"
    zoo = pyg.load(f"{arch}-qm9-test", device="cpu").forward_batch(molecules[:1])
    for k in zoo:
        np.testing.assert_allclose(zoo[k], a[k][:len(molecules[0])], rtol=1e-4, atol=1e-5)
