"""Dask as the engine: extraction on the active client (workers returning arrays, or writing the shared cache
themselves), cancellation and resume, and the probe grid through Dask equal to the local path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cpd_core.data.qm9 import load_qm9
from cpd_core.representations.cache import (EmbeddingEntry, ExtractionInterrupted, cached_invariants, clear_cache,
                                            pack_atoms)
from cpd_core.cluster import active_client, dask_client
from cpd_core.models import describe_model


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def client():
    with dask_client(2) as c:
        yield c
    assert active_client() is None  # the context closes its client: later code runs locally again


@pytest.fixture(scope="module")
def molecules():
    return load_qm9(n=48, seed=5)


def test_no_client_outside_the_context():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys; from cpd_core.cluster import "
                          "active_client; print(active_client(), 'distributed' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["None", "False"]  # asking never imports dask


def test_a_chunk_travels_as_one_frame_and_unpacks_to_the_same_structures(molecules):
    """Tasks carry a chunk's structures as one bytes frame (a list of Atoms costs Dask a frame per array)."""
    atoms = molecules.to_atoms_list(np.arange(8))
    packed = pack_atoms(atoms)
    assert isinstance(packed, bytes)
    back = pickle.loads(packed)
    assert len(back) == len(atoms)
    for sent, received in zip(atoms, back):
        np.testing.assert_array_equal(received.numbers, sent.numbers)
        np.testing.assert_array_equal(received.positions, sent.positions)
        assert received.info["id"] == sent.info["id"]


@pytest.mark.parametrize("workers_write", [False, True])
def test_extraction_on_the_active_client(isolated_cache, client, molecules, workers_write):
    serial = cached_invariants("ani2x-aev", molecules, chunk_size=8, adapter=_local("ani2x-aev"))
    clear_cache()
    entry = EmbeddingEntry(describe_model("ani2x-aev"), molecules, chunk_size=8)
    written_by = []
    if workers_write:  # the client process must never write a chunk in this mode
        original = EmbeddingEntry.save_chunk
        EmbeddingEntry.save_chunk = lambda self, rows, arrays: written_by.append("client") or original(self, rows,
                                                                                                         arrays)
    try:
        before = len(client.run(lambda: 1))  # the same two workers serve the run (no new cluster)
        arrays = cached_invariants("ani2x-aev", molecules, chunk_size=8, workers_write=workers_write)
    finally:
        if workers_write:
            EmbeddingEntry.save_chunk = original
    assert before == 2 and written_by == []
    assert sum(client.run(_models_loaded_on_worker).values()) >= 1  # the chunks ran on the workers
    assert entry.load() is not None  # assembled and verified from the chunks on disk
    for key in serial:
        np.testing.assert_allclose(arrays[key], serial[key], rtol=1e-6, atol=1e-6)


def test_a_cancelled_run_frees_the_cluster_and_resumes_with_the_rest(isolated_cache, client, molecules):
    seen = []

    def stop_after_two_chunks(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(ExtractionInterrupted) as stop:
        cached_invariants("ani2x-aev", molecules, chunk_size=4, progress=stop_after_two_chunks)
    saved = stop.value.saved
    assert 8 <= saved < len(molecules)
    client.sync(_idle, client)  # cancelled: nothing left running on the workers
    messages = []
    arrays = cached_invariants("ani2x-aev", molecules, chunk_size=4, log=messages.append)
    assert messages[0].startswith(f"resuming: {saved} of {len(molecules)}")
    reference = cached_invariants("ani2x-aev", molecules, adapter=_local("ani2x-aev"))
    for key in reference:
        np.testing.assert_allclose(arrays[key], reference[key], rtol=1e-6, atol=1e-6)


def test_the_probe_grid_through_dask_equals_the_local_grid(client):
    from cpd_core.engine.scores import cpd_grid

    rng = np.random.default_rng(0)
    n = 120
    C = rng.integers(0, 5, size=(n, 3)).astype(float)
    Y = np.column_stack([C @ [0.5, -1.0, 2.0] + rng.normal(size=n), rng.normal(size=n)])
    sets = {("m", f"layer_{i}", "L0"): np.column_stack([C, Y[:, :1] + rng.normal(scale=0.5 + i, size=n),
                                                         rng.normal(size=(n, 4))]) for i in range(5)}
    done = []
    on_cluster = cpd_grid(sets, C, Y, ["a", "b"], progress=lambda d, t: done.append(d))
    local = cpd_grid(sets, C, Y, ["a", "b"], use_cluster=False)
    assert sorted(done) == [1, 2, 3, 4, 5]
    assert list(on_cluster.layer) == list(local.layer)  # input order, whatever order the tasks finished in
    numeric = local.select_dtypes("number").columns
    np.testing.assert_allclose(on_cluster[numeric].to_numpy(float), local[numeric].to_numpy(float), rtol=1e-9,
                               atol=1e-12)


def _models_loaded_on_worker() -> int:
    from cpd_core.representations import cache

    return cache._worker_adapter.cache_info().currsize


def _local(model_id):
    from cpd_core.models import load_model

    return load_model(model_id)


async def _idle(client, timeout: float = 30.0):
    import asyncio

    for _ in range(int(timeout / 0.1)):
        if not any((await client.scheduler.processing()).values()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("tasks still running after the run was cancelled")
