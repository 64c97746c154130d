"""SevenNet-0 (11Jul2024) and SevenNet-l3i5 from the `sevenn` wheel (checkpoints ship inside the wheel).

Layers are the node features after each interaction block's equivariant gate (`interaction_1`..`interaction_5`),
i.e. the states the next block (or, for the last one, the energy readout `reduce_input_to_hidden`) reads. The
last block keeps only scalars, so `interaction_5` *is* the readout input; there is no separate readout layer.

The model's own modules compute everything except the edge convolutions, which are evaluated by
`_FastConvolution`: the same e3nn `TensorProduct` ('uvu' paths, per-edge weights from the module's own radial
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
"""

from __future__ import annotations

import warnings
from pathlib import Path

import ase
import numpy as np
from ase.data import chemical_symbols

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, file_hash
from cpd_core.models.couplings import path_coupling
from cpd_core.models.graphs import LARGE_MOLECULE  # larger molecules use a neighbour list instead of all pairs
from cpd_core.models.weights import local_weights, package_dir

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
    try:
        path = _checkpoint_path(model_id)
    except CPDInputError:
        path = None
    exists = path is not None and path.is_file()
    return ModelInfo(
        id=model_id,
        family=FAMILY,
        elements=ELEMENTS,
        cutoff=CUTOFF,
        layers=dict(spec["layers"]),
        weights_source=str(path) if path is not None else f"sevenn wheel: pretrained_potentials/{spec['folder']}",
        weights_hash=file_hash(path) if exists else "",
        description=spec["description"],
        input="any",
        notes=NOTES,
        extra={"package": "sevenn", "package_version": "0.13.0", "checkpoint": spec["file"], "parity": False},
    )


def offline_available(model_id: str) -> bool:
    _check_id(model_id)
    try:
        return _checkpoint_path(model_id).is_file()
    except CPDInputError:
        return False


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


# ------------------------------------------------------------------------------------------ fast convolution

