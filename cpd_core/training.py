"""Train MACE, ViSNet or SchNet directly on one QM9 target (the model zoo): `python -m cpd_core train ...`.

- Split: a fixed permutation of all of QM9 by `seed`; test = the first n_test molecules, validation the next
  n_val, training the next n_train (n_val = n_test = max(10% of n_train, 100) unless given). The test molecules
  are only evaluated once, after training, with the best-on-validation weights.
- Loss: property only (L1 on the target standardised by the training std; no forces).
- Readout: intensive targets (gap) use a MEAN over atoms, extensive ones (U0) a SUM. For U0 a per-element linear
  reference (least squares on element counts, fitted on the training split) is built into the model (MACE's E0s,
  SchNet/ViSNet's `atomref`) and the network learns the residual. For the gap the training mean is the offset.
- Baseline: least squares on element counts + intercept fitted on the training split, evaluated on the same test
  split; the card reports it next to the model's test MAE.
- Resume: a training state (model, optimiser, scheduler, epoch, best validation MAE and weights, rng states) is
  written atomically to `<out>/train_state.pt` after every epoch; rerunning the same command (possibly with more
  epochs) continues after the last saved epoch. The final checkpoint and card are written when training ends.
- Output (`<out>` = `zoo/<model-id>/`): SchNet/ViSNet follow `cpd_core.models.pyg.save_checkpoint` (model.pt =
  state dict, card.json with arch + hparams), so they auto-register; MACE is saved as a pickled mace-torch module
  `model.model` (torch.save(model)) with card.json (arch "mace"), registered by `cpd_core.models.mace`.
  CARD.md is a human-readable copy of the card.

Graphs: SchNet/ViSNet use pyg.py's plain-torch radius graph; MACE uses its own data pipeline (matscipy
neighbour lists).
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpd_core.errors import CPDInputError

ARCHS = ("mace", "visnet", "schnet")
TARGETS = {"gap": "mean", "U0": "sum"}  # target -> readout (intensive: mean, extensive: sum)
ELEMENTS = ("H", "C", "N", "O", "F")
Z = (1, 6, 7, 8, 9)
STATE = "train_state.pt"
CARD = "card.json"
CARD_MD = "CARD.md"
MACE_WEIGHTS = "model.model"
N_REFERENCE = 20  # test molecules whose predictions are stored in the card (for tests/test_zoo.py)

DEFAULTS = {
    "mace": dict(hidden_irreps="32x0e+32x1o", num_interactions=2, r_max=5.0, max_ell=2, correlation=2,
                 num_bessel=8, num_polynomial_cutoff=5, mlp_irreps="16x0e", radial_mlp=[32, 32, 32]),
    "visnet": dict(lmax=1, hidden_channels=64, num_layers=3, num_heads=8, num_rbf=32, cutoff=4.0),
    "schnet": dict(hidden_channels=64, num_filters=64, num_interactions=4, num_gaussians=50, cutoff=5.0),
}
BATCH_SIZE = {"mace": 32, "visnet": 32, "schnet": 32}
LR = {"mace": 5e-3, "visnet": 1e-3, "schnet": 1e-3}


# ------------------------------------------------------------------------------------------------- data
def split_indices(n_total: int, n_train: int, seed: int, n_val: int | None = None, n_test: int | None = None):
    """(train, val, test) row indices of QM9: disjoint, fixed by seed (and the sizes)."""
    n_val = n_val if n_val is not None else max(int(round(0.1 * n_train)), 100)
    n_test = n_test if n_test is not None else max(int(round(0.1 * n_train)), 100)
    if n_train < 1 or n_train + n_val + n_test > n_total:
        raise CPDInputError(f"Split sizes train {n_train} + val {n_val} + test {n_test} do not fit {n_total} molecules.")
    perm = np.random.default_rng(seed).permutation(n_total)
    test = np.sort(perm[:n_test])
    val = np.sort(perm[n_test:n_test + n_val])
    train = np.sort(perm[n_test + n_val:n_test + n_val + n_train])
    return train, val, test


def composition(structures) -> np.ndarray:
    from cpd_core.data.composition import composition_matrix

    return composition_matrix(structures, "counts", elements=list(ELEMENTS))[0]


def fit_composition(C: np.ndarray, y: np.ndarray, intercept: bool = True) -> np.ndarray:
    X = np.hstack([C, np.ones((len(C), 1))]) if intercept else C
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef


def apply_composition(C: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return C @ coef[:C.shape[1]] + (coef[C.shape[1]] if len(coef) > C.shape[1] else 0.0)


# ------------------------------------------------------------------------------------------------- models
@dataclass
class Prepared:
    """A built network with its batching and prediction functions."""
    model: object
    hparams: dict
    make_batches: object     # (indices of the StructureSet, shuffle rng or None) -> iterable of batches
    predict: object          # batch -> (predictions tensor (n,), targets tensor (n,))


def _pyg_hparams(arch: str, hp: dict, readout: str, mean: float, std: float, atomref: list | None) -> dict:
    if arch == "schnet":
        return dict(hidden_channels=hp["hidden_channels"], num_filters=hp["num_filters"],
                    num_interactions=hp["num_interactions"], num_gaussians=hp["num_gaussians"],
                    cutoff=hp["cutoff"], readout="mean" if readout == "mean" else "add",
                    mean=mean, std=std, atomref=atomref)
    return dict(lmax=hp["lmax"], hidden_channels=hp["hidden_channels"], num_layers=hp["num_layers"],
                num_heads=hp["num_heads"], num_rbf=hp["num_rbf"], cutoff=hp["cutoff"],
                reduce_op="mean" if readout == "mean" else "sum", mean=mean, std=std, atomref=atomref)


def _atomref_table(coef: np.ndarray) -> list:
    table = np.zeros(100)
    table[list(Z)] = coef[:len(Z)]
    return table.tolist()


def prepare_pyg(arch, hp, structures, y, readout, mean, std, e0):
    """SchNet/ViSNet built by pyg.py's builders (so the saved checkpoint reloads through pyg.load_checkpoint)."""
    import torch

    from cpd_core.models.pyg import build_schnet, build_visnet

    # SchNet applies mean/std per atom before its readout: for a sum readout that shifts by n_atoms * mean, so
    # the mean goes to zero there (the atomref carries the offset); ViSNet adds mean after the reduction.
    pyg_hp = _pyg_hparams(arch, hp, readout, mean if (readout == "mean" or arch == "visnet") else 0.0, std,
                          None if e0 is None else _atomref_table(e0))
    model = (build_schnet if arch == "schnet" else build_visnet)(pyg_hp).train()
    numbers = torch.as_tensor(structures.numbers.astype(np.int64))
    positions = torch.as_tensor(structures.positions, dtype=torch.float32)
    offsets = structures.offsets
    targets = torch.tensor(y, dtype=torch.float32)

    def make_batches(indices, rng, batch_size):
        order = np.array(indices)
        if rng is not None:
            order = order[rng.permutation(len(order))]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])
            counts = torch.as_tensor(offsets[idx + 1] - offsets[idx])
            batch = torch.repeat_interleave(torch.arange(len(idx)), counts)
            yield numbers[rows], positions[rows], batch, targets[idx]

    def predict(b):
        z, pos, batch, t = b
        out = model(z, pos, batch)
        out = out[0] if isinstance(out, tuple) else out
        return out.reshape(-1), t

    return Prepared(model, pyg_hp, make_batches, predict)


