"""Build bsdbpf._native: FreeBSD's BPF ABI through cffi, plus the project's C.

On FreeBSD the declarations below are compiled against the system headers, so
the compiler supplies every number (``#define NAME ...``) and checks every
layout (partial structs ending in ``...;``).  Elsewhere they are compiled
against csrc/freebsd_abi.h, the package's statement of the same ABI.

cdef rules: no parameter names, ``(void)`` for no arguments, and a
``bsdbpf_``/``BSDBPF_`` prefix on every name the project adds.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
VERSION = re.search(
    r'__version__ = "([^"]+)"',
    (HERE.parent / "bsdbpf" / "_version.py").read_text(),
).group(1)  # type: ignore[union-attr]

STRUCTS = """
typedef int... time_t;
typedef int... suseconds_t;
typedef int... pid_t;
typedef unsigned int u_int;
typedef unsigned short u_short;
typedef unsigned char u_char;
typedef int32_t bpf_int32;
typedef uint32_t bpf_u_int32;
typedef int64_t bpf_int64;
typedef uint64_t bpf_u_int64;

struct timeval { time_t tv_sec; suseconds_t tv_usec; ...; };
struct timespec { time_t tv_sec; long tv_nsec; ...; };
struct bintime { time_t sec; uint64_t frac; ...; };
struct ifreq { char ifr_name[...]; ...; };
struct bpf_insn { u_short code; u_char jt; u_char jf; bpf_u_int32 k; ...; };
struct bpf_program { u_int bf_len; struct bpf_insn *bf_insns; ...; };
struct bpf_stat { u_int bs_recv; u_int bs_drop; ...; };
struct bpf_version { u_short bv_major; u_short bv_minor; ...; };
struct bpf_zbuf { void *bz_bufa; void *bz_bufb; size_t bz_buflen; ...; };
struct bpf_zbuf_header {
    volatile u_int bzh_kernel_gen;
    volatile u_int bzh_kernel_len;
    volatile u_int bzh_user_gen;
    u_int _bzh_pad[5];
    ...;
};
struct bpf_ts { bpf_int64 bt_sec; bpf_u_int64 bt_frac; ...; };
struct bpf_xhdr {
    struct bpf_ts bh_tstamp;
    bpf_u_int32 bh_caplen;
    bpf_u_int32 bh_datalen;
    u_short bh_hdrlen;
    ...;
};
struct bpf_hdr {
    struct timeval bh_tstamp;
    bpf_u_int32 bh_caplen;
    bpf_u_int32 bh_datalen;
    u_short bh_hdrlen;
    ...;
};
struct bpf_dltlist { u_int bfl_len; u_int *bfl_list; ...; };
struct bpf_iflist { u_int bi_size; u_int bi_count; void *bi_ubuf; ...; };
enum bpf_direction { BPF_D_IN, BPF_D_INOUT, BPF_D_OUT, ... };
struct xbpf_d {
    u_int bd_structsize;
    u_char bd_promisc;
    u_char bd_immediate;
    u_char __bd_pad[6];
    int bd_hdrcmplt;
    int bd_direction;
    int bd_feedback;
    int bd_async;
    uint64_t bd_rcount;
    uint64_t bd_dcount;
    uint64_t bd_fcount;
    int bd_sig;
    int bd_slen;
    int bd_hlen;
    int bd_bufsize;
    pid_t bd_pid;
    char bd_ifname[...];
    int bd_locked;
    uint64_t bd_wcount;
    uint64_t bd_wfcount;
    uint64_t bd_wdcount;
    uint64_t bd_zcopy;
    int bd_bufmode;
    uint64_t bd_spare[4];
    ...;
};
"""

REQUESTS = [
    "BIOCGBLEN", "BIOCSBLEN", "BIOCSETF", "BIOCFLUSH", "BIOCPROMISC", "BIOCGDLT",
    "BIOCGETIF", "BIOCSETIF", "BIOCSRTIMEOUT", "BIOCGRTIMEOUT", "BIOCGSTATS",
    "BIOCIMMEDIATE", "BIOCVERSION", "BIOCGRSIG", "BIOCSRSIG", "BIOCGHDRCMPLT",
    "BIOCSHDRCMPLT", "BIOCGDIRECTION", "BIOCSDIRECTION", "BIOCSDLT", "BIOCGDLTLIST",
    "BIOCLOCK", "BIOCSETWF", "BIOCFEEDBACK", "BIOCGETBUFMODE", "BIOCSETBUFMODE",
    "BIOCGETZMAX", "BIOCROTZBUF", "BIOCSETZBUF", "BIOCSETFNR", "BIOCGTSTAMP",
    "BIOCSTSTAMP", "BIOCSETVLANPCP", "BIOCGETIFLIST", "BIOCGSEESENT", "BIOCSSEESENT",
    "FIONREAD", "FIONBIO", "FIOASYNC", "FIOSETOWN", "FIOGETOWN", "FIOCLEX",
    "FIONCLEX", "TIOCSPGRP", "TIOCGPGRP", "SIOCGIFFLAGS",
]

CONSTANTS = [
    "IOCPARM_SHIFT", "IOCPARM_MASK", "IOCPARM_MAX", "IOC_VOID", "IOC_OUT", "IOC_IN",
    "IOC_INOUT", "IOC_DIRMASK", "IFNAMSIZ", "IFF_UP",
    "BPF_RELEASE", "BPF_ALIGNMENT", "BPF_MAXINSNS", "BPF_MAXBUFSIZE", "BPF_MINBUFSIZE",
    "BPF_MAJOR_VERSION", "BPF_MINOR_VERSION", "BPF_MEMWORDS",
    "BPF_BUFMODE_BUFFER", "BPF_BUFMODE_ZBUF",
    "BPF_T_MICROTIME", "BPF_T_NANOTIME", "BPF_T_BINTIME", "BPF_T_NONE",
    "BPF_T_FORMAT_MASK", "BPF_T_NORMAL", "BPF_T_FAST", "BPF_T_MONOTONIC",
    "BPF_T_MONOTONIC_FAST", "BPF_T_FLAG_MASK",
    "BPF_T_MICROTIME_FAST", "BPF_T_NANOTIME_FAST", "BPF_T_BINTIME_FAST",
    "BPF_T_MICROTIME_MONOTONIC", "BPF_T_NANOTIME_MONOTONIC", "BPF_T_BINTIME_MONOTONIC",
    "BPF_T_MICROTIME_MONOTONIC_FAST", "BPF_T_NANOTIME_MONOTONIC_FAST",
    "BPF_T_BINTIME_MONOTONIC_FAST",
    "BPF_LD", "BPF_LDX", "BPF_ST", "BPF_STX", "BPF_ALU", "BPF_JMP", "BPF_RET", "BPF_MISC",
    "BPF_W", "BPF_H", "BPF_B",
    "BPF_IMM", "BPF_ABS", "BPF_IND", "BPF_MEM", "BPF_LEN", "BPF_MSH",
    "BPF_ADD", "BPF_SUB", "BPF_MUL", "BPF_DIV", "BPF_OR", "BPF_AND", "BPF_LSH", "BPF_RSH",
    "BPF_NEG", "BPF_MOD", "BPF_XOR",
    "BPF_JA", "BPF_JEQ", "BPF_JGT", "BPF_JGE", "BPF_JSET",
    "BPF_K", "BPF_X", "BPF_A", "BPF_TAX", "BPF_TXA",
    "DLT_NULL", "DLT_EN10MB", "DLT_SLIP", "DLT_PPP", "DLT_RAW", "DLT_IEEE802_11",
    "DLT_LOOP", "DLT_ENC", "DLT_PFLOG", "DLT_PFSYNC", "DLT_IEEE802_11_RADIO",
]

PROJECT = """
#define BSDBPF_HAS_BIOCSETVLANPCP ...
#define BSDBPF_HAS_BIOCGETIFLIST ...
#define BSDBPF_HAS_SYSCTLBYNAME ...
#define BSDBPF_OFFSETOF_IFR_IFRU ...
#define BSDBPF_SIZEOF_IFR_IFRU ...
#define BSDBPF_REC_DATA ...
#define BSDBPF_REC_CAPLEN ...
#define BSDBPF_REC_DATALEN ...
#define BSDBPF_REC_TS_NS ...
#define BSDBPF_REC_FIELDS ...
static const char *const BSDBPF_PACKAGE_VERSION;

