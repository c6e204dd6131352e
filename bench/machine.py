"""What the benchmarks in bench/ share: the machine they ran on, and a summary of repeats."""

from __future__ import annotations

import os
import platform
import statistics


def machine() -> dict[str, object]:
    """CPU model, core count, Python version and the load average now."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: FreeBSD has no /proc/cpuinfo
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def describe(info: dict[str, object]) -> str:
    load = " ".join(str(x) for x in info["loadavg"])
    return (f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, "
            f"load average {load} at start")


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of the repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
