"""A real `embed` process killed (SIGKILL) or interrupted (SIGINT) mid-run: the saved chunks survive, the lock
file left behind does not block the rerun, and the rerun says how many structures it resumed from and gives the
same arrays as an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 400


@pytest.fixture
def cache(tmp_path):
    from cpd_core.data.qm9 import load_qm9
    from cpd_core.paths import cache_dir

    load_qm9()  # the parsed dataset is shared; the embeddings are not
    root = tmp_path / "cache"
    root.mkdir()
    (root / "datasets").symlink_to(cache_dir() / "datasets")
    return root


def _embed(cache: Path, out: Path, **popen):
    env = dict(os.environ, CPD_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "cpd_core", "embed", "--model", "ani2x-aev", "--dataset", "qm9", "--n", str(N),
            "--seed", "4", "--chunk-size", "2", "--out", str(out)]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def _wait_for_chunks(cache: Path, proc, at_least: int) -> int:
    deadline = time.time() + 240
    while time.time() < deadline:
        parts = list(cache.glob("embeddings/*/chunks/part_*.json"))
        if len(parts) >= at_least:
            return len(parts)
        if proc.poll() is not None:
            pytest.fail(f"embed finished before it could be stopped: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail("no chunks appeared")


def _arrays(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "__meta__"}


def _reference(tmp_path, cache) -> dict:
    out = tmp_path / "reference.npz"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "datasets").symlink_to((cache / "datasets").resolve())
    proc = _embed(fresh, out)
    proc.communicate(timeout=600)
    assert proc.returncode == 0
    return _arrays(out)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_stopped_run_keeps_its_chunks_and_resumes(tmp_path, cache, how):
    out = tmp_path / "out.npz"
    proc = _embed(cache, out)
    _wait_for_chunks(cache, proc, at_least=5)
    proc.send_signal(getattr(signal, how))
    _, stderr = proc.communicate(timeout=120)
    saved = len(list(cache.glob("embeddings/*/chunks/part_*.json")))
    assert saved >= 5 and not out.exists()
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
        assert list(cache.glob("embeddings/*.lock")), "the killed process's lock file should be left behind"
    else:
        assert proc.returncode == 130, stderr
        match = re.search(r"interrupted: ([\d,]+) of 400 structures are saved", stderr)
        assert match, stderr
        assert int(match.group(1).replace(",", "")) == 2 * saved  # chunks of 2
    rerun = _embed(cache, out)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    match = re.search(r"resuming: ([\d,]+) of 400 structures were already computed", stderr)
    assert match, stderr
    assert int(match.group(1).replace(",", "")) >= 2 * 5
    ours, reference = _arrays(out), _reference(tmp_path, cache)
    assert ours.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(ours[key], reference[key])
