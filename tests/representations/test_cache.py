"""The embedding cache: resumable after interruption, corrupt entries recomputed, concurrent writers safe."""

import json
import multiprocessing as mp

import numpy as np
import pytest
from ase.build import molecule

from cpd_core.representations.cache import EmbeddingEntry, cache_summary, cached_invariants, clear_cache
from cpd_core.data.structures import StructureSet
from cpd_core.models import describe_model
from cpd_core.models.base import ModelAdapter, ModelInfo


class CountingAdapter(ModelAdapter):
    """A tiny deterministic 'model': per-atom features from atomic numbers and positions; counts calls."""

    def __init__(self):
        self.info = ModelInfo(id="counting-test", family="handcrafted descriptor", elements=("H", "C", "N", "O"),
                              cutoff=0.0, layers={"layer": "2x0e+1x1o"}, weights_source="none",
                              weights_hash="v1")
        self.calls = 0

    def forward_batch(self, atoms_list):
        self.calls += 1
        rows = []
        for atoms in atoms_list:
            centred = atoms.positions - atoms.positions.mean(axis=0)
            rows.append(np.column_stack([atoms.numbers, np.ones(len(atoms)), centred]))
        return {"layer": np.concatenate(rows).astype(np.float32)}


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def structures():
    frames = [molecule(name) for name in ("H2O", "CH4", "NH3", "C2H6", "CH3OH", "HCOOH", "C2H4", "CO2")] * 5
    for i, atoms in enumerate(frames):
        atoms.info["id"] = str(i)
    return StructureSet.from_atoms_list("mols", frames)


def test_cache_roundtrip_and_reuse(isolated_cache, structures):
    adapter = CountingAdapter()
    first = cached_invariants("counting-test", structures, adapter=adapter, chunk_size=8, batch_size=4)
    calls = adapter.calls
    again = cached_invariants("counting-test", structures, adapter=adapter, chunk_size=8)
    assert adapter.calls == calls  # served from disk
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert first["layer/L0/sum"].shape == (40, 2) and first["layer/L1/mean/pooled_norm"].shape == (40, 1)
    rows = cache_summary()
    assert len(rows) == 1 and rows[0]["complete"] and rows[0]["n"] == 40
    assert clear_cache() == 1 and cache_summary() == []


def test_interrupted_run_resumes_without_recomputing(isolated_cache, structures):
    adapter = CountingAdapter()
    seen = []

    def interrupt_after_two_chunks(done, total):
        seen.append(done)
        if seen.count(16) == 2:  # reported once inside the chunk, once after it was saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_invariants("counting-test", structures, adapter=adapter, chunk_size=8, batch_size=8,
                          progress=interrupt_after_two_chunks)
    entry = EmbeddingEntry(adapter.info, structures, chunk_size=8)
    assert sorted(len(rows) for rows, _ in entry.saved_chunks()) == [8, 8]
    assert not (entry.folder / "manifest.json").exists()
    resumed = CountingAdapter()
    messages = []
    arrays = cached_invariants("counting-test", structures, adapter=resumed, chunk_size=8, batch_size=8,
                               log=messages.append)
    assert resumed.calls == 3  # only the 3 missing chunks of 8
    assert messages == ["resuming: 16 of 40 structures were already computed and saved"]
    fresh = CountingAdapter()
    clear_cache()
    reference = cached_invariants("counting-test", structures, adapter=fresh, chunk_size=8, batch_size=8)
    for key in reference:
        np.testing.assert_array_equal(arrays[key], reference[key])


def test_corrupt_array_is_detected_and_recomputed(isolated_cache, structures):
    adapter = CountingAdapter()
    original = cached_invariants("counting-test", structures, adapter=adapter, chunk_size=16)
    entry = EmbeddingEntry(adapter.info, structures, chunk_size=16)
    manifest = json.loads((entry.folder / "manifest.json").read_text())
    victim = entry.folder / manifest["arrays"]["layer/L0/mean"]["file"]
    data = bytearray(victim.read_bytes())
    data[-4:] = b"\x00\x00\xc0\x7f"  # flip the last value to NaN
    victim.write_bytes(bytes(data))
    assert entry.load() is None  # never silently read
    calls = adapter.calls
    repaired = cached_invariants("counting-test", structures, adapter=adapter, chunk_size=16)
    assert adapter.calls > calls
    np.testing.assert_array_equal(repaired["layer/L0/mean"], original["layer/L0/mean"])


def test_half_written_chunk_is_recomputed(isolated_cache, structures):
    adapter = CountingAdapter()
    entry = EmbeddingEntry(adapter.info, structures, chunk_size=8)
    entry.chunks.mkdir(parents=True)
    (entry.chunks / "part_0000000000000000.npz").write_bytes(b"PK\x03\x04 truncated")
    (entry.chunks / "part_0000000000000000.json").write_text(json.dumps({"sha256": "0" * 64}))
    arrays = cached_invariants("counting-test", structures, adapter=adapter, chunk_size=8)
    assert np.isfinite(arrays["layer/L0/mean"]).all() and arrays["layer/L0/mean"].shape == (40, 2)


def _worker(cache_dir, queue):
    import os

    os.environ["CPD_CACHE_DIR"] = cache_dir
    from cpd_core.data.qm9 import load_qm9

    arrays = cached_invariants("ani2x-aev", load_qm9(n=60, seed=5), chunk_size=16)
    queue.put(float(arrays["aev/L0/mean"].sum()))


