"""Enums and records shared by the layers: what a descriptor's knobs and counters hold.

A leaf module (it imports only ``_native`` and the standard library), so the
raw layer, :class:`bsdbpf.Descriptor` and :mod:`bsdbpf.stats` share these
types without importing each other.  ``bsdbpf`` and ``bsdbpf.descriptor``
re-export them.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from bsdbpf._native import lib

__all__ = ["BpfStat", "BpfVersion", "BufferMode", "Direction", "Insn"]

#: One classic BPF instruction as ``(code, jt, jf, k)``.
Insn = tuple[int, int, int, int]


class Direction(enum.IntEnum):
    """Which packets a descriptor sees (BIOCSDIRECTION)."""

    IN = lib.BPF_D_IN  #: received only
    INOUT = lib.BPF_D_INOUT  #: received and sent (FreeBSD's default)
    OUT = lib.BPF_D_OUT  #: sent only


class BufferMode(enum.IntEnum):
    """How packets reach the process (BIOCSETBUFMODE)."""

    BUFFER = lib.BPF_BUFMODE_BUFFER  #: kernel buffers copied out by read(2)
    ZBUF = lib.BPF_BUFMODE_ZBUF  #: zero-copy: buffers shared with the kernel


class BpfVersion(NamedTuple):
    """The BPF version the kernel implements (BIOCVERSION)."""

    major: int
    minor: int


class BpfStat(NamedTuple):
    """Packet counters of a descriptor (BIOCGSTATS)."""

    recv: int  #: packets offered to the descriptor
    drop: int  #: accepted packets dropped for lack of buffer space
