"""Dashboard layer: users' structure files, checked (name, size, content) and stored by content hash in the cache."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cpd_core.errors import CPDInputError

UPLOAD_SUFFIXES = (".extxyz", ".xyz", ".cif", ".db", ".vasp", ".poscar")
UPLOAD_NAMES = ("poscar", "contcar")
COMPRESSED = (".gz", ".bz2", ".xz")


def slug(text: str) -> str:
    """Text made safe as a file name (uploaded files, downloads) or a widget key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def uploads_root() -> Path:
    from cpd_core.paths import cache_dir

    root = cache_dir() / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    return root


def upload_path(dataset_id: str) -> Path | None:
    """The stored file of an `upload:<hash>/<name>` dataset id, or None."""
    if not dataset_id.startswith("upload:"):
        return None
    rest = dataset_id[len("upload:"):]
    if not re.fullmatch(r"[0-9a-f]{16}/[A-Za-z0-9_.-]+", rest):
        return None
    path = uploads_root() / rest
    return path if path.is_file() else None


def _check_name(name: str) -> str:
    base = Path(name).name
    lowered = base.lower()
    inner = lowered
    for suffix in COMPRESSED:
        if lowered.endswith(suffix):
            inner = lowered[: -len(suffix)]
    if not (inner.endswith(UPLOAD_SUFFIXES) or Path(inner).name in UPLOAD_NAMES):
        raise CPDInputError(
            f"'{base}' is not a structure file this app reads. Upload extxyz/xyz, CIF, POSCAR/CONTCAR (.vasp), or an "
            f"ASE database (.db), optionally compressed (.gz, .bz2, .xz).")
    return slug(base) or "structures.extxyz"


def handle_upload(name: str, data: bytes, max_bytes: int | None = None):
    """Validate and store an uploaded structure file; returns (dataset id, StructureSet).

    Raises CPDInputError with a plain message for files that are too large, of an unknown kind, unreadable,
    empty, or with fewer than 10 structures. Files are parsed by `ase.io` only (never unpickled).
    """
    from cpd_core.data.userfiles import MAX_UPLOAD_BYTES, load_structure_file

    limit = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    if len(data) > limit:
        raise CPDInputError(f"'{name}' is {len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB. "
                            "Upload a subset or compress it (.gz).")
    if not data:
        raise CPDInputError(f"'{name}' is empty.")
    safe = _check_name(name)
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = uploads_root() / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe
    if not path.is_file():
        tmp = folder / f".{safe}.tmp"
        tmp.write_bytes(data)
        tmp.replace(path)
    try:
        structures = load_structure_file(path, name=Path(name).name)
    except CPDInputError:
        path.unlink(missing_ok=True)
        raise
    if len(structures) < 10:
        raise CPDInputError(f"'{name}' holds {len(structures)} structure(s); CPD needs at least 10 (better hundreds) "
                            "with numeric properties to probe.")
    if not structures.targets:
        raise CPDInputError(f"'{name}' has no numeric per-structure properties to use as targets (e.g. energy=... "
                            "in the extxyz comment line).")
    return f"upload:{digest}/{safe}", structures
