"""bsdbpf: FreeBSD's /dev/bpf, zero-copy buffers and net.bpf sysctls for Python."""

import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class build_ext_also_in_source(build_ext):  # noqa: N801 (setuptools command naming)
    """Build the extensions, then copy them into the source tree too.

    ``python3 -m bsdbpf`` and ``python3 -m pytest`` run from a checkout put the
    checkout first on ``sys.path``, so its ``bsdbpf/`` shadows the installed
    package; with the compiled modules beside the sources, both work after a
    plain ``pip install .`` (the same files ``pip install -e .`` would place).
    """

    def run(self) -> None:
        super().run()
        if not self.inplace:
            self.copy_extensions_to_source()

# The limited API has the buffer protocol from 3.11 on: abi3 there, a
# version-specific build on older Pythons.
ABI3 = sys.version_info >= (3, 11)

setup(
    packages=find_packages(include=["bsdbpf", "bsdbpf.*"]),
    package_data={"bsdbpf": ["py.typed", "*.pyi"]},
    cffi_modules=["csrc/build_bpf.py:ffibuilder"],
    cmdclass={"build_ext": build_ext_also_in_source},
    ext_modules=[
        Extension(
            "bsdbpf._capture",
            sources=["csrc/_capture.c"],
            depends=["csrc/capture_records.h", "csrc/bsdbpf_abi.h", "csrc/freebsd_abi.h"],
            include_dirs=["csrc"],
            define_macros=[("Py_LIMITED_API", "0x030B0000")] if ABI3 else [],
            py_limited_api=ABI3,
        ),
    ],
    # Both extensions (the cffi one too) use only the limited API: one wheel
    # for every CPython from 3.11 on.
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if ABI3 else {},
    zip_safe=False,
)
