"""What this machine has: RAM (honouring container limits), NVIDIA GPUs through NVML, Apple
Silicon unified memory, and the CPU facts llama.cpp's CPU backend depends on.

Every probe goes through :class:`Probes`, a bundle of small functions, so the tests can fake each
one; :func:`detect` uses the real ones by default. A probe that fails says so in ``notes`` and
never raises: a missing driver is a fact about the machine, not an error.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from membudget.units import GIB, MIB

__all__ = [
    "AppleInfo",
    "CpuInfo",
    "GpuInfo",
    "Hardware",
    "Probes",
    "RamInfo",
    "apple_working_set",
    "cpu_flags",
    "detect",
    "machine_arch",
    "simd_tier",
]

# cgroup v1 reports "no limit" as a page-rounded 2**63 - 1; anything this large is unlimited.
_UNLIMITED = 1 << 60
# Apple's Metal working set when iogpu.wired_limit_mb is unset: MTLDevice's
# recommendedMaxWorkingSetSize, which llama.cpp's Metal backend logs at start-up
# (ggml-metal-device.m, "recommendedMaxWorkingSetSize"): about three quarters of RAM on machines
# with more than 36 GB, about two thirds on smaller ones.
_APPLE_LARGE_FRACTION = (3, 4)
_APPLE_SMALL_FRACTION = (2, 3)
_APPLE_LARGE_BYTES = 36 * GIB


def apple_working_set(unified_bytes: int, wired_limit_mb: int | None = None) -> tuple[int, str]:
    """The Metal working set of an Apple Silicon machine with ``unified_bytes`` of memory, and
    where the figure comes from: ``iogpu.wired_limit_mb`` when the user raised it, else
    recommendedMaxWorkingSetSize's share of RAM."""
    if wired_limit_mb:
        return wired_limit_mb * MIB, f"iogpu.wired_limit_mb = {wired_limit_mb}"
    if unified_bytes > _APPLE_LARGE_BYTES:
        num, den = _APPLE_LARGE_FRACTION
        share = "about 75%"
    else:
        num, den = _APPLE_SMALL_FRACTION
        share = "about two thirds"
    return unified_bytes * num // den, (
        f"{share} of RAM (recommendedMaxWorkingSetSize; iogpu.wired_limit_mb unset)"
    )


@dataclass(frozen=True, slots=True)
class RamInfo:
    total_bytes: int
    """What this process may use: physical RAM, or the container limit if lower."""
    available_bytes: int
    physical_total_bytes: int
    cgroup_limit_bytes: int | None = None
    source: str = "psutil"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    vendor: str = "nvidia"
    unified: bool = False
    """Shares the system RAM (Apple Silicon)."""


@dataclass(frozen=True, slots=True)
class AppleInfo:
    unified_bytes: int
    gpu_working_set_bytes: int
    source: str


@dataclass(frozen=True, slots=True)
class CpuInfo:
    arch: str
    simd: str
    physical_cores: int
    logical_cores: int
    flags: frozenset[str] = field(default=frozenset(), repr=False)


@dataclass(frozen=True, slots=True)
class Hardware:
    ram: RamInfo
    gpus: tuple[GpuInfo, ...]
    cpu: CpuInfo
    apple: AppleInfo | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ram": {
                "total_bytes": self.ram.total_bytes,
                "available_bytes": self.ram.available_bytes,
                "physical_total_bytes": self.ram.physical_total_bytes,
                "cgroup_limit_bytes": self.ram.cgroup_limit_bytes,
                "source": self.ram.source,
            },
            "gpus": [
                {
                    "index": g.index,
                    "name": g.name,
                    "vendor": g.vendor,
                    "total_bytes": g.total_bytes,
                    "free_bytes": g.free_bytes,
                    "unified": g.unified,
                }
                for g in self.gpus
            ],
            "apple": None
            if self.apple is None
            else {
                "unified_bytes": self.apple.unified_bytes,
                "gpu_working_set_bytes": self.apple.gpu_working_set_bytes,
                "source": self.apple.source,
            },
            "cpu": {
                "arch": self.cpu.arch,
                "simd": self.cpu.simd,
                "physical_cores": self.cpu.physical_cores,
                "logical_cores": self.cpu.logical_cores,
            },
            "notes": list(self.notes),
        }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _virtual_memory() -> tuple[int, int]:
    import psutil  # noqa: PLC0415 - imported only when the machine is probed

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def _cpu_counts() -> tuple[int, int]:
    import psutil  # noqa: PLC0415

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return int(physical), int(logical)


