"""Ridge CPD for all folds from per-group statistics: every fit of a CPD grid from one pass over the data.

`cpd_scores` with the Ridge probe and a fold-aware projection fits, in every outer fold, a projection on the
training rows, a scaler and a Ridge whose alpha comes from cross-validation inside the training rows. Refitting
all of that row by row costs dozens of passes over the data per feature set. Here one pass computes, for every
group of rows, the column means, the centred Gram matrix of [H | C | Y] and the column minima and maxima
(`cpd_core.engine.block_stats`). Any union of groups then has exact statistics, and every fit is a small problem:

- full features: standardise with the fit rows' statistics (dropping constant columns), Ridge;
- residual: project H on [1 | C] with the fit rows' statistics (B = G_CC^+ G_CH, or the ridge variant), map every
  group's statistics through H - C B (G_RR = M^T G M, M = [I; -B]), then as above. Columns that composition
  explains almost entirely are recomputed from explicit residual rows, where the subtraction would lose digits.

Alpha by K-fold CV (the default) is nested CV of the whole pipeline: the inner folds are the training groups
(for K-fold splits: the other outer folds), and each inner fit refits projection, standardisation and Ridge on
its own rows. An inner training set is a union of groups, shared by two outer folds, so a 5-fold CPD needs 10
inner fits per part. LOO and GCV (`criterion`) select alpha on the outer fit alone; LOO also needs the hat
diagonals, one (n_train, d) product per fold. Test predictions clip to the training range, as `FoldScaler`.
Columns constant over all rows (an absent element's AEV terms) are set aside first: every fit drops them anyway.

Stage: engine (stage 4 of 5).
"""

from __future__ import annotations

import numpy as np

from cpd_core.engine.block_stats import (BlockStats, combine_blocks, combine_stacked, ridge_validation_sse,
                                         varying_columns)
from cpd_core.engine.probes import DEFAULT_ALPHAS, DEFAULT_CRITERION, ridge_cv_errors

# Columns whose residual variance is below this share of their variance are recomputed from the residual itself.
_CANCELLATION_SHARE = 1e-6
_CHUNK_VALUES = 2 ** 18  # values per step of a residual pass, few enough to stay in cache for minima and maxima


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


def projection_coefs(gram, mean, c, x, projector: dict) -> np.ndarray:
    """[B; b0] (..., k + 1, d): the least-squares (or ridge) fit of H on [C | 1] from the centred Gram matrices
    (..., D, D) and means (..., D) of its rows (stacks of fits at once)."""
    gram_cc, gram_cx = gram[..., c, c], gram[..., c, x]
    if projector.get("method", "qr") == "ridge":
        B = np.linalg.solve(gram_cc + projector.get("alpha", 1.0) * np.eye(gram_cc.shape[-1]), gram_cx)
    else:  # pseudo-inverse with a rank cut: absent or collinear elements drop out
        evals, evecs = np.linalg.eigh(gram_cc)
        rank = evals > projector.get("rtol", 1e-12) * np.maximum(evals.max(axis=-1, keepdims=True), 1e-300)
        inverse = np.divide(1.0, evals, out=np.zeros_like(evals), where=rank)
        B = np.matmul(evecs * inverse[..., None, :], np.matmul(evecs.swapaxes(-1, -2), gram_cx))
    intercept = mean[..., x] - np.matmul(mean[..., None, c], B)[..., 0, :]
    return np.concatenate([B, intercept[..., None, :]], axis=-2)


