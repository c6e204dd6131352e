"""Run one scripted sequence on a System and compare two runs field by field.

A script is a list of :class:`Step` s: system calls on named descriptors
(``"a"``, ``"b"``: fd numbers differ between kernels and are never compared),
sysctls, and frames injected on the capture interface.  :func:`run` executes
it on one :class:`Side` and returns one :class:`Outcome` per step: the fields
the call returned (values written back by the kernel, record fields and bytes
of a buffer), or the errno it failed with.  :func:`compare` lines up two runs
and lists every field that differs.  Timestamps are compared only for being
set, the one thing two kernels running at different times can agree on.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError
from bsdbpf.records import parse

__all__ = ["IFNAME", "Difference", "Outcome", "Side", "Step", "compare", "report", "run"]

IFNAME = "$IF"  # stands for the side's capture interface in a script
PAGE = mmap.PAGESIZE
ZHDR = ffi.sizeof("struct bpf_zbuf_header")


class Step(NamedTuple):
    """One operation of a script: ``op`` with its arguments, on descriptor ``fd``."""

    op: str
    fd: str = ""
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        shown = ", ".join(a.hex() if isinstance(a, bytes) else repr(a) for a in self.args)
        return f"{self.op}({', '.join(filter(None, [self.fd, shown]))})"


Outcome = dict[str, Any]  # field -> value; a failure is {"errno": "EINVAL"}


@dataclass
class Side:
    """A System to run scripts on: its capture interface and its traffic source."""

    name: str
    system: Any
    ifname: str
    inject: Callable[[bytes, bool], None]
    close: Callable[[], None] = lambda: None


@dataclass
class _Descriptor:
    fd: int
    zbufs: list[mmap.mmap] = field(default_factory=list)
    views: list[Any] = field(default_factory=list)


class _Run:
    """The state of one script on one side: descriptors, buffers, changed sysctls."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.fds: dict[str, _Descriptor] = {}
        self.saved_sysctls: dict[str, bytes] = {}

    def ioctl(self, name: str, request: str, arg: Any = None) -> None:
        self.side.system.ioctl(self.fds[name].fd, getattr(lib, request), arg)

    # -- operations: each returns the step's fields ---------------------------

    def op_open(self, name: str) -> Outcome:
        # Non-blocking: a read with nothing to return fails (EAGAIN) instead
        # of hanging the run.
        self.fds[name] = _Descriptor(
            self.side.system.open("/dev/bpf", os.O_RDWR | os.O_NONBLOCK))
        return {}

    def op_close(self, name: str) -> Outcome:
        self.release(name)
        return {}

    def op_uint(self, name: str, request: str, value: int | None = None) -> Outcome:
        """An ioctl taking a u_int: the value the kernel leaves in it."""
        p = ffi.new("u_int *", 0 if value is None else value)
        self.ioctl(name, request, p)
        return {"value": int(p[0])}

    def op_size(self, name: str, request: str) -> Outcome:
        """An ioctl returning a size_t (BIOCGETZMAX)."""
        p = ffi.new("size_t *")
        self.ioctl(name, request, p)
        return {"value": int(p[0])}

    def op_noarg(self, name: str, request: str) -> Outcome:
        self.ioctl(name, request)
        return {}

    def op_setif(self, name: str, ifname: str) -> Outcome:
        ifr = ffi.new("struct ifreq *")
        ifr.ifr_name = (self.side.ifname if ifname == IFNAME else ifname).encode()
        self.ioctl(name, "BIOCSETIF", ifr)
        return {}

    def op_setf(self, name: str, insns: tuple[tuple[int, int, int, int], ...]) -> Outcome:
        arr = ffi.new("struct bpf_insn[]", max(len(insns), 1))
        for i, (code, jt, jf, k) in enumerate(insns):
            arr[i].code, arr[i].jt, arr[i].jf, arr[i].k = code, jt, jf, k
        prog = ffi.new("struct bpf_program *")
        prog.bf_len, prog.bf_insns = len(insns), (arr if insns else ffi.NULL)
        self.ioctl(name, "BIOCSETF", prog)
        return {}

    def op_stats(self, name: str) -> Outcome:
        st = ffi.new("struct bpf_stat *")
        self.ioctl(name, "BIOCGSTATS", st)
        return {"recv": int(st.bs_recv), "drop": int(st.bs_drop)}

    def op_version(self, name: str) -> Outcome:
        v = ffi.new("struct bpf_version *")
        self.ioctl(name, "BIOCVERSION", v)
        return {"major": int(v.bv_major), "minor": int(v.bv_minor)}

    def op_fionread(self, name: str) -> Outcome:
        p = ffi.new("int *")
        self.ioctl(name, "FIONREAD", p)
        return {"value": int(p[0])}

    def op_read(self, name: str, nbytes: int | None = None) -> Outcome:
        if nbytes is None:
            nbytes = self.op_uint(name, "BIOCGBLEN")["value"]
        buf = bytearray(nbytes)
        n = self.side.system.read(self.fds[name].fd, buf)
        return {"length": n, **self.records(name, buf, 0, n)}

    def records(self, name: str, buf: Any, start: int, end: int) -> Outcome:
        """Each record's fields; offsets relative to ``start``."""
        tstamp = self.op_uint(name, "BIOCGTSTAMP")["value"]
        raw = ffi.buffer(buf) if isinstance(buf, ffi.CData) else buf
        with parse(raw, tstamp, start=start, end=end) as batch:
            out: Outcome = {"records": batch.total}
            columns = zip(batch.offset, batch.caplen, batch.wirelen, batch.timestamp_ns)
            for n, (data, caplen, datalen, ts) in enumerate(columns):
                out[f"record {n} data offset"] = data - start
                out[f"record {n} caplen"] = caplen
                out[f"record {n} datalen"] = datalen
                out[f"record {n} timestamp set"] = ts != 0
                out[f"record {n} bytes"] = bytes(raw[data:data + caplen]).hex()
        return out

    def op_sysctl(self, sysctl: str, value: int | None = None) -> Outcome:
        new = None if value is None else value.to_bytes(4, sys.byteorder, signed=True)
        old = self.side.system.sysctlbyname(sysctl, new)
        if new is not None:
            self.saved_sysctls.setdefault(sysctl, old)
        return {"value": int.from_bytes(old, sys.byteorder, signed=True)}

    def op_inject(self, frame: bytes, outgoing: bool = False) -> Outcome:
        self.side.inject(frame, outgoing)
        return {}

    # -- zero-copy ----------------------------------------------------------------

    def op_setzbuf(self, name: str, size: int) -> Outcome:
        """BIOCSETZBUF with two fresh anonymous mmaps of ``size`` bytes."""
        maps = [mmap.mmap(-1, size), mmap.mmap(-1, size)]
        views = [ffi.from_buffer(m, require_writable=True) for m in maps]
        bz = ffi.new("struct bpf_zbuf *")
        bz.bz_bufa, bz.bz_bufb, bz.bz_buflen = views[0], views[1], size
        try:
            self.ioctl(name, "BIOCSETZBUF", bz)
        except BaseException:  # not the kernel's: unmap at once
            for view, m in zip(views, maps):
                ffi.release(view)
                m.close()
            raise
        d = self.fds[name]
        d.zbufs, d.views = maps, views  # the kernel refuses a second BIOCSETZBUF
        return {}

    def _zbuf(self, name: str, which: str) -> tuple[Any, Any]:
        d = self.fds[name]
        view = d.views[0] if which == "a" else d.views[1]
        return view, ffi.cast("struct bpf_zbuf_header *", view)

    def op_rotzbuf(self, name: str) -> Outcome:
        bz = ffi.new("struct bpf_zbuf *")
        self.ioctl(name, "BIOCROTZBUF", bz)
        if not self.fds[name].views:
            return {"bufa": None, "bufb": None, "buflen": int(bz.bz_buflen)}
        a, b = (int(ffi.cast("uintptr_t", self._zbuf(name, w)[0])) for w in "ab")
        which = {0: None, a: "a", b: "b"}
        return {"bufa": which.get(int(ffi.cast("uintptr_t", bz.bz_bufa)), "?"),
                "bufb": which.get(int(ffi.cast("uintptr_t", bz.bz_bufb)), "?"),
                "buflen": int(bz.bz_buflen)}

    def op_zbuf(self, name: str, which: str) -> Outcome:
        """Buffer ``which``'s header and, if the user owns it, its records."""
        view, hdr = self._zbuf(name, which)
        kernel_gen = int(lib.bsdbpf_load_acquire(ffi.addressof(hdr, "bzh_kernel_gen")))
        out: Outcome = {"kernel_gen": kernel_gen, "user_gen": int(hdr.bzh_user_gen)}
        if kernel_gen != out["user_gen"]:
            length = int(hdr.bzh_kernel_len)
            out["kernel_len"] = length
            out.update(self.records(name, view, ZHDR, ZHDR + length))
        return out

    def op_ack(self, name: str, which: str) -> Outcome:
        _, hdr = self._zbuf(name, which)
        kernel_gen = lib.bsdbpf_load_acquire(ffi.addressof(hdr, "bzh_kernel_gen"))
        lib.bsdbpf_store_release(ffi.addressof(hdr, "bzh_user_gen"), kernel_gen)
        return {}

    # -- cleanup ---------------------------------------------------------------------

    def release(self, name: str) -> None:
        """Close the fd before its buffers are unmapped (the kernel may still write)."""
        d = self.fds.pop(name)
        try:
            self.side.system.close(d.fd)
        finally:
            for view in d.views:
                ffi.release(view)
            for m in d.zbufs:
                m.close()

    def cleanup(self) -> None:
        while self.fds:
            with contextlib.suppress(OSError):
                self.release(next(iter(self.fds)))
        for sysctl, old in reversed(list(self.saved_sysctls.items())):
            self.side.system.sysctlbyname(sysctl, old)
        self.saved_sysctls.clear()


