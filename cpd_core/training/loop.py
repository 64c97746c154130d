"""The training loop of the zoo (`python -m cpd_core train`): prepare the data and the network, run epochs with a
learning-rate schedule and early stopping on validation MAE, save a resumable state after every epoch, then
evaluate the best weights once on the test split and write the model and its card.

Stage: training (the zoo; feeds models).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

from cpd_core.errors import CPDInputError
from cpd_core.training.cards import build_card, command_line
from cpd_core.training.checkpoint import atomic_save, load_state, rng_state, save_model, set_rng_state
from cpd_core.training.config import ARCHS, BATCH_SIZE, DEFAULTS, EVAL_BATCH, LR, PATIENCE, STATE, TARGETS
from cpd_core.training.data import prepare_data
from cpd_core.training.epoch import evaluate, mae, train_epoch
from cpd_core.training.networks import prepare


def _check(arch: str, target: str, epochs: int) -> None:
    if arch not in ARCHS:
        raise CPDInputError(f"Unknown architecture '{arch}'; choose one of {ARCHS}.")
    if target not in TARGETS:
        raise CPDInputError(f"Unknown target '{target}'; choose one of {tuple(TARGETS)}.")
    if epochs < 1:
        raise CPDInputError("--epochs must be at least 1.")


def train(arch: str, target: str, n_train: int, epochs: int, seed: int, out, n_val: int | None = None,
          n_test: int | None = None, batch_size: int | None = None, lr: float | None = None,
          patience: int = PATIENCE, max_minutes: float | None = None, hparams: dict | None = None,
          model_id: str | None = None, split: str = "standard", device: str = "cpu", log=print) -> dict:
    """Train (or resume) one model on `device` (cpu | cuda) with the `split` scheme; returns the card."""
    import torch

    _check(arch, target, epochs)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CPDInputError("--device cuda was asked for, but torch sees no CUDA device here; use --device cpu.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    readout = TARGETS[target]
    batch_size = batch_size or BATCH_SIZE[arch]
    lr = lr or LR[arch]
    hp = {**DEFAULTS[arch], **(hparams or {})}
    cmd = command_line(arch, target, n_train, epochs, seed, out, n_val=n_val, n_test=n_test,
                       batch_size=None if batch_size == BATCH_SIZE[arch] else batch_size,
                       lr=None if lr == LR[arch] else lr, patience=None if patience == PATIENCE else patience,
                       max_minutes=max_minutes, split=None if split == "standard" else split,
                       device=None if device == "cpu" else device)

    td = prepare_data(arch, target, readout, n_train, seed, n_val, n_test, split)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    prep = prepare(arch, hp, td, readout, device)
    model = prep.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    rng = np.random.default_rng(seed + 1)
    loss_scale = td.std if td.std > 0 else 1.0

    state_path = out / STATE
    split = td.split_record(seed, n_train)
    epoch, best_val, best_epoch, best_state, wall, history = 0, float("inf"), 0, None, 0.0, []
    saved = load_state(state_path, arch, target, split)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        epoch, best_val, best_epoch, best_state = (saved["epoch"], saved["best_val"], saved["best_epoch"],
                                                   saved["best_state"])
        wall, history = saved["wall_s"], saved["history"]
        set_rng_state(saved["rng"], rng)
        log(f"resuming after epoch {epoch} (best val MAE {best_val:.4f} at epoch {best_epoch})")

    start = session_start = time.time()  # max_minutes bounds this invocation; a rerun continues the run
    first_epoch = epoch
    stopped = "epochs"
    while epoch < epochs:
        if epoch - best_epoch >= patience and best_state is not None:
            stopped = f"early stopping (no validation improvement for {patience} epochs)"
            break
        last = history[-1]["seconds"] if history else 0.0  # stop before an epoch that would overrun the limit,
        if max_minutes is not None and epoch > first_epoch and \
                time.time() - session_start + last > 60 * max_minutes:  # after at least one epoch per invocation
            stopped = f"time limit ({max_minutes} min)"
            break
        t0 = time.time()
        train_mae = train_epoch(prep, optimizer, td.train, rng, batch_size, loss_scale)
        val_mae = mae(*evaluate(prep, td.val, EVAL_BATCH))
        scheduler.step(val_mae)
        epoch += 1
        if val_mae < best_val:
            best_val, best_epoch = val_mae, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": epoch, "train_mae": train_mae, "val_mae": val_mae,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)})
        log(f"epoch {epoch}/{epochs} train MAE {train_mae:.4f} val MAE {val_mae:.4f} "
            f"lr {optimizer.param_groups[0]['lr']:.2e} ({time.time() - t0:.0f} s)")
        atomic_save({"arch": arch, "target": target, "split": split, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                     "best_val": best_val, "best_epoch": best_epoch, "best_state": best_state,
                     "rng": rng_state(rng), "wall_s": wall + time.time() - start, "history": history}, state_path)
        start, wall = time.time(), wall + time.time() - start

    wall += time.time() - start
    model.load_state_dict(best_state)
    model.eval()
    test_pred, test_true = evaluate(prep, td.test, EVAL_BATCH)
    val_mae = mae(*evaluate(prep, td.val, EVAL_BATCH))
    test_mae = mae(test_pred, test_true)
    card = build_card(model_id=model_id or out.name, arch=arch, target=target, readout=readout, td=td, prep=prep,
                      model=model, lr=lr, batch_size=batch_size, patience=patience, epochs=epochs, epoch=epoch,
                      best_epoch=best_epoch, stopped=stopped, wall=wall, history=history, seed=seed,
                      val_mae=val_mae, test_mae=test_mae, test_pred=test_pred, test_true=test_true, cmd=cmd,
                      device=device)
    save_model(out, arch, prep, card)
    log(f"test MAE {test_mae:.4f} (composition baseline {td.baseline_test_mae:.4f}) {card['units']}; wrote {out}")
    return card
