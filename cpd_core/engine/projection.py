"""Composition projector: the part of a representation that is linear in composition, removed.

residual = H - P_[1|C] H, the least-squares projection of every column of H onto span([1 | C]), computed by a
thin column-pivoted QR of [1 | C] with a rank check, so absent (all-zero) or collinear element columns (e.g.
fractions, which sum to one like the intercept) are dropped instead of breaking the solve.

Fold-aware use (the default in `cpd_core.engine.scores`): fit on the training rows only, then apply the learned
coefficients to training and test rows. Transductive use fits on all rows.

Stage: engine (stage 4 of 5).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, TransformerMixin

from cpd_core.errors import CPDInputError


def _design(C: np.ndarray) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    if C.ndim == 1:
        C = C[:, None]
    if C.ndim != 2:
        raise CPDInputError(f"Composition must be a 2-D array (structures x elements), got shape {C.shape}.")
    return np.hstack([np.ones((len(C), 1)), C])


class CompositionProjector(BaseEstimator, TransformerMixin):
    """Remove the least-squares projection of H onto span([1 | C]).

    fit(C, H):          learn coefficients B (n_elements + 1, d) on these rows
    transform(H, C):    H - [1 | C] B; C defaults to the composition seen in `fit` (same rows)
    rank_, dropped_columns_ (indices into [1 | C]; 0 is the intercept), coef_ are set by fit.
    """

    def __init__(self, rtol: float = 1e-10, method: str = "qr", alpha: float = 1.0):
        self.rtol = rtol
        self.method = method
        self.alpha = alpha

    def fit(self, C, H):
        A = _design(C)
        H = np.asarray(H, dtype=np.float64)
        if H.ndim == 1:
            H = H[:, None]
        if len(A) != len(H):
            raise CPDInputError(f"Composition has {len(A)} rows but the features have {len(H)}; they must match.")
        self._C_fit = A[:, 1:]
        self.n_features_in_ = H.shape[1]
        if self.method == "ridge":
            return self._fit_ridge(A, H)
        if self.method != "qr":
            raise CPDInputError(f"Unknown projection method '{self.method}'; choose 'qr' or 'ridge'.")
        Q, R, piv = scipy.linalg.qr(A, mode="economic", pivoting=True)
        diag = np.abs(np.diag(R))
        rank = int(np.sum(diag > self.rtol * max(diag[0], 1e-300) * max(A.shape)))
        coef = np.zeros((A.shape[1], H.shape[1]))
        coef[piv[:rank]] = scipy.linalg.solve_triangular(R[:rank, :rank], Q[:, :rank].T @ H)
        self.coef_ = coef
        self.rank_ = rank
        self.dropped_columns_ = np.sort(piv[rank:])
        return self

    def _fit_ridge(self, A, H):
        """Ridge residualisation (a protocol variant, not the default): shrunken coefficients on the element
        columns, unpenalised intercept, so part of the linear composition signal stays in the residual."""
        C = A[:, 1:]
        c_mean, h_mean = C.mean(axis=0), H.mean(axis=0)
        Cc = C - c_mean
        coef = np.linalg.solve(Cc.T @ Cc + self.alpha * np.eye(C.shape[1]), Cc.T @ (H - h_mean))
        self.coef_ = np.vstack([h_mean - c_mean @ coef, coef])
        self.rank_ = int(np.linalg.matrix_rank(A))
        self.dropped_columns_ = np.array([], dtype=int)
        return self

    def transform(self, H, C=None):
        H = np.asarray(H, dtype=np.float64)
        squeeze = H.ndim == 1
        H2 = H[:, None] if squeeze else H
        A = _design(self._C_fit if C is None else C)
        if len(A) != len(H2):
            raise CPDInputError(
                f"Composition has {len(A)} rows but the features have {len(H2)}; pass the composition of the "
                "rows being transformed (transform(H, C))."
            )
        if A.shape[1] != self.coef_.shape[0]:
            raise CPDInputError(
                f"Composition has {A.shape[1] - 1} element columns but the projector was fitted with "
                f"{self.coef_.shape[0] - 1}; use the same element columns."
            )
        residual = H2 - A @ self.coef_
        return residual[:, 0] if squeeze else residual

    def fit_transform(self, C, H):
        return self.fit(C, H).transform(H)

    def composition_part(self, C) -> np.ndarray:
        """The fitted linear-in-composition part [1 | C] B for the given rows."""
        return _design(C) @ self.coef_


ERASERS = ("qr", "leace")


def make_projector(params: dict | None = None):
    """The composition eraser `params` asks for: CompositionProjector(**params), or LEACE for method 'leace'."""
    params = dict(params or {})
    if params.get("method") == "leace":
        from cpd_core.engine.leace import LeaceProjector

        return LeaceProjector()
    return CompositionProjector(**params)


def eraser_params(eraser: str) -> dict | None:
    """projector_params for an eraser name ('qr', the default, or 'leace')."""
    if eraser not in ERASERS:
        raise CPDInputError(f"Unknown eraser '{eraser}'; choose one of {ERASERS}.")
    return None if eraser == "qr" else {"method": "leace"}