def _call(state: _Run, step: Step) -> Outcome:
    method = getattr(state, f"op_{step.op}", None)
    if method is None:
        raise ValueError(f"unknown step {step.op!r}: expected one of "
                         f"{sorted(n[3:] for n in dir(state) if n.startswith('op_'))}")
    args = (step.fd, *step.args) if step.fd else step.args
    try:
        return dict(method(*args))
    except BPFError as err:
        return {"errno": errno.errorcode.get(err.errno or 0, str(err.errno))}


def run(side: Side, script: list[Step]) -> list[Outcome]:
    """Run ``script`` on ``side``; every descriptor and sysctl is put back after."""
    state = _Run(side)
    try:
        return [_call(state, step) for step in script]
    finally:
        state.cleanup()


class Difference(NamedTuple):
    """One field of one step whose value differs between the two sides."""

    index: int
    step: Step
    field: str
    left: Any
    right: Any


def compare(script: list[Step], left: list[Outcome], right: list[Outcome]) -> list[Difference]:
    """Every field, of every step, whose values differ (a missing field is None)."""
    diffs = []
    for i, (step, a, b) in enumerate(zip(script, left, right)):
        for key in sorted(set(a) | set(b), key=lambda k: (k != "errno", k)):
            if a.get(key) != b.get(key):
                diffs.append(Difference(i, step, key, a.get(key), b.get(key)))
    return diffs


def report(name: str, left: str, right: str, diffs: list[Difference]) -> Iterator[str]:
    """Lines that describe ``diffs`` of scenario ``name``."""
    if not diffs:
        yield f"{name}: same on {left} and {right}"
        return
    yield f"{name}: {len(diffs)} difference{'s' if len(diffs) != 1 else ''}"
    for d in diffs:
        yield f"  step {d.index} {d.step}: {d.field}: {left}={d.left!r} {right}={d.right!r}"
