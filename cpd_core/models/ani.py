"""ANI-2x adapters (torchani 2.9): the AEV descriptor, and the hidden layers of the element networks.

- `ani2x-aev`: the atomic environment vector of `torchani.AEVComputer.like_2x()` (fixed ANI-2x hyperparameters,
  no weights): 1008 = 7 x 16 radial + 28 x 32 angular invariants per atom.
- `ani2x-nets`: the post-activation hidden layers `hidden_1..3` of the ANI-2x element networks, averaged over the
  8 ensemble members. The networks of different elements have different widths (e.g. H 256-192-160, C
  224-192-160, S/F/Cl 160-128-96), so each layer is laid out in element blocks (H, C, N, O, S, F, Cl, in that
  order); an atom fills only its own element's block and the rest of its row is zero. This keeps every column one
  neuron of one element network.

Weights for `ani2x-nets`: the original NeuroChem files in the local weights folder
(`torchani/Neurochem/ani-2x_8x.info` and `ani-2x_8x/`) are converted once into a torchani state dict under the
project cache (`converted_weights_dir('torchani')/StateDicts/ani2x_state_dict.pt`); `torchani.models.ANI2x()`
then loads it with `TORCHANI_DATA_DIR` pointing there. Without local files, `ANI2x()` uses torchani's own
cache and download.

Batches are padded with species -1 for torchani; padding atoms are dropped (masked) before anything is returned.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import os
from pathlib import Path

import ase
import numpy as np

from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, file_hash, index_by_atomic_number, temporary_env
from cpd_core.models.weights import converted_weights_dir, local_weights

AEV_ID = "ani2x-aev"
NETS_ID = "ani2x-nets"
MODEL_IDS = (AEV_ID, NETS_ID)
ELEMENTS = ("H", "C", "N", "O", "S", "F", "Cl")  # torchani's ANI-2x order (SYMBOLS_2X)
AEV_DIM = 1008
CUTOFF = 5.1
# hidden widths of the ANI-2x element networks, per element in ELEMENTS order
HIDDEN_WIDTHS = {
    "H": (256, 192, 160), "C": (224, 192, 160), "N": (192, 160, 128), "O": (192, 160, 128),
    "S": (160, 128, 96), "F": (160, 128, 96), "Cl": (160, 128, 96),
}
NEUROCHEM_INFO = "torchani/Neurochem/ani-2x_8x.info"
STATE_DICT = "ani2x_state_dict.pt"
ENSEMBLE_SIZE = 8


def _hidden_layers(widths: dict[str, tuple[int, ...]]) -> dict[str, str]:
    n_layers = len(next(iter(widths.values())))
    return {f"hidden_{k + 1}": f"{sum(w[k] for w in widths.values())}x0e" for k in range(n_layers)}


def _neurochem_files() -> tuple[Path, Path] | None:
    info = local_weights(NEUROCHEM_INFO)
    if info is None:
        return None
    folder = info.with_suffix("")  # ani-2x_8x.info -> ani-2x_8x/
    return (info, folder) if folder.is_dir() else None


def _nets_hash() -> str:
    files = _neurochem_files()
    if files is None:
        return ""
    return file_hash(*files)


def _torchani_data_file() -> Path:
    """Where torchani's own loader keeps the ANI-2x state dict (without creating folders)."""
    env = os.getenv("TORCHANI_DATA_DIR")
    root = Path(env) if env else Path.home() / ".local" / "share" / "Torchani"
    return root / "StateDicts" / STATE_DICT


