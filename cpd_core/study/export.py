"""Export of an embedding map to chemiscope (https://chemiscope.org): the structures, PCA or UMAP coordinates of
the raw and the composition-removed representation, the targets, the element counts and, for a chosen target,
each structure's out-of-fold error of a Ridge probe on the full and on the composition-removed representation,
written as the `.json.gz` that chemiscope's viewer opens.

Stage: study (stage 5 of 5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpd_core.data.composition import composition_matrix
from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError


def out_of_fold_errors(H: np.ndarray, C: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Per-structure prediction - target of a Ridge probe, out of fold (shuffled K-fold), on the full features
    and on their composition-removed residual (projection fitted on each training fold). NaN targets stay NaN."""
    from cpd_core.engine.probes import make_probe
    from cpd_core.engine.projection import CompositionProjector
    from cpd_core.engine.scores import fold_indices

    finite = np.flatnonzero(np.isfinite(y))
    errors = {"full": np.full(len(y), np.nan), "geom": np.full(len(y), np.nan)}
    for train, test in fold_indices(len(finite), folds, seed):
        tr, te = finite[train], finite[test]
        projector = CompositionProjector().fit(C[tr], H[tr])
        inputs = {"full": (H[tr], H[te]), "geom": (projector.transform(H[tr]), projector.transform(H[te], C[te]))}
        for part, (X_train, X_test) in inputs.items():
            model = make_probe("ridge", seed=seed).fit(X_train, y[tr])
            errors[part][te] = np.asarray(model.predict(X_test)).reshape(-1) - y[te]
    return errors


def chemiscope_export(path, structures: StructureSet, features: np.ndarray, name: str, target: str | None = None,
                      method: str = "pca", composition: str = "counts", seed: int = 0, folds: int = 5) -> Path:
    """Write `path` (.json.gz): the structures with the map and per-structure properties; returns the path."""
    import chemiscope

    from cpd_core.study.analysis import composition_table, embedding_map

    path = Path(path)
    if not path.name.endswith(".json.gz"):
        raise CPDInputError(f"chemiscope files end with .json.gz; got {path.name}.")
    H = np.asarray(features, dtype=np.float64)
    if H.ndim != 2 or len(H) != len(structures):
        raise CPDInputError(f"Features must be (structures x features) for {len(structures)} structures, got "
                            f"{H.shape}.")
    C, _ = composition_matrix(structures, composition)
    props = {}
    for residual, label in ((False, "raw"), (True, "residual")):
        xy = embedding_map(H, method, residual, C, seed=seed)
        for axis in ("x", "y"):
            props[f"{method} {label} {1 if axis == 'x' else 2}"] = {
                "target": "structure", "values": xy[axis].to_numpy(),
                "description": f"{method.upper()} of the {'composition-removed' if residual else 'raw'} "
                               f"representation ({name})"}
    for t in structures.targets:
        props[t] = {"target": "structure", "values": structures.target_values(t),
                    "units": structures.units.get(t, "")}
    counts = composition_table(structures)
    for column in (c for c in counts.columns if c.startswith("count_")):
        props[column] = {"target": "structure", "values": counts[column].to_numpy(dtype=float)}
    if target is not None:
        if target not in structures.targets:
            raise CPDInputError(f"Unknown target '{target}'; choose one of {', '.join(structures.targets)}.")
        for part, values in out_of_fold_errors(H, C, structures.target_values(target), folds, seed).items():
            props[f"{target} error ({part})"] = {
                "target": "structure", "values": values, "units": structures.units.get(target, ""),
                "description": f"Ridge prediction - {target}, out of fold, from the "
                               f"{'full' if part == 'full' else 'composition-removed'} representation"}
    colour = target or (structures.targets[0] if structures.targets else None)
    settings = {"map": {"x": {"property": f"{method} residual 1"}, "y": {"property": f"{method} residual 2"}}}
    if colour:
        settings["map"]["color"] = {"property": colour}
    path.parent.mkdir(parents=True, exist_ok=True)
    chemiscope.write_input(str(path), structures=structures.to_atoms_list(), properties=props, settings=settings,
                           metadata={"name": f"CPD Explorer: {name}",
                                     "description": "Each point is a structure; the default map is the "
                                                    "representation after removing everything linear in "
                                                    "composition."})
    return path
