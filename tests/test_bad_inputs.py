"""Catalogue of bad inputs: each gives exit code 2 (or a warning), a message naming the problem and the fix, and
leaves every output file and cache entry as it was.

Started for issue 18 (reliability); the dashboard's upload cases live in tests/app/test_app.py.
"""

from __future__ import annotations

import json

import ase
import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from typer.testing import CliRunner

from cpd_core.cli import app

runner = CliRunner()
SENTINEL = b"previous output, must survive a failed run"


@pytest.fixture
def out(tmp_path):
    """An existing output file: a failed run must leave it byte for byte as it was."""
    path = tmp_path / "previous.npz"
    path.write_bytes(SENTINEL)
    return path


def _fails(args, *words, out=None):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    if out is not None:
        assert out.read_bytes() == SENTINEL
    return result


def _molecules(n: int, seed: int = 0) -> list[ase.Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("CH4")
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.info["energy"] = float(rng.normal())
        frames.append(atoms)
    return frames


def _embed(path, out, model="ani2x-aev"):
    return ["embed", "--model", model, "--input", str(path), "--out", str(out)]


# ------------------------------------------------------------------------------------------ structure files
def test_a_directory_is_not_a_missing_file(tmp_path, out):
    _fails(_embed(tmp_path, out), "is a directory", "Name one file inside it", out=out)


def test_a_missing_file(tmp_path, out):
    _fails(_embed(tmp_path / "nope.extxyz", out), "not found", out=out)


def test_a_truncated_file_names_the_frame_where_reading_stopped(tmp_path, out):
    path = tmp_path / "cut.extxyz"
    ase.io.write(path, _molecules(4), format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3 * 7 + 4]))  # 3 whole frames (7 lines each), then half of the 4th
    _fails(_embed(path, out), "inside frame 4", "frames 1-3 were read", "truncated", out=out)


def test_a_truncated_gzipped_file_names_the_frame(tmp_path, out):
    import gzip

    plain = tmp_path / "cut.extxyz"
    ase.io.write(plain, _molecules(3), format="extxyz")
    text = "".join(plain.read_text().splitlines(keepends=True)[:2 * 7 + 3])
    path = tmp_path / "cut.extxyz.gz"
    path.write_bytes(gzip.compress(text.encode()))
    _fails(_embed(path, out), "inside frame 3", out=out)


def test_garbage_says_it_stopped_in_the_first_frame(tmp_path, out):
    path = tmp_path / "garbage.xyz"
    path.write_text("this is not\na structure file\n")
    _fails(_embed(path, out), "Could not read", "first frame", out=out)


def test_an_unknown_compressed_format(tmp_path, out):
    import gzip

    path = tmp_path / "structures.gz"
    path.write_bytes(gzip.compress(b"3\n\nH 0 0 0\n"))
    _fails(_embed(path, out), "Cannot tell the format", out=out)


def test_every_structure_with_an_unsupported_element_is_listed(tmp_path, out):
    frames = _molecules(3)
    for k in range(15):
        si = bulk("Si") if k % 2 else molecule("SiH4")
        si.info["energy"] = 0.0
        frames.append(si)
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, frames, format="extxyz")
    result = _fails(_embed(path, out), "ani2x-aev does not support element(s) Si", "15 structure(s)",
                    "and 5 more", "Choose another model", out=out)
    listed = result.stderr.split("15 structure(s):")[1]
    assert "3 (H4Si)" in listed and "4 (Si2)" in listed and "12 (" in listed and "13 (" not in listed


def test_an_empty_structure_is_named(tmp_path, out):
    from cpd_core.models import describe_model
    from cpd_core.models.base import structure_problems

    message = structure_problems(describe_model("ani2x-aev"), [molecule("CH4"), ase.Atoms(), ase.Atoms()])
    assert "2 structure(s) have no atoms (structure 1, 2)" in message


def test_trust_flag_is_only_for_model_files(tmp_path, out):
    path = tmp_path / "ok.extxyz"
    ase.io.write(path, _molecules(3), format="extxyz")
    _fails(_embed(path, out) + ["--trust-model-file"], "mace-file:<path> only", out=out)


