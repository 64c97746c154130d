"""Tidy tables for the dashboard (and any script): thin wrappers that put the engine's pieces together.

Everything here is built from `cpd_core.representations.cache` (representations), `cpd_core.engine.scores`
(CPD scores with shuffled K-fold probes) and `cpd_core.engine.projection`; the pages only draw what these functions return.

Progress callbacks have the signature `progress(message: str, done: int, total: int)`.

Feature sets are keyed `(model, layer, channel)`: channel `L<l>` is one irrep channel of a layer (L>0 channels
through the chosen rotation invariant, see `cpd_core.representations.invariants`), `all` the concatenation of a
layer's channels (only for layers with more than one L).

Control targets: besides the dataset's own targets, `control:nonlinear` and `control:mass` are purely
compositional targets (`cpd.composition_control_target`, from element counts), to show what a probe recovers
from the residual.

Stage: study (stage 5 of 5).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from cpd_core.data.composition import composition_matrix
from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError
from cpd_core.representations.invariants import INVARIANTS, POOLINGS, channels_of, feature_key

AnalysisProgress = Callable[[str, int, int], None]

CONTROL_TARGETS = {
    "control:nonlinear": ("nonlinear", "log(mass) x number of distinct elements: nonlinear in composition only"),
    "control:mass": ("mass", "total mass: linear in element counts"),
}
PART_LABELS = {"full": "R²_full", "comp": "R²_comp", "geom": "R²_geom"}
INVARIANT_LABELS = {
    "pooled_norm": "pooled_norm: norm of the atom-pooled L-vector (net, dipole-like)",
    "atom_norm": "atom_norm: pooled per-atom norms (behaves like an L=0 channel)",
}


def _noop(message: str, done: int, total: int) -> None:
    return None


# ---------------------------------------------------------------------------------------------- models
def model_table(model_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per model: id, family, offline, trained, input, cutoff, elements, layers (irreps), max_l, ..."""
    from cpd_core.models import describe_model, model_ids as all_ids, offline_available

    rows = []
    for m in (list(model_ids) if model_ids is not None else all_ids()):
        info = describe_model(m)
        max_l = max(max(channels_of(irreps)) for irreps in info.layers.values())
        rows.append({
            "model": m, "family": info.family, "offline": bool(offline_available(m)),
            "trained": "random" not in info.weights_source.lower(), "input": info.input,
            "cutoff": info.cutoff, "n_layers": len(info.layers), "max_l": int(max_l),
            "elements": " ".join(info.elements),
            "layers": "; ".join(f"{name}: {irreps}" for name, irreps in info.layers.items()),
            "weights_source": info.weights_source, "description": info.description, "notes": info.notes,
        })
    return pd.DataFrame(rows)


def layer_depths(model_id: str) -> dict[str, int]:
    """layer name -> depth (1 = first layer), in the model's layer order."""
    from cpd_core.models import describe_model

    return {layer: i + 1 for i, layer in enumerate(describe_model(model_id).layers)}


def is_equivariant(model_id: str) -> bool:
    """True when some layer of the model has L>0 channels."""
    from cpd_core.models import describe_model

    return any(max(channels_of(irreps)) > 0 for irreps in describe_model(model_id).layers.values())


def unsupported_elements(structures: StructureSet, model_ids: Iterable[str]) -> dict[str, list[str]]:
    """model -> elements of the structures that the model does not support (only models with some)."""
    from ase.data import chemical_symbols

    from cpd_core.models import describe_model

    present = {chemical_symbols[z] for z in np.unique(structures.numbers)}
    out = {}
    for m in model_ids:
        bad = sorted(present - set(describe_model(m).elements))
        if bad:
            out[m] = bad
    return out


def supported_subset(structures: StructureSet, model_ids: Iterable[str]) -> tuple[StructureSet, int]:
    """The structures made only of elements every given model supports, and how many were removed."""
    from ase.data import atomic_numbers

    from cpd_core.models import describe_model

    allowed = None
    for m in model_ids:
        z = {atomic_numbers[e] for e in describe_model(m).elements}
        allowed = z if allowed is None else allowed & z
    if allowed is None:
        return structures, 0
    ok_atom = np.isin(structures.numbers, sorted(allowed))
    structure_of_atom = np.repeat(np.arange(len(structures)), structures.n_atoms)
    bad = np.zeros(len(structures), dtype=bool)
    bad[structure_of_atom[~ok_atom]] = True
    if not bad.any():
        return structures, 0
    keep = np.flatnonzero(~bad)
    if keep.size == 0:
        raise CPDInputError("No structure is made only of elements that all selected models support; "
                            "choose other models or another dataset.")
    return structures.subset(keep, name=f"{structures.name}[supported]"), int(bad.sum())