def _mapped(gram, mean, B, x, c, y):
    """Statistics of [F | Y] from those of [H | C | Y] (stacks allowed): F = H, or with B (..., k, d) the
    residual H - C B: G_FF = G_xx - P - P^T + B^T G_cc B with P = B^T G_cx, G_FY = G_xy - B^T G_cy."""
    if B is None:
        xy = np.r_[np.arange(x.stop), np.arange(y.start, gram.shape[-1])]
        return gram[..., xy[:, None], xy], mean[..., xy]
    d = x.stop
    Bt = B.swapaxes(-1, -2)
    P = np.matmul(Bt, gram[..., c, x])
    out = np.empty(gram.shape[:-2] + (gram.shape[-1] - (c.stop - c.start),) * 2)
    out[..., :d, :d] = gram[..., x, x] - P - P.swapaxes(-1, -2) + np.matmul(np.matmul(Bt, gram[..., c, c]), B)
    out[..., :d, d:] = gram[..., x, y] - np.matmul(Bt, gram[..., c, y])
    out[..., d:, :d] = out[..., :d, d:].swapaxes(-1, -2)
    out[..., d:, d:] = gram[..., y, y]
    return out, np.concatenate([mean[..., x] - np.matmul(mean[..., None, c], B)[..., 0, :], mean[..., y]], axis=-1)


