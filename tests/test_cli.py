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
def arrays(probe_arrays):
    return probe_arrays


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


def test_probe_fixed_split_and_gcv(arrays):
    result = runner.invoke(app, _probe_args(arrays, "--json", "--split", "fixed", "--criterion", "gcv"))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["split"] == "fixed" and out["r2_geom_std"] == 0.0 and out["r2_geom"] > 0.9
    assert out["settings"]["geom"]["criterion"] == "gcv" and len(out["settings"]["geom"]["alpha_per_fold"]) == 1


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


def test_models_json_lists_offline_models():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    for row in rows.values():
        assert {"id", "family", "elements", "offline", "layers"} <= row.keys()
    for model_id in ("ani2x-aev", "ani2x-nets", "mace-spice", "so3net-ani1x"):
        assert rows[model_id]["offline"] is True
    assert rows["mace-mp-0-medium"]["offline"] is False


def test_embed_input_file_rows_follow_input_order(tmp_path, isolated_cache_dir):
    import ase.io
    from ase.build import molecule

    frames = [molecule("H2O"), molecule("CH4"), molecule("CH3OH")]
    ase.io.write(tmp_path / "a.xyz", frames)
    ase.io.write(tmp_path / "b.xyz", frames[::-1])
    for name in ("a", "b"):
        result = runner.invoke(app, ["embed", "--model", "ani2x-aev", "--input", str(tmp_path / f"{name}.xyz"),
                                     "--out", str(tmp_path / f"{name}.npz"), "--pooling", "sum"])
        assert result.exit_code == 0, result.output
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["aev/L0"].shape == (3, 1008)
    np.testing.assert_allclose(a["aev/L0"], b["aev/L0"][::-1], rtol=1e-5)
    meta = json.loads(str(a["__meta__"]))
    assert meta["pooling"] == "sum" and meta["model"]["id"] == "ani2x-aev" and meta["n"] == 3


def test_embed_dataset_subset(tmp_path, isolated_cache_dir):
    result = runner.invoke(app, ["embed", "--model", "mace-spice", "--dataset", "qm9", "--n", "12", "--seed", "4",
                                 "--out", str(tmp_path / "m.npz")])
    assert result.exit_code == 0, result.output
    z = np.load(tmp_path / "m.npz")
    assert {"product_1/L0", "interaction_1_message/L1", "interaction_1_message/L3"} <= set(z.files)
    assert all(z[k].shape[0] == 12 for k in z.files if k != "__meta__")


