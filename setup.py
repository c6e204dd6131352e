"""bsdbpf: FreeBSD's /dev/bpf, zero-copy buffers and net.bpf sysctls for Python."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["bsdbpf", "bsdbpf.*"]),
    package_data={"bsdbpf": ["py.typed", "*.pyi"]},
    cffi_modules=["csrc/build_bpf.py:ffibuilder"],
    zip_safe=False,
)
