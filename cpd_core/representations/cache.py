"""Content-addressed, resumable, verified on-disk cache of per-structure invariant representations.

An entry is keyed by model id, weights hash, dataset fingerprint, the model's layer layout and the cache
format version; inside it, one array per (layer, L, pooling, invariant)
(`cpd_core.representations.invariants.feature_key`).

- Work is chunked by work: at most 64 structures or about 30 s of compute per chunk, each written atomically as
  soon as it is computed, so an interrupted run (Ctrl-C, SIGKILL, a closed browser tab, a crash) loses at most
  the chunk in flight and resumes where it stopped. Ctrl-C stops after the saved chunks (ExtractionInterrupted).
- The file lock is an OS lock (fcntl): a killed process's lock file never blocks a rerun.
- Every write is atomic (temporary file, then rename); a file lock makes two processes computing the same
  entry take turns (the second finds it done).
- `workers > 1` computes missing chunks as Dask tasks on an embedded LocalCluster (one model copy and one
  torch thread per worker process), `scheduler` on an existing cluster; the client saves each chunk as it
  arrives, so progress and resumption work as with one process, and a dead worker costs only its chunk.
- `manifest.json` holds each array's SHA-256 and shape; an entry or chunk that does not match is deleted and
  recomputed, never read.

Stage: representations (stage 3 of 5).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from cpd_core.data.structures import StructureSet
from cpd_core.representations.extract import Progress, extract_invariants
from cpd_core.errors import CPDInputError
from cpd_core.models.base import ModelAdapter, ModelInfo, structure_set_problems
from cpd_core.paths import cache_dir

CACHE_FORMAT = 1
DEFAULT_CHUNK = 64  # structures per chunk at most (`embed --chunk-size`)
CHUNK_SECONDS = 30.0  # and about this much compute per chunk
DEFAULT_FIRST_CHUNK = 8  # the first chunk is small: it measures the time per structure
log = logging.getLogger(__name__)


def embeddings_root() -> Path:
    path = cache_dir() / "embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def entry_key(info: ModelInfo, structures: StructureSet) -> str:
    """Content address of one (model, weights, structures, layout, format) combination."""
    payload = json.dumps({"model": info.id, "weights": info.weights_hash, "layers": info.layers,
                          "structures": structures.fingerprint(), "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) to a temporary file beside `path`, then rename it: readers never see a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _file_name(key: str) -> str:
    return key.replace("/", "__") + ".npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)

    atomic_write(path, write)


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C during extraction, after every finished chunk was saved: `saved` of `total` structures are on disk."""

    def __init__(self, saved: int, total: int):
        super().__init__(f"{saved} of {total} structures saved")
        self.saved, self.total = saved, total


def write_chunk(chunks: Path, rows, arrays: dict[str, np.ndarray]) -> None:
    """Write one chunk atomically into the folder `chunks`: the arrays with their row indices, then its checksum
    file. Called by the process that owns the entry, or by a Dask worker that shares the cache directory."""
    rows = np.asarray(rows, dtype=np.int64)
    name = "part_" + hashlib.sha256(rows.tobytes()).hexdigest()[:16]
    data_path, meta_path = chunks / f"{name}.npz", chunks / f"{name}.json"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, __rows__=rows, **{k.replace("/", "__"): v for k, v in arrays.items()})

    atomic_write(data_path, write)
    _write_json(meta_path, {"sha256": _sha(data_path), "n": int(len(rows))})


