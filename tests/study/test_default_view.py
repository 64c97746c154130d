"""The dashboard's first view: an equivariant model next to ANI-2x, and its representations precomputed."""

from __future__ import annotations

from typer.testing import CliRunner

from cpd_core.cli import app
from cpd_core.study import analysis, default_view


def test_the_first_view_has_an_equivariant_model_with_l_above_zero():
    assert "ani2x-aev" in default_view.MODELS
    assert any(analysis.is_equivariant(m) for m in default_view.MODELS)


def test_precompute_default_fills_the_cache(isolated_cache_dir, monkeypatch):
    from cpd_core.data import load_dataset
    from cpd_core.representations.cache import is_cached

    monkeypatch.setattr(default_view, "N", 30)
    structures = load_dataset(default_view.DATASET, n=30, seed=default_view.SEED)
    assert not any(is_cached(m, structures) for m in default_view.MODELS)
    result = CliRunner().invoke(app, ["precompute-default"])
    assert result.exit_code == 0, result.output
    assert all(is_cached(m, structures) for m in default_view.MODELS)
    assert "mace-spice: representations of 30 qm9 structures are cached" in result.output
