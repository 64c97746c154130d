"""LEACE as a second composition eraser: least-squares concept erasure (Belrose et al. 2023, the
`concept-erasure` package) with the element counts as the concept.

Where the QR projector removes from H the part explained by [1 | C] row by row (it needs each row's
composition), LEACE changes H as little as possible (in the whitened norm) so that no linear function of the
erased features predicts any element count better than a constant; it is a map of H alone. Like the projector it
is fitted on training rows only and then applied to training and test rows. The same interface as
`CompositionProjector` (fit(C, H), transform(H, C=None), fit_transform(C, H)), so the CPD engine can use either.

Stage: engine (stage 4 of 5).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from cpd_core.errors import CPDInputError


class LeaceProjector(BaseEstimator, TransformerMixin):
    """Erase the linear information about composition C from features H (LEACE, fitted on the rows given)."""

    def fit(self, C, H):
        import torch
        from concept_erasure import LeaceEraser

        C = np.asarray(C, dtype=np.float64)
        H = np.asarray(H, dtype=np.float64)
        C = C[:, None] if C.ndim == 1 else C
        H = H[:, None] if H.ndim == 1 else H
        if len(C) != len(H):
            raise CPDInputError(f"Composition has {len(C)} rows but the features have {len(H)}; they must match.")
        self.n_features_in_ = H.shape[1]
        self.eraser_ = LeaceEraser.fit(torch.from_numpy(H), torch.from_numpy(C))
        return self

    def transform(self, H, C=None):
        """The erased features (C is accepted for the projector's interface and not needed)."""
        import torch

        H = np.asarray(H, dtype=np.float64)
        squeeze = H.ndim == 1
        H2 = H[:, None] if squeeze else H
        if H2.shape[1] != self.n_features_in_:
            raise CPDInputError(f"The eraser was fitted on {self.n_features_in_} features, got {H2.shape[1]}.")
        out = self.eraser_(torch.from_numpy(H2)).numpy()
        return out[:, 0] if squeeze else out

    def fit_transform(self, C, H):
        return self.fit(C, H).transform(H)
