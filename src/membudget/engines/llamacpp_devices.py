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
from collections.abc import Sequence

from membudget.model import TensorSpec, block_index
from membudget.quant import ggml_type_by_name

__all__ = ["CPU", "cuda_alloc_bytes", "layer_devices", "tensor_device"]

CPU = "CPU"
CUDA_ALIGNMENT = 128  # ggml-cuda.cu, ggml_backend_cuda_buffer_type_get_alignment
MATRIX_ROW_PADDING = 512  # ggml-cuda/common.cuh


def layer_devices(
    n_layer: int, n_gpu_layers: int, devices: Sequence[str], tensor_split: Sequence[float] = ()
) -> list[str]:
    """The device of every slot: ``n_layer`` repeating layers, then the output layer."""
    if not devices or n_gpu_layers <= 0:
        return [CPU] * (n_layer + 1)
    weights = list(tensor_split) if tensor_split else [1.0] * len(devices)
    if len(weights) != len(devices) or any(w < 0 for w in weights) or sum(weights) <= 0:
        weights = [1.0] * len(devices)
    total = sum(weights)
    points: list[float] = []
    running = 0.0
    for w in weights:
        running += w
        points.append(running / total)
    slots = n_layer + 1
    start = max(slots - n_gpu_layers, 0)
    active = min(n_gpu_layers, slots)
    out = []
    for il in range(slots):
        if il < start or il - start >= active:
            out.append(CPU)
        else:
            idx = bisect.bisect_right(points, (il - start) / active)
            out.append(devices[min(idx, len(devices) - 1)])
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
