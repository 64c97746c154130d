"""LEACE as a second eraser: known answers on planted representations, and through the CPD engine."""

import numpy as np
import pytest

from cpd_core.engine.projection import CompositionProjector, eraser_params, make_projector
from cpd_core.engine.scores import cpd_scores
from cpd_core.errors import CPDInputError


def _r2_linear(X, y):
    """In-sample R² of least squares of y on [1 | X] (enough for the known-answer checks)."""
    A = np.hstack([np.ones((len(X), 1)), X])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return 1 - np.sum((y - A @ coef) ** 2) / np.sum((y - y.mean()) ** 2)


@pytest.mark.parametrize("eraser", ["qr", "leace"])
def test_both_erasers_remove_the_planted_composition_and_keep_the_geometry(planted, eraser):
    H, C = planted["H"][:, :32], planted["C"]  # the linear block: C A + G B (+ noise)
    erased = make_projector(eraser_params(eraser)).fit_transform(C, H)
    r2_comp = max(_r2_linear(erased, C[:, j]) for j in range(C.shape[1]))
    assert r2_comp <= 0.02
    planted_geom = _r2_linear(H, planted["y_geom"])
    assert planted_geom > 0.95
    assert abs(_r2_linear(erased, planted["y_geom"]) - planted_geom) <= 0.02


def test_leace_is_a_map_of_the_features_alone_and_changes_them_little(planted):
    H, C = planted["H"], planted["C"]
    leace = make_projector({"method": "leace"}).fit(C, H)
    np.testing.assert_allclose(leace.transform(H), leace.transform(H, C=np.zeros_like(C)))
    qr = CompositionProjector().fit_transform(C, H)
    assert np.linalg.norm(leace.transform(H) - H) < np.linalg.norm(qr - H) * 1.5


def test_cpd_scores_under_leace(planted):
    qr = cpd_scores(planted["H"], planted["C"], planted["y_geom"], seed=1)[0]
    leace = cpd_scores(planted["H"], planted["C"], planted["y_geom"], seed=1,
                       projector_params=eraser_params("leace"))[0]
    assert leace.r2_full == pytest.approx(qr.r2_full, abs=0.01)
    assert abs(leace.r2_geom - qr.r2_geom) < 0.03 and leace.r2_geom > 0.9
    comp_only = cpd_scores(planted["H"], planted["C"], planted["y_comp"], seed=1,
                           projector_params=eraser_params("leace"))[0]
    assert comp_only.r2_geom < 0.1  # a target linear in the counts is gone from the erased features


def test_unknown_eraser():
    with pytest.raises(CPDInputError, match="Unknown eraser"):
        eraser_params("svd")
