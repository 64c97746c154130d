"""Shared fixtures. The runtime cache is shared with the app (QM9 is parsed once into it)."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def crystals():
    """Two small Materials Project crystals (fewest atoms of a random 40), for the crystal-capable adapters."""
    from cpd_core.data.mp import load_mp

    return sorted(load_mp(40, seed=2).to_atoms_list(), key=len)[:2]


@pytest.fixture(scope="session")
def qm9_small():
    from cpd_core.data.qm9 import load_qm9

    return load_qm9(n=300, seed=0)


@pytest.fixture
def planted():
    """Synthetic representations with a planted composition part and a planted geometric part.

    H = [C A + G B | one-hot encodings of two element counts]: the one-hot block is composition that is not
    linear in the counts, so it survives the projection, as in real mean-pooled representations.
    Targets: linear in G, linear in C, and a pure interaction of two counts (no linear part in any column).
    """
    rng = np.random.default_rng(0)
    n = 500
    C = rng.integers(0, 6, size=(n, 4)).astype(float)
    G = rng.normal(size=(n, 6))
    onehot = np.hstack([(C[:, [j]] == np.arange(6)).astype(float) for j in range(2)])
    H = np.hstack([C @ rng.normal(size=(4, 32)) + G @ rng.normal(size=(6, 32)), 2 * onehot])
    H += 0.01 * rng.normal(size=H.shape)
    return {
        "H": H,
        "C": C,
        "y_geom": G @ rng.normal(size=6),
        "y_comp": C @ rng.normal(size=4),
        "y_nonlinear": (C[:, 0] - 2.5) * (C[:, 1] - 2.5),
    }


@pytest.fixture
def isolated_cache_dir(tmp_path, monkeypatch):
    """An empty embeddings cache (datasets are still read from the shared cache to avoid re-parsing QM9)."""
    from cpd_core.data.qm9 import load_qm9

    load_qm9()
    import cpd_core.representations.cache as cache

    root = tmp_path / "embeddings"
    monkeypatch.setattr(cache, "embeddings_root", lambda: (root.mkdir(exist_ok=True), root)[1])
    return root


@pytest.fixture
def probe_arrays(tmp_path, planted):
    """The planted H, C and y_geom saved as .npy files for the `probe` command: {"H", "C", "y"} -> path."""
    paths = {}
    for name, value in (("H", planted["H"]), ("C", planted["C"]), ("y", planted["y_geom"])):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], value)
    return paths


class _Payload:
    """Unpickling this runs code: it writes `marker` (a harmless stand-in for a malicious payload)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture
def code_payload(tmp_path):
    """(save(obj_or_None, path) -> path, marker): torch.save of a pickle that writes `marker` when unpickled;
    with obj, the payload sits inside obj["payload"]."""
    import torch

    marker = tmp_path / "payload-ran"

    def save(path, obj=None):
        torch.save(_Payload(marker) if obj is None else {**obj, "payload": _Payload(marker)}, path)
        return path

    return save, marker
