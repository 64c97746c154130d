"""Debiased linear CKA: invariances, independence, the explicit n x n kernel formula, bad input."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from cpd_core.engine.cka import cka_matrix, linear_cka
from cpd_core.errors import CPDInputError


def _explicit(X, Y):
    """The unbiased HSIC estimator written with n x n kernel matrices (Song et al. 2012, eq. 5)."""
    def hsic(K, L):
        n = len(K)
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        one = np.ones(n)
        return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_rotated_rescaled_shifted_copy_is_one():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    Q = ortho_group.rvs(20, random_state=1)
    assert linear_cka(X, 3.7 * X @ Q + 5.0) == pytest.approx(1.0, abs=1e-6)


def test_independent_noise_is_near_zero():
    rng = np.random.default_rng(0)
    values = [linear_cka(rng.normal(size=(500, 30)), rng.normal(size=(500, 40))) for _ in range(5)]
    assert abs(np.mean(values)) < 0.01 and max(abs(v) for v in values) < 0.03


def test_matches_the_kernel_matrix_formula():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 5))
    Y = X[:, :3] @ rng.normal(size=(3, 8)) + 0.5 * rng.normal(size=(60, 8))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    assert linear_cka(X, Y) == pytest.approx(_explicit(Xc, Yc), rel=1e-10)


def test_shared_part_gives_an_intermediate_value_and_the_matrix_is_symmetric():
    rng = np.random.default_rng(3)
    shared = rng.normal(size=(400, 10))
    feats = {"a": shared, "b": np.hstack([shared, rng.normal(size=(400, 10))]), "c": rng.normal(size=(400, 10))}
    M = cka_matrix(feats, ["a", "b", "c"])
    assert np.allclose(M, M.T) and np.allclose(np.diag(M), 1)
    assert 0.3 < M[0, 1] < 0.95 and abs(M[0, 2]) < 0.05


def test_bad_input():
    with pytest.raises(CPDInputError, match="same structures"):
        linear_cka(np.zeros((10, 2)), np.zeros((11, 2)))
    with pytest.raises(CPDInputError, match="2-D"):
        linear_cka(np.zeros(10), np.zeros((10, 2)))
    with pytest.raises(CPDInputError, match="NaN"):
        linear_cka(np.full((10, 2), np.nan), np.zeros((10, 2)))
    assert np.isnan(linear_cka(np.ones((10, 2)), np.random.default_rng(0).normal(size=(10, 2))))