int open(const char *, int, ...);
int close(int);
int ioctl(int, unsigned long, ...);
ssize_t read(int, void *, size_t);
ssize_t write(int, const void *, size_t);
int sysctlbyname(const char *, void *, size_t *, const void *, size_t);

u_int bsdbpf_load_acquire(const volatile u_int *);
void bsdbpf_store_release(volatile u_int *, u_int);
size_t bsdbpf_wordalign(size_t);
unsigned int bsdbpf_ifr_flags(const struct ifreq *);
unsigned int bsdbpf_hdrlen(unsigned int, unsigned int);
int bsdbpf_parse_records(const unsigned char *, uint32_t, uint32_t, unsigned int,
                         int64_t *, uint32_t, uint32_t *);

int bsdbpf_validate(const struct bpf_insn *, int);
#define BSDBPF_VALID ...
#define BSDBPF_RULE_LENGTH ...
#define BSDBPF_RULE_OPCODE ...
#define BSDBPF_RULE_JUMP ...
#define BSDBPF_RULE_MEMWORD ...
#define BSDBPF_RULE_DIVZERO ...
#define BSDBPF_RULE_LAST_RET ...
int bsdbpf_validate_rule(const struct bpf_insn *, int, int *);
uint32_t bsdbpf_filter(const struct bpf_insn *, const unsigned char *, uint32_t, uint32_t);
uint32_t bsdbpf_filter_mbuf(const struct bpf_insn *, const unsigned char *, uint32_t,
                            uint32_t);
