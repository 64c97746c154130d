"""Linear centred kernel alignment (CKA) between two representations of the same structures, debiased.

CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels K = X Xᵀ, L = Y Yᵀ and the unbiased
HSIC estimator (Song et al. 2012; used for CKA by Kornblith et al. 2019 and Nguyen et al. 2021). It is 1 for a
representation and any rotated, uniformly rescaled (and shifted) copy of it, and near 0 for independent ones;
the debiased estimator removes the positive bias the plain one has at small n or large width. Everything is
computed in feature space (X^T Y and row norms), so it costs O(n d d') time and no n x n matrix.

Stage: engine (stage 4 of 5).
"""

from __future__ import annotations

import numpy as np

from cpd_core.errors import CPDInputError


def _unbiased_hsic_terms(X: np.ndarray, Y: np.ndarray) -> float:
    """n (n - 3) times the unbiased HSIC of linear kernels of X and Y (the factor cancels in CKA)."""
    n = len(X)
    a, b = np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", Y, Y)  # the kernels' diagonals
    cross = float(np.sum((X.T @ Y) ** 2))                            # tr(K L)
    trace_term = cross - float(a @ b)                                # tr(K~ L~), diagonals zeroed
    k_row = X @ X.sum(axis=0) - a                                    # K~ 1
    l_row = Y @ Y.sum(axis=0) - b                                    # L~ 1
    sums = float(k_row.sum()) * float(l_row.sum()) / ((n - 1) * (n - 2))
    return trace_term + sums - 2.0 * float(k_row @ l_row) / (n - 2)


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Debiased linear CKA between (n, d) and (n, d') representations of the same n structures (rows)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2:
        raise CPDInputError(f"CKA needs 2-D representations (structures x features), got {X.shape} and {Y.shape}.")
    if len(X) != len(Y):
        raise CPDInputError(f"CKA compares representations of the same structures: {len(X)} rows vs {len(Y)}.")
    if len(X) < 4:
        raise CPDInputError(f"CKA needs at least 4 structures, got {len(X)}.")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise CPDInputError("CKA got NaN or infinite features; recompute or drop those structures.")
    X = X - X.mean(axis=0)  # centring does not change the estimator; it keeps the sums well conditioned
    Y = Y - Y.mean(axis=0)
    xy, xx, yy = _unbiased_hsic_terms(X, Y), _unbiased_hsic_terms(X, X), _unbiased_hsic_terms(Y, Y)
    if xx <= 0 or yy <= 0:  # a constant representation carries no structure to align
        return float("nan")
    return xy / np.sqrt(xx * yy)


def cka_matrix(features: dict, keys: list) -> np.ndarray:
    """Pairwise CKA of the (n, d) arrays features[k] for k in keys (symmetric, 1 on the diagonal)."""
    out = np.eye(len(keys))
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            out[i, j] = out[j, i] = linear_cka(features[keys[i]], features[keys[j]])
    return out
