"""Training data: the seeded QM9 split, composition matrices, the composition baseline and target scaling.

Stage: training (the zoo; feeds models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpd_core.errors import CPDInputError
from cpd_core.training.config import ELEMENTS, SPLITS, STANDARD_SPLIT

SCHEMES = {
    "standard": "standard QM9 convention: a seeded permutation into 110,000 training, 10,000 validation and the "
                "remaining test molecules; this run uses the first n_train / n_val / n_test of each pool",
    "random": "permutation of all QM9 rows by seed: test first, then validation, then training",
}


def standard_split(n_total: int, n_train: int, seed: int, n_val: int | None = None, n_test: int | None = None):
    """(train, val, test) row indices under the standard QM9 split (`config.STANDARD_SPLIT`), each the first
    n of its pool; n_val defaults to the whole validation pool, n_test to the whole test pool."""
    n_pool_train, n_pool_val = STANDARD_SPLIT["train"], STANDARD_SPLIT["val"]
    n_pool_test = n_total - n_pool_train - n_pool_val
    if n_pool_test < 1:
        raise CPDInputError(f"The standard QM9 split needs more than {n_pool_train + n_pool_val} molecules "
                            f"(got {n_total}); use --split random.")
    n_val = n_pool_val if n_val is None else n_val
    n_test = n_pool_test if n_test is None else n_test
    for name, n, pool in (("train", n_train, n_pool_train), ("val", n_val, n_pool_val),
                          ("test", n_test, n_pool_test)):
        if not 1 <= n <= pool:
            raise CPDInputError(f"--n-{name} {n} does not fit the standard split's {name} pool of {pool} molecules.")
    perm = np.random.default_rng(seed).permutation(n_total)
    train_pool, val_pool = perm[:n_pool_train], perm[n_pool_train:n_pool_train + n_pool_val]
    test_pool = perm[n_pool_train + n_pool_val:]
    return np.sort(train_pool[:n_train]), np.sort(val_pool[:n_val]), np.sort(test_pool[:n_test])


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
    """Element counts of H, C, N, O, F per molecule."""
    from cpd_core.data.composition import composition_matrix

    return composition_matrix(structures, "counts", elements=list(ELEMENTS))[0]


def fit_composition(C: np.ndarray, y: np.ndarray, intercept: bool = True) -> np.ndarray:
    """Least-squares coefficients of y on the counts (plus an intercept)."""
    X = np.hstack([C, np.ones((len(C), 1))]) if intercept else C
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef


def apply_composition(C: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return C @ coef[:C.shape[1]] + (coef[C.shape[1]] if len(coef) > C.shape[1] else 0.0)


@dataclass
class TrainingData:
    """One run's molecules (local order: train, val, test), target, counts, baseline and target scaling."""
    data: object              # StructureSet
    units: str
    y: np.ndarray
    C: np.ndarray
    train: np.ndarray         # local row indices
    val: np.ndarray
    test: np.ndarray
    baseline_coef: np.ndarray
    baseline_test_mae: float
    baseline_val_mae: float
    e0: np.ndarray | None     # per-element reference (sum readout) the network learns on top of
    mean: float
    std: float

    scheme: str = "random"

    def split_record(self, seed: int, n_train: int) -> dict:
        """The split as stored in the training state (a resumed run must match it)."""
        record = {"seed": seed, "n_train": n_train, "n_val": len(self.val), "n_test": len(self.test)}
        return record if self.scheme == "random" else {**record, "scheme": self.scheme}


def prepare_data(arch: str, target: str, readout: str, n_train: int, seed: int, n_val: int | None,
                 n_test: int | None, split: str = "standard") -> TrainingData:
    """Load QM9, split it, fit the composition baseline and the reference the network learns on top of."""
    from cpd_core.data.qm9 import load_qm9

    if split not in SPLITS:
        raise CPDInputError(f"Unknown split '{split}'; choose one of {SPLITS}.")
    qm9 = load_qm9()
    make_split = standard_split if split == "standard" else split_indices
    train_rows, val_rows, test_rows = make_split(len(qm9), n_train, seed, n_val, n_test)
    rows = np.concatenate([train_rows, val_rows, test_rows])
    data = qm9.subset(rows)
    tr = np.arange(len(train_rows))
    va = np.arange(len(train_rows), len(train_rows) + len(val_rows))
    te = np.arange(len(train_rows) + len(val_rows), len(rows))
    y = data.target_values(target).astype(np.float64)
    C = composition(data)

    base_coef = fit_composition(C[tr], y[tr], intercept=True)
    base_test_mae = float(np.mean(np.abs(apply_composition(C[te], base_coef) - y[te])))
    base_val_mae = float(np.mean(np.abs(apply_composition(C[va], base_coef) - y[va])))
    if readout == "sum":
        e0 = fit_composition(C[tr], y[tr], intercept=False)   # per-element reference, no intercept
        resid = y[tr] - C[tr] @ e0
        mean = 0.0
        if arch == "mace":  # ScaleShiftMACE scales per-atom interaction energies
            std = float(np.std(resid) / np.sqrt(np.mean(data.n_atoms[tr])))
        else:
            std = float(np.std(resid))
    else:
        e0 = None
        mean, std = float(np.mean(y[tr])), float(np.std(y[tr]))
    return TrainingData(data=data, units=qm9.units.get(target, "eV"), y=y, C=C, train=tr, val=va, test=te,
                        baseline_coef=base_coef, baseline_test_mae=base_test_mae, baseline_val_mae=base_val_mae,
                        e0=e0, mean=mean, std=std, scheme=split)