def _nvml() -> list[GpuInfo]:
    """NVIDIA GPUs through NVML; raises when NVML or the driver is missing."""
    import pynvml  # noqa: PLC0415 - the optional 'nvidia' extra (nvidia-ml-py)

    pynvml.nvmlInit()
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GpuInfo(
                    i,
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(mem.total),
                    int(mem.free),
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _sysctl(name: str) -> str | None:
    exe = shutil.which("sysctl")
    if exe is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - a fixed system tool and a fixed key
            [exe, "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass(frozen=True)
class Probes:
    """The machine, as functions. Tests replace any of them."""

    virtual_memory: Callable[[], tuple[int, int]] = _virtual_memory
    read_file: Callable[[str], str | None] = _read
    nvml: Callable[[], list[GpuInfo]] = _nvml
    sysctl: Callable[[str], str | None] = _sysctl
    system: Callable[[], str] = platform.system
    machine: Callable[[], str] = platform.machine
    cpu_counts: Callable[[], tuple[int, int]] = _cpu_counts


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def _stat_value(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _cgroup(read: Callable[[str], str | None]) -> tuple[int | None, int | None, str]:
    """(limit, available under the limit, which cgroup) or (None, None, '') when unlimited.

    Available is the limit minus the working set (usage less inactive file cache), as the
    kubelet counts it.
    """
    own = ""
    for line in (read("/proc/self/cgroup") or "").splitlines():
        if line.startswith("0::"):
            own = line[3:].strip().rstrip("/")
    for base in ([f"/sys/fs/cgroup{own}"] if own else []) + ["/sys/fs/cgroup"]:
        raw = read(f"{base}/memory.max")
        if raw is None:
            continue
        limit = _int(raw)  # "max" means no limit
        if limit is None or limit >= _UNLIMITED:
            return None, None, ""
        usage = _int(read(f"{base}/memory.current")) or 0
        inactive = _stat_value(read(f"{base}/memory.stat"), "inactive_file")
        return limit, max(0, limit - max(0, usage - inactive)), "cgroup v2"
    limit = _int(read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
    if limit is None or limit >= _UNLIMITED:
        return None, None, ""
    usage = _int(read("/sys/fs/cgroup/memory/memory.usage_in_bytes")) or 0
    inactive = _stat_value(read("/sys/fs/cgroup/memory/memory.stat"), "total_inactive_file")
    return limit, max(0, limit - max(0, usage - inactive)), "cgroup v1"


def _flags(read: Callable[[str], str | None]) -> frozenset[str]:
    flags: set[str] = set()
    for line in (read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def simd_tier(arch: str, flags: frozenset[str]) -> str:
    """The best SIMD level the CPU offers, as the reference auto-tuner reports it."""
    if arch in ("x86_64", "amd64", "i386", "i686"):
        for flag, tier in (
            ("avx512f", "avx512"),
            ("avx2", "avx2"),
            ("avx", "avx"),
            ("sse4_2", "sse4.2"),
        ):
            if flag in flags:
                return tier
        return "sse2"
    if arch in ("aarch64", "arm64"):
        if "sve" in flags:
            return "sve"
        if "i8mm" in flags:
            return "neon+i8mm"
        if "asimddp" in flags:
            return "neon+dotprod"
        return "neon"
    return "none"


def detect(probes: Probes | None = None) -> Hardware:
    """Probe this machine (or the faked one in ``probes``)."""
    p = probes or Probes()
    notes: list[str] = []
    physical, available = p.virtual_memory()
    limit, limit_available, which = _cgroup(p.read_file)
    if limit is not None and limit < physical:
        ram = RamInfo(
            total_bytes=limit,
            available_bytes=min(
                available, limit_available if limit_available is not None else limit
            ),
            physical_total_bytes=physical,
            cgroup_limit_bytes=limit,
            source=which,
        )
        notes.append(f"memory limited to {limit} bytes by the container ({which})")
    else:
        ram = RamInfo(physical, available, physical)

    arch = p.machine().lower()
    flags = _flags(p.read_file)
    system = p.system()
    apple = None
    gpus: list[GpuInfo] = []
    if system == "Darwin" and arch == "arm64":
        working, source = apple_working_set(ram.total_bytes, _int(p.sysctl("iogpu.wired_limit_mb")))
        apple = AppleInfo(ram.total_bytes, working, source)
        gpus.append(
            GpuInfo(
                0,
                "Apple GPU (unified memory)",
                working,
                min(working, ram.available_bytes),
                "apple",
                True,
            )
        )
    else:
        try:
            gpus = p.nvml()
        except Exception as e:  # noqa: BLE001 - NVML raises its own types, or ImportError without the extra
            kind = (
                "not installed (pip install 'membudget[nvidia]')"
                if isinstance(e, ImportError)
                else str(e) or type(e).__name__
            )
            notes.append(f"no NVIDIA GPU found through NVML: {kind}")
    cores = p.cpu_counts()
    cpu = CpuInfo(arch, simd_tier(arch, flags), cores[0], cores[1], flags)
    return Hardware(ram, tuple(gpus), cpu, apple, tuple(notes))


def machine_arch() -> str:
    """``x86_64``, ``aarch64``/``arm64``, ..."""
    return platform.machine().lower()


@cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``avx2``, ``avx512f``, ``asimddp``, ...), from /proc/cpuinfo."""
    return _flags(_read)
