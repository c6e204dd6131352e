"""The C of bsdbpf._native as FreeBSD compiles it, checked where it can be off FreeBSD.

On FreeBSD csrc/bsdbpf_abi.h includes the system's headers instead of
csrc/freebsd_abi.h; no build here goes through that branch, so these tests
read it, or compile the sources beside stand-ins for what FreeBSD's headers
add.
"""

from __future__ import annotations

import re
from pathlib import Path

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
