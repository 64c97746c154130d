"""The paper's findings as experiments anyone can rerun; each returns a tidy table.

1. disentanglement        R²_full / R²_comp / R²_geom per model, layer, channel, target and probe
2. routing                per-L-channel R² (e.g. dipole vs gap) in equivariant models
3. tree_inflation         GBT vs Ridge on residuals for a purely compositional control target
4. sample_efficiency_exp  Ridge R²_geom against training-set size per model
5. pooling_ablation       mean vs sum pooling
6. isomer_benchmark       pairwise ranking of constitutional isomers: composition part vs residual
7. task_alignment         the same architecture trained on gap vs energy, R²_geom for the gap
8. protocol_sensitivity   the headline R²_geom under protocol variants

All take a StructureSet and model ids; representations come from the cache through `cpd_core.study.analysis`.

Stage: study (stage 5 of 5).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from cpd_core.study import analysis
from cpd_core.engine.scores import cpd_scores, composition_control_target, fold_indices, results_table, \
    sample_efficiency
from cpd_core.data.composition import composition_matrix
from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError
from cpd_core.models import describe_model
from cpd_core.engine.probes import RidgeProbe
from cpd_core.engine.projection import CompositionProjector

EQUIVARIANT_FAMILIES = ("tensor-product equivariant", "vector-scalar equivariant")


def _targets(structures: StructureSet, targets) -> tuple[np.ndarray, list[str]]:
    names = [t for t in targets if t in structures.targets]
    missing = [t for t in targets if t not in structures.targets]
    if missing:
        raise CPDInputError(f"Targets {missing} are not in '{structures.name}' (has {', '.join(structures.targets)}).")
    return np.column_stack([structures.target_values(t) for t in names]), names


def _model_features(model_id, structures, pooling="mean", invariant="pooled_norm"):
    """{(layer, channel): (n, d)} of one model, with an `all` channel for every layer."""
    sets = analysis.feature_sets(structures, [model_id], pooling, invariant, combined="always")
    return {(layer, channel): H for (_, layer, channel), H in sets.items()}


def disentanglement(structures: StructureSet, model_ids, targets, probes=("ridge",), pooling="mean",
                    invariant="pooled_norm", folds=5, seed=0, composition="counts", channels=None,
                    progress=None, nonlinear_targets=None, nonlinear_layers="all", split="kfold") -> pd.DataFrame:
    """Every (model, layer, channel) x target x probe, as `analysis.disentanglement` tables.

    Nonlinear probes (MLP, GBT) are costly: they run on channel 'all' only, on every layer or only the last
    (`nonlinear_layers='last'`), and on `nonlinear_targets` (default: all targets). A model that does not know
    every element present runs on the structures it supports (column `n` says how many)."""
    _targets(structures, targets)
    frames = []
    for m, model_id in enumerate(model_ids):
        supported, _ = analysis.supported_subset(structures, [model_id])
        feats = analysis.feature_sets(supported, [model_id], pooling, invariant, combined="always")
        if channels is not None:
            feats = {k: v for k, v in feats.items() if k[2] in channels}
        last = list(describe_model(model_id).layers)[-1]
        for probe in probes:
            sets, names = feats, list(targets)
            if probe != "ridge":
                sets = {k: v for k, v in feats.items()
                        if k[2] == "all" and (nonlinear_layers == "all" or k[1] == last)}
                names = [t for t in targets if nonlinear_targets is None or t in nonlinear_targets]
            if names:
                frames.append(analysis.disentanglement(supported, [model_id], names, probe, pooling, invariant,
                                                       folds, seed, composition, features=sets, split=split))
        if progress is not None:
            progress(m + 1, len(model_ids))
    return pd.concat(frames, ignore_index=True)


def best_layer(table: pd.DataFrame, channel: str = "all") -> pd.DataFrame:
    """For each model, target and probe: the layer with the highest R²_geom on `channel`."""
    return analysis.best_layer(table, "r2_geom", [channel])


def routing(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer, L channel, target) Ridge R² of equivariant models (channel 'all' excluded)."""
    sub = table[(table.probe == "ridge") & (table.channel != "all") & table.family.isin(EQUIVARIANT_FAMILIES)]
    return sub[["model", "family", "layer", "depth", "channel", "target", "r2_full", "r2_geom", "r2_comp"]] \
        .reset_index(drop=True)


