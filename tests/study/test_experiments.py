"""Each experiment of the paper runs end to end on a small QM9 subset with sane, well-formed tables."""

import numpy as np
import pandas as pd
import pytest

from cpd_core.study import experiments as E
from cpd_core.data.qm9 import load_qm9
from cpd_core.study.report import ReportConfig, claims, run_experiments, write_report

MODELS = ["ani2x-aev", "mace-spice"]


@pytest.fixture(scope="module")
def qm9():
    return load_qm9(n=250, seed=0)


@pytest.fixture(scope="module")
def table(qm9):
    return E.disentanglement(qm9, MODELS, ["gap", "dipole"], probes=("ridge",))


def _r2_sane(df, cols=("r2_full", "r2_comp", "r2_geom")):
    for col in cols:
        values = df[col].to_numpy()
        assert np.isfinite(values).all() and (values <= 1.0).all(), col


def test_disentanglement_table(table):
    assert {"model", "family", "layer", "depth", "channel", "target", "probe", "r2_full", "r2_comp", "r2_geom",
            "r2_geom_std", "n"} <= set(table.columns)
    assert set(table.model) == set(MODELS) and set(table.target) == {"gap", "dipole"}
    assert {"L0", "L1", "L2", "L3", "all"} <= set(table[table.model == "mace-spice"].channel)
    _r2_sane(table)
    best = E.best_layer(table)
    assert len(best) == 2 * 2 and (best.channel == "all").all()


def test_routing_table(table):
    routing = E.routing(table)
    assert set(routing.model) == {"mace-spice"}  # ANI's AEV is not equivariant
    assert {"L1", "L0"} <= set(routing.channel)
    _r2_sane(routing)


def test_tree_inflation(qm9):
    t = E.tree_inflation(qm9, ["ani2x-aev"], gbt_params={"max_iter": 60})
    assert set(t.probe) == {"ridge", "gbt", "mlp"} and set(t.target) == {"control_nonlinear", "control_mass"}
    _r2_sane(t, ("r2_geom",))
    mass = t[t.target == "control_mass"].set_index("probe").r2_geom
    assert mass["ridge"] < 0.1  # linear in counts: nothing linear is left in the residual


def test_sample_efficiency(qm9):
    t = E.sample_efficiency_exp(qm9, ["ani2x-aev"], "gap", sizes=(20, 60, 150), seeds=(0,))
    assert set(t["size"]) == {20, 60, 150} and {"model", "layer", "part", "r2"} <= set(t.columns)
    assert (t.r2 <= 1).all()


def test_pooling_ablation(qm9):
    t = E.pooling_ablation(qm9, ["ani2x-aev"], ["gap"])
    assert sorted(t.pooling) == ["mean", "sum"]
    _r2_sane(t)


def test_isomer_benchmark_composition_is_at_chance(qm9):
    pairs = E.isomer_pairs(qm9)
    assert len(pairs) > 20
    C = np.array([[qm9.atoms(i).get_chemical_formula() for i in p] for p in pairs[:20]])
    assert (C[:, 0] == C[:, 1]).all()
    t = E.isomer_benchmark(qm9, ["mace-spice"])
    acc = t.set_index("features").accuracy
    assert acc["composition projection"] == pytest.approx(0.5)
    assert ((t.accuracy >= 0) & (t.accuracy <= 1)).all()
    assert acc["residual"] > 0.5


def test_protocol_sensitivity(qm9):
    t = E.protocol_sensitivity(qm9, ["ani2x-aev"])
    assert len(t) == len(E.PROTOCOLS) and set(t.protocol) == set(E.PROTOCOLS)
    _r2_sane(t)


def test_task_alignment_with_two_models(qm9):
    t = E.task_alignment(qm9, {"demo": {"gap": "ani2x-aev", "U0": "mace-spice"}})
    assert list(t.trained_on) == ["gap", "U0"] and (t.r2_geom <= 1).all()


