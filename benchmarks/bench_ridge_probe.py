"""Ridge probe with alpha selection: ours vs scikit-learn, and a full grid of CPD probes.

1. One probe on 10,000 x 640 features, 5 shuffled folds, 20 alphas: our RidgeProbe with each alpha criterion
   (nested 5-fold CV, the default, from per-fold statistics; exact leave-one-out; GCV) against scikit-learn's
   StandardScaler + RidgeCV (leave-one-out) and GridSearchCV over StandardScaler + Ridge (5-fold, the
   equivalent of our default). Same outer folds, same alphas; prints times and ratios.
2. The grid the dashboard needs: 8 models x 6 layers x 3 channels (dims 128, 64, 32) x 5 targets on 10,000
   structures, R²_full + R²_geom (+ shared R²_comp) with 5-fold CV, through `cpd_grid` (per-group statistics,
   `cpd_core.engine.ridge_folds`). Goal: 10 s or less on 2 cores. Timed three times with the default criterion, then
   once each with LOO and GCV.

Synthetic features with a planted composition and geometric part (timing does not depend on the values).
Run: python benchmarks/bench_ridge_probe.py [--n 10000] [--skip-gridsearch]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cpd_core.engine.scores import cpd_grid, fold_indices  # noqa: E402
from cpd_core.engine.probes import CRITERIA, DEFAULT_ALPHAS, DEFAULT_CRITERION, RidgeProbe  # noqa: E402


def planted(n: int, d: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    C = rng.integers(0, 9, size=(n, 5)).astype(float)
    G = rng.normal(size=(n, 12))
    H = C @ rng.normal(size=(5, d)) + G @ rng.normal(size=(12, d)) + 0.1 * rng.normal(size=(n, d))
    Y = np.column_stack([G @ rng.normal(size=12) + C @ rng.normal(size=5) for _ in range(5)])
    return H, C, Y


def time_one_probe(H, y, folds, skip_gridsearch: bool) -> dict:
    splits = fold_indices(len(y), folds, seed=0)
    timings = {}
    for criterion in CRITERIA:
        start = time.perf_counter()
        for train, test in splits:
            RidgeProbe(alphas=DEFAULT_ALPHAS, criterion=criterion).fit(H[train], y[train]).predict(H[test])
        timings[f"ours (RidgeProbe, {criterion})"] = time.perf_counter() - start
    start = time.perf_counter()
    for train, test in splits:
        make_pipeline(StandardScaler(), RidgeCV(alphas=DEFAULT_ALPHAS)).fit(H[train], y[train]).predict(H[test])
    timings["sklearn StandardScaler+RidgeCV"] = time.perf_counter() - start
    if not skip_gridsearch:
        start = time.perf_counter()
        for train, test in splits:
            search = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": DEFAULT_ALPHAS},
                                  cv=KFold(5, shuffle=True, random_state=0), scoring="neg_mean_squared_error")
            search.fit(H[train], y[train]).predict(H[test])
        timings["sklearn GridSearchCV(StandardScaler+Ridge, 5-fold)"] = time.perf_counter() - start
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--skip-gridsearch", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    H, C, Y = planted(args.n, args.dim, rng)
    print(f"1) one probe: {args.n} x {args.dim}, 5 folds, {len(DEFAULT_ALPHAS)} alphas")
    timings = time_one_probe(H, Y[:, 0], 5, args.skip_gridsearch)
    for name, seconds in timings.items():
        ratios = "   ".join(f"{seconds / timings[f'ours (RidgeProbe, {c})']:6.1f}x vs ours-{c}" for c in CRITERIA)
        print(f"   {name:52s} {seconds:8.2f} s   {ratios}")

    print(f"2) grid: 8 models x 6 layers x 3 channels (dims 128/64/32) x 5 targets, n={args.n}, 5 folds")
    feature_sets = {}
    for m in range(8):
        for layer in range(6):
            for channel, d in zip(("L0", "L1", "L2"), (128, 64, 32)):
                feature_sets[(f"model{m}", f"layer{layer}", channel)] = planted(args.n, d, rng)[0]
    names = [f"t{i}" for i in range(5)]
    for criterion in (DEFAULT_CRITERION,) * 3 + tuple(c for c in CRITERIA if c != DEFAULT_CRITERION):
        start = time.perf_counter()
        table = cpd_grid(feature_sets, C, Y, names, probe_params={"criterion": criterion})
        seconds = time.perf_counter() - start
        print(f"   alpha by {criterion}{' (default)' if criterion == DEFAULT_CRITERION else ''}: "
              f"{len(feature_sets)} feature sets x {len(names)} targets = {len(table)} CPD results (each R²_full, "
              f"R²_comp, R²_geom over 5 folds) in {seconds:.1f} s (goal: <= 10 s on 2 cores)", flush=True)


if __name__ == "__main__":
    main()
