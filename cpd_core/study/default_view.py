"""The dashboard's first view: the dataset subset and models a new user sees, and a step that computes their
representations ahead of time (run by scripts/install.sh), so the first chart appears in seconds.

An equivariant model with L>0 channels (MACE-SPICE) sits next to the ANI-2x AEV, so every page, irrep routing
included, shows a real chart on first open.

Stage: study (stage 5 of 5).
"""

from __future__ import annotations

from typing import Callable

DATASET = "qm9"
N = 1000
SEED = 0
MODELS = ("ani2x-aev", "mace-spice")


def precompute(log: Callable[[str], None] = print) -> list[str]:
    """Representations of the first view's models on its structures, into the cache; returns the models done.

    A model that cannot run here (no offline weights) is skipped with a message: the dashboard then computes it
    when selected, or says why it cannot."""
    from cpd_core.data import load_dataset
    from cpd_core.models import offline_available
    from cpd_core.representations.cache import cached_invariants

    structures = load_dataset(DATASET, n=N, seed=SEED)
    done = []
    for model in MODELS:
        if not offline_available(model):
            log(f"{model}: weights not available offline; it will be computed (or explained) in the dashboard")
            continue
        cached_invariants(model, structures)
        log(f"{model}: representations of {len(structures):,} {DATASET} structures are cached")
        done.append(model)
    return done
