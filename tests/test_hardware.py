"""Hardware detection, with every probe faked, and the real probes on this machine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from membudget.hardware import GpuInfo, Probes, detect, simd_tier
from membudget.units import GIB, MIB

GB16 = 16 * GIB


def files(mapping: dict[str, str]) -> Probes:
    return Probes(
        virtual_memory=lambda: (GB16, 12 * GIB),
        read_file=mapping.get,
        nvml=list,
        sysctl=lambda name: None,
        system=lambda: "Linux",
        machine=lambda: "x86_64",
        cpu_counts=lambda: (8, 16),
    )


def test_plain_machine() -> None:
    hw = detect(files({"/proc/cpuinfo": "flags\t: fpu sse4_2 avx avx2\n"}))
    assert (hw.ram.total_bytes, hw.ram.available_bytes, hw.ram.cgroup_limit_bytes) == (
        GB16,
        12 * GIB,
        None,
    )
    assert hw.cpu.simd == "avx2"
    assert (hw.cpu.physical_cores, hw.cpu.logical_cores) == (8, 16)
    assert hw.gpus == ()


def test_cgroup_v2_limit() -> None:
    hw = detect(
        files(
            {
                "/proc/self/cgroup": "0::/kubepods/pod1\n",
                "/sys/fs/cgroup/kubepods/pod1/memory.max": f"{4 * GIB}\n",
                "/sys/fs/cgroup/kubepods/pod1/memory.current": f"{GIB}\n",
                "/sys/fs/cgroup/kubepods/pod1/memory.stat": f"anon 1\ninactive_file {256 * MIB}\n",
            }
        )
    )
    assert hw.ram.total_bytes == 4 * GIB
    assert hw.ram.cgroup_limit_bytes == 4 * GIB
    assert hw.ram.available_bytes == 4 * GIB - (GIB - 256 * MIB)
    assert hw.ram.source == "cgroup v2"


def test_cgroup_v2_unlimited() -> None:
    hw = detect(files({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "max\n"}))
    assert hw.ram.cgroup_limit_bytes is None
    assert hw.ram.total_bytes == GB16


def test_cgroup_v1_limit() -> None:
    hw = detect(
        files(
            {
                "/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{8 * GIB}\n",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{2 * GIB}\n",
                "/sys/fs/cgroup/memory/memory.stat": "total_inactive_file 0\n",
            }
        )
    )
    assert (hw.ram.total_bytes, hw.ram.available_bytes, hw.ram.source) == (
        8 * GIB,
        6 * GIB,
        "cgroup v1",
    )


def test_cgroup_v1_unlimited_sentinel() -> None:
    hw = detect(files({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}))
    assert hw.ram.cgroup_limit_bytes is None


def test_nvidia_gpus() -> None:
    gpus = [
        GpuInfo(0, "NVIDIA H100 80GB HBM3", 80 * GIB, 79 * GIB),
        GpuInfo(1, "NVIDIA L4", 24 * GIB, 20 * GIB),
    ]
    hw = detect(replace(files({}), nvml=lambda: gpus))
    assert hw.gpus == tuple(gpus)


def test_nvml_missing_is_a_note_not_an_error() -> None:
    def boom() -> list[GpuInfo]:
        raise ImportError("no pynvml")

    hw = detect(replace(files({}), nvml=boom))
    assert hw.gpus == ()
    assert any("nvidia" in n for n in hw.notes)


@pytest.mark.parametrize(
    ("wired", "expected", "source"),
    [
        pytest.param("49152", 48 * GIB, "iogpu.wired_limit_mb", id="explicit wired limit"),
        pytest.param("0", 16 * GIB * 2 // 3, "two thirds", id="unset: two thirds of 16 GiB"),
        pytest.param(None, 16 * GIB * 2 // 3, "two thirds", id="no sysctl answer"),
    ],
)
def test_apple_silicon(wired: str | None, expected: int, source: str) -> None:
    p = replace(
        files({}), system=lambda: "Darwin", machine=lambda: "arm64", sysctl=lambda name: wired
    )
    hw = detect(p)
    assert hw.apple is not None
    assert hw.apple.gpu_working_set_bytes == expected
    assert source in hw.apple.source
    assert hw.gpus[0].unified


@pytest.mark.parametrize(
    ("arch", "flags", "tier"),
    [
        ("x86_64", {"avx512f", "avx2"}, "avx512"),
        ("x86_64", {"avx2"}, "avx2"),
        ("x86_64", {"sse4_2"}, "sse4.2"),
        ("x86_64", set(), "sse2"),
        ("aarch64", {"asimddp"}, "neon+dotprod"),
        ("aarch64", {"i8mm", "asimddp"}, "neon+i8mm"),
        ("aarch64", {"sve"}, "sve"),
        ("arm64", set(), "neon"),
        ("riscv64", set(), "none"),
    ],
)
def test_simd_tiers(arch: str, flags: set[str], tier: str) -> None:
    assert simd_tier(arch, frozenset(flags)) == tier


def test_real_probes_on_this_machine() -> None:
    hw = detect()
    assert hw.ram.total_bytes > 0
    assert 0 < hw.ram.available_bytes <= hw.ram.physical_total_bytes
    assert hw.cpu.logical_cores >= 1
    assert hw.to_dict()["cpu"]["arch"]


def test_apple_working_set_rule() -> None:
    from membudget.hardware import apple_working_set

    assert apple_working_set(64 * GIB)[0] == 48 * GIB, "three quarters above 36 GB"
    assert apple_working_set(16 * GIB)[0] == 16 * GIB * 2 // 3
    assert apple_working_set(16 * GIB, 14336) == (14 * GIB, "iogpu.wired_limit_mb = 14336")


def test_apple_budget_is_the_metal_working_set() -> None:
    from membudget.plan import budget_for

    p = replace(
        files({}), system=lambda: "Darwin", machine=lambda: "arm64", sysctl=lambda name: "8192"
    )
    b = budget_for(None, detect(p))
    assert b.gpus == (("MTL0", 8 * GIB - GIB),), "the Metal device, its working set less the margin"
    assert b.pool_bytes == b.memory_bytes, "the CPU and Metal share one pool"
    assert "unified" in b.source
