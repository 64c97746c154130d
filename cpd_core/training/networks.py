"""The zoo's networks, built for training: MACE (mace-torch) and SchNet/ViSNet/PaiNN/DimeNet++ (through
`cpd_core.models.pyg`'s builders so a saved checkpoint reloads as an adapter), each with its batching and
prediction functions, on the chosen torch device.

Stage: training (the zoo; feeds models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpd_core.training.config import Z


@dataclass
class Prepared:
    """A built network with its batching and prediction functions."""
    model: object
    hparams: dict
    make_batches: object     # (indices of the StructureSet, shuffle rng or None, batch size) -> iterable of batches
    predict: object          # batch -> (predictions tensor (n,), targets tensor (n,))


def batch_indices(indices, rng: np.random.Generator | None, batch_size: int):
    """The indices in batches, shuffled by rng (None: in the given order)."""
    order = np.array(indices)
    if rng is not None:
        order = order[rng.permutation(len(order))]
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]


def _pyg_hparams(arch: str, hp: dict, readout: str, mean: float, std: float, atomref: list | None) -> dict:
    if arch in ("painn", "dimenetpp"):
        return dict(hp, readout="mean" if readout == "mean" else "add", mean=mean, std=std, atomref=atomref)
    if arch == "schnet":
        return dict(hidden_channels=hp["hidden_channels"], num_filters=hp["num_filters"],
                    num_interactions=hp["num_interactions"], num_gaussians=hp["num_gaussians"],
                    cutoff=hp["cutoff"], readout="mean" if readout == "mean" else "add",
                    mean=mean, std=std, atomref=atomref)
    return dict(lmax=hp["lmax"], hidden_channels=hp["hidden_channels"], num_layers=hp["num_layers"],
                num_heads=hp["num_heads"], num_rbf=hp["num_rbf"], cutoff=hp["cutoff"],
                reduce_op="mean" if readout == "mean" else "sum", mean=mean, std=std, atomref=atomref)


def _atomref_table(coef: np.ndarray) -> list:
    table = np.zeros(100)
    table[list(Z)] = coef[:len(Z)]
    return table.tolist()


def prepare_pyg(arch, hp, structures, y, readout, mean, std, e0, device="cpu") -> Prepared:
    """SchNet/ViSNet/PaiNN/DimeNet++ built by pyg.py's builders (so the saved checkpoint reloads through
    pyg.load_checkpoint)."""
    import torch

    from cpd_core.models.pyg import BUILDERS

    # SchNet, PaiNN and DimeNet++ apply mean/std per atom before their readout: for a sum readout that shifts by
    # n_atoms * mean, so the mean goes to zero there (the atomref carries the offset); ViSNet adds mean after the
    # reduction.
    pyg_hp = _pyg_hparams(arch, hp, readout, mean if (readout == "mean" or arch == "visnet") else 0.0, std,
                          None if e0 is None else _atomref_table(e0))
    model = BUILDERS[arch](pyg_hp).to(device).train()
    numbers = torch.as_tensor(structures.numbers.astype(np.int64), device=device)
    positions = torch.as_tensor(structures.positions, dtype=torch.float32, device=device)
    offsets = structures.offsets
    targets = torch.tensor(y, dtype=torch.float32, device=device)

    def make_batches(indices, rng, batch_size):
        for idx in batch_indices(indices, rng, batch_size):
            rows = torch.as_tensor(np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx]),
                                   device=device)
            counts = torch.as_tensor(offsets[idx + 1] - offsets[idx], device=device)
            batch = torch.repeat_interleave(torch.arange(len(idx), device=device), counts)
            yield numbers[rows], positions[rows], batch, targets[torch.as_tensor(idx, device=device)]

    def predict(b):
        z, pos, batch, t = b
        out = model(z, pos, batch)
        out = out[0] if isinstance(out, tuple) else out
        return out.reshape(-1), t

    return Prepared(model, pyg_hp, make_batches, predict)


def build_mace(hp: dict, e0: np.ndarray, scale: float, avg_num_neighbors: float):
    import torch
    from e3nn import o3

    from cpd_core.models.mace import _import_mace

    _import_mace()
    from mace import modules

    return modules.ScaleShiftMACE(
        r_max=hp["r_max"], num_bessel=hp["num_bessel"], num_polynomial_cutoff=hp["num_polynomial_cutoff"],
        max_ell=hp["max_ell"], interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=hp["num_interactions"], num_elements=len(Z), hidden_irreps=o3.Irreps(hp["hidden_irreps"]),
        MLP_irreps=o3.Irreps(hp["mlp_irreps"]), atomic_energies=np.asarray(e0, dtype=np.float64),
        avg_num_neighbors=avg_num_neighbors, atomic_numbers=list(Z), correlation=hp["correlation"],
        gate=torch.nn.functional.silu, radial_MLP=hp["radial_mlp"], atomic_inter_scale=scale,
        atomic_inter_shift=0.0)


def mace_graphs(model_or_rmax, atoms_list):
    """mace-torch AtomicData graphs (its own matscipy neighbour lists), float32."""
    from cpd_core.models.mace import _import_mace

    mace_data, _, torch_tools, utils = _import_mace()
    r_max = float(model_or_rmax if isinstance(model_or_rmax, (int, float)) else model_or_rmax.r_max)
    z_table = utils.AtomicNumberTable(list(Z))
    keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={})
    with torch_tools.default_dtype("float32"):
        return [mace_data.AtomicData.from_config(mace_data.config_from_atoms(a, key_specification=keyspec),
                                                 z_table=z_table, cutoff=r_max, heads=["Default"])
                for a in atoms_list]


def mace_predict(model, graphs, readout: str, device="cpu"):
    """Per-molecule prediction of a zoo MACE: its total energy (sum readout) or that over n_atoms (mean)."""
    from cpd_core.models.mace import _import_mace

    _, tg, _, _ = _import_mace()
    batch = tg.Batch.from_data_list(graphs).to(device)
    out = model(batch.to_dict(), training=model.training, compute_force=False)["energy"]
    if readout == "mean":
        out = out / (batch.ptr[1:] - batch.ptr[:-1]).to(out.dtype)
    return out


def prepare_mace(hp, structures, y, readout, mean, std, e0, train_idx, device="cpu") -> Prepared:
    import torch

    atoms = structures.to_atoms_list()
    graphs = mace_graphs(hp["r_max"], atoms)
    n_edges = sum(g.edge_index.shape[1] for g in (graphs[i] for i in train_idx))
    n_nodes = sum(len(atoms[i]) for i in train_idx)
    avg = n_edges / n_nodes
    if readout == "mean":
        # every element's E0 = training mean: mean over atoms of (E0 + scale * interaction) = mean + ...
        e0_arr, scale = np.full(len(Z), mean), std
    else:
        e0_arr, scale = np.asarray(e0[:len(Z)]), std
    torch.set_default_dtype(torch.float32)
    model = build_mace(hp, e0_arr, scale, avg).float().to(device).train()
    targets = torch.tensor(y, dtype=torch.float32, device=device)
    full_hp = dict(hp, atomic_energies=list(map(float, e0_arr)), atomic_inter_scale=float(scale),
                   avg_num_neighbors=float(avg), atomic_numbers=list(Z), readout=readout)

    def make_batches(indices, rng, batch_size):
        for idx in batch_indices(indices, rng, batch_size):
            yield [graphs[i] for i in idx], targets[torch.as_tensor(idx, device=device)]

    def predict(b):
        g, t = b
        return mace_predict(model, g, readout, device).reshape(-1), t

    return Prepared(model, full_hp, make_batches, predict)


def prepare(arch: str, hp: dict, td, readout: str, device: str = "cpu") -> Prepared:
    """The network of `arch` for the training data `td` (a `data.TrainingData`) on `device` (cpu | cuda)."""
    if arch == "mace":
        return prepare_mace(hp, td.data, td.y, readout, td.mean, td.std, td.e0, td.train, device)
    return prepare_pyg(arch, hp, td.data, td.y, readout, td.mean, td.std, td.e0, device)


def layer_irreps(arch, hparams, model) -> dict:
    """The trained network's layers with the e3nn irreps of their per-atom features (as the adapters expose them)."""
    if arch == "mace":
        from cpd_core.models.mace import _layers_from_model

        return _layers_from_model(model)
    from cpd_core.models.pyg import layer_irreps as pyg_layers

    return pyg_layers(arch, hparams)