def test_report_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("CPD_CACHE_DIR", str(tmp_path / "cache"))
    config = ReportConfig(size="test", qm9_n=150, mp_n=40, qm9_models=["ani2x-aev"], mp_models=["sevennet-0"],
                          probes=("ridge",), sample_sizes=(30, 60))
    tables = run_experiments(config, log=lambda m: None)
    # Materials Project: 5-fold CV by default, and the paper's single fixed 80/20 split
    assert set(tables["disentanglement_mp"].split) == {"kfold"}
    fixed = tables["best_layer_mp_fixed_split"]
    assert set(fixed.split) == {"fixed"} and (fixed.r2_geom_std == 0).all() and len(fixed) == 4
    path = write_report(tables, config, tmp_path / "report", seconds=1.0)
    text = path.read_text()
    assert "## Claims" in text and "ANI-2x" in text
    assert (tmp_path / "report" / "report.html").read_text().count("<table") >= 3
    claim_table = pd.read_csv(tmp_path / "report" / "claims.csv")
    assert set(claim_table.holds) <= {"yes", "no", "n/a"}
    assert {"claim", "paper_v1", "paper_v2", "ours", "model", "protocol", "holds", "closer_to"} <= set(claim_table.columns)
    assert claims(tables).shape[0] >= 3
    # LEACE beside QR, layer similarity before and after composition removal, node-level CPD
    erasers = tables["eraser_comparison"]
    assert set(erasers.target) == {"gap", "dipole"} and erasers[["r2_geom_qr", "r2_geom_leace"]].notna().all().all()
    assert set(tables["layer_similarity"].residual) == {False, True}
    assert set(tables["node_level_summary"].target) == {"mulliken", "coordination", "centroid_distance"}
    assert "Eraser comparison (LEACE vs QR, summary)" in text and "Node level summary" in text
    assert (tmp_path / "report" / "layer_similarity.csv").is_file() and "## Layer similarity\n" not in text
    # a rerun reads the cached result tables instead of recomputing any experiment

    def must_not_run(*args, **kwargs):
        raise AssertionError("experiment recomputed although its result was cached")

    for name in ("disentanglement", "tree_inflation", "sample_efficiency_exp", "isomer_benchmark",
                 "protocol_sensitivity", "eraser_comparison", "layer_similarity"):
        monkeypatch.setattr(E, name, must_not_run)
    from cpd_core.study import node_level

    monkeypatch.setattr(node_level, "node_level", must_not_run)
    again = run_experiments(config, log=lambda m: None)
    pd.testing.assert_frame_equal(again["disentanglement_qm9"], tables["disentanglement_qm9"])


def test_a_model_that_lacks_an_element_runs_on_the_molecules_it_supports(qm9):
    from cpd_core.study.analysis import supported_subset

    subset, left_out = supported_subset(qm9, ["so3net-ani1x"])      # H, C, N, O only
    has_f = sum("F" in qm9.atoms(i).get_chemical_symbols() for i in range(len(qm9)))
    assert has_f > 0 and left_out == has_f and len(subset) == len(qm9) - has_f
    assert all(set(subset.atoms(i).get_chemical_symbols()) <= set("HCNO") for i in range(len(subset)))
    assert supported_subset(qm9, ["ani2x-aev"]) == (qm9, 0)
    small = qm9.subset(np.arange(60))
    table = E.disentanglement(small, ["so3net-ani1x"], ["gap"], probes=("ridge",))
    assert (table.n == len(supported_subset(small, ["so3net-ani1x"])[0])).all()


def test_the_ridge_alpha_criterion_reaches_the_engine(qm9):
    from unittest import mock

    from cpd_core.engine import scores
    from cpd_core.study import analysis

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("probe_params"))
        return cpd_grid(*args, **kwargs)

    cpd_grid = scores.cpd_grid
    with mock.patch.object(scores, "cpd_grid", spy):
        gcv = analysis.disentanglement(qm9, ["ani2x-aev"], ["gap"], criterion="gcv")
        analysis.disentanglement(qm9, ["ani2x-aev"], ["gap"], probe="mlp", criterion="gcv")
        default = analysis.disentanglement(qm9, ["ani2x-aev"], ["gap"])
    assert seen == [{"criterion": "gcv"}, None, None]
    assert len(gcv) == len(default) == 1
