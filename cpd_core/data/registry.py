"""One place that lists the datasets, says whether each is available here, and loads them by name.

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cpd_core.data import mp, qm9
from cpd_core.data.structures import StructureSet
from cpd_core.data.userfiles import load_structure_file
from cpd_core.errors import CPDInputError
from cpd_core.paths import mp_data_path


@dataclass
class DatasetInfo:
    name: str
    description: str
    size: int | None
    targets: dict[str, str]  # name -> unit
    available: bool
    message: str = ""
    default_subset: int | None = None
    kind: str = "molecules"
    extra: dict = field(default_factory=dict)


def list_datasets() -> list[DatasetInfo]:
    """The built-in datasets with sizes, targets and availability (never raises)."""
    infos = [
        DatasetInfo(
            name="qm9",
            description="QM9: 130,831 small organic molecules (H, C, N, O, F) with DFT properties (qm9pack)",
            size=qm9.N_MOLECULES,
            targets={t: unit for t, (_, _, unit) in qm9.TARGETS.items()},
            available=qm9.importlib.util.find_spec("qm9pack") is not None,
            message="" if qm9.importlib.util.find_spec("qm9pack") else "Install qm9pack: pip install qm9pack",
            default_subset=2000,
        )
    ]
    path = mp_data_path()
    infos.append(
        DatasetInfo(
            name="mp",
            description=f"Materials Project crystals (2018 snapshot) from {path}",
            size=36_738 if path.name == "mp_crystals_2018.extxyz" and path.is_file() else None,
            targets=dict(mp.UNITS),
            available=mp.mp_available(path),
            message="" if mp.mp_available(path) else mp.UNAVAILABLE_HELP.format(path=path),
            default_subset=2000,
            kind="crystals",
        )
    )
    return infos


def load_dataset(name: str, n: int | None = None, seed: int = 0) -> StructureSet:
    """Load `qm9`, `mp` or a path to a structure file; n and seed pick a reproducible subset."""
    if name == "qm9":
        return qm9.load_qm9(n, seed)
    if name == "mp":
        return mp.load_mp(n, seed)
    if Path(name).exists():
        full = load_structure_file(name)
        return full if n is None else full.sample(n, seed)
    raise CPDInputError(f"Unknown dataset '{name}': use 'qm9', 'mp' or the path of a structure file.")
