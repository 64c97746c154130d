"""ViSNet, SchNet, DimeNet++ (torch-geometric) and PaiNN (written on its message passing), as layer-state
extractors.

Models come from one code path: `BUILDERS[arch](hparams)` makes the network, and its
weights come either from a fixed random seed (`visnet-random`, `schnet-random`: untrained, for testing only) or
from a checkpoint folder `<zoo>/<id>/` holding `model.pt` (a state dict) and `card.json`
(`{"arch": "visnet"|"schnet"|"painn"|"dimenetpp", "hparams": {...}, ...}`). Every such folder under the zoo (`CPD_ZOO_DIR`, default
`<repo>/zoo`) is registered automatically; `save_checkpoint` writes one.

Graphs: torch-geometric's `radius_graph` needs torch-cluster, which is not installed, so the radius graph is
built here in plain torch (all intra-molecule pairs, then a distance mask) and handed in: SchNet through its
`interaction_graph` callable, ViSNet by replacing `representation_model.distance`. No neighbour cap is applied
(PyG's `max_num_neighbors=32` never binds on QM9's <= 29 atoms). Molecules only: periodic input is rejected.

Layer states, not increments: both networks add each block's output to a running state (SchNet:
`h = h + interaction(h)`, ViSNet: `x, vec = x + dx, vec + dvec`). `_states` runs the model's own forward loop
and records the running state after every block:

- SchNet:  `embedding` (atom-type embedding), `interaction_1..n`; all `Hx0e`. The output head reads
  `interaction_n`.
- PaiNN:   `embedding` (scalars; vectors start at zero), `interaction_1..n` (`Fx0e+Fx1o`: scalar and vector state
  after message + update; see `painn.py`).
- DimeNet++: `embedding`, `interaction_1..n`, all `Hx0e`: per-atom sums of the incoming directional messages
  (DimeNet++ keeps its state on edges; see `dimenet.py`).
- ViSNet:  `embedding` (atom embedding + neighbour embedding, the state entering the first layer; its vectors are
  still zero, so only `Hx0e`), `interaction_1..n` (`Hx0e+Hx1o+Hx2e` for lmax 2), and `final_norm` (the last
  state after ViSNet's output LayerNorm/VecLayerNorm: exactly what the output head reads).

ViSNet keeps vectors as `vec[atom, row, channel]`, rows 0:3 the l=1 block and 3:8 the l=2 block, in the basis of
its own `Sphere` module. Features are returned in e3nn's layout (per irrep, channel-major: the 2l+1 components
of each channel contiguous), after the change of basis from ViSNet's `Sphere` to `e3nn.o3.spherical_harmonics`,
which is computed (not assumed) in `_sphere_to_e3nn`. With e3nn 0.5.1 it is the identity for both l=1 (Cartesian
x, y, z: e3nn's `D_from_matrix` of 1o is R itself) and l=2 (ViSNet's `Sphere` is e3nn's polynomial); the
equivariance tests check the declared irreps against `Irreps.D_from_matrix`.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import ase
import numpy as np

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, file_hash
from cpd_core.models.graphs import radius_edges
from cpd_core.paths import REPO_ROOT

QM9_ELEMENTS = ("H", "C", "N", "O", "F")
ARCHS = ("visnet", "schnet", "painn", "dimenetpp")
RANDOM_SEED = 0
RANDOM_NOTE = "untrained, random weights: for testing only"

# PyG defaults, except lmax=2 for ViSNet (so that an l=2 channel exists)
DEFAULT_HPARAMS = {
    "visnet": dict(lmax=2, vecnorm_type=None, trainable_vecnorm=False, num_heads=8, num_layers=6,
                   hidden_channels=128, num_rbf=32, trainable_rbf=False, max_z=100, cutoff=5.0,
                   max_num_neighbors=32, vertex=False, reduce_op="sum", mean=0.0, std=1.0, atomref=None),
    "schnet": dict(hidden_channels=128, num_filters=128, num_interactions=6, num_gaussians=50, cutoff=10.0,
                   max_num_neighbors=32, readout="add", dipole=False, mean=None, std=None, atomref=None),
    # the papers' QM9 settings (PaiNN: Schütt et al. 2021; DimeNet++: Gasteiger et al. 2020)
    "painn": dict(hidden_channels=128, num_interactions=3, num_rbf=20, cutoff=5.0, readout="add", mean=0.0,
                  std=1.0, atomref=None),
    "dimenetpp": dict(hidden_channels=128, num_blocks=4, int_emb_size=64, basis_emb_size=8, out_emb_channels=256,
                      num_spherical=7, num_radial=6, cutoff=5.0, envelope_exponent=5, readout="add", mean=0.0,
                      std=1.0, atomref=None),
}
RANDOM_MODELS = {"visnet-random": "visnet", "schnet-random": "schnet", "painn-random": "painn",
                 "dimenetpp-random": "dimenetpp"}
FAMILY = {"visnet": "vector-scalar equivariant", "schnet": "learned invariant",
          "painn": "vector-scalar equivariant", "dimenetpp": "directional (angle-based) invariant"}
NAMES = {"visnet": "ViSNet", "schnet": "SchNet", "painn": "PaiNN", "dimenetpp": "DimeNet++"}
CARD = "card.json"
WEIGHTS = "model.pt"


# ----------------------------------------------------------------------------------------------- graphs

def _graph_modules():
    """The two graph modules (defined lazily so that importing this file does not import torch)."""
    import torch

    class RadiusDistance(torch.nn.Module):
        """Drop-in for `torch_geometric.nn.models.visnet.Distance` (self-loops included, as there)."""

        def __init__(self, cutoff: float):
            super().__init__()
            self.cutoff = cutoff

        def forward(self, pos, batch):
            edge_index = radius_edges(pos, batch, self.cutoff, loop=True)
            edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
            mask = edge_index[0] != edge_index[1]
            edge_weight = torch.zeros(edge_vec.size(0), device=pos.device, dtype=pos.dtype)
            edge_weight[mask] = torch.norm(edge_vec[mask], dim=-1)
            return edge_index, edge_weight, edge_vec

    class RadiusInteractionGraph(torch.nn.Module):
        """Drop-in for SchNet's `RadiusInteractionGraph` (no self-loops, as there)."""

        def __init__(self, cutoff: float):
            super().__init__()
            self.cutoff = cutoff

        def forward(self, pos, batch):
            edge_index = radius_edges(pos, batch, self.cutoff, loop=False)
            row, col = edge_index
            return edge_index, (pos[row] - pos[col]).norm(dim=-1)

    return RadiusDistance, RadiusInteractionGraph


