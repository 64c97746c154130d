"""The command line: JSON output of `probe`, `datasets`, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cpd_core.cli import app

runner = CliRunner()


@pytest.fixture
def arrays(tmp_path, planted):
    paths = {}
    for name, value in (("H", planted["H"]), ("C", planted["C"]), ("y", planted["y_geom"])):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], value)
    return paths


def _probe_args(p, *extra):
    return ["probe", "--features", str(p["H"]), "--composition", str(p["C"]), "--target", str(p["y"]), *extra]


def test_probe_json(arrays):
    result = runner.invoke(app, _probe_args(arrays, "--json", "--folds", "4", "--seed", "3"))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("r2_full", "r2_comp", "r2_geom", "r2_full_std", "r2_comp_std", "r2_geom_std", "n", "probe"):
        assert key in out
    assert out["n"] == 500 and out["probe"] == "ridge" and out["folds"] == 4 and out["seed"] == 3
    assert out["r2_geom"] > 0.9
    assert len(out["settings"]["geom"]["alpha_per_fold"]) == 4


def test_probe_as_module_subprocess(arrays):
    proc = subprocess.run([sys.executable, "-m", "cpd_core", *_probe_args(arrays, "--json", "--projection",
                                                                          "transductive")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["projection"] == "transductive"


def test_datasets_lists_qm9_and_mp():
    result = runner.invoke(app, ["datasets", "--json"])
    assert result.exit_code == 0
    names = {d["name"]: d for d in json.loads(result.stdout)}
    assert names["qm9"]["size"] == 130_831 and "gap" in names["qm9"]["targets"]
    assert "band_gap" in names["mp"]["targets"]


def test_probe_bad_inputs(arrays, tmp_path):
    missing = runner.invoke(app, ["probe", "--features", str(tmp_path / "nope.npy"), "--composition",
                                  str(arrays["C"]), "--target", str(arrays["y"])])
    assert missing.exit_code == 2 and "not found" in missing.stderr and "Traceback" not in missing.output
    short = tmp_path / "short.npy"
    np.save(short, np.arange(10.0))
    mismatch = runner.invoke(app, _probe_args({**arrays, "y": short}))
    assert mismatch.exit_code == 2 and "Row counts differ" in mismatch.stderr
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array")
    bad = runner.invoke(app, _probe_args({**arrays, "H": garbage}))
    assert bad.exit_code == 2 and "Could not read" in bad.stderr
    unknown = runner.invoke(app, _probe_args(arrays, "--probe", "forest"))
    assert unknown.exit_code == 2 and "Unknown probe" in unknown.stderr
