"""Composition matrix of a structure set: one column per element present, counts (default) or fractions.

The intercept is not a column here: the composition projector adds it.

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols

from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError

KINDS = ("counts", "fractions")


def composition_matrix(structures: StructureSet, kind: str = "counts",
                       elements: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, n_elements) element counts or fractions and the element symbols of the columns.

    `elements` fixes the columns (e.g. to align two sets); by default every element present, in Z order.
    """
    if kind not in KINDS:
        raise CPDInputError(f"Unknown composition kind '{kind}'; choose one of {KINDS}.")
    z_present = np.unique(structures.numbers)
    if elements is None:
        columns = z_present
    else:
        columns = np.array([chemical_symbols.index(e) for e in elements])
        missing = set(z_present) - set(columns)
        if missing:
            raise CPDInputError(
                f"Elements {[chemical_symbols[z] for z in sorted(missing)]} occur in '{structures.name}' but are "
                "not among the requested composition columns."
            )
    column_of = np.full(max(int(columns.max()), int(z_present.max())) + 1, -1)
    column_of[columns] = np.arange(len(columns))
    structure_of_atom = np.repeat(np.arange(len(structures)), structures.n_atoms)
    counts = np.zeros((len(structures), len(columns)))
    np.add.at(counts, (structure_of_atom, column_of[structures.numbers]), 1.0)
    if kind == "fractions":
        counts /= structures.n_atoms[:, None]
    return counts, [chemical_symbols[z] for z in columns]