def tree_inflation(structures: StructureSet, model_ids, pooling="mean", invariant="pooled_norm", folds=5, seed=0,
                   kinds=("nonlinear", "mass"), gbt_params=None) -> pd.DataFrame:
    """Ridge vs GBT vs MLP on residuals (last layer, all channels) for purely compositional control targets."""
    C, elements = composition_matrix(structures)
    Y = np.column_stack([composition_control_target(C, elements, k) for k in kinds])
    names = [f"control_{k}" for k in kinds]
    rows = []
    for model_id in model_ids:
        feats = _model_features(model_id, structures, pooling, invariant)
        last = list(describe_model(model_id).layers)[-1]
        H = feats[(last, "all")]
        for probe in ("ridge", "gbt", "mlp"):
            params = gbt_params if probe == "gbt" else None
            res = cpd_scores(H, C, Y, names, probe=probe, folds=folds, seed=seed, parts=("geom",), probe_params=params)
            rows.append(results_table(res, model=model_id, layer=last, channel="all"))
    table = pd.concat(rows, ignore_index=True)
    return table[["model", "layer", "target", "probe", "r2_geom", "r2_geom_std", "n"]]


def sample_efficiency_exp(structures: StructureSet, model_ids, target="gap", sizes=(50, 100, 200, 500, 1000),
                          pooling="mean", invariant="pooled_norm", folds=5, seed=0, seeds=(0, 1, 2),
                          layer_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Ridge R²_geom (and R²_full) vs training size per model, on its best layer for `target` if a
    disentanglement table is given, else its last layer."""
    C, _ = composition_matrix(structures)
    y = structures.target_values(target)
    frames = []
    for model_id in model_ids:
        layer = list(describe_model(model_id).layers)[-1]
        if layer_table is not None:
            best = best_layer(layer_table[(layer_table.probe == "ridge") & (layer_table.model == model_id)
                                          & (layer_table.target == target)])
            layer = best.layer.iloc[0] if len(best) else layer
        H = _model_features(model_id, structures, pooling, invariant)[(layer, "all")]
        table = sample_efficiency(H, C, y, sizes, [target], folds=folds, seeds=seeds, seed=seed)
        table["model"], table["layer"] = model_id, layer
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def pooling_ablation(structures: StructureSet, model_ids, targets, folds=5, seed=0) -> pd.DataFrame:
    """Best-layer Ridge R²_geom with mean vs sum pooling."""
    frames = []
    for pooling in ("mean", "sum"):
        table = disentanglement(structures, model_ids, targets, ("ridge",), pooling=pooling, folds=folds, seed=seed,
                                channels=("all",))
        frames.append(best_layer(table))
    both = pd.concat(frames, ignore_index=True)
    return both[["model", "family", "target", "pooling", "layer", "r2_full", "r2_comp", "r2_geom", "r2_geom_std"]]


def isomer_pairs(structures: StructureSet, max_pairs_per_formula: int = 50, seed: int = 0) -> np.ndarray:
    """(n_pairs, 2) indices of structures with identical element counts (constitutional isomers)."""
    C, _ = composition_matrix(structures)
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(C.astype(int)):
        groups.setdefault(tuple(row), []).append(i)
    rng = np.random.default_rng(seed)
    pairs = []
    for members in groups.values():
        if len(members) < 2:
            continue
        combos = list(combinations(members, 2))
        if len(combos) > max_pairs_per_formula:
            combos = [combos[j] for j in rng.choice(len(combos), max_pairs_per_formula, replace=False)]
        pairs += combos
    return np.array(pairs, dtype=int).reshape(-1, 2)


def _pairwise_accuracy(pred: np.ndarray, y: np.ndarray, pairs: np.ndarray) -> float:
    """Fraction of pairs ranked correctly by `pred`; ties (as for identical compositions) count one half."""
    dy = np.sign(y[pairs[:, 0]] - y[pairs[:, 1]])
    dp = np.sign(pred[pairs[:, 0]] - pred[pairs[:, 1]])
    keep = dy != 0
    score = np.where(dp[keep] == 0, 0.5, (dp[keep] == dy[keep]).astype(float))
    return float(score.mean()) if score.size else float("nan")


def isomer_benchmark(structures: StructureSet, model_ids, target="gap", pooling="mean", invariant="pooled_norm",
                     folds=5, seed=0) -> pd.DataFrame:
    """Which of two constitutional isomers has the larger target? Ridge predictions from the composition
    projection (identical for isomers: chance, 0.5), the residual, and the full representation, scored on
    isomer pairs whose two members are both in the test fold."""
    C, _ = composition_matrix(structures)
    y = structures.target_values(target)
    all_pairs = isomer_pairs(structures, seed=seed)
    if len(all_pairs) == 0:
        raise CPDInputError(f"'{structures.name}' holds no two structures with the same composition; use more.")
    rows = []
    for model_id in model_ids:
        last = list(describe_model(model_id).layers)
        feats = _model_features(model_id, structures, pooling, invariant)
        for layer in last[-1:]:
            H = feats[(layer, "all")]
            scores = {"composition projection": [], "residual": [], "full": []}
            n_pairs = 0
            for train, test in fold_indices(len(y), folds, seed):
                in_test = np.zeros(len(y), bool)
                in_test[test] = True
                pairs = all_pairs[in_test[all_pairs[:, 0]] & in_test[all_pairs[:, 1]]]
                n_pairs += len(pairs)
                projector = CompositionProjector().fit(C[train], H[train])
                comp_part = projector.composition_part(C)
                residual = H - comp_part
                for name, X in (("composition projection", comp_part), ("residual", residual), ("full", H)):
                    model = RidgeProbe().fit(X[train], y[train])
                    scores[name].append(_pairwise_accuracy(model.predict(X), y, pairs))
            for name, values in scores.items():
                rows.append(dict(model=model_id, layer=layer, target=target, features=name,
                                 accuracy=float(np.nanmean(values)), accuracy_std=float(np.nanstd(values)),
                                 n_pairs=n_pairs))
    return pd.DataFrame(rows)


def task_alignment(structures: StructureSet, pairs: dict, target="gap", folds=5, seed=0) -> pd.DataFrame:
    """Best-layer Ridge R²_geom for `target` of the same architecture trained on different tasks.

    pairs: {architecture: {training_target: model_id}}, e.g. {"mace": {"gap": "mace-qm9-gap", "U0": ...}}.
    """
    rows = []
    for arch, by_task in pairs.items():
        ids = list(by_task.values())
        best = best_layer(disentanglement(structures, ids, [target], folds=folds, seed=seed, channels=("all",)))
        for trained_on, model_id in by_task.items():
            r = best[best.model == model_id].iloc[0]
            rows.append(dict(architecture=arch, trained_on=trained_on, model=model_id, target=target, layer=r.layer,
                             r2_full=r.r2_full, r2_comp=r.r2_comp, r2_geom=r.r2_geom, r2_geom_std=r.r2_geom_std))
    return pd.DataFrame(rows)


PROTOCOLS = {
    "reference (shuffled, fold-aware QR, counts, nested K-fold alpha)": {},
    "unshuffled folds (file order)": {"shuffle": False},
    "transductive projection": {"projection": "transductive"},
    "composition as fractions": {"composition": "fractions"},
    "alpha by exact leave-one-out instead of nested K-fold CV": {"probe_params": {"criterion": "loo"}},
    "alpha by GCV instead of nested K-fold CV": {"probe_params": {"criterion": "gcv"}},
    "transductive projection and GCV alpha": {"projection": "transductive", "probe_params": {"criterion": "gcv"}},
    "fixed alpha = 1": {"probe_params": {"alphas": [1.0]}},
    "Ridge residualisation (alpha = 1) instead of QR": {"projector_params": {"method": "ridge", "alpha": 1.0}},
}


def protocol_sensitivity(structures: StructureSet, model_ids, target="gap", layer: str | None = None,
                         pooling="mean", invariant="pooled_norm", folds=5, seed=0) -> pd.DataFrame:
    """R²_geom of each model's last (or given) layer under every protocol variant in PROTOCOLS.

    For 'unshuffled folds' the structures must be in their file order (subsets from `StructureSet.sample`
    keep it; QM9's file order follows molecule size)."""
    y = structures.target_values(target)
    rows = []
    for model_id in model_ids:
        chosen = layer or list(describe_model(model_id).layers)[-1]
        H = _model_features(model_id, structures, pooling, invariant)[(chosen, "all")]
        for name, variant in PROTOCOLS.items():
            variant = dict(variant)
            C, _ = composition_matrix(structures, variant.pop("composition", "counts"))
            r = cpd_scores(H, C, y, [target], folds=folds, seed=seed, **variant)[0]
            rows.append(dict(model=model_id, layer=chosen, target=target, protocol=name, r2_full=r.r2_full,
                             r2_comp=r.r2_comp, r2_geom=r.r2_geom, r2_geom_std=r.r2_geom_std))
    return pd.DataFrame(rows)


def eraser_comparison(structures: StructureSet, model_ids, targets, qr_table: pd.DataFrame, folds=5, seed=0,
                      pooling="mean", invariant="pooled_norm") -> pd.DataFrame:
    """R²_geom under LEACE beside R²_geom under the QR projection (from `qr_table`), Ridge, for every model,
    layer, channel and target."""
    keys = ["model", "layer", "channel", "target"]
    frames = []
    for model_id in model_ids:
        supported, _ = analysis.supported_subset(structures, [model_id])
        feats = analysis.feature_sets(supported, [model_id], pooling, invariant, combined="always")
        frames.append(analysis.disentanglement(supported, [model_id], targets, "ridge", pooling, invariant, folds,
                                               seed, features=feats, eraser="leace"))
    leace = pd.concat(frames, ignore_index=True)[keys + ["r2_geom", "r2_geom_std"]]
    qr = qr_table[(qr_table.probe == "ridge") & qr_table.target.isin(list(targets))][keys + ["r2_geom"]]
    table = leace.rename(columns={"r2_geom": "r2_geom_leace", "r2_geom_std": "r2_geom_leace_std"}).merge(
        qr.rename(columns={"r2_geom": "r2_geom_qr"}), on=keys, how="left")
    table["leace_minus_qr"] = table["r2_geom_leace"] - table["r2_geom_qr"]
    return table


def layer_similarity(structures: StructureSet, model_ids, pooling="mean", invariant="pooled_norm") -> pd.DataFrame:
    """Debiased linear CKA between every pair of layers, as they are and with composition removed."""
    raw = analysis.layer_similarity(structures, model_ids, residual=False, pooling=pooling, invariant=invariant)
    residual = analysis.layer_similarity(structures, model_ids, residual=True, pooling=pooling, invariant=invariant)
    return pd.concat([raw, residual], ignore_index=True)


def similarity_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per pair of models: the highest CKA between any of their layers, raw and with composition removed."""
    cross = pairs[pairs.model_a < pairs.model_b]
    best = cross.groupby(["model_a", "model_b", "residual"]).cka.max().unstack("residual")
    best.columns = ["max_cka_raw" if not c else "max_cka_composition_removed" for c in best.columns]
    return best.reset_index()


def node_level_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and per-atom target: the layer and channel with the highest node-level R²_geom."""
    best = table.sort_values("r2_geom").groupby(["model", "target"]).tail(1)
    return best[["model", "target", "layer", "channel", "r2_full", "r2_comp", "r2_geom", "n_atoms"]].sort_values(
        ["target", "r2_geom"], ascending=[True, False]).reset_index(drop=True)
