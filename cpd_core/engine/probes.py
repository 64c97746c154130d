"""Probes behind one interface: Ridge with internal alpha selection, an MLP, and gradient-boosted trees.

Every probe is a scikit-learn regressor taking X (n, d) and Y (n, t) and standardises inside the fold:

- `FoldScaler` drops columns that are constant in the training rows and clips test values to the training
  range (after scaling). ANI-2x AEVs on QM9 have hundreds of columns that are zero, or non-zero in under 1% of
  molecules; standardising those without a guard sent Ridge R² to -16..-193 in a pilot.
- targets are standardised too (an MLP on the gap in eV otherwise gives negative R²).

`RidgeProbe` chooses alpha per target from a log grid on the training rows, by one of three criteria:

- 'kfold' (the default): K-fold cross-validation inside the training rows (nested CV, as GridSearchCV over a
  scaler + Ridge pipeline does: each inner fit is standardised on its own rows), computed from per-fold
  sufficient statistics (`cpd_core.engine.block_stats`): one d x d eigendecomposition per inner fold and no further
  pass over the rows (with fewer rows than columns, n x n kernels instead). Inside `cpd_scores` the inner folds
  are the other outer folds, which lets `cpd_core.engine.ridge_folds` derive every fit of a CPD grid, inner fits with
  their own projection included, from one pass over the data.
- 'loo': exact efficient leave-one-out (scikit-learn RidgeCV's criterion). It needs every hat diagonal, an
  (n x d) x (d x d) product per fit, which makes a grid of narrow CPD probes about 2.5x slower than 'kfold';
  on wide features (around 1,000 columns) it is the faster one.
- 'gcv': generalised cross-validation. Fast, but it replaces every leverage by their mean: where a few training
  rows have extreme leverage it can pick an almost unregularised fit that fails on test rows like them. Seen
  here: ANI-2x AEVs, transductive projection, 5,000 QM9 molecules: GCV chose alpha 0.1 in every fold and R²_geom
  was -519; LOO chose 5,456 and R²_geom was 0.33. Validation on held-out rows ('kfold', 'loo') sees such rows.

Stage: engine (stage 4 of 5).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor

from cpd_core.engine.block_stats import BlockStats, combine_blocks, kfold_ridge_errors, varying_columns
from cpd_core.errors import CPDInputError

PROBES = ("ridge", "mlp", "gbt")
# On standardised features alpha is comparable to n x (variance share); below 0.1 the LOO criterion sometimes
# picks an essentially unregularised fit that explodes on an unusual test structure (seen with MACE messages:
# fold R² of -2.9 at alpha 1e-3, +0.1 at alpha >= 0.1), while well-determined fits do not change.
DEFAULT_ALPHAS = np.logspace(-1, 5, 20)
DEFAULT_CRITERION = "kfold"
CRITERIA = ("kfold", "loo", "gcv")
DEFAULT_INNER_FOLDS = 5


class FoldScaler(BaseEstimator, TransformerMixin):
    """Standardise with training-row statistics; drop training-constant columns; clip to the training range."""

    def __init__(self, clip: bool = True):
        self.clip = clip

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.keep_ = varying_columns(mean, std)
        self.mean_, self.std_ = mean[self.keep_], std[self.keep_]
        Z = (X[:, self.keep_] - self.mean_) / self.std_
        self.low_, self.high_ = (Z.min(axis=0), Z.max(axis=0)) if len(Z) else (None, None)
        self.n_dropped_ = int((~self.keep_).sum())
        return self

    def transform(self, X):
        Z = (np.asarray(X, dtype=np.float64)[:, self.keep_] - self.mean_) / self.std_
        return np.clip(Z, self.low_, self.high_) if self.clip else Z


def inner_fold_labels(n: int, folds: int = DEFAULT_INNER_FOLDS, seed: int = 0) -> np.ndarray:
    """The default inner folds of alpha selection by K-fold CV: a shuffled, seeded KFold label per row."""
    labels = np.empty(n, dtype=int)
    for label, (_, rows) in enumerate(KFold(min(folds, n), shuffle=True, random_state=seed).split(np.arange(n))):
        labels[rows] = label
    return labels


def kfold_ridge_errors_dual(Z, Y, labels, alphas) -> np.ndarray:
    """The errors of `block_stats.kfold_ridge_errors` (standardisation refitted in each inner fold, centred Ridge)
    from the rows in dual form: each inner fit is an eigendecomposition of its n_fit x n_fit kernel, cheaper than
    the d x d statistics when there are fewer rows than columns."""
    alphas = np.asarray(alphas, dtype=np.float64)
    sse = 0.0
    for label in np.unique(labels):
        fit, valid = labels != label, labels == label
        mean, std = Z[fit].mean(axis=0), Z[fit].std(axis=0)
        keep = varying_columns(mean, std)
        Z_fit = (Z[fit][:, keep] - mean[keep]) / std[keep]
        Z_valid = (Z[valid][:, keep] - mean[keep]) / std[keep]
        y_mean = Y[fit].mean(axis=0)
        s2, U = np.linalg.eigh(Z_fit @ Z_fit.T)
        shrink = 1.0 / (np.maximum(s2, 0)[:, None] + alphas[None, :])               # (n_fit, a)
        weights = ((U.T @ (Y[fit] - y_mean))[:, None, :] * shrink[:, :, None]).reshape(len(s2), -1)
        pred = ((Z_valid @ Z_fit.T) @ U @ weights).reshape(int(valid.sum()), len(alphas), -1)
        sse = sse + ((pred + y_mean - Y[valid][:, None, :]) ** 2).sum(axis=0)
    return sse / len(Z)


def _as_2d(Y) -> tuple[np.ndarray, bool]:
    Y = np.asarray(Y, dtype=np.float64)
    return (Y[:, None], True) if Y.ndim == 1 else (Y, False)


class _StandardisedRegressor(BaseEstimator, RegressorMixin):
    """Base: scale X with FoldScaler and Y to zero mean, unit variance, then fit `_fit_scaled`."""

    def fit(self, X, Y, groups=None):
        """groups: optional fold labels for a probe that cross-validates inside the training rows."""
        Y, self._squeeze = _as_2d(Y)
        self.scaler_ = FoldScaler().fit(X)
        Z = self.scaler_.transform(X)
        self.y_mean_ = Y.mean(axis=0)
        self.y_std_ = np.where(Y.std(axis=0) > 0, Y.std(axis=0), 1.0)
        self._fit_scaled(Z, (Y - self.y_mean_) / self.y_std_, groups)
        return self

    def predict(self, X):
        P = self._predict_scaled(self.scaler_.transform(X)) * self.y_std_ + self.y_mean_
        return P[:, 0] if self._squeeze else P


def ridge_cv_errors(s2, AtY, alphas, criterion, n, yy=None, A=None, Y=None) -> np.ndarray:
    """Cross-validation error (n_alphas, t) of centred Ridge for every alpha, from an eigendecomposition.

    s2 (k,) eigenvalues of Z^T Z, AtY (k, t) the targets in the eigenbasis. 'gcv' needs only yy = ||Y||^2 per
    target; 'loo' needs A (n, k) with A A^T = Z Z^T and the centred targets Y (n, t). The intercept counts as one
    more parameter (Z and Y are centred), so both criteria match an uncentred fit with an unpenalised intercept.
    """
    W = 1.0 / (s2[:, None] + alphas[None, :])          # (k, n_alphas)
    if criterion == "gcv":
        # ||Y - fitted||^2 = ||Y||^2 - 2 sum w b^2 + sum s w^2 b^2, with b = A^T Y, w = 1/(s + alpha)
        b2 = AtY ** 2
        rss = np.asarray(yy)[None, :] - 2 * W.T @ b2 + (s2[:, None] * W ** 2).T @ b2
        trace = (s2[:, None] * W).sum(axis=0) + 1.0
        return rss / n / (1.0 - trace / n)[:, None] ** 2
    # LOO error = residual / (1 - hat diagonal); hat diagonals per alpha (n, n_alphas), 1/n the intercept's share
    weight = 1.0 / (1.0 - ((A * A) @ W + 1.0 / n)) ** 2
    # residuals for every alpha and target from one product: (n, n_alphas, t), squared in place
    errors = (A @ (AtY[:, None, :] * W[:, :, None]).reshape(len(s2), -1)).reshape(n, len(alphas), -1)
    errors -= Y[:, None, :]
    np.square(errors, out=errors)
    return np.einsum("nat,na->at", errors, weight) / n


class RidgeProbe(_StandardisedRegressor):
    """Ridge regression with alpha chosen per target over `alphas` on the training rows.

    criterion='kfold' (default): K-fold CV on the (standardised) training rows, each inner fit centred (its own
    intercept). The inner folds are `groups` passed to fit (rows with one label form a fold), else a shuffled
    KFold(inner_folds) seeded with `seed`.
    criterion='loo': exact efficient leave-one-out, the criterion of scikit-learn's RidgeCV.
    criterion='gcv': generalised cross-validation (Golub, Heath and Wahba 1979): LOO with every hat diagonal
    replaced by their mean; it needs only the d x d Gram matrix, but misjudges fits to high-leverage rows.
    After fit: alpha_ (t,) chosen alphas, cv_mse_ (n_alphas, t), coef_ (d_kept, t) in standardised units.
    """

    def __init__(self, alphas=None, criterion: str = DEFAULT_CRITERION, inner_folds: int = DEFAULT_INNER_FOLDS,
                 seed: int = 0):
        self.alphas = alphas
        self.criterion = criterion
        self.inner_folds = inner_folds
        self.seed = seed

    def _inner_labels(self, Z, groups) -> np.ndarray:
        """The inner fold of every training row."""
        groups = inner_fold_labels(len(Z), self.inner_folds, self.seed) if groups is None else np.asarray(groups)
        if len(groups) != len(Z):
            raise CPDInputError(f"{len(groups)} fold labels for {len(Z)} training rows.")
        if len(np.unique(groups)) < 2:
            raise CPDInputError("Alpha by K-fold CV needs at least 2 inner folds; give more rows or other groups.")
        return groups

    def _inner_blocks(self, Z, Y, groups) -> list[BlockStats]:
        """Statistics of [Z | Y] per inner fold."""
        labels = self._inner_labels(Z, groups)
        W = np.hstack([Z, Y])
        return [BlockStats.from_rows(W[labels == label]) for label in np.unique(labels)]

    def _fit_scaled(self, Z, Y, groups=None):
        alphas = np.asarray(DEFAULT_ALPHAS if self.alphas is None else self.alphas, dtype=np.float64)
        if self.criterion not in CRITERIA:
            raise CPDInputError(f"Unknown Ridge criterion '{self.criterion}'; choose one of {', '.join(CRITERIA)}.")
        n, d = Z.shape
        if d == 0:
            self.alpha_ = np.full(Y.shape[1], np.nan)
            self.coef_ = np.zeros((0, Y.shape[1]))
            return
        if self.criterion == "kfold" and n >= d:
            self._fit_kfold_from_statistics(Z, Y, groups, alphas)
            return
        # A (n, k) with A A^T = Z Z^T and A^T A = diag(s2); AtY = A^T Y
        if n >= d:
            s2, V = np.linalg.eigh(Z.T @ Z)
            A = Z @ V if self.criterion == "loo" else None
            AtY = V.T @ (Z.T @ Y)
        else:
            s2, U = np.linalg.eigh(Z @ Z.T)
            A = U * np.sqrt(np.clip(s2, 0, None))
            V = None
            AtY = A.T @ Y
        s2 = np.clip(s2, 0, None)
        if self.criterion == "kfold":  # fewer rows than columns: the inner fits in dual (n x n) form as well
            cv = kfold_ridge_errors_dual(Z, Y, self._inner_labels(Z, groups), alphas)
        else:
            cv = ridge_cv_errors(s2, AtY, alphas, self.criterion, n, yy=(Y ** 2).sum(axis=0), A=A, Y=Y)
        best = cv.argmin(axis=0)
        self.alpha_ = alphas[best]
        self.cv_mse_ = cv
        W = 1.0 / (s2[:, None] + alphas[None, :])
        G = AtY * W[:, best]                                 # (k, t): per-target alpha
        if V is not None:
            self.coef_ = V @ G
        else:  # dual form: beta = Z^T U diag(1/(s2+alpha)) U^T y = Z^T U (G / sqrt(s2))
            root = np.sqrt(s2)
            self.coef_ = Z.T @ (U @ np.divide(G, root[:, None], out=np.zeros_like(G), where=root[:, None] > 0))

    def _fit_kfold_from_statistics(self, Z, Y, groups, alphas):
        """Alpha by K-fold CV from per-fold statistics (d x d problems, for at least as many rows as columns);
        the final fit from their sum (Z and Y are centred), one linear solve per distinct alpha."""
        d = Z.shape[1]
        blocks = self._inner_blocks(Z, Y, groups)
        self.cv_mse_ = kfold_ridge_errors(blocks, d, alphas)
        best = self.cv_mse_.argmin(axis=0)
        self.alpha_ = alphas[best]
        total = combine_blocks(blocks)
        self.coef_ = np.empty((d, Y.shape[1]))
        for a in np.unique(best):
            self.coef_[:, best == a] = np.linalg.solve(total.gram[:d, :d] + alphas[a] * np.eye(d),
                                                       total.gram[:d, d:][:, best == a])

    def _predict_scaled(self, Z):
        return Z @ self.coef_


class MLPProbe(_StandardisedRegressor):
    """A small MLP (scikit-learn) with early stopping, on standardised features and targets."""

    def __init__(self, hidden=(128, 64), alpha=1e-3, max_iter=300, seed=0):
        self.hidden, self.alpha, self.max_iter, self.seed = hidden, alpha, max_iter, seed

    def _fit_scaled(self, Z, Y, groups=None):
        self.model_ = MLPRegressor(hidden_layer_sizes=self.hidden, alpha=self.alpha, max_iter=self.max_iter,
                                   early_stopping=True, n_iter_no_change=15, random_state=self.seed)
        self.model_.fit(Z, Y if Y.shape[1] > 1 else Y[:, 0])

    def _predict_scaled(self, Z):
        P = self.model_.predict(Z)
        return P[:, None] if P.ndim == 1 else P


class GBTProbe(_StandardisedRegressor):
    """Histogram gradient-boosted trees, one per target."""

    def __init__(self, max_iter=300, learning_rate=0.1, seed=0):
        self.max_iter, self.learning_rate, self.seed = max_iter, learning_rate, seed

    def _fit_scaled(self, Z, Y, groups=None):
        base = HistGradientBoostingRegressor(max_iter=self.max_iter, learning_rate=self.learning_rate,
                                             early_stopping=True, random_state=self.seed)
        self.models_ = [clone(base).fit(Z, Y[:, t]) for t in range(Y.shape[1])]

    def _predict_scaled(self, Z):
        return np.column_stack([m.predict(Z) for m in self.models_])


def make_probe(name: str, seed: int = 0, **params):
    """A fresh probe by name: 'ridge', 'mlp' or 'gbt'."""
    if name == "ridge":
        return RidgeProbe(seed=seed, **params)
    if name == "mlp":
        return MLPProbe(seed=seed, **params)
    if name == "gbt":
        return GBTProbe(seed=seed, **params)
    raise CPDInputError(f"Unknown probe '{name}'; choose one of {', '.join(PROBES)}.")


def ridge_params(probe: str, criterion: str | None) -> dict | None:
    """Probe parameters for a chosen Ridge alpha criterion (None: the probe's defaults; other probes ignore it)."""
    return {"criterion": criterion} if probe == "ridge" and criterion else None


def probe_settings(probe) -> dict:
    """What a fitted probe chose, for reporting (Ridge: alphas per target; others: their parameters)."""
    if isinstance(probe, RidgeProbe) and hasattr(probe, "alpha_"):
        return ridge_settings(probe.criterion, probe.alphas, probe.alpha_, probe.scaler_.n_dropped_)
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in probe.get_params().items()
                if k != "alphas"}
    if hasattr(probe, "scaler_"):
        settings["columns_dropped_constant"] = probe.scaler_.n_dropped_
    return settings


def ridge_settings(criterion: str, alphas, chosen, n_dropped: int) -> dict:
    """The settings record of one fitted Ridge probe (shared by RidgeProbe and the fold-statistics path)."""
    grid = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64)
    return {"criterion": criterion, "alpha_chosen": np.asarray(chosen).tolist(),
            "alpha_grid": [float(np.min(grid)), float(np.max(grid)), int(len(grid))],
            "columns_dropped_constant": int(n_dropped)}
