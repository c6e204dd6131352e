"""bsdbpf: FreeBSD's /dev/bpf, zero-copy buffers and net.bpf sysctls for Python."""

from setuptools import find_packages, setup
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


setup(
    packages=find_packages(include=["bsdbpf", "bsdbpf.*"]),
    package_data={"bsdbpf": ["py.typed", "*.pyi"]},
    cffi_modules=["csrc/build_bpf.py:ffibuilder"],
    cmdclass={"build_ext": build_ext_also_in_source},
    zip_safe=False,
)
