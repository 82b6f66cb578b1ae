"""Reading llama.cpp's own buffer report from logs of CPU, CUDA and Metal builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from membudget import MembudgetError
from membudget.engines.llamacpp.log import normalise_device, parse_llamacpp_log

DATA = Path(__file__).parent / "data"


def _by(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for b in parse_llamacpp_log(text):
        out[(b.device, b.kind)] = round(out.get((b.device, b.kind), 0) + b.mib, 2)
    return out


def test_cuda_log_with_shards_and_repeated_reserve() -> None:
    got = _by((DATA / "llama-server-cuda.log").read_text())
    assert got[("CUDA0", "model")] == 4562.5, "one model line per shard, summed"
    assert got[("CPU", "model")] == 303.75
    assert got[("CUDA0", "kv")] == 1152.0
    assert got[("CPU", "output")] == 0.58, "CUDA_Host is host memory"
    assert got[("CUDA0", "compute")] == 304.75, "the last reserve pass wins"
    assert got[("CPU", "compute")] == 24.01


def test_metal_and_swa_lines() -> None:
    text = """
load_tensors: MTL0_Mapped model buffer size =  2000.00 MiB
load_tensors:   CPU_Mapped model buffer size =   100.00 MiB
llama_context:        CPU  output buffer size =     1.00 MiB
llama_kv_cache_iswa: creating non-SWA KV cache, size = 8192 cells
llama_kv_cache:       MTL0 KV buffer size =   100.00 MiB
llama_kv_cache_iswa: creating     SWA KV cache, size = 1536 cells
llama_kv_cache:       MTL0 KV buffer size =    90.00 MiB
llama_memory_recurrent:       MTL0 RS buffer size =     3.50 MiB
sched_reserve:       MTL0 compute buffer size =   500.00 MiB
"""
    got = _by(text)
    assert got[("MTL0", "model")] == 2000.0
    assert got[("MTL0", "kv")] == 100.0
    assert got[("MTL0", "kv_swa")] == 90.0
    assert got[("MTL0", "recurrent")] == 3.5
    assert got[("MTL0", "compute")] == 500.0


def test_fit_dry_runs_are_skipped() -> None:
    dry = """
load_tensors:        CUDA0 model buffer size =     0.00 MiB
llama_kv_cache:      CUDA0 KV buffer size =     0.00 MiB
sched_reserve:      CUDA0 compute buffer size =   300.00 MiB
"""
    real = """
load_tensors:        CUDA0 model buffer size =  4000.00 MiB
llama_context:  CUDA_Host  output buffer size =     0.58 MiB
llama_kv_cache:      CUDA0 KV buffer size =  1024.00 MiB
sched_reserve:      CUDA0 compute buffer size =   310.00 MiB
"""
    got = _by(dry + real + dry)
    assert got[("CUDA0", "model")] == 4000.0
    assert got[("CUDA0", "compute")] == 310.0


@pytest.mark.parametrize(
    ("name", "device"),
    [
        ("CPU_Mapped", "CPU"),
        ("CPU_REPACK", "CPU"),
        ("CUDA_Host", "CPU"),
        ("MTL0_Mapped", "MTL0"),
        ("CUDA1", "CUDA1"),
    ],
)
def test_device_names(name: str, device: str) -> None:
    assert normalise_device(name) == device


def test_a_log_without_a_report() -> None:
    with pytest.raises(MembudgetError, match=r"No llama\.cpp buffer report"):
        parse_llamacpp_log("hello\nworld\n")


def test_rpc_servers_are_named_by_their_order_in_rpc() -> None:
    """llama.cpp prints every RPC server's device as RPC0[host:port]; the log's "using device
    RPCk (host:port)" lines give each endpoint its index (the real llama-server, two workers)."""
    from membudget.engines.llamacpp.log import reported_n_outputs_max

    text = (DATA / "llama-server-rpc-qwen3.log").read_text()
    got = {(b.device, b.kind): b.mib for b in parse_llamacpp_log(text)}
    assert got[("RPC0", "model")] == 3.38
    assert got[("RPC1", "model")] == 5.13
    assert got[("RPC0", "kv")] == 3.0
    assert got[("RPC1", "kv")] == 1.0
    assert got[("CPU", "compute")] == 10.55, "the host's share of a graph split over backends"
    assert reported_n_outputs_max(text) == 1, "llama-server reserves one logits row per slot"
