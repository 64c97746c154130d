"""Sufficient statistics of blocks of rows, and Ridge's K-fold cross-validation error computed from them.

For rows W = [Z | Y] of one block: row count, column means and centred Gram matrix (plus minima and maxima).
Blocks combine exactly (the pairwise update of Chan, Golub and LeVeque, no subtraction), and a linear map of the
columns (a projection's residual, a standardisation) maps the statistics without touching the rows again. That is
all centred Ridge needs: fitting on some blocks and scoring on another is a d x d problem, whatever the number of
rows.

Stage: engine (stage 4 of 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def varying_columns(mean, std) -> np.ndarray:
    """Columns whose spread is more than rounding noise (relative to their magnitude, at least 1)."""
    return std > 1e-10 * np.maximum(np.abs(mean), 1.0)


@dataclass
class BlockStats:
    """Row count, column means, centred Gram matrix (and, from rows, column minima and maxima) of a block."""

    n: int
    mean: np.ndarray
    gram: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def from_rows(cls, W: np.ndarray) -> "BlockStats":
        mean = W.mean(axis=0)
        centred = W - mean
        return cls(len(W), mean, centred.T @ centred, W.min(axis=0), W.max(axis=0))


def combine_stacked(member, counts, means, grams):
    """Exact counts (U,), means (U, D) and centred Gram matrices (U, D, D) of several unions of the same blocks at
    once; member (U, G) says which of the G blocks (counts (G,), means (G, D), grams (G, D, D)) each union holds."""
    weight = member * np.asarray(counts, dtype=np.float64)                   # (U, G)
    n = weight.sum(axis=1)
    mean = weight @ means / n[:, None]
    delta = means[None, :, :] - mean[:, None, :]                             # (U, G, D)
    gram = np.tensordot(member.astype(np.float64), grams, axes=1) + np.matmul(
        (delta * weight[:, :, None]).swapaxes(1, 2), delta)
    return n, mean, gram


def combine_blocks(blocks: list[BlockStats]) -> BlockStats:
    """Exact count, mean and centred Gram matrix of the union of blocks."""
    n, mean, gram = combine_stacked(np.ones((1, len(blocks)), dtype=bool), [b.n for b in blocks],
                                    np.stack([b.mean for b in blocks]), np.stack([b.gram for b in blocks]))
    return BlockStats(int(n[0]), mean[0], gram[0])


def ridge_validation_sse(fits, d: int, alphas) -> list[list[np.ndarray]]:
    """For each fit (train, valid, feature_mean): fit Ridge on the rows summarised by `train` (statistics of
    [F | Y], d feature columns) for every alpha and return its sum of squared errors (n_alphas, t) on each block
    of statistics in `valid`.

    The fit is the one `RidgeProbe` makes: features standardised with the training statistics (columns constant
    there dropped; `feature_mean`, None for the training mean, decides what counts as constant), centred
    targets, an unpenalised intercept. Validation rows are not clipped (their statistics are all there is). The
    error of a block with centred Gram G and means m (training means z0, y0) is
    G_yy - 2 b.G_zy + b.G_zz b + n (m_y - y0 - (m_z - z0) b)^2.
    All fits are solved together: one batched eigendecomposition and batched products, which keeps the Python
    overhead low and releases the GIL for long stretches (grids run feature sets in threads).
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    m, a, t = len(fits), len(alphas), len(fits[0][0].mean) - d
    keeps, scales = [], []
    for train, _, feature_mean in fits:
        variance = np.maximum(np.diag(train.gram)[:d], 0) / train.n
        keeps.append(varying_columns(train.mean[:d] if feature_mean is None else feature_mean, np.sqrt(variance)))
        scales.append(np.where(keeps[-1], np.sqrt(variance), 1.0))
    # columns constant in every fit (absent elements' AEV terms, say) leave the problem: smaller eigenproblems
    active = np.flatnonzero(np.any(keeps, axis=0))
    k = len(active)
    if k == d:
        active = slice(0, d)  # basic slicing: no copies
    K, b, scale = np.empty((m, k, k)), np.empty((m, k, t)), np.stack(scales)[:, active]
    for i, (train, _, _) in enumerate(fits):
        np.divide(_square(train.gram, active), np.outer(scale[i], scale[i]), out=K[i])
        np.divide(train.gram[active, d:], scale[i][:, None], out=b[i])
        dropped = ~keeps[i][active]
        if dropped.any():  # constant in this fit only: decoupled, unit diagonal, no target covariance -> 0
            K[i][dropped] = 0.0
            K[i][:, dropped] = 0.0
            K[i][dropped, dropped] = 1.0
            b[i][dropped] = 0.0
    s2, V = np.linalg.eigh(K)                                                   # (m, k), (m, k, k)
    shrink = 1.0 / (np.maximum(s2, 0)[:, :, None] + alphas[None, None, :])     # (m, k, a)
    proj = np.matmul(V.transpose(0, 2, 1), b)                                  # (m, k, t)
    coef = np.matmul(V, (proj[:, :, None, :] * shrink[:, :, :, None]).reshape(m, k, a * t))
    coef /= scale[:, :, None]                                                  # raw feature units
    for i, keep in enumerate(keeps):
        coef[i][~keep[active]] = 0.0
    pairs = [(i, block) for i, (_, valid, _) in enumerate(fits) for block in valid]
    C = coef[[i for i, _ in pairs]]                                            # (p, k, a*t)
    gram_zz = np.stack([_square(block.gram, active) for _, block in pairs])
    gram_zy = np.stack([block.gram[active, d:] for _, block in pairs])         # (p, k, t)
    quad = (C * np.matmul(gram_zz, C)).sum(axis=1).reshape(len(pairs), a, t)
    cross = (C.reshape(len(pairs), k, a, t) * gram_zy[:, :, None, :]).sum(axis=1)
    out = [[] for _ in fits]
    for j, (i, block) in enumerate(pairs):
        train = fits[i][0]
        shift = (block.mean[active] - train.mean[active]) @ C[j]
        bias = (block.mean[d:] - train.mean[d:])[None, :] - shift.reshape(a, t)
        out[i].append(np.diag(block.gram[d:, d:])[None, :] - 2 * cross[j] + quad[j] + block.n * bias ** 2)
    return out


def _square(gram, columns):
    return gram[columns, columns] if isinstance(columns, slice) else gram[np.ix_(columns, columns)]


def kfold_ridge_errors(blocks: list[BlockStats], d: int, alphas) -> np.ndarray:
    """Mean squared validation error (n_alphas, t) of Ridge by K-fold CV over blocks of [Z | Y] statistics,
    each block one fold, each fit standardised on its own training blocks (as a scaler + Ridge pipeline)."""
    n, mean, gram = combine_stacked(~np.eye(len(blocks), dtype=bool), [b.n for b in blocks],
                                    np.stack([b.mean for b in blocks]), np.stack([b.gram for b in blocks]))
    fits = [(BlockStats(int(n[v]), mean[v], gram[v]), [valid], None) for v, valid in enumerate(blocks)]
    return sum(sse for (sse,) in ridge_validation_sse(fits, d, alphas)) / sum(b.n for b in blocks)
