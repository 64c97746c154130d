"""QM9 (130,831 small organic molecules) from the `qm9pack` package, converted once into a compact cache.

The CSV files are located through `importlib` (qm9pack's own helper imports `pkg_resources`). Energies
in Hartree are converted to eV; target units are recorded in `StructureSet.units`.

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
from ase.data import atomic_numbers
from filelock import FileLock

from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError
from cpd_core.paths import cache_dir

HARTREE_TO_EV = 27.211386245988
CSV_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

# our column -> (qm9pack column, factor, unit)
TARGETS = {
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_EV, "eV"),
    "homo": ("HOMO_au", HARTREE_TO_EV, "eV"),
    "lumo": ("LUMO_au", HARTREE_TO_EV, "eV"),
    "dipole": ("Dipole_debye", 1.0, "D"),
    "polarizability": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "U0": ("InternalEnergy_0K_au", HARTREE_TO_EV, "eV"),
    "zpve": ("ZPVE_au", HARTREE_TO_EV, "eV"),
    "cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/(mol K)"),
    "r2": ("R2_bohr2", 1.0, "bohr^2"),
}
DESCRIPTIONS = {
    "gap": "HOMO-LUMO gap",
    "homo": "HOMO energy",
    "lumo": "LUMO energy",
    "dipole": "dipole moment",
    "polarizability": "isotropic polarizability",
    "U0": "internal energy at 0 K",
    "zpve": "zero-point vibrational energy",
    "cv": "heat capacity at 298 K",
    "r2": "electronic spatial extent",
}
N_MOLECULES = 130_831


def _qm9pack_data() -> Path:
    """qm9pack's data folder, found with importlib without running the package's __init__ (it needs
    `pkg_resources`, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise CPDInputError("QM9 needs the `qm9pack` package: run `pip install qm9pack`.")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [p for p in CSV_PARTS if not (folder / p).is_file()]
    if missing:
        raise CPDInputError(f"qm9pack at {folder} lacks {missing}; reinstall it with `pip install --force-reinstall qm9pack`.")
    return folder


def _csv_frames():
    usecols = ["Index", "SMILES", "Elements", "XYZ_Ang"] + [col for col, _, _ in TARGETS.values()]
    folder = _qm9pack_data()
    for part in CSV_PARTS:
        yield pd.read_csv(folder / part, usecols=usecols)


def build_qm9() -> StructureSet:
    """Parse qm9pack's CSV files into a StructureSet (takes seconds; use `load_qm9`, which caches)."""
    df = pd.concat(list(_csv_frames()), ignore_index=True)
    df = df.sort_values("Index", kind="stable").reset_index(drop=True)
    elements = [json.loads(s.replace("'", '"')) for s in df["Elements"]]
    # coordinates are nested lists; a few use Mathematica notation (1.2*^-6) or "0." as in the original files
    flat = ",".join(df["XYZ_Ang"]).replace("[", "").replace("]", "").replace("*^", "e")
    positions = np.array(flat.split(","), dtype=np.float64).reshape(-1, 3)
    counts = np.array([len(e) for e in elements], dtype=np.int64)
    offsets = np.zeros(len(df) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    numbers = np.array([atomic_numbers[s] for e in elements for s in e], dtype=np.int16)
    if len(positions) != len(numbers):
        raise CPDInputError("qm9pack's coordinates and element lists disagree; reinstall qm9pack.")
    table = pd.DataFrame({"id": [f"qm9-{i:06d}" for i in df["Index"]], "smiles": df["SMILES"].astype(str)})
    for name, (col, factor, _) in TARGETS.items():
        table[name] = df[col].to_numpy(dtype=np.float64) * factor
    n = len(df)
    return StructureSet(
        name="qm9",
        numbers=numbers,
        positions=positions,
        offsets=offsets,
        cells=np.zeros((n, 3, 3)),
        pbc=np.zeros((n, 3), dtype=bool),
        table=table,
        targets=list(TARGETS),
        units={name: unit for name, (_, _, unit) in TARGETS.items()},
    )


def load_qm9(n: int | None = None, seed: int = 0) -> StructureSet:
    """All of QM9 (n=None) or a reproducible random subset of n molecules, from the compact cache."""
    folder = cache_dir() / "datasets" / "qm9"
    with FileLock(str(folder) + ".lock"):
        try:
            full = StructureSet.load(folder)
        except CPDInputError:
            full = build_qm9()
            full.save(folder)
    return full if n is None else full.sample(n, seed)
