"""Materials Project crystals from an extended-XYZ file (path from `CPD_MP_PATH`, see `cpd_core.paths`).

Targets from each frame's info (band gap, formation energy per atom, total magnetization, Fermi energy) plus
density and volume per atom computed from the structure. Parsed once and cached; the paper's 2,000-crystal
subset is `load_mp(n=2000, seed=...)`, not a separate file.

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ase.units import _amu
from filelock import FileLock

from cpd_core.data.structures import StructureSet
from cpd_core.data.userfiles import read_atoms
from cpd_core.errors import CPDInputError
from cpd_core.paths import cache_dir, mp_data_path

UNITS = {
    "band_gap": "eV",
    "formation_energy_per_atom": "eV/atom",
    "total_magnetization": "μB/cell",
    "efermi": "eV",
    "density": "g/cm^3",
    "volume_per_atom": "Å^3/atom",
}
UNAVAILABLE_HELP = (
    "Materials Project crystals are not available: no file at {path}. Set CPD_MP_PATH to any file ase.io reads "
    "(extended XYZ with band_gap, formation_energy_per_atom, ... in each frame's info), or fetch data with your "
    "own Materials Project API key through `mp-api` and write it with `ase.io.write('mp.extxyz', atoms_list)`."
)


def mp_available(path: Path | None = None) -> bool:
    return Path(path or mp_data_path()).is_file()


def build_mp(path: Path) -> StructureSet:
    frames = read_atoms(path, format="extxyz")
    for atoms in frames:
        volume = atoms.get_volume()
        atoms.info["density"] = atoms.get_masses().sum() * _amu * 1e3 / (volume * 1e-24)
        atoms.info["volume_per_atom"] = volume / len(atoms)
        atoms.info.pop("spacegroup_kinds", None)
    ids = [str(a.info.get("mp_id", i)) for i, a in enumerate(frames)]
    s = StructureSet.from_atoms_list("mp", frames, units=UNITS, ids=ids)
    s.targets = [t for t in UNITS if t in s.targets] + [t for t in s.targets if t not in UNITS]
    s.units = {t: UNITS.get(t, "") for t in s.targets}
    return s


def load_mp(n: int | None = None, seed: int = 0, path: Path | None = None) -> StructureSet:
    """All crystals (n=None) or a reproducible random subset of n, parsed once and cached per source file."""
    path = Path(path or mp_data_path())
    if not path.is_file():
        raise CPDInputError(UNAVAILABLE_HELP.format(path=path))
    stat = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "datasets" / f"mp-{tag}"
    with FileLock(str(folder) + ".lock"):
        try:
            full = StructureSet.load(folder)
        except CPDInputError:
            full = build_mp(path)
            full.save(folder)
    return full if n is None else full.sample(n, seed)