class _FastConvolution:
    """sevenn `IrrepsConvolution` (e3nn TensorProduct with 'uvu' instructions and per-edge weights, followed by
    a scatter-sum over receiving atoms and division by the module's denominator), regrouped by input irrep.

    For input irrep block l1 (mul u, dim d1) every path (l1, l2 -> l3) is out[k, u] = path_weight * w_e[p, u] *
    sum_ij x_src[i, u] Y_e[j] C^{l1 l2 l3}[i, j, k]. B_e = Y_e @ C (all paths of l1 side by side, path weights
    folded in) is tiny per edge, so a block's messages are one batched matmul B_e (K x d1) @ x_src (d1 x u), times
    the radial weights, summed into the receiving atoms chunk by chunk (a chunk stays in cache). The K columns
    list a block's paths by output L, so the paths of one L take their weights in one broadcast product. Columns
    are put into the module's irreps_out order once per call, per atom."""

    def __init__(self, module, chunk: int = 256):
        import torch

        tp = module.convolution
        self.module = module
        self.chunk = chunk  # undirected edges per message chunk (both directions are processed)
        self.mlp_chunks = 8  # chunks per radial-MLP block (2,048 edges)
        ir1, ir2, irout = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        for ins in tp.instructions:
            if ins.connection_mode != "uvu" or not ins.has_weight or tuple(ins.path_shape) != (ir1[ins.i_in1].mul, 1):
                raise NotImplementedError(f"unsupported tensor-product instruction {ins}")
        if any(mul != 1 for mul, _ in ir2):
            raise NotImplementedError(f"unsupported filter irreps {ir2}")
        weight_offsets, offset = [], 0
        for ins in tp.instructions:
            weight_offsets.append(offset)
            offset += int(np.prod(ins.path_shape))
        by_input: dict[int, list[int]] = {}
        for n, ins in enumerate(tp.instructions):
            by_input.setdefault(ins.i_in1, []).append(n)
        in_slices, out_slices = ir1.slices(), irout.slices()
        source_col = np.full(irout.dim, -1, dtype=np.int64)
        self.groups = []
        Cs, weight_order = [], []
        col = t_offset = b_offset = 0
        for i1, members in sorted(by_input.items()):
            mul, d1 = ir1[i1].mul, ir1[i1].ir.dim
            members = sorted(members, key=lambda n: irout[tp.instructions[n].i_out].ir.dim)  # paths by output L
            C, firsts = path_coupling(tp, members)  # [ir2.dim, d1, K]
            K = C.shape[2]
            paths = []  # (first column in K, width, first weight column)
            for n, k0 in zip(members, firsts):
                ins = tp.instructions[n]
                d3 = irout[ins.i_out].ir.dim
                paths.append((k0, d3, weight_offsets[n]))
                start = out_slices[ins.i_out].start
                u, k = np.meshgrid(np.arange(mul), np.arange(d3), indexing="ij")
                source_col[start + u * d3 + k] = col + (k0 + k) * mul + u
            runs = []  # consecutive paths of one output L: (first column in K, first path, paths, width)
            for p, (k0, d3, _) in enumerate(paths):
                if runs and runs[-1][3] == d3:
                    runs[-1][2] += 1
                else:
                    runs.append([k0, p, 1, d3])
            self.groups.append(dict(start=in_slices[i1].start, stop=in_slices[i1].stop, mul=mul, d1=d1, K=K,
                                    t_start=t_offset, t_stop=t_offset + mul * d1, b_start=b_offset,
                                    b_stop=b_offset + K * d1, w_start=len(weight_order),
                                    w_stop=len(weight_order) + len(paths) * mul, n_paths=len(paths),
                                    runs=[tuple(r) for r in runs]))
            Cs.append(C.permute(0, 2, 1).reshape(ir2.dim, K * d1))
            for _, _, w0 in paths:  # this group's path weights side by side: (paths, mul)
                weight_order.extend(range(w0, w0 + mul))
            t_offset += mul * d1
            b_offset += K * d1
            col += mul * K
        assert (source_col >= 0).all() and col == irout.dim
        assert sorted(weight_order) == list(range(tp.weight_numel))
        self.source_col = torch.from_numpy(source_col)
        self.C = torch.cat(Cs, 1).float()  # filter (Y) -> B of every group, one matmul per edge chunk
        self.weight_order = torch.tensor(weight_order)
        # radial MLP with its last (linear) layer's columns put in weight_order once, so the weights come out
        # grouped; same products and sums as the module's e3nn FullyConnectedNet
        layers = list(module.weight_nn.children())
        last = layers[-1] if layers else None
        if last is not None and getattr(last, "act", "x") is None and hasattr(last, "var_out"):
            scaled = last.weight.detach() / (last.h_in * last.var_in / last.var_out) ** 0.5
            self._mlp_hidden = layers[:-1]
            self._mlp_last = scaled[:, self.weight_order].contiguous()
        else:  # not an e3nn FullyConnectedNet: run it as is and reorder its output
            self._mlp_hidden = None
            self._mlp_last = None

    def radial_weights(self, embedding):
        """The module's radial MLP on edge embeddings, columns in `weight_order`."""
        if self._mlp_hidden is None:
            return self.module.weight_nn(embedding).index_select(1, self.weight_order)
        h = embedding
        for layer in self._mlp_hidden:
            h = layer(h)
        return h @ self._mlp_last

    def __call__(self, x, edge_attr, edge_src, edge_dst, n_half: int, weights_for, ordered: bool = False):
        """Aggregated messages (atoms, irreps_out.dim) = the module's forward. The edge list is symmetric: edge
        n_half + k is edge k reversed. `weights_for(lo, hi)` gives the radial-MLP weights of undirected edges
        lo..hi-1 (both directions have the same length, so the same weights), in the module's order or, with
        `ordered`, in `weight_order` (see `radial_weights`); it is called block by block, so no (edges x weights)
        tensor is ever held."""
        import torch

        n_atoms = x.shape[0]
        # each input block transposed once per call to (atoms, d1, mul), so gathered rows feed bmm contiguously
        x_t = torch.cat([x[:, g["start"]:g["stop"]].view(n_atoms, g["mul"], g["d1"]).transpose(1, 2)
                         .reshape(n_atoms, -1) for g in self.groups], 1)
        sums = [x.new_zeros(n_atoms, g["mul"] * g["K"]) for g in self.groups]
        block = self.chunk * self.mlp_chunks
        for lo in range(0, n_half, self.chunk):
            hi = min(n_half, lo + self.chunk)
            if lo % block == 0:  # the radial MLP runs on larger blocks (better GEMMs), the messages on chunks
                w_block = weights_for(lo, min(n_half, lo + block))
                if not ordered:
                    w_block = w_block.index_select(1, self.weight_order)
            w = w_block[lo % block:lo % block + (hi - lo)]
            for s, e in ((lo, hi), (n_half + lo, n_half + hi)):
                m = e - s
                xs = x_t.index_select(0, edge_src[s:e])
                B_all = edge_attr[s:e] @ self.C
                dst = edge_dst[s:e]
                for g, out in zip(self.groups, sums):
                    mul, d1, K = g["mul"], g["d1"], g["K"]
                    X = xs[:, g["t_start"]:g["t_stop"]].view(m, d1, mul)
                    B = B_all[:, g["b_start"]:g["b_stop"]].view(m, K, d1)
                    W = w[:, g["w_start"]:g["w_stop"]].view(m, g["n_paths"], mul)  # (m, paths, mul)
                    if d1 == 1:  # scalars in: x times each path's weights, then times B (outer product)
                        XW, T = X * W, x.new_empty(m, K, mul)
                        for k0, p0, n, d3 in g["runs"]:  # the paths of one output L: one broadcast product
                            torch.mul(XW[:, p0:p0 + n, None, :], B[:, k0:k0 + n * d3].view(m, n, d3, 1),
                                      out=T[:, k0:k0 + n * d3].view(m, n, d3, mul))
                    else:
                        T = torch.bmm(B, X)  # (m, K, mul)
                        for k0, p0, n, d3 in g["runs"]:
                            T[:, k0:k0 + n * d3].view(m, n, d3, mul).mul_(W[:, p0:p0 + n, None, :])
                    out.index_add_(0, dst, T.view(m, -1))
        return torch.cat(sums, 1).index_select(1, self.source_col).div(self.module.denominator)

    def check(self, seed: int = 0) -> float:
        """Relative difference to the module's own e3nn tensor product + scatter on random inputs."""
        import torch
        from sevenn.nn.convolution import message_gather

        tp = self.module.convolution
        g = torch.Generator().manual_seed(seed)
        n_atoms, n_half = 7, 300  # more than one chunk
        x = torch.randn(n_atoms, tp.irreps_in1.dim, generator=g)
        attr = torch.randn(2 * n_half, tp.irreps_in2.dim, generator=g)
        w = torch.randn(n_half, tp.weight_numel, generator=g)
        src = torch.randint(0, n_atoms, (n_half,), generator=g)
        dst = torch.randint(0, n_atoms, (n_half,), generator=g)
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
        ref = message_gather(x, dst, tp(x[src], attr, torch.cat([w, w]))).div(self.module.denominator)
        new = self(x, attr, src, dst, n_half, lambda lo, hi: w[lo:hi])
        err = float((ref - new).abs().max() / ref.abs().max().clamp_min(1e-12))
        emb = torch.rand(50, self.module.weight_nn.hs[0], generator=g)
        ref_w = self.module.weight_nn(emb).index_select(1, self.weight_order)
        err = max(err, float((ref_w - self.radial_weights(emb)).abs().max() / ref_w.abs().max().clamp_min(1e-12)))
        if err > 1e-4:
            raise RuntimeError(f"fast convolution differs from e3nn's by {err:.2e}")
        return err


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
                fast = _FastConvolution(module)
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
        import torch

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
