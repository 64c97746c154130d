"""One training epoch and the evaluation of a prepared network on a set of molecules.

Stage: training (the zoo; feeds models).
"""

from __future__ import annotations

import numpy as np

from cpd_core.training.networks import Prepared


def train_epoch(prep: Prepared, optimizer, indices, rng: np.random.Generator, batch_size: int,
                loss_scale: float) -> float:
    """One pass over `indices` in shuffled batches (L1 on targets / loss_scale); returns the training MAE."""
    import torch

    model = prep.model
    model.train()
    total, count = 0.0, 0
    for b in prep.make_batches(indices, rng, batch_size):
        p, t = prep.predict(b)
        loss = torch.nn.functional.l1_loss(p / loss_scale, t / loss_scale)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        total += float(loss.detach()) * len(t) * loss_scale
        count += len(t)
    return total / count


def evaluate(prep: Prepared, indices, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, targets) in float64 for `indices`, in eval mode without gradients."""
    import torch

    prep.model.eval()
    preds, ts = [], []
    with torch.no_grad():
        for b in prep.make_batches(indices, None, batch_size):
            p, t = prep.predict(b)
            preds.append(p.detach().cpu().numpy())
            ts.append(t.detach().cpu().numpy())
    return np.concatenate(preds).astype(np.float64), np.concatenate(ts).astype(np.float64)


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - target)))
