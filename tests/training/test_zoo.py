"""The QM9 model zoo: shipped checkpoints reproduce their cards, register offline and extract features; the
training command runs end to end on a tiny subset and resumes."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cpd_core.cli import app
from cpd_core.paths import REPO_ROOT
from cpd_core.training.config import ARCHS, TARGETS

ZOO = REPO_ROOT / "zoo"
# five architectures x {gap, U0}, trained to the revised protocol (standard split, >= 20,000 training molecules,
# accuracy against the goal and the literature stated on the card)
SHIPPED = tuple(f"{arch}-qm9-{target}" for arch in ARCHS for target in TARGETS)


@pytest.fixture(scope="module")
def qm9():
    from cpd_core.data.qm9 import load_qm9

    return load_qm9()


def _rows(qm9, ids):
    row = {v: i for i, v in enumerate(qm9.table["id"].astype(str))}
    return [row[i] for i in ids]


def _atoms_by_id(qm9, ids):
    return qm9.to_atoms_list(_rows(qm9, ids))


def _card(model_id):
    folder = ZOO / model_id
    assert (folder / "card.json").is_file(), f"zoo model {model_id} is missing"
    return json.loads((folder / "card.json").read_text())


# ------------------------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize("model_id", SHIPPED)
def test_card_is_complete_and_beats_baseline(model_id):
    card = _card(model_id)
    m = card["metrics"]
    assert m["test_mae"] < 0.8 * m["baseline_test_mae"], m
    for key in ("arch", "hparams", "layers", "split", "training", "machine", "command", "reference", "readout"):
        assert key in card
    assert card["machine"]["device"] in ("cpu", "cuda")
    assert card["readout"] == ("mean" if card["target"] == "gap" else "sum")
    assert len(card["split"]["test_ids"]) == card["split"]["n_test"]
    assert card["command"].startswith("python -m cpd_core train")
    assert (ZOO / model_id / "CARD.md").is_file()
    weights = ZOO / model_id / ("model.model" if card["arch"] == "mace" else "model.pt")
    assert weights.stat().st_size < 8e6
    assert card["split"]["scheme_id"] == "standard" and card["split"]["n_train"] >= 20_000
    accuracy = card["accuracy"]
    assert accuracy["test_mae"] == m["test_mae"] and accuracy["goal_mae"] == {"gap": 0.15, "U0": 0.05}[card["target"]]
    assert ("literature_mae" in accuracy) == (card["arch"] in ("schnet", "painn", "dimenetpp"))
    assert accuracy["meets_goal"] or "needs more epochs" in accuracy["statement"]
    assert (ZOO / model_id / "train_state.pt").is_file()  # shipped: a later session continues the run


@pytest.mark.parametrize("model_id", SHIPPED)
def test_checkpoint_reproduces_card_predictions(model_id, qm9):
    from cpd_core.training import load_zoo_model

    card, predict = load_zoo_model(ZOO / model_id)
    ref = card["reference"]
    atoms = _atoms_by_id(qm9, ref["ids"])
    assert set(ref["ids"]) <= set(card["split"]["test_ids"])
    y = qm9.subset(_rows(qm9, ref["ids"])).target_values(card["target"])
    np.testing.assert_allclose(y, ref["targets"], atol=1e-4)
    pred = predict(atoms)
    np.testing.assert_allclose(pred, ref["predictions"], atol=2e-3, rtol=1e-5)
    # the card's test MAE on these 200 of its own test molecules, reproduced within 5%
    assert len(ref["ids"]) == 200
    assert abs(np.mean(np.abs(pred - y)) - ref["mae"]) <= 0.05 * ref["mae"]


def test_zoo_models_are_listed_offline():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.output)}
    for model_id in SHIPPED:
        assert model_id in rows, f"{model_id} not registered"
        assert rows[model_id]["offline"] is True
        assert rows[model_id]["layers"] == _card(model_id)["layers"]


@pytest.mark.parametrize("model_id", SHIPPED)
def test_zoo_adapter_extracts_features(model_id, qm9):
    from e3nn import o3

    from cpd_core.models import load_model

    adapter = load_model(model_id)
    atoms = _atoms_by_id(qm9, _card(model_id)["split"]["test_ids"][:3])
    feats = adapter.forward_batch(atoms)
    assert list(feats) == list(adapter.info.layers)
    n = sum(len(a) for a in atoms)
    for layer, irreps in adapter.info.layers.items():
        assert feats[layer].shape == (n, o3.Irreps(irreps).dim), layer
        assert np.isfinite(feats[layer]).all()
    if _card(model_id)["arch"] == "mace":  # hidden irreps with L=1: product_1 carries 1o channels
        assert "1o" in adapter.info.layers["product_1"]


# ------------------------------------------------------------------------------------------- training command
def _train(tmp_path, arch, target, epochs, name, *extra):
    out = tmp_path / name
    args = ["train", "--arch", arch, "--target", target, "--n-train", "24", "--epochs", str(epochs), "--seed", "3",
            "--out", str(out), "--n-val", "8", "--n-test", "8", "--batch-size", "8", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_tiny_and_resume(tmp_path, qm9):
    from cpd_core.training import load_zoo_model
    from cpd_core.training.data import standard_split

    out, log = _train(tmp_path, "schnet", "gap", 1, "run")
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["epochs_run"] == 1 and "resuming" not in log
    assert (out / "model.pt").is_file() and (out / "CARD.md").is_file() and (out / "train_state.pt").is_file()
    assert card["split"]["scheme_id"] == "standard" and "110,000" in card["split"]["scheme"]
    assert "--split" not in card["command"] and "--device" not in card["command"]
    # the split is the documented one and the baseline is least squares on counts + intercept over train
    train, val, test = standard_split(len(qm9), 24, 3, 8, 8)
    assert card["split"]["test_ids"] == qm9.table["id"].astype(str).to_numpy()[test].tolist()
    assert not set(train) & set(test) and not set(val) & set(test)
    from cpd_core.training.data import apply_composition, composition, fit_composition
    tr, te = qm9.subset(train), qm9.subset(test)
    coef = fit_composition(composition(tr), tr.target_values("gap"))
    base = np.mean(np.abs(apply_composition(composition(te), coef) - te.target_values("gap")))
    assert card["metrics"]["baseline_test_mae"] == pytest.approx(base, rel=1e-6)
    # rerunning with more epochs resumes after epoch 1
    out, log = _train(tmp_path, "schnet", "gap", 2, "run")
    card = json.loads((out / "card.json").read_text())
    assert "resuming after epoch 1" in log
    assert card["training"]["epochs_run"] == 2 and [h["epoch"] for h in card["training"]["history"]] == [1, 2]
    # the saved checkpoint reproduces the card
    _, predict = load_zoo_model(out)
    pred = predict(_atoms_by_id(qm9, card["reference"]["ids"]))
    np.testing.assert_allclose(pred, card["reference"]["predictions"], atol=1e-4)


@pytest.mark.parametrize("arch,target", [("mace", "U0"), ("visnet", "gap"), ("painn", "U0"), ("dimenetpp", "gap")])
def test_train_tiny_other_archs(tmp_path, qm9, arch, target):
    from cpd_core.training import load_zoo_model

    out, _ = _train(tmp_path, arch, target, 1, f"{arch}-{target}")
    card = json.loads((out / "card.json").read_text())
    assert card["arch"] == arch and card["readout"] == ("sum" if target == "U0" else "mean")
    assert "statement" in card["accuracy"] and "Accuracy against the literature" in (out / "CARD.md").read_text()
    _, predict = load_zoo_model(out)
    pred = predict(_atoms_by_id(qm9, card["reference"]["ids"]))
    np.testing.assert_allclose(pred, card["reference"]["predictions"], atol=1e-3, rtol=1e-6)
    if arch != "mace":  # the folder registers as an adapter whose layers are the card's
        from cpd_core.models import pyg

        adapter = pyg.load_checkpoint(out, device="cpu")
        assert adapter.info.layers == card["layers"] and adapter.info.family


def test_every_invocation_trains_at_least_one_epoch(tmp_path, qm9):
    """--max-minutes bounds one invocation, but each runs at least one epoch, even when the last epoch took longer
    than the limit (else a rerun of a slow model would never advance)."""
    out, _ = _train(tmp_path, "schnet", "gap", 5, "slices", "--max-minutes", "0.0001")
    assert json.loads((out / "card.json").read_text())["training"]["epochs_run"] == 1
    out, log = _train(tmp_path, "schnet", "gap", 5, "slices", "--max-minutes", "0.0001")
    card = json.loads((out / "card.json").read_text())
    assert "resuming after epoch 1" in log and card["training"]["epochs_run"] == 2
    assert card["training"]["stopped_by"].startswith("time limit")


def test_standard_split_pools_are_fixed_and_nested(qm9):
    from cpd_core.training.data import standard_split

    small = standard_split(len(qm9), 1000, 0, 100, 200)
    large = standard_split(len(qm9), 20000, 0, 1000, 2000)
    full = standard_split(len(qm9), 110_000, 0)
    assert [len(x) for x in full] == [110_000, 10_000, len(qm9) - 120_000]
    for part in range(3):  # a larger run extends a smaller one on the same seed
        assert set(small[part]) <= set(large[part]) <= set(full[part])
    assert not set(full[0]) & set(full[2]) and not set(full[1]) & set(full[2]) and not set(full[0]) & set(full[1])


def test_random_split_and_device_options(tmp_path, qm9):
    from cpd_core.training.data import split_indices

    out, _ = _train(tmp_path, "schnet", "gap", 1, "random", "--split", "random")
    card = json.loads((out / "card.json").read_text())
    assert card["split"]["scheme_id"] == "random" and "--split random" in card["command"]
    test = split_indices(len(qm9), 24, 3, 8, 8)[2]
    assert card["split"]["test_ids"] == qm9.table["id"].astype(str).to_numpy()[test].tolist()
    import torch

    if not torch.cuda.is_available():
        result = CliRunner().invoke(app, ["train", "--arch", "schnet", "--target", "gap", "--n-train", "24",
                                          "--epochs", "1", "--out", str(tmp_path / "gpu"), "--device", "cuda"])
        assert result.exit_code == 2 and "no CUDA device" in result.output, result.output
        assert not (tmp_path / "gpu" / "card.json").exists()
    result = CliRunner().invoke(app, ["train", "--arch", "schnet", "--target", "gap", "--n-train", "200000",
                                      "--epochs", "1", "--out", str(tmp_path / "big")])
    assert result.exit_code == 2 and "standard split" in result.output, result.output


def test_a_training_state_is_read_without_unpickling_code(tmp_path, qm9, code_payload):
    """train_state.pt is loaded with weights_only=True: a file carrying code is refused, the code never runs."""
    save, marker = code_payload
    out = tmp_path / "run"
    out.mkdir()
    save(out / "train_state.pt", {"arch": "schnet"})
    args = ["train", "--arch", "schnet", "--target", "gap", "--n-train", "24", "--epochs", "1", "--seed", "3",
            "--out", str(out), "--n-val", "8", "--n-test", "8", "--batch-size", "8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Delete it to start training afresh" in result.output, result.output
    assert not marker.exists()


def test_full_report_aligns_tasks_for_all_five_architectures():
    """The full report's task-alignment step pairs gap- and U0-trained models of every architecture; the committed
    report was made with all of them."""
    import pandas as pd

    from cpd_core.study.report import ReportConfig, zoo_pairs

    assert sorted(zoo_pairs(ReportConfig.preset("full").qm9_models)) == sorted(ARCHS)
    table = pd.read_csv(REPO_ROOT / "reports" / "full" / "task_alignment.csv")
    assert sorted(set(table["architecture"])) == sorted(ARCHS) and len(table) == 2 * len(ARCHS)
    assert set(table["model"]) == set(SHIPPED)