def build_mace(hp: dict, e0: np.ndarray, scale: float, avg_num_neighbors: float):
    import torch
    from e3nn import o3

    from cpd_core.models.mace import _import_mace

    _import_mace()
    from mace import modules

    return modules.ScaleShiftMACE(
        r_max=hp["r_max"], num_bessel=hp["num_bessel"], num_polynomial_cutoff=hp["num_polynomial_cutoff"],
        max_ell=hp["max_ell"], interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=hp["num_interactions"], num_elements=len(Z), hidden_irreps=o3.Irreps(hp["hidden_irreps"]),
        MLP_irreps=o3.Irreps(hp["mlp_irreps"]), atomic_energies=np.asarray(e0, dtype=np.float64),
        avg_num_neighbors=avg_num_neighbors, atomic_numbers=list(Z), correlation=hp["correlation"],
        gate=torch.nn.functional.silu, radial_MLP=hp["radial_mlp"], atomic_inter_scale=scale,
        atomic_inter_shift=0.0)


def mace_graphs(model_or_rmax, atoms_list):
    """mace-torch AtomicData graphs (its own matscipy neighbour lists), float32."""
    from cpd_core.models.mace import _import_mace

    mace_data, _, torch_tools, utils = _import_mace()
    r_max = float(model_or_rmax if isinstance(model_or_rmax, (int, float)) else model_or_rmax.r_max)
    z_table = utils.AtomicNumberTable(list(Z))
    keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={})
    with torch_tools.default_dtype("float32"):
        return [mace_data.AtomicData.from_config(mace_data.config_from_atoms(a, key_specification=keyspec),
                                                 z_table=z_table, cutoff=r_max, heads=["Default"])
                for a in atoms_list]


