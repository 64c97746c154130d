"""One mechanism for finding pretrained weights: the local weights folder first, then the package's download.

The local folder is `CPD_WEIGHTS_DIR` (default `../shared/weights`); converted weights live under
`<cache>/weights`. Loaders call `local_weights(relative)`; when it returns None they fall back to the model
package's own download path (which needs internet), or to the weights its wheel ships (`package_dir`).

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cpd_core.errors import CPDInputError
from cpd_core.paths import cache_dir, weights_dir


def local_weights(relative: str) -> Path | None:
    """`<weights dir>/<relative>` if it exists, else None."""
    path = weights_dir() / relative
    return path if path.exists() else None


def converted_weights_dir(name: str) -> Path:
    """A writable folder under the cache for weights converted from the local originals."""
    path = cache_dir() / "weights" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(package: str, install: str) -> Path:
    """The installed folder of `package` (for weights shipped inside its wheel), without importing it;
    `install` is the pip requirement named in the error when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CPDInputError(f"This model needs the `{package}` package: run `pip install {install}`.")
    return Path(next(iter(spec.submodule_search_locations)))


def wheel_checkpoint(locate) -> Path | None:
    """`locate()` (a checkpoint path, local or inside a wheel), or None when its package is not installed."""
    try:
        return locate()
    except CPDInputError:
        return None


def checkpoint_available(locate) -> bool:
    """Whether the checkpoint `locate()` names exists here (False when its package is not installed)."""
    path = wheel_checkpoint(locate)
    return path is not None and path.is_file()
