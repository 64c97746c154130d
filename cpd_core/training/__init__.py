"""Training: the model zoo's training of MACE, ViSNet or SchNet on one QM9 target
(`python -m cpd_core train ...`).

- Split (`data`): a fixed permutation of all of QM9 by `seed`; test = the first n_test molecules, validation the
  next n_val, training the next n_train (n_val = n_test = max(10% of n_train, 100) unless given). The test
  molecules are only evaluated once, after training, with the best-on-validation weights.
- Networks (`networks`): readout MEAN over atoms for intensive targets (gap), SUM for extensive ones (U0). For U0 a
  per-element linear reference (least squares on element counts, fitted on the training split) is built into the
  model (MACE's E0s, SchNet/ViSNet's `atomref`) and the network learns the residual; for the gap the training mean
  is the offset.
- One epoch (`epoch`): L1 loss on the target standardised by the training std (property only, no forces).
- Resume (`checkpoint`): a training state (model, optimiser, scheduler, epoch, best validation MAE and weights, rng
  states) is written atomically to `<out>/train_state.pt` after every epoch; rerunning the same command (possibly
  with more epochs) continues after the last saved epoch.
- Cards (`cards`): the composition baseline (least squares on element counts + intercept, training split) next to
  the model's test MAE, the split, the history, the machine and the command.
- Output (`<out>` = `zoo/<model-id>/`): SchNet/ViSNet follow `cpd_core.models.pyg.save_checkpoint` (model.pt =
  state dict, card.json with arch + hparams), so they auto-register; MACE is saved as a pickled mace-torch module
  `model.model` (torch.save(model)) with card.json (arch "mace"), registered by `cpd_core.models.mace`.
  CARD.md is a human-readable copy of the card.
- The loop itself (`loop.train`) ties these together.

Stage: training (the zoo; feeds models).
"""

from cpd_core.training.checkpoint import load_zoo_model
from cpd_core.training.loop import train

__all__ = ["train", "load_zoo_model"]
