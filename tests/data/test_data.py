"""Data layer on the real data: QM9 from qm9pack, Materials Project crystals, the user's own files."""

import gzip
import time

import ase.db
import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from cpd_core.data import composition_matrix, list_datasets, load_dataset
from cpd_core.data.mp import load_mp
from cpd_core.data.qm9 import HARTREE_TO_EV, load_qm9
from cpd_core.data.structures import StructureSet
from cpd_core.data.userfiles import load_structure_file
from cpd_core.errors import CPDInputError


@pytest.fixture(scope="module")
def qm9():
    return load_qm9()


def test_qm9_has_every_molecule_with_units(qm9):
    assert len(qm9) == 130_831
    assert qm9.numbers.shape == (qm9.offsets[-1],) and qm9.positions.shape == (qm9.offsets[-1], 3)
    assert set(np.unique(qm9.numbers)) == {1, 6, 7, 8, 9}
    assert qm9.units["gap"] == "eV" and qm9.units["dipole"] == "D" and qm9.units["polarizability"] == "bohr^3"
    for name in ("gap", "homo", "lumo", "dipole", "polarizability", "U0", "zpve", "cv", "r2"):
        assert name in qm9.targets and np.isfinite(qm9.target_values(name)).all()


def test_qm9_known_molecules(qm9):
    by_smiles = {s: i for i, s in enumerate(qm9.table.smiles[:10])}
    methane, water = qm9.atoms(by_smiles["C"]), qm9.atoms(by_smiles["O"])
    assert methane.get_chemical_formula() == "CH4" and water.get_chemical_formula() == "H2O"
    assert methane.info["gap"] == pytest.approx(0.5048 * HARTREE_TO_EV)   # 13.74 eV
    assert water.info["gap"] == pytest.approx(0.3615 * HARTREE_TO_EV)     # 9.84 eV
    assert water.info["dipole"] == pytest.approx(1.8511)
    assert methane.info["U0"] == pytest.approx(-40.47893 * HARTREE_TO_EV)
    # O-H bond length of QM9's water is about 0.96 Å
    assert 0.9 < water.get_distance(0, 1) < 1.0


def test_qm9_cached_load_is_fast(qm9):
    start = time.perf_counter()
    load_qm9()
    assert len(load_qm9(n=50, seed=3)) == 50
    # not a performance assertion: a cached load must not re-parse the CSV (which takes seconds)
    assert time.perf_counter() - start < 30


def test_subsets_are_reproducible(qm9):
    a, b, c = load_qm9(200, seed=1), load_qm9(200, seed=1), load_qm9(200, seed=2)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert list(a.table.id) == list(b.table.id)
    sub = qm9.subset([5, 2])
    assert list(sub.table.id) == [qm9.table.id[5], qm9.table.id[2]]
    np.testing.assert_array_equal(sub.atoms(1).numbers, qm9.atoms(2).numbers)


def test_composition_counts_and_fractions(qm9):
    sub = qm9.subset([0, 2])  # methane, water
    counts, elements = composition_matrix(sub)
    assert elements == ["H", "C", "O"]
    np.testing.assert_array_equal(counts, [[4, 1, 0], [2, 0, 1]])
    fractions, _ = composition_matrix(sub, kind="fractions")
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0)
    fixed, cols = composition_matrix(sub, elements=["H", "C", "N", "O", "F"])
    assert fixed.shape == (2, 5) and fixed[:, 2].sum() == 0
    with pytest.raises(CPDInputError):
        composition_matrix(sub, elements=["C"])