def mace_predict(model, graphs, readout: str):
    """Per-molecule prediction of a zoo MACE: its total energy (sum readout) or that over n_atoms (mean)."""
    from cpd_core.models.mace import _import_mace

    _, tg, _, _ = _import_mace()
    batch = tg.Batch.from_data_list(graphs)
    out = model(batch.to_dict(), training=model.training, compute_force=False)["energy"]
    if readout == "mean":
        out = out / (batch.ptr[1:] - batch.ptr[:-1]).to(out.dtype)
    return out


def prepare_mace(hp, structures, y, readout, mean, std, e0, train_idx):
    import torch

    atoms = structures.to_atoms_list()
    graphs = mace_graphs(hp["r_max"], atoms)
    n_edges = sum(g.edge_index.shape[1] for g in (graphs[i] for i in train_idx))
    n_nodes = sum(len(atoms[i]) for i in train_idx)
    avg = n_edges / n_nodes
    if readout == "mean":
        # every element's E0 = training mean: mean over atoms of (E0 + scale * interaction) = mean + ...
        e0_arr, scale = np.full(len(Z), mean), std
    else:
        e0_arr, scale = np.asarray(e0[:len(Z)]), std
    torch.set_default_dtype(torch.float32)
    model = build_mace(hp, e0_arr, scale, avg).float().train()
    targets = torch.tensor(y, dtype=torch.float32)
    full_hp = dict(hp, atomic_energies=list(map(float, e0_arr)), atomic_inter_scale=float(scale),
                   avg_num_neighbors=float(avg), atomic_numbers=list(Z), readout=readout)

    def make_batches(indices, rng, batch_size):
        order = np.array(indices)
        if rng is not None:
            order = order[rng.permutation(len(order))]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            yield [graphs[i] for i in idx], targets[idx]

    def predict(b):
        g, t = b
        return mace_predict(model, g, readout).reshape(-1), t

    return Prepared(model, full_hp, make_batches, predict)


# ------------------------------------------------------------------------------------------------- training
def _atomic_save(obj, path: Path):
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state(rng: np.random.Generator):
    import torch

    return {"torch": torch.get_rng_state(), "numpy_global": np.random.get_state(), "python": random.getstate(),
            "shuffle": rng.bit_generator.state}


def _set_rng_state(state, rng: np.random.Generator):
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy_global"])
    random.setstate(state["python"])
    rng.bit_generator.state = state["shuffle"]