# ---------------------------------------------------------------------------------------------- features
def feature_sets(structures: StructureSet, model_ids: Iterable[str], pooling: str = "mean",
                 invariant: str = "pooled_norm", progress: AnalysisProgress | None = None,
                 combined: bool | str = True) -> dict[tuple[str, str, str], np.ndarray]:
    """{(model, layer, channel): (n, d)} per-structure representations, from the cache (computed if missing).

    channel: `L<l>` for each irrep degree of the layer (L>0 through `invariant`), and `all` (the layer's
    channels side by side) when a layer has more than one L and `combined` is set; with
    `combined="always"` every layer gets an `all` entry (equal to L0 for scalar-only layers).
    """
    from cpd_core.representations.cache import cached_invariants
    from cpd_core.models import describe_model

    if pooling not in POOLINGS:
        raise CPDInputError(f"Unknown pooling '{pooling}'; choose one of {POOLINGS}.")
    if invariant not in INVARIANTS:
        raise CPDInputError(f"Unknown L>0 invariant '{invariant}'; choose one of {INVARIANTS}.")
    progress = progress or _noop
    out: dict[tuple[str, str, str], np.ndarray] = {}
    for m in model_ids:
        info = describe_model(m)
        arrays = cached_invariants(m, structures, progress=lambda d, t, m=m: progress(f"{m} representations", d, t))
        for layer, irreps in info.layers.items():
            blocks = []
            for l in channels_of(irreps):
                H = arrays[feature_key(layer, l, pooling, invariant)]
                out[(m, layer, f"L{l}")] = H
                blocks.append(H)
            if (combined and len(blocks) > 1) or combined == "always":
                out[(m, layer, "all")] = np.hstack(blocks)
    return out