def describe(model_id: str) -> ModelInfo:
    if model_id == AEV_ID:
        return ModelInfo(
            id=AEV_ID, family="handcrafted descriptor", elements=ELEMENTS, cutoff=CUTOFF,
            layers={"aev": f"{AEV_DIM}x0e"},
            weights_source="none: torchani.AEVComputer.like_2x() (ANI-2x hyperparameters)",
            description="ANI-2x atomic environment vectors: 7 x 16 radial (cutoff 5.1 A) + 28 x 32 angular "
                        "(cutoff 3.5 A) features per atom.",
            input="any",
            notes="Columns of elements absent from a data set (e.g. S, Cl in QM9) are always zero.",
        )
    if model_id == NETS_ID:
        files = _neurochem_files()
        return ModelInfo(
            id=NETS_ID, family="learned invariant", elements=ELEMENTS, cutoff=CUTOFF,
            layers=_hidden_layers(HIDDEN_WIDTHS),
            weights_source=(f"{files[0]} (NeuroChem, converted to a torchani state dict)" if files
                            else "torchani.models.ANI2x() download"),
            weights_hash=_nets_hash(),
            description="Hidden layers of the ANI-2x element networks (torchani 2.9, wB97X/6-31G(d)).",
            input="molecules",
            notes="hidden_<k> is the activation (CELU) after hidden layer k of each element's network, AVERAGED "
                  "over the 8 ensemble members (neuron k of different members is not the same neuron, so the "
                  "average is a fixed linear mix of the members' features). Columns are element blocks in the "
                  "order H, C, N, O, S, F, Cl (H 256/192/160, C 224/192/160, N and O 192/160/128, S, F, Cl "
                  "160/128/96 wide); an atom fills only its own element's block.",
        )
    raise CPDInputError(f"Unknown ANI model '{model_id}'. Known: {', '.join(MODEL_IDS)}.")


def offline_available(model_id: str) -> bool:
    if model_id == AEV_ID:
        return True
    if model_id == NETS_ID:
        return _neurochem_files() is not None or _torchani_data_file().is_file()
    raise CPDInputError(f"Unknown ANI model '{model_id}'. Known: {', '.join(MODEL_IDS)}.")


def _import_torchani():
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")  # no CUDA extensions here; silence the warning
    import torchani

    return torchani


def convert_neurochem(info_file: Path, target: Path) -> Path:
    """Write the ANI-2x ensemble read from NeuroChem files as a torchani 2.9 state dict (atomic, locked)."""
    import torch
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_file():
            return target
        _import_torchani()
        from torchani import neurochem
        from torchani.arch import ANI

        folder = info_file.with_suffix("")
        lines = [line.strip() for line in info_file.read_text().splitlines() if line.strip()][:4]
        const, sae, prefix, size = lines
        base = info_file.parent
        info = neurochem.NeurochemInfo(sae=base / sae, const=base / const, ensemble_prefix=base / prefix,
                                       ensemble_size=int(size))
        if not folder.is_dir():
            raise CPDInputError(f"NeuroChem folder {folder} is missing.")
        aev, nets, self_energies, symbols = neurochem.modules_from_info(info)
        model = ANI(symbols, aev, nets, self_energies)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, target)
    return target


def load_ani2x():
    """`torchani.models.ANI2x()`, from the local NeuroChem files when present (converted once), else torchani's
    own cache or download."""
    torchani = _import_torchani()
    files = _neurochem_files()
    if files is None:
        try:
            return torchani.models.ANI2x()
        except Exception as exc:
            raise CPDInputError(f"ANI-2x weights are not in the local weights folder ({NEUROCHEM_INFO}) and "
                                f"torchani could not download them: {exc}") from exc
    root = converted_weights_dir("torchani")
    convert_neurochem(files[0], root / "StateDicts" / STATE_DICT)
    with temporary_env("TORCHANI_DATA_DIR", str(root)), temporary_env("HF_HUB_OFFLINE", "1"):
        return torchani.models.ANI2x()


def load(model_id: str) -> "ANIAdapter":
    info = describe(model_id)
    torchani = _import_torchani()
    if model_id == AEV_ID:
        return ANIAdapter(info, aev_computer=torchani.AEVComputer.like_2x(), symbols=ELEMENTS)
    model = load_ani2x()
    return ANIAdapter(info, aev_computer=model.aev_computer, symbols=tuple(model.symbols), model=model)


def _in_place(activation):
    """The element networks' activation applied in place (CELU, as in ANI-2x), or the module itself."""
    import torch

    if isinstance(activation, torch.nn.CELU):
        return lambda x: torch.nn.functional.celu(x, alpha=activation.alpha, inplace=True)
    return activation


