"""chemiscope export: a .json.gz with every structure, the raw and residual maps, targets, counts and errors."""

import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cpd_core.cli import app
from cpd_core.errors import CPDInputError


def test_export_chemiscope_command(tmp_path):
    out = tmp_path / "map.json.gz"
    result = CliRunner().invoke(app, ["export-chemiscope", "--model", "ani2x-nets", "--dataset", "qm9", "--n", "80",
                                      "--target", "gap", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.load(gzip.open(out))
    assert len(data["structures"]) == 80
    props = data["properties"]
    for name in ("pca raw 1", "pca raw 2", "pca residual 1", "pca residual 2", "gap", "count_C",
                 "gap error (full)", "gap error (geom)"):
        assert len(props[name]["values"]) == 80, name
    full, geom = np.array(props["gap error (full)"]["values"]), np.array(props["gap error (geom)"]["values"])
    assert np.isfinite(full).all() and not np.allclose(full, geom)
    assert data["settings"]["map"]["x"]["property"] == "pca residual 1"
    assert data["settings"]["map"]["color"]["property"] == "gap"


def test_export_refuses_bad_choices(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["export-chemiscope", "--model", "ani2x-aev", "--dataset", "qm9", "--n", "40",
                              "--layer", "nope", "--out", str(tmp_path / "m.json.gz")])
    assert bad.exit_code == 2 and "no layer/channel nope/L0" in bad.stderr
    suffix = runner.invoke(app, ["export-chemiscope", "--model", "ani2x-aev", "--dataset", "qm9", "--n", "40",
                                 "--out", str(tmp_path / "m.json")])
    assert suffix.exit_code == 2 and ".json.gz" in suffix.stderr
    from cpd_core.data.qm9 import load_qm9
    from cpd_core.study.export import chemiscope_export

    with pytest.raises(CPDInputError, match="Features must be"):
        chemiscope_export(tmp_path / "x.json.gz", load_qm9(n=20, seed=0), np.zeros((5, 2)), "x")