def target_matrix(structures: StructureSet, targets: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """(n, t) target values (dataset targets or `control:*` targets) and their names."""
    targets = list(targets)
    if not targets:
        raise CPDInputError("Choose at least one target.")
    columns = []
    for t in targets:
        if t in CONTROL_TARGETS:
            C, elements = composition_matrix(structures, "counts")
            from cpd_core.engine.scores import composition_control_target

            columns.append(composition_control_target(C, elements, CONTROL_TARGETS[t][0]))
        else:
            columns.append(structures.target_values(t))
    return np.column_stack(columns), targets


def _label_table(table: pd.DataFrame, pooling: str, invariant: str, composition: str) -> pd.DataFrame:
    from cpd_core.models import describe_model

    infos = {m: describe_model(m) for m in table["model"].unique()}
    depths = {m: layer_depths(m) for m in infos}
    table = table.copy()
    table.insert(1, "family", table["model"].map(lambda m: infos[m].family))
    table.insert(3, "depth", [depths[m][layer] for m, layer in zip(table["model"], table["layer"])])
    table.insert(4, "n_layers", table["model"].map(lambda m: len(infos[m].layers)))
    table.insert(5, "rel_depth", table["depth"] / table["n_layers"])
    table["invariant"] = np.where(table["channel"] == "L0", "", invariant)
    table["pooling"] = pooling
    table["composition"] = composition
    table["control"] = table["target"].isin(list(CONTROL_TARGETS))
    return table


def disentanglement(structures: StructureSet, model_ids: Iterable[str], targets: Iterable[str],
                    probe: str = "ridge", pooling: str = "mean", invariant: str = "pooled_norm",
                    folds: int = 5, seed: int = 0, composition: str = "counts", projection: str = "fold",
                    features: dict | None = None, only: Iterable[tuple[str, str, str]] | None = None,
                    progress: AnalysisProgress | None = None, n_jobs: int = -1, split: str = "kfold",
                    criterion: str | None = None, eraser: str = "qr") -> pd.DataFrame:
    """CPD scores of every (model, layer, channel) for the targets, as one tidy table.

    Columns: model, family, layer, depth, n_layers, rel_depth, channel, dim, target, r2_full, r2_full_std,
    r2_comp, r2_comp_std, r2_geom, r2_geom_std, n, n_dropped, probe, folds, seed, projection, shuffle,
    invariant ('' for L0), pooling, composition, control.
    `only` restricts to the given (model, layer, channel) keys; `features` reuses precomputed feature sets.
    `criterion` chooses how Ridge picks its alpha ('kfold', 'loo', 'gcv'; default 'kfold'); other probes ignore it.
    `eraser` removes composition for R²_geom: 'qr' (least-squares projection on [1 | C], the default) or 'leace'.
    """
    from cpd_core.engine.probes import ridge_params
    from cpd_core.engine.projection import eraser_params
    from cpd_core.engine.scores import cpd_grid

    progress = progress or _noop
    model_ids = list(model_ids)
    if not model_ids:
        raise CPDInputError("Choose at least one model.")
    if features is None:
        features = feature_sets(structures, model_ids, pooling, invariant, progress)
    features = {k: v for k, v in features.items() if k[0] in model_ids}
    if only is not None:
        only = set(map(tuple, only))
        features = {k: v for k, v in features.items() if k in only}
    if not features:
        raise CPDInputError("No representation matches the selection.")
    C, _ = composition_matrix(structures, composition)
    Y, names = target_matrix(structures, targets)
    table = cpd_grid(features, C, Y, names, probe=probe, folds=folds, seed=seed, projection=projection,
                     progress=lambda d, t: progress(f"CPD with {probe} probes", d, t), n_jobs=n_jobs, split=split,
                     probe_params=ridge_params(probe, criterion), projector_params=eraser_params(eraser))
    table = _label_table(table, pooling, invariant, composition)
    if eraser != "qr":  # QR tables keep their columns (and match the cached and committed results)
        table["eraser"] = eraser
    return table


def best_layer(table: pd.DataFrame, by: str = "r2_geom", channels: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (model, target, probe): the (layer, channel) with the highest `by`.

    `channels` restricts the candidates (e.g. ["L0"]). The selection uses the same folds as the scores, so the
    best value is slightly optimistic; the row records what it was selected by.
    """
    if channels is not None:
        table = table[table["channel"].isin(list(channels))]
    if table.empty:
        raise CPDInputError("No layer or channel to choose from.")
    idx = table.groupby(["model", "target", "probe"], sort=False)[by].idxmax()
    best = table.loc[idx.to_numpy()].copy()
    best["selected_by"] = by
    return best.reset_index(drop=True)


LAYER_CHANNEL_MODES = ("L0", "all", "best")


def layer_profile(table: pd.DataFrame, mode: str = "L0", by: str = "r2_geom") -> pd.DataFrame:
    """One row per (model, layer, target, probe) for plotting scores against depth.

    mode 'L0': the scalar channel; 'all': the layer's channels together (L0 where a layer has only scalars);
    'best': the channel with the highest `by` in each layer.
    """
    if mode not in LAYER_CHANNEL_MODES:
        raise CPDInputError(f"Unknown channel mode '{mode}'; choose one of {LAYER_CHANNEL_MODES}.")
    keys = ["model", "layer", "target", "probe"]
    if mode == "L0":
        out = table[table["channel"] == "L0"]
    elif mode == "all":
        has_all = table[table["channel"] == "all"].set_index(keys).index
        idx = table.set_index(keys).index
        out = table[(table["channel"] == "all") | ((table["channel"] == "L0") & ~idx.isin(has_all))]
    else:
        out = table[table["channel"] != "all"]
        out = out.loc[out.groupby(keys, sort=False)[by].idxmax().to_numpy()]
    return out.sort_values(["model", "target", "depth"], kind="stable").reset_index(drop=True)


def headline(structures: StructureSet, model_ids: Iterable[str], targets: Iterable[str], probe: str = "ridge",
             select_by: str = "r2_geom", progress: AnalysisProgress | None = None, **kwargs) -> pd.DataFrame:
    """Best layer per model and target: R²_full, R²_comp, R²_geom (mean, std over folds).

    Layers are chosen with Ridge (every layer and channel, cheap); a nonlinear probe ('mlp', 'gbt') is then
    run only on the chosen (layer, channel) of each model. `selected_by` says how the layer was chosen.
    """
    targets = list(targets)
    ridge = disentanglement(structures, model_ids, targets, probe="ridge", progress=progress, **kwargs)
    best = best_layer(ridge, by=select_by)
    if probe == "ridge":
        return best
    chosen = {(r.model, r.layer, r.channel) for r in best.itertuples()}
    kwargs.pop("only", None)
    table = disentanglement(structures, model_ids, targets, probe=probe, only=chosen, progress=progress, **kwargs)
    keep = set((r.model, r.layer, r.channel, r.target) for r in best.itertuples())
    mask = [(r.model, r.layer, r.channel, r.target) in keep for r in table.itertuples()]
    out = table[mask].reset_index(drop=True)
    out["selected_by"] = f"ridge {select_by}"
    return out


def routing(structures: StructureSet, model_ids: Iterable[str], targets: Iterable[str], probe: str = "ridge",
            progress: AnalysisProgress | None = None, **kwargs) -> pd.DataFrame:
    """R² per (layer, L channel) x target for the equivariant models among `model_ids`.

    Adds `row` ("<layer> · L<l>") in depth order; L>0 rows carry the invariant used in `invariant`.
    """
    equivariant = [m for m in model_ids if is_equivariant(m)]
    if not equivariant:
        raise CPDInputError("None of the selected models has L>0 channels; add an equivariant model "
                            "(e.g. mace-spice, sevennet-0, so3net-ani1x).")
    features = kwargs.pop("features", None)
    pooling = kwargs.get("pooling", "mean")
    invariant = kwargs.get("invariant", "pooled_norm")
    if features is None:
        features = feature_sets(structures, equivariant, pooling, invariant, progress, combined=False)
    features = {k: v for k, v in features.items() if k[2] != "all"}
    table = disentanglement(structures, equivariant, targets, probe=probe, features=features, progress=progress,
                            **kwargs)
    table["l"] = table["channel"].str[1:].astype(int)
    table = table.sort_values(["model", "depth", "l"], kind="stable").reset_index(drop=True)
    table["row"] = table["layer"] + " · " + table["channel"]
    return table


def probe_comparison(structures: StructureSet, model_id: str, layer: str, channel: str, targets: Iterable[str],
                     probes: Iterable[str] = ("ridge", "mlp", "gbt"), controls: Iterable[str] = tuple(CONTROL_TARGETS),
                     progress: AnalysisProgress | None = None, **kwargs) -> pd.DataFrame:
    """The same representation and residuals probed by each probe, for the targets and the compositional
    control targets (`control` column True). A linear probe on the residual cannot use the linear
    composition part; nonlinear probes can still read nonlinear functions of composition from it."""
    progress = progress or _noop
    all_targets = list(dict.fromkeys(list(targets) + list(controls)))
    pooling = kwargs.get("pooling", "mean")
    invariant = kwargs.get("invariant", "pooled_norm")
    features = kwargs.pop("features", None)
    if features is None:
        features = feature_sets(structures, [model_id], pooling, invariant, progress)
    key = (model_id, layer, channel)
    if key not in features:
        raise CPDInputError(f"{model_id} has no channel {channel} in layer {layer}.")
    frames = []
    jobs = [(p, t) for p in probes for t in all_targets]
    for i, (p, t) in enumerate(jobs):  # one target at a time: finer progress (nonlinear probes fit per target)
        progress(f"{p} probe on {t}", i, len(jobs))
        frames.append(disentanglement(structures, [model_id], [t], probe=p, features={key: features[key]},
                                      n_jobs=1, **kwargs))
    progress("probes", len(jobs), len(jobs))
    return pd.concat(frames, ignore_index=True)


def default_sizes(n: int, folds: int = 5, smallest: int = 20, points: int = 7) -> list[int]:
    """Training-set sizes on a log scale from `smallest` up to the largest training fold."""
    largest = n - math.ceil(n / folds)
    if largest < smallest:
        raise CPDInputError(f"Too few structures ({n}) for a learning curve; need at least "
                            f"{math.ceil(smallest * folds / (folds - 1)) + 1}.")
    sizes = np.unique(np.round(np.geomspace(smallest, largest, points)).astype(int))
    return [int(s) for s in sizes]


def sample_efficiency_table(structures: StructureSet, model_ids: Iterable[str], target: str,
                            sizes: Iterable[int] | None = None, probe: str = "ridge",
                            choice: dict[str, tuple[str, str]] | None = None, folds: int = 5, seed: int = 0,
                            seeds: Iterable[int] = (0, 1, 2), parts: Iterable[str] = ("geom", "full"),
                            pooling: str = "mean", invariant: str = "pooled_norm", composition: str = "counts",
                            progress: AnalysisProgress | None = None, criterion: str | None = None) -> pd.DataFrame:
    """R² against training-set size per model (mean and std over folds x seeds), at fixed test folds.

    choice: model -> (layer, channel); by default each model's best layer by Ridge R²_geom on all rows.
    Columns: model, family, layer, channel, target, part, size, r2, r2_std, runs, probe.
    """
    from cpd_core.engine.scores import sample_efficiency
    from cpd_core.models import describe_model
    from cpd_core.engine.probes import ridge_params

    progress = progress or _noop
    model_ids = list(model_ids)
    features = feature_sets(structures, model_ids, pooling, invariant, progress)
    if choice is None:
        ridge = disentanglement(structures, model_ids, [target], probe="ridge", pooling=pooling,
                                invariant=invariant, folds=folds, seed=seed, composition=composition,
                                features=features, progress=progress, criterion=criterion)
        choice = {r.model: (r.layer, r.channel) for r in best_layer(ridge).itertuples()}
    sizes = list(sizes) if sizes is not None else default_sizes(len(structures), folds)
    C, _ = composition_matrix(structures, composition)
    Y, names = target_matrix(structures, [target])
    frames = []
    for i, m in enumerate(model_ids):
        progress("learning curves", i, len(model_ids))
        layer, channel = choice[m]
        raw = sample_efficiency(features[(m, layer, channel)], C, Y, sizes, names, probe=probe, folds=folds,
                                seeds=tuple(seeds), seed=seed, parts=tuple(parts),
                                probe_params=ridge_params(probe, criterion))
        agg = raw.groupby(["target", "part", "size"], as_index=False)["r2"].agg(r2="mean", r2_std="std",
                                                                               runs="count")
        agg.insert(0, "model", m)
        agg.insert(1, "family", describe_model(m).family)
        agg.insert(2, "layer", layer)
        agg.insert(3, "channel", channel)
        agg["probe"] = probe
        frames.append(agg)
    progress("learning curves", len(model_ids), len(model_ids))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------- maps
def embedding_map(features: np.ndarray, method: str = "pca", residual: bool = False,
                  composition: np.ndarray | None = None, seed: int = 0, n_neighbors: int = 15) -> pd.DataFrame:
    """2-D map of per-structure representations: columns x, y (rows in input order).

    Features are standardised (columns constant over the rows dropped); with `residual`, the part linear in
    composition ([1 | C], fitted on all rows: a picture, not a score) is removed first. method 'pca' or 'umap'.
    PCA maps carry the explained variance ratios in `attrs['explained']`.
    """
    from cpd_core.engine.probes import FoldScaler
    from cpd_core.engine.projection import CompositionProjector

    H = np.asarray(features, dtype=np.float64)
    if H.ndim != 2 or len(H) < 3:
        raise CPDInputError(f"Need at least 3 structures for a map, got {len(H)}.")
    if residual:
        if composition is None:
            raise CPDInputError("A residual map needs the composition matrix.")
        H = CompositionProjector().fit_transform(composition, H)
    Z = FoldScaler(clip=False).fit_transform(H)
    if Z.shape[1] == 0:
        raise CPDInputError("Every column of this representation is constant over these structures; nothing to map.")
    if Z.shape[1] == 1:
        Z = np.hstack([Z, np.zeros_like(Z)])
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(Z)
        out = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})
        out.attrs["explained"] = pca.explained_variance_ratio_.tolist()
        return out
    if method == "umap":
        import umap

        xy = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(Z) - 1), random_state=seed,
                       n_jobs=1).fit_transform(Z)
        return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})
    raise CPDInputError(f"Unknown map method '{method}'; choose 'pca' or 'umap'.")


def layer_similarity(structures: StructureSet, model_ids: Iterable[str], residual: bool = False,
                     composition: str = "counts", pooling: str = "mean", invariant: str = "pooled_norm",
                     features: dict | None = None, progress: AnalysisProgress | None = None) -> pd.DataFrame:
    """Debiased linear CKA between every pair of layers, within and across models, on the same structures.

    Each layer is represented by all its channels side by side (L>0 through `invariant`). With `residual`, the
    part linear in composition ([1 | C], fitted on all rows: a similarity, not a score) is removed from every
    layer first. One row per ordered pair: model_a, layer_a, depth_a, model_b, layer_b, depth_b, cka."""
    from cpd_core.engine.cka import linear_cka
    from cpd_core.engine.projection import CompositionProjector

    model_ids = list(model_ids)
    progress = progress or _noop
    feats = features if features is not None else feature_sets(structures, model_ids, pooling, invariant, progress,
                                                                combined="always")
    depth = {(m, layer): d for m in model_ids for layer, d in layer_depths(m).items()}
    keys = list(depth)
    blocks = {}
    C = composition_matrix(structures, composition)[0] if residual else None
    for m, layer in keys:
        H = feats.get((m, layer, "all"), feats.get((m, layer, "L0")))
        if H is None:
            raise CPDInputError(f"No representation of {m} {layer}; compute the features with combined='always'.")
        blocks[(m, layer)] = CompositionProjector().fit_transform(C, H) if residual else np.asarray(H, np.float64)
    rows, total, done = [], len(keys) * (len(keys) + 1) // 2, 0
    for i, a in enumerate(keys):
        for b in keys[i:]:
            value = 1.0 if a == b else linear_cka(blocks[a], blocks[b])
            depth_a, depth_b = depth[a], depth[b]
            rows.append({"model_a": a[0], "layer_a": a[1], "depth_a": depth_a, "model_b": b[0], "layer_b": b[1],
                         "depth_b": depth_b, "cka": value})
            if a != b:
                rows.append({"model_a": b[0], "layer_a": b[1], "depth_a": depth_b, "model_b": a[0], "layer_b": a[1],
                             "depth_b": depth_a, "cka": value})
            done += 1
            progress("CKA between layers", done, total)
    table = pd.DataFrame(rows)
    table["residual"] = residual
    table["n"] = len(structures)
    return table


# ---------------------------------------------------------------------------------------------- data views
def composition_table(structures: StructureSet) -> pd.DataFrame:
    """Per structure: formula, n_atoms, n_heavy (non-H atoms) and one `count_<El>` column per element."""
    C, elements = composition_matrix(structures, "counts")
    table = pd.DataFrame({"formula": [structures.formula(i) for i in range(len(structures))],
                          "n_atoms": structures.n_atoms.astype(int)})
    table["n_heavy"] = table["n_atoms"] - (C[:, elements.index("H")].astype(int) if "H" in elements else 0)
    for j, e in enumerate(elements):
        table[f"count_{e}"] = C[:, j].astype(int)
    return table


def dataset_summary(structures: StructureSet) -> pd.DataFrame:
    """One row per target: unit, count, missing, mean, std, min, median, max."""
    rows = []
    for t in structures.targets:
        v = structures.target_values(t)
        ok = v[np.isfinite(v)]
        rows.append({"target": t, "unit": structures.units.get(t, ""), "count": int(ok.size),
                     "missing": int(v.size - ok.size),
                     **({"mean": ok.mean(), "std": ok.std(), "min": ok.min(), "median": np.median(ok),
                         "max": ok.max()} if ok.size else {})})
    return pd.DataFrame(rows)


def element_summary(structures: StructureSet) -> pd.DataFrame:
    """One row per element: number of structures containing it and of atoms."""
    C, elements = composition_matrix(structures, "counts")
    return pd.DataFrame({"element": elements, "structures": (C > 0).sum(axis=0).astype(int),
                         "atoms": C.sum(axis=0).astype(int)})


def structure_record(structures: StructureSet, i: int) -> dict:
    """Label and property values of structure i (id, formula, smiles if any, n_atoms, targets with units)."""
    row = structures.table.iloc[int(i)]
    record = {"index": int(i), "id": str(row["id"]), "formula": structures.formula(int(i)),
              "n_atoms": int(structures.n_atoms[int(i)])}
    for key, value in row.items():
        if key in ("id", "formula"):
            continue
        if key in structures.targets:
            unit = structures.units.get(key, "")
            record[f"{key} [{unit}]" if unit else key] = float(value)
        else:
            record[key] = value
    return record


def xyz_text(structures: StructureSet, i: int) -> str:
    """Structure i as XYZ text (for 3D viewers)."""
    atoms = structures.atoms(int(i))
    lines = [str(len(atoms)), structures.formula(int(i))]
    lines += [f"{s} {x:.5f} {y:.5f} {z:.5f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)]
    return "\n".join(lines) + "\n"
