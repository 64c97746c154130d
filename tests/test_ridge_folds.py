"""The fold-statistics Ridge path gives the same predictions and alphas as refitting RidgeProbe in every fold."""

import numpy as np
import pytest

from cpd_core.cpd import cpd_scores, fold_indices
from cpd_core.probes import RidgeProbe
from cpd_core.projection import CompositionProjector
from cpd_core.ridge_folds import ridge_cpd_folds


def awkward_data(n=400, seed=0, fractions=False):
    """Features with the columns that break naive Gram arithmetic, and a composition with an absent element."""
    rng = np.random.default_rng(seed)
    C = rng.integers(0, 6, size=(n, 4)).astype(float)
    C[:, 3] = 0.0
    C[rng.choice(n, 3, replace=False), 3] = 1.0          # a rare element: absent from some training folds
    if fractions:
        C = C / np.maximum(C.sum(axis=1, keepdims=True), 1.0)
        C[C.sum(axis=1) == 0, 0] = 1.0                    # collinear with the intercept
    G = rng.normal(size=(n, 6))
    H = np.column_stack([
        C @ rng.normal(size=(4, 10)) + G @ rng.normal(size=(6, 10)),   # mixed columns
        np.full(n, 7.25),                                                # constant
        np.where(np.arange(n) < 2, 3.0, 0.0),                            # non-zero in two rows only
        C @ rng.normal(size=4) + 1e3,                                    # exactly linear in composition
        C @ rng.normal(size=4) * 100 + 1e-4 * G[:, 0],                   # composition explains ~all of it
        1e6 + G[:, 1],                                                   # large offset
    ])
    Y = np.column_stack([G @ rng.normal(size=6) + C @ rng.normal(size=4), G[:, 2] ** 2 + 0.1 * rng.normal(size=n)])
    return H, C, Y


def direct(H, C, Y, splits, part, criterion, alphas=None):
    """Refit scaler, projector and probe in every fold: the reference implementation."""
    out = []
    for train, test in splits:
        if part == "geom":
            projector = CompositionProjector().fit(C[train], H[train])
            X_train, X_test = projector.transform(H[train]), projector.transform(H[test], C[test])
        else:
            X_train, X_test = H[train], H[test]
        probe = RidgeProbe(alphas=alphas, criterion=criterion).fit(X_train, Y[train])
        out.append((probe.predict(X_test), probe.alpha_, probe.scaler_.n_dropped_))
    return out


@pytest.mark.parametrize("criterion", ["loo", "gcv"])
@pytest.mark.parametrize("fractions", [False, True])
def test_same_predictions_alphas_and_dropped_columns_as_refitting(criterion, fractions):
    H, C, Y = awkward_data(fractions=fractions)
    splits = fold_indices(len(Y), 5, seed=3)
    fast = ridge_cpd_folds(H, C, Y, splits, ("full", "geom"), criterion=criterion)
    for part in ("full", "geom"):
        for (test, pred, alphas, dropped), (ref_pred, ref_alphas, ref_dropped) in zip(
                fast[part], direct(H, C, Y, splits, part, criterion)):
            np.testing.assert_allclose(pred, ref_pred, rtol=1e-7, atol=1e-7 * np.abs(ref_pred).max())
            np.testing.assert_array_equal(alphas, ref_alphas)
            assert dropped == ref_dropped, (part, dropped, ref_dropped)


def test_geom_drops_the_column_that_is_exactly_linear_in_composition():
    H, C, Y = awkward_data()
    splits = fold_indices(len(Y), 5, seed=0)
    fast = ridge_cpd_folds(H, C, Y, splits, ("full", "geom"))
    full_dropped = [o[3] for o in fast["full"]]
    geom_dropped = [o[3] for o in fast["geom"]]
    assert all(g >= f + 1 for f, g in zip(full_dropped, geom_dropped))   # + the exactly linear column


def test_cpd_scores_takes_the_fold_statistics_path_with_identical_results():
    H, C, Y = awkward_data(n=300)
    fast = cpd_scores(H, C, Y, ["a", "b"], probe_params={"criterion": "gcv"})
    # a projector parameter forces the direct path for R²_geom; rtol at its default changes nothing
    ref = cpd_scores(H, C, Y, ["a", "b"], probe_params={"criterion": "gcv"}, projector_params={"rtol": 1e-10})
    for f, r in zip(fast, ref):
        assert f.r2_geom == pytest.approx(r.r2_geom, abs=1e-9)
        assert f.settings["geom"]["alpha_per_fold"] == r.settings["geom"]["alpha_per_fold"]
        assert f.settings["geom"]["columns_dropped_constant"] == r.settings["geom"]["columns_dropped_constant"]