def _evaluate(prep: Prepared, indices, batch_size) -> tuple[np.ndarray, np.ndarray]:
    import torch

    prep.model.eval()
    preds, ts = [], []
    with torch.no_grad():
        for b in prep.make_batches(indices, None, batch_size):
            p, t = prep.predict(b)
            preds.append(p.detach().cpu().numpy())
            ts.append(t.numpy())
    return np.concatenate(preds).astype(np.float64), np.concatenate(ts).astype(np.float64)


def command_line(arch, target, n_train, epochs, seed, out, **options) -> str:
    parts = ["python -m cpd_core train", f"--arch {arch}", f"--target {target}", f"--n-train {n_train}",
             f"--epochs {epochs}", f"--seed {seed}", f"--out {out}"]
    for key, value in options.items():
        if value is not None:
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": "cpu",
            "torch": torch.__version__, "python": platform.python_version(), "nice": os.nice(0),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "wall times are on a CPU shared with other jobs (see nice and load average); not a benchmark"}


def train(arch: str, target: str, n_train: int, epochs: int, seed: int, out, n_val: int | None = None,
          n_test: int | None = None, batch_size: int | None = None, lr: float | None = None, patience: int = 10,
          max_minutes: float | None = None, hparams: dict | None = None, model_id: str | None = None,
          log=print) -> dict:
    """Train (or resume) one model; returns the card."""
    import torch

    if arch not in ARCHS:
        raise CPDInputError(f"Unknown architecture '{arch}'; choose one of {ARCHS}.")
    if target not in TARGETS:
        raise CPDInputError(f"Unknown target '{target}'; choose one of {tuple(TARGETS)}.")
    if epochs < 1:
        raise CPDInputError("--epochs must be at least 1.")
    from cpd_core.data.qm9 import load_qm9

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    readout = TARGETS[target]
    batch_size = batch_size or BATCH_SIZE[arch]
    lr = lr or LR[arch]
    hp = {**DEFAULTS[arch], **(hparams or {})}
    cmd = command_line(arch, target, n_train, epochs, seed, out, n_val=n_val, n_test=n_test,
                       batch_size=None if batch_size == BATCH_SIZE[arch] else batch_size,
                       lr=None if lr == LR[arch] else lr, patience=None if patience == 10 else patience,
                       max_minutes=max_minutes)

    qm9 = load_qm9()
    train_rows, val_rows, test_rows = split_indices(len(qm9), n_train, seed, n_val, n_test)
    rows = np.concatenate([train_rows, val_rows, test_rows])
    data = qm9.subset(rows)                      # local order: train, val, test
    tr = np.arange(len(train_rows))
    va = np.arange(len(train_rows), len(train_rows) + len(val_rows))
    te = np.arange(len(train_rows) + len(val_rows), len(rows))
    y = data.target_values(target).astype(np.float64)
    C = composition(data)

    # composition baseline (counts + intercept, train split) and the reference the network learns on top of
    base_coef = fit_composition(C[tr], y[tr], intercept=True)
    base_test_mae = float(np.mean(np.abs(apply_composition(C[te], base_coef) - y[te])))
    base_val_mae = float(np.mean(np.abs(apply_composition(C[va], base_coef) - y[va])))
    if readout == "sum":
        e0 = fit_composition(C[tr], y[tr], intercept=False)   # per-element reference, no intercept
        resid = y[tr] - C[tr] @ e0
        mean, std = 0.0, float(np.std(resid / data.n_atoms[tr]) if arch == "mace" else np.std(resid))
        if arch == "mace":  # ScaleShiftMACE scales per-atom interaction energies
            std = float(np.std(resid) / np.sqrt(np.mean(data.n_atoms[tr])))
    else:
        e0 = None
        mean, std = float(np.mean(y[tr])), float(np.std(y[tr]))

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if arch == "mace":
        prep = prepare_mace(hp, data, y, readout, mean, std, e0, tr)
    else:
        prep = prepare_pyg(arch, hp, data, y, readout, mean, std, e0)
    model = prep.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    rng = np.random.default_rng(seed + 1)
    loss_scale = std if std > 0 else 1.0

    state_path = out / STATE
    epoch, best_val, best_epoch, best_state, wall, history = 0, float("inf"), 0, None, 0.0, []
    if state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if st["split"] != {"seed": seed, "n_train": n_train, "n_val": len(va), "n_test": len(te)} or \
                st["arch"] != arch or st["target"] != target:
            raise CPDInputError(f"{state_path} belongs to a different run ({st['arch']}, {st['target']}, "
                                f"{st['split']}); use another --out or delete it.")
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        epoch, best_val, best_epoch, best_state = st["epoch"], st["best_val"], st["best_epoch"], st["best_state"]
        wall, history = st["wall_s"], st["history"]
        _set_rng_state(st["rng"], rng)
        log(f"resuming after epoch {epoch} (best val MAE {best_val:.4f} at epoch {best_epoch})")

    start = time.time()
    stopped = "epochs"
    while epoch < epochs:
        if epoch - best_epoch >= patience and best_state is not None:
            stopped = f"early stopping (no validation improvement for {patience} epochs)"
            break
        last = history[-1]["seconds"] if history else 0.0  # stop before an epoch that would overrun the limit
        if max_minutes is not None and best_state is not None and \
                wall + time.time() - start + last > 60 * max_minutes:
            stopped = f"time limit ({max_minutes} min)"
            break
        t0 = time.time()
        model.train()
        total, count = 0.0, 0
        for b in prep.make_batches(tr, rng, batch_size):
            p, t = prep.predict(b)
            loss = torch.nn.functional.l1_loss(p / loss_scale, t / loss_scale)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            total += float(loss.detach()) * len(t) * loss_scale
            count += len(t)
        pv, tv = _evaluate(prep, va, 64)
        val_mae = float(np.mean(np.abs(pv - tv)))
        scheduler.step(val_mae)
        epoch += 1
        if val_mae < best_val:
            best_val, best_epoch = val_mae, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": epoch, "train_mae": total / count, "val_mae": val_mae,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)})
        log(f"epoch {epoch}/{epochs} train MAE {total / count:.4f} val MAE {val_mae:.4f} "
            f"lr {optimizer.param_groups[0]['lr']:.2e} ({time.time() - t0:.0f} s)")
        _atomic_save({"arch": arch, "target": target,
                      "split": {"seed": seed, "n_train": n_train, "n_val": len(va), "n_test": len(te)},
                      "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "epoch": epoch, "best_val": best_val,
                      "best_epoch": best_epoch, "best_state": best_state, "rng": _rng_state(rng),
                      "wall_s": wall + time.time() - start, "history": history}, state_path)
        start, wall = time.time(), wall + time.time() - start

    wall += time.time() - start
    model.load_state_dict(best_state)
    model.eval()
    pt, tt = _evaluate(prep, te, 64)
    pv, tv = _evaluate(prep, va, 64)
    test_mae, val_mae = float(np.mean(np.abs(pt - tt))), float(np.mean(np.abs(pv - tv)))
    ids = data.table["id"].astype(str).to_numpy()
    n_params = sum(p.numel() for p in model.parameters())
    model_id = model_id or out.name
    card = {
        "id": model_id, "arch": arch, "hparams": prep.hparams, "target": target,
        "units": qm9.units.get(target, "eV"), "dataset": "QM9", "elements": list(ELEMENTS),
        "readout": readout,
        "description": f"{ {'mace': 'MACE', 'visnet': 'ViSNet', 'schnet': 'SchNet'}[arch]} trained on QM9 {target} "
                       f"({len(tr)} molecules, {readout} readout), CPU",
        "notes": ("Trained with `python -m cpd_core train` (property loss only, no forces). "
                  + ("The per-element linear reference (E0s / atomref) is fitted on the training split; the "
                     "network learns the residual." if readout == "sum" else
                     "Mean readout over atoms; the training mean is the offset.")),
        "n_parameters": int(n_params),
        "training": {"loss": "L1 on target / train std", "optimizer": "AdamW", "lr": lr, "batch_size": batch_size,
                     "scheduler": "ReduceLROnPlateau(factor 0.5, patience 3) on validation MAE",
                     "early_stopping_patience": patience, "epochs_requested": epochs, "epochs_run": epoch,
                     "best_epoch": best_epoch, "stopped_by": stopped, "wall_time_s": round(wall, 1),
                     "history": history},
        "split": {"seed": seed, "n_train": len(tr), "n_val": len(va), "n_test": len(te),
                  "scheme": "permutation of all QM9 rows by seed: test first, then validation, then training",
                  "test_ids": ids[te].tolist(), "val_ids": ids[va].tolist()},
        "metrics": {"val_mae": val_mae, "test_mae": test_mae, "baseline_test_mae": base_test_mae,
                    "baseline_val_mae": base_val_mae, "units": qm9.units.get(target, "eV")},
        "baseline": {"kind": "least squares on element counts (H C N O F) + intercept, fitted on the training split",
                     "coefficients": dict(zip(list(ELEMENTS) + ["intercept"], map(float, base_coef)))},
        "reference": {"ids": ids[te[:N_REFERENCE]].tolist(), "targets": tt[:N_REFERENCE].tolist(),
                      "predictions": pt[:N_REFERENCE].tolist(),
                      "mae": float(np.mean(np.abs(pt[:N_REFERENCE] - tt[:N_REFERENCE])))},
        "machine": _machine(),
        "command": cmd,
    }
    if e0 is not None:
        card["reference_energies"] = dict(zip(ELEMENTS, map(float, e0)))
    card["layers"] = layer_irreps(arch, prep.hparams, model)
    save_model(out, arch, prep, card)
    log(f"test MAE {test_mae:.4f} (composition baseline {base_test_mae:.4f}) {card['units']}; wrote {out}")
    return card