class EmbeddingEntry:
    """One cache entry: a folder with verified arrays and a manifest, plus chunk files while incomplete.

    Structures are computed in order of size, in chunks of at most `chunk_size` structures that are also cut to
    about `chunk_seconds` of compute (the next chunk's size follows the measured time per structure). Each chunk
    file holds its row indices next to the arrays, so a rerun finds every saved row whatever the chunk sizes
    were, and computes only the rest: a killed run loses at most the chunk in flight."""

    def __init__(self, info: ModelInfo, structures: StructureSet, chunk_size: int = DEFAULT_CHUNK,
                 chunk_seconds: float = CHUNK_SECONDS):
        if chunk_size < 1:
            raise CPDInputError(f"The chunk size must be at least 1 structure (got {chunk_size}).")
        self.info, self.structures = info, structures
        self.chunk_size, self.chunk_seconds = chunk_size, chunk_seconds
        self.key = entry_key(info, structures)
        self.folder = embeddings_root() / self.key
        self.chunks = self.folder / "chunks"
        self.lock = FileLock(str(self.folder) + ".lock")

    # ------------------------------------------------------------------ reading
    def load(self) -> dict[str, np.ndarray] | None:
        """The verified arrays, or None if the entry is absent, incomplete or corrupt (corrupt ones are removed)."""
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            arrays = {}
            for key, meta in manifest["arrays"].items():
                path = self.folder / meta["file"]
                if _sha(path) != meta["sha256"]:
                    raise ValueError(f"checksum mismatch in {path.name}")
                arrays[key] = _load_npy(path)
                if list(arrays[key].shape) != meta["shape"]:
                    raise ValueError(f"shape mismatch in {path.name}")
            return arrays
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            log.warning("Cache entry %s is corrupt (%s); it will be recomputed.", self.folder.name, exc)
            manifest_path.unlink(missing_ok=True)
            return None

    def saved_chunks(self) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(row indices, arrays) of every verified chunk on disk; broken chunk files are removed."""
        parts, seen = [], np.zeros(len(self.structures), dtype=bool)
        for meta_path in sorted(self.chunks.glob("part_*.json")) if self.chunks.is_dir() else []:
            part = self._load_chunk(meta_path.with_suffix(".npz"), meta_path)
            if part is None:
                continue
            rows, arrays = part
            if seen[rows].any():  # an overlapping duplicate (two writers): keep the first
                continue
            seen[rows] = True
            parts.append(part)
        return parts

    def saved_rows(self) -> int:
        return sum(len(rows) for rows, _ in self.saved_chunks())

    def _load_chunk(self, data_path: Path, meta_path: Path):
        if not data_path.is_file():
            return None
        try:
            if _sha(data_path) != json.loads(meta_path.read_text())["sha256"]:
                raise ValueError("checksum mismatch")
            with np.load(data_path, allow_pickle=False) as z:
                rows = z["__rows__"].astype(np.int64)
                arrays = {k.replace("__", "/"): z[k] for k in z.files if k != "__rows__"}
            if rows.size == 0 or rows.min() < 0 or rows.max() >= len(self.structures) or \
                    any(len(v) != len(rows) for v in arrays.values()):
                raise ValueError("row indices do not fit this entry")
            return rows, arrays
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            log.warning("Cache chunk %s/%s is corrupt (%s); recomputing it.", self.folder.name, data_path.name, exc)
            data_path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return None

    # ------------------------------------------------------------------ writing
    def save_chunk(self, rows, arrays: dict[str, np.ndarray]) -> None:
        write_chunk(self.chunks, rows, arrays)

    def _todo(self, done: np.ndarray) -> np.ndarray:
        """Rows not computed yet, in order of structure size (little padding inside a batch)."""
        by_size = np.argsort(self.structures.n_atoms, kind="stable")
        return by_size[~done[by_size]]

    def _compute_serial(self, todo, adapter_factory, progress, batch_size, n_done) -> None:
        adapter, size, start, total = None, min(self.chunk_size, DEFAULT_FIRST_CHUNK), 0, len(self.structures)
        while start < len(todo):
            rows = todo[start:start + size]
            adapter = adapter or adapter_factory()
            atoms = self.structures.to_atoms_list(rows)
            inner = (lambda d, _t, s=n_done: progress(s + d, total)) if progress else None
            began = time.perf_counter()
            self.save_chunk(rows, extract_invariants(adapter, atoms, batch_size=batch_size, progress=inner))
            per_structure = (time.perf_counter() - began) / len(rows)
            size = int(min(self.chunk_size, max(1, self.chunk_seconds / max(per_structure, 1e-9))))
            start += len(rows)
            n_done += len(rows)
            if progress is not None:
                progress(n_done, total)

    def _compute_on_cluster(self, todo, current, workers, scheduler, progress, batch_size, n_done, log,
                            workers_write: bool) -> None:
        """Missing chunks as Dask tasks (a worker loads the model once and keeps it), saved here as each one
        completes, in any order, or (workers_write) written by the workers themselves into the shared cache
        directory; a task whose worker dies is retried on another. Ctrl-C, or a caller that stops (a Streamlit
        page left), cancels the rest. Runs on `current` (the active Dask client) if given, else on a client for
        `workers` / `scheduler`."""
        from cpd_core.cluster import dask_client, finished

        chunks = [todo[i:i + self.chunk_size] for i in range(0, len(todo), self.chunk_size)]
        with (contextlib.nullcontext(current) if current is not None else dask_client(workers, scheduler, log)) \
                as client:
            target = str(self.chunks) if workers_write else None
            futures = [client.submit(_extract_chunk, rows, self.info.id,
                                     pack_atoms(self.structures.to_atoms_list(rows)), batch_size, target,
                                     pure=False, retries=2) for rows in chunks]
            with finished(client, futures) as done:
                for future in done:
                    rows, arrays = future.result()
                    if arrays is not None:
                        self.save_chunk(rows, arrays)
                    n_done += len(rows)
                    if progress is not None:
                        progress(n_done, len(self.structures))

    def compute(self, adapter_factory: Callable[[], ModelAdapter], progress: Progress | None = None,
                batch_size: int | None = None, workers: int = 1, log: Callable[[str], None] | None = None,
                scheduler: str | None = None, workers_write: bool = False,
                use_cluster: bool = True) -> dict[str, np.ndarray]:
        """Compute missing chunks (resuming earlier work), assemble, verify and return the arrays.

        workers > 1, a Dask `scheduler` address or an active Dask client (with `use_cluster`): missing chunks go
        to Dask workers that load the model by id (`adapter_factory` is not used then); `workers_write` lets them
        write the chunk files into the (shared) cache directory themselves. Ctrl-C raises ExtractionInterrupted
        once the finished chunks are saved."""
        from cpd_core.cluster import active_client

        self.chunks.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / "entry.json", {"model": self.info.to_dict(), "structures": self.structures.name,
                                                 "fingerprint": self.structures.fingerprint(),
                                                 "n": len(self.structures), "format": CACHE_FORMAT})
        total = len(self.structures)
        done = np.zeros(total, dtype=bool)
        for rows, _ in self.saved_chunks():
            done[rows] = True
        n_done = int(done.sum())
        if n_done and log is not None:
            log(f"resuming: {n_done:,} of {total:,} structures were already computed and saved")
        todo = self._todo(done)
        try:
            asked = workers > 1 or bool(scheduler)  # explicit arguments win over the active client
            current = None if asked or not use_cluster else active_client()
            if (asked or current is not None) and len(todo) > self.chunk_size:
                self._compute_on_cluster(todo, current, workers, scheduler, progress, batch_size, n_done, log,
                                         workers_write)
            else:
                self._compute_serial(todo, adapter_factory, progress, batch_size, n_done)
        except KeyboardInterrupt as exc:
            raise ExtractionInterrupted(self.saved_rows(), total) from exc
        parts = self.saved_chunks()
        covered = np.zeros(total, dtype=bool)
        for rows, _ in parts:
            covered[rows] = True
        if not covered.all():  # a chunk vanished or broke meanwhile: go again
            return self.compute(adapter_factory, progress, batch_size, workers, log, scheduler, workers_write,
                                use_cluster)
        arrays = {}
        for key in parts[0][1]:
            first = parts[0][1][key]
            out = np.empty((total,) + first.shape[1:], dtype=first.dtype)
            for rows, values in parts:
                out[rows] = values[key]
            arrays[key] = out
        manifest = {"arrays": {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "key": self.key}
        for key, value in arrays.items():
            path = self.folder / _file_name(key)
            _save_npy(path, value)
            manifest["arrays"][key] = {"file": path.name, "sha256": _sha(path), "shape": list(value.shape)}
        _write_json(self.folder / "manifest.json", manifest)
        shutil.rmtree(self.chunks, ignore_errors=True)
        return arrays


@functools.cache
def _worker_adapter(model_id: str) -> ModelAdapter:
    """The model, loaded once per worker process, on one torch thread (the workers share the cores)."""
    import torch

    from cpd_core.models import load_model

    torch.set_num_threads(1)
    return load_model(model_id)


def pack_atoms(atoms: list) -> bytes:
    """A chunk's structures as one pickled frame for a Dask task. Handed over as a list of ASE Atoms, Dask
    serialises every Atoms and its arrays as separate frames: ~35 ms per chunk of 64 QM9 molecules against ~4 ms
    for one frame (benchmarks/bench_distributed.py measures the per-chunk overhead)."""
    return pickle.dumps(atoms, protocol=pickle.HIGHEST_PROTOCOL)


def _extract_chunk(rows, model_id: str, packed_atoms: bytes, batch_size, chunks_dir: str | None = None):
    """Worker task: (row indices of the chunk, invariants of its structures), or, with `chunks_dir` (a cache
    directory this worker shares with the client), the chunk written there and (rows, None) returned.
    `packed_atoms` comes from `pack_atoms` on the client (the same process that submits the task)."""
    atoms = pickle.loads(packed_atoms)
    arrays = extract_invariants(_worker_adapter(model_id), atoms, batch_size=batch_size)
    if chunks_dir is None:
        return rows, arrays
    Path(chunks_dir).mkdir(parents=True, exist_ok=True)
    write_chunk(Path(chunks_dir), rows, arrays)
    return rows, None


def cached_invariants(model_id: str, structures: StructureSet, progress: Progress | None = None,
                      batch_size: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                      adapter: ModelAdapter | None = None, workers: int = 1,
                      log: Callable[[str], None] | None = None, scheduler: str | None = None,
                      workers_write: bool = False) -> dict[str, np.ndarray]:
    """{feature_key: (n, d)} for a model on a structure set, from the cache or computed (and cached).

    The model is loaded only when something must be computed (pass `adapter` to reuse a loaded one).
    workers > 1 computes missing chunks on an embedded Dask cluster of that many processes, and `scheduler`
    (tcp://host:8786) on an existing cluster, and inside `cluster.dask_client(...)` (or with any active Dask client)
    on that client (none of these with a given `adapter`); `workers_write`: the workers write the chunk files into
    the cache directory, which they must share with this process. `log` hears how many structures a resumed run
    found already saved and where the Dask dashboard is.
    """
    from cpd_core.models import describe_model, load_model

    info = adapter.info if adapter is not None else describe_model(model_id)
    entry = EmbeddingEntry(info, structures, chunk_size)
    with entry.lock:
        arrays = entry.load()
        if arrays is None:
            problems = structure_set_problems(info, structures)  # all of them, before any chunk
            if problems:
                raise CPDInputError(problems)
            arrays = entry.compute(lambda: adapter or load_model(model_id), progress, batch_size,
                                   workers=1 if adapter is not None else workers, log=log,
                                   scheduler=None if adapter is not None else scheduler,
                                   workers_write=workers_write, use_cluster=adapter is None)
        elif progress is not None:
            progress(len(structures), len(structures))
    return arrays


def is_cached(model_id: str, structures: StructureSet) -> bool:
    """True when a complete manifest exists for this model and structure set (not verified here)."""
    from cpd_core.models import describe_model

    entry = EmbeddingEntry(describe_model(model_id), structures)
    return (entry.folder / "manifest.json").is_file()


def cache_summary() -> list[dict]:
    """One row per cache entry: model, structures, n, size in MB, complete or not."""
    rows = []
    for folder in sorted(p for p in embeddings_root().iterdir() if p.is_dir()):
        try:
            meta = json.loads((folder / "entry.json").read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        rows.append({"key": folder.name, "model": meta.get("model", {}).get("id", "?"),
                     "structures": meta.get("structures", "?"), "n": meta.get("n"),
                     "size_mb": round(size / 1e6, 2), "complete": (folder / "manifest.json").is_file()})
    return rows


def clear_cache(key: str | None = None) -> int:
    """Delete one entry (by key) or all embedding entries; returns how many were removed."""
    root = embeddings_root()
    targets = [root / key] if key else [p for p in root.iterdir() if p.is_dir()]
    for folder in targets:
        with FileLock(str(folder) + ".lock"):
            shutil.rmtree(folder, ignore_errors=True)
    return len(targets)
