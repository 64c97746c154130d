"""A compact, array-backed set of structures with per-structure properties.

Every dataset (QM9, Materials Project, the user's files) becomes a `StructureSet`: flat atom arrays with
offsets, so that 130k molecules load from disk in about a second and subsets are cheap; `ase.Atoms` objects
are made on demand for the model adapters and the 3D viewer.

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ase
import numpy as np
import pandas as pd

from cpd_core.errors import CPDInputError, listed

FORMAT_VERSION = 1


@dataclass
class StructureSet:
    """Structures stored as flat arrays.

    numbers:   (total_atoms,) atomic numbers
    positions: (total_atoms, 3) Cartesian coordinates in Å
    offsets:   (n + 1,) start index of each structure's atoms; structure i is offsets[i]:offsets[i+1]
    cells:     (n, 3, 3) lattice vectors in Å (zeros for molecules)
    pbc:       (n, 3) periodic boundary flags
    table:     n rows: `id`, optional labels (e.g. `smiles`, `formula`) and numeric targets
    targets:   names of the numeric target columns of `table`
    units:     unit of each target
    """

    name: str
    numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    cells: np.ndarray
    pbc: np.ndarray
    table: pd.DataFrame
    targets: list[str]
    units: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.offsets) - 1
        if len(self.table) != n or len(self.cells) != n or len(self.pbc) != n:
            raise CPDInputError(
                f"Inconsistent structure set '{self.name}': {n} structures but {len(self.table)} table rows, "
                f"{len(self.cells)} cells and {len(self.pbc)} pbc rows."
            )
        self.table = self.table.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        """(n,) number of atoms in each structure."""
        return np.diff(self.offsets)

    @property
    def periodic(self) -> np.ndarray:
        """(n,) True where the structure is periodic in any direction."""
        return self.pbc.any(axis=1)

    def atoms(self, i: int) -> ase.Atoms:
        """Structure i as an `ase.Atoms` with its table row (numbers only) in `info`."""
        a, b = self.offsets[i], self.offsets[i + 1]
        periodic = bool(self.pbc[i].any())
        atoms = ase.Atoms(
            numbers=self.numbers[a:b],
            positions=self.positions[a:b],
            cell=self.cells[i] if periodic else None,
            pbc=self.pbc[i],
        )
        atoms.info.update({k: v for k, v in self.table.iloc[i].items()})
        return atoms

    def to_atoms_list(self, indices=None) -> list[ase.Atoms]:
        indices = range(len(self)) if indices is None else indices
        return [self.atoms(int(i)) for i in indices]

    def subset(self, indices, name: str | None = None) -> "StructureSet":
        """A new set holding the given structures in the given order."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise CPDInputError(f"Subset indices out of range for '{self.name}' ({len(self)} structures).")
        counts = self.n_atoms[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        atom_idx = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices])
            if len(indices)
            else np.zeros(0, dtype=np.int64)
        )
        return StructureSet(
            name=name or self.name,
            numbers=self.numbers[atom_idx],
            positions=self.positions[atom_idx],
            offsets=offsets,
            cells=self.cells[indices],
            pbc=self.pbc[indices],
            table=self.table.iloc[indices].reset_index(drop=True),
            targets=list(self.targets),
            units=dict(self.units),
        )

    def sample(self, n: int | None, seed: int = 0) -> "StructureSet":
        """A reproducible random subset of n structures (all of them, shuffled, if n is None or too large)."""
        if n is not None and n < 1:
            raise CPDInputError(f"Subset size must be at least 1, got {n}.")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self))
        if n is not None and n < len(self):
            order = np.sort(order[:n])
        label = f"{self.name}[n={len(order)},seed={seed}]" if n is not None and n < len(self) else self.name
        return self.subset(order, name=label)

    def fingerprint(self) -> str:
        """Content hash of the structures and their ids (not the dataset's name), for cache keys."""
        h = hashlib.sha256()
        for arr in (self.numbers.astype(np.int64), self.positions.astype(np.float64), self.offsets.astype(np.int64),
                    self.cells.astype(np.float64), self.pbc.astype(bool)):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\n".join(map(str, self.table["id"])).encode())
        return h.hexdigest()[:20]

    def formula(self, i: int) -> str:
        a, b = self.offsets[i], self.offsets[i + 1]
        return ase.Atoms(numbers=self.numbers[a:b]).get_chemical_formula()

    def target_values(self, name: str) -> np.ndarray:
        if name not in self.targets:
            raise CPDInputError(
                f"Unknown target '{name}' for dataset '{self.name}'. Available targets: {', '.join(self.targets)}."
            )
        return self.table[name].to_numpy(dtype=np.float64)

    # ------------------------------------------------------------------ conversion and storage
    @classmethod
    def from_atoms_list(cls, name: str, atoms_list: list[ase.Atoms], units: dict[str, str] | None = None,
                        ids: list[str] | None = None) -> "StructureSet":
        """Build a set from ASE structures; numeric `atoms.info` entries become targets, strings become labels."""
        if not atoms_list:
            raise CPDInputError(f"'{name}' holds no structures.")
        counts = np.array([len(a) for a in atoms_list], dtype=np.int64)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise CPDInputError(f"'{name}': {empty.size} structure(s) have no atoms (structure "
                                f"{listed([str(i) for i in empty])}, counted from 0); remove them and retry "
                                "(`embed --drop-degenerate` drops them).")
        broken = [str(i) for i, a in enumerate(atoms_list)
                  if not np.isfinite(a.positions).all() or (a.pbc.any() and not np.isfinite(a.cell[:]).all())]
        if broken:
            raise CPDInputError(f"'{name}': {len(broken)} structure(s) have NaN or infinite coordinates or cell "
                                f"vectors (structure {listed(broken)}, counted from 0); fix or remove them.")
        offsets = np.zeros(len(atoms_list) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = []
        for i, atoms in enumerate(atoms_list):
            row = {"id": ids[i] if ids is not None else str(atoms.info.get("id", atoms.info.get("mp_id", i)))}
            # ASE moves energy-like properties of extxyz/db files into a single-point calculator
            results = dict(atoms.calc.results) if atoms.calc is not None else {}
            for key, value in {**results, **atoms.info}.items():
                if key in ("id",):
                    continue
                if isinstance(value, (bool, np.bool_)):
                    continue
                if isinstance(value, np.ndarray) and value.ndim == 0:
                    value = value.item()
                if isinstance(value, (int, float, np.integer, np.floating)):
                    row[key] = float(value)
                elif isinstance(value, str):
                    row[key] = value
            row.setdefault("formula", atoms.get_chemical_formula())
            rows.append(row)
        table = pd.DataFrame(rows)
        numeric = [c for c in table.columns if c != "id" and pd.api.types.is_numeric_dtype(table[c])]
        return cls(
            name=name,
            numbers=np.concatenate([a.numbers for a in atoms_list]).astype(np.int16),
            positions=np.concatenate([a.positions for a in atoms_list]).astype(np.float64),
            offsets=offsets,
            cells=np.stack([np.asarray(a.cell[:], dtype=np.float64) for a in atoms_list]),
            pbc=np.stack([np.asarray(a.pbc, dtype=bool) for a in atoms_list]),
            table=table,
            targets=numeric,
            units=dict(units or {}),
        )

    def save(self, directory: Path) -> None:
        """Write arrays (npz) and table (Parquet) atomically into `directory`."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp"))
        np.savez(tmp / "atoms.npz", numbers=self.numbers, positions=self.positions, offsets=self.offsets,
                 cells=self.cells, pbc=self.pbc)
        self.table.to_parquet(tmp / "table.parquet", index=False)
        meta = {"name": self.name, "targets": self.targets, "units": self.units, "format": FORMAT_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        os.replace(tmp, directory)

    @classmethod
    def load(cls, directory: Path) -> "StructureSet":
        """Read a set written by `save`; raises CPDInputError if it is incomplete or of another format."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text())
            if meta.get("format") != FORMAT_VERSION:
                raise CPDInputError(f"Cached dataset {directory} has format {meta.get('format')}, need {FORMAT_VERSION}.")
            with np.load(directory / "atoms.npz") as z:
                arrays = {k: z[k] for k in z.files}
            table = pd.read_parquet(directory / "table.parquet")
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CPDInputError(f"Cached dataset at {directory} is unreadable ({exc}); it will be rebuilt.") from exc
        return cls(name=meta["name"], table=table, targets=meta["targets"], units=meta["units"], **arrays)