def test_two_processes_computing_the_same_entry(isolated_cache):
    from cpd_core.data.qm9 import load_qm9

    load_qm9()  # make sure the dataset cache exists before the workers start
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(isolated_cache), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    sums = [queue.get(timeout=5) for _ in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert sums[0] == sums[1]
    rows = cache_summary()
    assert len(rows) == 1 and rows[0]["complete"]


def test_worker_processes_give_the_same_entry_and_resume(isolated_cache, structures):
    """Two worker processes (a real model, loaded by id in each) fill the chunks of one entry; the arrays equal
    a one-process computation, and a second call resumes from the chunks already on disk."""
    serial = cached_invariants("ani2x-aev", structures, chunk_size=8)
    clear_cache()
    seen = []
    entry = EmbeddingEntry(describe_model("ani2x-aev"), structures, chunk_size=8)
    entry.chunks.mkdir(parents=True, exist_ok=True)
    entry.save_chunk(np.arange(8), {k: v[:8] for k, v in serial.items()})  # as if interrupted after one chunk
    parallel = cached_invariants("ani2x-aev", structures, chunk_size=8, workers=2,
                                 progress=lambda done, total: seen.append(done))
    assert parallel.keys() == serial.keys()
    for key in serial:
        np.testing.assert_allclose(parallel[key], serial[key], rtol=1e-6, atol=1e-7)
    assert seen[-1] == 40 and seen[0] >= 16 and seen == sorted(seen)   # chunk 0 was not recomputed


def test_chunks_are_cut_by_time_as_well_as_by_count(isolated_cache, structures):
    """At most chunk_size structures per chunk, fewer when a chunk would take longer than chunk_seconds: the first
    chunk (8 structures) measures the time per structure, the next ones follow it."""
    from cpd_core.representations import cache

    quick = CountingAdapter()
    cached_invariants("counting-test", structures, adapter=quick, chunk_size=64, batch_size=64)
    assert quick.calls == 2  # 8, then the other 32 in one chunk
    clear_cache()
    slow = CountingAdapter()
    entry = cache.EmbeddingEntry(slow.info, structures, chunk_size=64, chunk_seconds=1e-9)
    entry.compute(lambda: slow, batch_size=64)
    assert slow.calls == 1 + 32  # 8, then one structure per chunk


def test_a_chunk_size_below_one_is_refused(isolated_cache, structures):
    from cpd_core.errors import CPDInputError

    with pytest.raises(CPDInputError, match="at least 1 structure"):
        cached_invariants("counting-test", structures, adapter=CountingAdapter(), chunk_size=0)


def test_chunks_from_a_run_with_another_chunk_size_are_reused(isolated_cache, structures):
    adapter = CountingAdapter()
    seen = []

    def stop_after_first_chunk(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_invariants("counting-test", structures, adapter=adapter, chunk_size=5, batch_size=5,
                          progress=stop_after_first_chunk)
    again = CountingAdapter()
    messages = []
    cached_invariants("counting-test", structures, adapter=again, chunk_size=16, batch_size=16, log=messages.append)
    assert messages == ["resuming: 5 of 40 structures were already computed and saved"]


@pytest.mark.parametrize("model_id", ["ani2x-aev", "mace-spice"])
def test_a_two_worker_dask_cluster_gives_the_serial_arrays_in_input_order(isolated_cache, model_id):
    from cpd_core.data.qm9 import load_qm9

    structures = load_qm9(n=64, seed=7)
    serial = cached_invariants(model_id, structures, chunk_size=16)
    clear_cache()
    messages = []
    on_cluster = cached_invariants(model_id, structures, chunk_size=16, workers=2, log=messages.append)
    assert any("Dask: local cluster of 2 worker processes" in m for m in messages)
    assert on_cluster.keys() == serial.keys()
    for key in serial:
        np.testing.assert_allclose(on_cluster[key], serial[key], rtol=1e-6, atol=1e-6)


def test_a_worker_killed_mid_run_costs_only_its_chunk(isolated_cache):
    """SIGKILL one of two Dask workers after the first chunk is saved: the run completes (the lost task is retried
    on a worker the nanny restarts), and the arrays equal the one-process ones."""
    import os
    import signal
    import threading
    import time

    from dask.distributed import LocalCluster

    from cpd_core.data.qm9 import load_qm9

    structures = load_qm9(n=96, seed=8)
    serial = cached_invariants("ani2x-aev", structures, chunk_size=8)
    clear_cache()
    entry = EmbeddingEntry(describe_model("ani2x-aev"), structures, chunk_size=2)  # 48 chunks
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        def kill_one_worker_after_the_first_chunk():
            deadline = time.time() + 120
            while time.time() < deadline and not list(entry.chunks.glob("part_*.json")):
                time.sleep(0.01)
            nanny = next(iter(cluster.workers.values()))
            saved = len(list(entry.chunks.glob("part_*.json")))
            os.kill(nanny.process.process.pid, signal.SIGKILL)
            killed.append(saved)

        watcher = threading.Thread(target=kill_one_worker_after_the_first_chunk)
        watcher.start()
        arrays = cached_invariants("ani2x-aev", structures, chunk_size=2, scheduler=cluster.scheduler_address)
        watcher.join()
    assert killed and 1 <= killed[0] < 48  # the worker died mid-run
    for key in serial:
        np.testing.assert_allclose(arrays[key], serial[key], rtol=1e-6, atol=1e-7)
