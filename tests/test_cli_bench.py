"""``bsdbpf bench``: both buffer modes measured on the simulated kernel's generator,
and, through a system that is not a simulated kernel, what FreeBSD users meet."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import Recorder

from bsdbpf import raw
from bsdbpf.cli import main
from bsdbpf.sim import Kernel
from bsdbpf.system import System

COUNT = 20_000


def run(capsys: pytest.CaptureFixture[str], argv: Sequence[str],
        system: System) -> tuple[int, str, list[str]]:
    status = main(argv, system=system)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err.splitlines()


def report(capsys: pytest.CaptureFixture[str], argv: Sequence[str],
           system: System) -> tuple[dict[str, Any], list[str]]:
    status, out, err = run(capsys, [*argv, "--json"], system)
    assert status == 0, err
    return json.loads(out), err


@pytest.mark.parametrize("api", ["packets", "batches"])
def test_both_modes_take_the_generators_frames(
        kernel: Kernel, capsys: pytest.CaptureFixture[str], api: str) -> None:
    got, err = report(capsys, ["bench", "-c", str(COUNT), "--seconds", "30", "--api", api],
                      kernel)
    assert (got["interface"], got["simulated"], got["api"]) == ("em0", True, api)
    assert [r["mode"] for r in got["results"]] == ["buffered", "zero-copy"]
    for r in got["results"]:
        if api == "packets":
            assert r["packets"] == COUNT  # packets() stops at the count exactly
        else:
            assert COUNT <= r["packets"] <= r["received"]  # whole buffers
        assert r["received"] >= r["packets"]
        assert r["buffers"] >= 1
        assert r["cpu_ns_per_packet"] == pytest.approx(r["cpu_seconds"] * 1e9 / r["packets"])
        assert r["packets_per_second"] == pytest.approx(r["packets"] / r["seconds"])
    assert got["skipped"] == {}
    assert err == ["bsdbpf: simulated FreeBSD kernel (not FreeBSD): its generator offered "
                   "64-byte frames at 1,000,000 per second"]
    # Each mode's generator was stopped: another can start on em0.
    with kernel.generate("em0", 1) as gen:
        assert gen.wait(5)


def test_the_table(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["bench", "-c", "5000", "--rate", "0", "--size", "100"],
                           kernel)
    assert status == 0
    title, header, *rows = out.splitlines()
    assert title == "bsdbpf bench: em0, 3 s per mode or 5000 packets, 512 KiB buffers, packets()"
    assert header.split() == ["mode", "packets", "packets/s", "CPU", "ns/pkt", "kernel",
                              "recv", "dropped", "buffers"]
    assert [(r.split()[0], r.split()[1]) for r in rows] == [("buffered", "5000"),
                                                            ("zero-copy", "5000")]
    assert err[-1].endswith("its generator offered 100-byte frames flat out")


def test_one_mode(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    got, _ = report(capsys, ["bench", "--mode", "buffered", "-c", "1000"], kernel)
    assert [r["mode"] for r in got["results"]] == ["buffered"]
    assert raw.sysctl_int(kernel, "net.bpf.zerocopy_enable") == 0  # not switched for nothing
    got, _ = report(capsys, ["bench", "--mode", "zerocopy", "-c", "1000"], kernel)
    assert [r["mode"] for r in got["results"]] == ["zero-copy"]


def test_on_freebsd_zero_copy_is_the_administrators_choice(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    """A system that is not a simulated kernel is treated as FreeBSD: no traffic of
    bench's own, and zero-copy only if net.bpf.zerocopy_enable says so."""
    freebsd = Recorder(kernel)
    got, err = report(capsys, ["bench", "--seconds", "0.1"], freebsd)
    assert got["simulated"] is False
    assert [(r["mode"], r["packets"]) for r in got["results"]] == [("buffered", 0)]
    assert got["skipped"] == {"zero-copy": "zero-copy buffers are disabled "
                              "(net.bpf.zerocopy_enable=0): `bsdbpf zerocopy on` (as root) "
                              "enables them"}
    assert err == ["bsdbpf: no packet reached em0 in 0.1 s per mode: bench measures the "
                   "interface's own traffic"]
    status, _, err = run(capsys, ["bench", "--mode", "zerocopy"], freebsd)
    assert (status, err) == (1, ["bsdbpf: zero-copy buffers are disabled "
                                 "(net.bpf.zerocopy_enable=0): `bsdbpf zerocopy on` (as root) "
                                 "enables them"])
    status, _, err = run(capsys, ["bench", "--rate", "10"], freebsd)
    assert status == 1
    assert err == ["bsdbpf: --rate and --size shape the simulated kernel's traffic; on FreeBSD "
                   "bench measures the interface's own traffic"]
    raw.sysctl_int(kernel, "net.bpf.zerocopy_enable", 1)
    got, _ = report(capsys, ["bench", "--seconds", "0.1"], freebsd)
    assert [r["mode"] for r in got["results"]] == ["buffered", "zero-copy"]


def test_mistakes(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--seconds", "0"], ["--seconds", "inf"], ["--rate", "-1"], ["--size", "0"],
                 ["--mode", "fast"], ["-c", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main(["bench", *argv], system=kernel)
        assert exit_.value.code == 2, argv
    capsys.readouterr()
    status, _, err = run(capsys, ["bench", "-i", "nope0"], kernel)
    assert status == 1
    assert err == ["bsdbpf: [Errno 6] BIOCSETIF on nope0: No such device or address. The "
                   "interfaces are: em0, lo0, multi0 (`bsdbpf capture -D`)"]
    status, _, err = run(capsys, ["bench", "--size", "8"], kernel)  # below a frame's header
    assert status == 1
    assert len(err) == 1
    assert err[0].startswith("bsdbpf: [Errno 22] generate on em0")


@pytest.mark.parametrize("api", ["packets", "batches"])
def test_a_slow_interface_still_ends_on_time(
        kernel: Kernel, capsys: pytest.CaptureFixture[str], api: str) -> None:
    """At 100 frames per second packets() never waits long enough to time out,
    so the clock must not depend on how many packets came (it was read every
    256th packet: 2.6 s for --seconds 0.3)."""
    got, _ = report(capsys, ["bench", "--mode", "buffered", "--seconds", "0.3", "--rate", "100",
                             "--api", api], kernel)
    (result,) = got["results"]
    assert 0.3 <= result["seconds"] < 0.8
    assert 10 <= result["packets"] <= 80


@pytest.mark.parametrize("seconds", ["-1", "0", "nan", "inf"])
def test_a_duration_that_is_refused_says_what_is_allowed(
        capsys: pytest.CaptureFixture[str], seconds: str) -> None:
    """0 is refused too, so "-1: must be 0 or more" would send the user to another refusal."""
    with pytest.raises(SystemExit):
        main(["bench", "--seconds", seconds])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"argument --seconds: {seconds}: must be a finite number of seconds above 0")


def test_the_json_settings_are_the_titles(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON names every setting the table's title names, the count included:
    a run ended by -c is not comparable with one ended by the clock."""
    for extra, count in (([], None), (["-c", "500"], 500)):
        got, _ = report(capsys, ["bench", "--mode", "buffered", "--seconds", "0.2", *extra],
                        kernel)
        assert (got["seconds_per_mode"], got["count"], got["buffer_size"], got["api"]) == (
            0.2, count, 512 * 1024, "packets")
