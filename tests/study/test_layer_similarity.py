"""Layer similarity (CKA) tables on real representations: shape, symmetry, and composition removal."""

import numpy as np
import pytest

from cpd_core.data.qm9 import load_qm9
from cpd_core.study import analysis


@pytest.fixture(scope="module")
def qm9():
    return load_qm9(n=150, seed=2)


def test_layer_similarity_table(qm9):
    raw = analysis.layer_similarity(qm9, ["ani2x-aev", "ani2x-nets"])
    layers = [("ani2x-aev", "aev")] + [("ani2x-nets", layer) for layer in analysis.layer_depths("ani2x-nets")]
    assert len(raw) == len(layers) ** 2
    M = raw.pivot_table(index=["model_a", "layer_a"], columns=["model_b", "layer_b"], values="cka")
    assert np.allclose(M.to_numpy(), M.to_numpy().T) and np.allclose(np.diag(M.to_numpy()), 1)
    consecutive = raw[(raw.model_a == "ani2x-nets") & (raw.model_b == "ani2x-nets") & (raw.depth_b == raw.depth_a + 1)]
    assert (consecutive.cka > 0.5).all()  # neighbouring layers of one network are alike
    residual = analysis.layer_similarity(qm9, ["ani2x-aev", "ani2x-nets"], residual=True)
    assert set(residual.residual) == {True} and set(raw.residual) == {False}
    off = lambda t: t[(t.model_a != t.model_b)].cka.to_numpy()  # noqa: E731
    assert not np.allclose(off(raw), off(residual))  # removing composition changes cross-model similarity
