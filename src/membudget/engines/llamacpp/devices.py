"""Where llama.cpp puts each layer and tensor when it offloads to GPUs.

From ``llama_model::load_tensors`` (``src/llama-model.cpp``), commit 0c1e570:

- ``-ngl N`` offloads the last ``N`` of ``n_layer + 1`` slots, the output layer being the last
  slot: ``i_gpu_start = max(n_layer + 1 - N, 0)``. The input embedding always stays on the CPU.
- Offloaded slots go to GPUs by cumulative split points: slot ``il`` goes to the first GPU whose
  split point exceeds ``(il - i_gpu_start) / min(N, n_layer + 1)``. The split is ``-ts`` or, by
  default, each GPU's free memory.
- ``--n-cpu-moe K`` keeps the routed experts of the first ``K`` layers on the CPU.
- ``-ot PATTERN=CPU`` (and ``-ncffn K``, written as such overrides by common/arg.cpp) keeps every
  tensor whose name the pattern matches (``std::regex_search``) in host memory, whatever its
  layer's device (``llama_model_loader::create_tensor``). So does a weight whose op the GPU
  cannot run (``weight_buft_supported``): CUDA's Mamba2 scan takes only some state sizes.
- With a CUDA device the CPU's weights go to CUDA's pinned host buffer first, so the CPU's
  repacked types are never used (``make_cpu_buft_list``: host buffer, then the extra buffer
  types), unless ``--no-host``; with the file mapped that host buffer becomes the mapping.
- A layer's KV cache and recurrent state live on the layer's device (``offload_kqv``).

CUDA allocates each quantised matrix with its last row padded to 512 values
(``MATRIX_ROW_PADDING``) and aligns tensors to 128 bytes.
"""

from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from membudget.model import ModelSpec, TensorSpec, block_index
from membudget.quant import ggml_type_by_name

__all__ = [
    "CPU",
    "FFN_DENSE_REGEX",
    "OP_OFFLOAD_MIN_BATCH",
    "HostPins",
    "cuda_alloc_bytes",
    "cuda_fa_kernel",
    "cuda_row_padding",
    "cuda_runs_flash_attn",
    "cuda_runs_ssm_scan",
    "f32",
    "ffn_overrides",
    "has_host_buffer",
    "layer_devices",
    "offload_device",
    "split_counts",
    "tensor_device",
]

CPU = "CPU"
CUDA_ALIGNMENT = 128  # ggml-cuda.cu, ggml_backend_cuda_buffer_type_get_alignment
MATRIX_ROW_PADDING = 512  # ggml-cuda/common.cuh
# ggml-cuda.cu, ggml_backend_cuda_reg_get_device: op_offload_min_batch_size, the
# GGML_OP_OFFLOAD_MIN_BATCH environment variable's default.
OP_OFFLOAD_MIN_BATCH = 32
# common/common.h: the pattern --n-cpu-ffn writes as overrides (--cpu-moe and --n-cpu-moe
# write LLM_FFN_EXPS_REGEX, which matches the "_exps" tensors the slot tables count apart).
FFN_DENSE_REGEX = r"\.ffn_(up|down|gate)\."  # LLM_FFN_DENSE_REGEX


def ffn_overrides(n_layers: int, regex: str) -> tuple[str, ...]:
    """The patterns ``-ncffn``/``-ncmoe N`` add (common.h ``llm_add_n_cpu_ffn_overrides``)."""
    return tuple(f"blk\\.{i}{regex}" for i in range(n_layers))


def has_host_buffer(device: str) -> bool:
    """Whether llama.cpp's device offers a pinned host buffer type: CUDA does
    (``ggml_backend_cuda_device_get_host_buffer_type``); Metal and RPC do not (NULL)."""
    return device.startswith("CUDA")


def offload_device(devices: Sequence[str]) -> int:
    """Index of the device the scheduler gives the CPU's large-batch ops (``op_offload``: the
    highest-priority backend whose ``offload_op`` accepts them, CUDA's at 32 tokens or more;
    RPC and Metal have none), or -1."""
    return next((i for i, d in enumerate(devices) if has_host_buffer(d)), -1)


# ggml-cuda/fattn.cu, ggml_cuda_get_best_fattn_kernel: K head sizes with a kernel when V is the
# same size, and the pairs that need a grouped-query ratio of at least 2.
CUDA_FA_SAME = frozenset({40, 64, 72, 80, 96, 112, 128, 256, 512})
CUDA_FA_PAIRS = {192: 128, 320: 256, 576: 512}


