"""Exceptions: one base class, each subclass mixed with the builtin a caller would catch.

Every error carries the errno (the host's constant of the same name, e.g.
``errno.EOPNOTSUPP``), the operation that failed (``"BIOCSETZBUF"``,
``"sysctl net.bpf.stats"``) and a message that says what to do.
:func:`from_errno` is the only place these are built; the real system and the
simulator both raise through it, so where an error comes from cannot change
its class.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

__all__ = [
    "BPFError",
    "BadAddress",
    "BufferTooSmall",
    "DescriptorLocked",
    "DeviceNotFound",
    "FilterError",
    "InterfaceDown",
    "InterfaceNotFound",
    "InternalError",
    "InvalidArgument",
    "InvalidBuffer",
    "InvalidFilter",
    "InvalidStateError",
    "NotAttached",
    "PermissionDenied",
    "SimulatedPanic",
    "SysctlNotFound",
    "UnsupportedError",
    "WouldBlock",
    "WriteRejected",
    "WrongBufferMode",
    "ZeroCopyDisabled",
    "from_errno",
]


class BPFError(OSError):
    """Base class of every bsdbpf error; an :class:`OSError` with ``errno``.

    Attributes: ``errno``, ``strerror``, ``op`` (the failed operation),
    ``ifname`` (where an interface is involved) and ``hint`` (what to do).
    """

    def __init__(
        self,
        errnum: int,
        op: str,
        hint: str = "",
        ifname: str | None = None,
    ) -> None:
        super().__init__(errnum, os.strerror(errnum) if errnum else "error")
        self.op = op
        self.hint = hint
        self.ifname = ifname

    def __str__(self) -> str:
        where = f"{self.op} on {self.ifname}" if self.ifname else self.op
        text = f"[Errno {self.errno}] {where}: {self.strerror}"
        return f"{text}. {self.hint[:1].upper()}{self.hint[1:]}" if self.hint else text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errno, self.op, self.hint, self.ifname))


class PermissionDenied(BPFError, PermissionError):
    """EACCES/EPERM: opening /dev/bpf, writing a sysctl, reading net.bpf.stats."""


class DescriptorLocked(PermissionDenied):
    """EPERM from a request that BIOCLOCK forbids."""


class WriteRejected(PermissionDenied):
    """EPERM from write(2): the write filter (BIOCSETWF) refused the frame."""


class InterfaceNotFound(BPFError, LookupError):
    """ENXIO from BIOCSETIF (no interface of that name has a BPF tap) or SIOCGIFFLAGS
    (no interface of that name)."""


class DeviceNotFound(BPFError, FileNotFoundError):
    """ENOENT from open(2): no such device node."""


class SysctlNotFound(BPFError, LookupError):
    """ENOENT from sysctlbyname: the kernel has no such variable."""


class InvalidStateError(BPFError):
    """The request is not allowed in the descriptor's current state."""


class NotAttached(InvalidStateError):
    """ENXIO from read(2)/write(2): no interface, or the interface went away."""


class WrongBufferMode(InvalidStateError):
    """EOPNOTSUPP: the request does not apply in the current buffer mode."""


class InvalidArgument(BPFError, ValueError):
    """EINVAL (and EMSGSIZE): the kernel refused an argument."""


class FilterError(InvalidArgument):
    """EINVAL: a filter that cannot be built: an expression libpcap cannot
    compile, program text that does not parse, a bad instruction field."""


class InvalidFilter(FilterError):
    """EINVAL from BIOCSETF/BIOCSETFNR/BIOCSETWF, or a program
    :func:`bsdbpf.filter.validate` finds the kernel would refuse.

    Where the program breaks one of bpf_validate's rules, ``index`` is the
    instruction's index and ``rule`` names the rule (``"opcode"``,
    ``"jump"``, ``"memory"``, ``"division"``, ``"last-ret"``, ``"length"``, or
    ``"field"`` for a value that does not fit its field of ``struct bpf_insn``);
    both are None when only the kernel's errno is known.
    """

    index: int | None = None
    rule: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (*super().__reduce__(), {"index": self.index, "rule": self.rule})


class InvalidBuffer(InvalidArgument):
    """EINVAL from BIOCSETZBUF: alignment or size of the zero-copy buffers."""


class BufferTooSmall(BPFError):
    """ENOMEM/ENOSPC: the output buffer given to the kernel is too small."""


class BadAddress(BPFError):
    """EFAULT: memory given to the kernel is not mapped readable and writable."""


