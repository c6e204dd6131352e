"""bsdbpf's C, compiled for FreeBSD with FreeBSD's own headers, on any host.

On FreeBSD csrc/bsdbpf_abi.h includes the system's headers instead of
csrc/freebsd_abi.h, so no build here goes through that branch.  zig ships
FreeBSD's userland headers for cross-compiling (the ``ziglang`` wheel, in the
test extra): every C file of both extensions is compiled with them, for
FreeBSD's two tier-1 architectures, exactly as the build compiles it.
On FreeBSD itself ``pip install`` has just done the same with the real ones.

The same headers are a second witness for the ABI oracle,
tests/data/freebsd-abi.json (which test_abi.py holds the package's own
statement of the ABI to): every number, size, alignment and offset in it is
asserted at compile time against them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
TARGETS = ("x86_64-freebsd", "aarch64-freebsd")

pytestmark = pytest.mark.skipif(
    sys.platform.startswith("freebsd"),
    reason="on FreeBSD the install compiles the extensions with the system's own headers")


def _build_bpf() -> object:
    """csrc/build_bpf.py, the cffi build, as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location("build_bpf", CSRC / "build_bpf.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _zig() -> None:
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("ziglang is not installed (pip install '.[test]')")


def _zig_cc(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "-target", target, *args],
        capture_output=True, text=True, timeout=300, check=False)


def _cc(target: str, source: Path, output: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Compile one file as the build does, for ``target``."""
    return _zig_cc(target, "-fPIC", "-c", "-o", str(output), *flags, "-I", str(CSRC),
                   "-I", sysconfig.get_paths()["include"], str(source))


@pytest.fixture(scope="module")
def extensions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Path, list[str]]]]:
    """Per extension, (C file, compiler flags) for every file it compiles."""
    _zig()
    build = _build_bpf()
    ffi = build.build_ffi()  # type: ignore[attr-defined]
    generated = tmp_path_factory.mktemp("cffi") / "_native.c"
    ffi.emit_c_code(str(generated))
    flags: list[str] = build.COMPILE_ARGS  # type: ignore[attr-defined]
    names: list[str] = build.SOURCES  # type: ignore[attr-defined]
    return {
        "_native": [(path, flags) for path in (generated, *(CSRC / name for name in names))],
        "_capture": [(CSRC / "_capture.c", ["-DPy_LIMITED_API=0x030B0000"])],  # as setup.py
    }


@pytest.mark.parametrize("target", TARGETS)
def test_both_extensions_compile_and_link_against_freebsds_libc(
        extensions: dict[str, list[tuple[Path, list[str]]]], target: str,
        tmp_path: Path) -> None:
    """Every file compiles; linked as a shared object with no undefined symbol
    allowed, what is left undefined is the interpreter's (Py*) alone: every
    libc and libthr function called exists on FreeBSD."""
    for name, files in extensions.items():
        objects = []
        for path, flags in files:
            objects.append(str(tmp_path / f"{path.stem}.o"))
            done = _cc(target, path, Path(objects[-1]), *flags)
            assert done.returncode == 0, f"{path.name} for {target}:\n{done.stderr}"
        done = _zig_cc(target, "-shared", "-o", str(tmp_path / f"{name}.so"), *objects,
                       "-Wl,-z,defs", "-lthr")
        undefined = set(re.findall(r"undefined symbol: (\S+)", done.stderr))
        assert undefined, f"{name}: the interpreter's symbols are missing from the link check"
        assert {s for s in undefined if not s.startswith(("Py", "_Py"))} == set(), name
        other = [line for line in done.stderr.splitlines()
                 if "error:" in line and "undefined symbol" not in line]
        assert other == [], name


ORACLE = json.loads((ROOT / "tests" / "data" / "freebsd-abi.json").read_text())
# Only in FreeBSD's main branch (the oracle's "availability"), not in 14.x/15.0.
MAIN_ONLY = ("BIOCGETIFLIST", "bpf_iflist")
ENUMS = ("BPF_D_IN", "BPF_D_INOUT", "BPF_D_OUT")  # enum bpf_direction: not macros
# Sizes of what is not a struct: a member, and plain types.
NOT_STRUCTS = {"ifr_ifru": "((struct ifreq *)0)->ifr_ifru", "voidptr": "void *",
               **{t: t for t in ("long", "pid_t", "size_t", "suseconds_t", "time_t", "u_int")}}


def _assertions(values: dict[str, int]) -> list[str]:
    """A C static assertion per fact of the oracle for one architecture."""
    out = []
    for key, value in values.items():
        if any(name in key for name in MAIN_ONLY):
            continue
        kind, _, what = key.partition("_")
        if kind in ("sizeof", "alignof"):
            operand = NOT_STRUCTS.get(what, f"struct {what}")
            fact = f"{'_Alignof' if kind == 'alignof' else 'sizeof'}({operand})"
        elif kind == "offsetof":
            struct, field = what.split(".")
            fact = f"offsetof(struct {struct}, {field})"
        elif re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            fact = f"(unsigned long long)({key})"
            if key not in ENUMS:  # a missing macro must not pass unseen
                out.append(f"#ifndef {key}\n#error {key} is not defined\n#endif")
        else:
            continue  # computed from a formula (bpf_hdrlen_*), not a name in the headers
        out.append(f"_Static_assert({fact} == {value}ULL, \"{key}\");")
    return out


@pytest.mark.parametrize(("arch", "target"), [("amd64", "x86_64-freebsd"), ("i386", "x86-freebsd")])
def test_the_abi_oracle_agrees_with_freebsds_headers(arch: str, target: str,
                                                     tmp_path: Path) -> None:
    _zig()
    checks = _assertions(ORACLE[arch])
    assert len([c for c in checks if c.startswith("_Static_assert")]) > 200
    source = tmp_path / "oracle.c"
    source.write_text("\n".join(['#include "bsdbpf_abi.h"', "#include <stddef.h>", *checks]))
    done = _cc(target, source, tmp_path / "oracle.o")
    assert done.returncode == 0, done.stderr
