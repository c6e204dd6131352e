"""The scripted sequences the differential runner plays on both kernels.

Each is a list of :class:`~.runner.Step`; ``IFNAME`` is the side's capture
interface (``em0`` on the simulator, the epair(4) end on FreeBSD).  Frames use
the IEEE local experimental ethertype, harmless on any wire.
"""

from __future__ import annotations

from bsdbpf._native import lib

from .runner import IFNAME, Step

RET_K = lib.BPF_RET | lib.BPF_K
ETHERTYPE = 0x88B5


def frame(n: int, size: int = 64) -> bytes:
    """A broadcast frame of ``size`` bytes numbered ``n``."""
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + ETHERTYPE.to_bytes(2, "big")
    return head + n.to_bytes(2, "big") + bytes((n + i) & 0xFF for i in range(size - 16))


def uint(fd: str, request: str, value: int | None = None) -> Step:
    return Step("uint", fd, (request,) if value is None else (request, value))


def sysctl(name: str, value: int | None = None) -> Step:
    return Step("sysctl", "", (name,) if value is None else (name, value))


def inject(data: bytes, outgoing: bool = False) -> Step:
    return Step("inject", "", (data, outgoing))


OPEN_A = Step("open", "a")
# ldb [15]; and #1; jeq #0 -> ret #20 (even frame numbers, cut), else ret #0
ODD_FRAMES_DROPPED = (
    (lib.BPF_LD | lib.BPF_B | lib.BPF_ABS, 0, 0, 15),
    (lib.BPF_ALU | lib.BPF_AND | lib.BPF_K, 0, 0, 1),
    (lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K, 0, 1, 0),
    (RET_K, 0, 0, 20),
    (RET_K, 0, 0, 0),
)
ATTACH_A = Step("setif", "a", (IFNAME,))

SCENARIOS: dict[str, list[Step]] = {
    # What a fresh descriptor and the sysctl tree say before anything is set.
    "defaults": [
        sysctl("net.bpf.bufsize"), sysctl("net.bpf.maxbufsize"), sysctl("net.bpf.maxinsns"),
        sysctl("net.bpf.zerocopy_enable"), sysctl("net.bpf.optimize_writers"),
        OPEN_A, Step("version", "a"), uint("a", "BIOCGBLEN"), uint("a", "BIOCGETBUFMODE"),
        uint("a", "BIOCGDLT"), uint("a", "BIOCGDIRECTION"), uint("a", "BIOCGHDRCMPLT"),
        uint("a", "BIOCGTSTAMP"), Step("stats", "a"), Step("fionread", "a"),
    ],
    # Buffer sizes: clamping at both ends, refused once attached.
    "buffer sizes": [
        OPEN_A, uint("a", "BIOCSBLEN", 1), uint("a", "BIOCSBLEN", 1 << 30),
        uint("a", "BIOCSBLEN", 8192), ATTACH_A, uint("a", "BIOCGBLEN"),
        uint("a", "BIOCSBLEN", 4096), uint("a", "BIOCSETBUFMODE", lib.BPF_BUFMODE_BUFFER),
    ],
    # Requests that must fail, and with which errno.
    "errors": [
        OPEN_A, uint("a", "BIOCGDLT"), Step("setif", "a", ("nosuch0",)),
        uint("a", "BIOCSETBUFMODE", 3), uint("a", "BIOCSETBUFMODE", lib.BPF_BUFMODE_ZBUF),
        Step("size", "a", ("BIOCGETZMAX",)), Step("rotzbuf", "a"), Step("read", "a", (100,)),
        sysctl("net.bpf.nosuchsysctl"),
    ],
    # Buffered capture: records, their layout and bytes, counters.
    "capture": [
        OPEN_A, uint("a", "BIOCSBLEN", 4096), uint("a", "BIOCIMMEDIATE", 1), ATTACH_A,
        inject(frame(1, 60)), inject(frame(2, 61)), inject(frame(3, 1514)),
        inject(frame(4, 64), outgoing=True), Step("fionread", "a"), Step("stats", "a"),
        Step("read", "a"), Step("read", "a"), Step("fionread", "a"),
    ],
    # A filter: drop our ethertype's odd frames, cut the rest to 20 bytes.
    "filter": [
        OPEN_A, uint("a", "BIOCIMMEDIATE", 1),
        Step("setf", "a", (ODD_FRAMES_DROPPED,)),
        ATTACH_A, *(inject(frame(n)) for n in range(4)), Step("stats", "a"),
        Step("read", "a"), uint("a", "BIOCSDIRECTION", lib.BPF_D_IN),
        inject(frame(6), outgoing=True), inject(frame(8)), Step("read", "a"),
    ],
    # Zero-copy: setup errors, hand-over by rotation, acknowledgement.
    "zero-copy": [
        sysctl("net.bpf.zerocopy_enable", 0), OPEN_A,
        uint("a", "BIOCSETBUFMODE", lib.BPF_BUFMODE_ZBUF),
        sysctl("net.bpf.zerocopy_enable", 1),
        uint("a", "BIOCSETBUFMODE", lib.BPF_BUFMODE_ZBUF), Step("size", "a", ("BIOCGETZMAX",)),
        uint("a", "BIOCSBLEN", 8192), Step("setzbuf", "a", (3 * 4096 + 1,)),
        Step("setzbuf", "a", (2 * 4096,)), Step("setzbuf", "a", (2 * 4096,)), ATTACH_A,
        Step("zbuf", "a", ("a",)), inject(frame(1)), inject(frame(2, 200)),
        Step("zbuf", "a", ("a",)), Step("rotzbuf", "a"), Step("zbuf", "a", ("a",)),
        Step("zbuf", "a", ("b",)), Step("rotzbuf", "a"), Step("ack", "a", ("a",)),
        inject(frame(3)), Step("rotzbuf", "a"), Step("zbuf", "a", ("b",)),
        Step("read", "a", (2 * 4096 - 32,)), Step("noarg", "a", ("BIOCFLUSH",)),
        Step("stats", "a"), Step("zbuf", "a", ("a",)), Step("zbuf", "a", ("b",)),
    ],
}