# ----------------------------------------------------------------------------------------------- builders

def _hparams(arch: str, hparams: dict) -> dict:
    if arch not in ARCHS:
        raise CPDInputError(f"Unknown architecture '{arch}'; choose one of {ARCHS}.")
    unknown = set(hparams) - set(DEFAULT_HPARAMS[arch])
    if unknown:
        raise CPDInputError(f"Unknown {arch} hyperparameters {sorted(unknown)}; known: {sorted(DEFAULT_HPARAMS[arch])}.")
    return {**DEFAULT_HPARAMS[arch], **hparams}


def build_visnet(hparams: dict):
    """A `torch_geometric.nn.models.ViSNet` (no force head) whose graph is built here, in eval mode."""
    import torch
    from torch_geometric.nn.models import ViSNet

    hp = _hparams("visnet", hparams)
    if hp["lmax"] not in (1, 2):
        raise CPDInputError(f"ViSNet lmax must be 1 or 2 (got {hp['lmax']}).")
    kwargs = dict(hp)
    atomref = kwargs.pop("atomref", None)
    model = ViSNet(**kwargs, derivative=False,
                   atomref=None if atomref is None else torch.as_tensor(atomref, dtype=torch.float32))
    RadiusDistance, _ = _graph_modules()
    model.representation_model.distance = RadiusDistance(hp["cutoff"])
    return model.eval()


def _atomref_placeholder(hp: dict) -> dict:
    """atomref True (a placeholder filled by the checkpoint's state dict) -> a zero table."""
    return dict(hp, atomref=[0.0] * 100) if hp.get("atomref") is True else hp