def cuda_fa_kernel(dk: int, dv: int, gqa: int) -> bool:
    """Whether CUDA has a flash-attention kernel for K and V heads of ``dk`` and ``dv`` values
    and ``gqa`` query heads a KV head."""
    if dk in CUDA_FA_SAME:
        return dv == dk
    return CUDA_FA_PAIRS.get(dk) == dv and gqa >= 2


def cuda_runs_flash_attn(spec: ModelSpec) -> bool:
    """Whether CUDA runs flash attention for every attention layer of ``spec`` (MLA attends
    over the latent: K ``kv_lora_rank + rope`` wide, V ``kv_lora_rank``, one KV head)."""
    for layer in spec.layers:
        if not layer.has_kv:
            continue
        if spec.mla is not None and spec.mla.compressed_cache:
            dk = spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim
            ok = cuda_fa_kernel(dk, spec.mla.kv_lora_rank, layer.n_head)
        else:
            gqa = layer.n_head // max(layer.n_head_kv, 1)
            ok = cuda_fa_kernel(layer.head_dim_k, layer.head_dim_v, gqa)
        if not ok:
            return False
    return True


def cuda_runs_ssm_scan(spec: ModelSpec) -> bool:
    """Whether CUDA runs this model's SSM scan (ggml-cuda.cu, ``supports_op`` for
    ``GGML_OP_SSM_SCAN``): Mamba2 needs a state of 96, 128 or 256 and heads of a multiple of 16
    values; Mamba a state of 16, one group and an inner size that is a multiple of 128."""
    r = spec.recurrent
    if r is None or r.kind not in ("mamba", "mamba2"):
        return True
    if r.kind == "mamba2":
        head_dim = r.head_dim or (r.d_inner // r.n_head if r.n_head else 0)
        return r.d_state in (96, 128, 256) and head_dim % 16 == 0
    return r.d_state == 16 and r.d_inner % 128 == 0 and max(r.n_group, 1) == 1


@dataclass(frozen=True, slots=True)
class HostPins:
    """Weights that stay in host memory whatever their layer's device: those the ``-ot
    PATTERN=CPU`` overrides match (in llama.cpp's order, ``-ncffn`` written as overrides), and
    ``ssm_a`` when the GPU cannot run the scan that reads it (``LLM_TENSOR_SSM_A`` is checked
    against ``GGML_OP_SSM_SCAN``)."""

    patterns: tuple[str, ...] = ()
    ssm_a: bool = False

    def __bool__(self) -> bool:
        return bool(self.patterns) or self.ssm_a

    def __call__(self, name: str) -> bool:
        if self.ssm_a and name.endswith(".ssm_a"):
            return True
        return any(_regex(p).search(name) for p in self.patterns)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def f32(x: float) -> float:
    """``x`` rounded to single precision, as llama.cpp's ``float`` arithmetic keeps it."""
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
        running = f32(running + f32(w))
        points.append(running)
    points = [f32(p / running) for p in points]
    counts = [0] * len(weights)
    for j in range(active):
        idx = bisect.bisect_right(points, f32(float(j) / active))
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


def tensor_device(
    name: str, slots: Sequence[str], n_cpu_moe: int = 0, pins: HostPins | None = None
) -> str:
    """The device a weight tensor is loaded to."""
    if name.startswith(("token_embd", "token_types", "position_embd")):
        return CPU
    if pins and pins(name):
        return CPU
    il = block_index(name)
    if il is not None:
        if il < n_cpu_moe and "_exps" in name:
            return CPU
        return slots[il] if il < len(slots) - 1 else slots[-1]
    return slots[-1]  # output, output_norm and the other model-level tensors


@lru_cache(maxsize=1024)
def cuda_row_padding(type_name: str, ne0: int) -> int:
    """The bytes CUDA adds to a tensor of ``type_name`` whose rows hold ``ne0`` values: a
    quantised tensor's last row is padded to a multiple of 512 values
    (``ggml_backend_cuda_buffer_type_get_alloc_size``, ``MATRIX_ROW_PADDING``)."""
    qtype = ggml_type_by_name(type_name)
    if qtype is None or qtype.block_size == 1 or not ne0 % MATRIX_ROW_PADDING:
        return 0
    return qtype.row_bytes(MATRIX_ROW_PADDING - ne0 % MATRIX_ROW_PADDING)


def cuda_alloc_bytes(t: TensorSpec) -> int:
    """Bytes CUDA allocates for ``t``: quantised matrices get their last row padded."""
    padding = cuda_row_padding(t.type_name, t.shape[0]) if t.shape else 0
    return -(-(t.n_bytes + padding) // CUDA_ALIGNMENT) * CUDA_ALIGNMENT
