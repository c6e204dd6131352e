"""Every number, size and offset of bsdbpf._native against FreeBSD's headers.

tests/data/freebsd-abi.json (a copy of the project's spec/freebsd-abi.json, see
tests/data/README.md) was produced by a compiler from FreeBSD's own headers;
the column that matches this host's word size is the one that must agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bsdbpf import __version__
from bsdbpf._native import ffi, lib

ABI_JSON = Path(__file__).resolve().parent / "data" / "freebsd-abi.json"
SHARED_ABI_JSON = Path(__file__).resolve().parents[2] / "shared" / "spec" / "freebsd-abi.json"
ARCH = "amd64" if ffi.sizeof("long") == 8 else "i386"


def _load() -> dict[str, Any]:
    return json.loads(ABI_JSON.read_text())  # type: ignore[no-any-return]


TRUTH: dict[str, int] = _load()[ARCH]
LAYOUT = re.compile(r"^(sizeof|alignof|offsetof)_(\w+?)(?:\.(\w+))?$")
# Names the JSON spells differently from C.
CTYPE = {"voidptr": "void *", "long": "long", "size_t": "size_t", "pid_t": "pid_t",
         "time_t": "time_t", "suseconds_t": "suseconds_t", "u_int": "u_int"}


def _ctype(name: str) -> str:
    return CTYPE.get(name, f"struct {name}")


CONSTANTS = sorted(k for k in TRUTH if re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)
                   and not k.startswith("_") and k != "SIZEOF_BPF_HDR")
# struct sockaddr is not part of the BPF interface, so it is not bound.
LAYOUTS = sorted(k for k in TRUTH if LAYOUT.match(k) and "sockaddr" not in k)


@pytest.mark.parametrize("name", CONSTANTS)
def test_constant(name: str) -> None:
    assert getattr(lib, name) == TRUTH[name], f"{name} on {ARCH}"


@pytest.mark.parametrize("key", LAYOUTS)
def test_layout(key: str) -> None:
    m = LAYOUT.match(key)
    assert m is not None
    what, typename, field = m.groups()
    if typename == "ifr_ifru":
        assert what == "sizeof"
        assert TRUTH[key] == lib.BSDBPF_SIZEOF_IFR_IFRU
        return
    if typename == "ifreq" and field == "ifr_ifru":
        assert TRUTH[key] == lib.BSDBPF_OFFSETOF_IFR_IFRU
        return
    ctype = _ctype(typename)
    if what == "sizeof":
        assert ffi.sizeof(ctype) == TRUTH[key]
    elif what == "alignof":
        assert ffi.alignof(ctype) == TRUTH[key]
    else:
        assert ffi.offsetof(ctype, field) == TRUTH[key]


@pytest.mark.parametrize("hdr", ["bpf_hdr", "bpf_xhdr"])
def test_sizeof_bpf_hdr_is_offsetof_hdrlen_plus_two(hdr: str) -> None:
    assert ffi.offsetof(f"struct {hdr}", "bh_hdrlen") + 2 == TRUTH[f"SIZEOF_BPF_HDR(struct {hdr})"]


@pytest.mark.parametrize("key", sorted(k for k in TRUTH if k.startswith("bpf_hdrlen_")))
def test_record_header_length(key: str) -> None:
    m = re.fullmatch(r"bpf_hdrlen_(bpf_x?hdr)_linkhdr(\d+)", key)
    assert m is not None
    tstamp = lib.BPF_T_NANOTIME if m.group(1) == "bpf_xhdr" else lib.BPF_T_MICROTIME
    assert lib.bsdbpf_hdrlen(int(m.group(2)), tstamp) == TRUTH[key]


def test_ioctl_hex_column_agrees() -> None:
    hexes = _load()["ioctl_hex"][ARCH]
    for name, value in hexes.items():
        assert getattr(lib, name) == int(value, 16), name


def test_every_request_of_the_spec_is_bound() -> None:
    requests = [name for name in TRUTH if re.fullmatch(r"(BIOC|FIO|TIOC)\w+", name)]
    assert len(requests) >= 40
    for name in requests:
        assert hasattr(lib, name), name


def test_bpf_t_valid_values() -> None:
    valid = _load()["derived"]["BPF_T_VALID_values"]
    named = {getattr(lib, n) for n in dir(lib) if n.startswith("BPF_T_") and "MASK" not in n}
    assert named == set(valid)


def test_package_version_compiled_in() -> None:
    assert ffi.string(lib.BSDBPF_PACKAGE_VERSION).decode() == __version__


@pytest.mark.skipif(not SHARED_ABI_JSON.exists(),
                    reason="the project's shared spec is not beside this checkout (a user's clone)")
def test_bundled_copy_equals_the_shared_spec() -> None:
    """The copy under tests/data is the spec's file, byte for byte."""
    assert ABI_JSON.read_bytes() == SHARED_ABI_JSON.read_bytes()
