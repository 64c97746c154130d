"""SO3Net adapter (matgl, PyG backend): the node state after each SO(3) block, in the e3nn layout.

matgl's SO3Net keeps node features as [atoms, (lmax+1)^2, channels] in its own real-spherical-harmonics basis
(index 0 is L=0, 1:4 L=1, 4:9 L=2, ordered m=-l..l with z as the polar axis) and stores the state after block i
in `model.feature_dict['gc_<i>']` after each forward pass. e3nn orders the components of each L differently
(for L=1, (x, y, z); for L=2, y is the polar axis), so each L block is mapped onto e3nn's basis with the
orthogonal matrix that takes matgl's spherical harmonics onto e3nn's (found numerically from both packages' own
harmonics at load time; it is a permutation for L=1 and a fixed rotation within the L=2 block). Norms are
unchanged. The layout becomes `64x0e+64x1o+64x2e` (matgl's Clebsch-Gordan products keep parity, so L=1 is odd
and L=2 even).

Weights: the local weights folder first (`matgl/SO3Net-ANI-1x-Subset-PES`), then matgl's own download by name.
Graphs of molecules are built for a whole batch at once (`molecule_graph`, the same edges as matgl's converter);
periodic structures go through matgl's own converter (`matgl.ext.ase.Atoms2Graph`) and torch-geometric's `Batch`.
No torch-cluster needed.

Speed: matgl's SO3Convolution multiplies every edge with every non-zero Clebsch-Gordan coefficient, tensors of
[edges, CG entries, channels] that dominate its run time. For extraction the same sum is taken in another order
(`dense_convolution`): the radial filters and harmonics are placed into per-molecule pair tensors and the sum over
neighbours is a batched matrix product with the neighbours' features already coupled by the dense Clebsch-Gordan
tensor (structures with periodic images keep matgl's convolution). A batch runs in groups whose pair tensors
hold at most `MAX_PAIRS` cells, so large molecules do not multiply the memory by the batch size. Its per-atom
tensor product (`SO3TensorProduct`) likewise runs with a dense Clebsch-Gordan matrix (`dense_product`). The
features agree with matgl's own forward pass to float32 rounding (tested); the ASE calculator keeps matgl's code.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import threading

import ase
import numpy as np

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, file_hash, index_by_atomic_number, temporary_forwards
from cpd_core.models.graphs import radius_edges
from cpd_core.models.so3net_fast import dense_convolution, dense_product
from cpd_core.models.weights import local_weights

MODEL_ID = "so3net-ani1x"
MODEL_IDS = (MODEL_ID,)
MATGL_NAME = "SO3Net-ANI-1x-Subset-PES"
WEIGHTS = f"matgl/{MATGL_NAME}"
ELEMENTS = ("H", "C", "N", "O")
N_BLOCKS = 3
CHANNELS = 64
LMAX = 2
CUTOFF = 5.0
FAMILY = "tensor-product equivariant"


def _irreps(channels: int, lmax: int) -> str:
    return "+".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))


def describe(model_id: str = MODEL_ID) -> ModelInfo:
    if model_id != MODEL_ID:
        raise CPDInputError(f"Unknown SO3Net model '{model_id}'. Known: {MODEL_ID}.")
    path = local_weights(WEIGHTS)
    return ModelInfo(
        id=MODEL_ID, family=FAMILY, elements=ELEMENTS, cutoff=CUTOFF,
        layers={f"gc_{i}": _irreps(CHANNELS, LMAX) for i in range(1, N_BLOCKS + 1)},
        weights_source=str(path) if path else f"matgl.load_model('{MATGL_NAME}') download",
        weights_hash=file_hash(path) if path else "",
        description="SO3Net potential (matgl 4.x, PyG) for H, C, N, O trained on an ANI-1x subset (DFT): "
                    "3 SO(3) blocks, 64 channels, lmax 2, cutoff 5 A.",
        input="molecules",
        notes="gc_<i> is the node state after SO(3) block i (matgl feature_dict, a residual state, not the "
              "increment), mapped from matgl's real spherical-harmonics basis onto e3nn's. No force head is run.",
    )


def offline_available(model_id: str = MODEL_ID) -> bool:
    return local_weights(WEIGHTS) is not None


def load(model_id: str = MODEL_ID) -> "SO3NetAdapter":
    import matgl

    info = describe(model_id)
    path = local_weights(WEIGHTS)
    try:
        potential = matgl.load_model(str(path) if path else MATGL_NAME)
    except Exception as exc:
        raise CPDInputError(f"Could not load {MATGL_NAME} ({'from ' + str(path) if path else 'download'}): "
                            f"{type(exc).__name__}: {exc}") from exc
    return SO3NetAdapter(potential, info)


def basis_change(sphharm, lmax: int):
    """Per L, the orthogonal (2l+1)x(2l+1) matrix O_l with e3nn_Y_l = O_l @ matgl_Y_l for unit vectors.

    Found by least squares from both packages' spherical harmonics at fixed random directions; each block is
    scaled to be exactly orthogonal (the two conventions differ by a normalisation factor per L)."""
    import torch
    from e3nn import o3

    g = torch.Generator().manual_seed(0)
    v = torch.randn(64, 3, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    theirs = sphharm(v.to(torch.float32)).to(torch.float64)
    comps = o3.Irreps([(1, (l, (-1) ** l)) for l in range(lmax + 1)])
    mats = []
    for l, sl in zip(range(lmax + 1), comps.slices()):
        ours = o3.spherical_harmonics(l, v, normalize=True, normalization="component")
        Q = torch.linalg.lstsq(theirs[:, sl], ours).solution  # ours ~= theirs @ Q
        U, S, Vh = torch.linalg.svd(Q)
        if float(S.max() / S.min()) > 1.001 or float((theirs[:, sl] @ Q - ours).abs().max()) > 1e-3:
            raise CPDInputError(f"matgl's L={l} spherical harmonics are not a rotation of e3nn's.")
        mats.append((U @ Vh).T.contiguous())  # column vectors: e3nn = O @ matgl
    return mats


class SO3NetAdapter(ModelAdapter):
    def __init__(self, potential, info: ModelInfo):
        import torch
        from e3nn import o3

        self.potential = potential.eval()
        self.model = potential.model
        for p in self.potential.parameters():
            p.requires_grad_(False)
        self.elements = tuple(self.model.element_types)
        lmax = int(self.model.lmax)
        channels = int(self.model.dim_node_embedding)
        info.elements = self.elements
        info.cutoff = float(self.model.cutoff)
        info.layers = {f"gc_{i}": _irreps(channels, lmax) for i in range(1, int(self.model.nblocks) + 1)}
        self.info = info
        self.lmax = lmax
        self.channels = channels
        # matgl's [atoms, (lmax+1)^2, channels]: component slices per L, from e3nn
        self._component_irreps = o3.Irreps([(1, (l, (-1) ** l)) for l in range(lmax + 1)])
        dtype = next(self.model.parameters()).dtype
        self._basis = [m.to(dtype) for m in basis_change(self.model.sphharm, lmax)]
        from matgl.ext.ase import Atoms2Graph

        self._converter = Atoms2Graph(self.elements, float(self.model.cutoff))
        self._element_index = index_by_atomic_number(self.elements)  # atomic number -> node type
        self._model_lock = threading.Lock()
        self._dense_product = dense_product(self.model.so3product)
        self._dtype = dtype
        self._torch = torch

    def default_batch_size(self) -> int:
        return 16  # QM9-sized molecules: 16 fit in one run (`runs`), and larger batches pad more

    def _graph(self, atoms):
        g, lattice, _ = self._converter.get_graph(atoms)
        lat = lattice.reshape(-1, 3, 3)[0].to(self._dtype)
        g.pos = g.frac_coords.to(self._dtype) @ lat
        g.pbc_offshift = g.pbc_offset.to(self._dtype) @ lat
        g.edge_index = g.edge_index.long()
        del g.frac_coords
        return g

    def _batch(self, atoms_list):
        """The batched graph: molecules (no pbc) through `molecule_graph`, anything else through matgl's
        converter, one structure at a time."""
        from torch_geometric.data import Batch

        if not any(a.pbc.any() for a in atoms_list):
            return self.molecule_graph(atoms_list)
        return Batch.from_data_list([self._graph(a) for a in atoms_list])

    def molecule_graph(self, atoms_list):
        """What matgl's converter gives for molecules (every ordered pair of atoms closer than the cutoff, no
        periodic shifts), for the whole batch at once. Tested equal to the converter's graphs in its results."""
        from torch_geometric.data import Data

        torch = self._torch
        counts = torch.tensor([len(a) for a in atoms_list])
        pos = torch.as_tensor(np.concatenate([a.positions for a in atoms_list]))
        batch = torch.repeat_interleave(torch.arange(len(atoms_list)), counts)
        edge_index = radius_edges(pos, batch, float(self.model.cutoff), loop=False).flip(0)  # [source, target]
        node_type = torch.from_numpy(self._element_index[np.concatenate([a.numbers for a in atoms_list])])
        g = Data(node_type=node_type, pos=pos.to(self._dtype), edge_index=edge_index, batch=batch,
                 pbc_offshift=torch.zeros(edge_index.shape[1], 3, dtype=self._dtype))
        g.num_graphs = len(atoms_list)
        return g

    def _pair_layout(self, g, n_structures: int):
        """`dense_convolution`'s layout for a batched graph: (molecule, local index) of each atom, the number of
        structures, the most atoms in one, and each edge's cell (molecule, j, i) in the pair tensors; None when an
        atom pair is joined by more than one edge (periodic images), which the pair tensors cannot hold."""
        torch = self._torch
        counts = torch.bincount(g.batch, minlength=n_structures)
        local = torch.arange(len(g.batch)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        n_max = int(counts.max())
        centre, neighbour = g.edge_index.long()  # matgl's idx_i, idx_j
        pair = (g.batch[centre] * n_max + local[neighbour]) * n_max + local[centre]
        if pair.unique().numel() != pair.numel():
            return None
        return g.batch, local, n_structures, n_max, pair

    def _run(self, atoms_list, dense: bool = True):
        """(matgl feature_dict of the batch, the batched graph); `dense` swaps in `dense_convolution` and
        `dense_product` for matgl's convolutions and tensor product."""
        torch = self._torch
        atoms_list = list(atoms_list)
        self.check_structures(atoms_list)
        g = self._batch(atoms_list)
        replacements = {}
        if dense:
            replacements[self.model.so3product] = self._dense_product  # per atom: any graph
            layout = self._pair_layout(g, len(atoms_list))
            if layout is not None:  # None with periodic images: matgl's own convolution
                replacements.update({conv: dense_convolution(conv, layout) for conv in self.model.so3convs})
        with self._model_lock:  # swapped forwards and feature_dict live on the shared model: one run at a time
            with torch.no_grad(), temporary_forwards(replacements):
                self.model(g=g)
            return dict(self.model.feature_dict), g

    def to_e3nn(self, x):
        """matgl [atoms, (lmax+1)^2, channels] -> e3nn layout [atoms, channels*(lmax+1)^2] (mul-major per L)."""
        torch = self._torch
        parts = []
        for O, sl in zip(self._basis, self._component_irreps.slices()):
            block = x[:, sl, :]                                  # [atoms, 2l+1, channels]
            block = torch.einsum("mk,akc->acm", O, block)        # [atoms, channels, 2l+1] in e3nn's basis
            parts.append(block.reshape(x.shape[0], -1))
        return torch.cat(parts, dim=1)

    MAX_PAIRS = 1 << 15  # pair cells (molecule, j, i) in one run's dense tensors: P holds 9 x 64 floats per cell

    def runs(self, atoms_list) -> list[list[ase.Atoms]]:
        """Consecutive structures grouped so that a group's pair tensors (structures x most atoms squared) hold at
        most MAX_PAIRS cells; a structure larger than that runs alone."""
        groups, largest = [], 0
        for atoms in atoms_list:
            largest_with = max(largest, len(atoms))
            if groups and (len(groups[-1]) + 1) * largest_with ** 2 <= self.MAX_PAIRS:
                groups[-1].append(atoms)
                largest = largest_with
            else:
                groups.append([atoms])
                largest = len(atoms)
        return groups

    def forward_batch(self, atoms_list: list[ase.Atoms], dense: bool = True) -> dict[str, np.ndarray]:
        """Per-atom features of the batch; with `dense`, run in groups whose pair tensors stay bounded (`runs`)."""
        outputs = []
        for group in (self.runs(atoms_list) if dense else [list(atoms_list)]):
            features, _ = self._run(group, dense)
            outputs.append({name: self.to_e3nn(features[name]).cpu().numpy().astype(np.float32)
                            for name in self.info.layers})
        return {name: np.concatenate([out[name] for out in outputs]) for name in self.info.layers}

    def ase_calculator(self):
        from matgl.ext.ase import PESCalculator

        return PESCalculator(self.potential, stress_unit="eV/A3")