def build_schnet(hparams: dict):
    """A `torch_geometric.nn.models.SchNet` whose interaction graph is built here, in eval mode.

    `atomref` may be a list of 100 values or True (a placeholder filled by the checkpoint's state dict)."""
    import torch
    from torch_geometric.nn.models import SchNet

    hp = _atomref_placeholder(_hparams("schnet", hparams))
    _, RadiusInteractionGraph = _graph_modules()
    kwargs = dict(hp)
    atomref = kwargs.pop("atomref")
    if atomref is not None:
        atomref = torch.as_tensor(atomref, dtype=torch.float32).view(-1, 1)
    model = SchNet(**kwargs, atomref=atomref, interaction_graph=RadiusInteractionGraph(hp["cutoff"]))
    return model.eval()


def build_painn(hparams: dict):
    """PaiNN (`cpd_core.models.painn`), in eval mode."""
    from cpd_core.models.painn import PaiNN

    return PaiNN(**_atomref_placeholder(_hparams("painn", hparams))).eval()


def build_dimenetpp(hparams: dict):
    """torch-geometric's DimeNet++ blocks with a plain-torch graph (`cpd_core.models.dimenet`), in eval mode."""
    from cpd_core.models.dimenet import DimeNetPPProperty

    return DimeNetPPProperty(**_atomref_placeholder(_hparams("dimenetpp", hparams))).eval()


BUILDERS = {"visnet": build_visnet, "schnet": build_schnet, "painn": build_painn, "dimenetpp": build_dimenetpp}


def build_random(arch: str, hparams: dict | None = None, seed: int = RANDOM_SEED):
    """An untrained model with weights drawn after `torch.manual_seed(seed)` (reproducible)."""
    import torch

    torch.manual_seed(seed)
    return BUILDERS[arch](hparams or {})


# ----------------------------------------------------------------------------------------------- e3nn layout

@lru_cache(maxsize=None)
def _sphere_to_e3nn(l: int) -> np.ndarray:
    """Orthogonal (2l+1, 2l+1) matrix M with e3nn_sh_l(v) = M @ visnet_sphere_l(v) for unit vectors v."""
    import torch
    from e3nn import o3
    from torch_geometric.nn.models.visnet import Sphere

    v = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = v / v.norm(dim=1, keepdim=True)
    ours = Sphere(lmax=2)(v)[:, l * l - 1:(l + 1) ** 2 - 1]
    theirs = o3.spherical_harmonics(l, v, normalize=True, normalization="norm")
    M = torch.linalg.lstsq(ours, theirs).solution.T.numpy()
    if not np.allclose(M @ M.T, np.eye(2 * l + 1), atol=1e-8) or not np.allclose(ours.numpy() @ M.T, theirs.numpy(),
                                                                                   atol=1e-8):
        raise RuntimeError(f"ViSNet's l={l} spherical harmonics are not an orthogonal change of basis of e3nn's.")
    return np.where(np.abs(M) < 1e-12, 0.0, M)


def visnet_irreps(hidden: int, lmax: int) -> str:
    return "+".join([f"{hidden}x0e"] + [f"{hidden}x{l}{'o' if l % 2 else 'e'}" for l in range(1, lmax + 1)])


def visnet_to_e3nn(x, vec):
    """ViSNet state (x (N, H), vec (N, (lmax+1)^2-1, H)) -> (N, dim) tensor in e3nn layout."""
    import torch

    n, rows, hidden = vec.shape
    lmax = {3: 1, 8: 2}[rows]
    parts = [x]
    for l in range(1, lmax + 1):
        block = vec[:, l * l - 1:(l + 1) ** 2 - 1, :]
        M = _sphere_to_e3nn(l)
        if not np.array_equal(M, np.eye(2 * l + 1)):
            block = torch.einsum("ij,njh->nih", torch.as_tensor(M, dtype=vec.dtype, device=vec.device), block)
        parts.append(block.transpose(1, 2).reshape(n, hidden * (2 * l + 1)))
    return torch.cat(parts, dim=1)


def e3nn_to_visnet(features, hidden: int, lmax: int):
    """Inverse of `visnet_to_e3nn`: (N, dim) tensor -> (x, vec)."""
    import torch

    n = features.shape[0]
    x = features[:, :hidden]
    blocks, offset = [], hidden
    for l in range(1, lmax + 1):
        width = hidden * (2 * l + 1)
        block = features[:, offset:offset + width].reshape(n, hidden, 2 * l + 1).transpose(1, 2)
        M = torch.as_tensor(_sphere_to_e3nn(l), dtype=features.dtype, device=features.device)
        blocks.append(torch.einsum("ji,njh->nih", M, block))  # M^T: M is orthogonal
        offset += width
    return x, torch.cat(blocks, dim=1)


