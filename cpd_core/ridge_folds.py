"""Ridge CPD for all folds from per-group statistics: every fit of a CPD grid from one pass over the data.

`cpd_scores` with the Ridge probe and a fold-aware projection fits, in every outer fold, a projection on the
training rows, a scaler and a Ridge whose alpha comes from cross-validation inside the training rows. Refitting
all of that row by row costs dozens of passes over the data per feature set. Here one pass computes, for every
group of rows, the column means, the centred Gram matrix of [H | C | Y] and the column minima and maxima
(`cpd_core.block_stats`). Any union of groups then has exact statistics, and every fit is a small problem:

- full features: standardise with the fit rows' statistics (dropping constant columns), Ridge;
- residual: project H on [1 | C] with the fit rows' statistics (B = G_CC^+ G_CH, or the ridge variant), map every
  group's statistics through H - C B (G_RR = M^T G M, M = [I; -B]), then as above. Columns that composition
  explains almost entirely are recomputed from explicit residual rows, where the subtraction would lose digits.

Alpha by K-fold CV (the default) is nested CV of the whole pipeline: the inner folds are the training groups
(for K-fold splits: the other outer folds), and each inner fit refits projection, standardisation and Ridge on
its own rows. An inner training set is a union of groups, shared by two outer folds, so a 5-fold CPD needs 10
inner fits per part. LOO and GCV (`criterion`) select alpha on the outer fit alone; LOO also needs the hat
diagonals, one (n_train, d) product per fold. Test predictions clip to the training range, as `FoldScaler`.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from cpd_core.block_stats import BlockStats, combine_blocks, ridge_validation_sse, varying_columns
from cpd_core.probes import DEFAULT_ALPHAS, DEFAULT_CRITERION, ridge_cv_errors

# Columns whose residual variance is below this share of their variance are recomputed from the residual itself.
_CANCELLATION_SHARE = 1e-6
_CHUNK_VALUES = 2 ** 17  # values per step of a residual pass, few enough to stay in cache for minima and maxima


class _GroupedRows:
    """[H | C | Y] with rows ordered group by group, the statistics of every group, and the column slices."""

    def __init__(self, H, C, Y, groups):
        self.order = np.argsort(groups, kind="stable")
        _, starts = np.unique(np.asarray(groups)[self.order], return_index=True)
        self.bounds = list(zip(starts, list(starts[1:]) + [len(H)]))
        d, k = H.shape[1], C.shape[1]
        self.x, self.c, self.y = slice(0, d), slice(d, d + k), slice(d + k, None)
        self.d, self.t = d, Y.shape[1]
        self.H = H[self.order]                  # contiguous: residual passes read it faster than a strided view
        self.W = np.hstack([self.H, C[self.order], Y[self.order]])
        self.stats = [BlockStats.from_rows(self.W[a:b]) for a, b in self.bounds]
        self._C1 = None

    def rows(self, ids):
        """The rows of groups `ids` in group order: a slice where they are consecutive, else an index array."""
        ids = sorted(ids)
        if ids == list(range(ids[0], ids[-1] + 1)):
            return slice(self.bounds[ids[0]][0], self.bounds[ids[-1]][1])
        return np.concatenate([np.arange(*self.bounds[g]) for g in ids])

    @property
    def C1(self) -> np.ndarray:
        """[C | 1] in group order (the design of the projection with its intercept)."""
        if self._C1 is None:
            self._C1 = np.hstack([self.W[:, self.c], np.ones((len(self.W), 1))])
        return self._C1


def projection_coef(stats: BlockStats, c, x, projector: dict) -> np.ndarray:
    """[B; b0] ((k + 1) x d): the least-squares (or ridge) fit of H on [C | 1] from the statistics of its rows."""
    gram_cc = stats.gram[c, c]
    if projector.get("method", "qr") == "ridge":
        B = np.linalg.solve(gram_cc + projector.get("alpha", 1.0) * np.eye(len(gram_cc)), stats.gram[c, x])
    else:
        evals, evecs = np.linalg.eigh(gram_cc)
        rank = evals > projector.get("rtol", 1e-12) * max(evals.max(), 1e-300)
        B = ((evecs[:, rank] / evals[rank]) @ evecs[:, rank].T) @ stats.gram[c, x]
    return np.vstack([B, stats.mean[x] - stats.mean[c] @ B])


class _PartFit:
    """The feature map of one fit on the groups `fit_ids`: H itself, or H minus its projection fitted there.

    `train` holds the statistics of [F | Y] over the fit rows, `valid[g]` those of each group in `valid_ids`,
    all centred at the fit rows' means. Residual columns that the subtraction would lose are recomputed from
    explicit residual rows."""

    def __init__(self, data: _GroupedRows, part: str, fit_ids, valid_ids, projector: dict):
        self.data, self.part = data, part
        fit = combine_blocks([data.stats[g] for g in fit_ids])
        self.shift = fit.mean
        self.B1 = projection_coef(fit, data.c, data.x, projector) if part == "geom" else None
        # what the mapped features and targets add up to in row coordinates (explicit H rows, or residual rows)
        self.feature_offset = np.zeros(data.d) if part == "geom" else fit.mean[data.x]
        self.y_offset = fit.mean[data.y]
        self.feature_mean = self.feature_offset  # the fit rows' feature means (residuals have mean 0)
        self.train = self._map(fit)
        self.valid = {g: self._map(data.stats[g]) for g in valid_ids}
        if part == "geom":
            lost = np.diag(self.train.gram)[:data.d] < _CANCELLATION_SHARE * np.diag(fit.gram)[data.x]
            if lost.any():
                self.train = combine_blocks([self._exact_columns(g, self._map(data.stats[g]), lost)
                                             for g in fit_ids])
                self.valid = {g: self._exact_columns(g, stats, lost) for g, stats in self.valid.items()}

    def _map(self, stats: BlockStats) -> BlockStats:
        """Statistics of [F | Y] - shift: for the residual, G_FF = G_xx - P - P^T + B^T G_cc B, P = B^T G_cx."""
        x, c, y = self.data.x, self.data.c, self.data.y
        xy = np.r_[np.arange(self.data.d), np.arange(y.start, len(stats.mean))]
        mean = stats.mean - self.shift
        if self.part == "full":
            return BlockStats(stats.n, mean[xy], stats.gram[np.ix_(xy, xy)])
        B, G = self.B1[:-1], stats.gram
        P = B.T @ G[c, x]
        gram = np.empty((len(xy), len(xy)))
        d = self.data.d
        gram[:d, :d] = G[x, x] - P - P.T + B.T @ G[c, c] @ B
        gram[:d, d:] = G[x, y] - B.T @ G[c, y]
        gram[d:, :d] = gram[:d, d:].T
        gram[d:, d:] = G[y, y]
        return BlockStats(stats.n, np.concatenate([mean[x] - mean[c] @ B, mean[y]]), gram)

    def residual(self, a, b, out=None) -> np.ndarray:
        """Explicit residual rows a:b (group order), written into `out` when given."""
        out = np.matmul(self.data.C1[a:b], self.B1, out=out)
        return np.subtract(self.data.H[a:b], out, out=out)

    def _exact_columns(self, g, stats: BlockStats, lost) -> BlockStats:
        """Group g's statistics with the `lost` columns recomputed from its explicit residual rows."""
        d = self.data.d
        a, b = self.data.bounds[g]
        block = np.hstack([self.residual(a, b), self.data.W[a:b, self.data.y] - self.y_offset])
        mean = block.mean(axis=0)
        centred = block - mean
        exact = centred[:, :d][:, lost].T @ centred
        stats.mean[:d][lost] = mean[:d][lost]
        stats.gram[:d][lost] = exact
        stats.gram[:, :d][:, lost] = exact.T
        return stats


