"""The differential runner finds no difference between two simulators, and
finds (and prints) the ones a perturbed kernel introduces."""

from __future__ import annotations

import errno
import sys
from typing import Any

import pytest

from bsdbpf._native import lib
from bsdbpf.errors import from_errno

from . import SCENARIOS, differences, sim_side
from .__main__ import main
from .runner import Side, Step, compare, report, run
from .scenarios import frame


def test_simulator_against_itself_has_no_difference() -> None:
    found = differences(sim_side, sim_side)
    assert set(found) == set(SCENARIOS)
    assert {name: d for name, d in found.items() if d} == {}


def test_the_runner_sees_what_the_kernel_does() -> None:
    """Outcomes carry the kernel's answers: a clamped size, an errno, the bytes read."""
    side = sim_side()
    try:
        script = SCENARIOS["capture"]
        out = run(side, script)
    finally:
        side.close()
    reads = [o for s, o in zip(script, out) if s.op == "read"]
    assert reads[0]["records"] == 4
    assert reads[0]["record 2 bytes"] == frame(3, 1514).hex()
    assert reads[0]["record 2 caplen"] == 1514
    assert reads[1] == {"errno": "EAGAIN"}  # nothing left, and it did not block


class Perturbed:
    """A System that fails one request with another errno, or flips a byte read."""

    def __init__(self, system: Any, request: int | None = None, err: int = 0,
                 flip_read: bool = False) -> None:
        self.system, self.request, self.err, self.flip_read = system, request, err, flip_read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.system, name)

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        if request == self.request:
            raise from_errno(self.err, "perturbed")
        return int(self.system.ioctl(fd, request, arg))

    def read(self, fd: int, buffer: Any) -> int:
        n = int(self.system.read(fd, buffer))
        if self.flip_read and n > 40:
            buffer[40] ^= 0xFF  # inside the first record's packet bytes
        return n


def perturbed_side(**how: Any) -> Side:
    side = sim_side()
    side.system = Perturbed(side.system, **how)
    return side


def test_a_perturbed_errno_is_reported() -> None:
    found = differences(sim_side, lambda: perturbed_side(request=lib.BIOCSBLEN,
                                                         err=errno.EPERM), ["buffer sizes"])
    diffs = found["buffer sizes"]
    steps = {(d.step.args[0], d.field, d.left, d.right) for d in diffs if d.field == "errno"}
    assert ("BIOCSBLEN", "errno", None, "EPERM") in steps
    assert ("BIOCSBLEN", "errno", "EINVAL", "EPERM") in steps  # even where both fail
    lines = list(report("buffer sizes", "sim", "other", diffs))
    assert lines[0] == f"buffer sizes: {len(diffs)} differences"
    assert "  step 1 uint(a, 'BIOCSBLEN', 1): errno: sim=None other='EPERM'" in lines


def test_a_perturbed_buffer_is_reported_field_by_field() -> None:
    found = differences(sim_side, lambda: perturbed_side(flip_read=True), ["capture"])
    assert [(d.step.op, d.field) for d in found["capture"]] == [("read", "record 0 bytes")]


def test_outcomes_of_unequal_length_are_compared_by_key() -> None:
    script = [Step("uint", "a", ("BIOCGBLEN",))]
    diffs = compare(script, [{"value": 1}], [{"errno": "EINVAL"}])
    assert [(d.field, d.left, d.right) for d in diffs] == [
        ("errno", None, "EINVAL"), ("value", 1, None)]


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "errors"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["capture: same on sim and sim", "errors: same on sim and sim",
                   "0 differences in 2 scenarios"]
    with pytest.raises(SystemExit):
        main(["no such scenario"])


@pytest.mark.skipif(sys.platform.startswith("freebsd"), reason="checks the error path off FreeBSD")
def test_command_line_without_a_host_kernel(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BSDBPF_TEST_IFNAME", "epair0a")
    assert main(["--against", "host", "defaults"]) == 2
    assert capsys.readouterr().err.startswith("differential: traffic source on epair0a: ")
