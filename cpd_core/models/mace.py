"""MACE adapter (mace-torch): per-layer states after each product block, plus the L-resolved interaction messages.

Layers, in depth order, for a MACE with n interactions:

- `interaction_<i>_message`: what `interactions[i-1]` returns, the equivariant message before the symmetric
  contraction (MACE keeps it as [atoms, channels, (lmax+1)^2]; it is converted here to the e3nn layout of the
  interaction's own `Irreps`, e.g. `32x0e+32x1o+32x2e+32x3o`);
- `product_<i>`: the output of `products[i-1]`, i.e. the node state after layer i (the last one keeps only
  scalars, as MACE only reads energies from it).

Models:
- `mace-spice`: the small MACE trained on SPICE shipped in the local weights folder (`mace/MACE_SPICE.model`);
- `mace-mp-0-*`, `mace-off-*`: foundation models, resolved through the local weights folder first
  (`mace/<file name of the official download>`), then mace-torch's own loaders `mace_mp` / `mace_off`, which use
  mace's cache (`~/.cache/mace`) and download there when needed;
- any other `.model` file the user names explicitly: `load_mace_file(path)` or the id `mace-file:<path>`.

Speed (extraction only; the model's own forward, used by its ASE calculator, is left as it is):
- molecules (no pbc) get their graph for the whole batch at once (`MACEAdapter.molecule_batch`: every atom pair
  within r_max, as mace's neighbour list gives without pbc) instead of one `AtomicData` per molecule;
- the symmetric contractions run as `cpd_core.models.mace_fast.FoldedContraction`, with the per-element
  weights multiplied into the coupling tensors once, instead of once per atom;
- the interaction convolutions run as `mace_fast.FusedConvolution`: the message is summed per receiver in
  batched matrix products, without the per-edge [edges, channels x components] tensor (the molecule graph lists
  edges by receiver, so it needs no sorting).
All are tested against mace's own code (and e3nn's).

Safety: `.model` files are pickles, and unpickling runs code stored in the file. Registered ids (the project's
weights folder, the zoo, mace's own downloads) are trusted; a path the user names (`mace-file:<path>`) is refused
unless it was trusted explicitly: `trust_model_file(path)`, `embed --trust-model-file`, or the path listed in
`CPD_TRUSTED_MODEL_FILES` (os.pathsep-separated, inherited by worker processes). Files uploaded through the
dashboard are never unpickled (uploads are read with ase.io only). `import mace` sets
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` for the whole process; this module restores the previous value right after
importing, so that other `torch.load` calls in the app keep torch's safe default.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import ase
import numpy as np

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, file_hash, index_by_atomic_number, temporary_env
from cpd_core.models.graphs import radius_edges
from cpd_core.models.mace_fast import fast_inference
from cpd_core.models.weights import local_weights

FAMILY = "tensor-product equivariant"
FILE_PREFIX = "mace-file:"
_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
TRUSTED_FILES_ENV = "CPD_TRUSTED_MODEL_FILES"

SPICE_ID = "mace-spice"
SPICE_WEIGHTS = "mace/MACE_SPICE.model"
SPICE_ELEMENTS = ("H", "Li", "C", "N", "O", "F", "Na", "Mg", "P", "S", "Cl", "K", "Ca", "Br", "I")

_MP_ELEMENTS = tuple(ase.data.chemical_symbols[z] for z in list(range(1, 84)) + list(range(89, 95)))
_OFF_ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")


def _foundation(loader, name, url_file, channels, lmax_hidden, cutoff, elements):
    hidden = "+".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax_hidden + 1))
    return dict(loader=loader, name=name, file=url_file, channels=channels, hidden=hidden, cutoff=cutoff,
                elements=elements)


# id -> how mace-torch names it, the official file name, and the published hyperparameters (2 interactions,
# max_ell 3). describe() reports these without loading; load() reads the real layout from the model itself.
FOUNDATION = {
    "mace-mp-0-small": _foundation("mace_mp", "small", "2023-12-10-mace-128-L0_energy_epoch-249.model", 128, 0, 6.0,
                                   _MP_ELEMENTS),
    "mace-mp-0-medium": _foundation("mace_mp", "medium", "2023-12-03-mace-128-L1_epoch-199.model", 128, 1, 6.0,
                                    _MP_ELEMENTS),
    "mace-mp-0-large": _foundation("mace_mp", "large", "MACE_MPtrj_2022.9.model", 128, 2, 6.0, _MP_ELEMENTS),
    "mace-off-small": _foundation("mace_off", "small", "MACE-OFF23_small.model", 96, 0, 5.0, _OFF_ELEMENTS),
    "mace-off-medium": _foundation("mace_off", "medium", "MACE-OFF23_medium.model", 128, 1, 5.0, _OFF_ELEMENTS),
    "mace-off-large": _foundation("mace_off", "large", "MACE-OFF23_large.model", 192, 2, 5.0, _OFF_ELEMENTS),
}

ZOO_WEIGHTS = "model.model"


def zoo_models() -> dict[str, Path]:
    """model id -> folder, for every `<zoo>/*/` holding `model.model` (a pickled mace-torch module written by
    `cpd_core.training`) and a `card.json` with arch "mace" (the zoo is `CPD_ZOO_DIR`, default `<repo>/zoo`)."""
    import json

    from cpd_core.paths import REPO_ROOT

    root = Path(os.environ.get("CPD_ZOO_DIR", REPO_ROOT / "zoo"))
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (folder / ZOO_WEIGHTS).is_file() or not (folder / "card.json").is_file():
            continue
        try:
            card = json.loads((folder / "card.json").read_text())
        except json.JSONDecodeError:
            continue
        if card.get("arch") == "mace":
            found.setdefault(str(card.get("id", folder.name)), folder)
    return found


def _zoo_info(model_id: str, folder: Path) -> ModelInfo:
    """ModelInfo of a zoo MACE from its card alone (no unpickling)."""
    import json

    card = json.loads((folder / "card.json").read_text())
    path = folder / ZOO_WEIGHTS
    extra = {k: card[k] for k in ("target", "units", "dataset", "metrics", "readout") if k in card}
    return ModelInfo(
        id=model_id, family=FAMILY, elements=tuple(card.get("elements", ())),
        cutoff=float(card["hparams"]["r_max"]), layers=dict(card["layers"]), weights_source=str(path),
        weights_hash=_weights_hash(path), description=card.get("description", f"MACE from the zoo ({folder.name})"),
        input="molecules", notes=" ".join(filter(None, [card.get("notes", ""), _notes()])), extra=extra,
    )


MODEL_IDS = (SPICE_ID, *FOUNDATION, *(i for i in zoo_models() if i != SPICE_ID and i not in FOUNDATION))


# --------------------------------------------------------------------------------------------- imports, files

def _import_mace():
    """Import the parts of mace used here without leaving `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` behind."""
    with temporary_env(_NO_WEIGHTS_ONLY, os.environ.get(_NO_WEIGHTS_ONLY)):
        import mace  # noqa: F401  (sets the variable; _env restores it)
        from mace import data as mace_data
        from mace.tools import torch_geometric, torch_tools, utils
    return mace_data, torch_geometric, torch_tools, utils


def _mace_cache_candidates(model_id: str) -> list[Path]:
    """Where mace-torch's own loaders keep a downloaded checkpoint (they name cached files differently)."""
    spec = FOUNDATION[model_id]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mace"
    mangled = "".join(c for c in spec["file"] if c.isalnum() or c == "_")
    return [cache / spec["file"], cache / mangled]


