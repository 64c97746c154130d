"""SevenNet-0 (11Jul2024) and SevenNet-l3i5 from the `sevenn` wheel (checkpoints ship inside the wheel).

Layers are the node features after each interaction block's equivariant gate (`interaction_1`..`interaction_5`),
i.e. the states the next block (or, for the last one, the energy readout `reduce_input_to_hidden`) reads. The
last block keeps only scalars, so `interaction_5` *is* the readout input; there is no separate readout layer.

The model's own modules compute everything except the edge convolutions, which are evaluated by
`FastConvolution`: the same e3nn `TensorProduct` ('uvu' paths, per-edge weights from the module's own radial
MLP), regrouped by input irrep into small batched matmuls over chunks of edges, so that no (edges x 3136) message
tensor is materialised (3-4x faster than the module on CPU). It is checked against the module's e3nn tensor
product when the model is loaded, and the tests compare every layer with the unmodified model's states. The radial
MLP runs once per undirected edge (both directions of an edge have the same length, hence the same weights).
Force and stress heads and the energy readout are not run; everything runs under `torch.inference_mode`, with
TorchScript's shape re-profiling off (every batch has new atom/edge counts).

Threads: on a machine shared with other jobs, PyTorch's default OpenMP threads spin-wait at every small op and
can be 10-20x slower with 2 threads than with 1; use `torch.set_num_threads(1)` there (or OMP_WAIT_POLICY=PASSIVE).

SevenNet works on edge vectors only, so molecules need no cell: structures without pbc get every atom pair within
the cutoff (no periodic images), as in `sevenn`'s own calculator.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import ase
import numpy as np
from ase.data import chemical_symbols

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, file_hash
from cpd_core.models.sevennet_fast import FastConvolution
from cpd_core.models.graphs import LARGE_MOLECULE  # larger molecules use a neighbour list instead of all pairs
from cpd_core.models.weights import checkpoint_available, local_weights, package_dir, wheel_checkpoint

MODEL_IDS = ("sevennet-0", "sevennet-l3i5")
FAMILY = "tensor-product equivariant"
CUTOFF = 5.0

# Z in both checkpoints' type maps: 1..94 except Po, At, Rn, Fr, Ra (checked against the loaded model in the tests)
_MISSING_Z = {84, 85, 86, 87, 88}
ELEMENTS = tuple(chemical_symbols[z] for z in range(1, 95) if z not in _MISSING_Z)

_L2 = "128x0e+64x1e+32x2e"
_L3 = "128x0e+64x1e+32x2e+32x3e"
_SPECS = {
    "sevennet-0": dict(
        folder="SevenNet_0__11Jul2024",
        file="checkpoint_sevennet_0.pth",
        layers={"interaction_1": _L2, "interaction_2": _L2, "interaction_3": _L2, "interaction_4": _L2,
                "interaction_5": "128x0e"},
        description="SevenNet-0 (11Jul2024): NequIP-style E(3)-equivariant interatomic potential, 5 interaction "
                    "blocks, lmax 2, trained on MPtrj (PBE/PBE+U) crystals.",
    ),
    "sevennet-l3i5": dict(
        folder="SevenNet_l3i5",
        file="checkpoint_l3i5.pth",
        layers={"interaction_1": _L3, "interaction_2": _L3, "interaction_3": _L3, "interaction_4": _L3,
                "interaction_5": "128x0e"},
        description="SevenNet-l3i5: SevenNet-0 architecture with lmax 3 (5 interaction blocks), trained on MPtrj "
                    "(PBE/PBE+U) crystals.",
    ),
}
NOTES = (
    "Layers are node-feature states after each interaction block (after its equivariant gate); interaction_5 keeps "
    "only scalars and is the input of the energy readout (reduce_input_to_hidden), so no separate readout layer is "
    "listed. SevenNet has no parity (is_parity=False): every irrep carries the label 'e' and features are "
    "SO(3)-equivariant (proper rotations), not O(3); L>0 blocks use e3nn's real spherical-harmonic basis, so "
    "e3nn's Wigner matrices apply without conversion. Molecules need no cell: without pbc every atom pair within "
    "the 5 Å cutoff is an edge and there are no periodic images. Force/stress heads and the readout are not run. "
    "Trained on inorganic crystals (MPtrj), so organic molecules are outside its training domain."
)


def _checkpoint_path(model_id: str) -> Path:
    """Local weights folder first (`<weights>/sevennet/<file>`), then the checkpoint inside the wheel."""
    spec = _SPECS[model_id]
    local = local_weights(f"sevennet/{spec['file']}")
    if local is not None:
        return local
    return package_dir("sevenn", "sevenn==0.13.0") / "pretrained_potentials" / spec["folder"] / spec["file"]


def _check_id(model_id: str) -> None:
    if model_id not in _SPECS:
        raise CPDInputError(f"Unknown SevenNet model '{model_id}'; choose one of {', '.join(MODEL_IDS)}.")


def describe(model_id: str) -> ModelInfo:
    _check_id(model_id)
    spec = _SPECS[model_id]
    path = wheel_checkpoint(lambda: _checkpoint_path(model_id))
    return ModelInfo(
        id=model_id,
        family=FAMILY,
        elements=ELEMENTS,
        cutoff=CUTOFF,
        layers=dict(spec["layers"]),
        weights_source=str(path) if path is not None else f"sevenn wheel: pretrained_potentials/{spec['folder']}",
        weights_hash=file_hash(path) if path is not None and path.is_file() else "",
        description=spec["description"],
        input="any",
        notes=NOTES,
        extra={"package": "sevenn", "package_version": "0.13.0", "checkpoint": spec["file"], "parity": False},
    )


def offline_available(model_id: str) -> bool:
    _check_id(model_id)
    return checkpoint_available(lambda: _checkpoint_path(model_id))


def load(model_id: str) -> "SevenNetAdapter":
    _check_id(model_id)
    return SevenNetAdapter(model_id)


# ----------------------------------------------------------------------------------------------- graph building

def _molecule_half_edges(numbers_counts: np.ndarray, positions: np.ndarray, cutoff: float):
    """Every pair i < j of the same molecule closer than the cutoff, for many molecules at once (no Python loop
    over molecules). numbers_counts: atoms per molecule; positions: concatenated. Returns (i, j, vec j - i)."""
    n = np.asarray(numbers_counts, dtype=np.int64)
    total = int(n.sum())
    ends = np.repeat(np.cumsum(n), n)                 # end (exclusive) of each atom's molecule
    count = ends - np.arange(total) - 1               # partners with a larger index in the same molecule
    i = np.repeat(np.arange(total), count)
    first = np.cumsum(count) - count
    j = i + 1 + (np.arange(int(count.sum())) - np.repeat(first, count))
    vec = positions[j] - positions[i]
    keep = np.einsum("ij,ij->i", vec, vec) < cutoff * cutoff
    return i[keep], j[keep], vec[keep]


def _neighbour_list_half_edges(atoms: ase.Atoms, cutoff: float):
    """Half of the (periodic) neighbour list: (i, j, vec) with i < j, or i == j and a lexicographically positive
    image shift; the other half is the same edges reversed."""
    if abs(atoms.cell.volume) < 1e-8 and atoms.pbc.all():
        raise CPDInputError(f"Structure {atoms.get_chemical_formula()} has pbc=True but no (or a flat) cell.")
    if atoms.pbc.all():
        from matscipy.neighbours import neighbour_list
        i, j, vec, shift = neighbour_list("ijDS", pbc=atoms.pbc, cell=np.array(atoms.cell),
                                          positions=atoms.positions, cutoff=cutoff)
    else:
        from ase.neighborlist import neighbor_list
        i, j, vec, shift = neighbor_list("ijDS", atoms, cutoff)
    s0, s1, s2 = shift[:, 0], shift[:, 1], shift[:, 2]
    positive = (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
    half = (i < j) | ((i == j) & positive)
    if 2 * int(half.sum()) != len(i):
        raise RuntimeError("periodic neighbour list is not symmetric")  # never expected
    return i[half].astype(np.int64), j[half].astype(np.int64), vec[half]


def build_graph(atoms_list: list[ase.Atoms], cutoff: float):
    """Batched graph: numbers, edge index (2, E) with row 0 = receiving atom i and row 1 = sending atom j,
    edge vectors r_j - r_i (+ cell shift), structure index per atom, and the number H of undirected edges:
    edges H..2H-1 are edges 0..H-1 reversed."""
    counts = np.array([len(a) for a in atoms_list], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    numbers = np.concatenate([a.numbers for a in atoms_list]).astype(np.int64)
    # all-pairs numpy for molecules (no pbc) up to LARGE_MOLECULE atoms; a cell-list neighbour list otherwise
    small = np.array([not a.pbc.any() for a in atoms_list]) & (counts <= LARGE_MOLECULE)
    parts = []
    if small.any():
        mol_idx = np.flatnonzero(small)
        mol_pos = np.concatenate([atoms_list[k].positions for k in mol_idx])
        i, j, vec = _molecule_half_edges(counts[mol_idx], mol_pos, cutoff)
        # molecule-local concatenated index -> batch index
        local_to_global = np.concatenate([offsets[k] + np.arange(counts[k]) for k in mol_idx])
        parts.append((local_to_global[i], local_to_global[j], vec))
    for k in np.flatnonzero(~small):
        i, j, vec = _neighbour_list_half_edges(atoms_list[k], cutoff)
        parts.append((i + offsets[k], j + offsets[k], vec))
    if parts:
        hi = np.concatenate([p[0] for p in parts])
        hj = np.concatenate([p[1] for p in parts])
        hv = np.concatenate([p[2] for p in parts])
    else:
        hi = hj = np.zeros(0, dtype=np.int64)
        hv = np.zeros((0, 3))
    edge_index = np.stack([np.concatenate([hi, hj]), np.concatenate([hj, hi])])
    edge_vec = np.concatenate([hv, -hv])
    batch = np.repeat(np.arange(len(atoms_list)), counts)
    return numbers, edge_index, edge_vec, batch, len(hi)


# ------------------------------------------------------------------------------------------------- adapter

class SevenNetAdapter(ModelAdapter):
    def __init__(self, model_id: str):
        import torch
        import sevenn._keys as KEY
        import sevenn.util as sevenn_util

        self.info = describe(model_id)
        path = _checkpoint_path(model_id)
        if not path.is_file():
            raise CPDInputError(f"SevenNet checkpoint not found at {path}; reinstall `sevenn==0.13.0`.")
        self.checkpoint_path = path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = sevenn_util.load_checkpoint(str(path))
            model = checkpoint.build_model()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.KEY = KEY
        self.cutoff = float(checkpoint.config[KEY.CUTOFF])
        self.type_map = dict(checkpoint.config[KEY.TYPE_MAP])
        self._z_to_index = model.z_to_onehot_tensor.clone()
        names = list(model._modules)
        gates = [n for n in names if n.endswith("_equivariant_gate")]
        if len(gates) != len(self.info.layers):
            raise RuntimeError(f"{model_id}: expected {len(self.info.layers)} interaction blocks, found {len(gates)}")
        self._gate_to_layer = dict(zip(gates, self.info.layers))
        last = names.index(gates[-1])
        self._body = [(n, model._modules[n]) for n in names[:last + 1]]
        # the model's own modules after the last layer, without the force/stress head (bookkeeping only)
        self._readout = [(n, model._modules[n]) for n in names[last + 1:] if "force" not in n and "stress" not in n]
        self._convolutions = {}
        for n, module in self._body:
            if n.endswith("_convolution"):
                fast = FastConvolution(module)
                with torch.inference_mode():
                    fast.check()
                self._convolutions[n] = fast
        for name, irreps in self.info.layers.items():  # describe() must match the loaded model
            gate = gates[list(self.info.layers).index(name)]
            actual = model.get_irreps_in(gate, "irreps_out")
            from e3nn import o3
            if o3.Irreps(actual) != o3.Irreps(irreps):
                raise RuntimeError(f"{model_id} {name}: model has {actual}, describe() says {irreps}")

    def default_batch_size(self) -> int:
        return 32

    def _data(self, atoms_list):
        import torch

        KEY = self.KEY
        numbers, edge_index, edge_vec, batch, n_half = build_graph(atoms_list, self.cutoff)
        z = torch.from_numpy(numbers)
        data = {
            KEY.ATOMIC_NUMBERS: z,
            KEY.NODE_FEATURE: self._z_to_index[z],
            KEY.EDGE_IDX: torch.from_numpy(edge_index),
            KEY.EDGE_VEC: torch.from_numpy(edge_vec).float(),
            KEY.BATCH: torch.from_numpy(batch),
            KEY.NUM_ATOMS: torch.tensor([len(a) for a in atoms_list]),
        }
        return data, n_half

    def _run(self, atoms_list):
        """Body of the network on one batched graph: {layer: tensor} plus the data dict."""

        KEY = self.KEY
        data, n_half = self._data(atoms_list)
        states = {}
        for name, module in self._body:
            fast = self._convolutions.get(name)
            if fast is not None:
                emb = data[KEY.EDGE_EMBEDDING]
                data[KEY.NODE_FEATURE] = fast(data[KEY.NODE_FEATURE], data[KEY.EDGE_ATTR], data[KEY.EDGE_IDX][1],
                                              data[KEY.EDGE_IDX][0], n_half,
                                              lambda lo, hi, f=fast: f.radial_weights(emb[lo:hi]), ordered=True)
            else:
                data = module(data)
            layer = self._gate_to_layer.get(name)
            if layer is not None:
                states[layer] = data[KEY.NODE_FEATURE]
        return states, data

    def forward_batch(self, atoms_list: list[ase.Atoms]) -> dict[str, np.ndarray]:
        import torch

        self.check_structures(atoms_list)
        # optimized_execution(False): TorchScript would otherwise re-profile e3nn's scripted modules for every new
        # number of atoms/edges (every batch), which costs more than it gains here
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            states, _ = self._run(list(atoms_list))
        return {layer: states[layer].float().numpy().copy() for layer in self.info.layers}

    def energies_from_last_layer(self, atoms_list: list[ase.Atoms], last_state: np.ndarray) -> np.ndarray:
        """Total energy (eV) per structure from a given `interaction_5` state, through the model's own remaining
        modules (readout MLP, species-wise shift/scale, sum over atoms). Bookkeeping check only."""
        import torch

        KEY = self.KEY
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            _, data = self._run(list(atoms_list))
            data[KEY.NODE_FEATURE] = torch.from_numpy(np.asarray(last_state, dtype=np.float32))
            for _, module in self._readout:
                data = module(data)
            return data[KEY.PRED_TOTAL_ENERGY].double().numpy().reshape(-1)

    def ase_calculator(self):
        """sevenn's own `SevenNetCalculator` (energy, forces, stress; one structure at a time) on a copy of the
        loaded model (the calculator switches its model to unbatched mode, so it must not share ours)."""
        import copy

        from sevenn.calculator import SevenNetCalculator

        model = copy.deepcopy(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SevenNetCalculator(model, file_type="model_instance", device="cpu")