def layer_irreps(arch, hparams, model) -> dict:
    if arch == "mace":
        from cpd_core.models.mace import _layers_from_model

        return _layers_from_model(model)
    from cpd_core.models.pyg import layer_irreps as pyg_layers

    return pyg_layers(arch, hparams)


def save_model(out: Path, arch: str, prep: Prepared, card: dict):
    import torch

    if arch == "mace":
        tmp = out / (MACE_WEIGHTS + ".tmp")
        torch.save(prep.model, tmp)
        os.replace(tmp, out / MACE_WEIGHTS)
        (out / CARD).write_text(json.dumps(card, indent=1))
    else:
        from cpd_core.models.pyg import save_checkpoint

        fields = {k: v for k, v in card.items() if k not in ("arch", "hparams")}
        save_checkpoint(out, arch, prep.hparams, prep.model, **fields)
    (out / CARD_MD).write_text(card_markdown(card))


def card_markdown(card: dict) -> str:
    m, t, s, mach = card["metrics"], card["training"], card["split"], card["machine"]
    u = card["units"]
    lines = [f"# {card['id']}", "", card["description"] + ".", "",
             f"- Architecture: {card['arch']}, {card['n_parameters']:,} parameters; hyperparameters: "
             f"`{json.dumps({k: v for k, v in card['hparams'].items() if k not in ('atomref', 'atomic_energies')})}`",
             f"- Readout: {card['readout']} over atoms" + (" on top of a per-element linear reference (fitted on "
                                                            "train)" if card["readout"] == "sum" else ""),
             f"- Data: QM9 {card['target']} [{u}]; split seed {s['seed']}: train {s['n_train']}, val {s['n_val']}, "
             f"test {s['n_test']} ({s['scheme']})",
             f"- Training: {t['epochs_run']} epochs (requested {t['epochs_requested']}, best {t['best_epoch']}, "
             f"stopped by {t['stopped_by']}), batch {t['batch_size']}, lr {t['lr']}, {t['loss']}; wall time "
             f"{t['wall_time_s'] / 60:.1f} min",
             f"- Machine: {mach['device'].upper()} only; {mach['platform']}, {mach['cpu_count']} CPUs, "
             f"{mach['torch_threads']} torch threads, torch {mach['torch']}"
             + (f", nice {mach['nice']}, load average at end {mach['load_average_at_end']} ({mach['note']})"
                if "note" in mach else ""),
             "", "| split | model MAE | composition baseline MAE |", "|---|---|---|",
             f"| validation | {m['val_mae']:.4f} {u} | {m['baseline_val_mae']:.4f} {u} |",
             f"| test | {m['test_mae']:.4f} {u} | {m['baseline_test_mae']:.4f} {u} |",
             "", "Composition baseline: " + card["baseline"]["kind"] + ".", "", "## Layers (irreps)", ""]
    lines += [f"- `{name}`: `{irreps}`" for name, irreps in card["layers"].items()]
    lines += ["", "## Command", "", "```", card["command"], "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- loading
def load_zoo_model(folder):
    """(card, predict(atoms_list) -> np.ndarray) for a zoo folder written by `train`."""
    import torch

    folder = Path(folder)
    card = json.loads((folder / CARD).read_text())
    if card["arch"] == "mace":
        from cpd_core.models.mace import _unpickle

        model = _unpickle(folder / MACE_WEIGHTS).eval()

        def predict(atoms_list):
            with torch.no_grad():
                return mace_predict(model, mace_graphs(model, atoms_list), card["readout"]).numpy().astype(float)
    else:
        from cpd_core.models.pyg import load_checkpoint

        adapter = load_checkpoint(folder, device="cpu")

        def predict(atoms_list):
            return adapter.predict(atoms_list).astype(float)
    return card, predict


def zoo_readme(root) -> str:
    """zoo/README.md: every model card in `root` with its test MAE next to the composition baseline."""
    root = Path(root)
    cards = [json.loads((f / CARD).read_text()) for f in sorted(root.iterdir()) if (f / CARD).is_file()]
    lines = ["# QM9 model zoo", "",
             "Models trained on one QM9 target each with `python -m cpd_core train` (property loss only, CPU). "
             "Each folder holds the weights (`model.pt`: torch-geometric state dict, or `model.model`: pickled "
             "mace-torch module), `card.json` (hyperparameters, irreps per layer, split with the test ids, "
             "training history, machine, metrics, command) and `CARD.md`. Folders are registered as model ids "
             "automatically (`python -m cpd_core models`). Baseline: least squares on element counts + intercept "
             "fitted on the same training split, evaluated on the same test split. `train_state.pt` (resume "
             "state) is not shipped.", "",
             "| model | arch | target (readout) | n_train / val / test | epochs | wall time | val MAE | test MAE | "
             "baseline test MAE |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cards:
        m, s, t = c["metrics"], c["split"], c["training"]
        lines.append(f"| `{c['id']}` | {c['arch']} ({c['n_parameters']:,} params) | {c['target']} ({c['readout']}) "
                     f"| {s['n_train']} / {s['n_val']} / {s['n_test']} | {t['epochs_run']} | "
                     f"{t['wall_time_s'] / 60:.1f} min | {m['val_mae']:.3f} {c['units']} | "
                     f"**{m['test_mae']:.3f} {c['units']}** | {m['baseline_test_mae']:.3f} {c['units']} |")
    lines += ["", "## Commands", ""]
    for c in cards:
        lines += [f"- `{c['id']}`: `OMP_NUM_THREADS=2 {c['command']}`"]
    lines += ["", "Rerunning a command resumes from its `train_state.pt` (if present) after the last saved epoch.",
              ""]
    return "\n".join(lines)