# ----------------------------------------------------------------------------------------------- adapter

class PygAdapter(ModelAdapter):
    """Shared batching, input checks and prediction for the two torch-geometric models."""

    arch: str = ""

    def __init__(self, model, hparams: dict, info: ModelInfo, device: str | None = None):
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.hparams = _hparams(self.arch, hparams)
        self.info = info

    def check_structures(self, atoms_list):
        super().check_structures(atoms_list)
        for i, atoms in enumerate(atoms_list):
            if atoms.pbc.any():
                raise CPDInputError(
                    f"{self.info.id} works on molecules only, but structure {i} ({atoms.get_chemical_formula()}) is "
                    "periodic. Set pbc=False to treat it as an isolated cluster, or choose a crystal model."
                )

    def _inputs(self, atoms_list):
        import torch

        z = torch.as_tensor(np.concatenate([a.numbers for a in atoms_list]), dtype=torch.long, device=self.device)
        pos = torch.as_tensor(np.concatenate([a.positions for a in atoms_list]), dtype=torch.float32,
                              device=self.device)
        counts = torch.as_tensor([len(a) for a in atoms_list], device=self.device)
        batch = torch.repeat_interleave(torch.arange(len(atoms_list), device=self.device), counts)
        return z, pos, batch

    def _states(self, z, pos, batch) -> dict:
        """layer name -> the model's own state tensors after that layer (internal layout); by default the
        model's own `states` (PaiNN, DimeNet++ written here), mirrored from PyG's forward where it has none."""
        return self.model.states(z, pos, batch)

    def _flatten(self, state):
        """One layer's internal state -> (atoms, Irreps.dim) tensor in e3nn layout (as it is, by default)."""
        return state

    def forward_batch(self, atoms_list: list[ase.Atoms]) -> dict[str, np.ndarray]:
        import torch

        self.check_structures(atoms_list)
        with torch.no_grad():
            states = self._states(*self._inputs(atoms_list))
            return {name: self._flatten(state).float().cpu().numpy() for name, state in states.items()}

    def predict(self, atoms_list: list[ase.Atoms]) -> np.ndarray:
        """The model's own prediction per structure (its `forward`, with this module's graph)."""
        import torch

        self.check_structures(atoms_list)
        with torch.no_grad():
            out = self.model(*self._inputs(atoms_list))
            out = out[0] if isinstance(out, tuple) else out  # ViSNet returns (y, forces or None)
            return out.reshape(len(atoms_list)).float().cpu().numpy()

    batch_sizes = (64, 128)  # molecules per batch on (cpu, cuda)

    def default_batch_size(self) -> int:
        return self.batch_sizes[self.device.type == "cuda"]

    def ase_calculator(self):
        """None: these are property models (e.g. the QM9 gap) without an ASE calculator."""
        return None


class ViSNetAdapter(PygAdapter):
    arch = "visnet"
    # on CPU ViSNet's per-edge (edges, 8, hidden) tensors fall out of cache and large batches get slower per
    # molecule (QM9, 1 thread, hidden 128: batch 4 ~140 ms/mol, batch 48 ~265 ms/mol)
    batch_sizes = (8, 64)

    def _states(self, z, pos, batch) -> dict:
        """Mirror of `ViSNetBlock.forward`, keeping the running (x, vec) after every layer."""
        import torch

        rep = self.model.representation_model
        x = rep.embedding(z)
        edge_index, edge_weight, edge_vec = rep.distance(pos, batch)
        edge_attr = rep.distance_expansion(edge_weight)
        mask = edge_index[0] != edge_index[1]
        edge_vec[mask] = edge_vec[mask] / torch.norm(edge_vec[mask], dim=1).unsqueeze(1)
        edge_vec = rep.sphere(edge_vec)
        x = rep.neighbor_embedding(z, x, edge_index, edge_weight, edge_attr)
        vec = torch.zeros(x.size(0), (rep.lmax + 1) ** 2 - 1, x.size(1), dtype=x.dtype, device=x.device)
        edge_attr = rep.edge_embedding(edge_index, edge_attr, x)
        states = {"embedding": x}
        for k, layer in enumerate(rep.vis_mp_layers):
            dx, dvec, dedge_attr = layer(x, vec, edge_index, edge_weight, edge_attr, edge_vec)
            x, vec = x + dx, vec + dvec
            if dedge_attr is not None:
                edge_attr = edge_attr + dedge_attr
            states[f"interaction_{k + 1}"] = (x, vec)
        states["final_norm"] = (rep.out_norm(x), rep.vec_out_norm(vec))
        return states

    def _flatten(self, state):
        return state if not isinstance(state, tuple) else visnet_to_e3nn(*state)

    def readout(self, final_norm: np.ndarray, atoms_list: list[ase.Atoms]) -> np.ndarray:
        """The model's output head applied to `final_norm` features (e3nn layout, as from `forward_batch`)."""
        import torch
        from torch_geometric.utils import scatter

        m = self.model
        z, _, batch = self._inputs(atoms_list)
        with torch.no_grad():
            f = torch.as_tensor(final_norm, dtype=torch.float32, device=self.device)
            x, vec = e3nn_to_visnet(f, self.hparams["hidden_channels"], self.hparams["lmax"])
            x = m.output_model.pre_reduce(x, vec) * m.std
            if m.prior_model is not None:
                x = m.prior_model(x, z)
            y = scatter(x, batch, dim=0, reduce=m.reduce_op) + m.mean
        return y.reshape(len(atoms_list)).cpu().numpy()


