"""The claims table: the v1 abstract's and the revised paper's numbers beside ours, and the zoo pairs the
task-alignment step finds."""

from __future__ import annotations

import pandas as pd

from cpd_core.study.report import NOT_STATED, claims, zoo_pairs


def _tables():
    best = pd.DataFrame([
        dict(model=m, layer="l", probe="ridge", target="gap", r2_geom=v, r2_geom_std=0.01)
        for m, v in (("mace-qm9-gap", 0.45), ("mace-spice", 0.30), ("ani2x-aev", -0.5), ("painn-qm9-gap", 0.2))
    ] + [dict(model="ani2x-aev", layer="aev", probe="mlp", target="gap", r2_geom=0.7, r2_geom_std=0.02)])
    empty = pd.DataFrame(columns=["model", "target", "probe", "r2_geom", "part", "size", "r2", "features",
                                  "accuracy", "pooling", "channel"])
    task = pd.DataFrame([dict(architecture=a, trained_on=t, model=f"{a}-qm9-{t}", r2_geom=v)
                         for a, t, v in (("painn", "gap", 0.5), ("painn", "U0", 0.3), ("schnet", "gap", 0.1),
                                         ("schnet", "U0", 0.2))])
    return {"best_layer_qm9": best, "routing_qm9": empty, "tree_inflation": empty, "sample_efficiency": empty,
            "isomer_benchmark": empty, "pooling_ablation": empty, "task_alignment": task}


def test_claims_carry_both_paper_versions():
    table = claims(_tables()).set_index("claim")
    mace = table.loc["MACE trained on the QM9 gap keeps the gap linearly readable after composition removal"]
    assert (mace.paper_v1, mace.paper_v2, mace.closer_to) == ("R²_geom 0.782", "R²_geom 0.44", "v2")
    assert mace.ours.startswith("0.450")
    spread = table.loc["R²_geom for the gap spans a wide range across models"]
    assert spread.paper_v1 == NOT_STATED and "0.081 to 0.533" in spread.paper_v2 and "-0.500 to 0.450" in spread.ours
    ridge = table.loc["ANI-2x AEV, gap, RIDGE probe on the residual"]
    assert ridge.paper_v1 == "R²_geom -0.792" and ridge.paper_v2 == NOT_STATED and ridge.holds == "yes"
    painn = table.loc["painn: trained on the gap keeps more gap geometry than trained on the energy"]
    assert painn.paper_v2 == "gap-trained 0.53 vs energy-trained 0.31" and painn.holds == "yes"
    schnet = table.loc["schnet: trained on the gap keeps more gap geometry than trained on the energy"]
    assert schnet.paper_v2 == NOT_STATED and schnet.holds == "no"
    assert "MPtrj" in table.loc["A pretrained foundation MACE keeps gap geometry after composition removal"].paper_v2


def test_zoo_pairs_need_both_targets():
    ids = ["ani2x-aev", "painn-qm9-gap", "painn-qm9-U0", "dimenetpp-qm9-gap", "mace-qm9-U0", "mace-qm9-gap"]
    assert zoo_pairs(ids) == {"mace": {"gap": "mace-qm9-gap", "U0": "mace-qm9-U0"},
                              "painn": {"gap": "painn-qm9-gap", "U0": "painn-qm9-U0"}}
