"""Extraction on Dask against one process: wall time per model, scheduler overhead per chunk, chunk size against
overhead and memory, and an estimate for MPtrj on 32 workers.

For each model, on QM9 (`--n` molecules; the default is all 130,831) with an empty cache each time:

- serial: one process, one torch thread (`cached_invariants` with a loaded adapter);
- Dask: one embedded LocalCluster of `--workers` processes, one thread each, started once (its start is timed
  on its own) and used by every model, as `report --workers N` does; each model's time includes its workers
  loading the model.

Then, on a running cluster, the scheduler overhead per chunk: a task that carries a real chunk of structures and
returns arrays of the size the model returns for it, minus nothing computed, timed per chunk (sequential round
trips and a full queue); and for several chunk sizes the bytes a chunk moves (structures in, arrays out) and the
overhead as a share of the chunk's compute time. Finally per-structure crystal time (SevenNet-0 on Materials
Project crystals) turns these into a wall-time estimate for MPtrj (1,580,395 structures) on 32 workers.
Prints tables; asserts nothing. Timings on a shared machine are noisy: compare the ratios of one run.

The full set takes hours (87 min serial and 58 min on 2 workers for the eleven models on a 2-core machine), so
`--results FILE` keeps each model's row (serial and Dask measured back to back in one run) in a JSON-lines file as
soon as it is measured; a rerun with the same file and --n skips the models it holds and prints their rows, so the
benchmark can be stopped and finished later, one model at a time. Each row records its date and load average.

Usage: .venv/bin/python benchmarks/bench_distributed.py [--n 2000] [--models ani2x-aev,mace-spice] [--workers 2]
       [--results benchmarks/results/distributed-qm9-full.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MPTRJ_STRUCTURES = 1_580_395
CLUSTER_WORKERS = 32


def _fresh_cache() -> None:
    os.environ["CPD_CACHE_DIR"] = tempfile.mkdtemp(prefix="cpd-bench-dist-")
    datasets = Path(ROOT / "cache" / "datasets")
    if datasets.is_dir():  # reuse the parsed QM9 and MP files
        (Path(os.environ["CPD_CACHE_DIR"]) / "datasets").symlink_to(datasets)


def _serial(model_id, structures, chunk_size):
    import torch

    from cpd_core.models import load_model
    from cpd_core.representations.cache import cached_invariants

    _fresh_cache()
    torch.set_num_threads(1)
    start = time.perf_counter()
    arrays = cached_invariants(model_id, structures, adapter=load_model(model_id), chunk_size=chunk_size)
    return time.perf_counter() - start, arrays


def _on_dask(model_id, structures, chunk_size):
    """Seconds to extract on the active Dask client."""
    from cpd_core.representations.cache import cached_invariants

    _fresh_cache()
    start = time.perf_counter()
    cached_invariants(model_id, structures, chunk_size=chunk_size)
    return time.perf_counter() - start


def _echo(rows, packed_atoms, out_bytes):
    """A task with a chunk's inputs (packed as the extraction task gets them) and an output of a chunk's size,
    computing nothing."""
    pickle.loads(packed_atoms)
    return rows, np.zeros(out_bytes // 4, dtype=np.float32)


def overhead_per_chunk(client, structures, chunk_size, bytes_per_structure, repeats=20):
    """(ms per chunk with one task at a time, ms per chunk with a full queue) of the scheduler and transfers.
    Each task packs its chunk on submission, as the extraction path does, so the packing is timed too."""
    from cpd_core.representations.cache import pack_atoms

    rows = np.arange(min(chunk_size, len(structures)))
    atoms = structures.to_atoms_list(rows)
    out = int(bytes_per_structure * len(rows))
    client.submit(_echo, rows, pack_atoms(atoms), out, pure=False).result()  # warm
    start = time.perf_counter()
    for _ in range(repeats):
        client.submit(_echo, rows, pack_atoms(atoms), out, pure=False).result()
    sequential = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    futures = [client.submit(_echo, rows, pack_atoms(atoms), out, pure=False) for _ in range(repeats * 4)]
    client.gather(futures)
    queued = (time.perf_counter() - start) / len(futures)
    return 1000 * sequential, 1000 * queued, len(pack_atoms(atoms)), out


def measured_rows(path: Path | None, n: int, workers: int, chunk_size: int) -> dict[str, dict]:
    """Rows already measured with the same dataset size, workers and chunk size, by model id."""
    if path is None or not path.is_file():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if (row["n"], row["workers"], row["chunk_size"]) == (n, workers, chunk_size):
                rows[row["model"]] = row
    return rows


def keep_row(path: Path | None, row: dict) -> None:
    """Append one measured row (one line, flushed) so an interrupted benchmark keeps it."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="QM9 molecules (default: all 130,831)")
    parser.add_argument("--models", default=None, help="comma-separated ids (default: every offline QM9 model)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--chunk-sizes", default="8,32,64,256")
    parser.add_argument("--mp-n", type=int, default=200, help="MP crystals for the per-structure crystal time")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON-lines file keeping each model's row; a rerun skips the models it holds")
    parser.add_argument("--skip-overhead", action="store_true",
                        help="only the per-model table (e.g. when finishing a long run in pieces)")
    args = parser.parse_args()

    from cpd_core.data.qm9 import load_qm9
    from cpd_core.models import describe_model, model_ids, offline_available
    from cpd_core.cluster import dask_client
    from cpd_core.study.analysis import supported_subset

    qm9 = load_qm9(n=args.n, seed=0) if args.n else load_qm9()
    models = args.models.split(",") if args.models else [
        m for m in model_ids() if offline_available(m) and "random" not in m and
        describe_model(m).input != "crystals"]
    print(f"QM9: {len(qm9):,} molecules; {args.workers} Dask workers x 1 thread vs 1 process x 1 thread; "
          f"chunks of {args.chunk_size}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}\n")
    done = measured_rows(args.results, len(qm9), args.workers, args.chunk_size)
    if done:
        print(f"{len(done)} model(s) already measured in {args.results} (marked *, not rerun)\n")
    started = time.perf_counter()
    cluster = dask_client(args.workers)
    client = cluster.__enter__()
    client.run(lambda: 1)
    print(f"Cluster start: {time.perf_counter() - started:.1f} s (once, before the first model)\n")
    print("| model | structures | serial (s) | Dask (s) | serial / Dask | ms per structure (serial) |")
    print("|---|---|---|---|---|---|")
    totals, per_structure_bytes, per_structure_s = [0.0, 0.0], {}, {}
    for model_id in models:
        row = done.get(model_id)
        if row is None:
            structures, _ = supported_subset(qm9, [model_id])
            serial, arrays = _serial(model_id, structures, args.chunk_size)
            distributed = _on_dask(model_id, structures, args.chunk_size)
            row = dict(model=model_id, n=len(qm9), workers=args.workers, chunk_size=args.chunk_size,
                       structures=len(structures), serial_s=serial, dask_s=distributed,
                       bytes_per_structure=sum(a.nbytes for a in arrays.values()) / len(structures),
                       date=time.strftime("%Y-%m-%d %H:%M"), load_average=round(os.getloadavg()[0], 2))
            keep_row(args.results, row)
        totals[0] += row["serial_s"]
        totals[1] += row["dask_s"]
        per_structure_bytes[model_id] = row["bytes_per_structure"]
        per_structure_s[model_id] = row["serial_s"] / row["structures"]
        mark = "*" if model_id in done else ""
        print(f"| {model_id}{mark} | {row['structures']:,} | {row['serial_s']:.1f} | {row['dask_s']:.1f} | "
              f"{row['serial_s'] / row['dask_s']:.2f} | {1000 * per_structure_s[model_id]:.2f} |", flush=True)
    print(f"| **total** | | {totals[0]:.1f} | {totals[1]:.1f} | {totals[0] / totals[1]:.2f} | |\n")
    cluster.__exit__(None, None, None)
    if args.skip_overhead:
        return

    heaviest = max(per_structure_bytes, key=per_structure_bytes.get)
    sizes = [int(s) for s in args.chunk_sizes.split(",")]
    print(f"Scheduler overhead per chunk (a task carrying a real chunk and returning {heaviest}'s output size)")
    print("| chunk size | ms per chunk, one at a time | ms per chunk, queued | structures in (kB) | arrays out (kB) | "
          "overhead / compute, fastest model | overhead / compute, slowest model |")
    print("|---|---|---|---|---|---|---|")
    fastest, slowest = min(per_structure_s.values()), max(per_structure_s.values())
    overheads = {}
    with dask_client(args.workers) as client:
        for size in sizes:
            seq, queued, bytes_in, bytes_out = overhead_per_chunk(client, qm9, size, per_structure_bytes[heaviest])
            overheads[size] = queued
            print(f"| {size} | {seq:.1f} | {queued:.1f} | {bytes_in / 1e3:.0f} | {bytes_out / 1e3:.0f} | "
                  f"{queued / (1000 * fastest * size):.1%} | {queued / (1000 * slowest * size):.2%} |", flush=True)

    from cpd_core.data import load_dataset

    mp = load_dataset("mp", n=args.mp_n, seed=0)
    crystal_s, _ = _serial("sevennet-0", mp, args.chunk_size)
    t = crystal_s / len(mp)
    overhead = overheads.get(args.chunk_size, next(iter(overheads.values()))) / 1000
    hours = MPTRJ_STRUCTURES * (t + overhead / args.chunk_size) / CLUSTER_WORKERS / 3600
    print(f"\nMPtrj estimate: SevenNet-0 takes {1000 * t:.0f} ms per MP crystal here (1 thread, {len(mp)} crystals); "
          f"{MPTRJ_STRUCTURES:,} structures on {CLUSTER_WORKERS} such workers at {args.chunk_size} structures and "
          f"{1000 * overhead:.0f} ms of scheduling per chunk: about {hours:.1f} h "
          f"({overhead / (args.chunk_size * t):.2%} of it scheduling), before cluster start and model loading.")


if __name__ == "__main__":
    main()
