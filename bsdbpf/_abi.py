"""What the compiled ``bsdbpf._native`` offers: request names, feature flags, its version.

A leaf module: it imports only ``_native``, ``errors``, ``_version`` and the
standard library, so every layer may use it.  Importing it checks that the
compiled extension was built from this version of the package; a stale build
(an upgrade without a rebuild) would otherwise run with another ABI table.
"""

from __future__ import annotations

import errno
from typing import Any

from bsdbpf._native import ffi, lib
from bsdbpf._version import __version__
from bsdbpf.errors import InvalidArgument, from_errno

__all__ = [
    "HAS_BIOCGETIFLIST",
    "HAS_BIOCSETVLANPCP",
    "HAS_SYSCTLBYNAME",
    "NATIVE_VERSION",
    "REQUEST_NAMES",
    "check_native_version",
    "new_ifreq",
    "request_name",
]

#: The package version the extension was compiled for.
NATIVE_VERSION: str = ffi.string(lib.BSDBPF_PACKAGE_VERSION).decode()

#: BIOCSETVLANPCP exists on this kernel (FreeBSD 13 and later).
HAS_BIOCSETVLANPCP = bool(lib.BSDBPF_HAS_BIOCSETVLANPCP)
#: BIOCGETIFLIST exists on this kernel (FreeBSD 15).
HAS_BIOCGETIFLIST = bool(lib.BSDBPF_HAS_BIOCGETIFLIST)
#: The host has sysctlbyname(3) (FreeBSD): HostSystem can read sysctls.
HAS_SYSCTLBYNAME = bool(lib.BSDBPF_HAS_SYSCTLBYNAME)

_REQUEST_PREFIXES = ("BIOC", "FIO", "TIOC")


def check_native_version(native: str, package: str) -> None:
    """Raise ImportError unless the extension's version ``native`` is ``package``'s."""
    if native != package:
        raise ImportError(
            f"bsdbpf._native was built for bsdbpf {native}, but the package is {package}: "
            "rebuild the extension (`pip install .`, or `pip install -e .` / "
            "`python setup.py build_ext --inplace` in a source tree)")


check_native_version(NATIVE_VERSION, __version__)


def _build_request_names() -> dict[int, str]:
    names: dict[int, str] = {}
    # Sorted, and the obsolete BIOC[GS]SEESENT aliases skipped: each number
    # gets its current name.
    for name in sorted(dir(lib)):
        if name.startswith(_REQUEST_PREFIXES) and not name.endswith("SEESENT"):
            value = getattr(lib, name)
            if value:  # 0: compiled out on this kernel (BSDBPF_HAS_*)
                names.setdefault(value, name)
    return names


#: Request number -> its C name, for every ioctl request this build knows.
REQUEST_NAMES: dict[int, str] = _build_request_names()


def request_name(request: int) -> str:
    """The C name of an ioctl request (``"BIOCSETZBUF"``), or its number in hex."""
    return REQUEST_NAMES.get(request, f"ioctl {request:#x}")


def new_ifreq(op: str, ifname: str) -> Any:
    """A ``struct ifreq *`` naming ``ifname``, for ``op`` (BIOCSETIF, SIOCGIFFLAGS).
    A name that does not fit, or has a NUL in it, is EINVAL before any call:
    the kernel would read another name."""
    raw = ifname.encode()
    if len(raw) >= lib.IFNAMSIZ or b"\0" in raw:
        raise from_errno(errno.EINVAL, op, ifname=ifname, cls=InvalidArgument,
                         hint=f"an interface name has at most {lib.IFNAMSIZ - 1} bytes "
                              "and no NUL")
    ifr = ffi.new("struct ifreq *")
    ifr.ifr_name = raw
    return ifr