class SchNetAdapter(PygAdapter):
    arch = "schnet"

    batch_sizes = (64, 256)

    def _states(self, z, pos, batch) -> dict:
        """Mirror of `SchNet.forward` up to the output head, keeping h after every interaction block."""
        m = self.model
        h = m.embedding(z)
        edge_index, edge_weight = m.interaction_graph(pos, batch)
        edge_attr = m.distance_expansion(edge_weight)
        states = {"embedding": h}
        for k, interaction in enumerate(m.interactions):
            h = h + interaction(h, edge_index, edge_weight, edge_attr)
            states[f"interaction_{k + 1}"] = h
        return states

    def readout(self, last: np.ndarray, atoms_list: list[ase.Atoms]) -> np.ndarray:
        """The model's output head (the tail of `SchNet.forward`) applied to the last interaction state."""
        import torch

        m = self.model
        z, pos, batch = self._inputs(atoms_list)
        with torch.no_grad():
            h = m.lin2(m.act(m.lin1(torch.as_tensor(last, dtype=torch.float32, device=self.device))))
            if m.dipole:
                mass = m.atomic_mass[z].view(-1, 1)
                M = m.sum_aggr(mass, batch, dim=0)
                c = m.sum_aggr(mass * pos, batch, dim=0) / M
                h = h * (pos - c.index_select(0, batch))
            if not m.dipole and m.mean is not None and m.std is not None:
                h = h * m.std + m.mean
            if not m.dipole and m.atomref is not None:
                h = h + m.atomref(z)
            out = m.readout(h, batch, dim=0)
            if m.dipole:
                out = torch.norm(out, dim=-1, keepdim=True)
            if m.scale is not None:
                out = m.scale * out
        return out.reshape(len(atoms_list)).cpu().numpy()


class PaiNNAdapter(PygAdapter):
    arch = "painn"
    batch_sizes = (32, 256)

    def _flatten(self, state):
        from cpd_core.models.painn import painn_to_e3nn

        return painn_to_e3nn(*state) if isinstance(state, tuple) else state


class DimeNetPPAdapter(PygAdapter):
    arch = "dimenetpp"
    batch_sizes = (16, 128)  # per-triplet tensors grow with molecules x edges x neighbours


ADAPTERS = {"visnet": ViSNetAdapter, "schnet": SchNetAdapter, "painn": PaiNNAdapter, "dimenetpp": DimeNetPPAdapter}


# ----------------------------------------------------------------------------------------------- metadata

def layer_irreps(arch: str, hparams: dict) -> dict[str, str]:
    """layer name -> e3nn Irreps string, in depth order, from hyperparameters alone."""
    hp = _hparams(arch, hparams)
    hidden = hp["hidden_channels"]
    if arch in ("schnet", "dimenetpp"):
        blocks = hp["num_interactions"] if arch == "schnet" else hp["num_blocks"]
        return {name: f"{hidden}x0e" for name in ["embedding"] + [f"interaction_{k + 1}" for k in range(blocks)]}
    if arch == "painn":
        layers = {"embedding": f"{hidden}x0e"}
        layers.update({f"interaction_{k + 1}": f"{hidden}x0e+{hidden}x1o" for k in range(hp["num_interactions"])})
        return layers
    full = visnet_irreps(hidden, hp["lmax"])
    layers = {"embedding": f"{hidden}x0e"}
    layers.update({f"interaction_{k + 1}": full for k in range(hp["num_layers"])})
    layers["final_norm"] = full
    return layers


