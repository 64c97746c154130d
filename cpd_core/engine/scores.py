"""Composition Projection Decomposition with shuffled K-fold probes.

For features H (n, d), composition C (n, k) and targets Y (n,) or (n, t):
    R²_full  probe on H
    R²_comp  probe on C alone
    R²_geom  probe on the residual H - P_[1|C] H (projector fitted on training rows only, by default)
each as mean and standard deviation over shuffled, seeded folds. QM9's file order follows molecule size, so
unshuffled folds give large negative R² that is an artefact; `shuffle=False` exists only to demonstrate that.
`split="fixed"` replaces K-fold CV by one seeded, shuffled 80/20 train/test split (the paper's protocol for its
Materials Project subset; its std is 0).

Stage: engine (stage 4 of 5).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import KFold
from threadpoolctl import ThreadpoolController

from cpd_core.errors import CPDInputError
from cpd_core.engine.probes import (CRITERIA, DEFAULT_CRITERION, inner_fold_labels, make_probe, probe_settings,
                                    ridge_settings)
from cpd_core.engine.projection import CompositionProjector, make_projector
from cpd_core.engine.ridge_folds import ridge_cpd_folds

PROJECTIONS = ("fold", "transductive")
PARTS = ("full", "comp", "geom")
SPLITS = ("kfold", "fixed")
FIXED_TEST_FRACTION = 0.2


@dataclass
class CPDResult:
    """Scores for one target; fold_scores holds the per-fold R² of each part."""

    target: str
    r2_full: float
    r2_full_std: float
    r2_comp: float
    r2_comp_std: float
    r2_geom: float
    r2_geom_std: float
    n: int
    n_dropped: int
    probe: str
    folds: int
    seed: int
    projection: str
    shuffle: bool
    split: str = "kfold"
    settings: dict = field(default_factory=dict)
    fold_scores: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _clean_inputs(H, C, Y, target_names, folds):
    """Validate shapes and values; drop rows with non-finite targets. Returns H, C, Y (2-D), names, n_dropped."""
    H = np.asarray(H, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if H.ndim == 1:
        H = H[:, None]
    if C.ndim == 1:
        C = C[:, None]
    if Y.ndim == 1:
        Y = Y[:, None]
    if H.ndim != 2 or C.ndim != 2 or Y.ndim != 2:
        raise CPDInputError(f"Features, composition and targets must be 1-D or 2-D; got {H.shape}, {C.shape}, {Y.shape}.")
    if not (len(H) == len(C) == len(Y)):
        raise CPDInputError(
            f"Row counts differ: features {len(H)}, composition {len(C)}, targets {len(Y)}. Each row must be the "
            "same structure in all three."
        )
    names = list(target_names) if target_names is not None else (
        ["target"] if Y.shape[1] == 1 else [f"target_{i}" for i in range(Y.shape[1])])
    if len(names) != Y.shape[1]:
        raise CPDInputError(f"{len(names)} target names for {Y.shape[1]} target columns.")
    # a finite sum means finite values (NaN and infinity propagate), without a boolean copy of H
    if not (np.isfinite(H.sum()) or np.isfinite(H).all()):
        bad = int((~np.isfinite(H)).any(axis=1).sum())
        raise CPDInputError(f"Features contain NaN or infinite values in {bad} rows; recompute or drop those rows.")
    if not np.isfinite(C).all():
        raise CPDInputError("Composition contains NaN or infinite values; it must be element counts or fractions.")
    finite = np.isfinite(Y).all(axis=1)
    n_dropped = int((~finite).sum())
    if n_dropped:
        H, C, Y = H[finite], C[finite], Y[finite]
    if folds < 2:
        raise CPDInputError(f"Need at least 2 folds, got {folds}.")
    if len(Y) < 2 * folds:
        raise CPDInputError(
            f"Too few samples: {len(Y)} usable rows (after dropping {n_dropped} with NaN/infinite targets) for "
            f"{folds}-fold CV; need at least {2 * folds}. Use more structures or fewer folds."
        )
    constant = [names[i] for i in range(Y.shape[1]) if np.ptp(Y[:, i]) == 0]
    if constant:
        raise CPDInputError(f"Target(s) {constant} are constant over the structures; R² is undefined. Pick another target.")
    return H, C, Y, names, n_dropped


def _r2_columns(Y_true, Y_pred) -> np.ndarray:
    """Coefficient of determination per column (as sklearn's r2_score; a constant test fold gives -inf/nan)."""
    ss_res = ((Y_true - Y_pred) ** 2).sum(axis=0)
    ss_tot = ((Y_true - Y_true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - ss_res / ss_tot


def fold_indices(n: int, folds: int = 5, seed: int = 0, shuffle: bool = True, split: str = "kfold"):
    """The (train, test) index pairs used everywhere: KFold, shuffled with a seed unless told otherwise;
    split='fixed': one seeded random split with FIXED_TEST_FRACTION of the rows held out."""
    return list(_splits(n, folds, seed, shuffle, split))


@functools.lru_cache(maxsize=64)
def _splits(n: int, folds: int, seed: int, shuffle: bool, split: str) -> tuple:
    """fold_indices, computed once per setting (a grid asks for the same splits for every feature set);
    the index arrays are read-only so that no caller can change the cached copy."""
    pairs = _make_splits(n, folds, seed, shuffle, split)
    for pair in pairs:
        for index in pair:
            index.flags.writeable = False
    return tuple(pairs)


def _make_splits(n: int, folds: int, seed: int, shuffle: bool, split: str) -> list:
    if split == "fixed":
        order = np.random.default_rng(seed).permutation(n)
        n_test = max(1, int(round(n * FIXED_TEST_FRACTION)))
        return [(np.sort(order[n_test:]), np.sort(order[:n_test]))]
    if split != "kfold":
        raise CPDInputError(f"Unknown split '{split}'; choose one of {SPLITS}.")
    splitter = KFold(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
    return list(splitter.split(np.arange(n)))


def grouped_fold_indices(row_groups, folds: int, seed: int = 0, shuffle: bool = True, split: str = "kfold"):
    """(train, test) row indices whose folds are drawn over the groups (every group's rows in one fold)."""
    labels, rows_of = np.unique(np.asarray(row_groups), return_inverse=True)
    if len(labels) < 2 * folds:
        raise CPDInputError(f"Too few groups: {len(labels)} for {folds}-fold CV over groups; need at least "
                            f"{2 * folds}.")
    out = []
    for train_groups, test_groups in fold_indices(len(labels), folds, seed, shuffle, split):
        test = np.isin(rows_of, test_groups)
        out.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return out


def cpd_scores(H, C, Y, target_names=None, probe: str = "ridge", folds: int = 5, seed: int = 0,
               projection: str = "fold", shuffle: bool = True, parts=PARTS, probe_params=None,
               projector_params=None, split: str = "kfold", row_groups=None) -> list[CPDResult]:
    """R²_full, R²_comp and R²_geom (mean, std over folds) for each target column of Y.

    row_groups (one label per row, e.g. the molecule of each atom) keeps every group's rows in one fold: the
    folds are drawn over the groups.

    probe_params go to the probe (e.g. {"alphas": [1.0]} for a fixed Ridge alpha); projector_params to the
    CompositionProjector (e.g. {"method": "ridge"}): both exist for protocol-sensitivity experiments.
    """
    if projection not in PROJECTIONS:
        raise CPDInputError(f"Unknown projection '{projection}'; choose one of {PROJECTIONS}.")
    if row_groups is not None:
        Y2 = np.asarray(Y, dtype=np.float64)
        row_groups = np.asarray(row_groups)[np.isfinite(Y2.reshape(len(Y2), -1)).all(axis=1)]
    H, C, Y, names, n_dropped = _clean_inputs(H, C, Y, target_names, folds)
    template = make_probe(probe, seed=seed, **(probe_params or {}))
    scores = {part: [] for part in parts}
    settings: dict = {}
    splits = (fold_indices(len(Y), folds, seed, shuffle, split) if row_groups is None
              else grouped_fold_indices(row_groups, folds, seed, shuffle, split))
    groups = _row_groups(len(Y), splits, seed)
    fast = _fold_statistics_parts(probe, projection, parts, probe_params, projector_params)
    if fast:
        params = probe_params or {}
        criterion = params.get("criterion", DEFAULT_CRITERION)
        per_part = ridge_cpd_folds(H, C, Y, splits, groups, fast, alphas=params.get("alphas"), criterion=criterion,
                                   projector=projector_params)
        for part, fold_outputs in per_part.items():
            for test, pred, chosen, dropped in fold_outputs:
                scores[part].append(_r2_columns(Y[test], pred))
                settings.setdefault(part, []).append(ridge_settings(criterion, params.get("alphas"), chosen, dropped))
    slow = [part for part in parts if part not in fast]
    if projection == "transductive" and "geom" in slow:
        residual_all = make_projector(projector_params).fit_transform(C, H)
    for train, test in splits if slow else []:
        inputs = {}
        if "full" in slow:
            inputs["full"] = (H[train], H[test])
        if "comp" in slow:
            inputs["comp"] = (C[train], C[test])
        if "geom" in slow:
            if projection == "fold":
                projector = make_projector(projector_params).fit(C[train], H[train])
                inputs["geom"] = (projector.transform(H[train]), projector.transform(H[test], C[test]))
            else:
                inputs["geom"] = (residual_all[train], residual_all[test])
        for part, (X_train, X_test) in inputs.items():
            model = clone(template).fit(X_train, Y[train], groups=groups[train])
            pred = model.predict(X_test).reshape(len(test), -1)
            scores[part].append(_r2_columns(Y[test], pred))
            settings.setdefault(part, []).append(probe_settings(model))
    results = []
    for i, name in enumerate(names):
        row = {}
        for part in PARTS:
            values = np.array([s[i] for s in scores.get(part, [])]) if part in parts else np.array([np.nan])
            row[f"r2_{part}"] = float(values.mean())
            row[f"r2_{part}_std"] = float(values.std())
            row.setdefault("fold_scores", {})[part] = values.tolist()
        per_target = {part: _settings_for_target(settings[part], i) for part in settings}
        results.append(CPDResult(target=name, n=len(Y), n_dropped=n_dropped, probe=probe, folds=folds, seed=seed,
                                 projection=projection, shuffle=shuffle, split=split, settings=per_target, **row))
    return results


def _row_groups(n: int, splits, seed: int) -> np.ndarray:
    """A label per row for the inner cross-validation of a probe: with K-fold splits the outer fold of the row
    (a training set's inner folds are the other outer folds); with one split, the test rows form one group and
    the training rows the probe's default inner folds."""
    groups = np.empty(n, dtype=int)
    if len(splits) == 1:
        train, test = splits[0]
        groups[test] = -1
        groups[train] = inner_fold_labels(len(train), seed=seed)
        return groups
    for f, (_, test) in enumerate(splits):
        groups[test] = f
    return groups


def _fold_statistics_parts(probe, projection, parts, probe_params, projector_params) -> tuple:
    """The parts that `ridge_cpd_folds` computes from per-group statistics: Ridge on the full features, and on
    the residual of a fold-aware projection (least squares, or its ridge variant). R²_comp stays on the direct
    path (a handful of columns); so does the residual of the transductive projection, fitted once on all rows."""
    params = probe_params or {}
    if probe != "ridge" or not set(params) <= {"alphas", "criterion"}:
        return ()
    if params.get("criterion", DEFAULT_CRITERION) not in CRITERIA:
        return ()  # RidgeProbe raises the error that names the choices
    projector = projector_params or {}
    geom_ok = (projection == "fold" and set(projector) <= {"method", "alpha"}
               and projector.get("method", "qr") in ("qr", "ridge"))
    return tuple(p for p in parts if p == "full" or (p == "geom" and geom_ok))


def _settings_for_target(fold_settings: list[dict], i: int) -> dict:
    """Collapse per-fold probe settings to one dict for target i (alphas listed per fold)."""
    merged = {k: v for k, v in fold_settings[0].items() if k != "alpha_chosen"}
    if "alpha_chosen" in fold_settings[0]:
        merged["alpha_per_fold"] = [s["alpha_chosen"][i] for s in fold_settings]
    merged["columns_dropped_constant"] = [s.get("columns_dropped_constant", 0) for s in fold_settings]
    return merged


def results_table(results: list[CPDResult], **labels) -> pd.DataFrame:
    """Tidy table of results, one row per target, with extra label columns (model, layer, channel, ...)."""
    return pd.DataFrame(_table_rows(results, **labels))


def _table_rows(results: list[CPDResult], **labels) -> list[dict]:
    columns = [f.name for f in fields(CPDResult) if f.name not in ("fold_scores", "settings")]
    return [{**labels, **{c: getattr(r, c) for c in columns}} for r in results]


def sample_efficiency(H, C, Y, sizes, target_names=None, probe: str = "ridge", folds: int = 5,
                      seeds=(0, 1, 2), seed: int = 0, parts=("geom", "full"), probe_params=None) -> pd.DataFrame:
    """R² against training-set size at fixed test folds: for each fold, size and seed, the probe (and, for
    'geom', the projector) is fitted on a random subset of that size of the fold's training rows.

    Returns a tidy table: target, part, size, seed, fold, r2.
    """
    H, C, Y, names, _ = _clean_inputs(H, C, Y, target_names, folds)
    template = make_probe(probe, seed=seed, **(probe_params or {}))
    rows = []
    for f, (train, test) in enumerate(fold_indices(len(Y), folds, seed)):
        for size in sizes:
            if size > len(train):
                continue
            if size < 3:
                raise CPDInputError(f"Training size {size} is too small; use at least 3.")
            for s in seeds:
                sub = np.random.default_rng([seed, s, f, size]).choice(train, size=size, replace=False)
                for part in parts:
                    if part == "geom":
                        projector = CompositionProjector().fit(C[sub], H[sub])
                        X_train, X_test = projector.transform(H[sub]), projector.transform(H[test], C[test])
                    elif part == "full":
                        X_train, X_test = H[sub], H[test]
                    else:
                        X_train, X_test = C[sub], C[test]
                    model = clone(template).fit(X_train, Y[sub])
                    r2 = _r2_columns(Y[test], model.predict(X_test).reshape(len(test), -1))
                    rows += [dict(target=n, part=part, size=size, seed=s, fold=f, r2=r2[i]) for i, n in enumerate(names)]
    if not rows:
        raise CPDInputError(f"No training size in {list(sizes)} fits the {len(Y)} rows available.")
    return pd.DataFrame(rows)


def composition_control_target(C, elements, kind: str = "nonlinear") -> np.ndarray:
    """A purely compositional target, for showing what probes recover from residuals.

    'mass':      molecular/cell mass, linear in counts (a linear probe on the residual must score ~0)
    'nonlinear': log(mass) x number of distinct elements, a nonlinear function of counts only
    """
    from ase.data import atomic_masses, chemical_symbols

    C = np.asarray(C, dtype=np.float64)
    masses = np.array([atomic_masses[chemical_symbols.index(e)] for e in elements])
    mass = C @ masses
    if kind == "mass":
        return mass
    if kind == "nonlinear":
        return np.log(mass) * (C > 0).sum(axis=1)
    raise CPDInputError(f"Unknown control target '{kind}'; choose 'mass' or 'nonlinear'.")


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The BLAS/OpenMP libraries loaded in this process, found once (a lookup costs milliseconds)."""
    return ThreadpoolController()


def _grid_rows(label, H, C, Y, target_names, comp: dict, settings: dict) -> list[dict]:
    """Table rows of one feature set of the grid (R²_full and R²_geom here, R²_comp shared): a Dask task too."""
    with _blas_threads().limit(limits=1):  # many small BLAS calls: one thread each, sets in parallel
        results = cpd_scores(H, C, Y, target_names, parts=("full", "geom"), **settings)
    for r in results:
        r.r2_comp, r.r2_comp_std = comp[r.target]
    labels = dict(zip(("model", "layer", "channel"), label)) if isinstance(label, tuple) else {"features": label}
    return _table_rows(results, **labels, dim=int(np.shape(H)[1]))


def _grid_on_cluster(client, feature_sets: dict, C, Y, target_names, comp, settings, progress) -> list[dict]:
    """The grid's feature sets as Dask tasks on `client` (C and Y sent to every worker once); rows in input
    order whatever order the tasks finish in. A caller that stops (Ctrl-C, a page left) cancels the rest."""
    from cpd_core.cluster import finished

    C_f, Y_f = client.scatter([np.asarray(C), np.asarray(Y)], broadcast=True)
    futures = {client.submit(_grid_rows, label, H, C_f, Y_f, target_names, comp, settings, pure=False,
                             retries=2): i for i, (label, H) in enumerate(feature_sets.items())}
    by_index: dict[int, list] = {}
    with finished(client, futures) as done:
        for future in done:
            by_index[futures[future]] = future.result()
            if progress is not None:
                progress(len(by_index), len(feature_sets))
    return [row for i in range(len(feature_sets)) for row in by_index[i]]


def cpd_grid(feature_sets: dict, C, Y, target_names, probe: str = "ridge", folds: int = 5, seed: int = 0,
             projection: str = "fold", shuffle: bool = True, progress=None, n_jobs: int = -1,
             probe_params=None, split: str = "kfold", projector_params=None, use_cluster: bool = True) -> pd.DataFrame:
    """CPD scores for many feature sets on the same structures and targets, as one tidy table.

    feature_sets: {label tuple or str: H (n, d)}; a tuple label (model, layer, channel) becomes columns
    `model`, `layer`, `channel`. R²_comp does not depend on the features, so it is computed once and shared.
    All targets of a feature set share one decomposition per fold (multi-target Ridge). The feature sets run on
    the active Dask client (`cpd_core.cluster.active_client`, e.g. inside `dask_client(...)`) when there is
    one and `use_cluster`, else on local threads; both give the same table.
    """
    from cpd_core.cluster import active_client

    first = next(iter(feature_sets.values()))
    comp = {r.target: (r.r2_comp, r.r2_comp_std)
            for r in cpd_scores(first, C, Y, target_names, probe, folds, seed, projection, shuffle,
                                parts=("comp",), probe_params=probe_params, split=split)}
    settings = dict(probe=probe, folds=folds, seed=seed, projection=projection, shuffle=shuffle,
                    probe_params=probe_params, split=split, projector_params=projector_params)
    client = active_client() if use_cluster else None
    if client is not None and len(feature_sets) > 1:
        return pd.DataFrame(_grid_on_cluster(client, feature_sets, C, Y, target_names, comp, settings, progress))
    rows = []
    jobs = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
        delayed(_grid_rows)(label, H, C, Y, target_names, comp, settings) for label, H in feature_sets.items())
    for i, set_rows in enumerate(jobs):
        rows += set_rows
        if progress is not None:
            progress(i + 1, len(feature_sets))
    return pd.DataFrame(rows)
