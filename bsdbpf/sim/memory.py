"""Is process memory mapped readable and writable?  (BIOCSETZBUF's EFAULT check.)

The kernel wires the pages with read and write access and fails with EFAULT
when it cannot.  The simulator asks the host the same question.
"""

from __future__ import annotations

import ctypes
import mmap
import os

__all__ = ["is_mapped_rw"]

MAPS = "/proc/self/maps"


def _regions() -> list[tuple[int, int, str]]:
    regions = []
    with open(MAPS) as maps:
        for line in maps:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            regions.append((start, end, perms))
    return regions


def is_mapped_rw(addr: int, length: int) -> bool:
    """True if every byte of [addr, addr+length) is mapped readable and writable."""
    if not os.path.exists(MAPS):
        return _mapped_by_msync(addr, length)
    end = addr + length
    for start, stop, perms in sorted(_regions()):
        if stop <= addr or start > addr:
            continue
        if not perms.startswith("rw"):
            return False
        addr = stop
        if addr >= end:
            return True
    return False


def _mapped_by_msync(addr: int, length: int) -> bool:
    """Without /proc, msync() at least tells mapped pages from unmapped ones."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return int(libc.msync(addr, length, getattr(mmap, "MS_ASYNC", 1))) == 0
