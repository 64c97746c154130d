"""The one interface every model adapter implements, and the metadata it reports.

An adapter turns a batch of `ase.Atoms` into per-atom layer *states* (not increments), one array per layer,
with the layer's irrep layout as an e3nn `Irreps` string. Pooling and invariants are model-independent and
live in `cpd_core.representations.invariants`; batching, progress and caching live in
`cpd_core.representations.extract`.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from functools import lru_cache
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase
import numpy as np

from cpd_core.errors import CPDInputError, listed

FAMILIES = (
    "tensor-product equivariant",   # MACE, SevenNet, SO3Net
    "vector-scalar equivariant",    # ViSNet, PaiNN-like
    "learned invariant",            # SchNet, CHGNet, ANI networks
    "handcrafted descriptor",       # ANI AEV
)


@dataclass
class ModelInfo:
    """What a user needs to know about a model, available without running it.

    layers: layer name -> e3nn Irreps string of that layer's per-atom features, in depth order
    input:  'molecules', 'crystals' (needs a periodic cell) or 'any'
    """

    id: str
    family: str
    elements: tuple[str, ...]
    cutoff: float
    layers: dict[str, str]
    weights_source: str
    weights_hash: str = ""
    description: str = ""
    input: str = "any"
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["elements"] = list(self.elements)
        return d


class ModelAdapter(ABC):
    """Load a trained model once, then map batches of structures to per-atom layer states."""

    info: ModelInfo

    @abstractmethod
    def forward_batch(self, atoms_list: list[ase.Atoms]) -> dict[str, np.ndarray]:
        """Per-atom features of a batch: layer name -> (total_atoms, Irreps(layer).dim) float array.

        Atoms of all structures are concatenated in input order; no padding atoms. Runs under `torch.no_grad`
        without force or stress heads.
        """

    def default_batch_size(self) -> int:
        return 64

    def ase_calculator(self):
        """The model package's own ASE calculator (energy and forces, one structure at a time), or None.

        Used only by `benchmarks/` as the baseline that most scripts use."""
        return None

    def check_structures(self, atoms_list: list[ase.Atoms]) -> None:
        """Raise CPDInputError listing every structure this model cannot take (see `structure_problems`)."""
        message = structure_problems(self.info, atoms_list)
        if message:
            raise CPDInputError(message)


def structure_problems(info: ModelInfo, atoms_list, indices=None) -> str | None:
    """One message naming every structure the model cannot take (empty ones, unsupported elements, a molecule
    given to a crystal model) and the fix; None when all are fine. Structures are numbered from 0, in input order,
    or by `indices` (their positions in a larger set)."""
    supported = set(info.elements)
    empty, foreign, molecules, elements = [], [], [], set()
    for i, atoms in zip(range(len(atoms_list)) if indices is None else indices, atoms_list):
        if len(atoms) == 0:
            empty.append(str(i))
            continue
        bad = set(atoms.get_chemical_symbols()) - supported
        if bad:
            foreign.append(f"{i} ({atoms.get_chemical_formula()})")
            elements |= bad
        elif info.input == "crystals" and not atoms.pbc.any():
            molecules.append(f"{i} ({atoms.get_chemical_formula()})")
    parts = []
    if empty:
        parts.append(f"{len(empty)} structure(s) have no atoms (structure {listed(empty)}); remove them before "
                     f"extracting with {info.id} (`embed --drop-degenerate` drops them).")
    if foreign:
        parts.append(f"{info.id} does not support element(s) {', '.join(sorted(elements))}, found in "
                     f"{len(foreign)} structure(s): {listed(foreign)}. It supports {', '.join(info.elements)}. "
                     "Choose another model or remove those structures.")
    if molecules:
        parts.append(f"{info.id} is a crystal model but {len(molecules)} structure(s) have no periodic cell: "
                     f"{listed(molecules)}. Give them a cell with pbc=True, or choose a molecular model.")
    return " ".join(parts) or None


def structure_set_problems(info: ModelInfo, structures) -> str | None:
    """`structure_problems` for a whole StructureSet, building ase.Atoms only for the structures that have an
    element the model does not support or (for a crystal model) no cell."""
    from ase.data import atomic_numbers

    allowed = np.isin(structures.numbers, [atomic_numbers[e] for e in info.elements])
    suspect = np.add.reduceat((~allowed).astype(np.int64), structures.offsets[:-1]) > 0
    if info.input == "crystals":
        suspect |= ~structures.periodic
    indices = np.flatnonzero(suspect).tolist()
    return structure_problems(info, [structures.atoms(i) for i in indices], indices)


def file_hash(*paths: Path) -> str:
    """Short SHA-256 of one or more weight files (folders: every file inside, in sorted order).

    Memoised on each file's path, size and modification time, so describing a model does not re-read its
    weights every time, while a replaced file is hashed again."""
    stamped = []
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            stat = f.stat()
            stamped.append((str(f.resolve()), stat.st_size, stat.st_mtime_ns))
    return _hash_stamped_files(tuple(stamped))


@lru_cache(maxsize=None)
def _hash_stamped_files(stamped: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamped:
        h.update(Path(name).name.encode())
        with open(name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def index_by_atomic_number(elements) -> np.ndarray:
    """Lookup array for a model's element list (symbols or atomic numbers): atomic number -> position in the list,
    -1 for an element not in it. `lookup[atoms.numbers]` maps a structure's atoms in one step."""
    from ase.data import atomic_numbers, chemical_symbols

    lookup = np.full(len(chemical_symbols), -1, dtype=np.int64)
    lookup[[atomic_numbers[e] if isinstance(e, str) else int(e) for e in elements]] = np.arange(len(elements))
    return lookup


@contextmanager
def temporary_env(name: str, value: str | None):
    """Set (or unset, value None) an environment variable inside the block, restoring the old value after."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextmanager
def temporary_forwards(replacements: dict):
    """Inside the block, each module in `replacements` runs the given callable as its forward (an instance
    attribute, so other modules of its class are untouched); the class's own forward is back afterwards.
    Used for extraction-only rearrangements of a model's computation, which its ASE calculator must not see."""
    for module, forward in replacements.items():
        object.__setattr__(module, "forward", forward)
    try:
        yield
    finally:
        for module in replacements:
            module.__dict__.pop("forward", None)
