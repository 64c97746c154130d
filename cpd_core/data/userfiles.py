"""The user's own structure files through `ase.io` (extxyz, xyz, CIF, POSCAR, ASE database, ...).

Compressed files are decompressed into memory first and parsed from there: ASE reading a gzipped multi-frame
file directly seeks back and forth in the compressed stream and becomes quadratic (minutes for 36k frames).

Stage: data (stage 1 of 5).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path

import ase.io
from ase.io.formats import UnknownFileTypeError, filetype, ioformats

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


def _frames(source, fmt: str) -> list:
    """Every frame of `source` in order; a parse error names the frame where reading stopped."""
    frames = []
    try:
        for atoms in ase.io.iread(source, index=":", format=fmt):
            frames.append(atoms)
    except Exception as exc:  # ASE raises many different types for malformed files
        raise _FrameError(len(frames) + 1, exc) from exc
    return frames


class _FrameError(Exception):
    def __init__(self, frame: int, cause: Exception):
        super().__init__(frame, cause)
        self.frame, self.cause = frame, cause


def read_atoms(path: str | Path, format: str | None = None) -> list:
    """All frames of a structure file as `ase.Atoms`, in file order; clear errors for missing or bad files."""
    path = Path(path)
    if path.is_dir():
        raise CPDInputError(f"{path} is a directory, not a structure file. Name one file inside it (extxyz, xyz, "
                            "CIF, POSCAR, ASE database), or join the files into one extxyz file first.")
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
            frames = _frames(io.StringIO(data.decode()), fmt)
        else:
            fmt = format or _guess_format(path.name, None) or filetype(str(path), guess=True)
            if fmt not in ioformats:
                raise UnknownFileTypeError(fmt)
            frames = _read_db(path) if fmt == "db" else _frames(str(path), fmt)
    except CPDInputError:
        raise
    except UnknownFileTypeError:
        raise CPDInputError(
            f"Cannot tell the format of {path.name}: ase.io reads extxyz, xyz, CIF, POSCAR/CONTCAR (.vasp), ASE "
            "databases (.db) and more, recognised by the file name's ending or content; rename the file "
            "accordingly (e.g. structures.extxyz).") from None
    except _FrameError as exc:
        where = (f"parsing stopped inside frame {exc.frame} (frames 1-{exc.frame - 1} were read)" if exc.frame > 1
                 else "parsing stopped in its first frame")
        raise CPDInputError(
            f"Could not read {path.name} as a structure file: {where} ({type(exc.cause).__name__}: {exc.cause}). "
            "The file may be truncated or malformed there: fix or remove that frame, or use a format ase.io reads "
            "(extxyz, xyz, CIF, POSCAR, ASE database)."
        ) from exc.cause
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
    return read_structure_file(path, name, format)[0]


def read_structure_file(path: str | Path, name: str | None = None, format: str | None = None,
                        drop_empty: bool = False) -> tuple[StructureSet, list[int]]:
    """(StructureSet, frame numbers from 0 of the structures with no atoms that were left out). Structures with
    no atoms are an error, or left out with `drop_empty`."""
    path = Path(path)
    frames = read_atoms(path, format=format)
    empty = [i for i, atoms in enumerate(frames) if len(atoms) == 0] if drop_empty else []
    if empty:
        frames = [atoms for atoms in frames if len(atoms)]
        if not frames:
            raise CPDInputError(f"{path.name} holds only structures with no atoms.")
    return StructureSet.from_atoms_list(name or path.name, frames), empty
