"""CHGNet 0.3.0 from the `chgnet` wheel (the checkpoint ships inside the wheel).

Layers are the atom features after each of the 4 atom-convolution layers (`atom_conv_1`..`atom_conv_4`, states,
residual included) and `readout_input`: the layer-normalised `atom_conv_4` features that CHGNet's energy MLP reads.
CHGNet's pooled crystal feature (`crystal_fea`) is the *sum* over atoms of `readout_input`, so it is available as
that layer's `L0/sum` pooling rather than as a separate per-structure layer. Bond and angle features are not
exposed. All features are invariant (family "learned invariant", irreps `64x0e`).

Graphs: periodic structures get CHGNet's own graphs (`CrystalGraphConverter`: pymatgen neighbour list, 6 Å atom
graph, 3 Å bond graph). CHGNet is a crystal model, so a structure without pbc is meant as the molecule centred in a
cubic periodic box of edge = largest extent + 2 x 6 Å + 1 Å, where no atom has a periodic image of any atom within
the 6 Å cutoff (`boxed`; that is what CHGNet's converter and its ASE calculator are given here). The adapter builds
that graph directly: all molecules of a batch form one disjoint-union CrystalGraph made with numpy
(`molecule_union_graph`, the same edges, bonds and angles as the converter's, no images), which avoids pymatgen
and a Python loop per molecule. The batch is CHGNet's `BatchedGraph`.

The layers are computed by `CHGNet._compute`'s own sequence of the model's modules (without force, stress or
magmom heads, under `torch.inference_mode`), with algebraically exact shortcuts: the angle update of the last
block is skipped (nothing reads it); the atom convolutions, bond convolutions and angle updates split the first
layer of their gated MLP by input block, so the atom and bond parts are multiplied once per atom / bond instead of
once per edge / angle; messages are summed per owner by an embedding_bag over rows sorted by owner (CHGNet uses
index_add_); a bond convolution multiplies the weight of bond i into the sum over its angles, not into every
angle; and the first block's angle MLPs take the 31 angle bases through their folded angle embedding. Only the
float summation order differs. The tests compare the layers with CHGNet's own outputs (`predict_graph` atom_fea /
crystal_fea) and the energy with its ASE calculator.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import ase
import numpy as np
from ase.data import chemical_symbols

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, file_hash
from cpd_core.models.chgnet_fast import (ANGLE_BLOCKS, ANGLE_DENSE_BLOCK, ATOM_CONV_BLOCKS, Owners, SplitGatedMLP,
                                         angle_update, atom_conv, bond_conv)
from cpd_core.models.graphs import LARGE_MOLECULE  # larger molecules go through CHGNet's converter (boxed)
from cpd_core.models.weights import checkpoint_available, local_weights, package_dir, wheel_checkpoint

MODEL_IDS = ("chgnet-0.3.0",)
FAMILY = "learned invariant"
ATOM_GRAPH_CUTOFF = 6.0
BOND_GRAPH_CUTOFF = 3.0
BOX_MARGIN = 1.0
CHECKPOINT = "chgnet_0.3.0_e29f68s314m37.pth.tar"
ELEMENTS = tuple(chemical_symbols[z] for z in range(1, 95))  # CHGNet's atom embedding covers Z = 1..94
LAYERS = {
    "atom_conv_1": "64x0e",
    "atom_conv_2": "64x0e",
    "atom_conv_3": "64x0e",
    "atom_conv_4": "64x0e",
    "readout_input": "64x0e",
}
NOTES = (
    "Atom features only (bond and angle features are not exposed). atom_conv_k is the atom-feature state after "
    "atom convolution k (residual included); readout_input is LayerNorm(atom_conv_4), the input of the energy MLP; "
    "CHGNet's pooled crystal_fea equals readout_input summed over atoms (L0/sum pooling). Structures without pbc are "
    "treated as isolated molecules: the features equal CHGNet's on the molecule centred in a cubic periodic box of "
    "edge = largest extent + 2 x 6 Å (atom-graph cutoff) + 1 Å, where no atom sees a periodic image within the "
    "cutoff (the adapter builds that graph directly, without images). CHGNet was trained on crystals (MPtrj), so "
    "molecules are outside its training domain. Structures with partial pbc are treated as fully periodic in their "
    "cell. Isolated atoms (no neighbour within 6 Å) are allowed and keep their embedding-derived features."
)


def _checkpoint_path() -> Path:
    local = local_weights(f"chgnet/{CHECKPOINT}")
    if local is not None:
        return local
    return package_dir("chgnet", "chgnet==0.4.2") / "pretrained" / "0.3.0" / CHECKPOINT


def _check_id(model_id: str) -> None:
    if model_id not in MODEL_IDS:
        raise CPDInputError(f"Unknown CHGNet model '{model_id}'; choose one of {', '.join(MODEL_IDS)}.")


def describe(model_id: str) -> ModelInfo:
    _check_id(model_id)
    path = wheel_checkpoint(lambda: _checkpoint_path())
    return ModelInfo(
        id=model_id,
        family=FAMILY,
        elements=ELEMENTS,
        cutoff=ATOM_GRAPH_CUTOFF,
        layers=dict(LAYERS),
        weights_source=str(path) if path is not None else f"chgnet wheel: pretrained/0.3.0/{CHECKPOINT}",
        weights_hash=file_hash(path) if path is not None and path.is_file() else "",
        description="CHGNet 0.3.0: crystal graph neural network with atom, bond (3 Å) and angle message passing "
                    "(4 atom convolutions, 64 features), trained on MPtrj (PBE/PBE+U) energies, forces, stresses "
                    "and magnetic moments.",
        input="any",
        notes=NOTES,
        extra={"package": "chgnet", "package_version": "0.4.2", "bond_graph_cutoff": BOND_GRAPH_CUTOFF,
               "box_margin": BOX_MARGIN, "crystal_fea": "readout_input/L0/sum"},
    )


def offline_available(model_id: str) -> bool:
    _check_id(model_id)
    return checkpoint_available(lambda: _checkpoint_path())


def load(model_id: str) -> "CHGNetAdapter":
    _check_id(model_id)
    return CHGNetAdapter(model_id)


def boxed(atoms: ase.Atoms, cutoff: float = ATOM_GRAPH_CUTOFF, margin: float = BOX_MARGIN) -> ase.Atoms:
    """A periodic copy of a structure: unchanged if it has pbc, else centred in a cubic box of edge
    largest extent + 2 * cutoff + margin (no atom sees a periodic image within the cutoff)."""
    if atoms.pbc.any():
        if abs(atoms.cell.volume) < 1e-8:
            raise CPDInputError(f"Structure {atoms.get_chemical_formula()} has pbc but no (or a flat) cell.")
        return atoms
    extent = float((atoms.positions.max(0) - atoms.positions.min(0)).max())
    edge = extent + 2 * cutoff + margin
    box = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=[edge, edge, edge], pbc=True)
    box.center()
    return box


def molecule_union_graph(atoms_list: list[ase.Atoms], converter):
    """One CHGNet CrystalGraph holding every molecule of a batch as disconnected components, built with numpy.

    Same content as CHGNet's converter on each boxed molecule: directed edges = every ordered pair of atoms of a
    molecule closer than the atom-graph cutoff (no periodic images), one undirected bond per atom pair (its first
    directed edge is the one from the lower index), and the bond graph (angles): every ordered pair of distinct
    directed edges with the same centre atom, both shorter than the bond-graph cutoff. The lattice is the identity
    and the "fractional" coordinates are the Cartesian positions, so no precision is lost to a large box."""
    import torch
    from chgnet.graph.crystalgraph import CrystalGraph

    cutoff, bond_cutoff = converter.atom_graph_cutoff, converter.bond_graph_cutoff
    counts = np.array([len(a) for a in atoms_list], dtype=np.int64)
    total = int(counts.sum())
    positions = np.concatenate([a.positions for a in atoms_list])
    numbers = np.concatenate([a.numbers for a in atoms_list])
    # every ordered pair (i, j) of the same molecule, i-major then j ascending
    mol_start = np.repeat(np.cumsum(counts) - counts, counts)
    mol_size = np.repeat(counts, counts)
    i = np.repeat(np.arange(total), mol_size)
    j = np.repeat(mol_start, mol_size) + (np.arange(int(mol_size.sum())) - np.repeat(np.cumsum(mol_size) - mol_size,
                                                                                       mol_size))
    vec = positions[j] - positions[i]
    dist = np.sqrt(np.einsum("ij,ij->i", vec, vec))
    keep = (i != j) & (dist <= cutoff)
    i, j, dist = i[keep], j[keep], dist[keep]
    key = i * total + j  # sorted
    reverse = np.searchsorted(key, j * total + i)  # index of the directed edge j -> i
    first = i < j
    undirected_of_first = np.cumsum(first) - 1  # undirected index of each i < j edge, in order of appearance
    directed2undirected = np.where(first, undirected_of_first, undirected_of_first[reverse])
    undirected2directed = np.flatnonzero(first)
    # bond graph: ordered pairs (a, b), a != b, of short directed edges with the same centre
    short = np.flatnonzero(dist < bond_cutoff)
    centre = i[short]  # ascending
    k = np.bincount(centre, minlength=total)[centre]  # short edges at each short edge's centre
    group_first = np.searchsorted(centre, centre, side="left")
    offset = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    a = short[np.repeat(np.arange(len(short)), k)]
    b = short[np.repeat(group_first, k) + offset]
    pair = a != b
    a, b = a[pair], b[pair]
    bond_graph = np.stack([i[a], directed2undirected[a], a, directed2undirected[b], b], axis=1)

    as_int = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.int32)  # noqa: E731
    return CrystalGraph(
        atomic_number=torch.as_tensor(numbers, dtype=torch.int32),
        atom_frac_coord=torch.as_tensor(positions, dtype=torch.float32),
        atom_graph=as_int(np.stack([i, j], axis=1).reshape(-1, 2)),
        neighbor_image=torch.zeros(len(i), 3, dtype=torch.float32),
        directed2undirected=as_int(directed2undirected),
        undirected2directed=as_int(undirected2directed),
        bond_graph=as_int(bond_graph.reshape(-1, 5)),
        lattice=torch.eye(3, dtype=torch.float32),
        graph_id="molecules",
        composition="",
        atom_graph_cutoff=cutoff,
        bond_graph_cutoff=bond_cutoff,
    )


class CHGNetAdapter(ModelAdapter):
    def __init__(self, model_id: str):
        import torch
        from chgnet.model import CHGNet

        self.info = describe(model_id)
        path = _checkpoint_path()
        if not path.is_file():
            raise CPDInputError(f"CHGNet checkpoint not found at {path}; reinstall `chgnet==0.4.2`.")
        self.checkpoint_path = path
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints its size
            warnings.simplefilter("ignore")
            # what CHGNet.load("0.3.0") does, from a path (the local weights folder may hold the file)
            model = CHGNet.from_file(str(path), mlp_out_bias=False, version="0.3.0")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.graph_converter.set_isolated_atom_response("ignore")
        self.model = model
        if len(model.atom_conv_layers) != 4 or model.readout_norm is None or not model.mlp_first:
            raise RuntimeError("unexpected CHGNet architecture for 0.3.0")
        block = model.atom_embedding.embedding.embedding_dim
        self._atom_splits = [SplitGatedMLP(layer.twoBody_atom, block, ATOM_CONV_BLOCKS)
                             for layer in model.atom_conv_layers]
        self._bond_splits = [SplitGatedMLP(layer.twoBody_bond, block, ANGLE_BLOCKS, ANGLE_DENSE_BLOCK)
                             for layer in model.bond_conv_layers]
        self._angle_splits = [SplitGatedMLP(layer.twoBody_bond, block, ANGLE_BLOCKS, ANGLE_DENSE_BLOCK)
                              for layer in model.angle_layers]
        # the first block's angle MLPs read the angle embedding: their dense block runs on the 31 angle bases
        self._basis_dense = [split.dense_through(model.angle_embedding)
                             for split in (self._bond_splits[0], self._angle_splits[0])]
        self._torch = torch

    def default_batch_size(self) -> int:
        return 32

    def graphs(self, atoms_list: list[ase.Atoms]):
        """CHGNet's own CrystalGraphs (pymatgen structures, molecules boxed), one per structure."""
        from pymatgen.io.ase import AseAtomsAdaptor

        converter = self.model.graph_converter
        out = []
        for i, atoms in enumerate(atoms_list):
            structure = AseAtomsAdaptor.get_structure(boxed(atoms))
            out.append(converter(structure, graph_id=str(i)))
        return out

    def _batched_graph(self, atoms_list: list[ase.Atoms]):
        """CHGNet BatchedGraph of a batch, and the atom order it uses (positions in the batch's atom order).

        Molecules (no pbc) of up to LARGE_MOLECULE atoms form one disjoint-union graph built with numpy
        (`molecule_union_graph`: the same atom graph, bonds and 3 Å bond graph as CHGNet's converter makes for the
        boxed molecule, without pymatgen or a Python loop per molecule). Periodic structures and larger molecules
        (boxed) get CHGNet's own converter graphs."""
        from chgnet.model.model import BatchedGraph

        counts = np.array([len(a) for a in atoms_list])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        molecular = [i for i, a in enumerate(atoms_list) if not a.pbc.any() and len(a) <= LARGE_MOLECULE]
        others = sorted(set(range(len(atoms_list))) - set(molecular))
        graphs, order = [], []
        if molecular:
            graphs.append(molecule_union_graph([atoms_list[i] for i in molecular], self.model.graph_converter))
            order += [np.arange(starts[i], starts[i] + counts[i]) for i in molecular]
        if others:
            graphs += self.graphs([atoms_list[i] for i in others])
            order += [np.arange(starts[i], starts[i] + counts[i]) for i in others]
        model = self.model
        with warnings.catch_warnings():  # CHGNet builds `volumes` with torch.tensor(list of tensors)
            warnings.simplefilter("ignore", UserWarning)
            batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                               angle_basis_expansion=model.angle_basis_expansion,
                                               compute_stress=False)
        return batched, np.concatenate(order)

    def _layer_states(self, g) -> dict:
        """`CHGNet._compute` up to the readout input (CHGNet 0.3.0: no magmom head, mlp_first), keeping the atom
        features after each atom convolution. The angle update of the last block is skipped: its output is used by
        nothing (the final block is an atom convolution only). Atom convolutions, bond convolutions and angle updates
        run with their first gated-MLP layer split by input block (`SplitGatedMLP`), the model's own modules
        otherwise. The first block's bond convolution and angle update take their angle block from the angle bases
        through the folded embedding (`SplitGatedMLP.dense_through`)."""
        model = self.model
        atom_feas = model.atom_embedding(g.atomic_numbers - 1)  # H is the first embedding row
        bond_feas = model.bond_embedding(g.bond_bases_ag)
        bond_weights_ag = model.bond_weights_ag(g.bond_bases_ag)
        bond_weights_bg = model.bond_weights_bg(g.bond_bases_bg)
        has_angles = len(g.angle_bases) != 0
        angle_feas = model.angle_embedding(g.angle_bases) if has_angles else None
        atom_graph, bond_graph = g.batched_atom_graph, g.batched_bond_graph
        sizes = {"atom": len(atom_feas), "bond": len(bond_feas)}
        edge_rows = SplitGatedMLP.gather_rows(ATOM_CONV_BLOCKS, sizes, {
            ("atom", 0): atom_graph[:, 0], ("atom", 2): atom_graph[:, 1], ("bond", 1): g.directed2undirected})
        centres = Owners(atom_graph[:, 0], len(atom_feas))
        if has_angles:
            angle_rows = SplitGatedMLP.gather_rows(ANGLE_BLOCKS, sizes, {
                ("bond", 0): bond_graph[:, 1], ("bond", 1): bond_graph[:, 2], ("atom", 3): bond_graph[:, 0]})
            bonds_i = Owners(bond_graph[:, 1], len(bond_feas))
        states = {}
        blocks = list(zip(model.atom_conv_layers[:-1], model.bond_conv_layers, model.angle_layers, strict=True))
        for idx, (atom_layer, bond_layer, angle_layer) in enumerate(blocks):
            atom_feas = atom_conv(atom_layer, self._atom_splits[idx], atom_feas, bond_feas, bond_weights_ag,
                                   edge_rows, g.directed2undirected, centres)
            states[f"atom_conv_{idx + 1}"] = atom_feas
            if has_angles and bond_layer is not None:
                if idx == 0:  # the angle features are still the embedding of the bases: fold it
                    bond_input, angle_input = ((g.angle_bases, weights) for weights in self._basis_dense)
                else:
                    bond_input = angle_input = (angle_feas, None)
                bond_feas = bond_conv(bond_layer, self._bond_splits[idx], atom_feas, bond_feas, bond_weights_bg,
                                       bond_input, bond_graph, angle_rows, bonds_i)
                if angle_layer is not None and idx < len(blocks) - 1:
                    angle_feas = angle_update(angle_layer, self._angle_splits[idx], atom_feas, bond_feas,
                                               angle_feas, angle_input, angle_rows)
        atom_feas = atom_conv(model.atom_conv_layers[-1], self._atom_splits[-1], atom_feas, bond_feas,
                               bond_weights_ag, edge_rows, g.directed2undirected, centres)
        states[f"atom_conv_{len(blocks) + 1}"] = atom_feas
        states["readout_input"] = model.readout_norm(atom_feas)
        return states

    def forward_batch(self, atoms_list: list[ase.Atoms]) -> dict[str, np.ndarray]:
        atoms_list = list(atoms_list)
        self.check_structures(atoms_list)
        with self._torch.inference_mode():
            batched, order = self._batched_graph(atoms_list)
            states = self._layer_states(batched)
        out = {}
        for layer in self.info.layers:
            values = states[layer].float().numpy()
            result = np.empty_like(values)
            result[order] = values  # back to the input's atom order
            out[layer] = result
        return out

    def energies_from_readout_input(self, atoms_list: list[ase.Atoms], readout_input: np.ndarray) -> np.ndarray:
        """Total energy (eV) per structure from given per-atom `readout_input` features, through CHGNet's own
        readout MLP (sum over atoms, divided by the atom count as CHGNet is intensive) plus its composition
        model. Bookkeeping check only."""
        torch = self._torch
        model = self.model
        counts = np.array([len(a) for a in atoms_list])
        with torch.inference_mode():
            site = model.mlp(torch.from_numpy(np.asarray(readout_input, dtype=np.float32))).view(-1).double()
            owners = torch.from_numpy(np.repeat(np.arange(len(atoms_list)), counts))
            per_structure = torch.zeros(len(atoms_list), dtype=torch.float64).index_add_(0, owners, site)
            per_atom = per_structure.numpy() / counts
            per_atom += model.composition_model(self.graphs(list(atoms_list))).double().numpy()
        return per_atom * counts

    def ase_calculator(self):
        """CHGNet's own ASE calculator; structures without pbc are boxed exactly as in `forward_batch`."""
        from chgnet.model.dynamics import CHGNetCalculator

        class BoxingCHGNetCalculator(CHGNetCalculator):
            def calculate(self, atoms=None, properties=None, system_changes=None, task="efsm"):
                if atoms is not None and not atoms.pbc.any():
                    box = boxed(atoms)
                    super().calculate(box, properties, system_changes, task)
                    self.atoms = atoms.copy()  # cache against the caller's (unboxed) structure
                    return
                super().calculate(atoms, properties, system_changes, task)

        with contextlib.redirect_stdout(io.StringIO()):  # it prints the device
            return BoxingCHGNetCalculator(model=self.model, use_device="cpu", on_isolated_atoms="ignore")
