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


# ------------------------------------------------------------------------------------------ degenerate structures
def _with_degenerate(tmp_path, kinds):
    """12 ordinary molecules, then one structure per kind: 'isolated', 'overlapping', 'empty'."""
    frames = _molecules(12)
    for kind in kinds:
        atoms = molecule("CH4")
        if kind == "isolated":
            atoms += ase.Atoms("H", positions=[[20.0, 0.0, 0.0]])
        elif kind == "overlapping":
            atoms.positions[1] = atoms.positions[0] + [0.2, 0.0, 0.0]
        elif kind == "empty":
            atoms = ase.Atoms()
        atoms.info["energy"] = 0.0
        atoms.info["id"] = kind
        frames.append(atoms)
    path = tmp_path / "degenerate.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def _meta(path):
    with np.load(path) as z:
        return json.loads(str(z["__meta__"])), {k: z[k] for k in z.files if k != "__meta__"}


def test_isolated_and_overlapping_atoms_are_named_and_kept(tmp_path, isolated_cache_dir):
    path, out = _with_degenerate(tmp_path, ["isolated", "overlapping"]), tmp_path / "out.npz"
    result = runner.invoke(app, _embed(path, out))
    assert result.exit_code == 0, result.output
    assert "1 structure(s) have an atom with no neighbour within the model's cutoff (5.1 Å)" in result.stderr
    assert "12 (CH5)" in result.stderr and "13 (CH4)" in result.stderr
    assert "closer than 0.5 Å" in result.stderr and "Kept; --drop-degenerate drops them" in result.stderr
    meta, arrays = _meta(out)
    assert meta["degenerate"]["isolated"] == [12] and meta["degenerate"]["overlapping"] == [13]
    assert meta["degenerate"]["dropped"] is False and meta["n"] == 14
    assert all(len(v) == 14 for v in arrays.values())


def test_drop_degenerate_drops_them_and_records_it(tmp_path, isolated_cache_dir):
    path, out = _with_degenerate(tmp_path, ["isolated", "overlapping", "empty"]), tmp_path / "out.npz"
    result = runner.invoke(app, _embed(path, out) + ["--drop-degenerate"])
    assert result.exit_code == 0, result.output
    assert "have no atoms" in result.stderr and "Dropped (--drop-degenerate)" in result.stderr
    meta, arrays = _meta(out)
    assert meta["n"] == 12 and "isolated" not in meta["ids"] and "empty" not in meta["ids"]
    assert meta["degenerate"]["dropped"] is True and meta["degenerate"]["empty_frames_dropped"] == [14]
    assert sorted(meta["degenerate"]["ids"]) == ["isolated", "overlapping"]
    assert all(len(v) == 12 for v in arrays.values())


def test_an_empty_structure_without_the_drop_option(tmp_path, out, isolated_cache_dir):
    path = _with_degenerate(tmp_path, ["empty"])
    _fails(_embed(path, out), "have no atoms", "--drop-degenerate", out=out)


def test_nothing_left_after_dropping(tmp_path, out):
    frames = []
    for k in range(3):
        atoms = molecule("CH4")
        atoms.positions[1] = atoms.positions[0]
        atoms.info["energy"] = float(k)
        frames.append(atoms)
    path = tmp_path / "all_bad.extxyz"
    ase.io.write(path, frames, format="extxyz")
    _fails(_embed(path, out) + ["--drop-degenerate"], "Every structure is degenerate", out=out)


def test_a_chunk_size_of_zero(tmp_path, out):
    path = tmp_path / "ok.extxyz"
    ase.io.write(path, _molecules(3), format="extxyz")
    _fails(_embed(path, out) + ["--chunk-size", "0"], "at least 1 structure", out=out)


# ------------------------------------------------------------------------------------------ more embed inputs
def test_non_finite_coordinates(tmp_path, out):
    path = tmp_path / "nan.xyz"
    path.write_text("2\n\nC nan 0 0\nH 0 0 1\n")
    _fails(_embed(path, out), "NaN or infinite coordinates", "structure 0", out=out)


def test_an_unknown_file_type(tmp_path, out):
    path = tmp_path / "structures.txt"
    path.write_text("a b c\n")
    _fails(_embed(path, out), "Cannot tell the format of structures.txt", "rename the file", out=out)


def test_an_unknown_dataset(out):
    _fails(["embed", "--model", "ani2x-aev", "--dataset", "qm99", "--out", str(out)], "Unknown dataset 'qm99'",
           out=out)


def test_zero_workers(out):
    _fails(["embed", "--model", "ani2x-aev", "--dataset", "qm9", "--n", "20", "--workers", "0", "--out", str(out)],
           "--workers must be at least 1", out=out)


def test_a_subset_larger_than_the_dataset_is_said(tmp_path, isolated_cache_dir):
    from cpd_core.data import load_dataset

    mp = load_dataset("mp")
    out = tmp_path / "all.npz"
    result = runner.invoke(app, ["embed", "--model", "ani2x-aev", "--dataset", "qm9", "--n", "0", "--out", str(out)])
    assert result.exit_code == 2 and "at least 1" in result.stderr
    assert len(mp) > 1000  # the shared crystals are there (the warning below is about QM9)
    result = runner.invoke(app, ["embed", "--model", "no-such", "--dataset", "qm9", "--n", "999999",
                                 "--out", str(out)])
    assert "more than the 130,831 structures of qm9; using all of them" in result.stderr
    assert result.exit_code == 2 and not out.exists()  # the unknown model still stops the run


