"""Ridge CPD for all folds from per-fold statistics: the same numbers as `RidgeProbe` in every fold, faster.

`cpd_scores` with the Ridge probe and fold-aware QR projection refits a scaler, a projector and a probe on the
training rows of every fold, for the full features and again for the residual: ten passes over the data per
feature set, each dominated by a Gram matrix. Here one pass computes, for every fold's block of rows, the column
means, the centred Gram matrix of [H | C | Y] and the column minima and maxima. Each fold's training statistics
are then the exact combination of the other blocks (Chan, Golub and LeVeque's pairwise update), and

- the full-feature fit standardises the training Gram matrix, drops training-constant columns, clips test values
  to the training range and picks alpha per target, exactly as `RidgeProbe` (via `ridge_cv_errors`);
- the residual fit uses the Gram matrix of H minus its least-squares projection on [1 | C]:
  G_RR = G_HH - G_CH^T G_CC^+ G_CH, recomputed from the explicit residual for the few columns that composition
  explains almost entirely (there the subtraction would lose digits).

GCV needs nothing but these d x d statistics. LOO also needs the hat diagonals, one (n_train, d) product per fold.
"""

from __future__ import annotations

import numpy as np

from cpd_core.probes import DEFAULT_ALPHAS, DEFAULT_CRITERION, ridge_cv_errors, varying_columns

# Columns whose residual variance is below this share of their variance are recomputed from the residual itself.
_CANCELLATION_SHARE = 1e-6


class _BlockStats:
    """Row count, column means, centred Gram matrix, minima and maxima of one block of rows of W = [H | C | Y]."""

    def __init__(self, W: np.ndarray):
        self.n = len(W)
        self.mean = W.mean(axis=0)
        centred = W - self.mean
        self.gram = centred.T @ centred
        self.low, self.high = W.min(axis=0), W.max(axis=0)


def _combine(blocks: list[_BlockStats]):
    """Exact count, mean and centred Gram matrix of the union of blocks (pairwise update of Chan et al.)."""
    n = sum(b.n for b in blocks)
    mean = sum(b.n * b.mean for b in blocks) / n
    gram = sum(b.gram for b in blocks)
    for b in blocks:
        delta = b.mean - mean
        gram = gram + b.n * np.outer(delta, delta)
    return n, mean, gram


