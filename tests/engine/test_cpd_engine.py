"""Known-answer tests of the composition projector, the probes and the CPD scores on planted data."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cpd_core.engine.scores import composition_control_target, cpd_scores, fold_indices, sample_efficiency
from cpd_core.errors import CPDInputError
from cpd_core.engine.probes import DEFAULT_ALPHAS, FoldScaler, RidgeProbe, make_probe
from cpd_core.engine.projection import CompositionProjector


def test_projector_residual_is_orthogonal_to_composition(planted):
    C, H = planted["C"], planted["H"]
    residual = CompositionProjector().fit_transform(C, H)
    A = np.hstack([np.ones((len(C), 1)), C])
    assert np.abs(A.T @ residual).max() < 1e-6 * np.abs(H).max() * len(C)
    # projecting twice changes nothing
    np.testing.assert_allclose(CompositionProjector().fit_transform(C, residual), residual, atol=1e-8)


def test_projector_survives_absent_and_collinear_elements(planted):
    C = planted["C"]
    fractions = C / np.maximum(C.sum(axis=1, keepdims=True), 1)
    bad = np.hstack([C, np.zeros((len(C), 1)), 2 * C[:, :1]])   # absent element, duplicate column
    for comp in (bad, fractions[C.sum(axis=1) > 0]):
        H = planted["H"][: len(comp)]
        proj = CompositionProjector().fit(comp, H)
        assert proj.rank_ < comp.shape[1] + 1
        residual = proj.transform(H)
        assert np.isfinite(residual).all()
        A = np.hstack([np.ones((len(comp), 1)), comp])
        assert np.abs(A.T @ residual).max() < 1e-6 * np.abs(H).max() * len(comp)


def test_projector_fold_aware_applies_training_coefficients(planted):
    C, H = planted["C"], planted["H"]
    proj = CompositionProjector().fit(C[:400], H[:400])
    test_res = proj.transform(H[400:], C[400:])
    np.testing.assert_allclose(test_res, H[400:] - proj.composition_part(C[400:]))
    with pytest.raises(CPDInputError, match="rows"):
        proj.transform(H[400:])


def test_ridge_probe_kfold_matches_gridsearchcv_over_a_scaler_and_ridge_pipeline():
    rng = np.random.default_rng(1)
    for n, d in ((400, 30), (60, 120)):
        X = rng.normal(size=(n, d))
        y = X[:, :4].sum(axis=1) + 0.5 * rng.normal(size=n)
        ours = RidgeProbe(seed=7).fit(X, y)
        search = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": DEFAULT_ALPHAS},
                              cv=KFold(5, shuffle=True, random_state=7), scoring="neg_mean_squared_error").fit(X, y)
        assert ours.alpha_[0] == pytest.approx(search.best_params_["ridge__alpha"])
        mse = -search.cv_results_["mean_test_score"] / y.var()          # ours is in standardised target units
        np.testing.assert_allclose(ours.cv_mse_[:, 0], mse, rtol=1e-8)
        np.testing.assert_allclose(ours.predict(X), search.predict(X), atol=1e-8)


def test_ridge_probe_loo_matches_sklearn_ridgecv():
    rng = np.random.default_rng(1)
    for n, d in ((400, 30), (40, 120)):
        X = rng.normal(size=(n, d))
        y = X[:, :4].sum(axis=1) + 0.3 * rng.normal(size=n)
        ours = RidgeProbe(criterion="loo").fit(X, y)
        Z = StandardScaler().fit_transform(X)
        ref = RidgeCV(alphas=DEFAULT_ALPHAS).fit(Z, (y - y.mean()) / y.std())
        assert ours.alpha_[0] == pytest.approx(ref.alpha_)
        np.testing.assert_allclose(ours.predict(X), ref.predict(Z) * y.std() + y.mean(), atol=1e-8)


def test_fold_scaler_guards_rare_and_constant_columns():
    rng = np.random.default_rng(2)
    X_train = rng.normal(size=(200, 3))
    X_train[:, 1] = 0.0                   # constant in training
    X_train[:, 2] = 0.0
    X_train[0, 2] = 1e-3                  # non-zero in one training row only
    scaler = FoldScaler().fit(X_train)
    assert scaler.n_dropped_ == 1
    X_test = np.array([[0.0, 5.0, 3.0]])  # unseen values in the rare and constant columns
    Z = scaler.transform(X_test)
    assert np.abs(Z).max() <= np.abs(scaler.transform(X_train)).max() + 1e-12


def test_target_linear_in_geometry_is_readable_from_residual(planted):
    r = cpd_scores(planted["H"], planted["C"], planted["y_geom"], probe="ridge")[0]
    assert r.r2_geom > 0.95 and r.r2_full > 0.95
    assert r.r2_comp < 0.1


def test_target_linear_in_composition_is_removed(planted):
    r = cpd_scores(planted["H"], planted["C"], planted["y_comp"], probe="ridge", projection="fold")[0]
    assert r.r2_comp > 0.99
    assert abs(r.r2_geom) < 0.1


def test_trees_recover_nonlinear_composition_from_residuals(planted):
    linear = cpd_scores(planted["H"], planted["C"], planted["y_nonlinear"], probe="ridge")[0]
    trees = cpd_scores(planted["H"], planted["C"], planted["y_nonlinear"], probe="gbt", parts=("geom",),
                       probe_params={"max_iter": 100})[0]
    assert abs(linear.r2_geom) < 0.1
    assert trees.r2_geom > 0.6


def test_mlp_probe_runs_and_reads_geometry(planted):
    r = cpd_scores(planted["H"], planted["C"], planted["y_geom"], probe="mlp", parts=("geom",))[0]
    assert r.r2_geom > 0.7


def test_multi_target_matches_single_target(planted):
    Y = np.column_stack([planted["y_geom"], planted["y_comp"]])
    both = cpd_scores(planted["H"], planted["C"], Y, target_names=["geom", "comp"])
    single = cpd_scores(planted["H"], planted["C"], planted["y_comp"])[0]
    assert both[1].target == "comp"
    assert both[1].r2_geom == pytest.approx(single.r2_geom)
    assert len(both[0].settings["geom"]["alpha_per_fold"]) == 5


def test_folds_are_shuffled_and_seeded():
    a = fold_indices(100, 5, seed=0)
    b = fold_indices(100, 5, seed=0)
    c = fold_indices(100, 5, seed=1)
    assert all((x[1] == y[1]).all() for x, y in zip(a, b))
    assert not all((x[1] == y[1]).all() for x, y in zip(a, c))
    assert not (a[0][1] == np.arange(20)).all()


def test_unshuffled_folds_on_size_ordered_data_are_an_artefact(planted):
    """Rows sorted by a size-like quantity: unshuffled folds extrapolate and score far worse."""
    order = np.argsort(planted["C"].sum(axis=1))
    H, C, y = planted["H"][order], planted["C"][order], planted["y_comp"][order] + planted["y_geom"][order]
    shuffled = cpd_scores(H, C, y, parts=("full",))[0].r2_full
    unshuffled = cpd_scores(H, C, y, parts=("full",), shuffle=False)[0].r2_full
    assert shuffled > unshuffled


def test_transductive_projection_option(planted):
    r = cpd_scores(planted["H"], planted["C"], planted["y_geom"], projection="transductive")[0]
    assert r.projection == "transductive" and r.r2_geom > 0.95


def test_sample_efficiency_improves_with_size(planted):
    table = sample_efficiency(planted["H"], planted["C"], planted["y_geom"], sizes=[20, 100, 400], seeds=(0, 1))
    curve = table[table.part == "geom"].groupby("size").r2.mean()
    assert curve[400] > curve[20]
    assert set(table.columns) == {"target", "part", "size", "seed", "fold", "r2"}


def test_composition_control_targets(planted):
    elements = ["H", "C", "N", "O"]
    mass = composition_control_target(planted["C"] + 1, elements, "mass")
    assert mass[0] == pytest.approx((planted["C"][0] + 1) @ np.array([1.008, 12.011, 14.007, 15.999]))
    r = cpd_scores(planted["H"], planted["C"] + 1, mass)[0]
    assert r.r2_comp > 0.999 and abs(r.r2_geom) < 0.1
    with pytest.raises(CPDInputError):
        composition_control_target(planted["C"], elements, "unknown")


# ------------------------------------------------------------------ bad input
def test_nan_targets_are_dropped_and_counted(planted):
    y = planted["y_geom"].copy()
    y[[1, 5, 9]] = np.nan
    y[11] = np.inf
    r = cpd_scores(planted["H"], planted["C"], y)[0]
    assert r.n_dropped == 4 and r.n == len(y) - 4


def test_constant_target_is_rejected(planted):
    with pytest.raises(CPDInputError, match="constant"):
        cpd_scores(planted["H"], planted["C"], np.ones(len(planted["C"])))


def test_too_few_samples(planted):
    with pytest.raises(CPDInputError, match="Too few samples"):
        cpd_scores(planted["H"][:7], planted["C"][:7], planted["y_geom"][:7], folds=5)


def test_mismatched_rows(planted):
    with pytest.raises(CPDInputError, match="Row counts differ"):
        cpd_scores(planted["H"][:100], planted["C"], planted["y_geom"])


def test_single_column_composition_works(planted):
    r = cpd_scores(planted["H"], planted["C"][:, 0], planted["y_geom"])[0]
    assert np.isfinite(r.r2_geom) and r.r2_geom > 0.5


def test_nan_features_rejected(planted):
    H = planted["H"].copy()
    H[3, 2] = np.nan
    with pytest.raises(CPDInputError, match="NaN"):
        cpd_scores(H, planted["C"], planted["y_geom"])


def test_unknown_probe_and_projection(planted):
    with pytest.raises(CPDInputError, match="probe"):
        make_probe("forest")
    with pytest.raises(CPDInputError, match="projection"):
        cpd_scores(planted["H"], planted["C"], planted["y_geom"], projection="magic")


def test_ridge_gcv_matches_brute_force_generalised_cross_validation():
    rng = np.random.default_rng(4)
    n, d = 300, 40
    X = rng.normal(size=(n, d))
    y = X[:, :3].sum(axis=1) + 2.0 * rng.normal(size=n)
    probe = RidgeProbe(criterion="gcv").fit(X, y)
    Z = StandardScaler().fit_transform(X)
    ys = (y - y.mean()) / y.std()
    scores = []
    for alpha in DEFAULT_ALPHAS:
        hat = Z @ np.linalg.solve(Z.T @ Z + alpha * np.eye(d), Z.T)
        resid = ys - hat @ ys
        scores.append((resid @ resid) / n / (1 - (np.trace(hat) + 1) / n) ** 2)
    assert probe.alpha_[0] == pytest.approx(DEFAULT_ALPHAS[int(np.argmin(scores))])
    np.testing.assert_allclose(probe.cv_mse_[:, 0], scores, rtol=1e-8)
    with pytest.raises(CPDInputError, match="criterion"):
        RidgeProbe(criterion="aic").fit(X, y)


def test_fixed_split_holds_out_one_seeded_fifth(planted):
    (train, test), = fold_indices(500, seed=3, split="fixed")
    assert len(test) == 100 and len(train) == 400 and not set(train) & set(test)
    assert np.array_equal(test, fold_indices(500, seed=3, split="fixed")[0][1])        # seeded
    assert not np.array_equal(test, fold_indices(500, seed=4, split="fixed")[0][1])
    assert not np.array_equal(np.sort(test), np.arange(400, 500))                      # shuffled, not the tail
    fixed = cpd_scores(planted["H"], planted["C"], planted["y_geom"], split="fixed")[0]
    assert fixed.split == "fixed" and fixed.r2_geom_std == 0.0 and len(fixed.fold_scores["geom"]) == 1
    assert fixed.r2_geom > 0.95
    with pytest.raises(CPDInputError, match="Unknown split"):
        fold_indices(500, split="holdout")


def test_kfold_errors_from_statistics_and_from_rows_in_dual_form_agree():
    from cpd_core.engine.block_stats import BlockStats, kfold_ridge_errors
    from cpd_core.engine.probes import inner_fold_labels, kfold_ridge_errors_dual

    rng = np.random.default_rng(5)
    for n, d in ((40, 90), (200, 30)):
        Z = rng.normal(size=(n, d))
        Z[:, 3] = 1.0                                      # constant: dropped in every inner fit
        Z[:2, 4], Z[2:, 4] = 5.0, 0.0                      # constant in the inner fits that leave out rows 0, 1
        Y = np.column_stack([Z[:, :3].sum(axis=1) + rng.normal(size=n), rng.normal(size=n)])
        labels = inner_fold_labels(n, 5, seed=1)
        W = np.hstack([Z, Y])
        blocks = [BlockStats.from_rows(W[labels == g]) for g in np.unique(labels)]
        np.testing.assert_allclose(kfold_ridge_errors_dual(Z, Y, labels, DEFAULT_ALPHAS),
                                   kfold_ridge_errors(blocks, d, DEFAULT_ALPHAS), rtol=1e-8)
