"""Sufficient statistics of blocks of rows, and Ridge's K-fold cross-validation error computed from them.

For rows W = [Z | Y] of one block: row count, column means and centred Gram matrix (plus minima and maxima).
Blocks combine exactly (the pairwise update of Chan, Golub and LeVeque, no subtraction), and an affine map of the
columns maps the statistics without touching the rows again. That is all centred Ridge needs: fitting on some
blocks and scoring on another is a d x d problem, whatever the number of rows.
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

    def subset(self, columns: np.ndarray, shift=0.0, scale=1.0) -> "BlockStats":
        """The statistics of (W[:, columns] - shift) / scale."""
        return BlockStats(self.n, (self.mean[columns] - shift) / scale,
                          self.gram[np.ix_(columns, columns)] / np.outer(scale, scale) if np.ndim(scale) else
                          self.gram[np.ix_(columns, columns)] / scale ** 2)

    def mapped(self, L: np.ndarray, shift: np.ndarray) -> "BlockStats":
        """The statistics of the columns (W - shift) @ L (minima and maxima are not carried over)."""
        return BlockStats(self.n, (self.mean - shift) @ L, L.T @ self.gram @ L)


def combine_blocks(blocks: list[BlockStats]) -> BlockStats:
    """Exact count, mean and centred Gram matrix of the union of blocks."""
    n = sum(b.n for b in blocks)
    mean = sum(b.n * b.mean for b in blocks) / n
    gram = sum(b.gram for b in blocks)
    for b in blocks:
        delta = b.mean - mean
        gram = gram + b.n * np.outer(delta, delta)
    return BlockStats(n, mean, gram)


def ridge_validation_sse(train: BlockStats, valid: list[BlockStats], d: int, alphas, feature_mean=None):
    """Fit Ridge on the rows summarised by `train` (statistics of [F | Y], d feature columns) for every alpha and
    return its sum of squared errors (n_alphas, t) on each block of `valid`.

    The fit is the one `RidgeProbe` makes: features standardised with the training statistics (columns constant
    there dropped; `feature_mean`, default the training mean, decides what counts as constant), centred targets,
    an unpenalised intercept. Validation rows are not clipped (their statistics are all there is). The error of a
    block with centred Gram G, means m (training means z0, y0) is
    G_yy - 2 b.G_zy + b.G_zz b + n (m_y - y0 - (m_z - z0) b)^2.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    variance = np.clip(np.diag(train.gram)[:d], 0, None) / train.n
    keep = varying_columns(train.mean[:d] if feature_mean is None else feature_mean, np.sqrt(variance))
    keep = slice(0, d) if keep.all() else np.flatnonzero(keep)   # a slice reads the Gram matrices without a copy
    s = np.sqrt(variance[keep])
    t = len(train.mean) - d
    k = len(s)
    if k:
        s2, V = np.linalg.eigh(_square(train.gram, keep) / np.outer(s, s))
        shrink = 1.0 / (np.clip(s2, 0, None)[:, None] + alphas[None, :])                   # (k, a)
        proj = V.T @ (train.gram[keep, d:] / s[:, None])                                   # (k, t)
        coef = (V @ (proj[:, None, :] * shrink[:, :, None]).reshape(k, -1)) / s[:, None]  # raw units
    else:
        coef = np.zeros((0, len(alphas) * t))
    out = []
    for block in valid:
        quad = np.einsum("ij,ij->j", coef, _square(block.gram, keep) @ coef).reshape(len(alphas), t)
        cross = np.einsum("iat,it->at", coef.reshape(k, len(alphas), t), block.gram[keep, d:])
        bias = (block.mean[d:] - train.mean[d:])[None, :] - (
            (block.mean[keep] - train.mean[keep]) @ coef).reshape(len(alphas), t)
        out.append(np.diag(block.gram[d:, d:])[None, :] - 2 * cross + quad + block.n * bias ** 2)
    return out


def _square(gram, keep):
    return gram[keep, keep] if isinstance(keep, slice) else gram[np.ix_(keep, keep)]


def kfold_ridge_errors(blocks: list[BlockStats], d: int, alphas) -> np.ndarray:
    """Mean squared validation error (n_alphas, t) of Ridge by K-fold CV over blocks of [Z | Y] statistics,
    each block one fold, each fit standardised on its own training blocks (as a scaler + Ridge pipeline)."""
    sse = sum(ridge_validation_sse(combine_blocks([b for i, b in enumerate(blocks) if i != v]), [valid], d,
                                   alphas)[0] for v, valid in enumerate(blocks))
    return sse / sum(b.n for b in blocks)