LAYER_NOTES = {
    "schnet": "Layers are running states h after the atom embedding and after each interaction block "
              "(h = h + interaction(h)); the output head reads the last one.",
    "painn": "Layers are running states (s, v) after the atom embedding (vectors still zero, so scalars only) and "
             "after each interaction (message then update, each added to the state); the output head reads the last "
             "scalars. Vectors are Cartesian per channel, e3nn's 1o basis.",
    "dimenetpp": "DimeNet++ keeps its state on directed edges; each layer here is the per-atom sum of the incoming "
                 "messages after the embedding block and after each interaction block (the block's new message, "
                 "residuals included). Every block's output block adds to the prediction, so no single layer is "
                 "the head's input. Angles enter through triplets built in plain torch.",
    "visnet": "Layers are running states (x, vec) after the embedding (atom + neighbour embedding; vectors still "
              "zero, so scalars only) and after each ViS-MP layer (x + dx, vec + dvec); final_norm is the last "
              "state after ViSNet's output LayerNorm/VecLayerNorm, which the output head reads. Per-edge states are "
              "not exposed. Vector rows are converted to e3nn's basis and layout (channel-major).",
}


def _info(model_id: str, arch: str, hparams: dict, weights_source: str, weights_hash: str, description: str,
          notes: str, elements=QM9_ELEMENTS, extra: dict | None = None) -> ModelInfo:
    hp = _hparams(arch, hparams)
    graph = "radius graph built in torch (no neighbour cap), molecules only"
    return ModelInfo(
        id=model_id, family=FAMILY[arch], elements=tuple(elements), cutoff=float(hp["cutoff"]),
        layers=layer_irreps(arch, hp), weights_source=weights_source, weights_hash=weights_hash,
        description=description, input="molecules",
        notes=" ".join(filter(None, [notes, LAYER_NOTES[arch], f"Graph: {graph}."])),
        extra={"arch": arch, "hparams": hp, **(extra or {})},
    )


def _random_info(model_id: str) -> ModelInfo:
    arch = RANDOM_MODELS[model_id]
    hp = _hparams(arch, {})
    digest = hashlib.sha256(json.dumps({"arch": arch, "hparams": hp, "seed": RANDOM_SEED},
                                       sort_keys=True).encode()).hexdigest()[:16]
    name = NAMES[arch]
    return _info(model_id, arch, hp, f"random init, seed {RANDOM_SEED}", digest,
                 f"{name} (torch-geometric), {RANDOM_NOTE}.",
                 f"{name} with {RANDOM_NOTE}; no trained weights. Elements are QM9's by convention.",
                 extra={"seed": RANDOM_SEED})


# ----------------------------------------------------------------------------------------------- checkpoints

def zoo_dir() -> Path:
    """Folder of trained checkpoints (`CPD_ZOO_DIR`, default `<repo>/zoo`)."""
    return Path(os.environ.get("CPD_ZOO_DIR", REPO_ROOT / "zoo"))


def _read_card(folder: Path) -> dict:
    card_path = folder / CARD
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError as exc:
        raise CPDInputError(f"Checkpoint {folder} has no {CARD}.") from exc
    except json.JSONDecodeError as exc:
        raise CPDInputError(f"{card_path} is not valid JSON: {exc}.") from exc
    if card.get("arch") not in ARCHS or not isinstance(card.get("hparams"), dict):
        raise CPDInputError(f"{card_path} needs 'arch' (one of {ARCHS}) and an 'hparams' object.")
    return card


def _checkpoint_folder(path) -> Path:
    path = Path(path)
    return path.parent if path.is_file() else path


