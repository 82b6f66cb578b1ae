"""Report objects for engine plans and for validation against the real engine."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from membudget.engines.llamacpp import LlamaCppEstimate
from membudget.engines.llamacpp.validate import BufferComparison
from membudget.engines.ollama import OLLAMA_VERSION
from membudget.engines.vllm import VllmEstimate, max_model_len, vllm_command
from membudget.explain import Step, explain_llamacpp, explain_placement, explain_vllm
from membudget.model import ModelSpec
from membudget.plan import Plan, rpc_commands
from membudget.recommend import Recommendation
from membudget.report_bar import budget_bar
from membudget.suggest import Suggestion, suggestion_lines
from membudget.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType

__all__ = [
    "PLAN_SCHEMA",
    "RECOMMEND_SCHEMA",
    "VALIDATE_SCHEMA",
    "PlanReport",
    "RecommendReport",
    "ValidationReport",
    "VllmPlanReport",
]

PLAN_SCHEMA = "membudget/plan/2"
VALIDATE_SCHEMA = "membudget/validate/1"
RECOMMEND_SCHEMA = "membudget/recommend/1"


def model_summary(spec: ModelSpec) -> dict[str, Any]:
    """The model block every plan carries."""
    return {
        "name": spec.name,
        "source": spec.source,
        "architecture": spec.architecture,
        "n_params": spec.n_params,
        "quantization": spec.quant.file_type,
        "n_ctx_train": spec.n_ctx_train,
    }


_LABELS = {
    "model": "weights",
    "kv": "KV cache",
    "kv_swa": "KV cache, SWA",
    "recurrent": "recurrent state",
    "output": "output (logits)",
    "compute": "compute buffer",
}


def _share(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def _ollama_json(p: Plan) -> dict[str, object]:
    """``commands.ollama``: the Ollama settings of this plan; with the ollama engine, also the
    server's environment, the model's options and the llama-server arguments Ollama passes."""
    e = p.estimate
    if p.ollama is None:
        return {"num_ctx": ollama_num_ctx(e), "OLLAMA_NUM_PARALLEL": e.n_seq_max}
    o = p.ollama
    return {
        "num_ctx": o.num_ctx,
        "OLLAMA_NUM_PARALLEL": o.settings.num_parallel,
        "env": o.env(),
        "options": o.options(),
        "llama_server": list(p.command),
        "version": OLLAMA_VERSION,
    }


def ollama_num_ctx(e: LlamaCppEstimate) -> int:
    """Ollama's ``num_ctx`` for the plan's cache: Ollama starts llama-server with ``-c num_ctx*N
    -np N`` and one stream a sequence, so a unified cache of ``n_ctx`` cells is the same cells as
    ``n_ctx / N`` tokens a sequence."""
    return e.n_ctx // e.n_seq_max if e.settings.kv_unified else e.n_ctx_seq


@dataclass(frozen=True, slots=True)
class PlanReport:
    """What llama.cpp allocates for a model under given settings, against a budget."""

    plan: Plan
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def fits(self) -> bool:
        return self.plan.fits

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.plan.warnings

    def headline(self) -> str:
        return self.plan.verdict()

    def explanation(self) -> tuple[Step, ...]:
        return explain_llamacpp(self.plan.estimate) + explain_placement(self.plan)

    def _devices(self) -> list[dict[str, Any]]:
        p = self.plan
        e = p.estimate
        needs = p.needs
        out = []
        for dev, budget in p.budget.devices:
            bufs = [
                {
                    "kind": b.kind,
                    "bytes": b.n_bytes,
                    "reclaimable_bytes": b.reclaimable_bytes,
                    "detail": b.detail,
                }
                for b in e.buffers
                if b.device == dev
            ]
            out.append(
                {
                    "device": dev,
                    "budget_bytes": budget,
                    "needed_bytes": needs[dev],
                    "fits": needs[dev] <= budget,
                    "total_bytes": sum(b.n_bytes for b in e.buffers if b.device == dev),
                    "buffers": bufs,
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        e = p.estimate
        s = e.settings
        pins = p.pins
        return {
            "schema": PLAN_SCHEMA,
            "engine": "llama.cpp",
            "engine_rules": {
                "llama_cpp_version": e.rules.version,
                "compute_method": e.compute_method,
            },
            "model": model_summary(e.spec),
            "settings": {
                "n_ctx": e.n_ctx,
                "n_ctx_requested": s.n_ctx,
                "n_ctx_seq": e.n_ctx_seq,
                "n_parallel": e.n_seq_max,
                "kv_unified": s.kv_unified,
                "n_batch": e.n_batch,
                "n_ubatch": e.n_ubatch,
                "cache_type_k": s.cache_type_k,
                "cache_type_v": s.cache_type_v,
                "flash_attn": "on" if e.flash_attn else "off",
                "flash_attn_requested": s.flash_attn,
                "swa_full": s.swa_full,
                "kv_cells": e.kv_size,
                "swa_cells": e.swa_size,
                "n_gpu_layers": s.n_gpu_layers if s.gpus else 0,
                "tensor_split": [_share(x) for x in s.tensor_split],
                "n_cpu_moe": s.n_cpu_moe,
                "pinned": {
                    "n_gpu_layers": pins.n_gpu_layers is not None,
                    "tensor_split": bool(pins.tensor_split),
                    "n_cpu_moe": pins.n_cpu_moe is not None,
                },
            },
            "memory": {
                "weights_bytes": e.weights_bytes,
                "kv_cache_bytes": e.kv_cache_bytes,
                "kv_swa_bytes": e.kv_swa_bytes,
                "recurrent_state_bytes": e.recurrent_state_bytes,
                "output_bytes": e.output_bytes,
                "compute_bytes": e.compute_bytes,
                "total_bytes": e.total_bytes,
                "resident_bytes": e.resident_bytes,
                "needed_bytes": p.needed_bytes,
            },
            "devices": self._devices(),
            "budget": {
                "memory_bytes": p.budget.memory_bytes,
                "raw_bytes": p.budget.raw_bytes,
                "margin_bytes": p.budget.margin_bytes,
                "source": p.budget.source,
                "fits": p.fits,
                "headroom_bytes": p.headroom_bytes,
                "max_context": p.max_context,
                "max_context_per_sequence": p.max_context_per_sequence,
                "max_context_limit": p.max_context_limit,
                "max_parallel": p.max_parallel,
                "prompt_cache_bytes": p.prompt_cache_bytes,
                "context_checkpoints": None
                if p.checkpoints is None
                else {
                    "count": p.checkpoints.count,
                    "each_bytes": p.checkpoints.each_bytes,
                    "slots": p.checkpoints.slots,
                    "total_bytes": p.checkpoints.total_bytes,
                },
            },
            "suggestions": [x.to_dict() for x in self.suggestions],
            "best_quant": {
                "gpu_only": p.best_quant.gpu_only,
                "with_offload": p.best_quant.with_offload,
            },
            "min_gpus": p.min_gpus,
            "fit": None
            if p.fit is None
            else {
                "n_ctx": p.fit.n_ctx,
                "n_gpu_layers": p.fit.n_gpu_layers,
                "overrides": list(p.fit.overrides),
                "reason": p.fit.reason,
            },
            "warnings": list(p.warnings),
            "commands": {
                "llama.cpp": list(p.command),
                "llama.cpp_rpc": rpc_commands(e, p.command),
                "ollama": _ollama_json(p),
            },
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        p = self.plan
        e = p.estimate
        t = Table(
            title=(
                f"{e.spec.name} on llama.cpp: n_ctx {e.n_ctx:,} ({e.n_seq_max} x {e.n_ctx_seq:,}), "
                f"ubatch {e.n_ubatch}, K {e.settings.cache_type_k} / V {e.settings.cache_type_v}, "
                f"flash attention {'on' if e.flash_attn else 'off'}"
            ),
            title_justify="left",
        )
        t.add_column("device")
        t.add_column("buffer")
        t.add_column("bytes", justify="right")
        t.add_column("MiB", justify="right")
        t.add_column("detail")
        for b in e.buffers:
            t.add_row(
                b.device, _LABELS[b.kind], f"{b.n_bytes:,}", f"{b.n_bytes / 2**20:,.2f}", b.detail
            )
        t.add_row(
            "", "total", f"{e.total_bytes:,}", f"{e.total_bytes / 2**20:,.2f}", "", style="bold"
        )
        yield t
        repack = e.total_bytes - e.resident_bytes
        copies = (
            f" (llama.cpp reports {format_bytes(e.total_bytes)}: the {format_bytes(repack)} of "
            "mapped pages its CPU_REPACK copies replace are not counted)"
            if repack
            else ""
        )
        yield (
            f"needs: {format_bytes(p.needed_bytes)} ({format_bytes(p.needed_bytes, 'decimal')})"
            f"{copies}; rules of llama.cpp {e.rules.version}"
        )
        budget = p.budget
        needs = p.needs
        for dev, limit in budget.devices:
            parts = [
                (
                    label,
                    sum(
                        b.n_bytes - b.reclaimable_bytes
                        for b in e.buffers
                        if b.kind == kind and b.device == dev
                    ),
                )
                for kind, label in _LABELS.items()
            ]
            if budget.gpus:
                state = "fits" if needs[dev] <= limit else "does NOT fit"
                yield f"{dev}: {format_bytes(needs[dev])} of {format_bytes(limit)}, {state}"
            yield budget_bar(parts, limit, width=max(10, min(60, options.max_width - 30)))
        margin = (
            f", after a {format_bytes(budget.margin_bytes)} margin" if budget.margin_bytes else ""
        )
        yield f"budget: {format_bytes(budget.memory_bytes)} of RAM from {budget.source}{margin}"
        s = e.settings
        if s.gpus:
            pinned = [
                flag
                for flag, on in (
                    ("-ngl", p.pins.n_gpu_layers is not None),
                    ("-ts", bool(p.pins.tensor_split)),
                    ("--n-cpu-moe", p.pins.n_cpu_moe is not None),
                )
                if on
            ]
            how = f"pinned by you: {', '.join(pinned)}" if pinned else "chosen by membudget"
            if p.ollama is not None:
                how = (
                    "pinned by Ollama's num_gpu option, -ngl"
                    if p.ollama.settings.num_gpu is not None
                    else "chosen by llama-server's --fit, as Ollama passes no -ngl"
                )
            yield (
                f"placement ({how}): -ngl {s.n_gpu_layers}"
                + (
                    f", -ts {','.join(str(_share(x)) for x in s.tensor_split)}"
                    if len(s.gpus) > 1 and s.tensor_split
                    else ""
                )
                + (f", --n-cpu-moe {s.n_cpu_moe}" if s.n_cpu_moe else "")
                + f" over {', '.join(s.gpus)}"
            )
        yield p.verdict()
        if p.max_context:
            limit_note = (
                f" (the trained context, {e.spec.n_ctx_train:,} per sequence, is the limit, not memory)"
                if p.max_context_limit == "n_ctx_train"
                else ""
            )
            ctx = f"{p.max_context:,} tokens{limit_note}"
        else:
            ctx = "none"
        if e.settings.kv_unified:
            # one cache for every slot: each may grow to the whole of it, not all at once
            parallel = f"most slots sharing the {e.n_ctx_seq:,}-token unified cache"
        else:
            parallel = f"most parallel sequences at {e.n_ctx_seq:,} tokens each"
        yield f"largest context that fits: {ctx}; {parallel}: {p.max_parallel}"
        if p.ollama is not None and not p.fits:
            # suggestions in Ollama's own settings are not made yet
            yield "  no suggestions in Ollama's settings yet: --engine llama-server makes them"
        else:
            yield from suggestion_lines(self.suggestions, p.fits)
        bq = p.best_quant
        if bq.gpu_only and budget.gpus:
            yield f"best llama.cpp quantisation on the devices alone: {bq.gpu_only}"
        if bq.with_offload and bq.with_offload != bq.gpu_only:
            where = " with offload to the CPU" if budget.gpus else ""
            yield f"best llama.cpp quantisation that fits{where}: {bq.with_offload}"
        if p.min_gpus is not None:
            gpus = f"{p.min_gpus} of these GPUs" if p.min_gpus else "more than 16 of these GPUs"
            yield f"the whole model on GPUs needs {gpus}"
        rpc = rpc_commands(e, p.command)
        if rpc:
            for i, cmd in enumerate(rpc[:-1]):
                yield f"on worker {i}: {' '.join(cmd)}"
            yield f"on the main node: {' '.join(rpc[-1])}"
        elif p.ollama is not None:
            o = p.ollama
            env = " ".join(f"{k}={v}" for k, v in o.env().items())
            params = ", ".join(f"{k} {str(v).lower()}" for k, v in o.options().items())
            yield f"run: {env} ollama serve, with the model's options {params}"
            yield f"Ollama {OLLAMA_VERSION} then starts: {p.command_line}"
        else:
            yield f"run: {p.command_line}"
        if p.checkpoints is not None:
            c = p.checkpoints
            yield (
                f"context checkpoints: up to {c.count} a slot x {c.slots} slot(s) x "
                f"{format_bytes(c.each_bytes)} = {format_bytes(c.total_bytes)} of RAM in long "
                "conversations (--ctx-checkpoints; not allocated at start, not in the needs above)"
            )
        if p.prompt_cache_bytes is not None:
            size = (
                "RAM without limit"
                if p.prompt_cache_bytes < 0
                else f"up to {format_bytes(p.prompt_cache_bytes)} of RAM"
            )
            yield (
                f"prompt cache: {size}, filled as prompts are cached (--cache-ram; "
                "not allocated at start, not in the needs above)"
            )
        if p.fit is not None:
            ctx = "-c ?" if p.fit.n_ctx is None else f"-c {p.fit.n_ctx}"
            if p.fit.n_gpu_layers is not None:
                ctx += f" -ngl {p.fit.n_gpu_layers}"
            if p.fit.overrides:
                ctx += f" and {len(p.fit.overrides)} -ot patterns (fit.overrides in --json)"
            whose = (
                "Ollama's llama-server, -c pinned"
                if p.ollama is not None
                else "a bare llama-server, -c 0"
            )
            yield f"--fit ({whose}): {ctx}; {p.fit.reason}"
        if p.ollama is None:
            yield (
                f"Ollama: num_ctx {ollama_num_ctx(e)}, OLLAMA_NUM_PARALLEL={e.n_seq_max}"
                + (
                    f", OLLAMA_KV_CACHE_TYPE={e.settings.cache_type_k}"
                    if e.settings.cache_type_k == e.settings.cache_type_v
                    and e.settings.cache_type_k != "f16"
                    else ""
                )
            )


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """membudget's estimate beside llama.cpp's own report, buffer by buffer."""

    model: str
    rows: Sequence[BufferComparison]
    compute_tolerance: float = 0.05
    estimate: LlamaCppEstimate | None = None

    @property
    def fits(self) -> bool:
        return self.ok

    def headline(self) -> str:
        bad = [r for r in self.rows if not self.row_ok(r)]
        if not bad:
            return f"{self.model}: every buffer matches llama.cpp"
        return f"{self.model}: {len(bad)} buffer(s) differ from llama.cpp: " + ", ".join(
            f"{r.device} {_LABELS.get(r.kind, r.kind)}" for r in bad
        )

    def explanation(self) -> tuple[Step, ...]:
        return explain_llamacpp(self.estimate) if self.estimate is not None else ()

    def row_ok(self, row: BufferComparison) -> bool:
        if row.kind == "compute":
            return abs(row.relative_error) <= self.compute_tolerance
        return row.exact

    @property
    def ok(self) -> bool:
        return all(self.row_ok(r) for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": VALIDATE_SCHEMA,
            "model": self.model,
            "ok": self.ok,
            "compute_tolerance": self.compute_tolerance,
            "buffers": [
                {
                    "device": r.device,
                    "kind": r.kind,
                    "estimated_bytes": r.estimated_bytes,
                    "estimated_mib": r.estimated_mib,
                    "actual_mib": r.actual_mib,
                    "relative_error": None
                    if r.relative_error == float("inf")
                    else round(r.relative_error, 6),
                    "ok": self.row_ok(r),
                }
                for r in self.rows
            ],
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        t = Table(
            title=f"{self.model}: membudget estimate vs llama.cpp (MiB)", title_justify="left"
        )
        for col in ("device", "buffer", "estimated", "llama.cpp", "error", ""):
            t.add_column(
                col, justify="right" if col in ("estimated", "llama.cpp", "error") else "left"
            )
        for r in self.rows:
            err = "inf" if r.relative_error == float("inf") else f"{r.relative_error * 100:+.2f}%"
            t.add_row(
                r.device,
                _LABELS.get(r.kind, r.kind),
                f"{r.estimated_mib:.2f}",
                f"{r.actual_mib:.2f}",
                err,
                "ok" if self.row_ok(r) else "MISMATCH",
            )
        yield t
        yield (
            "weights, KV, recurrent state and output must equal llama.cpp at its printed precision; "
            f"compute must be within {self.compute_tolerance:.0%}."
        )


@dataclass(frozen=True, slots=True)
class VllmPlanReport:
    """vLLM's budget on one GPU of the deployment, and the figures it prints at start-up."""

    estimate: VllmEstimate
    model: str
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def fits(self) -> bool:
        return self.estimate.fits

    @property
    def warnings(self) -> tuple[str, ...]:
        e = self.estimate
        train = e.spec.n_ctx_train
        if train and e.max_model_len > train:
            # vLLM refuses a max_model_len past the model's unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1
            return (
                (
                    f"--max-model-len {e.max_model_len:,} is past the {train:,} tokens the model was "
                    "trained on; vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"
                ),
            )
        return ()

    def headline(self) -> str:
        e = self.estimate
        verdict = "fits" if e.fits else "does NOT fit"
        if e.estimated_max_model_len is not None:
            return (
                f"{verdict}: vLLM refuses --max-model-len {e.max_model_len:,}; the longest that "
                f"fits is {e.estimated_max_model_len:,}"
            )
        return (
            f"{verdict}: {e.kv_cache_tokens:,} KV tokens per GPU, concurrency "
            f"{e.max_concurrency:.2f}x at {e.max_model_len:,} tokens"
        )

    def explanation(self) -> tuple[Step, ...]:
        return explain_vllm(self.estimate)

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        s = e.settings
        longest = max_model_len(e.spec, s)
        train = e.spec.n_ctx_train
        ranks = s.tensor_parallel_size * s.pipeline_parallel_size
        return {
            "schema": PLAN_SCHEMA,
            "engine": "vllm",
            "model": model_summary(e.spec),
            "settings": {
                "max_model_len": e.max_model_len,
                "gpu_memory_utilization": s.gpu_memory_utilization,
                "kv_cache_dtype": s.kv_cache_dtype,
                "tensor_parallel_size": s.tensor_parallel_size,
                "pipeline_parallel_size": s.pipeline_parallel_size,
                "block_size": e.block_size,
                "max_num_seqs": e.max_num_seqs,
                "max_num_batched_tokens": e.batched_tokens,
                "platform": s.platform,
                "kv_cache_memory_bytes": s.kv_cache_memory_bytes,
                "enable_prefix_caching": s.enable_prefix_caching,
                "disable_hybrid_kv_cache_manager": s.disable_hybrid_kv_cache_manager,
                "mamba_ssm_cache_dtype": s.mamba_ssm_cache_dtype,
                "num_gpu_blocks_override": s.num_gpu_blocks_override,
                "dtype": s.dtype,
            },
            "memory": {
                "per": "GPU (the fullest rank)",
                "weights_bytes": e.weights_bytes,
                "activation_bytes": e.activation_bytes,
                "non_torch_bytes": e.non_torch_bytes,
                "cuda_graph_bytes": e.cuda_graph_bytes,
                "kv_cache_bytes": e.kv_cache_bytes,
                "needed_bytes": e.needed_bytes,
                "recurrent_state_bytes": 0,
                "output_bytes": 0,
                "compute_bytes": e.activation_bytes + e.cuda_graph_bytes + e.non_torch_bytes,
                "total_bytes": e.weights_bytes
                + e.activation_bytes
                + e.non_torch_bytes
                + e.cuda_graph_bytes
                + e.kv_cache_bytes,
            },
            "vllm": {
                "gpu_kv_cache_tokens": e.kv_cache_tokens,
                "kv_cache_tokens": e.kv_cache_tokens,
                "max_concurrency": e.max_concurrency,
                "num_blocks": e.num_blocks,
                "block_bytes": e.page_bytes,
                "request_blocks": e.request_blocks,
                "estimated_max_model_len": e.estimated_max_model_len,
                "kv_cache_groups": [
                    {
                        "kind": g.kind,
                        "layers": list(g.layers),
                        "block_size": g.specs[0].block_size,
                        "page_bytes": g.specs[0].page_bytes,
                        "sliding_window": (g.specs[0].window or None)
                        if g.kind == "sliding"
                        else None,
                        "attention_chunk_size": (g.specs[0].window or None)
                        if g.kind == "chunked"
                        else None,
                    }
                    for g in e.groups
                ],
            },
            "devices": [
                {
                    "device": f"GPU{i}",
                    "budget_bytes": e.requested_bytes,
                    "needed_bytes": e.needed_bytes,
                    "fits": e.fits,
                }
                for i in range(ranks)
            ],
            "budget": {
                "memory_bytes": e.requested_bytes,
                "gpu_memory_bytes": s.gpu_memory_bytes,
                "fits": e.fits,
                "max_context": longest,
                "max_context_per_sequence": longest,
                "max_context_limit": "n_ctx_train" if train and longest >= train else "memory",
                "max_parallel": int(e.max_concurrency),
            },
            "suggestions": [x.to_dict() for x in self.suggestions],
            "warnings": list(self.warnings),
            "nodes": {
                "count": s.pipeline_parallel_size,
                "gpus_per_node": s.tensor_parallel_size,
                "per_node_gpu_memory_bytes": s.gpu_memory_bytes * s.tensor_parallel_size,
                "per_node_weights_bytes": e.weights_bytes * s.tensor_parallel_size,
            },
            "commands": {
                "vllm": vllm_command(e, self.model),
                "ray": (
                    [["ray", "start", "--head"], ["ray", "start", "--address", "HEAD_NODE:6379"]]
                    if s.pipeline_parallel_size > 1
                    else []
                ),
            },
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
                f"{e.spec.name} on vLLM's CPU backend: {format_bytes(s.gpu_memory_bytes)} of "
                f"RAM, TP {s.tensor_parallel_size}, KV {s.kv_cache_dtype}"
                if s.platform == "cpu"
                else f"{e.spec.name} on vLLM: {ranks} GPU(s) of "
                f"{format_bytes(s.gpu_memory_bytes)}, TP {s.tensor_parallel_size} x PP "
                f"{s.pipeline_parallel_size}, utilisation {s.gpu_memory_utilization:g}, KV "
                f"{s.kv_cache_dtype} (per GPU)"
            ),
            title_justify="left",
        )
        t.add_column("part")
        t.add_column("size", justify="right")
        t.add_column("how")
        t.add_row(
            "budget",
            format_bytes(e.requested_bytes),
            "the host's memory (--memory)"
            if s.platform == "cpu" and s.kv_cache_memory_bytes is not None
            else "gpu_memory_utilization x memory",
        )
        t.add_row("weights", format_bytes(e.weights_bytes), "the fullest rank's share (TP x PP)")
        t.add_row(
            "activation peak", format_bytes(e.activation_bytes), "estimated; vLLM profiles it"
        )
        t.add_row("non-torch memory", format_bytes(e.non_torch_bytes), "cuBLAS, NCCL (typical)")
        t.add_row(
            "CUDA graphs", format_bytes(e.cuda_graph_bytes), "typical; 0 with --enforce-eager"
        )
        t.add_row(
            "KV cache",
            format_bytes(e.kv_cache_bytes),
            f"{e.num_blocks:,} blocks of {e.block_size} tokens, {len(e.groups)} group(s)"
            + (" (--kv-cache-memory-bytes)" if s.kv_cache_memory_bytes is not None else ""),
        )
        yield t
        yield budget_bar(
            [
                ("weights", e.weights_bytes),
                ("activations", e.activation_bytes),
                ("non-torch", e.non_torch_bytes),
                ("CUDA graphs", e.cuda_graph_bytes),
                ("KV cache", e.kv_cache_bytes),
            ],
            e.requested_bytes,
            width=max(10, min(60, options.max_width - 30)),
        )
        longest = max_model_len(e.spec, s)
        pool = "CPU" if s.platform == "cpu" else "GPU"
        if e.estimated_max_model_len is not None:
            yield (
                f"does NOT fit: vLLM refuses --max-model-len {e.max_model_len:,} (one request "
                f"needs {format_bytes(e.request_bytes)} of KV cache); its estimate of the "
                f"longest that fits: {e.estimated_max_model_len:,}"
            )
        else:
            verdict = "fits" if e.fits else "does NOT fit"
            yield (
                f"{verdict}: {pool} KV cache size {e.kv_cache_tokens:,} tokens; maximum "
                f"concurrency for {e.max_model_len:,} tokens per request: "
                f"{e.max_concurrency:.2f}x; longest max-model-len: {longest:,}"
            )
        yield from suggestion_lines(self.suggestions, e.fits)
        yield f"run: {' '.join(vllm_command(e, self.model))}"


@dataclass(frozen=True, slots=True)
class RecommendReport:
    """Settings to run a model with on llama.cpp, each with its reason."""

    model: str
    recommendations: tuple[Recommendation, ...]

    @property
    def fits(self) -> bool | None:
        return None

    @property
    def flags(self) -> list[str]:
        return [f for r in self.recommendations for f in r.flags]

    def headline(self) -> str:
        return " ".join(self.flags)

    def explanation(self) -> tuple[Step, ...]:
        return tuple(
            Step(r.setting, None, f"{r.setting} = {r.value}: {r.reason}")
            for r in self.recommendations
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RECOMMEND_SCHEMA,
            "model": self.model,
            "recommendations": [
                {"setting": r.setting, "value": r.value, "flags": list(r.flags), "reason": r.reason}
                for r in self.recommendations
            ],
            "flags": self.flags,
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        t = Table(title=f"Recommended llama.cpp settings for {self.model}", title_justify="left")
        for col in ("setting", "value", "flags", "why"):
            t.add_column(col)
        for r in self.recommendations:
            t.add_row(r.setting, r.value, " ".join(r.flags), r.reason)
        yield t
        yield "flags: " + " ".join(self.flags)
