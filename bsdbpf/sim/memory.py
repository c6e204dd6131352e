"""Is process memory mapped, readable and (if asked) writable?  The kernel's
copyin/copyout and page wiring fail on such memory with EFAULT; the simulator
asks the host the same question before it touches a user pointer."""

from __future__ import annotations

import ctypes
import mmap
import os

__all__ = ["in_one_shared_mapping", "is_mapped"]

MAPS = "/proc/self/maps"


def _regions() -> list[tuple[int, int, str]]:
    regions = []
    with open(MAPS) as maps:
        for line in maps:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            regions.append((start, end, perms))
    return regions


def is_mapped(addr: int, length: int, *, write: bool) -> bool:
    """True if every byte of [addr, addr+length) is mapped readable, and writable
    too when ``write``."""
    if length <= 0:
        return True
    if not os.path.exists(MAPS):
        return _mapped_by_msync(addr, length)
    need = "rw" if write else "r"
    end = addr + length
    for start, stop, perms in sorted(_regions()):
        if stop <= addr or start > addr:
            continue
        if not perms.startswith(need):
            return False
        addr = stop
        if addr >= end:
            return True
    return False


def in_one_shared_mapping(addr: int, length: int) -> bool:
    """True if [addr, addr+length) lies in one MAP_SHARED mapping: one object
    the simulator can map a second time (see csrc/sim_user.c)."""
    if not os.path.exists(MAPS):
        return False
    return any(start <= addr and addr + length <= stop and perms[3:4] == "s"
               for start, stop, perms in _regions())


def _mapped_by_msync(addr: int, length: int) -> bool:
    """Without /proc, msync() at least tells mapped pages from unmapped ones."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    start = addr - addr % page  # msync wants a page-aligned start
    return int(libc.msync(start, addr + length - start, getattr(mmap, "MS_ASYNC", 1))) == 0
