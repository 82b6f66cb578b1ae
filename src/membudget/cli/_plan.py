"""``membudget plan`` and ``membudget validate``: what an engine allocates, and the proof."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from membudget.budget import MemoryBudget
from membudget.cli._app import EXIT_DOES_NOT_FIT, app, emit_json, stdout_console
from membudget.engines.llamacpp import FlashAttn, LlamaCppSettings, estimate_llamacpp
from membudget.engines.llamacpp_log import parse_llamacpp_log
from membudget.engines.llamacpp_validate import compare
from membudget.engines.vllm import KvCacheDtype, VllmSettings, estimate_vllm
from membudget.errors import InvalidArgumentError, MembudgetError
from membudget.hardware import detect
from membudget.loader import load_model
from membudget.model import ModelSpec
from membudget.plan import budget_for, make_plan
from membudget.presets import apply_preset
from membudget.readers.catalog import hf_repo
from membudget.report import EstimateReport, Geometry
from membudget.report_plan import PlanReport, ValidationReport, VllmPlanReport
from membudget.units import MIB, parse_size

_FA_HELP = (
    "Flash attention: on, off or auto (llama.cpp's default; on where the backend supports it)."
)


def _settings(
    ctx: int,
    batch: int,
    ubatch: int,
    parallel: int,
    kv_unified: bool,
    ctk: str,
    ctv: str,
    fa: str,
    swa_full: bool,
) -> LlamaCppSettings:
    if fa not in ("on", "off", "auto"):
        raise InvalidArgumentError("--flash-attn", fa, "must be on, off or auto")
    fa_value: FlashAttn = "on" if fa == "on" else "off" if fa == "off" else "auto"
    return LlamaCppSettings(
        n_ctx=ctx,
        n_batch=batch,
        n_ubatch=ubatch,
        n_parallel=parallel,
        kv_unified=kv_unified,
        cache_type_k=ctk.lower(),
        cache_type_v=ctv.lower(),
        flash_attn=fa_value,
        swa_full=swa_full,
    )


Ctx = Annotated[
    int, typer.Option("--ctx", "-c", help="Context length in tokens (llama.cpp pads it to 256).")
]
Batch = Annotated[int, typer.Option("--batch", "-b", help="Logical batch size (n_batch).")]
UBatch = Annotated[int, typer.Option("--ubatch", "-ub", help="Physical batch size (n_ubatch).")]
Parallel = Annotated[int, typer.Option("--parallel", "-np", help="Parallel sequences (n_seq_max).")]
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


@app.command()
def plan(
    source: Annotated[
        str, typer.Argument(help="GGUF, safetensors, config.json, HF repo id or catalogue name.")
    ],
    engine: Annotated[
        str, typer.Option(help="llama.cpp, or reference for the reference estimator.")
    ] = "llama.cpp",
    ctx: Ctx = 4096,
    batch: Batch = 2048,
    ubatch: UBatch = 512,
    parallel: Parallel = 1,
    kv_unified: Unified = False,
    cache_type_k: CTK = "f16",
    cache_type_v: CTV = "f16",
    flash_attn: FA = "auto",
    swa_full: SwaFull = False,
    quant: Annotated[
        str | None, typer.Option(help="Requantise the weights to a llama.cpp preset first.")
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(help="Memory budget: 8GiB, 16GB ... (default: this machine's available RAM)."),
    ] = None,
    margin: Annotated[
        str | None,
        typer.Option(
            help="Safety margin taken off the budget (default 1GiB for a detected budget, 0 with --memory)."
        ),
    ] = None,
    gpu: Annotated[
        list[str] | None, typer.Option(help="GPU memory, repeatable (vLLM): 80GiB (default: NVML).")
    ] = None,
    tensor_parallel: Annotated[
        int, typer.Option("--tensor-parallel-size", "-tp", help="vLLM tensor parallel.")
    ] = 1,
    pipeline_parallel: Annotated[
        int, typer.Option("--pipeline-parallel-size", "-pp", help="vLLM pipeline parallel.")
    ] = 1,
    max_model_len: Annotated[
        int, typer.Option(help="vLLM --max-model-len (default: trained context).")
    ] = 0,
    gpu_memory_utilization: Annotated[
        float, typer.Option(help="vLLM --gpu-memory-utilization.")
    ] = 0.9,
    kv_cache_dtype: Annotated[
        str, typer.Option(help="vLLM --kv-cache-dtype: auto or fp8.")
    ] = "auto",
    n_gpu_layers: Annotated[
        int,
        typer.Option(
            "--n-gpu-layers", "-ngl", help="llama.cpp -ngl (default: solved from the GPU budgets)."
        ),
    ] = -1,
    tensor_split: Annotated[
        str | None, typer.Option("--tensor-split", "-ts", help="llama.cpp -ts, e.g. 3,1.")
    ] = None,
    n_cpu_moe: Annotated[int, typer.Option("--n-cpu-moe", help="llama.cpp --n-cpu-moe.")] = 0,
    ram: Annotated[
        str | None, typer.Option(help="CPU RAM budget when GPUs are given (same as --memory).")
    ] = None,
    rpc_node: Annotated[
        list[str] | None,
        typer.Option(
            "--rpc-node", help="Memory of one llama.cpp RPC worker node, repeatable: 24GiB."
        ),
    ] = None,
    nodes: Annotated[int, typer.Option(help="vLLM: nodes (pipeline parallel across them).")] = 1,
    as_json: AsJson = False,
) -> None:
    """Will it fit? What an engine allocates (weights, KV cache, recurrent state, output,
    compute), the largest context and most parallel sequences that fit, and the command to run.

    Exit status: 0 when it fits, 1 when it does not, 2 for bad input.
    """
    spec = load_model(source)
    if quant is not None:
        spec = apply_preset(spec, quant)
    if ram is not None:
        if memory is not None and parse_size(memory) != parse_size(ram):
            raise InvalidArgumentError("--ram", ram, "conflicts with --memory; give one of them")
        memory = ram
    if engine in ("reference", "ref"):
        if memory is None:
            raise InvalidArgumentError("--memory", None, "is required by the reference engine")
        layer = spec.layers[0] if spec.layers else None
        ref_budget = MemoryBudget.estimate(
            parse_size(memory) // MIB, spec.n_params, spec.bits_per_weight
        )
        geometry = Geometry(
            spec.n_layer, layer.n_head if layer else 0, layer.head_dim_k if layer else 0
        )
        report = EstimateReport(
            parse_size(memory), spec.n_params, spec.bits_per_weight, ref_budget, geometry, ctx
        )
        if as_json:
            emit_json(report.to_dict())
        else:
            stdout_console().print(report)
        if report.fits is False:
            raise typer.Exit(EXIT_DOES_NOT_FIT)
        return
    if engine == "vllm":
        if nodes < 1:
            raise InvalidArgumentError("--nodes", nodes, "must be at least 1")
        if nodes > 1:
            pipeline_parallel = nodes
        _plan_vllm(
            spec,
            source,
            gpu,
            tensor_parallel,
            pipeline_parallel,
            max_model_len,
            gpu_memory_utilization,
            kv_cache_dtype,
            as_json,
        )
        return
    if engine not in ("llama.cpp", "llamacpp", "llama-cpp"):
        raise InvalidArgumentError("--engine", engine, "must be llama.cpp, vllm or reference")
    settings = _settings(
        ctx, batch, ubatch, parallel, kv_unified, cache_type_k, cache_type_v, flash_attn, swa_full
    )
    if n_gpu_layers >= 0 or tensor_split or n_cpu_moe:
        split = tuple(float(x) for x in tensor_split.split(",")) if tensor_split else ()
        n_gpus = max(len(split), len(gpu or ()), 1)
        settings = replace(
            settings,
            n_gpu_layers=n_gpu_layers if n_gpu_layers >= 0 else spec.n_layer + 1,
            gpus=tuple(f"CUDA{i}" for i in range(n_gpus)),
            tensor_split=split,
            n_cpu_moe=n_cpu_moe,
        )
    budget = budget_for(
        parse_size(memory) if memory is not None else None,
        None if memory is not None else detect(),  # an explicit --memory needs no probing
        parse_size(margin) if margin is not None else None,
        tuple(parse_size(g) for g in gpu) if gpu else None,
        tuple(parse_size(n) for n in rpc_node or ()),
    )
    model_path = spec.source if spec.source_kind == "gguf" else None
    result = PlanReport(make_plan(spec, settings, budget, model_path=model_path))
    if as_json:
        emit_json(result.to_dict())
    else:
        stdout_console().print(result)
    if not result.plan.fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


@app.command()
def validate(
    model: Annotated[Path, typer.Argument(help="The GGUF file to load in llama.cpp.")],
    from_log: Annotated[
        Path | None,
        typer.Option("--from-log", help="Read a llama-server / llama-cli log instead of loading."),
    ] = None,
    ctx: Ctx = 4096,
    batch: Batch = 2048,
    ubatch: UBatch = 512,
    parallel: Parallel = 1,
    kv_unified: Unified = False,
    cache_type_k: CTK = "f16",
    cache_type_v: CTV = "f16",
    flash_attn: FA = "auto",
    swa_full: SwaFull = False,
    as_json: AsJson = False,
) -> None:
    """Load MODEL in the real llama.cpp (or read its log) and compare every buffer.

    Exit status 0 when weights, KV cache, recurrent state and output equal llama.cpp's report
    and the compute buffer is within 5%; 1 otherwise; 2 for bad input.
    """
    settings = _settings(
        ctx, batch, ubatch, parallel, kv_unified, cache_type_k, cache_type_v, flash_attn, swa_full
    )
    spec = load_model(model)
    if from_log is not None:
        try:
            text = from_log.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise MembudgetError(f"Cannot read log {str(from_log)!r}: {e.strerror}.") from None
    else:
        from membudget.engines.llamacpp_run import run_llamacpp  # noqa: PLC0415 - optional extra

        text = run_llamacpp(model, settings)
    reported = parse_llamacpp_log(text)
    result = ValidationReport(spec.name, compare(estimate_llamacpp(spec, settings), reported))
    if as_json:
        emit_json(result.to_dict())
    else:
        stdout_console().print(result)
    if not result.ok:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def _plan_vllm(
    spec: ModelSpec,
    source: str,
    gpus: list[str] | None,
    tp: int,
    pp: int,
    max_len: int,
    utilization: float,
    kv_dtype: str,
    as_json: bool,
) -> None:
    if gpus:
        sizes = [parse_size(g) for g in gpus]
    else:
        sizes = [g.total_bytes for g in detect().gpus if not g.unified]
        if not sizes:
            raise InvalidArgumentError(
                "--gpu", None, "is needed: no NVIDIA GPU was detected for vLLM"
            )
    if kv_dtype not in ("auto", "fp8", "fp8_e4m3", "fp8_e5m2"):
        raise InvalidArgumentError(
            "--kv-cache-dtype", kv_dtype, "must be auto, fp8, fp8_e4m3 or fp8_e5m2"
        )
    dtype: KvCacheDtype = (
        "auto"
        if kv_dtype == "auto"
        else "fp8"
        if kv_dtype == "fp8"
        else "fp8_e4m3"
        if kv_dtype == "fp8_e4m3"
        else "fp8_e5m2"
    )
    if tp * pp > len(sizes) and len(sizes) > 1:
        raise InvalidArgumentError(
            "--tensor-parallel-size", tp, f"times -pp needs {tp * pp} GPUs, {len(sizes)} given"
        )
    settings = VllmSettings(
        gpu_memory_bytes=min(sizes),
        max_model_len=max_len,
        gpu_memory_utilization=utilization,
        kv_cache_dtype=dtype,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
    )
    model = (hf_repo(source) or source) if spec.source_kind == "catalogue" else source
    result = VllmPlanReport(estimate_vllm(spec, settings), model)
    if as_json:
        emit_json(result.to_dict())
    else:
        stdout_console().print(result)
    if not result.fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)
