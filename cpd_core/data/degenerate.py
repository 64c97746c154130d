"""Degenerate structures: an atom with no neighbour within a model's cutoff (isolated), or two atoms closer than
0.5 Å (overlapping). (Structures with no atoms never reach a StructureSet: reading a file refuses or drops them.) Models still give such structures finite features (an isolated atom's come from
its element alone; overlapping atoms are unphysical), so they are found and named before extraction, and the
caller warns and keeps them or drops them (`embed --drop-degenerate`).

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from cpd_core.data.structures import StructureSet
from cpd_core.errors import listed

OVERLAP = 0.5  # Å: atoms closer than this overlap
DENSE_LIMIT = 2000  # atoms: larger molecules go through ASE's neighbour list instead of all pairs


@dataclass
class Degenerate:
    """Structure indices (0-based, input order) per kind of degeneracy, and the criteria used."""
    isolated: list[int] = field(default_factory=list)
    overlapping: list[int] = field(default_factory=list)
    cutoff: float = 0.0
    overlap: float = OVERLAP

    def indices(self) -> list[int]:
        return sorted(set(self.isolated) | set(self.overlapping))

    def to_dict(self) -> dict:
        return asdict(self)


def _nearest(structures: StructureSet, i: int, reach: float) -> np.ndarray:
    """Each atom's nearest-neighbour distance in structure i (periodic images included), inf beyond `reach`."""
    n = int(structures.n_atoms[i])
    if structures.periodic[i] or n > DENSE_LIMIT:
        from ase.neighborlist import neighbor_list

        first, dist = neighbor_list("id", structures.atoms(i), reach)
        nearest = np.full(n, np.inf)
        np.minimum.at(nearest, first, dist)
        return nearest
    a, b = structures.offsets[i], structures.offsets[i + 1]
    pos = structures.positions[a:b]
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def find_degenerate(structures: StructureSet, cutoff: float, overlap: float = OVERLAP) -> Degenerate:
    """The degenerate structures for a model with this cutoff (cutoff <= 0: isolated atoms are not checked)."""
    found = Degenerate(cutoff=float(cutoff), overlap=overlap)
    for i in range(len(structures)):
        nearest = _nearest(structures, i, max(cutoff, overlap))
        if cutoff > 0 and (nearest > cutoff).any():
            found.isolated.append(i)
        if nearest.min() < overlap:
            found.overlapping.append(i)
    return found


def describe_degenerate(found: Degenerate, structures: StructureSet) -> list[str]:
    """One warning line per kind, naming the structures (first ten and a count)."""
    def names(rows):
        return listed([f"{i} ({structures.atoms(i).get_chemical_formula()})" for i in rows])

    lines = []
    if found.isolated:
        lines.append(f"{len(found.isolated)} structure(s) have an atom with no neighbour within the model's cutoff "
                     f"({found.cutoff:g} Å), so its features come from its element alone: {names(found.isolated)}.")
    if found.overlapping:
        lines.append(f"{len(found.overlapping)} structure(s) have atoms closer than {found.overlap:g} Å "
                     f"(overlapping, unphysical): {names(found.overlapping)}.")
    return lines
