"""SGLang's plan as one report object: the text table, the JSON and the explanation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from membudget.engines.sglang import (
    SGLANG_VERSION,
    SglangEstimate,
    longest_context,
    sglang_command,
)
from membudget.explain import Input, Step
from membudget.report_bar import budget_bar
from membudget.report_plan import PLAN_SCHEMA, model_summary
from membudget.units import MIB, format_bytes

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType

__all__ = ["SglangPlanReport", "explain_sglang"]

_SRC = f"SGLang {SGLANG_VERSION}"


def explain_sglang(e: SglangEstimate) -> tuple[Step, ...]:
    """The steps behind an SGLang estimate (one rank)."""
    s, spec, m = e.settings, e.spec, e.memory
    gpu_mib = s.gpu_memory_bytes // MIB
    if s.mem_fraction_static is None:
        fraction = Step(
            "mem_fraction_static",
            None,
            f"round(({gpu_mib:,} MiB - reserved {m.reserved_mib:g} MiB) / {gpu_mib:,} MiB, 3) "
            f"= {e.mem_fraction_static:g}",
            (
                Input("GPU memory", f"{gpu_mib:,} MiB", "--gpu or NVML (nvidia-smi memory.total)"),
                Input(
                    "reserved",
                    f"{m.reserved_mib:g} MiB",
                    f"{_SRC} server_args.py _handle_gpu_memory_settings: 512 + 1.5 x "
                    f"max(chunked_prefill_size {m.chunked_prefill_size}, 2048) + 2 x "
                    f"cuda_graph_max_bs {m.cuda_graph_max_bs} + tp x pp / 8 GiB + piecewise "
                    f"CUDA graphs ({len(m.piecewise_cuda_graph_tokens)} token counts x 8"
                    + (", 1.5 GiB with MLA" if spec.mla is not None else "")
                    + "), at least 10 GiB above 60 GiB",
                ),
            ),
        )
    else:
        fraction = Step(
            "mem_fraction_static",
            None,
            f"--mem-fraction-static {e.mem_fraction_static:g}, as given",
        )
    pool = Step(
        "token pool",
        e.kv_cache_bytes,
        f"rest = (free {e.pre_load_free_bytes:,} - weights {e.weights_bytes:,}) - free x "
        f"(1 - {e.mem_fraction_static:g}); int(rest) // cell {e.cell_bytes:,} B = "
        f"{e.profiled_tokens:,} tokens"
        + (f", capped at --max-total-tokens {s.max_total_tokens:,}" if s.max_total_tokens else "")
        + f", down to a page of {s.page_size} = {e.max_total_num_tokens:,}"
        + (
            f" (full layers {e.full_tokens:,}, sliding layers {e.swa_tokens:,} at "
            "swa_full_tokens_ratio 0.8)"
            if e.full_tokens is not None and e.swa_tokens is not None
            else ""
        ),
        (
            Input(
                "free before loading",
                f"{e.pre_load_free_bytes:,}",
                f"GPU memory less the CUDA context and NCCL ({s.context_bytes:,} B, typical)",
            ),
            Input(
                "weights", f"{e.weights_bytes:,}", "the checkpoint's bytes over the TP x PP ranks"
            ),
            Input(
                "cell",
                f"{e.cell_bytes:,} B",
                f"{_SRC} model_runner_kv_cache_mixin.py get_cell_size_per_token: "
                + (
                    f"(kv_lora_rank {spec.mla.kv_lora_rank} + rope {spec.mla.qk_rope_head_dim})"
                    if spec.mla is not None and spec.mla.compressed_cache
                    else "max(1, KV heads // TP) x (head_dim + v_head_dim)"
                )
                + f" x layers x {s.kv_cache_dtype} bytes",
            ),
        ),
    )
    requests = Step(
        "max_running_requests",
        None,
        f"min(clamp(int(pool / context {e.context_length:,} x 512), 2048, 4096), "
        + (
            f"--max-running-requests {s.max_running_requests})"
            if s.max_running_requests
            else "pool // 2)"
        )
        + f" = {e.max_running_requests:,} ({_SRC} _resolve_max_num_reqs)",
    )
    verdict = Step(
        "fits",
        None,
        f"the pool holds {e.max_total_num_tokens:,} tokens; one request of --context-length "
        f"{e.context_length:,} "
        + (
            "fits"
            if e.fits
            else f"does not: SGLang caps requests at {e.max_request_tokens:,} tokens "
            "(tp_worker.py max_req_len)"
        ),
    )
    return (fraction, pool, requests, verdict)


@dataclass(frozen=True, slots=True)
class SglangPlanReport:
    """SGLang's static pool on one GPU of the deployment and the token pool it builds."""

    estimate: SglangEstimate
    model: str

    @property
    def fits(self) -> bool:
        return self.estimate.fits

    @property
    def suggestions(self) -> tuple[()]:
        return ()

    @property
    def warnings(self) -> tuple[str, ...]:
        e = self.estimate
        out = [
            (
                "the CUDA context and NCCL's share are typical figures; SGLang measures the free "
                "memory after they exist"
            )
        ]
        if not e.starts:
            out.append(
                'SGLang does not start: its pool is too small ("Not enough memory" or '
                '"Memory pool size is too small")'
            )
        return tuple(out)

    def headline(self) -> str:
        e = self.estimate
        verdict = "fits" if e.fits else "does NOT fit"
        return (
            f"{verdict}: a pool of {e.max_total_num_tokens:,} tokens per GPU for --context-length "
            f"{e.context_length:,}, at most {e.max_running_requests:,} running requests"
        )

    def explanation(self) -> tuple[Step, ...]:
        return explain_sglang(self.estimate)

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        s = e.settings
        m = e.memory
        ranks = s.tensor_parallel_size * s.pipeline_parallel_size
        longest = longest_context(e.spec, s)
        train = e.spec.n_ctx_train
        return {
            "schema": PLAN_SCHEMA,
            "engine": "sglang",
            "model": model_summary(e.spec),
            "settings": {
                "context_length": e.context_length,
                "mem_fraction_static": e.mem_fraction_static,
                "kv_cache_dtype": s.kv_cache_dtype,
                "page_size": s.page_size,
                "tensor_parallel_size": s.tensor_parallel_size,
                "pipeline_parallel_size": s.pipeline_parallel_size,
                "chunked_prefill_size": m.chunked_prefill_size,
                "cuda_graph_max_bs": m.cuda_graph_max_bs,
                "max_running_requests": e.max_running_requests,
                "max_total_tokens": s.max_total_tokens,
                "disable_piecewise_cuda_graph": s.disable_piecewise_cuda_graph,
            },
            "memory": {
                "per": "GPU (the fullest rank)",
                "context_bytes": s.context_bytes,
                "reserved_bytes": e.reserved_bytes,
                "weights_bytes": e.weights_bytes,
                "kv_cache_bytes": e.kv_cache_bytes,
                "needed_bytes": e.needed_bytes,
                "total_bytes": s.context_bytes
                + e.reserved_bytes
                + e.weights_bytes
                + e.kv_cache_bytes,
            },
            "sglang": {
                "version": SGLANG_VERSION,
                "max_total_num_tokens": e.max_total_num_tokens,
                "profiled_tokens": e.profiled_tokens,
                "cell_bytes": e.cell_bytes,
                "full_tokens": e.full_tokens,
                "swa_tokens": e.swa_tokens,
                "reserved_mib": m.reserved_mib,
                "cuda_graph_bs": list(m.cuda_graph_bs),
                "piecewise_cuda_graph_tokens": list(m.piecewise_cuda_graph_tokens),
                "max_request_tokens": e.max_request_tokens,
                "starts": e.starts,
            },
            "devices": [
                {
                    "device": f"GPU{i}",
                    "budget_bytes": s.gpu_memory_bytes,
                    "needed_bytes": e.needed_bytes,
                    "fits": e.fits,
                }
                for i in range(ranks)
            ],
            "budget": {
                "memory_bytes": s.gpu_memory_bytes,
                "gpu_memory_bytes": s.gpu_memory_bytes,
                "fits": e.fits,
                "max_context": longest,
                "max_context_per_sequence": longest,
                "max_context_limit": "n_ctx_train" if train and longest >= train else "memory",
                "max_parallel": e.max_total_num_tokens // max(e.context_length, 1),
            },
            "suggestions": [],
            "warnings": list(self.warnings),
            "commands": {"sglang": sglang_command(e, self.model)},
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        e = self.estimate
        s = e.settings
        ranks = s.tensor_parallel_size * s.pipeline_parallel_size
        t = Table(
            title=(
                f"{e.spec.name} on SGLang {SGLANG_VERSION}: {ranks} GPU(s) of "
                f"{format_bytes(s.gpu_memory_bytes)}, TP {s.tensor_parallel_size} x PP "
                f"{s.pipeline_parallel_size}, mem_fraction_static {e.mem_fraction_static:g}, "
                f"KV {s.kv_cache_dtype} (per GPU)"
            ),
            title_justify="left",
        )
        t.add_column("part")
        t.add_column("size", justify="right")
        t.add_column("how")
        t.add_row("memory", format_bytes(s.gpu_memory_bytes), "the GPU's")
        t.add_row("CUDA context", format_bytes(s.context_bytes), "typical; before SGLang measures")
        t.add_row(
            "reserved",
            format_bytes(e.reserved_bytes),
            "(1 - mem_fraction_static) of the free memory: activations, CUDA graphs",
        )
        t.add_row("weights", format_bytes(e.weights_bytes), f"1/{ranks} of the weights")
        t.add_row(
            "KV cache",
            format_bytes(e.kv_cache_bytes),
            f"{e.max_total_num_tokens:,} tokens of {e.cell_bytes:,} B, page {s.page_size}",
        )
        yield t
        yield budget_bar(
            [
                ("CUDA context", s.context_bytes),
                ("reserved", e.reserved_bytes),
                ("weights", e.weights_bytes),
                ("KV cache", e.kv_cache_bytes),
            ],
            s.gpu_memory_bytes,
            width=max(10, min(60, options.max_width - 30)),
        )
        verdict = "fits" if e.fits else "does NOT fit"
        yield (
            f"{verdict}: max_total_num_tokens {e.max_total_num_tokens:,}, max_running_requests "
            f"{e.max_running_requests:,}; longest --context-length: "
            f"{longest_context(e.spec, s):,}"
        )
        yield f"run: {' '.join(sglang_command(e, self.model))}"
