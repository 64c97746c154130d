"""Keep freed memory in the process during extraction (glibc's malloc only).

Extraction allocates and frees the same large tensors batch after batch (pair tensors, per-angle features of
several MB). With glibc's defaults each of them is a fresh `mmap` whose pages fault in again on first touch, and
freed heap tops are returned to the OS; on the 2-core development machine that was about a fifth of CHGNet's
and SO3Net's extraction time (benchmarks/bench_extraction.py). `keep_freed_memory` raises glibc's mmap threshold
to its maximum (32 MiB) and its trim threshold to 1 GiB, so freed blocks are reused instead. It is process-wide
and permanent: the process keeps its peak heap. Set `CPD_KEEP_FREED_MEMORY=0` to leave malloc as it is.

Stage: representations (stage 3 of 5).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for this parameter on 64-bit systems
TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the setting once per process; True if glibc accepted it."""
    global _applied
    if _applied is None:
        _applied = os.environ.get("CPD_KEEP_FREED_MEMORY", "1") != "0" and _mallopt()
    return _applied


def _mallopt() -> bool:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): nothing to do
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