def test_mp_crystals_loader():
    mp = load_mp()
    assert len(mp) == 36_738
    assert mp.periodic.all()
    for name in ("band_gap", "formation_energy_per_atom", "total_magnetization", "efermi", "density",
                 "volume_per_atom"):
        assert name in mp.targets
    row = mp.table.index[mp.table.id == "mp-1000"][0]   # BaTe, rock salt
    atoms = mp.atoms(row)
    assert atoms.get_chemical_formula() == "BaTe"
    assert atoms.info["band_gap"] == pytest.approx(1.593)
    assert atoms.info["volume_per_atom"] == pytest.approx(atoms.get_volume() / 2)
    assert atoms.info["density"] == pytest.approx(5.0, abs=0.4)     # BaTe is about 5 g/cm^3
    sub = load_mp(n=2000, seed=0)
    assert len(sub) == 2000 and sub.fingerprint() == load_mp(n=2000, seed=0).fingerprint()


def test_mp_missing_file_is_listed_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("CPD_MP_PATH", str(tmp_path / "nothing.extxyz"))
    info = {d.name: d for d in list_datasets()}["mp"]
    assert not info.available and "CPD_MP_PATH" in info.message and "mp-api" in info.message
    with pytest.raises(CPDInputError, match="not available"):
        load_dataset("mp")


def _frames():
    water, methane = molecule("H2O"), molecule("CH4")
    water.info.update(energy=-1.5, label="w")
    methane.info.update(energy=-2.5, label="m")
    return [water, methane]


@pytest.mark.parametrize("name", ["mols.extxyz", "mols.xyz", "mols.extxyz.gz", "mols.db"])
def test_user_files_multi_frame(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".db"):
        with ase.db.connect(path) as db:
            for atoms in _frames():
                atoms.calc = SinglePointCalculator(atoms, energy=atoms.info.pop("energy"))
                db.write(atoms, label=atoms.info["label"])
    elif name.endswith(".gz"):
        ase.io.write(tmp_path / "plain.extxyz", _frames())
        path.write_bytes(gzip.compress((tmp_path / "plain.extxyz").read_bytes()))
    else:
        ase.io.write(path, _frames())
    s = load_structure_file(path)
    assert len(s) == 2 and s.atoms(1).get_chemical_formula() == "CH4"
    assert "energy" in s.targets
    np.testing.assert_allclose(s.target_values("energy"), [-1.5, -2.5])


@pytest.mark.parametrize("name,fmt", [("NaCl.cif", "cif"), ("POSCAR", "vasp")])
def test_user_files_crystals(tmp_path, name, fmt):
    path = tmp_path / name
    ase.io.write(path, bulk("NaCl", "rocksalt", a=5.64), format=fmt)
    s = load_structure_file(path)
    assert len(s) == 1 and s.periodic.all() and s.atoms(0).get_chemical_formula() == "ClNa"


def test_gzipped_extxyz_loads_in_linear_time(tmp_path):
    frames = [molecule("H2O") for _ in range(3000)]
    ase.io.write(tmp_path / "many.extxyz", frames)
    gz = tmp_path / "many.extxyz.gz"
    gz.write_bytes(gzip.compress((tmp_path / "many.extxyz").read_bytes()))
    s = load_structure_file(gz)
    assert len(s) == 3000


def test_bad_user_files(tmp_path):
    with pytest.raises(CPDInputError, match="not found"):
        load_structure_file(tmp_path / "missing.xyz")
    bad = tmp_path / "broken.xyz"
    bad.write_text("3\ncomment\nH 0 0\n")
    with pytest.raises(CPDInputError, match="Could not read"):
        load_structure_file(bad)
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(CPDInputError):
        load_structure_file(empty)
    with pytest.raises(CPDInputError, match="Unknown dataset"):
        load_dataset("no-such-dataset")


def test_structure_set_round_trip(tmp_path, qm9):
    sub = qm9.subset(range(20))
    sub.save(tmp_path / "set")
    again = StructureSet.load(tmp_path / "set")
    assert again.fingerprint() == sub.fingerprint() and list(again.table.smiles) == list(sub.table.smiles)
    (tmp_path / "set" / "atoms.npz").write_bytes(b"garbage")
    with pytest.raises(CPDInputError, match="unreadable"):
        StructureSet.load(tmp_path / "set")
