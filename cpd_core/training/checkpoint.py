"""Checkpoints: the resumable training state (written atomically after every epoch), the final zoo model, and
loading a zoo model back for prediction.

Stage: training (the zoo; feeds models).
"""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path

import numpy as np

from cpd_core.errors import CPDInputError
from cpd_core.training.config import CARD, CARD_MD, MACE_WEIGHTS


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a killed run leaves the previous state intact."""
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state(rng: np.random.Generator) -> dict:
    """Every random state a resumed run needs, in types `torch.load(weights_only=True)` reads back."""
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_global": (name, keys.tolist(), pos, has_gauss, cached),
            "python": random.getstate(), "shuffle": rng.bit_generator.state}


def set_rng_state(state: dict, rng: np.random.Generator) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    rng.bit_generator.state = state["shuffle"]


def load_state(path: Path, arch: str, target: str, split: dict) -> dict | None:
    """The saved training state at `path`, or None; refuses a state of another run (arch, target or split).

    Read with `weights_only=True`: tensors and plain Python values only, never unpickled code."""
    import pickle

    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CPDInputError(f"{path} is not a training state this version can read safely ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}). Delete it to start training afresh, or use another "
                            "--out.") from exc
    if state["split"] != split or state["arch"] != arch or state["target"] != target:
        raise CPDInputError(f"{path} belongs to a different run ({state['arch']}, {state['target']}, "
                            f"{state['split']}); use another --out or delete it.")
    return state


def save_model(out: Path, arch: str, prep, card: dict) -> None:
    """The final weights and card: MACE as a pickled module, the others through pyg.save_checkpoint (a state
    dict, moved to the CPU)."""
    import torch

    from cpd_core.training.cards import card_markdown

    if arch == "mace":
        tmp = out / (MACE_WEIGHTS + ".tmp")
        torch.save(copy.deepcopy(prep.model).cpu(), tmp)  # a module trained on cuda loads on any machine
        os.replace(tmp, out / MACE_WEIGHTS)
        (out / CARD).write_text(json.dumps(card, indent=1))
    else:
        from cpd_core.models.pyg import save_checkpoint

        fields = {k: v for k, v in card.items() if k not in ("arch", "hparams")}
        state = {k: v.detach().cpu() for k, v in prep.model.state_dict().items()}
        save_checkpoint(out, arch, prep.hparams, state, **fields)
    (out / CARD_MD).write_text(card_markdown(card))


def load_zoo_model(folder):
    """(card, predict(atoms_list) -> np.ndarray) for a zoo folder written by `train`."""
    import torch

    from cpd_core.training.networks import mace_graphs, mace_predict

    folder = Path(folder)
    card = json.loads((folder / CARD).read_text())
    if card["arch"] == "mace":
        from cpd_core.models.mace import _unpickle

        model = _unpickle(folder / MACE_WEIGHTS, trusted=True).eval()  # a zoo folder written by `train`

        def predict(atoms_list):
            with torch.no_grad():
                return mace_predict(model, mace_graphs(model, atoms_list), card["readout"]).numpy().astype(float)
    else:
        from cpd_core.models.pyg import load_checkpoint

        adapter = load_checkpoint(folder, device="cpu")

        def predict(atoms_list):
            return adapter.predict(atoms_list).astype(float)
    return card, predict
