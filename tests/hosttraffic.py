"""Traffic for the conformance suite on FreeBSD's real kernel, through an epair(4) pair.

The simulator's ``traffic(ifname, frame, outgoing=False)`` offers a frame to an
interface's descriptors and returns once every descriptor has seen it.  On
FreeBSD the same is done with a pair of back-to-back interfaces (``epair0a``,
where the tests capture, and ``epair0b``, its peer):

* an **incoming** frame is written through a /dev/bpf descriptor on the peer:
  it crosses the pair and arrives on the capture end as received traffic;
* an **outgoing** frame is written through a descriptor on the capture end
  itself: the driver taps it on its way out (direction "out");
* a **witness** descriptor on the capture end, attached before any of the
  test's, waits until the frame shows up.  The kernel attaches each new
  descriptor at the head of the interface's list and offers a packet to the
  list in order, so the witness, oldest, sees it last: once it has, every
  descriptor of the test has too.

The writers (header complete, capturing nothing) and the witness live in a
child process, so that the test's own process owns only the test's
descriptors: net.bpf.stats, which tests filter by pid, shows no strangers.

``HostTraffic(ifname, peer)`` has the simulator fixture's call signature;
``python3 tests/hosttraffic.py serve IFNAME PEER`` is the child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from bsdbpf.descriptor import Descriptor

__all__ = ["FrameInjector", "HostTraffic", "NoTrafficSource", "peer_of"]

WITNESS_WAIT = 5.0  # seconds a frame may take to cross the pair (generous under load)
WITNESS_BUFFER = 1 << 16  # a whole MTU-sized frame with room to spare


class NoTrafficSource(LookupError):
    """The interface has no injection path here (only the epair's capture end has)."""


def peer_of(ifname: str) -> str:
    """The other end of an epair(4) pair: ``epair3a`` <-> ``epair3b``."""
    if ifname.startswith("epair") and ifname[-1:] in ("a", "b"):
        return ifname[:-1] + ("b" if ifname.endswith("a") else "a")
    raise NoTrafficSource(f"{ifname} is not an epair(4) end: set BSDBPF_TEST_PEER to the "
                          "interface whose frames arrive on it")


class FrameInjector:
    """Writers on both ends of a pair and a witness on the capture end, in
    this process, over any System (the child of :class:`HostTraffic` uses it
    on the host; tests use it on the simulator)."""

    def __init__(self, ifname: str, peer: str, system: Any = None,
                 timeout: float = WITNESS_WAIT) -> None:
        self.ifname = ifname
        self.timeout = timeout
        self._open: list[Descriptor] = []
        try:
            # The witness first: the oldest descriptor on the interface is the
            # last one offered each packet.
            self._witness = self._descriptor(ifname, system, immediate=True,
                                             buffer_size=WITNESS_BUFFER)
            self._writers = {False: self._descriptor(peer, system, snaplen=0),
                             True: self._descriptor(ifname, system, snaplen=0)}
        except BaseException:
            self.close()
            raise

    def _descriptor(self, ifname: str, system: Any, **options: Any) -> Descriptor:
        d = Descriptor.open(ifname, zerocopy=False, system=system, **options)
        self._open.append(d)
        if "snaplen" in options:  # a writer: frames leave exactly as given
            d.header_complete = True
        return d

    def inject(self, ifname: str, frame: bytes, outgoing: bool = False) -> None:
        """Send ``frame`` so that it is seen on ``ifname`` (received, or sent if
        ``outgoing``); return once the witness has seen it."""
        if ifname != self.ifname:
            raise NoTrafficSource(f"frames can be injected on {self.ifname} only, not {ifname}")
        self._writers[outgoing].write(frame)
        for pkt in self._witness.packets(timeout=self.timeout):
            if bytes(pkt.data) == frame:
                return
        raise TimeoutError(f"inject on {ifname}: the frame ({len(frame)} bytes, "
                           f"{'outgoing' if outgoing else 'incoming'}) was not seen within "
                           f"{self.timeout:g} s; is the pair up?")

    def close(self) -> None:
        while self._open:
            self._open.pop().close()


class HostTraffic:
    """``traffic(ifname, frame, outgoing=False)`` on FreeBSD: a child process
    holding a :class:`FrameInjector` on ``ifname`` and its ``peer``."""

    def __init__(self, ifname: str, peer: str | None = None) -> None:
        self.ifname = ifname
        peer = peer or os.environ.get("BSDBPF_TEST_PEER") or peer_of(ifname)
        self._child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", ifname, peer],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            self._ask("ready")
        except BaseException:
            self.close()
            raise

    def _ask(self, line: str) -> None:
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        if line != "ready":
            self._child.stdin.write(line + "\n")
            self._child.stdin.flush()
        answer = self._child.stdout.readline().rstrip("\n")
        if answer != "ok":
            raise RuntimeError(f"traffic source on {self.ifname}: "
                               f"{answer or 'the child process exited'}")

    def __call__(self, ifname: str, frame: bytes, outgoing: bool = False) -> None:
        if ifname != self.ifname:
            raise NoTrafficSource(f"frames can be injected on {self.ifname} only, not {ifname}")
        self._ask(f"{'out' if outgoing else 'in'} {bytes(frame).hex()}")

    def close(self) -> None:
        """End of input tells the child to close its descriptors and exit."""
        for pipe in (self._child.stdin, self._child.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self._child.wait(timeout=WITNESS_WAIT * 2)
        except subprocess.TimeoutExpired:
            self._child.kill()  # a hung child must not outlive the test
            self._child.wait()
            raise

    def __enter__(self) -> HostTraffic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(ifname: str, peer: str) -> int:
    """The child: one request per line (``in HEX`` / ``out HEX``), one answer
    per line (``ok`` or the error)."""
    try:
        injector = FrameInjector(ifname, peer)
    except Exception as err:
        print(f"cannot open the pair {ifname}/{peer}: {err}", flush=True)
        return 1
    try:
        print("ok", flush=True)
        for line in sys.stdin:
            direction, _, data = line.strip().partition(" ")
            try:
                injector.inject(ifname, bytes.fromhex(data), outgoing=direction == "out")
            except Exception as err:
                print(str(err).replace("\n", " ") or type(err).__name__, flush=True)
            else:
                print("ok", flush=True)
    finally:
        injector.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "serve":
        sys.exit(f"usage: {sys.argv[0]} serve IFNAME PEER")
    sys.exit(serve(sys.argv[2], sys.argv[3]))