"""

# The engine's public header is valid cdef as it stands.
SIM_CDEF = (HERE / "sim_engine.h").read_text()
SIM_SOURCES = ["sim_capture.c", "sim_kernel.c", "sim_user.c", "sim_traffic.c"]
# The module's C files besides cffi's own, and how they are all compiled
# (tests/test_freebsd_build.py compiles the same for FreeBSD).
SOURCES = ["helpers.c", "bpf_filter.c", *SIM_SOURCES]
COMPILE_ARGS = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

PRELUDE = f"""
#define BSDBPF_PACKAGE_VERSION_STR "{VERSION}"
#include "bsdbpf_abi.h"
#include "helpers.h"
#include "bpf_filter.h"
#include "sim_engine_priv.h"
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <stddef.h>
#ifdef __FreeBSD__
#include <sys/sysctl.h>
#define BSDBPF_HAS_SYSCTLBYNAME 1
#else
#define BSDBPF_HAS_SYSCTLBYNAME 0
/* Not FreeBSD: HostSystem refuses before calling this. */
static int sysctlbyname(const char *n, void *o, size_t *ol, const void *nv, size_t nl)
{{
    (void)n; (void)o; (void)ol; (void)nv; (void)nl;
    errno = ENOSYS;
    return -1;
}}
int ioctl(int, unsigned long, ...);
#endif
#ifdef BIOCSETVLANPCP
#define BSDBPF_HAS_BIOCSETVLANPCP 1
#else
#define BSDBPF_HAS_BIOCSETVLANPCP 0
#define BIOCSETVLANPCP 0
#endif
#ifdef BIOCGETIFLIST
#define BSDBPF_HAS_BIOCGETIFLIST 1
#else
#define BSDBPF_HAS_BIOCGETIFLIST 0
#define BIOCGETIFLIST 0
struct bpf_iflist {{ u_int bi_size; u_int bi_count; void *bi_ubuf; }};
#endif
#define BSDBPF_OFFSETOF_IFR_IFRU offsetof(struct ifreq, ifr_ifru)
#define BSDBPF_SIZEOF_IFR_IFRU sizeof(((struct ifreq *)0)->ifr_ifru)
static const char *const BSDBPF_PACKAGE_VERSION = BSDBPF_PACKAGE_VERSION_STR;
"""


def build_ffi() -> FFI:
    ffi = FFI()
    ffi.cdef(STRUCTS)
    ffi.cdef("".join(f"#define {name} ...\n" for name in REQUESTS + CONSTANTS))
    ffi.cdef(PROJECT)
    ffi.cdef(SIM_CDEF)
    is_freebsd = sys.platform.startswith("freebsd")
    ffi.set_source(
        "bsdbpf._native",
        PRELUDE,
        sources=[f"csrc/{name}" for name in SOURCES],
        include_dirs=["csrc"],
        extra_compile_args=COMPILE_ARGS,
        libraries=[] if is_freebsd else ["pthread"],
    )
    return ffi


ffibuilder = build_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