def _local_file(model_id: str) -> Path | None:
    """A checkpoint for a registered id that is already on this machine (weights folder first, then mace's cache)."""
    if model_id == SPICE_ID:
        return local_weights(SPICE_WEIGHTS)
    if model_id in FOUNDATION:
        path = local_weights(f"mace/{FOUNDATION[model_id]['file']}")
        if path is not None:
            return path
        return next((p for p in _mace_cache_candidates(model_id) if p.is_file()), None)
    if model_id.startswith(FILE_PREFIX):
        path = Path(model_id[len(FILE_PREFIX):]).expanduser()
        return path if path.is_file() else None
    zoo = zoo_models()
    if model_id in zoo:
        return zoo[model_id] / ZOO_WEIGHTS
    raise CPDInputError(f"Unknown MACE model '{model_id}'. Known: {', '.join(MODEL_IDS)}, or {FILE_PREFIX}<path>.")


def _weights_hash(path: Path | None) -> str:
    return file_hash(path) if path is not None else ""


def _trusted_files() -> set[str]:
    return {p for p in os.environ.get(TRUSTED_FILES_ENV, "").split(os.pathsep) if p}


def trust_model_file(path: str | Path) -> None:
    """Allow this process (and the worker processes it starts) to unpickle the `.model` file at `path`."""
    resolved = str(Path(path).expanduser().resolve())
    os.environ[TRUSTED_FILES_ENV] = os.pathsep.join(sorted(_trusted_files() | {resolved}))


