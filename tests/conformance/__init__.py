"""The conformance suite: behaviour of /dev/bpf, written against the System seam only.

It runs on the simulated kernel everywhere and unchanged on FreeBSD's kernel
(``BSDBPF_SYSTEM=host BSDBPF_TEST_IFNAME=<if> pytest tests/conformance`` as root).
The coverage map (spec row → test) is in README.md beside this file.
"""
