"""libpcap, loaded at run time (cffi ABI mode) for what only it knows: the
tcpdump filter language.

libpcap is part of FreeBSD's base system; on Debian and Ubuntu it is the
``libpcap0.8`` package.  Nothing is compiled against it, so bsdbpf installs
and imports without it; :func:`compile_expression` says what to install when
it is missing.
"""

from __future__ import annotations

import errno
import threading
from typing import Any, cast

from cffi import FFI

from bsdbpf.errors import FilterError, UnsupportedError, from_errno

__all__ = ["compile_expression", "library"]

# The names the library has: unversioned (FreeBSD's base system; Debian's
# libpcap-dev), FreeBSD's soname (libpcap.so.8), upstream's (libpcap.so.1)
# and Debian's libpcap0.8 package (libpcap.so.0.8).
SONAMES = ("libpcap.so", "libpcap.so.8", "libpcap.so.1", "libpcap.so.0.8")
PACKAGE_HINT = (
    "libpcap is needed to compile filter expressions: it is part of FreeBSD's base "
    "system; on Debian or Ubuntu install the libpcap0.8 package (apt-get install libpcap0.8)"
)

ffi = FFI()
# Only what is used, with the layouts of <pcap/pcap.h> and <pcap/bpf.h>
# (struct timeval: two longs on the LP64 and ILP32 systems bsdbpf supports).
ffi.cdef("""
typedef struct pcap pcap_t;
struct bpf_insn { unsigned short code; unsigned char jt; unsigned char jf; uint32_t k; };
struct bpf_program { unsigned int bf_len; struct bpf_insn *bf_insns; };
struct pcap_pkthdr { long tv_sec; long tv_usec; uint32_t caplen; uint32_t len; };

pcap_t *pcap_open_dead(int, int);
int pcap_compile(pcap_t *, struct bpf_program *, const char *, int, uint32_t);
void pcap_freecode(struct bpf_program *);
char *pcap_geterr(pcap_t *);
void pcap_close(pcap_t *);
int pcap_offline_filter(const struct bpf_program *, const struct pcap_pkthdr *,
                        const unsigned char *);
char *bpf_image(const struct bpf_insn *, int);
const char *pcap_lib_version(void);
""")

_lock = threading.Lock()  # pcap_compile was not thread-safe before libpcap 1.8
_loaded: list[Any] = []


def library() -> Any:
    """The loaded libpcap (cffi ``lib``); :class:`bsdbpf.UnsupportedError`
    naming the package when no libpcap can be found."""
    with _lock:
        if not _loaded:
            tried = []
            for name in SONAMES:
                try:
                    _loaded.append(ffi.dlopen(name))
                    break
                except OSError as err:
                    tried.append(f"{name}: {err}")
            else:
                raise from_errno(errno.ENOENT, "dlopen libpcap", cls=UnsupportedError,
                                 hint=f"{PACKAGE_HINT}; tried {'; '.join(tried)}")
        return _loaded[0]


def compile_expression(
    expression: str, dlt: int, snaplen: int, optimize: bool, netmask: int,
) -> list[tuple[int, int, int, int]]:
    """pcap_compile() on a dead handle of link type ``dlt``: the instructions
    as ``(code, jt, jf, k)`` tuples, or :class:`bsdbpf.FilterError` with
    libpcap's own message."""
    pcap = library()
    try:
        text = expression.encode()
    except UnicodeEncodeError as err:
        raise from_errno(errno.EINVAL, "pcap_compile", cls=FilterError,
                         hint=f"the expression must be ASCII text: {err}") from None
    if b"\0" in text:  # C would see only what comes before it
        raise from_errno(errno.EINVAL, "pcap_compile", cls=FilterError,
                         hint=f"the expression {expression!r} contains a NUL character")
    with _lock:
        handle = pcap.pcap_open_dead(dlt, snaplen)
        if handle == ffi.NULL:
            raise from_errno(errno.ENOMEM, "pcap_open_dead", cls=FilterError,
                             hint="libpcap could not allocate a handle")
        try:
            prog: Any = ffi.new("struct bpf_program *")
            if pcap.pcap_compile(handle, prog, text, int(bool(optimize)), netmask) != 0:
                message = cast(bytes, ffi.string(pcap.pcap_geterr(handle))).decode(errors="replace")
                raise from_errno(errno.EINVAL, "pcap_compile", cls=FilterError,
                                 hint=f"cannot compile {expression!r}: {message}")
            try:
                return [(int(i.code), int(i.jt), int(i.jf), int(i.k))
                        for i in prog.bf_insns[0:prog.bf_len]]
            finally:
                pcap.pcap_freecode(prog)
        finally:
            pcap.pcap_close(handle)
