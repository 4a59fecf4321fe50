"""What machine a measurement ran on: latency and frame rates mean nothing without it.

    from edge import machine; machine.describe()

Standard library only, so the Pi's benchmarks can use it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def processor_name() -> str:
    """The board or processor from /proc/cpuinfo (a Pi reports "Model : Raspberry Pi 5 ..."), else the platform's."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # Case matters: x86's "model" is a number.
    except OSError:
        pass
    return (
        fields.get("Model")
        or fields.get("model name")
        or fields.get("Hardware")
        or platform.processor()
        or platform.platform()
    )


def describe() -> dict[str, Any]:
    """Architecture, system, processor, visible CPUs and Python version, as JSON-ready values."""
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "processor": processor_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
