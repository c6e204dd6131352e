#!/bin/sh
# Prepare a FreeBSD machine to run bsdbpf's test suite on its real kernel.
#
#   sh vagrant/provision.sh [SOURCE_DIR]        (as root; default: this checkout)
#
# Plain sh, idempotent: Vagrant runs it on every `vagrant provision`, and any
# FreeBSD CI VM can run it the same way.  It
#   * installs Python, pip and the build dependencies with pkg(8) (the C
#     compiler, clang, and libpcap are in FreeBSD's base system);
#   * installs bsdbpf with its test extra, editable, into a virtualenv;
#   * creates an epair(4) pair, quiet (no DHCP client, no IPv6
#     autoconfiguration) and up, for the tests to capture on and inject
#     through;
#   * records the net.bpf sysctls as they were before any test touched them,
#     so that vagrant/guest-test can put them back afterwards.
# What the tests need to know is written to $BSDBPF_STATE/env.
set -eu

SRC=${1:-$(cd "$(dirname "$0")/.." && pwd)}
STATE=${BSDBPF_STATE:-/var/db/bsdbpf}
VENV=${BSDBPF_VENV:-$STATE/venv}
PYTHON_PKG=${BSDBPF_PYTHON_PKG:-python311}
BPF_SYSCTLS="net.bpf.zerocopy_enable net.bpf.bufsize net.bpf.maxbufsize net.bpf.maxinsns net.bpf.optimize_writers"

say() {
    printf 'provision: %s\n' "$*"
}

die() {
    printf 'provision: %s\n' "$*" >&2
    exit 1
}

[ "$(uname -s)" = FreeBSD ] || die "this is $(uname -s); the script prepares a FreeBSD machine"
[ "$(id -u)" -eq 0 ] || die "run as root (pkg, ifconfig and sysctl need it)"
[ -f "$SRC/pyproject.toml" ] || die "$SRC is not a bsdbpf checkout (no pyproject.toml)"
mkdir -p "$STATE"

# -- packages ---------------------------------------------------------------
# python311 is FreeBSD's Python 3.11; its pip is py311-pip.  PyPI has no
# FreeBSD wheels: cffi and numpy come from packages (the virtualenv sees
# them), so that pip does not build numpy from source; libffi and pkgconf
# are for cffi's build of bsdbpf._native.
PYVER=${PYTHON_PKG#python}
PKGS="$PYTHON_PKG py$PYVER-pip py$PYVER-cffi py$PYVER-numpy libffi pkgconf"
say "pkg install $PKGS"
export ASSUME_ALWAYS_YES=yes
# shellcheck disable=SC2086  # one argument per package
pkg install -y $PKGS
PY="/usr/local/bin/python$(echo "$PYVER" | sed 's/^\(.\)/\1./')"
[ -x "$PY" ] || die "$PY is missing after pkg install $PYTHON_PKG"
command -v cc >/dev/null 2>&1 || die "no C compiler (cc): FreeBSD's base system has clang"

# -- bsdbpf -----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "virtualenv $VENV"
    "$PY" -m venv --system-site-packages "$VENV"
fi
say "pip install -e ${SRC}[test]"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "${SRC}[test]"
"$VENV/bin/python" -c 'import bsdbpf, bsdbpf._native' || die "bsdbpf does not import after install"

# -- the epair(4) pair ------------------------------------------------------
# The FreeBSD project's Vagrant boxes set ifconfig_DEFAULT="SYNCDHCP"
# (release/tools/vagrant.conf), and devd(8) runs `service dhclient quietstart
# IF` whenever an Ethernet interface's link comes up (/etc/devd/dhclient.conf):
# an epair(4)'s links come up as the pair is made, so dhclient would start on
# both ends and send DHCP discovers across the pair in the middle of the
# tests' counts.  An ifconfig_IF of the interface's own takes the place of the
# default; NOAUTO makes rc(8), devd and dhclient's rc.d script leave it alone.
# A dhclient already running there (a pair made by an older provision.sh) is
# stopped.
no_dhcp() {
    for i in "$@"; do
        sysrc "ifconfig_$i=NOAUTO" >/dev/null
        service dhclient forcestop "$i" >/dev/null 2>&1 || true
    done
}

kldload -n if_epair
ifname=
if [ -f "$STATE/env" ]; then
    ifname=$(sed -n 's/^BSDBPF_TEST_IFNAME=//p' "$STATE/env")
fi
if [ -z "$ifname" ] || ! ifconfig "$ifname" >/dev/null 2>&1; then
    # Named before it is made: rc.conf must leave it out of DHCP before its
    # links come up.
    unit=0
    while ifconfig "epair${unit}a" >/dev/null 2>&1; do
        unit=$((unit + 1))
    done
    ifname=epair${unit}a
    no_dhcp "$ifname" "epair${unit}b"
    ifconfig "epair${unit}" create >/dev/null
fi
peer=${ifname%a}b
no_dhcp "$ifname" "$peer"
for i in "$ifname" "$peer"; do
    # No addresses and no IPv6 autoconfiguration: nothing but the tests' own
    # frames crosses the pair, so counters stay predictable.
    ifconfig "$i" inet6 -auto_linklocal ifdisabled
    # epair(4) takes any MTU: jumbo frames let the tests offer frames larger
    # than a zero-copy buffer, as they do on the simulator.
    ifconfig "$i" mtu 9000 up
done
say "epair: $ifname (tests capture here) <-> $peer (frames are injected here)"

# -- net.bpf sysctls as they were -------------------------------------------
if [ ! -f "$STATE/sysctl.orig" ]; then
    # shellcheck disable=SC2086  # one argument per sysctl name
    sysctl -e -i $BPF_SYSCTLS > "$STATE/sysctl.orig"  # -i: skip any this kernel lacks
    say "recorded $(wc -l < "$STATE/sysctl.orig" | tr -d ' ') net.bpf sysctls in $STATE/sysctl.orig"
fi

cat > "$STATE/env" <<ENV
BSDBPF_SRC=$SRC
BSDBPF_VENV=$VENV
BSDBPF_TEST_IFNAME=$ifname
BSDBPF_TEST_PEER=$peer
BSDBPF_SYSCTL_ORIG=$STATE/sysctl.orig
ENV
say "ready: $STATE/env"