class ANIAdapter(ModelAdapter):
    def __init__(self, info: ModelInfo, aev_computer, symbols: tuple[str, ...], model=None):
        import torch

        self.info = info
        self.aev_computer = aev_computer.eval()
        self.symbols = symbols
        self.model = model.eval() if model is not None else None
        self._index_of_number = index_by_atomic_number(symbols)
        self._torch = torch
        if model is not None:
            members = list(model.neural_networks.members)
            widths = {s: tuple(layer.out_features for layer in members[0].atomics[s].layers) for s in symbols}
            info.layers = _hidden_layers(widths)
            self._members = members
            self._widths = widths
            # per hidden layer: where each element's block starts (blocks in the model's element order)
            self._offsets = []
            for k in range(len(widths[symbols[0]])):
                starts = np.concatenate([[0], np.cumsum([widths[s][k] for s in symbols])[:-1]])
                self._offsets.append({s: int(v) for s, v in zip(symbols, starts)})
            self._stacked = self._stack_members()

    def default_batch_size(self) -> int:
        return 128

    # --------------------------------------------------------------------------------------------- AEVs
    def _aev_groups(self, atoms_list):
        """Yield (indices, elem_idxs [M, A], coords [M, A, 3], cell, pbc): non-periodic structures padded
        together with species -1, periodic ones one at a time."""
        torch = self._torch
        flat = [i for i, a in enumerate(atoms_list) if not a.pbc.any()]
        periodic = [i for i, a in enumerate(atoms_list) if a.pbc.any()]
        if flat:
            counts = np.array([len(atoms_list[i]) for i in flat])
            rows = np.repeat(np.arange(len(flat)), counts)
            columns = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            numbers = np.concatenate([atoms_list[i].numbers for i in flat])
            elem = torch.full((len(flat), int(counts.max())), -1, dtype=torch.long)
            elem[rows, columns] = torch.from_numpy(self._index_of_number[numbers])
            coords = torch.zeros((len(flat), int(counts.max()), 3), dtype=torch.float32)
            coords[rows, columns] = torch.from_numpy(
                np.concatenate([atoms_list[i].positions for i in flat]).astype(np.float32))
            yield flat, elem, coords, None, None
        for i in periodic:
            a = atoms_list[i]
            elem = torch.from_numpy(self._index_of_number[a.numbers])[None]
            coords = torch.from_numpy(a.positions.astype(np.float32))[None]
            cell = torch.from_numpy(np.asarray(a.cell[:], dtype=np.float32))
            yield [i], elem, coords, cell, torch.from_numpy(np.asarray(a.pbc, dtype=bool))

    def _per_atom(self, atoms_list, fn):
        """Run fn(elem_idxs_real [n], aev_real [n, 1008], neighbourhood [n]) over every group; rows concatenated
        in input order, padding atoms never included. `neighbourhood` codes the set of elements in each atom's
        structure (a bit per element): AEV columns of other elements are zero for that atom."""
        torch = self._torch
        parts, order = [], []
        with torch.no_grad():
            for indices, elem, coords, cell, pbc in self._aev_groups(atoms_list):
                aevs = self.aev_computer(elem, coords, cell, pbc)          # [M, A, 1008]
                mask = elem >= 0                                            # padding atoms are -1
                present = torch.zeros((elem.shape[0], len(self.symbols) + 1), dtype=torch.long)
                present.scatter_(1, elem + 1, 1)                            # column 0 counts padding
                codes = (present[:, 1:] << torch.arange(len(self.symbols))).sum(dim=1)
                codes = codes[:, None].expand_as(elem)
                parts.append(fn(elem[mask], aevs[mask], codes[mask]))      # rows: structure-major, real only
                order += indices
        out = {name: torch.cat([p[name] for p in parts]) for name in parts[0]} if len(parts) > 1 else parts[0]
        if order == sorted(order):
            return out
        counts = torch.tensor([len(atoms_list[i]) for i in order])  # rows per structure, in the groups' order
        starts = torch.cumsum(counts, 0) - counts
        by_input = torch.argsort(torch.tensor(order))
        rows = torch.cat([torch.arange(int(starts[g]), int(starts[g] + counts[g])) for g in by_input.tolist()])
        return {name: value.index_select(0, rows) for name, value in out.items()}

    # ---------------------------------------------------------------------------------------------- nets
    def _stack_members(self):
        """Per element and hidden layer, every member's weights stacked, with the bias [M, 1, out]: the first
        layer's as [in, M, out] (the layout its per-group column selection copies from), the others as
        [M, in, out] (for baddbmm)."""
        torch = self._torch
        stacked = {}
        for s in self.symbols:
            nets = [member.atomics[s] for member in self._members]
            stacked[s] = [
                (torch.stack([net.layers[k].weight.T for net in nets], dim=1 if k == 0 else 0).contiguous(),
                 torch.stack([net.layers[k].bias for net in nets])[:, None, :])
                for k in range(len(nets[0].layers))
            ]
        return stacked

    def _hidden(self, elem, aev, neighbourhood, members: slice = slice(None)):
        """Hidden activations of the element networks, averaged over the members selected ->
        {hidden_k: [n, width_k]} in element blocks.

        All members of one element run as one matmul per layer. The first layer goes through the element's atoms
        in groups of one neighbourhood (the set of elements in their structure) and skips AEV columns that are zero
        for every atom of the group: they add exactly nothing. In QM9 that drops a third of the first layer's
        arithmetic (columns of S and Cl always, of F, N or O in molecules without them)."""
        torch = self._torch
        n_layers = len(self._offsets)
        out = [aev.new_zeros((len(elem), sum(w[k] for w in self._widths.values()))) for k in range(n_layers)]
        keys, order = torch.sort(elem * (1 << len(self.symbols)) + neighbourhood, stable=True)
        values, sizes = torch.unique_consecutive(keys, return_counts=True)
        elements = (values >> len(self.symbols)).tolist()
        sizes = sizes.tolist()
        start = 0
        for e, s in enumerate(self.symbols):
            groups = [size for size, g in zip(sizes, elements) if g == e]
            if not groups:
                continue
            rows = order[start:start + sum(groups)]
            start += len(rows)
            activation = _in_place(self._members[0].atomics[s].activation)
            x = aev.index_select(0, rows)                                   # [n_e, 1008], shared by members
            for k, (weight, bias) in enumerate(self._stacked[s]):
                if k == 0:
                    pre = self._first_layer(x, groups, weight[:, members])
                    x = activation(pre.add_(bias[members]))                 # [M, n_e, width]
                else:
                    x = activation(torch.baddbmm(bias[members], x, weight[members]))
                block = self._offsets[k][s]
                out[k][rows, block:block + x.shape[2]] = x.mean(dim=0)
        return {f"hidden_{k + 1}": out[k] for k in range(n_layers)}

    def _first_layer(self, x, groups: list[int], weight):
        """x [n, in] @ weight [in, M, width] -> [M, n, width], one matmul per group of consecutive rows over the
        columns not zero in that group."""
        _, n_members, width = weight.shape
        pre = x.new_empty((len(x), n_members * width))
        start = 0
        for size in groups:
            part = x[start:start + size]
            used = (part != 0).any(dim=0).nonzero().view(-1)
            self._torch.mm(part.index_select(1, used), weight.index_select(0, used).view(len(used), n_members * width),
                           out=pre[start:start + size])
            start += size
        return pre.view(len(x), n_members, width).transpose(0, 1)

    def member_hidden(self, atoms_list, member: int) -> dict[str, np.ndarray]:
        """Hidden layers of one ensemble member (for bookkeeping checks)."""
        self.check_structures(list(atoms_list))
        out = self._per_atom(list(atoms_list), lambda e, a, n: self._hidden(e, a, n, slice(member, member + 1)))
        return {k: v.numpy() for k, v in out.items()}

    def forward_batch(self, atoms_list: list[ase.Atoms]) -> dict[str, np.ndarray]:
        atoms_list = list(atoms_list)
        self.check_structures(atoms_list)
        if self.model is None:
            out = self._per_atom(atoms_list, lambda e, a, n: {"aev": a})
        else:
            out = self._per_atom(atoms_list, self._hidden)
        return {k: v.cpu().numpy().astype(np.float32) for k, v in out.items()}

    def ase_calculator(self):
        return self.model.ase() if self.model is not None else None