def discover_checkpoints(root: Path | None = None) -> dict[str, Path]:
    """model id -> folder, for every `<root>/*/` holding `model.pt` and a `card.json` with a torch-geometric
    arch (folders for other adapters are skipped). The id is the card's "id", else the folder name."""
    root = zoo_dir() if root is None else Path(root)
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (folder / WEIGHTS).is_file() or not (folder / CARD).is_file():
            continue
        try:
            card = json.loads((folder / CARD).read_text())
        except json.JSONDecodeError:
            continue
        if card.get("arch") in ARCHS:
            found.setdefault(str(card.get("id", folder.name)), folder)
    return found


def describe_checkpoint(path, model_id: str | None = None) -> ModelInfo:
    folder = _checkpoint_folder(path)
    card = _read_card(folder)
    arch = card["arch"]
    model_id = model_id or str(card.get("id", folder.name))
    try:
        source = str(folder.resolve().relative_to(REPO_ROOT))
    except ValueError:
        source = str(folder.resolve())
    name = NAMES[arch]
    target = card.get("target")
    description = card.get("description") or f"{name} (torch-geometric) trained on {card.get('dataset', 'QM9')}" + (
        f" for {target}" if target else "")
    extra = {k: card[k] for k in ("target", "units", "dataset", "metrics") if k in card}
    return _info(model_id, arch, card["hparams"], source, file_hash(folder / WEIGHTS, folder / CARD), description,
                 card.get("notes", ""), elements=card.get("elements", QM9_ELEMENTS), extra=extra)


def load_checkpoint(path, model_id: str | None = None, device: str | None = None) -> PygAdapter:
    """Adapter for a checkpoint folder (or its model.pt): builds the network from card.json's hparams and loads
    the state dict with `weights_only=True` (no arbitrary unpickling)."""
    import torch

    folder = _checkpoint_folder(path)
    info = describe_checkpoint(folder, model_id)
    arch = info.extra["arch"]
    model = BUILDERS[arch](info.extra["hparams"])
    state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return ADAPTERS[arch](model, info.extra["hparams"], info, device=device)


def save_checkpoint(folder, arch: str, hparams: dict, model, **card) -> Path:
    """Write `<folder>/model.pt` (the state dict) and `<folder>/card.json` (arch, hparams, plus any extra card
    fields such as id, target, units, dataset, description, notes, elements)."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if hasattr(model, "state_dict") else model
    torch.save(state, folder / WEIGHTS)
    (folder / CARD).write_text(json.dumps({"arch": arch, "hparams": _hparams(arch, hparams), **card}, indent=2))
    return folder


# ----------------------------------------------------------------------------------------------- registry API

MODEL_IDS: tuple[str, ...] = tuple(RANDOM_MODELS) + tuple(i for i in discover_checkpoints() if i not in RANDOM_MODELS)


def describe(model_id: str) -> ModelInfo:
    if model_id in RANDOM_MODELS:
        return _random_info(model_id)
    folder = discover_checkpoints().get(model_id)
    if folder is None:
        raise CPDInputError(f"Unknown torch-geometric model '{model_id}'; known: {', '.join(MODEL_IDS)}.")
    return describe_checkpoint(folder, model_id)


def offline_available(model_id: str) -> bool:
    return model_id in RANDOM_MODELS or model_id in discover_checkpoints()


def load(model_id: str, device: str | None = None) -> PygAdapter:
    if model_id in RANDOM_MODELS:
        arch = RANDOM_MODELS[model_id]
        return ADAPTERS[arch](build_random(arch), {}, _random_info(model_id), device=device)
    folder = discover_checkpoints().get(model_id)
    if folder is None:
        raise CPDInputError(f"Unknown torch-geometric model '{model_id}'; known: {', '.join(MODEL_IDS)}.")
    return load_checkpoint(folder, model_id, device=device)


def random_adapter(arch: str, hparams: dict | None = None, seed: int = RANDOM_SEED, model_id: str | None = None,
                   device: str | None = None) -> PygAdapter:
    """An untrained adapter with custom hyperparameters (tests, the zoo's training script)."""
    hp = _hparams(arch, hparams or {})
    digest = hashlib.sha256(json.dumps({"arch": arch, "hparams": hp, "seed": seed}, sort_keys=True).encode())
    info = _info(model_id or f"{arch}-random-custom", arch, hp, f"random init, seed {seed}",
                 digest.hexdigest()[:16], f"{arch} (torch-geometric), {RANDOM_NOTE}.", RANDOM_NOTE,
                 extra={"seed": seed})
    return ADAPTERS[arch](build_random(arch, hp, seed), hp, info, device=device)
