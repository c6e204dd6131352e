"""The C of bsdbpf._native as FreeBSD compiles it, checked where it can be off FreeBSD.

On FreeBSD csrc/bsdbpf_abi.h includes the system's headers instead of
csrc/freebsd_abi.h; no build here goes through that branch, so these tests
read it, or compile the sources beside stand-ins for what FreeBSD's headers
add.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def _freebsd_includes() -> list[str]:
    """The headers bsdbpf_abi.h includes on FreeBSD, in order."""
    text = (CSRC / "bsdbpf_abi.h").read_text()
    branch = text.split("#ifdef __FreeBSD__", 1)[1].split("#else", 1)[0]
    return re.findall(r"#include <([^>]+)>", branch)


def test_bpfdesc_h_gets_what_it_needs_in_userland() -> None:
    """<net/bpfdesc.h> declares the kernel's struct bpf_d beside struct xbpf_d:
    its struct mtx member is complete only after <sys/_lock.h> and
    <sys/_mutex.h>, and the <sys/conf.h> it includes sizes a name with
    SPECNAMELEN from <sys/param.h>.  netstat(1) has them from <sys/param.h>
    and <sys/user.h>; without them the FreeBSD build does not compile."""
    found = _freebsd_includes()
    bpfdesc = found.index("net/bpfdesc.h")
    for needed in ("sys/param.h", "sys/_lock.h", "sys/_mutex.h"):
        assert needed in found[:bpfdesc], f"<{needed}> must come before <net/bpfdesc.h>"
    assert found.index("sys/_lock.h") < found.index("sys/_mutex.h")


# The cffi module's own C (build_bpf.py's sources).
NATIVE_SOURCES = ("helpers.c", "bpf_filter.c", "sim_capture.c", "sim_kernel.c", "sim_user.c",
                  "sim_traffic.c")
# FreeBSD's <sys/time.h> gives userland these static inline functions (with
# __BSD_VISIBLE, the default): empty stand-ins of the same names and types.
TIME_H_INLINES = """
struct bintime;
struct timespec;
struct timeval;
static inline void bintime_addx(struct bintime *a, unsigned long long x) { (void)a; (void)x; }
static inline void bintime_add(struct bintime *a, const struct bintime *b) { (void)a; (void)b; }
static inline void bintime_sub(struct bintime *a, const struct bintime *b) { (void)a; (void)b; }
static inline void bintime_mul(struct bintime *a, unsigned int x) { (void)a; (void)x; }
static inline void bintime_shift(struct bintime *a, int e) { (void)a; (void)e; }
static inline void bintime2timespec(const struct bintime *a, struct timespec *t)
{ (void)a; (void)t; }
static inline unsigned long long bintime2ns(const struct bintime *a) { (void)a; return 0; }
static inline void timespec2bintime(const struct timespec *t, struct bintime *a)
{ (void)t; (void)a; }
static inline void bintime2timeval(const struct bintime *a, struct timeval *t)
{ (void)a; (void)t; }
static inline void timeval2bintime(const struct timeval *t, struct bintime *a)
{ (void)t; (void)a; }
"""


@pytest.mark.skipif(sys.platform.startswith("freebsd"),
                    reason="FreeBSD's own <sys/time.h> is in the build there")
@pytest.mark.parametrize("source", NATIVE_SOURCES)
def test_sources_compile_beside_freebsds_time_helpers(source: str, tmp_path: Path) -> None:
    """No function of the project takes a name FreeBSD's <sys/time.h> defines:
    there, a second bintime_add() is a redefinition and the build stops."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    stand_in = tmp_path / "freebsd_time_h.h"
    stand_in.write_text(TIME_H_INLINES)
    done = subprocess.run(
        [cc, "-fsyntax-only", "-std=gnu11", "-I", str(CSRC), "-include", str(stand_in),
         str(CSRC / source)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
