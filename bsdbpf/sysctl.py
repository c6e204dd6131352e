"""The ``net.bpf`` sysctls for scripts: read, set, list, and zero-copy for one job.

::

    from bsdbpf import sysctl

    sysctl.get("net.bpf.maxbufsize")            # 524288
    old = sysctl.set("net.bpf.bufsize", 65536)  # as root; returns the old value
    for entry in sysctl.list():                 # the net.bpf tree: name, kind, ...
        print(entry.name, entry.value)
    with sysctl.zerocopy_enabled():             # net.bpf.zerocopy_enable=1, then back
        ...

Every function takes ``system=`` (default: :func:`bsdbpf.backend.default_system`).
A name the kernel does not have raises :class:`bsdbpf.SysctlNotFound` (a
LookupError); a write without root raises :class:`bsdbpf.PermissionDenied`
(a PermissionError).  Values are FreeBSD's 4-byte ints in the host's byte
order (:mod:`bsdbpf.raw`).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
from collections.abc import Iterator
from typing import NamedTuple

from bsdbpf import raw
from bsdbpf.backend import default_system
from bsdbpf.errors import BPFError, InvalidArgument, SysctlNotFound, from_errno
from bsdbpf.system import System

__all__ = ["ZEROCOPY_ENABLE", "SysctlEntry", "get", "list", "set", "zerocopy_enabled"]

ZEROCOPY_ENABLE = "net.bpf.zerocopy_enable"
ROOT = "net.bpf"
INTEGER, NODE = "integer", "node"  # the kinds, in the words of ``sysctl -t``

# The net.bpf tree of FreeBSD 14 (bpf.c, bpf_buffer.c): name -> (kind, description).
_TREE: dict[str, tuple[str, str]] = {
    ROOT: (NODE, "bpf sysctl"),
    "net.bpf.bufsize": (INTEGER, "Default capture buffer size in bytes"),
    "net.bpf.maxbufsize": (INTEGER, "Maximum capture buffer in bytes"),
    "net.bpf.maxinsns": (INTEGER, "Maximum bpf program instructions"),
    "net.bpf.optimize_writers": (INTEGER, "Do not send packets until BPF program is set"),
    "net.bpf.stats": (NODE, "bpf statistics portal"),
    ZEROCOPY_ENABLE: (INTEGER, "Enable new zero-copy BPF buffer sessions"),
}
_TABLE_HINT = {
    ROOT: "it is the node above the others: bsdbpf.sysctl.list() lists them",
    "net.bpf.stats": "it is a table of descriptors: bsdbpf.stats.read_stats() decodes it",
}


class SysctlEntry(NamedTuple):
    """One sysctl of the ``net.bpf`` tree, as :func:`list` reports it."""

    name: str  #: the full name, ``net.bpf.bufsize``
    kind: str  #: ``"integer"`` or ``"node"`` (a handler with a binary value)
    description: str  #: the kernel's description (``sysctl -d``)
    #: The value: an int, a node's bytes, or None if this process may not read it.
    value: int | bytes | None


def _system(system: System | None) -> System:
    return default_system() if system is None else system


def _not_an_int(name: str, op: str) -> BPFError:
    return from_errno(errno.EINVAL, op, cls=InvalidArgument,
                      hint=f"this is not an integer sysctl: {_TABLE_HINT[name]}")


def _int_sysctl(system: System | None, name: str, new: int | None) -> int:
    op = f"sysctl {name}"
    if name in _TABLE_HINT:
        raise _not_an_int(name, op)
    try:
        return raw.sysctl_int(_system(system), name, new)
    except SysctlNotFound as err:
        where = (" under net.bpf: bsdbpf.sysctl.list() shows those there are"
                 if name.startswith(ROOT + ".") else "")
        raise from_errno(errno.ENOENT, op, cls=SysctlNotFound,
                         hint=f"this kernel has no sysctl {name}{where}") from err


def get(name: str, *, system: System | None = None) -> int:
    """The value of the integer sysctl ``name`` (``"net.bpf.maxbufsize"``)."""
    return _int_sysctl(system, name, None)


def set(name: str, value: int, *, system: System | None = None) -> int:
    """Set the integer sysctl ``name`` to ``value`` (needs root); returns the old value."""
    return _int_sysctl(system, name, value)


def list(prefix: str = ROOT, *, system: System | None = None
         ) -> builtins.list[SysctlEntry]:
    """The sysctls at and below ``prefix`` in the ``net.bpf`` tree, with their
    kinds, descriptions and values, in name order, as ``sysctl -a`` lists them.

    Those this kernel lacks are left out; a value this process may not read
    (``net.bpf.stats`` without root) is None.  A prefix outside the tree
    raises :class:`bsdbpf.SysctlNotFound`.
    """
    names = [n for n in sorted(_TREE)
             if n != ROOT and (n == prefix or n.startswith(prefix + "."))]
    if not names:
        raise from_errno(errno.ENOENT, f"sysctl {prefix}", cls=SysctlNotFound, hint=(
            f"bsdbpf lists the net.bpf tree, which has no {prefix}: "
            f"its sysctls are {', '.join(n for n in sorted(_TREE) if n != ROOT)}"))
    sys_ = _system(system)
    entries = []
    for name in names:
        kind, description = _TREE[name]
        value: int | bytes | None
        try:
            data = raw.sysctl_bytes(sys_, name)
        except SysctlNotFound:
            continue  # an older kernel
        except PermissionError:
            value = None
        else:
            value = raw.decode_int(name, data) if kind == INTEGER else data
        entries.append(SysctlEntry(name, kind, description, value))
    return entries


@contextlib.contextmanager
def zerocopy_enabled(enabled: bool = True, *, system: System | None = None
                     ) -> Iterator[int]:
    """Set ``net.bpf.zerocopy_enable`` for the ``with`` block, then put the
    previous value back, even when the block raises; yields that value.

    Only descriptors that choose their buffer mode inside the block are
    affected (the kernel reads the sysctl at BIOCSETBUFMODE).  If the value
    already is what was asked, nothing is written (no root needed).
    """
    sys_ = _system(system)
    want = int(bool(enabled))
    old = get(ZEROCOPY_ENABLE, system=sys_)
    if bool(old) == bool(want):
        yield old
        return
    set(ZEROCOPY_ENABLE, want, system=sys_)
    try:
        yield old
    finally:
        set(ZEROCOPY_ENABLE, old, system=sys_)
