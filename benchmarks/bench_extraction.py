"""Batched feature extraction against the one-structure-at-a-time ASE calculator loop most scripts use.

For each model: the time per molecule of `extract_invariants` (batched, no forces, pooling included) on N QM9
molecules, and of the package's own ASE calculator (`atoms.calc = calc; atoms.get_potential_energy()`, one
molecule at a time, which also computes forces where the calculator does) on the first M of them. Both are
measured in the same run; the ratio is printed with the projected time for all 130,831 QM9 molecules.
Goal: >= 10x for every model; full QM9 through SevenNet-0 in <= 30 min on 2 cores. With --workers W the
N molecules also go through the cache path with W worker processes (`cached_invariants(workers=W)`, a fresh
temporary cache, model loading included); its ratio to the ASE loop and the projection for full QM9 are
printed too. Torch's thread count is the process default unless OMP_NUM_THREADS is set (one thread per worker).
Both sides run in the same process after the warm-up extraction, so
`cpd_core.representations.memory.keep_freed_memory` (set by the first extraction, process-wide) applies to the ASE loop as well.

Run: python benchmarks/bench_extraction.py [--models sevennet-0 mace-spice ...] [--n 1000] [--loop-n 100]
     [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from unittest import mock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cpd_core.study.analysis import supported_subset  # noqa: E402
from cpd_core.representations.cache import cached_invariants  # noqa: E402
from cpd_core.data.qm9 import N_MOLECULES, load_qm9  # noqa: E402
from cpd_core.representations.extract import extract_invariants  # noqa: E402
from cpd_core.models import load_model, model_ids, offline_available  # noqa: E402


def with_workers(model_id: str, structures, workers: int, batch_size: int | None) -> float:
    """Seconds per structure through the cache with `workers` processes, in a fresh temporary cache."""
    with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ, {"CPD_CACHE_DIR": folder}):
        start = time.perf_counter()
        cached_invariants(model_id, structures, batch_size=batch_size, workers=workers, chunk_size=256)
        return (time.perf_counter() - start) / len(structures)


def bench(model_id: str, atoms_list, loop_n: int, batch_size: int | None) -> dict:
    adapter = load_model(model_id)
    extract_invariants(adapter, atoms_list[:8])  # warm-up (lazy init, JIT, caches)
    start = time.perf_counter()
    extract_invariants(adapter, atoms_list, batch_size=batch_size)
    batched = (time.perf_counter() - start) / len(atoms_list)
    calc = adapter.ase_calculator()
    loop = None
    if calc is not None:
        sample = [a.copy() for a in atoms_list[:loop_n]]
        sample[0].calc = calc
        sample[0].get_potential_energy()  # warm-up
        start = time.perf_counter()
        for atoms in sample:
            atoms.calc = calc
            atoms.get_potential_energy()
        loop = (time.perf_counter() - start) / len(sample)
    return {"batched_ms": batched * 1e3, "loop_ms": None if loop is None else loop * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="default: every model available offline")
    parser.add_argument("--n", type=int, default=1000, help="molecules for the batched run")
    parser.add_argument("--loop-n", type=int, default=100, help="molecules for the ASE calculator loop")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="also time W worker processes through the cache")
    args = parser.parse_args()
    qm9 = load_qm9(n=args.n, seed=0)
    ids = args.models or [m for m in model_ids() if offline_available(m)]
    print(f"{'model':22s} {'batched ms/mol':>15s} {'ASE loop ms/mol':>16s} {'ratio':>7s} {'full QM9 (min)':>15s}")
    for model_id in ids:
        structures, left_out = supported_subset(qm9, [model_id])  # e.g. no fluorine for SO3Net
        if left_out:
            print(f"{model_id}: {left_out} molecules with elements it does not support are left out")
        try:
            r = bench(model_id, structures.to_atoms_list(), args.loop_n, args.batch_size)
        except Exception as exc:  # report and go on with the other models
            print(f"{model_id:22s} failed: {type(exc).__name__}: {exc}")
            continue
        loop = f"{r['loop_ms']:16.1f}" if r["loop_ms"] else f"{'(no calculator)':>16s}"
        ratio = f"{r['loop_ms'] / r['batched_ms']:6.1f}x" if r["loop_ms"] else f"{'-':>7s}"
        full = r["batched_ms"] * N_MOLECULES / 60e3
        print(f"{model_id:22s} {r['batched_ms']:15.2f} {loop} {ratio} {full:15.1f}", flush=True)
        if args.workers > 1:
            per = with_workers(model_id, structures, args.workers, args.batch_size)
            ratio = f"{r['loop_ms'] / (per * 1e3):6.1f}x" if r["loop_ms"] else f"{'-':>7s}"
            print(f"{'  ' + str(args.workers) + ' worker processes':22s} {per * 1e3:15.2f} {'':16s} {ratio} "
                  f"{per * N_MOLECULES / 60:15.1f}", flush=True)


if __name__ == "__main__":
    main()
