"""How numbers read in every report, table and page: one formatter per kind of number.

Fractions become percentages, byte counts use binary units (KiB, MiB: 1024-based, named
so), times read in ms or minutes. The run's report, `train/compare.py`, the check's
summary line, the demo and the benchmarks all use these. Standard library only.
"""

from __future__ import annotations

from typing import Any

#: What a table cell says where a value is unknown.
NOT_AVAILABLE = "n/a"


def percent(value: Any, digits: int = 1) -> str:
    """A fraction (0.8234) as a percentage for people ("82.3%"); "n/a" when unknown."""
    return NOT_AVAILABLE if value is None else f"{100 * float(value):.{digits}f}%"


def size(size_bytes: Any) -> str:
    """A byte count in binary units: "812 B", "4.1 KiB", "15.62 MiB"; "n/a" when unknown."""
    if not isinstance(size_bytes, (int, float)):
        return NOT_AVAILABLE
    if size_bytes >= 2**20:
        return f"{size_bytes / 2**20:.2f} MiB"
    if size_bytes >= 2**10:
        return f"{size_bytes / 2**10:.1f} KiB"
    return f"{int(size_bytes)} B"


def milliseconds(value: Any, digits: int = 3) -> str:
    """A time in ms with `digits` significant digits ("12.5 ms"); "n/a" when unknown."""
    return NOT_AVAILABLE if value is None else f"{float(value):.{digits}g} ms"


def duration(seconds: Any) -> str:
    """A training time for people: "42 s", "3 min 07 s", "1 h 05 min"; "n/a" when unknown."""
    if seconds is None:
        return NOT_AVAILABLE
    minutes, rest = divmod(int(round(float(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {rest:02d} s" if minutes else f"{rest} s")


def step_time(seconds: Any) -> str:
    """How long one step of a command took, in its progress line: "0.4 s" under a minute (a step that
    short still reads as a time), else as `duration` writes it ("3 min 07 s")."""
    if seconds is None:
        return NOT_AVAILABLE
    return f"{float(seconds):.1f} s" if float(seconds) < 60 else duration(seconds)
