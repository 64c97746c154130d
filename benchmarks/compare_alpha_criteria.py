"""The three ways of choosing the Ridge alpha, on real representations of QM9 molecules: nested K-fold CV (the
default), exact leave-one-out and GCV.

Runs the CPD grid (every layer and L channel of each model, 4 targets, 5 shuffled folds) once per criterion and
prints how far the R² values of LOO and GCV move from the default's and which scores higher out of fold; then
the gap's R²_geom of each model's last layer under the transductive projection, where GCV can fail (see
cpd_core/engine/probes.py). Representations come from the cache and are computed if missing (a few minutes for the
default models on 2,000 molecules).

Run: python benchmarks/compare_alpha_criteria.py [--n 2000] [--models ani2x-aev mace-spice ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cpd_core.study.analysis import feature_sets  # noqa: E402
from cpd_core.engine.scores import cpd_grid, cpd_scores  # noqa: E402
from cpd_core.data import load_dataset  # noqa: E402
from cpd_core.data.composition import composition_matrix  # noqa: E402
from cpd_core.engine.probes import CRITERIA, DEFAULT_CRITERION  # noqa: E402

TARGETS = ["gap", "dipole", "polarizability", "U0"]
MODELS = ["ani2x-aev", "ani2x-nets", "mace-spice", "mace-qm9-gap", "visnet-qm9-gap", "schnet-qm9-gap"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    qm9 = load_dataset("qm9", n=args.n, seed=0)
    Y = np.column_stack([qm9.target_values(t) for t in TARGETS])
    C, _ = composition_matrix(qm9)
    sets = feature_sets(qm9, args.models)
    tables = {}
    for criterion in CRITERIA:
        start = time.perf_counter()
        tables[criterion] = cpd_grid(sets, C, Y, TARGETS, probe_params={"criterion": criterion})
        print(f"{criterion}: {len(tables[criterion])} CPD results in {time.perf_counter() - start:.1f} s")
    print(f"{len(sets)} feature sets of {', '.join(args.models)} on {args.n} QM9 molecules, targets {TARGETS}")
    base = tables[DEFAULT_CRITERION]
    for other in (c for c in CRITERIA if c != DEFAULT_CRITERION):
        for col in ("r2_full", "r2_geom"):
            diff = tables[other][col] - base[col]
            print(f"{col}: mean |{other} - {DEFAULT_CRITERION}| {diff.abs().mean():.4f}, max {diff.abs().max():.4f}, "
                  f"mean {diff.mean():+.4f}; {other} higher by > 0.001 in {(diff > 0.001).sum()}, lower in "
                  f"{(diff < -0.001).sum()} of {len(diff)}")
        worst = (tables[other].r2_geom - base.r2_geom).abs().idxmax()
        row = base.loc[worst]
        print(f"  largest R²_geom difference: {row.model} / {row.layer} / {row.channel} / {row.target}: "
              f"{DEFAULT_CRITERION} {row.r2_geom:.3f}, {other} {tables[other].loc[worst, 'r2_geom']:.3f}")
    print("transductive projection, gap, last layer (channel 'all' where there is one):")
    for model in args.models:
        keys = [k for k in sets if k[0] == model]
        last = [k for k in keys if k[1] == keys[-1][1]]
        key = next((k for k in last if k[2] == "all"), last[0])
        scores = {c: cpd_scores(sets[key], C, Y[:, 0], ["gap"], projection="transductive", parts=("geom",),
                                probe_params={"criterion": c})[0] for c in CRITERIA}
        print(f"  {model:16s} {key[1]:22s} " + "   ".join(f"{c} {scores[c].r2_geom:8.3f}" for c in CRITERIA))

if __name__ == "__main__":
    main()