def _project_out(fit: _PartFit, out, train_ids) -> tuple[np.ndarray, np.ndarray]:
    """out = explicit residual of every row, in cache-sized chunks; returns its column minima and maxima over
    the training groups."""
    low, high = np.full(fit.data.d, np.inf), np.full(fit.data.d, -np.inf)
    step = max(256, _CHUNK_VALUES // fit.data.d)
    for g, (start, stop) in enumerate(fit.data.bounds):
        for a in range(start, stop, step):
            b = min(a + step, stop)
            chunk = fit.residual(a, b, out=out[a:b])
            if g in train_ids and b > a:
                np.minimum(low, chunk.min(axis=0), out=low)
                np.maximum(high, chunk.max(axis=0), out=high)
    return low, high


def ridge_cpd_folds(H, C, Y, splits, groups, parts=("full", "geom"), alphas=None,
                    criterion: str = DEFAULT_CRITERION, projector=None):
    """Per-split predictions of fold-aware Ridge CPD for every part in `parts` ('full', 'geom').

    H (n, d), C (n, k), Y (n, t) are clean float arrays; splits the (train, test) pairs; groups a label per row
    such that every test set is a union of whole groups and its training set the remaining rows. With
    criterion 'kfold' the training groups are the inner folds (for K-fold splits: the fold of each row).
    projector: CompositionProjector parameters ('method' 'qr' or 'ridge', 'alpha'). Returns
    {part: [(test_index, predictions (n_test, t), alphas (t,), n_dropped)]}.
    """
    alphas = np.asarray(DEFAULT_ALPHAS if alphas is None else alphas, dtype=np.float64)
    data = _GroupedRows(H, C, Y, groups)
    sizes = np.array([b - a for a, b in data.bounds])
    group_of_row = np.empty(len(H), dtype=int)
    group_of_row[data.order] = np.repeat(np.arange(len(sizes)), sizes)
    residual = np.empty((len(H), data.d)) if "geom" in parts else None
    inner_sse: dict = {}
    out = {part: [] for part in parts}
    for train, test in splits:
        test_ids = [int(g) for g in np.unique(group_of_row[test])]
        train_ids = [g for g in range(len(sizes)) if g not in test_ids]
        if (sizes[test_ids].sum() != len(test) or len(train) + len(test) != len(H)
                or np.isin(group_of_row[train], test_ids).any()):
            raise ValueError("ridge_cpd_folds needs splits whose test sets are unions of whole groups.")
        for part in parts:
            fit = _PartFit(data, part, train_ids, [], projector or {})
            if criterion == "kfold":
                cv = sum(_inner_sse(data, part, train_ids, v, projector or {}, alphas, inner_sse)
                         for v in train_ids) / len(train)
            else:
                cv = None
            test_rows = data.rows(test_ids)
            if part == "geom":
                low, high = _project_out(fit, residual, set(train_ids))
                features = residual
            else:
                low = np.min([data.stats[g].low[data.x] for g in train_ids], axis=0)
                high = np.max([data.stats[g].high[data.x] for g in train_ids], axis=0)
                features = data.H
            pred, chosen, dropped = _fit_and_predict(fit, train_ids, features, test_rows, low, high, alphas,
                                                     criterion, cv)
            out[part].append((data.order[test_rows], pred, chosen, dropped))
    return out


def _inner_sse(data, part, train_ids, v, projector, alphas, cache) -> np.ndarray:
    """Validation error on group v of the pipeline fitted on the other training groups (cached: the same inner
    training set serves two outer folds)."""
    fit_ids = tuple(g for g in train_ids if g != v)
    key = (part, fit_ids)
    if key not in cache:
        others = [g for g in range(len(data.bounds)) if g not in fit_ids]
        fit = _PartFit(data, part, fit_ids, others, projector)
        sse = ridge_validation_sse(fit.train, [fit.valid[g] for g in others], data.d, alphas, fit.feature_mean)
        cache[key] = dict(zip(others, sse))
    return cache[key][v]


def _fit_and_predict(fit: _PartFit, train_ids, features, test_rows, low, high, alphas, criterion, cv):
    """Standardised Ridge with per-target alpha from the training groups' statistics; predictions for the
    test rows (`features` holds the unscaled feature rows F in group order), clipped to the training range.
    `cv` is the K-fold error per alpha and target; LOO and GCV compute theirs here from an eigendecomposition.
    Returns predictions (n_test, t), the chosen alphas and the number of training-constant columns dropped."""
    d = fit.data.d
    train = fit.train
    n = train.n
    variance = np.clip(np.diag(train.gram), 0, None) / n
    keep = varying_columns(fit.feature_mean, np.sqrt(variance[:d]))
    x_mean, y_mean = train.mean[:d] + fit.feature_offset, train.mean[d:] + fit.y_offset
    y_std = np.where(variance[d:] > 0, np.sqrt(variance[d:]), 1.0)
    test = features[test_rows]
    if not keep.any():
        return np.tile(y_mean, (len(test), 1)), np.full(len(y_mean), np.nan), int((~keep).sum())
    cols = slice(None) if keep.all() else np.flatnonzero(keep)
    s = np.sqrt(variance[:d][cols])
    K = (train.gram[:d, :d] if keep.all() else train.gram[np.ix_(cols, cols)]) / np.outer(s, s)
    b = train.gram[:d, d:][cols] / np.outer(s, y_std)
    if criterion == "kfold":
        best = cv.argmin(axis=0)
        coef = np.empty_like(b)
        for a in np.unique(best):  # one solve per distinct alpha
            coef[:, best == a] = scipy.linalg.solve(K + alphas[a] * np.eye(len(K)), b[:, best == a],
                                                    assume_a="pos", check_finite=False)
    else:
        s2, V = np.linalg.eigh(K)
        s2 = np.clip(s2, 0, None)
        AtY = V.T @ b
        if criterion == "loo":
            train_rows = fit.data.rows(train_ids)
            A = (features[train_rows][:, cols] - x_mean[cols]) / s @ V
            Yc = (fit.data.W[train_rows, fit.data.y] - y_mean) / y_std
            cv = ridge_cv_errors(s2, AtY, alphas, "loo", n, A=A, Y=Yc)
        else:
            cv = ridge_cv_errors(s2, AtY, alphas, "gcv", n, yy=np.diag(train.gram)[d:] / y_std ** 2)
        best = cv.argmin(axis=0)
        coef = V @ (AtY / (s2[:, None] + alphas[best][None, :]))
    # clipping standardised values to the standardised training range = clipping raw values to the raw range
    raw = np.clip(test[:, cols], low[cols], high[cols])
    raw -= x_mean[cols]
    return raw @ (coef / s[:, None]) * y_std + y_mean, alphas[best], int((~keep).sum())