class _PartFit:
    """The feature map of one fit on the groups `fit_ids`: H itself, or H minus its projection fitted there.

    `train` holds the statistics of [F | Y] over the fit rows, `valid[g]` those of each group in `valid_ids`,
    all centred at the fit rows' means. Residual columns that the subtraction would lose are recomputed from
    explicit residual rows."""

    def __init__(self, data: _GroupedRows, part: str, fit_ids, valid_ids, projector: dict):
        self.data, self.part = data, part
        fit = combine_blocks([data.stats[g] for g in fit_ids])
        self.shift = fit.mean
        self.B1 = projection_coefs(fit.gram, fit.mean, data.c, data.x, projector) if part == "geom" else None
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
        """Statistics of [F | Y] - shift."""
        B = None if self.B1 is None else self.B1[:-1]
        gram, mean = _mapped(stats.gram, stats.mean - self.shift, B, self.data.x, self.data.c, self.data.y)
        return BlockStats(stats.n, mean, gram)

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
    step = max(256, _CHUNK_VALUES // max(fit.data.d, 1))
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
    # columns constant over all rows are constant in every fit (and so is their residual): set them aside
    varying = H.min(axis=0) != H.max(axis=0)
    n_constant = int((~varying).sum())
    if n_constant:
        H = H[:, varying]
    data = _GroupedRows(H, C, Y, groups)
    sizes = np.array([b - a for a, b in data.bounds])
    group_of_row = np.empty(len(H), dtype=int)
    group_of_row[data.order] = np.repeat(np.arange(len(sizes)), sizes)
    residual = np.empty((len(H), data.d)) if "geom" in parts else None
    split_groups = []
    for train, test in splits:
        test_ids = [int(g) for g in np.unique(group_of_row[test])]
        if (sizes[test_ids].sum() != len(test) or len(train) + len(test) != len(H)
                or np.isin(group_of_row[train], test_ids).any()):
            raise ValueError("ridge_cpd_folds needs splits whose test sets are unions of whole groups.")
        split_groups.append((test_ids, [g for g in range(len(sizes)) if g not in test_ids]))
    out = {part: [] for part in parts}
    for part in parts:
        inner = _inner_errors(data, part, [train_ids for _, train_ids in split_groups], projector or {}, alphas) \
            if criterion == "kfold" and data.d else None
        for (train, test), (test_ids, train_ids) in zip(splits, split_groups):
            fit = _PartFit(data, part, train_ids, [], projector or {})
            cv = sum(inner[_without(train_ids, v)][v] for v in train_ids) / len(train) if inner else None
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
            out[part].append((data.order[test_rows], pred, chosen, dropped + n_constant))
    return out


def _without(ids, v) -> tuple:
    return tuple(g for g in ids if g != v)


def _inner_errors(data, part, training_sets, projector, alphas) -> dict:
    """{inner training groups: {group: validation error (n_alphas, t)}} for every inner fit the training sets
    need: the pipeline fitted on a training set without one group, scored on every group outside the fit
    (an inner training set serves every outer fold whose training set it completes).

    All inner fits of a part are computed as stacks (statistics, projections, maps, Ridge), a few dozen numpy
    calls in all; a fit with residual columns that need exact recomputation goes through `_PartFit`."""
    unions = sorted({_without(ids, v) for ids in training_sets for v in ids})
    n_groups = len(data.bounds)
    member = np.zeros((len(unions), n_groups), dtype=bool)
    for u, ids in enumerate(unions):
        member[u, list(ids)] = True
    sizes = np.array([s.n for s in data.stats])
    means = np.stack([s.mean for s in data.stats])                       # (G, D)
    grams = np.stack([s.gram for s in data.stats])                       # (G, D, D)
    n, mean, gram = combine_stacked(member, sizes, means, grams)         # every union's statistics
    B1 = projection_coefs(gram, mean, data.c, data.x, projector) if part == "geom" else None
    B = None if B1 is None else B1[:, :-1]
    train_gram, _ = _mapped(gram, np.zeros_like(mean), B, data.x, data.c, data.y)
    pairs = [(u, g) for u in range(len(unions)) for g in range(n_groups) if not member[u, g]]
    u_of, g_of = np.array([u for u, _ in pairs]), np.array([g for _, g in pairs])
    valid_gram, valid_mean = _mapped(grams[g_of], means[g_of] - mean[u_of], None if B is None else B[u_of],
                                     data.x, data.c, data.y)
    d = data.d
    lost = np.zeros(len(unions), dtype=bool)
    if part == "geom":
        lost = (np.diagonal(train_gram, axis1=1, axis2=2)[:, :d]
                < _CANCELLATION_SHARE * np.diagonal(gram, axis1=1, axis2=2)[:, data.x]).any(axis=1)
    fits, valid_groups = [], []
    t = data.t
    for u, ids in enumerate(unions):
        others = [g for g in range(n_groups) if not member[u, g]]
        if lost[u]:
            fit = _PartFit(data, part, ids, others, projector)
            fits.append((fit.train, [fit.valid[g] for g in others], fit.feature_mean))
        else:
            rows = [j for j, (uu, _) in enumerate(pairs) if uu == u]
            feature_mean = np.zeros(d) if part == "geom" else mean[u, data.x]
            fits.append((BlockStats(int(n[u]), np.zeros(d + t), train_gram[u]),
                         [BlockStats(int(sizes[g_of[j]]), valid_mean[j], valid_gram[j]) for j in rows],
                         feature_mean))
        valid_groups.append(others)
    errors = ridge_validation_sse(fits, d, alphas)
    return {fit_ids: dict(zip(groups, sse)) for fit_ids, groups, sse in zip(unions, valid_groups, errors)}


def _fit_and_predict(fit: _PartFit, train_ids, features, test_rows, low, high, alphas, criterion, cv):
    """Standardised Ridge with per-target alpha from the training groups' statistics; predictions for the
    test rows (`features` holds the unscaled feature rows F in group order), clipped to the training range.
    `cv` is the K-fold error per alpha and target; LOO and GCV compute theirs here from an eigendecomposition.
    Returns predictions (n_test, t), the chosen alphas and the number of training-constant columns dropped."""
    d = fit.data.d
    train = fit.train
    n = train.n
    variance = np.maximum(np.diag(train.gram), 0) / n
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
        for a in np.unique(best):  # one solve per distinct alpha (numpy's releases the GIL, scipy's does not)
            coef[:, best == a] = np.linalg.solve(K + alphas[a] * np.eye(len(K)), b[:, best == a])
    else:
        s2, V = np.linalg.eigh(K)
        s2 = np.maximum(s2, 0)
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
    raw = np.maximum(test[:, cols], low[cols])
    np.minimum(raw, high[cols], out=raw)
    raw -= x_mean[cols]
    return raw @ (coef / s[:, None]) * y_std + y_mean, alphas[best], int((~keep).sum())
