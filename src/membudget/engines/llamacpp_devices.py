"""Where llama.cpp puts each layer and tensor when it offloads to GPUs.

From ``llama_model::load_tensors`` (``src/llama-model.cpp``), commit 0c1e570:

- ``-ngl N`` offloads the last ``N`` of ``n_layer + 1`` slots, the output layer being the last
  slot: ``i_gpu_start = max(n_layer + 1 - N, 0)``. The input embedding always stays on the CPU.
- Offloaded slots go to GPUs by cumulative split points: slot ``il`` goes to the first GPU whose
  split point exceeds ``(il - i_gpu_start) / min(N, n_layer + 1)``. The split is ``-ts`` or, by
  default, each GPU's free memory.
- ``--n-cpu-moe K`` keeps the routed experts of the first ``K`` layers on the CPU.
- A layer's KV cache and recurrent state live on the layer's device (``offload_kqv``).

CUDA allocates each quantised matrix with its last row padded to 512 values
(``MATRIX_ROW_PADDING``) and aligns tensors to 128 bytes.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence
from functools import lru_cache

from membudget.model import TensorSpec, block_index
from membudget.quant import ggml_type_by_name

__all__ = ["CPU", "cuda_alloc_bytes", "layer_devices", "split_counts", "tensor_device"]

CPU = "CPU"
CUDA_ALIGNMENT = 128  # ggml-cuda.cu, ggml_backend_cuda_buffer_type_get_alignment
MATRIX_ROW_PADDING = 512  # ggml-cuda/common.cuh


def _f32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def split_counts(n_slots: int, n_gpu_layers: int, shares: Sequence[float]) -> tuple[int, ...]:
    """How many of the offloaded slots each device gets from ``-ngl`` and the ``-ts`` shares,
    computed as llama.cpp does, in single precision: cumulative shares over their sum are the
    split points, and offloaded slot ``j`` of ``N`` goes to the first device whose point exceeds
    ``j / N`` (``std::upper_bound``). Whole layer counts as shares give exactly those counts."""
    return _split_counts(n_slots, n_gpu_layers, tuple(float(x) for x in shares))


@lru_cache(maxsize=4096)
def _split_counts(n_slots: int, n_gpu_layers: int, shares: tuple[float, ...]) -> tuple[int, ...]:
    active = min(max(n_gpu_layers, 0), n_slots)
    if not shares or active == 0:
        return (0,) * len(shares)
    weights = [float(w) for w in shares]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        weights = [1.0] * len(weights)
    points, running = [], 0.0
    for w in weights:
        running = _f32(running + _f32(w))
        points.append(running)
    points = [_f32(p / running) for p in points]
    counts = [0] * len(weights)
    for j in range(active):
        idx = bisect.bisect_right(points, _f32(float(j) / active))
        counts[min(idx, len(counts) - 1)] += 1
    return tuple(counts)


def layer_devices(
    n_layer: int, n_gpu_layers: int, devices: Sequence[str], tensor_split: Sequence[float] = ()
) -> list[str]:
    """The device of every slot: ``n_layer`` repeating layers, then the output layer."""
    slots = n_layer + 1
    if not devices or n_gpu_layers <= 0:
        return [CPU] * slots
    shares = list(tensor_split) if tensor_split else [1.0] * len(devices)
    if len(shares) < len(devices):
        shares += [0.0] * (len(devices) - len(shares))  # llama.cpp: unnamed devices get none
    counts = split_counts(slots, n_gpu_layers, shares[: len(devices)])
    out = [CPU] * (slots - sum(counts))
    for dev, n in zip(devices, counts, strict=True):
        out += [dev] * n
    return out


def tensor_device(name: str, slots: Sequence[str], n_cpu_moe: int = 0) -> str:
    """The device a weight tensor is loaded to."""
    if name.startswith(("token_embd", "token_types", "position_embd")):
        return CPU
    il = block_index(name)
    if il is not None:
        if il < n_cpu_moe and "_exps" in name:
            return CPU
        return slots[il] if il < len(slots) - 1 else slots[-1]
    return slots[-1]  # output, output_norm and the other model-level tensors


def cuda_alloc_bytes(t: TensorSpec) -> int:
    """Bytes CUDA allocates for ``t``: quantised matrices get their last row padded."""
    size = t.n_bytes
    qtype = ggml_type_by_name(t.type_name)
    if qtype is not None and qtype.block_size > 1 and t.shape and t.shape[0] % MATRIX_ROW_PADDING:
        size += qtype.row_bytes(MATRIX_ROW_PADDING - t.shape[0] % MATRIX_ROW_PADDING)
    return -(-size // CUDA_ALIGNMENT) * CUDA_ALIGNMENT