def is_trusted_file(path: str | Path) -> bool:
    return str(Path(path).expanduser().resolve()) in _trusted_files()


def _unpickle(path: Path, trusted: bool):
    """torch.load of a `.model` file: a pickle, so only for files this registry names or the user trusted."""
    import torch

    if not Path(path).is_file():
        if Path(path).is_dir():
            raise CPDInputError(f"MACE model file {path} is a directory; name the `.model` file inside it.")
        raise CPDInputError(f"MACE model file {path} does not exist.")
    if not trusted:
        raise CPDInputError(
            f"{path} is a pickled MACE model: loading it runs code stored in the file. Load it only if you trust "
            "where it came from: add --trust-model-file to the command (or call "
            "cpd_core.models.mace.trust_model_file(path) in Python).")
    _import_mace()  # the pickle refers to mace classes
    try:
        model = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt file, a different e3nn pickle protocol, ...
        raise CPDInputError(f"Could not load MACE model {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(model, dict) or not all(hasattr(model, a) for a in ("interactions", "products", "readouts")):
        raise CPDInputError(f"{path} is not a MACE model (a pickled torch module with interactions, products "
                            "and readouts); give a `.model` file saved by mace-torch.")
    return model


def _download_foundation(model_id: str):
    """mace-torch's own loader (`mace_mp` / `mace_off`): uses mace's cache and downloads there if needed."""
    _import_mace()
    spec = FOUNDATION[model_id]
    with temporary_env(_NO_WEIGHTS_ONLY, "1"):  # mace's loaders call torch.load without weights_only
        from mace.calculators import foundations_models

        loader = getattr(foundations_models, spec["loader"])
        try:
            return loader(model=spec["name"], device="cpu", return_raw_model=True)
        except Exception as exc:
            raise CPDInputError(
                f"{model_id} is not in the local weights folder ({local_weights('.') or 'unset'}/mace/"
                f"{spec['file']}) nor in mace's cache, and mace-torch could not download it ({exc}). Put the file "
                "there, or use a machine with internet access."
            ) from exc


# ---------------------------------------------------------------------------------------------- model layout
def _irreps_str(irreps) -> str:
    from e3nn import o3

    return str(o3.Irreps(str(irreps)))


def _message_irreps(interaction):
    from e3nn import o3

    reshape = getattr(interaction, "reshape", None)
    irreps = getattr(reshape, "irreps", None)
    if irreps is None:
        irreps = getattr(interaction, "target_irreps", None)
    if irreps is None:
        raise CPDInputError(f"Cannot read the message irreps of {type(interaction).__name__}.")
    return o3.Irreps(str(irreps))


def _layers_from_model(model) -> dict[str, str]:
    layers: dict[str, str] = {}
    for i, (interaction, product) in enumerate(zip(model.interactions, model.products), start=1):
        layers[f"interaction_{i}_message"] = _irreps_str(_message_irreps(interaction))
        layers[f"product_{i}"] = _irreps_str(product.linear.irreps_out)
    return layers


def _symbols(model) -> tuple[str, ...]:
    return tuple(ase.data.chemical_symbols[int(z)] for z in model.atomic_numbers)


def _static_layers(message: str, hidden: str, n_interactions: int = 2) -> dict[str, str]:
    layers = {}
    for i in range(1, n_interactions + 1):
        layers[f"interaction_{i}_message"] = message
        layers[f"product_{i}"] = hidden if i < n_interactions else hidden.split("+")[0]
    return layers


def _notes() -> str:
    return ("interaction_<i>_message is the equivariant message returned by interactions[i-1] (before the "
            "symmetric contraction); product_<i> is the node state after layer i (products[i-1] output). The last "
            "product keeps only scalars. No force heads are run.")


def describe(model_id: str) -> ModelInfo:
    if model_id == SPICE_ID:
        path = local_weights(SPICE_WEIGHTS)
        return ModelInfo(
            id=SPICE_ID, family=FAMILY, elements=SPICE_ELEMENTS, cutoff=4.5,
            layers=_static_layers("32x0e+32x1o+32x2e+32x3o", "32x0e"),
            weights_source=str(path) if path else "local weights folder: mace/MACE_SPICE.model (not found)",
            weights_hash=_weights_hash(path),
            description="Small MACE (2 interactions, 32 channels, messages up to L=3) trained on SPICE "
                        "(ACEsuit/mace test model).",
            input="molecules", notes=_notes(),
        )
    if model_id in FOUNDATION:
        spec = FOUNDATION[model_id]
        path = _local_file(model_id)
        c = spec["channels"]
        return ModelInfo(
            id=model_id, family=FAMILY, elements=spec["elements"], cutoff=spec["cutoff"],
            layers=_static_layers(f"{c}x0e+{c}x1o+{c}x2e+{c}x3o", spec["hidden"]),
            weights_source=str(path) if path else f"mace-torch {spec['loader']}(model='{spec['name']}') download",
            weights_hash=_weights_hash(path),
            description=f"MACE foundation model {spec['file']} via mace-torch {spec['loader']}.",
            input="any" if spec["loader"] == "mace_mp" else "molecules",
            notes=_notes() + " Layer irreps listed before loading come from the published hyperparameters; the "
                             "loaded model reports its own.",
        )
    if model_id.startswith(FILE_PREFIX):
        path = model_id[len(FILE_PREFIX):]
        return load_mace_file(path, trusted=is_trusted_file(path)).info
    zoo = zoo_models()
    if model_id in zoo:
        return _zoo_info(model_id, zoo[model_id])
    raise CPDInputError(f"Unknown MACE model '{model_id}'. Known: {', '.join(MODEL_IDS)}, or {FILE_PREFIX}<path>.")


def offline_available(model_id: str) -> bool:
    return _local_file(model_id) is not None


def load(model_id: str) -> "MACEAdapter":
    if model_id.startswith(FILE_PREFIX):
        path = model_id[len(FILE_PREFIX):]
        return load_mace_file(path, trusted=is_trusted_file(path))
    info = describe(model_id)
    path = _local_file(model_id)
    if path is not None:
        model = _unpickle(path, trusted=True)  # a registered id: the weights folder, the zoo or mace's cache
    elif model_id in FOUNDATION:
        model = _download_foundation(model_id)
        path = _local_file(model_id)
    else:
        raise CPDInputError(f"{model_id}: weights file {SPICE_WEIGHTS} not found in the local weights folder "
                            "(set CPD_WEIGHTS_DIR).")
    info.weights_source = str(path) if path else info.weights_source
    info.weights_hash = _weights_hash(path)
    return MACEAdapter(model, info)


def load_mace_file(path: str | Path, model_id: str | None = None, trusted: bool = False) -> "MACEAdapter":
    """Load a mace-torch `.model` file the user names. It is unpickled, which runs code from the file, so it is
    refused unless `trusted` (the caller vouches for it) or the path was passed to `trust_model_file`."""
    path = Path(path).expanduser().resolve()
    model = _unpickle(path, trusted=trusted or is_trusted_file(path))
    info = ModelInfo(
        id=model_id or f"{FILE_PREFIX}{path}", family=FAMILY, elements=_symbols(model), cutoff=float(model.r_max),
        layers=_layers_from_model(model), weights_source=str(path), weights_hash=_weights_hash(path),
        description=f"MACE model from {path.name} ({type(model).__name__}).", input="any", notes=_notes(),
    )
    return MACEAdapter(model, info)


# ------------------------------------------------------------------------------------------------- adapter
def _message_to_e3nn(message, irreps):
    """MACE's reshaped message [atoms, mul, sum(2l+1)] -> e3nn layout [atoms, irreps.dim] (mul-major per irrep).

    Component offsets come from e3nn: the slices of the same irreps with multiplicity 1."""
    import torch
    from e3nn import o3

    if message.dim() == 2:  # already flat in the e3nn layout
        return message
    n = message.shape[0]
    one_each = o3.Irreps([(1, ir) for _, ir in irreps])
    if message.shape[1:] != (irreps[0].mul, one_each.dim) or any(mul != irreps[0].mul for mul, _ in irreps):
        raise CPDInputError(f"Unexpected MACE message shape {tuple(message.shape)} for irreps {irreps}.")
    parts = [message[:, :, sl].reshape(n, mul * ir.dim) for (mul, ir), sl in zip(irreps, one_each.slices())]
    return torch.cat(parts, dim=1)


class MACEAdapter(ModelAdapter):
    """Runs a MACE model once per batch with forward hooks on its interaction and product blocks."""

    def __init__(self, model, info: ModelInfo):
        import torch

        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # models pickled by older mace-torch keep r_max as a float; the ASE calculator expects a tensor
        if not isinstance(getattr(model, "r_max", None), torch.Tensor):
            model.r_max = torch.tensor(float(model.r_max))
        self.dtype = next(model.parameters()).dtype
        self.r_max = float(model.r_max)
        layers = _layers_from_model(model)
        if info.layers != layers:
            info.layers = layers  # the model itself is authoritative (foundation ids list published values)
        info.elements = _symbols(model)
        info.cutoff = self.r_max
        self.info = info
        self._message_irreps = [_message_irreps(it) for it in model.interactions]
        heads = list(getattr(model, "heads", None) or ["Default"])
        defaults = [h for h in heads if h.lower() == "default"]
        self.heads = heads
        self.head = heads[0] if len(heads) == 1 else (defaults[0] if defaults else heads[-1])
        mace_data, torch_geometric, torch_tools, utils = _import_mace()
        self._mace_data, self._tg, self._torch_tools = mace_data, torch_geometric, torch_tools
        self.z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
        self._element_index = index_by_atomic_number(self.z_table.zs)  # atomic number -> one-hot column
        self._keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={})
        self._model_lock = threading.Lock()

    def default_batch_size(self) -> int:
        width = max(mul * ir.dim for irreps in self._message_irreps for mul, ir in irreps)
        return 64 if width <= 32 * 7 else 16

    def _dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def _batch(self, atoms_list) -> dict:
        """The model's input dict for a batch: molecules (no pbc) through `molecule_batch`, anything else (or a
        model that reads extra per-structure inputs such as charge embeddings) through mace's own data classes."""
        if not hasattr(self.model, "joint_embedding") and not any(a.pbc.any() for a in atoms_list):
            return self.molecule_batch(atoms_list)
        return self.mace_batch(atoms_list).to_dict()

    def mace_batch(self, atoms_list):
        """mace's own batch: one AtomicData per structure (its neighbour list), collated."""
        dtype = self._dtype_name()
        graphs = []
        with self._torch_tools.default_dtype(dtype):
            for atoms in atoms_list:
                config = self._mace_data.config_from_atoms(atoms, key_specification=self._keyspec,
                                                           head_name=self.head)
                graphs.append(self._mace_data.AtomicData.from_config(config, z_table=self.z_table,
                                                                     cutoff=self.r_max, heads=self.heads))
        return self._tg.Batch.from_data_list(graphs)

    def molecule_batch(self, atoms_list) -> dict:
        """The inputs MACE's forward reads, for molecules without a cell, built for the whole batch at once: every
        ordered pair of atoms of a molecule closer than r_max is an edge (what mace's neighbour list gives without
        pbc), no shifts, one-hot elements, and the default head. Tested equal to `mace_batch` in its results."""
        import torch

        dtype = self.dtype
        counts = torch.tensor([len(a) for a in atoms_list])
        numbers = np.concatenate([a.numbers for a in atoms_list])
        positions = torch.as_tensor(np.concatenate([a.positions for a in atoms_list]), dtype=dtype)
        batch = torch.repeat_interleave(torch.arange(len(atoms_list)), counts)
        edge_index = radius_edges(positions.double(), batch, self.r_max, loop=False)  # sender, receiver (sorted)
        node_attrs = torch.nn.functional.one_hot(torch.as_tensor(self._element_index[numbers]),
                                                 len(self.z_table.zs)).to(dtype)
        n_graphs, n_edges = len(atoms_list), edge_index.shape[1]
        return {
            "positions": positions, "node_attrs": node_attrs, "edge_index": edge_index, "batch": batch,
            "ptr": torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)]),
            "shifts": torch.zeros(n_edges, 3, dtype=dtype), "unit_shifts": torch.zeros(n_edges, 3, dtype=dtype),
            "cell": torch.zeros(3 * n_graphs, 3, dtype=dtype), "pbc": torch.zeros(n_graphs, 3, dtype=torch.bool),
            "head": torch.full((n_graphs,), self.heads.index(self.head), dtype=torch.long),
            "charges": torch.zeros(len(numbers), dtype=dtype), "total_charge": torch.zeros(n_graphs, dtype=dtype),
            "total_spin": torch.ones(n_graphs, dtype=dtype),
        }

    def _run(self, atoms_list):
        """(per-layer torch features in the e3nn layout, the model's own outputs, the input batch)."""
        import torch

        atoms_list = list(atoms_list)
        self.check_structures(atoms_list)
        batch = self._batch(atoms_list)
        captured: dict[str, torch.Tensor] = {}
        with self._model_lock:  # hooks and swapped contractions live on the shared model: one run at a time
            handles = []
            for i, (interaction, product) in enumerate(zip(self.model.interactions, self.model.products), start=1):
                handles.append(interaction.register_forward_hook(
                    lambda mod, inp, out, i=i: captured.__setitem__(f"interaction_{i}_message", out[0])))
                handles.append(product.register_forward_hook(
                    lambda mod, inp, out, i=i: captured.__setitem__(f"product_{i}", out)))
            try:
                with torch.no_grad(), fast_inference(self.model):
                    outputs = self.model(batch, training=False, compute_force=False)
            finally:
                for h in handles:
                    h.remove()
        features = {}
        for name in self.info.layers:
            value = captured[name]
            if name.startswith("interaction_"):
                value = _message_to_e3nn(value, self._message_irreps[int(name.split("_")[1]) - 1])
            features[name] = value
        return features, outputs, batch

    def forward_batch(self, atoms_list: list[ase.Atoms]) -> dict[str, np.ndarray]:
        features, _, _ = self._run(atoms_list)
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in features.items()}

    def ase_calculator(self):
        _import_mace()
        with temporary_env(_NO_WEIGHTS_ONLY, "1"):
            from mace.calculators import MACECalculator
        return MACECalculator(models=[self.model], device="cpu", default_dtype=self._dtype_name())
