"""Per-atom data for node-level CPD: QM9's Mulliken charges (qm9pack ships them), simple per-atom geometry
descriptors (coordination number, distance to the centroid), and per-atom composition descriptors (the atom's
element one-hot plus the element counts of its neighbourhood within a cutoff).

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from filelock import FileLock

from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError
from cpd_core.paths import cache_dir

COORDINATION_CUTOFF = 1.8  # Å: bonded neighbours (C-H 1.09, C-C 1.54, C-F 1.35; non-bonded pairs are farther)


def _all_mulliken() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(QM9 Index per molecule, atom offsets, charges) for all of QM9, parsed once into the dataset cache."""
    from cpd_core.data.qm9 import CSV_PARTS, _qm9pack_data

    path = cache_dir() / "datasets" / "qm9_mulliken.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            with np.load(path) as z:
                return z["index"], z["offsets"], z["charges"]
        folder = _qm9pack_data()
        df = pd.concat([pd.read_csv(folder / part, usecols=["Index", "Mulliken_pop"]) for part in CSV_PARTS],
                       ignore_index=True).sort_values("Index", kind="stable")
        per_molecule = [s.strip("[] ").replace("*^", "e").split(",") for s in df["Mulliken_pop"]]
        counts = np.array([len(v) for v in per_molecule])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        charges = np.array([float(x) for v in per_molecule for x in v])
        index = df["Index"].to_numpy()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, index=index, offsets=offsets, charges=charges)
        tmp.replace(path)
        return index, offsets, charges


def mulliken_charges(structures: StructureSet) -> np.ndarray:
    """Mulliken partial charge of every atom (e) of a QM9 structure set, atoms in the set's order."""
    ids = structures.table["id"].astype(str)
    if not ids.str.startswith("qm9-").all():
        raise CPDInputError("Mulliken charges exist for QM9 molecules only; per-atom targets of other structures "
                            "are the geometry descriptors (coordination, centroid distance).")
    index, offsets, charges = _all_mulliken()
    position = {int(i): k for k, i in enumerate(index)}
    parts = []
    for i, qm9_id in enumerate(ids):
        k = position[int(qm9_id[4:])]
        values = charges[offsets[k]:offsets[k + 1]]
        if len(values) != structures.n_atoms[i]:
            raise CPDInputError(f"{qm9_id}: {len(values)} Mulliken charges for {structures.n_atoms[i]} atoms.")
        parts.append(values)
    return np.concatenate(parts)


def _distances(structures: StructureSet, i: int) -> np.ndarray:
    a, b = structures.offsets[i], structures.offsets[i + 1]
    pos = structures.positions[a:b]
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d


def _molecules_only(structures: StructureSet) -> None:
    if structures.periodic.any():
        raise CPDInputError("Node-level descriptors are defined for molecules here; the set has periodic structures.")


def geometry_descriptors(structures: StructureSet) -> pd.DataFrame:
    """Per atom: `coordination` (neighbours within 1.8 Å) and `centroid_distance` (Å, to the molecule's centroid)."""
    _molecules_only(structures)
    coordination, centroid = [], []
    for i in range(len(structures)):
        a, b = structures.offsets[i], structures.offsets[i + 1]
        pos = structures.positions[a:b]
        coordination.append((_distances(structures, i) < COORDINATION_CUTOFF).sum(axis=1))
        centroid.append(np.linalg.norm(pos - pos.mean(axis=0), axis=1))
    return pd.DataFrame({"coordination": np.concatenate(coordination).astype(float),
                         "centroid_distance": np.concatenate(centroid)})


def atom_composition(structures: StructureSet, cutoff: float) -> tuple[np.ndarray, list[str]]:
    """Per atom: its element one-hot, then the counts of each element among its neighbours within `cutoff`
    (the composition a model with that cutoff sees around the atom). Returns the matrix and column names."""
    _molecules_only(structures)
    elements = sorted(set(structures.numbers.tolist()))
    column = {z: k for k, z in enumerate(elements)}
    rows = []
    for i in range(len(structures)):
        a, b = structures.offsets[i], structures.offsets[i + 1]
        z = structures.numbers[a:b]
        onehot = np.zeros((b - a, len(elements)))
        onehot[np.arange(b - a), [column[int(v)] for v in z]] = 1.0
        within = (_distances(structures, i) < cutoff).astype(float)
        rows.append(np.hstack([onehot, within @ onehot]))
    from ase.data import chemical_symbols

    names = [f"is_{chemical_symbols[z]}" for z in elements] + [f"near_{chemical_symbols[z]}" for z in elements]
    return np.vstack(rows), names
