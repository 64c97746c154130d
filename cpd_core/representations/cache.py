"""Content-addressed, resumable, verified on-disk cache of per-structure invariant representations.

An entry is keyed by model id, weights hash, dataset fingerprint, the model's layer layout and the cache
format version; inside it, one array per (layer, L, pooling, invariant)
(`cpd_core.representations.invariants.feature_key`).

- Work is chunked: each chunk of structures is written as soon as it is computed, so an interrupted run
  (Ctrl-C, a closed browser tab, a crash) resumes where it stopped.
- Every write is atomic (temporary file, then rename); a file lock makes two processes computing the same
  entry take turns (the second finds it done).
- `workers > 1` computes missing chunks in that many worker processes (one model copy and one torch thread
  each); the parent saves each chunk as it arrives, so progress and resumption work as with one process.
- `manifest.json` holds each array's SHA-256 and shape; an entry or chunk that does not match is deleted and
  recomputed, never read.

Stage: representations (stage 3 of 5).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
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
from cpd_core.models.base import ModelAdapter, ModelInfo, structure_problems
from cpd_core.paths import cache_dir

CACHE_FORMAT = 1
DEFAULT_CHUNK = 512
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


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
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

    _atomic_write(path, write)


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


class EmbeddingEntry:
    """One cache entry: a folder with verified arrays and a manifest, plus chunk files while incomplete."""

    def __init__(self, info: ModelInfo, structures: StructureSet, chunk_size: int = DEFAULT_CHUNK):
        self.info, self.structures, self.chunk_size = info, structures, chunk_size
        self.key = entry_key(info, structures)
        self.folder = embeddings_root() / self.key
        self.chunks = self.folder / "chunks"
        self.lock = FileLock(str(self.folder) + ".lock")

    @property
    def n_chunks(self) -> int:
        return -(-len(self.structures) // self.chunk_size)

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

    def completed_chunks(self) -> list[int]:
        return [i for i in range(self.n_chunks) if self._load_chunk(i) is not None]

    def _chunk_paths(self, i: int) -> tuple[Path, Path]:
        return self.chunks / f"chunk_{i:05d}.npz", self.chunks / f"chunk_{i:05d}.json"

    def _load_chunk(self, i: int) -> dict[str, np.ndarray] | None:
        data_path, meta_path = self._chunk_paths(i)
        if not (data_path.is_file() and meta_path.is_file()):
            return None
        try:
            if _sha(data_path) != json.loads(meta_path.read_text())["sha256"]:
                raise ValueError("checksum mismatch")
            with np.load(data_path, allow_pickle=False) as z:
                return {k.replace("__", "/"): z[k] for k in z.files}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            log.warning("Cache chunk %s/%d is corrupt (%s); recomputing it.", self.folder.name, i, exc)
            data_path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return None

    # ------------------------------------------------------------------ writing
    def _bounds(self, i: int) -> tuple[int, int]:
        return i * self.chunk_size, min((i + 1) * self.chunk_size, len(self.structures))

    def _rows(self, chunks) -> int:
        return sum(stop - start for start, stop in map(self._bounds, chunks))

    def _compute_in_workers(self, todo, workers, progress, batch_size, n_done) -> None:
        """Missing chunks in `workers` processes, saved here as each one arrives (in any order)."""
        from joblib import Parallel, delayed

        tasks = (delayed(_extract_chunk)(i, self.info.id, self.structures.to_atoms_list(range(*self._bounds(i))),
                                         batch_size) for i in todo)
        for i, arrays in Parallel(n_jobs=workers, return_as="generator_unordered")(tasks):
            self._save_chunk(i, arrays)
            n_done += self._rows([i])
            if progress is not None:
                progress(n_done, len(self.structures))

    def _save_chunk(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        data_path, meta_path = self._chunk_paths(i)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k.replace("/", "__"): v for k, v in arrays.items()})

        _atomic_write(data_path, write)
        _write_json(meta_path, {"sha256": _sha(data_path)})

    def compute(self, adapter_factory: Callable[[], ModelAdapter], progress: Progress | None = None,
                batch_size: int | None = None, workers: int = 1) -> dict[str, np.ndarray]:
        """Compute missing chunks (resuming earlier work), assemble, verify and return the arrays.

        workers > 1: missing chunks go to worker processes that load the model by id (`adapter_factory` is not
        used then)."""
        self.chunks.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / "entry.json", {"model": self.info.to_dict(), "structures": self.structures.name,
                                                 "fingerprint": self.structures.fingerprint(),
                                                 "n": len(self.structures), "format": CACHE_FORMAT})
        total = len(self.structures)
        done = set(self.completed_chunks())
        todo = [i for i in range(self.n_chunks) if i not in done]
        if workers > 1 and len(todo) > 1:
            self._compute_in_workers(todo, workers, progress, batch_size, n_done=total - self._rows(todo))
        else:
            adapter = None
            for i in range(self.n_chunks):
                start, stop = self._bounds(i)
                if i not in done:
                    adapter = adapter or adapter_factory()
                    atoms = self.structures.to_atoms_list(range(start, stop))
                    inner = (lambda d, _t, s=start: progress(s + d, total)) if progress else None
                    self._save_chunk(i, extract_invariants(adapter, atoms, batch_size=batch_size, progress=inner))
                if progress is not None:
                    progress(stop, total)
        parts = [self._load_chunk(i) for i in range(self.n_chunks)]
        if any(p is None for p in parts):  # a chunk vanished or broke meanwhile: go again
            return self.compute(adapter_factory, progress, batch_size, workers)
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
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


def _extract_chunk(i: int, model_id: str, atoms, batch_size):
    """Worker task: (chunk index, invariants of the chunk's structures)."""
    return i, extract_invariants(_worker_adapter(model_id), atoms, batch_size=batch_size)


def cached_invariants(model_id: str, structures: StructureSet, progress: Progress | None = None,
                      batch_size: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                      adapter: ModelAdapter | None = None, workers: int = 1) -> dict[str, np.ndarray]:
    """{feature_key: (n, d)} for a model on a structure set, from the cache or computed (and cached).

    The model is loaded only when something must be computed (pass `adapter` to reuse a loaded one).
    workers > 1 computes missing chunks in that many processes (not with a given `adapter`).
    """
    from cpd_core.models import describe_model, load_model

    info = adapter.info if adapter is not None else describe_model(model_id)
    entry = EmbeddingEntry(info, structures, chunk_size)
    with entry.lock:
        arrays = entry.load()
        if arrays is None:
            problems = structure_problems(info, structures.to_atoms_list())  # all of them, before any chunk
            if problems:
                raise CPDInputError(problems)
            arrays = entry.compute(lambda: adapter or load_model(model_id), progress, batch_size,
                                   workers=1 if adapter is not None else workers)
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