def test_an_unknown_model(tmp_path, out):
    path = tmp_path / "ok.extxyz"
    ase.io.write(path, _molecules(3), format="extxyz")
    _fails(_embed(path, out, model="no-such-model"), "no-such-model", out=out)


def test_bad_pooling_choice(tmp_path, out):
    path = tmp_path / "ok.extxyz"
    ase.io.write(path, _molecules(3), format="extxyz")
    _fails(_embed(path, out) + ["--pooling", "max"], "--pooling must be one of", out=out)


# ------------------------------------------------------------------------------------------ probe
@pytest.fixture
def arrays(probe_arrays):
    return probe_arrays


def _probe(p, *extra):
    return ["probe", "--features", str(p["H"]), "--composition", str(p["C"]), "--target", str(p["y"]), *extra]


@pytest.mark.parametrize("shape", [(500,), (500, 4, 2)])
def test_features_that_are_not_2d_are_rejected_with_the_reshape(arrays, tmp_path, shape):
    path = tmp_path / "H_bad.npy"
    np.save(path, np.random.default_rng(0).normal(size=shape))
    _fails(_probe({**arrays, "H": path}), "Features must be a 2-D array", str(shape), "reshape(-1, 1)")


def test_composition_that_is_not_2d_is_rejected(arrays, tmp_path):
    path = tmp_path / "C_bad.npy"
    np.save(path, np.arange(500.0))
    _fails(_probe({**arrays, "C": path}), "Composition must be a 2-D array")


def test_non_finite_targets_are_dropped_with_a_warning_on_stderr(arrays, tmp_path, planted):
    y = planted["y_geom"].copy()
    y[[3, 10, 99]] = [np.nan, np.inf, -np.inf]
    path = tmp_path / "y_nan.npy"
    np.save(path, y)
    result = runner.invoke(app, _probe({**arrays, "y": path}, "--json"))
    assert result.exit_code == 0
    assert "dropped 3 structure(s) whose target is NaN or infinite" in result.stderr
    assert json.loads(result.stdout)["n_dropped"] == 3  # stdout stays one JSON object


def test_all_targets_non_finite(arrays, tmp_path):
    path = tmp_path / "y_all_nan.npy"
    np.save(path, np.full(500, np.nan))
    _fails(_probe({**arrays, "y": path}), "Too few samples")


def test_too_few_samples_for_the_folds(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name, value in (("H", rng.normal(size=(6, 3))), ("C", rng.integers(0, 3, size=(6, 2)).astype(float)),
                        ("y", rng.normal(size=6))):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], value)
    _fails(_probe(paths, "--folds", "5"), "Too few samples")


def test_an_npz_with_several_arrays(arrays, tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros((5, 2)), b=np.zeros((5, 2)))
    _fails(_probe({**arrays, "H": path}), "holds 2 arrays")


def test_non_finite_features(arrays, tmp_path, planted):
    H = planted["H"].copy()
    H[7, 2] = np.nan
    path = tmp_path / "H_nan.npy"
    np.save(path, H)
    _fails(_probe({**arrays, "H": path}), "Features contain NaN or infinite values in 1 rows")


def test_unknown_split_and_projection(arrays):
    _fails(_probe(arrays, "--split", "random"), "split")
    _fails(_probe(arrays, "--projection", "magic"), "projection")


# ------------------------------------------------------------------------------------------ cache
def test_a_corrupt_cache_entry_is_recomputed_not_used(tmp_path, isolated_cache_dir):
    path = tmp_path / "ok.extxyz"
    ase.io.write(path, _molecules(12), format="extxyz")
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    assert runner.invoke(app, _embed(path, first)).exit_code == 0
    arrays = [p for p in isolated_cache_dir.rglob("*.npy")]
    assert arrays
    raw = bytearray(arrays[0].read_bytes())
    raw[-8:] = b"\xff" * 8  # flip the last values of one cached array
    arrays[0].write_bytes(bytes(raw))
    result = runner.invoke(app, _embed(path, second))
    assert result.exit_code == 0, result.output
    with np.load(first) as a, np.load(second) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if key != "__meta__":
                np.testing.assert_array_equal(a[key], b[key])
