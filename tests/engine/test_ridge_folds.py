"""The fold-statistics Ridge path gives the same predictions and alphas as refitting RidgeProbe in every fold."""

import numpy as np
import pytest

from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from cpd_core.engine.scores import _row_groups, cpd_scores, fold_indices
from cpd_core.engine.probes import DEFAULT_ALPHAS, FoldScaler, RidgeProbe
from cpd_core.engine.projection import CompositionProjector
from cpd_core.engine.ridge_folds import ridge_cpd_folds


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


def fold_groups(n, splits):
    groups = np.empty(n, dtype=int)
    for f, (_, test) in enumerate(splits):
        groups[test] = f
    return groups


def features(H, C, part, fit_rows, other_rows, projector_params=None):
    """H itself, or its residual after a projection fitted on fit_rows, for fit_rows and other_rows."""
    if part == "full":
        return H[fit_rows], H[other_rows]
    projector = CompositionProjector(**(projector_params or {})).fit(C[fit_rows], H[fit_rows])
    return projector.transform(H[fit_rows]), projector.transform(H[other_rows], C[other_rows])


def direct(H, C, Y, splits, part, criterion, alphas=None):
    """Refit scaler, projector and probe in every fold: the reference implementation for alpha chosen on the
    outer fit (LOO, GCV), and for K-fold CV of the full features (RidgeProbe's inner folds = the other folds)."""
    out = []
    groups = fold_groups(len(Y), splits)
    for train, test in splits:
        X_train, X_test = features(H, C, part, train, test)
        probe = RidgeProbe(alphas=alphas, criterion=criterion).fit(X_train, Y[train], groups=groups[train])
        out.append((probe.predict(X_test), probe.alpha_, probe.scaler_.n_dropped_))
    return out


def nested(H, C, Y, splits, groups, part, projector_params=None):
    """Brute-force nested CV of the whole pipeline: for every alpha and inner fold, refit projection, scaler
    and scikit-learn Ridge on the inner training rows and score the inner validation rows; then refit the
    pipeline on the outer training rows with each target's best alpha."""
    out = []
    for train, test in splits:
        sse = np.zeros((len(DEFAULT_ALPHAS), Y.shape[1]))
        for v in np.unique(groups[train]):
            fit_rows, valid_rows = train[groups[train] != v], train[groups[train] == v]
            X_fit, X_valid = features(H, C, part, fit_rows, valid_rows, projector_params)
            scaler = FoldScaler(clip=False).fit(X_fit)
            for i, alpha in enumerate(DEFAULT_ALPHAS):
                model = Ridge(alpha=alpha).fit(scaler.transform(X_fit), Y[fit_rows])
                sse[i] += ((model.predict(scaler.transform(X_valid)) - Y[valid_rows]) ** 2).sum(axis=0)
        best = DEFAULT_ALPHAS[sse.argmin(axis=0)]
        X_train, X_test = features(H, C, part, train, test, projector_params)
        probes = [RidgeProbe(alphas=[a]).fit(X_train, Y[train, j]) for j, a in enumerate(best)]
        out.append((np.column_stack([p.predict(X_test) for p in probes]), best, probes[0].scaler_.n_dropped_))
    return out


def assert_same(fast, reference):
    for (test, pred, alphas, dropped), (ref_pred, ref_alphas, ref_dropped) in zip(fast, reference):
        np.testing.assert_allclose(pred, ref_pred, rtol=1e-7, atol=1e-7 * np.abs(ref_pred).max())
        np.testing.assert_array_equal(alphas, ref_alphas)
        assert dropped == ref_dropped, (dropped, ref_dropped)


@pytest.mark.parametrize("criterion", ["kfold", "loo", "gcv"])
@pytest.mark.parametrize("fractions", [False, True])
def test_same_predictions_alphas_and_dropped_columns_as_refitting(criterion, fractions):
    H, C, Y = awkward_data(fractions=fractions)
    splits = fold_indices(len(Y), 5, seed=3)
    groups = fold_groups(len(Y), splits)
    fast = ridge_cpd_folds(H, C, Y, splits, groups, ("full", "geom"), criterion=criterion)
    assert_same(fast["full"], direct(H, C, Y, splits, "full", criterion))
    if criterion == "kfold":
        assert_same(fast["full"], nested(H, C, Y, splits, groups, "full"))
        assert_same(fast["geom"], nested(H, C, Y, splits, groups, "geom"))
    else:
        assert_same(fast["geom"], direct(H, C, Y, splits, "geom", criterion))


def test_a_fixed_split_uses_inner_folds_of_the_training_rows():
    H, C, Y = awkward_data(n=300, seed=1)
    splits = fold_indices(len(Y), split="fixed", seed=2)
    groups = _row_groups(len(Y), splits, seed=2)
    assert len(np.unique(groups)) == 6 and (groups[splits[0][1]] == -1).all()
    fast = ridge_cpd_folds(H, C, Y, splits, groups, ("full", "geom"))
    assert_same(fast["full"], nested(H, C, Y, splits, groups, "full"))
    assert_same(fast["geom"], nested(H, C, Y, splits, groups, "geom"))


def test_splits_must_be_unions_of_groups():
    H, C, Y = awkward_data(n=100)
    splits = fold_indices(len(Y), 5, seed=0)
    with pytest.raises(ValueError, match="groups"):
        ridge_cpd_folds(H, C, Y, splits, np.arange(len(Y)) % 5)


def test_geom_drops_the_column_that_is_exactly_linear_in_composition():
    H, C, Y = awkward_data()
    splits = fold_indices(len(Y), 5, seed=0)
    fast = ridge_cpd_folds(H, C, Y, splits, fold_groups(len(Y), splits), ("full", "geom"))
    full_dropped = [o[3] for o in fast["full"]]
    geom_dropped = [o[3] for o in fast["geom"]]
    assert all(g >= f + 1 for f, g in zip(full_dropped, geom_dropped))   # + the exactly linear column


@pytest.mark.parametrize("projector_params", [None, {"method": "ridge", "alpha": 3.0}])
def test_cpd_scores_default_is_nested_cv_of_the_whole_pipeline(projector_params):
    H, C, Y = awkward_data(n=300)
    results = cpd_scores(H, C, Y, ["a", "b"], projector_params=projector_params)
    splits = fold_indices(len(Y), 5, seed=0)
    reference = nested(H, C, Y, splits, fold_groups(len(Y), splits), "geom", projector_params)
    for j, result in enumerate(results):
        r2 = [r2_score(Y[test, j], pred[:, j]) for (_, test), (pred, _, _) in zip(splits, reference)]
        np.testing.assert_allclose(result.fold_scores["geom"], r2, atol=1e-9)
        assert result.settings["geom"]["criterion"] == "kfold"
        assert result.settings["geom"]["alpha_per_fold"] == [float(best[j]) for _, best, _ in reference]


@pytest.mark.parametrize("criterion", ["kfold", "loo", "gcv"])
def test_features_constant_over_all_rows_predict_the_training_mean(criterion):
    H, C, Y = awkward_data(n=120)
    H = np.column_stack([np.full(len(H), 2.5), np.zeros(len(H))])
    splits = fold_indices(len(Y), 5, seed=1)
    fast = ridge_cpd_folds(H, C, Y, splits, fold_groups(len(Y), splits), ("full", "geom"), criterion=criterion)
    for part in ("full", "geom"):
        for (test, pred, alphas, dropped), (train, _) in zip(fast[part], splits):
            np.testing.assert_allclose(pred, np.tile(Y[train].mean(axis=0), (len(test), 1)))
            assert dropped == 2 and np.isnan(alphas).all()
