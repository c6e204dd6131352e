"""The README's Python example runs as printed (on the simulator, with traffic)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
TRAFFIC = 'import bsdbpf.sim\nbsdbpf.sim.default_kernel().generate("em0", count=100, rate=1000)\n'


def _python_block(heading: str) -> str:
    section = README.read_text().split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_descriptor_example_prints_five_packets() -> None:
    example = _python_block("Capturing from Python")
    assert len(example.strip().splitlines()) <= 5 + 1  # five lines of code and a blank
    env = {**os.environ, "BSDBPF_SYSTEM": "sim"}
    out = subprocess.run([sys.executable, "-c", TRAFFIC + example], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 5, out
    for line in lines:
        stamp, caplen, header = line.split()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", stamp)
        assert caplen == "64"
        assert len(header) == 28  # the 14-byte Ethernet header in hex
