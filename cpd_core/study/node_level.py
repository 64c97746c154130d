"""Node-level CPD: is composition entangled per atom, before pooling? Per-atom invariants of every layer and L
channel (L>0 as per-atom norms) are probed for per-atom targets, with the atom's own composition descriptors
(its element one-hot plus the element counts within the model's cutoff) removed. Targets: QM9's Mulliken charges
where the structures are QM9 molecules, and two geometry descriptors everywhere (coordination number, distance
to the centroid). Folds are drawn over molecules, so no molecule has atoms on both sides of a split.

Stage: study (stage 5 of 5).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from cpd_core.data.atoms import atom_composition, geometry_descriptors, mulliken_charges
from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError

GEOMETRY_TARGETS = ("coordination", "centroid_distance")
UNITS = {"mulliken": "e", "coordination": "atoms", "centroid_distance": "Å"}


def _is_qm9(structures: StructureSet) -> bool:
    return bool(structures.table["id"].astype(str).str.startswith("qm9-").all())


def target_names(structures: StructureSet) -> list[str]:
    """The per-atom targets these structures have: `mulliken` for QM9 molecules, then the geometry descriptors."""
    return (["mulliken"] if _is_qm9(structures) else []) + list(GEOMETRY_TARGETS)


def atom_targets(structures: StructureSet) -> pd.DataFrame:
    """Per-atom values of `target_names(structures)`, one row per atom."""
    table = geometry_descriptors(structures)
    if _is_qm9(structures):
        table.insert(0, "mulliken", mulliken_charges(structures))
    return table


def node_level(structures: StructureSet, model_ids: Iterable[str], targets: Iterable[str] | None = None,
               folds: int = 5, seed: int = 0, progress=None) -> pd.DataFrame:
    """Node-level R²_full, R²_comp and R²_geom (Ridge, folds over molecules) per model, layer, L and target."""
    from cpd_core.engine.scores import cpd_scores
    from cpd_core.models import load_model
    from cpd_core.representations.extract import extract_atom_invariants

    available = atom_targets(structures)
    targets = list(targets) if targets is not None else list(available.columns)
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise CPDInputError(f"Unknown per-atom target(s) {unknown}; available here: {', '.join(available.columns)}.")
    Y = available[targets].to_numpy(dtype=np.float64)
    molecule = np.repeat(np.arange(len(structures)), structures.n_atoms)
    atoms = structures.to_atoms_list()
    rows = []
    for m in model_ids:
        adapter = load_model(m)
        C, _ = atom_composition(structures, adapter.info.cutoff)
        depth = {layer: i + 1 for i, layer in enumerate(adapter.info.layers)}
        invariants = extract_atom_invariants(adapter, atoms)
        for k, ((layer, l), H) in enumerate(invariants.items()):
            for r in cpd_scores(H, C, Y, targets, probe="ridge", folds=folds, seed=seed, row_groups=molecule):
                rows.append({"model": m, "layer": layer, "depth": depth[layer], "channel": f"L{l}",
                             "invariant": "atom_norm" if l else "", "dim": H.shape[1], "target": r.target,
                             "units": UNITS.get(r.target, ""), "r2_full": r.r2_full, "r2_full_std": r.r2_full_std,
                             "r2_comp": r.r2_comp, "r2_comp_std": r.r2_comp_std, "r2_geom": r.r2_geom,
                             "r2_geom_std": r.r2_geom_std, "n_atoms": r.n, "n_structures": len(structures),
                             "cutoff": adapter.info.cutoff, "folds": folds, "seed": seed})
            if progress is not None:
                progress(f"node-level CPD of {m}", k + 1, len(invariants))
    return pd.DataFrame(rows)
