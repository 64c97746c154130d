"""Where the project finds its cache, the shared data and local weights (all overridable by env variables).

Stage: shared by every stage.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Runtime cache root (`CPD_CACHE_DIR`, default `<repo>/cache`)."""
    path = Path(os.environ.get("CPD_CACHE_DIR", REPO_ROOT / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir() -> Path:
    """Read-only shared folder beside the checkout (`CPD_SHARED_DIR`, default `<repo>/../shared`)."""
    return Path(os.environ.get("CPD_SHARED_DIR", REPO_ROOT.parent / "shared"))


def mp_data_path() -> Path:
    """Materials Project crystals file (`CPD_MP_PATH`, default `../shared/data/mp_crystals_2018.extxyz`)."""
    default = shared_dir() / "data" / "mp_crystals_2018.extxyz"
    return Path(os.environ.get("CPD_MP_PATH", default))


def weights_dir() -> Path:
    """Local pretrained-weights folder (`CPD_WEIGHTS_DIR`, default `../shared/weights`), tried before any download."""
    return Path(os.environ.get("CPD_WEIGHTS_DIR", shared_dir() / "weights"))
