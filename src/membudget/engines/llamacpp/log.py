"""Read llama.cpp's own buffer report from a log (llama-server, llama-cli, llama-cpp-python).

Lines it understands, whatever the backend (CPU, CUDA, Metal, Vulkan ...)::

    load_tensors:   CPU_Mapped model buffer size =   235.16 MiB     (one per buffer / shard)
    llama_kv_cache_iswa: creating     SWA KV cache, size = 1024 cells
    llama_kv_cache:        CUDA0 KV buffer size =    12.00 MiB
    llama_memory_recurrent:  CPU RS buffer size =     1.50 MiB
    llama_context:   CUDA_Host  output buffer size =     1.00 MiB
    sched_reserve:       CUDA0 compute buffer size =   514.50 MiB

A log can hold several load rounds (``--fit`` dry runs before the real load, or a server that
reloads). Rounds are split where a model buffer follows a compute buffer; the last round whose
KV or model buffers are not all zero (dry runs allocate nothing) is the one reported. Within a
round, repeated reserve passes overwrite earlier compute sizes; model buffers of several shards
add up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from membudget.errors import MembudgetError

__all__ = ["ReportedBuffer", "normalise_device", "parse_llamacpp_log", "reported_n_outputs_max"]

ReportedKind = Literal["model", "kv", "kv_swa", "recurrent", "output", "compute"]

_LINE = re.compile(
    r"(?P<func>[A-Za-z_0-9]+):\s+(?P<dev>\S+)\s+(?P<what>model|KV|RS|output|compute) buffer size\s*=\s*"
    r"(?P<mib>[0-9]+(?:\.[0-9]+)?) MiB"
)
_ISWA = re.compile(r"creating\s+(?P<which>non-SWA|SWA) KV cache")
# llama_prepare_model_devices: "using device RPC1 (127.0.0.1:50053) ..."; the buffers of every
# RPC server's device are then printed as "RPC0[127.0.0.1:50053]" (its index on that server).
_DEVICE = re.compile(r"using device (?P<name>RPC[0-9]+) \((?P<endpoint>[^)]+)\)")
_RPC_BUFFER = re.compile(r"^RPC[0-9]+\[(?P<endpoint>[^\]]+)\]$")
_KIND: dict[str, ReportedKind] = {
    "model": "model",
    "KV": "kv",
    "RS": "recurrent",
    "output": "output",
    "compute": "compute",
}


@dataclass(frozen=True, slots=True)
class ReportedBuffer:
    """One buffer as llama.cpp printed it: in MiB with two decimals."""

    device: str
    raw_name: str
    kind: ReportedKind
    mib: float


def normalise_device(name: str) -> str:
    """``CPU_Mapped``/``CPU_REPACK``/``CUDA_Host`` and the CPU backend's other extra buffer types
    (``AMX``, ``KleidiAI``) live in host memory: ``CPU``; ``MTL0_Mapped`` is ``MTL0``; a GPU name
    stays as it is (``CUDA0``, ``Vulkan0``)."""
    if name.startswith(("CPU", "AMX", "KleidiAI")) or name.endswith("_Host"):
        return "CPU"
    return name.removesuffix("_Mapped").removesuffix("_REPACK")


def _rounds(text: str) -> list[list[ReportedBuffer]]:
    rounds: list[list[ReportedBuffer]] = [[]]
    swa_state: ReportedKind = "kv"
    endpoints = {m["endpoint"]: m["name"] for m in _DEVICE.finditer(text)}
    for line in text.splitlines():
        iswa = _ISWA.search(line)
        if iswa is not None:
            swa_state = "kv_swa" if iswa["which"] == "SWA" else "kv"
            continue
        m = _LINE.search(line)
        if m is None:
            continue
        kind = _KIND[m["what"]]
        current = rounds[-1]
        if kind == "model" and any(b.kind in ("compute", "output") for b in current):
            rounds.append([])
            current = rounds[-1]
            swa_state = "kv"
        if kind == "kv":
            kind = swa_state
        device = normalise_device(m["dev"])
        rpc = _RPC_BUFFER.match(m["dev"])
        if rpc is not None:
            device = endpoints.get(rpc["endpoint"], device)
        current.append(ReportedBuffer(device, m["dev"], kind, float(m["mib"])))
    return [r for r in rounds if r]


def parse_llamacpp_log(text: str) -> tuple[ReportedBuffer, ...]:
    """The buffers of the last real load round in ``text``; compute sizes keep only the last
    reserve pass per device."""
    rounds = _rounds(text)
    real = [r for r in rounds if any(b.mib > 0 for b in r if b.kind in ("model", "kv", "kv_swa"))]
    if not real:
        raise MembudgetError(
            "No llama.cpp buffer report found in the log: expected lines such as "
            "'load_tensors: CPU_Mapped model buffer size = 235.16 MiB'. Run llama.cpp with its "
            "default (info) log level."
        )
    chosen = real[-1]
    last_compute: dict[str, ReportedBuffer] = {}
    out: list[ReportedBuffer] = []
    for b in chosen:
        if b.kind == "compute":
            last_compute[b.raw_name] = b
        else:
            out.append(b)
    return (*out, *last_compute.values())


_OUTPUTS = re.compile(r"llama_context:\s+n_outputs_max\s*=\s*(?P<n>[0-9]+)")


def reported_n_outputs_max(text: str) -> int | None:
    """``n_outputs_max`` as the log's last context printed it (llama-server sets it to the
    number of slots; the C API leaves it at ``n_batch``), or None for older logs."""
    found = _OUTPUTS.findall(text)
    return int(found[-1]) if found else None