# ------------------------------------------------------------------------------------------ more probe inputs
def test_a_target_with_two_columns(arrays, tmp_path):
    path = tmp_path / "y2.npy"
    np.save(path, np.zeros((500, 2)))
    _fails(_probe({**arrays, "y": path}), "Target must be one column")


def test_rows_that_do_not_match(arrays, tmp_path):
    path = tmp_path / "C_short.npy"
    np.save(path, np.zeros((10, 4)))
    _fails(_probe({**arrays, "C": path}), "Row counts differ")


def test_one_fold(arrays):
    _fails(_probe(arrays, "--folds", "1"), "Need at least 2 folds")


def test_a_text_target_with_words(arrays, tmp_path):
    path = tmp_path / "y.csv"
    path.write_text("gap\n1.0\n2.0\n")
    _fails(_probe({**arrays, "y": path}), "Could not read target file")


# ------------------------------------------------------------------------------------------ app uploads
def _extxyz_bytes(frames) -> bytes:
    import io

    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    return buf.getvalue().encode()


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """The dashboard's upload handler with its own upload folder."""
    from dashboard import uploads as module

    root = tmp_path / "uploads"
    root.mkdir()
    monkeypatch.setattr(module, "uploads_root", lambda: root)
    return module, root


@pytest.mark.parametrize("name, data, words", [
    ("big.extxyz", b"x" * 2048, "the limit is"),
    ("report.pdf", b"%PDF-1.4", "not a structure file"),
    ("empty.extxyz", b"", "is empty"),
    ("garbage.xyz", b"this is not\na structure file\n", "Could not read"),
    ("cut.extxyz.gz", b"\x1f\x8b\x08\x00 truncated gzip", "Could not read"),
    ("notsqlite.db", b"SQLite? no", "Could not read"),
])
def test_bad_uploads_are_refused_and_not_kept(uploads, name, data, words):
    from cpd_core.errors import CPDInputError

    module, root = uploads
    with pytest.raises(CPDInputError, match=words):
        module.handle_upload(name, data, max_bytes=1024)
    assert not [p for p in root.rglob("*") if p.is_file()], "a refused upload left a file behind"


def test_uploads_with_too_few_structures_or_no_targets(uploads):
    from cpd_core.errors import CPDInputError

    module, _ = uploads
    with pytest.raises(CPDInputError, match="at least 10"):
        module.handle_upload("few.extxyz", _extxyz_bytes(_molecules(3)))
    bare = _molecules(12)
    for atoms in bare:
        atoms.info.clear()
    with pytest.raises(CPDInputError, match="no numeric"):
        module.handle_upload("bare.extxyz", _extxyz_bytes(bare))


def test_an_upload_name_cannot_leave_the_upload_folder(uploads):
    module, root = uploads
    dataset_id, structures = module.handle_upload("../../../etc/evil.extxyz", _extxyz_bytes(_molecules(12)))
    stored = module.upload_path(dataset_id)
    assert stored is not None and root in stored.resolve().parents and len(structures) == 12
    assert module.upload_path("upload:../../etc/passwd") is None


# ------------------------------------------------------------------------------------------ more cache states
def _embed_qm9(out, n=16):
    return ["embed", "--model", "ani2x-aev", "--dataset", "qm9", "--n", str(n), "--seed", "9", "--out", str(out)]


@pytest.mark.parametrize("damage", ["manifest_not_json", "array_missing", "manifest_wrong_shape"])
def test_a_damaged_cache_entry_is_rebuilt_with_the_same_values(tmp_path, isolated_cache_dir, damage):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    assert runner.invoke(app, _embed_qm9(first)).exit_code == 0
    manifest_path = next(isolated_cache_dir.glob("*/manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    if damage == "manifest_not_json":
        manifest_path.write_text("{ not json")
    elif damage == "array_missing":
        (manifest_path.parent / next(iter(manifest["arrays"].values()))["file"]).unlink()
    else:
        next(iter(manifest["arrays"].values()))["shape"] = [1, 1]
        manifest_path.write_text(json.dumps(manifest))
    result = runner.invoke(app, _embed_qm9(second))
    assert result.exit_code == 0, result.output
    with np.load(first) as a, np.load(second) as b:
        for key in a.files:
            if key != "__meta__":
                np.testing.assert_array_equal(a[key], b[key])


def test_a_chunk_with_rows_outside_the_entry_is_discarded(tmp_path, isolated_cache_dir):
    from cpd_core.data import load_dataset
    from cpd_core.models import describe_model
    from cpd_core.representations.cache import EmbeddingEntry

    structures = load_dataset("qm9", n=16, seed=9)
    entry = EmbeddingEntry(describe_model("ani2x-aev"), structures)
    entry.chunks.mkdir(parents=True)
    entry.save_chunk(np.array([3, 99]), {"aev/L0/mean": np.zeros((2, 1008), dtype=np.float32)})
    assert entry.saved_chunks() == [] and not list(entry.chunks.glob("part_*"))  # removed, never read
    out = tmp_path / "a.npz"
    assert runner.invoke(app, _embed_qm9(out)).exit_code == 0


def test_a_stale_lock_file_does_not_block(tmp_path, isolated_cache_dir):
    from cpd_core.data import load_dataset
    from cpd_core.models import describe_model
    from cpd_core.representations.cache import EmbeddingEntry

    entry = EmbeddingEntry(describe_model("ani2x-aev"), load_dataset("qm9", n=16, seed=9))
    entry.folder.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.lock.lock_file, "w") as fh:
        fh.write("left behind by a killed process")
    out = tmp_path / "a.npz"
    result = runner.invoke(app, _embed_qm9(out))
    assert result.exit_code == 0, result.output
