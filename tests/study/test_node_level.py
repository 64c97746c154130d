"""Node-level CPD: per-atom data, folds over molecules, and the table on real representations."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cpd_core.cli import app
from cpd_core.data.atoms import atom_composition, geometry_descriptors, mulliken_charges
from cpd_core.data.qm9 import load_qm9
from cpd_core.engine.scores import cpd_scores, grouped_fold_indices
from cpd_core.errors import CPDInputError


@pytest.fixture(scope="module")
def qm9():
    return load_qm9(n=150, seed=4)


def test_mulliken_charges_are_per_atom_and_molecules_are_neutral(qm9):
    q = mulliken_charges(qm9)
    assert q.shape == (qm9.n_atoms.sum(),)
    np.testing.assert_allclose(np.add.reduceat(q, qm9.offsets[:-1]), 0, atol=1e-4)
    heavy = qm9.numbers != 1
    assert q[heavy & (qm9.numbers == 8)].max() < 0 < q[qm9.numbers == 1].min()  # O negative, H positive


def test_atom_descriptors(qm9):
    geometry = geometry_descriptors(qm9)
    C, names = atom_composition(qm9, 5.0)
    assert len(geometry) == len(C) == qm9.n_atoms.sum()
    carbon = qm9.numbers == 6
    assert (geometry.coordination[carbon] >= 2).all()
    k = len(names) // 2
    assert (C[:, :k].sum(axis=1) == 1).all()                   # one element each
    assert (C[:, k:].sum(axis=1) <= np.repeat(qm9.n_atoms, qm9.n_atoms) - 1).all()  # neighbours within the molecule


def test_grouped_folds_keep_a_molecule_together():
    groups = np.repeat(np.arange(30), 4)
    for train, test in grouped_fold_indices(groups, folds=5, seed=1):
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(CPDInputError, match="Too few groups"):
        grouped_fold_indices(np.repeat(np.arange(6), 3), folds=5)


def test_grouped_folds_remove_the_leak_of_a_molecule_level_target():
    """A per-atom target that is a molecule's random label is learnable across atoms of the same molecule only:
    with folds over atoms the feature (the same label) leaks; with folds over molecules it cannot."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 5)
    label = rng.normal(size=100)[groups]
    H = np.column_stack([label + 0.01 * rng.normal(size=500), rng.normal(size=(500, 3))])
    C = rng.integers(0, 3, size=(500, 2)).astype(float)
    y = label + 0.01 * rng.normal(size=500)
    by_atom = cpd_scores(H, C, y, seed=0)[0]
    by_molecule = cpd_scores(H, C, y, seed=0, row_groups=groups)[0]
    assert by_atom.r2_full > 0.99 and by_molecule.r2_full > 0.99  # the feature carries the label: fine both ways
    shuffled = cpd_scores(rng.normal(size=(500, 4)), C, y, seed=0, row_groups=groups)[0]
    assert shuffled.r2_full < 0.05


def test_node_cpd_command(tmp_path, qm9):
    out = tmp_path / "node.csv"
    result = CliRunner().invoke(app, ["node-cpd", "--models", "ani2x-aev", "--dataset", "qm9", "--n", "150",
                                      "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table.target) == {"mulliken", "coordination", "centroid_distance"}
    assert (table.n_atoms == qm9.n_atoms.sum()).all()
    mulliken = table[table.target == "mulliken"].iloc[0]
    assert mulliken.r2_full > mulliken.r2_comp and mulliken.r2_geom > 0.1  # geometry beyond the atom's composition
    bad = CliRunner().invoke(app, ["node-cpd", "--models", "ani2x-aev", "--dataset", "qm9", "--n", "150",
                                   "--targets", "charge", "--out", str(out)])
    assert bad.exit_code == 2 and "Unknown per-atom target" in bad.stderr
