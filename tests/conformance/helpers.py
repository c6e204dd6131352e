"""Shared helpers of the conformance suite: everything goes through the System seam.

Nothing here knows which kernel is underneath.  Numbers come from
``bsdbpf._native`` (the compiler's view of FreeBSD's ABI), layouts from
``ffi.offsetof``/``ffi.sizeof``; where the spec states an amd64 number the
test says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import ON_HOST, sim_only

from bsdbpf import raw
from bsdbpf._abi import request_name
from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError

ON_SIM = not ON_HOST
LP64 = ffi.sizeof("long") == 8
PAGE = 4096
ZMAX = 512 * PAGE  # BIOCGETZMAX: BPF_MAX_PAGES * PAGE_SIZE
ZHDR = ffi.sizeof("struct bpf_zbuf_header")  # 32
ETHERTYPE = 0x88B5  # IEEE local experimental: harmless on a real wire
WAIT = 5.0  # generous deadline for "eventually" (never a sleep)


_SIM_ONLY = {
    "IFACE_DEPARTURE": "needs an interface to depart (kernel.remove_interface); on the "
                       "real kernel this would destroy a cloned interface",
    "WOULD_PANIC": "FreeBSD's kernel would dereference NULL and panic",
}


def __getattr__(name: str) -> Any:
    """IFACE_DEPARTURE, WOULD_PANIC: sim_only marks, made on first use
    (after conftest.py registered the marker)."""
    if name in _SIM_ONLY:
        return sim_only(_SIM_ONLY[name])
    raise AttributeError(name)


def sim_bug(reason: str) -> Any:
    """A spec row the simulator does not meet yet: expected to fail on the sim only."""
    return pytest.mark.xfail(ON_SIM, strict=True, reason=f"sim bug: {reason}")


@contextlib.contextmanager
def raises(cls: type[BPFError], err: str) -> Iterator[Any]:
    """Assert the class AND the errno (the host's constant named ``err``)."""
    with pytest.raises(cls) as info:
        yield info
    assert isinstance(info.value, BPFError)
    assert info.value.errno == getattr(errno, err), (
        f"errno {info.value.errno} ({errno.errorcode.get(info.value.errno)}), expected {err}")


# -- frames and records -------------------------------------------------------

def eth_frame(size: int, fill: int | None = None, src: bytes = b"\x02\x00\x00\x00\x00\x01",
              dst: bytes = b"\xff" * 6) -> bytes:
    """An Ethernet frame of ``size`` bytes with a recognisable payload."""
    head = dst + src + ETHERTYPE.to_bytes(2, "big")
    body = bytes([fill] * (size - 14)) if fill is not None else bytes(
        (i * 7 + size) & 0xFF for i in range(size - 14))
    return (head + body)[:size]


def null_frame(size: int) -> bytes:
    """A DLT_NULL frame: 4-byte address family in host order (AF_INET), then payload."""
    return struct.pack("=I", 2) + bytes((i * 3 + size) & 0xFF for i in range(size - 4))


def wordalign(n: int) -> int:
    a = lib.BPF_ALIGNMENT
    return (n + a - 1) & ~(a - 1)


def uses_xhdr(tstamp: int) -> bool:
    return tstamp & lib.BPF_T_FORMAT_MASK in (lib.BPF_T_NANOTIME, lib.BPF_T_BINTIME)


def sizeof_bpf_hdr(tstamp: int) -> int:
    """SIZEOF_BPF_HDR(type) = offsetof(bh_hdrlen) + 2 (§a)."""
    st = "struct bpf_xhdr" if uses_xhdr(tstamp) else "struct bpf_hdr"
    return ffi.offsetof(st, "bh_hdrlen") + 2


def bpf_hdrlen(linkhdr: int, tstamp: int = 0) -> int:
    """The kernel's bpf_hdrlen(): network header word aligned (§a)."""
    return wordalign(linkhdr + sizeof_bpf_hdr(tstamp)) - linkhdr


@dataclass
class Record:
    offset: int  # of the header in the walked buffer
    caplen: int
    datalen: int
    hdrlen: int
    sec: int  # tv_sec / bt_sec
    frac: int  # tv_usec / bt_frac (ns or 2^-64) per the format
    data: bytes


def parse_header(buf: bytes, off: int, tstamp: int) -> tuple[int, int, int, int, int]:
    """(sec, frac, caplen, datalen, hdrlen) of the header at ``off``."""
    st = "struct bpf_xhdr" if uses_xhdr(tstamp) else "struct bpf_hdr"
    size = ffi.sizeof(st)
    raw = bytes(buf[off:off + size]).ljust(size, b"\0")
    h = ffi.cast(st + " *", ffi.from_buffer(raw))
    if uses_xhdr(tstamp):
        sec, frac = int(h.bh_tstamp.bt_sec), int(h.bh_tstamp.bt_frac)
    else:
        sec, frac = int(h.bh_tstamp.tv_sec), int(h.bh_tstamp.tv_usec)
    return sec, frac, int(h.bh_caplen), int(h.bh_datalen), int(h.bh_hdrlen)


def parse_records(buf: bytes, tstamp: int = 0, start: int = 0,
                  end: int | None = None) -> list[Record]:
    """Walk records as bpf(4) says: data at bh_hdrlen, next at WORDALIGN(hdrlen+caplen).
    Offsets are relative to ``start`` (32 in a zero-copy buffer)."""
    end = len(buf) if end is None else end
    out = []
    rel = 0
    while start + rel < end:
        off = start + rel
        sec, frac, caplen, datalen, hdrlen = parse_header(buf, off, tstamp)
        assert hdrlen >= sizeof_bpf_hdr(tstamp), f"corrupt record at {rel}"
        assert off + hdrlen + caplen <= end, f"record at {rel} runs past the end"
        out.append(Record(rel, caplen, datalen, hdrlen, sec, frac,
                          bytes(buf[off + hdrlen:off + hdrlen + caplen])))
        rel = wordalign(rel + hdrlen + caplen)
    return out


def build_header(tstamp: int, sec: int, frac: int, *, caplen: int, datalen: int,
                 hdrlen: int) -> bytes:
    """The bytes [0, hdrlen) of a record as catchpacket writes them: the zeroed
    header struct, fields filled, cut at hdrlen (the packet overwrites the rest)."""
    st = "struct bpf_xhdr" if uses_xhdr(tstamp) else "struct bpf_hdr"
    h = ffi.new(st + " *")
    if uses_xhdr(tstamp):
        h.bh_tstamp.bt_sec, h.bh_tstamp.bt_frac = sec, frac
    else:
        h.bh_tstamp.tv_sec, h.bh_tstamp.tv_usec = sec, frac
    h.bh_caplen, h.bh_datalen, h.bh_hdrlen = caplen, datalen, hdrlen
    raw = bytes(ffi.buffer(h))
    return raw[:hdrlen].ljust(hdrlen, b"\0")


def expected_buffer(records: list[tuple[bytes, int, int, int, int]], tstamp: int,
                    hdrlen: int) -> bytes:
    """The byte-exact buffer for (frame, caplen, sec, frac, datalen) records:
    zero padding between records, none after the last (§f)."""
    out = bytearray()
    for frame, caplen, sec, frac, datalen in records:
        out += b"\0" * (wordalign(len(out)) - len(out))
        out += build_header(tstamp, sec, frac, caplen=caplen, datalen=datalen,
                            hdrlen=hdrlen) + frame[:caplen]
    return bytes(out)


# -- filters -------------------------------------------------------------------

def insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


RET_K = lib.BPF_RET | lib.BPF_K


def program(insns: list[tuple[int, int, int, int]]) -> tuple[Any, Any]:
    """(struct bpf_program *, keep-alive array)."""
    arr = ffi.new("struct bpf_insn[]", max(len(insns), 1))
    for i, (code, jt, jf, k) in enumerate(insns):
        arr[i].code, arr[i].jt, arr[i].jf, arr[i].k = code, jt, jf, k
    prog = ffi.new("struct bpf_program *")
    prog.bf_len = len(insns)
    prog.bf_insns = arr if insns else ffi.NULL
    return prog, arr


def reject_ethertype(ethertype: int) -> list[tuple[int, int, int, int]]:
    """ldh [12]; jeq #type, drop, accept."""
    return [
        insn(lib.BPF_LD | lib.BPF_H | lib.BPF_ABS, 12),
        insn(lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K, ethertype, 0, 1),
        insn(RET_K, 0),
        insn(RET_K, 0xFFFFFFFF),
    ]


# -- zero-copy buffers ------------------------------------------------------------

class ZBuf:
    """One zero-copy buffer: anonymous mmap, exported writable, header accessors."""

    def __init__(self, size: int, prot: int | None = None) -> None:
        self.size = size
        if prot is None:
            self.map = mmap.mmap(-1, size)
            self.ptr = ffi.from_buffer(self.map, require_writable=True)
        else:
            self.map = mmap.mmap(-1, size, prot=prot)
            self.ptr = ffi.from_buffer(self.map)
        self.hdr = ffi.cast("struct bpf_zbuf_header *", self.ptr)

    @property
    def address(self) -> int:
        return int(ffi.cast("uintptr_t", self.ptr))

    @property
    def kernel_gen(self) -> int:
        return int(lib.bsdbpf_load_acquire(ffi.addressof(self.hdr, "bzh_kernel_gen")))

    @property
    def kernel_len(self) -> int:  # read only after a successful ownership check
        return int(self.hdr.bzh_kernel_len)

    @property
    def user_gen(self) -> int:
        return int(self.hdr.bzh_user_gen)

    def user_owned(self) -> bool:
        return self.user_gen != self.kernel_gen

    def ack(self) -> None:
        """A release store of kernel_gen into user_gen: no system call at all."""
        lib.bsdbpf_store_release(ffi.addressof(self.hdr, "bzh_user_gen"), self.kernel_gen)

    def header_bytes(self) -> bytes:
        return bytes(self.map[:ZHDR])

    def data(self, length: int) -> bytes:
        return bytes(self.map[ZHDR:ZHDR + length])

    def close(self) -> None:
        ffi.release(self.ptr)
        self.map.close()


# -- the per-test harness -----------------------------------------------------------

def _address(buf: ZBuf | Any) -> int:
    """A zero-copy buffer's address: a ZBuf's, or a cffi pointer's value."""
    return buf.address if isinstance(buf, ZBuf) else int(ffi.cast("uintptr_t", buf))


class Bpf:
    """Opens descriptors and zero-copy buffers through the System seam and
    releases them in the right order: every fd first, then the mmaps."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.fds: list[int] = []
        self.zbufs: list[ZBuf] = []

    # descriptors
    def open(self, flags: int = os.O_RDWR) -> int:
        fd = self.system.open("/dev/bpf", flags)
        self.fds.append(fd)
        return int(fd)

    def close(self, fd: int) -> None:
        self.fds.remove(fd)
        self.system.close(fd)

    def cleanup(self) -> None:
        while self.fds:
            with contextlib.suppress(OSError):
                self.system.close(self.fds.pop())
        while self.zbufs:
            self.zbufs.pop().close()

    # ioctls: through bsdbpf.raw, as the library issues them
    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        """Any request with a hand-built argument: for the tests of the ABI itself
        (short structs, bad pointers, odd request numbers)."""
        return int(self.system.ioctl(fd, request, arg))

    def set_uint(self, fd: int, request: int, value: int) -> int:
        return raw.set_uint(self.system, fd, request, value)

    def get_uint(self, fd: int, request: int) -> int:
        return raw.get_uint(self.system, fd, request)

    def set_int(self, fd: int, request: int, value: int) -> None:
        raw.set_int(self.system, fd, request, value)

    def get_int(self, fd: int, request: int) -> int:
        return raw.get_int(self.system, fd, request)

    def attach(self, fd: int, ifname: str) -> None:
        raw.set_if(self.system, fd, ifname)

    def setf(self, fd: int, insns: list[tuple[int, int, int, int]],
             request: int = lib.BIOCSETF) -> None:
        """BIOCSETF, BIOCSETFNR or BIOCSETWF with ``insns``."""
        raw.BY_REQUEST[request_name(request)](self.system, fd, insns)

    def gstats(self, fd: int) -> tuple[int, int]:
        return raw.get_stats(self.system, fd)

    def timeout(self, fd: int, sec: int, usec: int) -> None:
        raw.set_rtimeout(self.system, fd, sec, usec)

    def gtimeout(self, fd: int) -> tuple[int, int]:
        return raw.get_rtimeout(self.system, fd)

    def fionread(self, fd: int) -> int:
        return raw.nread(self.system, fd)

    def lock(self, fd: int) -> None:
        raw.lock(self.system, fd)

    def flush(self, fd: int) -> None:
        raw.flush(self.system, fd)

    def promisc(self, fd: int) -> None:
        raw.promisc(self.system, fd)

    def rotzbuf(self, fd: int) -> tuple[int, int, int]:
        return raw.rot_zbuf(self.system, fd)

    # read(2)
    def read(self, fd: int, nbytes: int | None = None) -> bytes:
        n = raw.get_blen(self.system, fd) if nbytes is None else nbytes
        buf = bytearray(n)
        got = self.system.read(fd, buf)
        return bytes(buf[:got])

    def read_ready(self, fd: int, timeout: float = WAIT) -> bytes:
        """read(2) once poll says readable: a blocking read that cannot hang."""
        assert wait_poll(fd, timeout), "descriptor never became readable"
        return self.read(fd)

    # zero-copy
    def zbuf(self, size: int = PAGE, prot: int | None = None) -> ZBuf:
        z = ZBuf(size, prot)
        self.zbufs.append(z)
        return z

    def setzbuf(self, fd: int, a: ZBuf | Any, b: ZBuf | Any, buflen: int) -> None:
        """BIOCSETZBUF with two ZBufs, or any pointers (ffi.NULL, a misaligned cast)."""
        raw.set_zbuf(self.system, fd, _address(a), _address(b), buflen)

    def zbuf_descriptor(self, ifname: str | None = None, size: int = PAGE,
                        fill: int | None = None) -> tuple[int, ZBuf, ZBuf]:
        """A descriptor in ZBUF mode with two fresh buffers (optionally prefilled
        with ``fill`` past nothing: the whole buffer, header included), attached
        to ``ifname`` when given.  Needs net.bpf.zerocopy_enable=1."""
        fd = self.open()
        raw.set_bufmode(self.system, fd, lib.BPF_BUFMODE_ZBUF)
        a, b = self.zbuf(size), self.zbuf(size)
        if fill is not None:
            a.map[:] = bytes([fill]) * size
            b.map[:] = bytes([fill]) * size
        self.setzbuf(fd, a, b, size)
        if ifname is not None:
            self.attach(fd, ifname)
        return fd, a, b


# -- sysctl -----------------------------------------------------------------------

# FreeBSD's int sysctls, stated here independently of bsdbpf.raw's codec: the
# suite checks the kernel's bytes against them.
def xbpf_records(raw: bytes) -> list[Any]:
    """Split net.bpf.stats into struct xbpf_d copies."""
    size = ffi.sizeof("struct xbpf_d")
    assert len(raw) % size == 0, f"{len(raw)} bytes is not a whole number of xbpf_d"
    out = []
    for off in range(0, len(raw), size):
        rec = ffi.new("struct xbpf_d *")
        ffi.memmove(rec, raw[off:off + size], size)
        out.append(rec)
    return out


def ours(records: list[Any], ifname: str | None = None) -> list[Any]:
    """Records of this process (the real kernel may have others: dhclient...)."""
    return [r for r in records if r.bd_pid == os.getpid() and (
        ifname is None or ffi.string(r.bd_ifname).decode() == ifname)]


# -- readiness ---------------------------------------------------------------------

def wait_poll(fd: int, timeout: float) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLIN for _, ev in p.poll(int(timeout * 1000)))


def wait_select(fd: int, timeout: float) -> bool:
    r, _, _ = select.select([fd], [], [], timeout)
    return fd in r


def wait_asyncio(fd: int, timeout: float) -> bool:
    """The event loop needs one turn of its selector to see the fd, so a zero
    timeout is stretched to 10 ms."""

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(True)

        loop.add_reader(fd, ready)
        try:
            return await asyncio.wait_for(fut, max(timeout, 0.01))
        except asyncio.TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)

    return asyncio.run(main())


WAITERS: dict[str, Callable[[int, float], bool]] = {
    "select": wait_select,
    "poll": wait_poll,
    "asyncio": wait_asyncio,
}


def until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes (no blind sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)


def stats_records(system: Any, ifname: str | None = None) -> list[Any]:
    """This process's net.bpf.stats records (optionally on one interface)."""
    return ours(xbpf_records(system.sysctlbyname("net.bpf.stats")), ifname)


def stats_record(system: Any, ifname: str) -> Any:
    """The one net.bpf.stats record of this process on ``ifname``."""
    recs = stats_records(system, ifname)
    assert len(recs) == 1, f"expected one descriptor on {ifname}, found {len(recs)}"
    return recs[0]


ISOLATED_SYSTEM = '''
import errno, mmap, os, sys
from bsdbpf._native import ffi, lib
HOST = os.environ.get("BSDBPF_SYSTEM") == "host" and sys.platform.startswith("freebsd")
if HOST:
    from bsdbpf.system import HostSystem
    system, ifname = HostSystem(), os.environ["BSDBPF_TEST_IFNAME"]
else:
    from bsdbpf.sim import Kernel
    system, ifname = Kernel(uid=0), "em0"
    system.add_interface("em0")
'''

# Set up before any descriptor of the child: on the real kernel the pair's
# witness must be the interface's oldest descriptor (see tests/hosttraffic.py).
ISOLATED_TRAFFIC = f'''
if HOST:
    import atexit
    sys.path.insert(0, "tests")
    import hosttraffic
    source = hosttraffic.HostTraffic(ifname)
    atexit.register(source.close)
    def inject(frame):
        source(ifname, frame)
else:
    def inject(frame):
        system.inject(ifname, frame)
FRAME = {eth_frame(60)!r}
'''

ISOLATED_DESCRIPTOR = '''
fd = system.open("/dev/bpf", os.O_RDWR)
ifr = ffi.new("struct ifreq *")
ifr.ifr_name = ifname.encode()
system.ioctl(fd, lib.BIOCSETIF, ifr)
def report(call):
    try:
        call()
    except OSError as err:
        print(type(err).__name__, errno.errorcode[err.errno])
    else:
        print("ok")
'''


def run_isolated(code: str, traffic: bool = False) -> tuple[int, str]:
    """Run ``code`` in a child interpreter, after a preamble giving it ``system``,
    ``ifname``, an attached ``fd`` and ``report``; with ``traffic``, also
    ``inject(frame)`` (returns once every descriptor on ``ifname`` has seen the
    frame, on either kernel) and ``FRAME``, a 60-byte Ethernet frame.  A
    simulator touching bad memory crashes the child, not the suite.  Returns
    (exit status, stdout)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    preamble = ISOLATED_SYSTEM + (ISOLATED_TRAFFIC if traffic else "") + ISOLATED_DESCRIPTOR
    proc = subprocess.run([sys.executable, "-c", preamble + code], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout.strip()