class InterfaceDown(BPFError):
    """ENETDOWN: the interface is administratively down."""


class WouldBlock(BPFError, BlockingIOError):
    """EAGAIN: nothing to read on a non-blocking descriptor."""


class UnsupportedError(BPFError):
    """The feature is not available on this kernel or build."""


class ZeroCopyDisabled(UnsupportedError):
    """BIOCSETBUFMODE(ZBUF) refused because net.bpf.zerocopy_enable is 0."""


class InternalError(BPFError):
    """Something that should never happen; the message carries diagnostics."""


class SimulatedPanic(BPFError):
    """The simulator's stand-in for a request that would panic FreeBSD's kernel."""


for _cls in [BPFError, *(globals()[_n] for _n in __all__ if _n[0].isupper())]:
    _cls.__module__ = "bsdbpf"

_FILTER_OPS = {"BIOCSETF", "BIOCSETFNR", "BIOCSETWF"}
# Requests that return EINVAL when no interface is attached (spec §e).
_NEEDS_ATTACH_OPS = {"BIOCGETIF", "BIOCGDLT", "BIOCGDLTLIST", "BIOCPROMISC"}
ZEROCOPY_ENABLE_HINT = (
    "enable zero-copy with `sysctl net.bpf.zerocopy_enable=1` "
    "(or `bsdbpf zerocopy on`) as root"
)

# fsetown(9) refuses an owner outside the caller's session with the same EPERM
# that a locked descriptor gives.
_SIGIO_OWNER_HINT = (
    "the descriptor is locked (BIOCLOCK), or the SIGIO owner is not a process or "
    "process group in your session"
)

_DETACHED_HINT = "the descriptor is not attached (BIOCSETIF) or its interface went away"