class _FoldRows:
    """A matrix whose rows are ordered fold by fold, so a fold's test rows are a view and its training rows the
    rest; `train_product(M)` computes (training rows) @ M without copying the training rows."""

    def __init__(self, matrix: np.ndarray, bounds: list[tuple[int, int]], fold: int):
        self.matrix, (self.start, self.stop) = matrix, bounds[fold]
        self.n_train = len(matrix) - (self.stop - self.start)

    def test(self) -> np.ndarray:
        return self.matrix[self.start:self.stop]

    def train(self) -> np.ndarray:
        return np.concatenate([self.matrix[:self.start], self.matrix[self.stop:]])

    def train_extremes(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [part for part in (self.matrix[:self.start], self.matrix[self.stop:]) if len(part)]
        return (np.min([p.min(axis=0) for p in parts], axis=0), np.max([p.max(axis=0) for p in parts], axis=0))

    def train_product(self, M: np.ndarray) -> np.ndarray:
        out = np.empty((self.n_train, M.shape[1]))
        np.matmul(self.matrix[:self.start], M, out=out[:self.start])
        np.matmul(self.matrix[self.stop:], M, out=out[self.start:])
        return out


def _fit_and_predict(gram_xx, gram_xy, y_var, n, x_mean, x_std, low, high, alphas, criterion, rows: _FoldRows,
                     Y_train, y_mean):
    """Standardised Ridge with per-target alpha from training statistics; predictions for the test rows.

    rows holds the unscaled feature rows (training rows are only read for LOO). Returns predictions
    (n_test, t), the chosen alphas and the number of training-constant columns dropped.
    """
    keep = varying_columns(x_mean, x_std)
    y_std = np.where(y_var > 0, np.sqrt(y_var), 1.0)
    n_test = rows.stop - rows.start
    if not keep.any():
        return np.tile(y_mean, (n_test, 1)), np.full(len(y_mean), np.nan), int((~keep).sum())
    s = x_std[keep]
    K = gram_xx[np.ix_(keep, keep)] / np.outer(s, s)
    b = gram_xy[keep] / (s[:, None] * y_std[None, :])
    s2, V = np.linalg.eigh(K)
    s2 = np.clip(s2, 0, None)
    AtY = V.T @ b
    # Z V for rows X: (X[:, keep] - mean) / s @ V = X @ Vx - offset, with Vx zero on dropped columns
    Vx = np.zeros((len(keep), V.shape[1]))
    Vx[keep] = V / s[:, None]
    offset = x_mean[keep] @ Vx[keep]
    if criterion == "loo":
        A = rows.train_product(Vx) - offset
        Yc = (Y_train - y_mean) / y_std
        cv = ridge_cv_errors(s2, AtY, alphas, "loo", n, A=A, Y=Yc)
    else:
        cv = ridge_cv_errors(s2, AtY, alphas, "gcv", n, yy=n * y_var / y_std ** 2)
    best = cv.argmin(axis=0)
    coef = V @ (AtY / (s2[:, None] + alphas[best][None, :]))
    lo, hi = (low[keep] - x_mean[keep]) / s, (high[keep] - x_mean[keep]) / s
    test = rows.test()
    Z_test = np.clip(((test if keep.all() else test[:, keep]) - x_mean[keep]) / s, lo, hi)
    return Z_test @ coef * y_std + y_mean, alphas[best], int((~keep).sum())


def ridge_cpd_folds(H, C, Y, splits, parts=("full", "geom"), alphas=None, criterion: str = DEFAULT_CRITERION,
                    rtol: float = 1e-12):
    """Per-fold predictions of fold-aware Ridge CPD for every part in `parts` ('full', 'geom').

    H (n, d), C (n, k), Y (n, t) are clean float arrays; splits the (train, test) pairs, whose test sets must
    partition the rows (K-fold). Returns {part: [(test_index, predictions (n_test, t), alphas (t,), n_dropped)]}.
    """
    alphas = np.asarray(DEFAULT_ALPHAS if alphas is None else alphas, dtype=np.float64)
    order = np.concatenate([test for _, test in splits])
    if len(order) != len(H) or len(np.unique(order)) != len(H):
        raise ValueError("ridge_cpd_folds needs K-fold splits whose test sets partition the rows.")
    d, k = H.shape[1], C.shape[1]
    x, c, y = slice(0, d), slice(d, d + k), slice(d + k, None)
    W = np.hstack([H, C, Y])[order]                      # rows fold by fold: test rows are contiguous
    sizes = np.cumsum([0] + [len(test) for _, test in splits])
    bounds = list(zip(sizes[:-1], sizes[1:]))
    blocks = [_BlockStats(W[a:b]) for a, b in bounds]
    out = {part: [] for part in parts}
    for f, (_, test) in enumerate(splits):
        others = [blk for g, blk in enumerate(blocks) if g != f]
        n, mean, gram = _combine(others)
        Y_train = _FoldRows(W[:, y], bounds, f).train() if criterion == "loo" else None
        y_mean, y_var = mean[y], np.diag(gram)[y] / n
        if "full" in parts:
            low = np.min([blk.low[x] for blk in others], axis=0)
            high = np.max([blk.high[x] for blk in others], axis=0)
            std = np.sqrt(np.clip(np.diag(gram)[x], 0, None) / n)
            pred, chosen, dropped = _fit_and_predict(gram[x, x], gram[x, y], y_var, n, mean[x], std, low, high,
                                                     alphas, criterion, _FoldRows(W[:, x], bounds, f), Y_train,
                                                     y_mean)
            out["full"].append((test, pred, chosen, dropped))
        if "geom" in parts:
            out["geom"].append((test, *_geom_fold(W[:, x], W[:, c], bounds, f, n, mean, gram, x, c, y, y_mean,
                                                  y_var, alphas, criterion, Y_train, rtol)))
    return out


def _geom_fold(Hp, Cp, bounds, f, n, mean, gram, x, c, y, y_mean, y_var, alphas, criterion, Y_train, rtol):
    """One fold of the residual probe: project H on [1 | C] with training statistics, then fit Ridge."""
    evals, evecs = np.linalg.eigh(gram[c, c])
    rank = evals > rtol * max(evals.max(), 1e-300)
    pinv_cc = (evecs[:, rank] / evals[rank]) @ evecs[:, rank].T
    B = pinv_cc @ gram[c, x]                                     # (k, d) coefficients on centred composition
    residual = Cp @ B                                            # every row, with the training fit
    residual += mean[x] - mean[c] @ B
    np.subtract(Hp, residual, out=residual)
    rows = _FoldRows(residual, bounds, f)
    # over the training rows the residual has mean 0 (the intercept is in the fit) and this Gram matrix
    gram_rr = gram[x, x] - gram[c, x].T @ B
    gram_rr = (gram_rr + gram_rr.T) / 2
    lost = np.diag(gram_rr) < _CANCELLATION_SHARE * np.diag(gram[x, x])
    if lost.any():  # exact centred cross-products for columns composition explains almost entirely
        centred = rows.train()
        centred -= centred.mean(axis=0)
        exact = centred[:, lost].T @ centred
        gram_rr[lost, :] = exact
        gram_rr[:, lost] = exact.T
    low, high = rows.train_extremes()
    gram_ry = gram[x, y] - B.T @ gram[c, y]
    std = np.sqrt(np.clip(np.diag(gram_rr), 0, None) / n)
    return _fit_and_predict(gram_rr, gram_ry, y_var, n, np.zeros(len(std)), std, low, high, alphas, criterion,
                            rows, Y_train, y_mean)
