"""The property readout shared by the zoo's PaiNN and DimeNet++: per-atom outputs times the training std plus
its mean, plus a fixed per-element reference (`atomref`, for extensive targets such as U0), summed or averaged
over each molecule, as torch-geometric's SchNet does.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter


def init_scale_shift(module: nn.Module, mean: float, std: float, atomref, max_z: int = 100) -> None:
    """Register `mean`, `std` (buffers) and a frozen `atomref` embedding (or None) on `module`."""
    module.register_buffer("mean", torch.tensor(float(mean)))
    module.register_buffer("std", torch.tensor(float(std)))
    module.atomref = None
    if atomref is not None:
        module.atomref = nn.Embedding(max_z, 1)
        module.atomref.weight.data.copy_(torch.as_tensor(atomref, dtype=torch.float32).view(-1, 1))
        module.atomref.weight.requires_grad_(False)


def scale_shift_pool(module: nn.Module, per_atom, z, batch, readout: str):
    """Per-molecule prediction from per-atom outputs (N, 1): * std + mean (+ atomref), then mean or sum."""
    h = per_atom * module.std + module.mean
    if module.atomref is not None:
        h = h + module.atomref(z)
    return scatter(h, batch, dim=0, reduce="mean" if readout == "mean" else "sum")