# (operation, errno) -> (class, what to do).  An operation of None matches any.
_TABLE: dict[tuple[str | None, int], tuple[type[BPFError], str]] = {
    ("open", _errno.EACCES): (
        PermissionDenied,
        "opening /dev/bpf needs root, or a devfs.rules entry that grants your group access",
    ),
    ("open", _errno.ENOENT): (DeviceNotFound, "the BPF device is /dev/bpf (alias /dev/bpf0)"),
    ("open", _errno.EPERM): (
        PermissionDenied,
        "a security policy (securelevel, MAC or jail) refuses /dev/bpf to this process",
    ),
    ("FIOSETOWN", _errno.EPERM): (DescriptorLocked, _SIGIO_OWNER_HINT),
    ("TIOCSPGRP", _errno.EPERM): (DescriptorLocked, _SIGIO_OWNER_HINT),
    ("read", _errno.EBADF): (
        InvalidStateError,
        "the descriptor was opened write-only; open it O_RDONLY or O_RDWR to read",
    ),
    ("write", _errno.EBADF): (
        InvalidStateError,
        "the descriptor was opened read-only; open it O_WRONLY or O_RDWR to write",
    ),
    ("BIOCSETIF", _errno.ENXIO): (
        InterfaceNotFound,
        "no interface of that name has a BPF tap; `ifconfig -l` lists interfaces",
    ),
    ("SIOCGIFFLAGS", _errno.ENXIO): (
        InterfaceNotFound,
        "no interface of that name; `ifconfig -l` lists interfaces",
    ),
    ("BIOCSETIF", _errno.EINVAL): (
        InvalidStateError,
        "in zero-copy mode, register the buffers (BIOCSETZBUF) before attaching",
    ),
    ("BIOCSETBUFMODE", _errno.EINVAL): (
        InvalidArgument,
        "the mode must be BPF_BUFMODE_BUFFER or BPF_BUFMODE_ZBUF, and zero-copy needs "
        "net.bpf.zerocopy_enable=1: " + ZEROCOPY_ENABLE_HINT,
    ),
    ("BIOCSETBUFMODE", _errno.EBUSY): (
        InvalidStateError,
        "the buffer mode is fixed once buffers exist or an interface is attached; "
        "set it first, right after open",
    ),
    ("BIOCSETZBUF", _errno.EINVAL): (
        InvalidBuffer,
        "zero-copy buffers must be non-NULL, page-aligned, a whole number of pages, at most "
        "BIOCGETZMAX bytes, and registered once, before BIOCSETIF",
    ),
    ("BIOCSDLT", _errno.EINVAL): (
        InvalidArgument,
        "attach the descriptor first (BIOCSETIF) and pick a link type the interface "
        "offers (BIOCGDLTLIST)",
    ),
    ("BIOCSBLEN", _errno.EINVAL): (
        InvalidStateError,
        "the buffer size can only be set before the descriptor is attached (BIOCSETIF)",
    ),
    ("read", _errno.EINVAL): (
        InvalidArgument,
        "read(2) on /dev/bpf needs a buffer of exactly BIOCGBLEN bytes",
    ),
    ("read", _errno.EOPNOTSUPP): (
        WrongBufferMode,
        "in zero-copy mode packets are taken from the shared buffers, not read(2)",
    ),
    ("read", _errno.ENXIO): (NotAttached, _DETACHED_HINT),
    ("write", _errno.ENXIO): (NotAttached, _DETACHED_HINT),
    ("write", _errno.EPERM): (WriteRejected, "the write filter (BIOCSETWF) refused the frame"),
    ("write", _errno.EMSGSIZE): (
        InvalidArgument,
        "the frame must hold the link header and at most the interface's MTU after it",
    ),
    ("write", _errno.ENETDOWN): (InterfaceDown, "bring the interface up with `ifconfig IF up`"),
    ("BIOCGDLTLIST", _errno.ENOMEM): (
        BufferTooSmall,
        "the list buffer is smaller than the number of link types",
    ),
    (None, _errno.EACCES): (PermissionDenied, "this needs root"),
    (None, _errno.EOPNOTSUPP): (
        WrongBufferMode,
        "this request does not apply in the descriptor's buffer mode (BIOCGETBUFMODE)",
    ),
    (None, _errno.EBUSY): (InvalidStateError, "the descriptor is busy"),
    (None, _errno.ENXIO): (NotAttached, "the descriptor is not attached to an interface"),
    (None, _errno.EINVAL): (InvalidArgument, ""),
    (None, _errno.ENOTTY): (
        InvalidArgument,
        "/dev/bpf does not know this request: its number or argument size is wrong",
    ),
    (None, _errno.EBADF): (InvalidStateError, "the file descriptor is not open"),
    (None, _errno.EMSGSIZE): (InvalidArgument, ""),
    (None, _errno.EFAULT): (
        BadAddress,
        "the memory passed to the kernel must stay mapped readable and writable",
    ),
    (None, _errno.ENOMEM): (BufferTooSmall, "the output buffer is too small"),
    (None, _errno.ENOSPC): (BufferTooSmall, "the output buffer is too small"),
    (None, _errno.ENETDOWN): (InterfaceDown, "bring the interface up with `ifconfig IF up`"),
    (None, _errno.EAGAIN): (WouldBlock, "no data yet on a non-blocking descriptor"),
    (None, _errno.ENOENT): (SysctlNotFound, "this kernel has no such sysctl"),
    (None, _errno.EIO): (InternalError, "the kernel reported an I/O error"),
    (None, _errno.ENOSYS): (UnsupportedError, "this system does not provide the call"),
}


def from_errno(
    errnum: int,
    op: str,
    *,
    ifname: str | None = None,
    hint: str | None = None,
    cls: type[BPFError] | None = None,
) -> BPFError:
    """Build the exception for ``errnum`` returned by operation ``op``.

    ``op`` is the request's name (``"BIOCSETZBUF"``), ``"open"``, ``"read"``,
    ``"write"`` or ``"sysctl NAME"``.  ``cls`` and ``hint`` refine the defaults
    where the caller knows more than the errno says (the errno is kept).
    """
    found = _TABLE.get((op, errnum))
    if found is None and errnum == _errno.EPERM:
        found = (
            (PermissionDenied, "writing sysctls and reading net.bpf.stats need root")
            if op.startswith("sysctl")
            else (DescriptorLocked, "the descriptor is locked (BIOCLOCK) against this request")
        )
    if found is None and errnum == _errno.EINVAL and op in _NEEDS_ATTACH_OPS:
        found = (InvalidArgument, "attach the descriptor to an interface first (BIOCSETIF)")
    if found is None and errnum == _errno.EINVAL and op in _FILTER_OPS:
        found = (
            InvalidFilter,
            "the kernel refused the program: it is longer than net.bpf.maxinsns, or "
            "bpf_validate rejected it (bsdbpf.filter.validate(program) names the "
            "instruction and the rule)",
        )
    if found is None:
        found = _TABLE.get((None, errnum), (BPFError, ""))
    default_cls, default_hint = found
    return (cls or default_cls)(errnum, op, default_hint if hint is None else hint, ifname)
