"""What this machine has. Probes are small functions so the tests can fake each one."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

__all__ = ["cpu_flags", "machine_arch"]


def machine_arch() -> str:
    """``x86_64``, ``aarch64``/``arm64``, ..."""
    return platform.machine().lower()


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the OS reports (``avx2``, ``avx512f``, ``asimddp``, ``i8mm``...).

    Read from ``/proc/cpuinfo`` on Linux; empty where that is unavailable.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)