def test_embed_unsupported_element_is_a_clear_error(tmp_path, isolated_cache_dir):
    import ase.io
    from ase.build import bulk

    ase.io.write(tmp_path / "si.extxyz", bulk("Si"))
    result = runner.invoke(app, ["embed", "--model", "ani2x-aev", "--input", str(tmp_path / "si.extxyz"),
                                 "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 2 and "Si" in result.stderr and "Traceback" not in result.output
    both = runner.invoke(app, ["embed", "--model", "ani2x-aev", "--out", str(tmp_path / "x.npz")])
    assert both.exit_code == 2 and "exactly one" in both.stderr


def test_embed_refuses_an_untrusted_model_file(tmp_path, monkeypatch, code_payload):
    """A `.model` file is a pickle: `embed` unpickles a user's file only with --trust-model-file."""
    from cpd_core.models.mace import TRUSTED_FILES_ENV

    monkeypatch.delenv(TRUSTED_FILES_ENV, raising=False)
    save, marker = code_payload
    model = save(tmp_path / "payload.model")
    args = ["embed", "--model", f"mace-file:{model}", "--dataset", "qm9", "--n", "10", "--out", str(tmp_path / "o.npz")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--trust-model-file" in result.output and not marker.exists()
    assert not (tmp_path / "o.npz").exists()
    result = CliRunner().invoke(app, args + ["--trust-model-file"])
    assert result.exit_code == 2 and "is not a MACE model" in result.output and marker.exists()
    result = CliRunner().invoke(app, ["embed", "--model", "ani2x-aev", "--dataset", "qm9", "--n", "10",
                                      "--out", str(tmp_path / "a.npz"), "--trust-model-file"])
    assert result.exit_code == 2 and "mace-file:<path> only" in result.output


def test_cka_command_writes_the_pair_table(tmp_path):
    import pandas as pd

    out = tmp_path / "cka.csv"
    result = runner.invoke(app, ["cka", "--models", "ani2x-aev,ani2x-nets", "--dataset", "qm9", "--n", "80",
                                 "--residual", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 16 and set(table.residual) == {True} and "across models CKA" in result.output
    bad = runner.invoke(app, ["cka", "--models", " , ", "--dataset", "qm9", "--n", "80", "--out", str(out)])
    assert bad.exit_code == 2 and "at least one model" in bad.stderr


def test_probe_with_the_leace_eraser(arrays):
    qr = json.loads(runner.invoke(app, _probe_args(arrays, "--json")).stdout)
    leace = runner.invoke(app, _probe_args(arrays, "--json", "--eraser", "leace"))
    assert leace.exit_code == 0, leace.output
    leace = json.loads(leace.stdout)
    assert leace["r2_geom"] > 0.9 and abs(leace["r2_geom"] - qr["r2_geom"]) < 0.03
    bad = runner.invoke(app, _probe_args(arrays, "--eraser", "svd"))
    assert bad.exit_code == 2 and "Unknown eraser" in bad.stderr


def test_embed_on_an_existing_dask_cluster(tmp_path, isolated_cache_dir):
    """`embed --scheduler tcp://...` sends the chunks to a running cluster; the arrays equal a one-process run."""
    from dask.distributed import LocalCluster

    serial, remote = tmp_path / "serial.npz", tmp_path / "remote.npz"
    args = ["embed", "--model", "ani2x-aev", "--dataset", "qm9", "--n", "40", "--seed", "3", "--chunk-size", "8"]
    assert runner.invoke(app, args + ["--out", str(serial)]).exit_code == 0
    import cpd_core.representations.cache as cache

    cache.clear_cache()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        result = runner.invoke(app, args + ["--scheduler", cluster.scheduler_address, "--out", str(remote)])
    assert result.exit_code == 0, result.output
    assert f"Dask: connected to {cluster.scheduler_address}" in result.stderr
    with np.load(serial) as a, np.load(remote) as b:
        for key in a.files:
            if key != "__meta__":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6)


def test_report_runs_on_the_named_dask_cluster(tmp_path, monkeypatch):
    """`report --workers N` runs the experiments inside an embedded N-worker cluster, and CPD_DASK_SCHEDULER
    sends them to an existing one: the experiments see it as the active client (extraction and grids use it)."""
    from dask.distributed import LocalCluster

    import cpd_core.study.report as report
    from cpd_core.cluster import active_client

    seen = []

    def fake_run_experiments(config, log, timings):
        client = active_client()
        seen.append(None if client is None else (client.scheduler.address, len(client.scheduler_info()["workers"])))
        return {}

    monkeypatch.setattr(report, "run_experiments", fake_run_experiments)
    monkeypatch.setattr(report, "write_report", lambda tables, config, out, *a: out / "report.md")
    args = ["report", "--size", "small", "--out", str(tmp_path), "--mp-models", ""]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, args + ["--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "Dask: local cluster of 2 worker processes" in result.stderr
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        monkeypatch.setenv("CPD_DASK_SCHEDULER", cluster.scheduler_address)
        assert runner.invoke(app, args).exit_code == 0
    assert seen[0] is None and seen[1][1] == 2 and seen[2] == (cluster.scheduler_address, 1)
    assert active_client() is None
    bad = runner.invoke(app, args + ["--workers", "0"])
    assert bad.exit_code == 2 and "--workers must be at least 1" in bad.stderr
