"""bsdbpf's C, compiled for FreeBSD with FreeBSD's own headers, on any host.

On FreeBSD csrc/bsdbpf_abi.h includes the system's headers instead of
csrc/freebsd_abi.h, so no build here goes through that branch.  zig ships
FreeBSD's userland headers for cross-compiling (the ``ziglang`` wheel, in the
test extra): every C file of both extensions is compiled with them, for
FreeBSD's two tier-1 architectures, exactly as the build compiles it.
On FreeBSD itself ``pip install`` has just done the same with the real ones.
"""

from __future__ import annotations

import importlib.util
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


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, list[str]]]:
    """(C file, compiler flags) for every file the two extensions compile."""
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("ziglang is not installed (pip install '.[test]')")
    build = _build_bpf()
    ffi = build.build_ffi()  # type: ignore[attr-defined]
    generated = tmp_path_factory.mktemp("cffi") / "_native.c"
    ffi.emit_c_code(str(generated))
    flags: list[str] = build.COMPILE_ARGS  # type: ignore[attr-defined]
    names: list[str] = build.SOURCES  # type: ignore[attr-defined]
    native = [generated, *(CSRC / name for name in names)]
    capture = (CSRC / "_capture.c", ["-DPy_LIMITED_API=0x030B0000"])  # as setup.py builds it
    return [(path, flags) for path in native] + [capture]


@pytest.mark.parametrize("target", TARGETS)
def test_every_c_file_compiles_with_freebsds_headers(
        sources: list[tuple[Path, list[str]]], target: str, tmp_path: Path) -> None:
    include = sysconfig.get_paths()["include"]
    for path, flags in sources:
        done = subprocess.run(
            [sys.executable, "-m", "ziglang", "cc", "-target", target, "-c",
             "-o", str(tmp_path / f"{path.stem}.o"), *flags, "-I", str(CSRC), "-I", include,
             str(path)],
            capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{path.name} for {target}:\n{done.stderr}"
