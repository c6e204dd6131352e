"""The layers of design.md, enforced: who may import whom, read from the source (AST).

    leaf      _native _version errors _abi types     (stdlib and each other only)
    seam      system                                 (leaf)
    sim       bsdbpf.sim.*                           (leaf, seam, itself)
    raw       raw                                    (leaf, seam)
    backend   backend                                (leaf, seam, sim: the only one)
    library   descriptor sysctl stats zbuf ...       (anything but sim and the CLI)
    cli       __main__ cli.*                         (anything)

Every import counts, also one inside a function, so a lazy import cannot
hide an upward edge.  A module that is not named here is library code.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bsdbpf
from bsdbpf import _abi
from bsdbpf._native import lib

PACKAGE = Path(bsdbpf.__file__).resolve().parent
ROOT = PACKAGE.parent

LEAF = {"bsdbpf._native", "bsdbpf._version", "bsdbpf.errors", "bsdbpf._abi", "bsdbpf.types"}
LEAF_MAY_IMPORT = {"bsdbpf._native", "bsdbpf._version", "bsdbpf.errors"}
SEAM = "bsdbpf.system"
STDLIB = getattr(sys, "stdlib_module_names", None)  # Python 3.10+


def layer(module: str) -> str:
    if module in LEAF:
        return "leaf"
    if module == SEAM:
        return "seam"
    if module == "bsdbpf.sim" or module.startswith("bsdbpf.sim."):
        return "sim"
    if module in ("bsdbpf.raw", "bsdbpf.backend"):
        return module.rsplit(".", 1)[1]
    if module in ("bsdbpf.__main__", "bsdbpf.cli") or module.startswith("bsdbpf.cli."):
        return "cli"
    return "library"


ALLOWED = {  # layer -> the layers it may import
    "leaf": set(),  # checked module by module: LEAF_MAY_IMPORT
    "seam": {"leaf"},
    "sim": {"leaf", "seam", "sim"},
    "raw": {"leaf", "seam"},
    "backend": {"leaf", "seam", "sim"},
    "library": {"leaf", "seam", "raw", "backend", "library"},
    "cli": {"leaf", "seam", "raw", "backend", "library", "sim", "cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists() or (
        name == "bsdbpf._native")


def imports(module: str, source: str, is_package: bool = False) -> list[tuple[str, int]]:
    """Every module ``module``'s source imports, with the line: ``from bsdbpf
    import raw`` counts as ``bsdbpf.raw``, ``from bsdbpf import Descriptor`` as
    ``bsdbpf`` itself."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if _is_module(sub) else base, node.lineno))
    return out


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What ``module`` imports that its layer may not."""
    mine = layer(module)
    found = []
    for target, line in imports(module, source, is_package):
        top = target.split(".")[0]
        if top != "bsdbpf":
            if mine == "leaf" and STDLIB is not None and top not in STDLIB:
                found.append(f"{module}:{line} imports {target}: a leaf uses the stdlib only")
            continue
        if target == module:
            continue
        theirs = layer(target)
        ok = (target in LEAF_MAY_IMPORT) if mine == "leaf" else theirs in ALLOWED[mine]
        if target == "bsdbpf" and mine != "cli":
            ok = False  # the package imports everything: only the top may use it
        if not ok:
            found.append(f"{module}:{line} ({mine}) imports {target} ({theirs})")
    return found


def sources() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PACKAGE.rglob("*.py"))


def test_every_import_goes_down_the_layers() -> None:
    found = []
    for module, path in sources():
        found += violations(module, path.read_text(), path.name == "__init__.py")
    assert not found, "\n".join(found)


def _imports_host_system(source: str) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == SEAM
               and any(alias.name == "HostSystem" for alias in node.names)
               for node in ast.walk(ast.parse(source)))


def test_only_the_backend_imports_host_system_and_the_simulator() -> None:
    both = []
    for module, path in sources():
        source = path.read_text()
        targets = {t for t, _ in imports(module, source, path.name == "__init__.py")}
        if any(layer(t) == "sim" for t in targets) and _imports_host_system(source):
            both.append(module)
    assert both == ["bsdbpf.backend"]


@pytest.mark.parametrize("module", ["bsdbpf.stats", "bsdbpf.raw", "bsdbpf.sysctl"])
def test_the_shared_types_come_from_the_leaf_not_from_descriptor(module: str) -> None:
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    targets = {t for t, _ in imports(module, path.read_text())}
    assert "bsdbpf.descriptor" not in targets


def test_the_tree_has_the_layers_it_is_checked_for() -> None:
    names = {m for m, _ in sources()}
    assert {"bsdbpf._abi", "bsdbpf.types", "bsdbpf.system", "bsdbpf.raw", "bsdbpf.backend",
            "bsdbpf.sysctl", "bsdbpf.sim", "bsdbpf.sim.kernel", "bsdbpf.descriptor"} <= names


@pytest.mark.parametrize(("module", "source", "bad"), [
    ("bsdbpf.system", "def f():\n    from bsdbpf.sim import default_kernel\n",
     "bsdbpf.system:2 (seam) imports bsdbpf.sim (sim)"),
    ("bsdbpf.sim.kernel", "from bsdbpf.descriptor import Descriptor\n",
     "bsdbpf.sim.kernel:1 (sim) imports bsdbpf.descriptor (library)"),
    ("bsdbpf.sim.kernel", "from ..raw import get_blen\n",
     "bsdbpf.sim.kernel:1 (sim) imports bsdbpf.raw (raw)"),
    ("bsdbpf.types", "from bsdbpf.system import System\n",
     "bsdbpf.types:1 (leaf) imports bsdbpf.system (seam)"),
    ("bsdbpf.stats", "import bsdbpf.sim\n", "bsdbpf.stats:1 (library) imports bsdbpf.sim (sim)"),
    ("bsdbpf.raw", "from bsdbpf import Descriptor\n",
     "bsdbpf.raw:1 (raw) imports bsdbpf (library)"),
])
def test_the_check_finds_upward_imports(module: str, source: str, bad: str) -> None:
    assert violations(module, source) == [bad]


@pytest.mark.skipif(STDLIB is None, reason="sys.stdlib_module_names is Python 3.10+")
def test_the_check_keeps_leaves_on_the_stdlib() -> None:
    assert violations("bsdbpf._abi", "import cffi\nimport os\n") == [
        "bsdbpf._abi:1 imports cffi: a leaf uses the stdlib only"]


def test_the_check_allows_what_the_layers_allow() -> None:
    assert violations("bsdbpf.backend", "from bsdbpf.sim import default_kernel\n"
                                        "from bsdbpf.system import HostSystem\n") == []
    assert violations("bsdbpf.sim.kernel", "from bsdbpf._abi import request_name\n"
                                           "from bsdbpf.sim.memory import is_mapped\n") == []
    assert violations("bsdbpf.sysctl", "from bsdbpf import raw\n") == []


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120,
                          check=False)


def test_importing_the_library_does_not_load_the_simulator() -> None:
    proc = _run("import sys, bsdbpf, bsdbpf.raw, bsdbpf.sysctl, bsdbpf.stats, bsdbpf.backend\n"
                "print(sorted(m for m in sys.modules if m.startswith('bsdbpf.sim')))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- bsdbpf._abi ----------------------------------------------------------------


def test_the_extension_is_this_version() -> None:
    assert bsdbpf.__version__ == _abi.NATIVE_VERSION


def test_a_stale_extension_is_refused_with_what_to_do() -> None:
    with pytest.raises(ImportError, match=r"built for bsdbpf 0\.0\.1, but the package is "
                                          r"0\.2\.0: rebuild the extension \(`pip install"):
        _abi.check_native_version("0.0.1", "0.2.0")
    _abi.check_native_version("0.2.0", "0.2.0")


def test_importing_with_a_stale_extension_fails_at_once() -> None:
    # The package's version is changed before anything of bsdbpf is imported.
    proc = _run("import sys, types\n"
                "fake = types.ModuleType('bsdbpf._version')\n"
                "fake.__version__ = '99.0'\n"
                "sys.modules['bsdbpf._version'] = fake\n"
                "import bsdbpf\n")
    assert proc.returncode != 0
    assert "ImportError: bsdbpf._native was built for bsdbpf" in proc.stderr
    assert "the package is 99.0: rebuild the extension" in proc.stderr


def test_feature_flags_follow_the_build() -> None:
    assert _abi.HAS_BIOCSETVLANPCP is bool(lib.BSDBPF_HAS_BIOCSETVLANPCP)
    assert _abi.HAS_BIOCGETIFLIST is bool(lib.BSDBPF_HAS_BIOCGETIFLIST)
    assert _abi.HAS_SYSCTLBYNAME is sys.platform.startswith("freebsd")
    assert (_abi.request_name(lib.BIOCGETIFLIST) == "BIOCGETIFLIST") is (
        _abi.HAS_BIOCGETIFLIST)


# -- the types of bsdbpf._native ------------------------------------------------------

STUB = PACKAGE / "_native.pyi"


def test_the_native_stub_is_generated_from_the_current_cdef() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "csrc" / "gen_native_stub.py"), "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_native_stub_names_what_the_extension_has() -> None:
    tree = ast.parse(STUB.read_text())
    (lib_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_Lib"]
    declared = {n.target.id for n in lib_class.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    declared |= {n.name for n in lib_class.body if isinstance(n, ast.FunctionDef)}
    assert declared == set(dir(lib))


MISUSE = '''
from bsdbpf._native import ffi, lib
lib.BIOCGBLENX
lib.ioctl(3, lib.BIOCGBLEN, 5)
lib.bsdbpf_wordalign(b"x")
name: str = ffi.string(ffi.new("char[]", b"em0"))
'''


def test_mypy_checks_code_that_calls_the_extension(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is a development dependency")
    probe = tmp_path / "probe.py"
    probe.write_text(MISUSE)
    out, _err, status = api.run(["--strict", "--no-incremental", "--cache-dir", os.devnull,
                                 str(probe)])
    assert status == 1
    assert '"_Lib" has no attribute "BIOCGBLENX"' in out
    assert 'Argument 3 to "ioctl" of "_Lib" has incompatible type "int"' in out
    assert 'Argument 1 to "bsdbpf_wordalign" of "_Lib" has incompatible type "bytes"' in out
    assert '(expression has type "bytes", variable has type "str")' in out
