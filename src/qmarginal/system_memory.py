"""The memory this machine has for a solve: what the system reports available, and the budget.

Used by the memory plan (:mod:`qmarginal.memory_plan`) and by the file readers, which refuse
files declaring more than fits before decompressing them. No qmarginal imports: everything may
use it.
"""

from __future__ import annotations

import os

__all__ = ["AVAILABLE_FRACTION", "available_bytes", "budget_bytes", "format_bytes"]

#: the share of the available memory a solve may plan to use.
AVAILABLE_FRACTION = 0.8


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else the free physical pages; None if
    neither can be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def budget_bytes(memory_budget: int | None = None) -> tuple[int | None, int | None]:
    """(the budget in bytes, or None for no limit where nothing is known; the available bytes
    or None): ``memory_budget`` when given, else ``AVAILABLE_FRACTION`` of what is available."""
    avail = available_bytes()
    if memory_budget is not None:
        return memory_budget, avail
    return (None if avail is None else int(AVAILABLE_FRACTION * avail)), avail


def format_bytes(b: int | None) -> str:
    """``b`` in MiB or GiB, three significant digits ("unknown" for None)."""
    if b is None:
        return "unknown"
    return f"{b / 2**30:.3g} GiB" if b >= 2**28 else f"{b / 2**20:.3g} MiB"
