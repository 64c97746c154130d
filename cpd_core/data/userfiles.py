"""The user's own structure files through `ase.io` (extxyz, xyz, CIF, POSCAR, ASE database, ...).

Compressed files are decompressed into memory first and parsed from there: ASE reading a gzipped multi-frame
file directly seeks back and forth in the compressed stream and becomes quadratic (minutes for 36k frames).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path

import ase.io
from ase.io.formats import filetype

from cpd_core.data.structures import StructureSet
from cpd_core.errors import CPDInputError

_DECOMPRESS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


def _guess_format(name: str, text_head: bytes | None) -> str | None:
    lowered = name.lower()
    if lowered.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if lowered.endswith(".cif"):
        return "cif"
    if lowered.endswith(".db"):
        return "db"
    if Path(lowered).name in ("poscar", "contcar") or lowered.endswith((".poscar", ".vasp")):
        return "vasp"
    return None


def _read_db(path: Path) -> list:
    """Rows of an ASE database, with their key-value pairs in `atoms.info` (ase.io.read drops them)."""
    import ase.db

    frames = []
    for row in ase.db.connect(str(path)).select():
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        atoms.info.setdefault("id", str(row.id))
        frames.append(atoms)
    return frames


def read_atoms(path: str | Path, format: str | None = None) -> list:
    """All frames of a structure file as `ase.Atoms`, in file order; clear errors for missing or bad files."""
    path = Path(path)
    if not path.is_file():
        raise CPDInputError(f"Structure file not found: {path}. Check the path (any file ase.io reads works).")
    suffix = path.suffix.lower()
    try:
        if suffix in _DECOMPRESS:
            inner = path.name[: -len(suffix)]
            with _DECOMPRESS[suffix](path, "rb") as fh:
                data = fh.read()
            fmt = format or _guess_format(inner, data[:256])
            if fmt is None:
                raise CPDInputError(
                    f"Cannot tell the format of {path.name}: name the inner file like 'structures.extxyz.gz' "
                    "or pass the format explicitly (e.g. format='extxyz')."
                )
            frames = ase.io.read(io.StringIO(data.decode()), index=":", format=fmt)
        else:
            fmt = format or _guess_format(path.name, None) or filetype(str(path), guess=True)
            frames = _read_db(path) if fmt == "db" else ase.io.read(str(path), index=":", format=fmt)
    except CPDInputError:
        raise
    except Exception as exc:  # ASE raises many different types for malformed files
        raise CPDInputError(
            f"Could not read {path.name} as a structure file ({type(exc).__name__}: {exc}). "
            "Use a format ase.io reads (extxyz, xyz, CIF, POSCAR, ASE database) and check the file is complete."
        ) from exc
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    if not frames:
        raise CPDInputError(f"{path.name} holds no structures.")
    return list(frames)


def load_structure_file(path: str | Path, name: str | None = None, format: str | None = None) -> StructureSet:
    """A user's file as a StructureSet: numeric `atoms.info` entries become targets."""
    path = Path(path)
    frames = read_atoms(path, format=format)
    return StructureSet.from_atoms_list(name or path.name, frames)
