"""Why each number is what it is: the equation, its inputs, and where every input came from.

An explanation is a list of :class:`Step`\\ s, one per reported quantity. Each step shows the
equation with the numbers put in, and names the source of each input: a GGUF key or config field
(through :meth:`ModelSpec.source_of`), a catalogue entry, a command-line setting, or an engine
rule with the engine version it was checked against. The CLI prints them after the table
(``--explain``) and adds them to the JSON under ``"explain"``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from membudget.budget import MemoryBudget
from membudget.engines.llamacpp import LlamaCppEstimate
from membudget.engines.llamacpp.devices import split_counts
from membudget.engines.vllm import VllmEstimate
from membudget.kv import cache_layers, cache_type, recurrent_state_dims, row_bytes
from membudget.model import ModelSpec
from membudget.plan import Plan

__all__ = [
    "Input",
    "Step",
    "explain_llamacpp",
    "explain_placement",
    "explain_reference",
    "explain_vllm",
    "to_dicts",
]


@dataclass(frozen=True, slots=True)
class Input:
    """One input of an equation: its name, value and where the value came from."""

    name: str
    value: str
    source: str


@dataclass(frozen=True, slots=True)
class Step:
    """How one quantity was computed."""

    quantity: str
    n_bytes: int | None
    equation: str
    inputs: tuple[Input, ...] = ()


def to_dicts(steps: tuple[Step, ...]) -> list[dict[str, Any]]:
    return [
        {
            "quantity": s.quantity,
            "bytes": s.n_bytes,
            "equation": s.equation,
            "inputs": [{"name": i.name, "value": i.value, "source": i.source} for i in s.inputs],
        }
        for s in steps
    ]


def _runs(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)


def _weights(spec: ModelSpec, n_bytes: int, rule: str) -> Step:
    types = Counter(t.type_name for t in spec.tensors)
    mix = ", ".join(f"{n} x {name}" for name, n in types.most_common())
    return Step(
        "weights",
        n_bytes,
        "sum over tensors of n_elements / block_size * bytes_per_block (ggml type sizes from "
        f"gguf-py's GGML_QUANT_SIZES){rule}",
        (
            Input(
                "tensors", mix or f"{spec.weights.total:,} bytes in all", spec.source_of("weights")
            ),
            Input("file type", spec.quant.file_type, f"{spec.source_kind} {spec.source}"),
        ),
    )


def explain_llamacpp(e: LlamaCppEstimate) -> tuple[Step, ...]:
    """The steps behind a llama.cpp estimate."""
    spec, s, r = e.spec, e.settings, e.rules
    rule = f"llama.cpp {r.version}"
    steps: list[Step] = [
        _weights(
            spec,
            e.weights_bytes,
            f"; each tensor padded to {r.alignment} B in a CPU buffer, and matrix weights of "
            "repackable types counted again as CPU_REPACK copies (their mapped pages stay "
            "reclaimable)",
        ),
        Step(
            "context",
            None,
            f"n_ctx = pad({s.n_ctx or spec.n_ctx_train}, {r.ctx_pad}) = {e.n_ctx:,}; "
            f"n_ctx_seq = {'n_ctx' if s.kv_unified else f'pad(n_ctx / {e.n_seq_max}, {r.ctx_pad})'}"
            f" = {e.n_ctx_seq:,}; {e.n_stream} KV stream(s)",
            (
                Input("--ctx", str(s.n_ctx), "command line (0: the trained context)"),
                Input("n_ctx_train", str(spec.n_ctx_train), spec.source_of("n_ctx_train")),
                Input("--parallel", str(s.n_parallel), "command line"),
                Input("--kv-unified", str(s.kv_unified), "command line"),
                Input(
                    "padding", str(r.ctx_pad), f"{rule}: llama_context pads n_ctx to {r.ctx_pad}"
                ),
            ),
        ),
    ]
    if not spec.embedding_only:
        steps.extend(_kv_steps(e, rule))
        if spec.n_recurrent_layers:
            conv, ssm = recurrent_state_dims(spec)
            n = spec.n_recurrent_layers
            steps.append(
                Step(
                    "recurrent state",
                    e.recurrent_state_bytes,
                    f"{n} recurrent layers x (conv {conv:,} + state {ssm:,} values) x 4 B (F32) x "
                    f"{e.n_seq_max} sequence(s), each tensor padded to {r.alignment} B",
                    (
                        Input(
                            "state dims",
                            f"conv {conv:,}, state {ssm:,}",
                            spec.source_of("recurrent"),
                        ),
                        Input("sequences", str(e.n_seq_max), "--parallel"),
                    ),
                )
            )
    steps.append(
        Step(
            "output",
            e.output_bytes,
            f"n_vocab {spec.n_vocab:,} x {e.n_seq_max} output(s) x 4 B (F32 logits)"
            + (
                " + n_embd x outputs x 4 B (embeddings)"
                if s.embeddings or spec.embedding_only
                else ""
            ),
            (
                Input("n_vocab", f"{spec.n_vocab:,}", spec.source_of("n_vocab")),
                Input("outputs", str(e.n_seq_max), f"{rule}: one logits row per sequence reserved"),
            ),
        )
    )
    n_tokens = min(e.n_ctx, e.n_ubatch)
    if e.compute_method in ("simulated", "scheduled"):
        how = (
            f"ggml-alloc replayed over llama.cpp's worst-case graph for {spec.architecture}: "
            f"{n_tokens} tokens (min(n_ctx, n_ubatch)), one output each, attention over "
            f"{e.kv_size:,} cells; every tensor placed best-fit, freed after its last use, "
            "reused in place where ggml allows"
        )
        model = Input(
            "model",
            "graph rebuilt op by op, allocator replayed",
            f"membudget.engines.llamacpp.graph, equal to {rule}'s CPU report "
            "(benchmarks/accuracy.py)",
        )
        if e.compute_method == "scheduled":
            how += (
                "; split between the devices and the host as llama.cpp's scheduler splits it "
                "(each op where the weight it reads lives, the host keeping the graph inputs "
                "and token rows, each backend a copy of what it reads from another; four "
                "copies of each, kept for the whole graph, when several devices hold every "
                "layer: pipeline parallelism), one allocator per backend"
            )
            model = Input(
                "model",
                "graph rebuilt, scheduler and allocators replayed",
                "membudget.engines.llamacpp.sched, equal to CUDA and RPC logs "
                "(tests/test_cuda_logs.py, tests/test_llama_server.py)",
            )
    else:
        how = (
            f"worst-case graph of {n_tokens} tokens (min(n_ctx, n_ubatch)) over {e.kv_size:,} "
            "cells: the largest of the attention phase (masks, "
            + ("flash attention, no score matrix" if e.flash_attn else "K·Q scores per head")
            + "), the FFN/MoE phase and the logits phase (n_vocab x tokens x 4 B), plus the "
            "residual rows that stay live"
        )
        model = Input(
            "model",
            f"phase model of ggml-alloc's peak (no graph builder for {spec.architecture})",
            f"membudget, calibrated on {rule}'s reports (benchmarks/accuracy.py)",
        )
    steps.append(
        Step(
            "compute",
            e.compute_bytes,
            how,
            (
                Input("--ubatch", str(s.n_ubatch), "command line"),
                Input(
                    "flash attention",
                    "on" if e.flash_attn else "off",
                    f"--flash-attn {s.flash_attn}",
                ),
                Input("n_embd", f"{spec.n_embd:,}", spec.source_of("n_embd")),
                Input("n_ff", f"{spec.n_ff:,}", spec.source_of("n_ff")),
                Input("n_vocab", f"{spec.n_vocab:,}", spec.source_of("n_vocab")),
                model,
            ),
        )
    )
    steps.append(
        Step(
            "total",
            e.total_bytes,
            " + ".join(
                f"{k} {v:,}"
                for k, v in (
                    ("weights", e.weights_bytes),
                    ("KV", e.kv_cache_bytes),
                    ("recurrent", e.recurrent_state_bytes),
                    ("output", e.output_bytes),
                    ("compute", e.compute_bytes),
                )
                if v
            )
            + f" bytes; resident (what must fit) {e.resident_bytes:,} bytes",
        )
    )
    return tuple(steps)


def _kv_steps(e: LlamaCppEstimate, rule: str) -> list[Step]:
    spec, s, r = e.spec, e.settings, e.rules
    tk, tv = cache_type(s.cache_type_k), cache_type(s.cache_type_v)
    layers = cache_layers(spec)
    mla_k_only = spec.mla is not None and spec.mla.compressed_cache and r.mla_k_only
    v_max = max((c.n_embd_v for c in layers), default=0)
    v_variable = len({c.n_embd_v for c in layers}) > 1
    inputs_common = [
        Input(
            "n_head_kv", _per_layer([x.n_head_kv for x in spec.layers]), spec.source_of("n_head_kv")
        ),
        Input(
            "head_dim_k",
            _per_layer([x.head_dim_k for x in spec.layers]),
            spec.source_of("head_dim_k"),
        ),
        Input(
            "head_dim_v",
            _per_layer([x.head_dim_v for x in spec.layers]),
            spec.source_of("head_dim_v"),
        ),
        Input(
            "--cache-type-k",
            f"{tk.name} ({tk.block_size} values in {tk.type_size} B)",
            "command line; sizes from gguf-py",
        ),
        Input(
            "--cache-type-v",
            f"{tv.name} ({tv.block_size} values in {tv.type_size} B)",
            "command line; sizes from gguf-py",
        ),
    ]
    if spec.mla is not None:
        m = spec.mla
        inputs_common.append(
            Input(
                "MLA",
                f"kv_lora_rank {m.kv_lora_rank} + rope {m.qk_rope_head_dim}"
                if m.compressed_cache
                else "full heads (file predates the MLA keys)",
                spec.source_of("kv_lora_rank"),
            )
        )
    out: list[Step] = []
    for swa in (False, True):
        group = [c for c in layers if bool(c.sliding_window) == swa]
        if not group:
            continue
        cells = e.swa_size if swa else e.kv_size
        shapes: dict[tuple[int, int], list[int]] = {}
        for c in group:
            v_width = (
                0 if mla_k_only else (v_max if (not e.flash_attn and v_variable) else c.n_embd_v)
            )
            shapes.setdefault((c.n_embd_k, v_width), []).append(c.index)
        terms = []
        for (k, v), idx in shapes.items():
            per_row = row_bytes(tk, k) + (row_bytes(tv, v) if v else 0)
            terms.append(
                f"layers {_runs(idx)} ({len(idx)}): (K {k} values = {row_bytes(tk, k):,} B"
                + (f" + V {v} values = {row_bytes(tv, v):,} B" if v else ", no V")
                + f") = {per_row:,} B per cell"
            )
        cells_rule = (
            f"cells = n_ctx_seq = {cells:,}"
            if not swa
            else (
                f"cells = n_ctx_seq = {cells:,} (--swa-full)"
                if s.swa_full
                else f"cells = pad(min(n_ctx_seq, n_swa {spec.sliding_window} x "
                f"{e.n_seq_max if s.kv_unified else 1} + n_ubatch {e.n_ubatch}), {r.swa_pad}) = {cells:,}"
            )
        )
        notes = []
        if mla_k_only:
            notes.append("MLA: only the compressed latent K is cached")
        if not e.flash_attn and v_variable:
            notes.append("V rows padded to the widest layer (flash attention off)")
        inputs = list(inputs_common)
        if swa:
            inputs.append(
                Input("n_swa", str(spec.sliding_window), spec.source_of("sliding_window"))
            )
        inputs.append(Input("cells", f"{cells:,}", f"{rule}: llama_kv_cache sizing"))
        out.append(
            Step(
                "KV cache, SWA layers" if swa else "KV cache",
                e.kv_swa_bytes if swa else e.kv_cache_bytes - e.kv_swa_bytes,
                "; ".join(terms)
                + f"; x {cells_rule} x {e.n_stream} stream(s), each tensor padded to "
                f"{r.alignment} B" + (f" ({'; '.join(notes)})" if notes else ""),
                tuple(inputs),
            )
        )
    return out


def _per_layer(values: list[int]) -> str:
    distinct = sorted(set(values))
    if len(distinct) == 1:
        return str(distinct[0])
    return "per layer: " + ", ".join(f"{v} x{values.count(v)}" for v in distinct)


def explain_vllm(e: VllmEstimate) -> tuple[Step, ...]:
    """The steps behind a vLLM estimate (one rank)."""
    s, spec = e.settings, e.spec
    src = "vLLM 0.32.0 (vllm/v1/core/kv_cache_utils.py, kv_cache_interface.py)"
    if s.kv_cache_memory_bytes is not None:
        budget = Step(
            "KV cache budget",
            e.kv_cache_bytes,
            "--kv-cache-memory-bytes, as given (vLLM skips profiling)",
            (Input("KV memory", f"{e.kv_cache_bytes:,}", "--kv-cache-memory-bytes"),),
        )
    else:
        budget = Step(
            "KV cache budget",
            e.kv_cache_bytes,
            f"memory {s.gpu_memory_bytes:,} x utilization {s.gpu_memory_utilization} "
            f"- weights {e.weights_bytes:,} - activations {e.activation_bytes:,} - non-torch "
            f"{e.non_torch_bytes:,} - CUDA graphs {e.cuda_graph_bytes:,}",
            (
                Input("memory", f"{s.gpu_memory_bytes:,}", "--gpu or NVML (--memory on the CPU)"),
                Input(
                    "activations",
                    f"{e.activation_bytes:,}",
                    "estimate: widest MLP over max_num_batched_tokens + sampler logits (vLLM "
                    "profiles it)",
                ),
                Input("non-torch", f"{e.non_torch_bytes:,}", "typical figure; 0 on the CPU"),
                Input("CUDA graphs", f"{e.cuda_graph_bytes:,}", "typical figure; 0 on the CPU"),
            ),
        )
    kinds = ", ".join(
        f"{len(g.layers)} x {g.kind}"
        + (f" (window {g.specs[0].window})" if g.kind == "sliding" else "")
        + (f" (chunk {g.specs[0].window})" if g.kind == "chunked" else "")
        + f" of {g.block_bytes // max(len(g.layers), 1):,} B a layer"
        for g in e.groups
    )
    blocks = Step(
        "blocks",
        None,
        f"{len(e.groups)} KV-cache group(s): {kinds or 'none'}; a block takes the largest "
        f"group's {e.page_bytes:,} B; num_blocks = KV budget {e.kv_cache_bytes:,} // "
        f"{e.page_bytes:,} = {e.num_blocks:,} (vLLM's null block among them), "
        f"{e.block_size} tokens a block",
        (
            Input(
                "page",
                f"{e.page_bytes:,} B",
                f"{src}: "
                + (
                    f"block_size x one latent head of kv_lora_rank {spec.mla.kv_lora_rank} + "
                    f"rope {spec.mla.qk_rope_head_dim} (MLA, K only) x dtype bytes"
                    if spec.mla is not None and spec.mla.compressed_cache
                    else "block_size x max(1, KV heads // TP) x (head_dim_k + head_dim_v) "
                    "x dtype bytes; a Mamba-like state padded to the attention page, whose "
                    "block grows to hold it"
                )
                + f", over the first pipeline stage's ceil({spec.n_layer} / "
                f"{s.pipeline_parallel_size}) layers, grouped by kind",
            ),
            Input(
                "n_head_kv",
                _per_layer([x.n_head_kv for x in spec.layers]),
                spec.source_of("n_head_kv"),
            ),
        ),
    )
    if e.estimated_max_model_len is not None:
        verdict = (
            f"vLLM refuses to start: one request needs {e.request_bytes:,} B and the null "
            f"block {e.page_bytes:,} B; its estimate of the longest that fits is "
            f"{e.estimated_max_model_len:,}"
        )
    else:
        verdict = (
            f"concurrency = {e.num_blocks:,} blocks / {e.request_blocks:,} a request = "
            f"{e.max_concurrency:.2f}; KV cache size = concurrency x max_model_len = "
            f"{e.kv_cache_tokens:,} tokens (as vLLM logs them)"
        )
    return (
        _weights(
            spec,
            e.weights_bytes,
            f" / (tensor parallel {s.tensor_parallel_size} x pipeline parallel "
            f"{s.pipeline_parallel_size}) = one rank's share, rounded up",
        ),
        budget,
        blocks,
        Step(
            "concurrency",
            e.request_bytes,
            f"one request of max_model_len {e.max_model_len:,} tokens takes {e.request_blocks:,} "
            f"blocks over the groups (a sliding window: its window - 1 plus the tokens in "
            f"flight, max_num_batched_tokens {e.batched_tokens:,} a batch, plus one; a state: "
            f"one, or two and a checkpoint with prefix caching); {verdict}",
            (
                Input(
                    "max_model_len",
                    f"{e.max_model_len:,}",
                    "--max-model-len, the model's own, or auto-fit's (-1)",
                ),
            ),
        ),
    )


def explain_reference(
    budget: MemoryBudget, memory_bytes: int, params: int, bits: float
) -> tuple[Step, ...]:
    """The steps behind the reference estimator (docs/reference-estimator.md)."""
    b = budget
    return (
        Step(
            "total",
            b.total_system_bytes,
            f"memory {memory_bytes:,} B rounded down to whole MiB = {b.total_system_bytes:,} B",
            (Input("--memory", f"{memory_bytes:,}", "command line"),),
        ),
        Step(
            "weights",
            b.model_weight_bytes,
            f"params {params:,} x bits {bits} / 8 (bits as float32, docs/reference-estimator.md) = {b.model_weight_bytes:,}",
            (
                Input("--params", f"{params:,}", "command line or model file"),
                Input("--bits", str(bits), "command line or model file"),
            ),
        ),
        Step(
            "runtime overhead",
            b.runtime_overhead,
            f"min(total / 10, 256 MiB) = {b.runtime_overhead:,} (docs/reference-estimator.md)",
        ),
        Step(
            "KV cache budget",
            b.kv_cache_budget,
            f"total - weights - overhead (never negative) = {b.kv_cache_budget:,} (docs/reference-estimator.md)",
        ),
    )


def explain_placement(plan: Plan) -> tuple[Step, ...]:
    """Why the layers went where they did, and each device's budget against its needs."""
    e, b, pins = plan.estimate, plan.budget, plan.pins
    s = e.settings
    steps: list[Step] = []
    if s.gpus:
        n_slots = e.spec.n_layer + 1
        counts = split_counts(n_slots, s.n_gpu_layers, list(s.tensor_split) or [1.0] * len(s.gpus))
        blocks = ", ".join(f"{d} {n}" for d, n in zip(s.gpus, counts, strict=True))
        chosen = (
            "pinned on the command line"
            if pins.pinned
            else "chosen by membudget: of every -ngl, every split into consecutive blocks and "
            "(for experts) every --n-cpu-moe, the placement that fits whose CPU reads the fewest "
            "weight bytes per token (dense weights whole, routed experts by n_expert_used / "
            "n_expert), its blocks spread so each device keeps the same share free"
        )
        steps.append(
            Step(
                "placement",
                None,
                f"-ngl {s.n_gpu_layers} of {n_slots} slots ({e.spec.n_layer} layers + output): "
                f"{n_slots - sum(counts)} on the CPU, then {blocks} (devices in llama.cpp's order, "
                f"RPC servers first); --n-cpu-moe {s.n_cpu_moe}",
                (
                    Input(
                        "-ngl / -ts / --n-cpu-moe",
                        f"{s.n_gpu_layers} / {','.join(f'{x:g}' for x in s.tensor_split) or '-'}"
                        f" / {s.n_cpu_moe}",
                        chosen,
                    ),
                    Input(
                        "split rule",
                        "consecutive blocks",
                        f"llama.cpp {e.rules.version} llama_model::load_tensors: offloaded slot j "
                        "of N goes to the first device whose cumulative share exceeds j / N",
                    ),
                ),
            )
        )
    needs = plan.needs
    for dev, limit in b.devices:
        parts: dict[str, int] = {}
        for buf in e.buffers:
            if buf.device == dev:
                parts[buf.kind] = parts.get(buf.kind, 0) + buf.n_bytes - buf.reclaimable_bytes
        sum_text = " + ".join(f"{k} {n:,}" for k, n in parts.items()) or "0"
        raw = limit + b.margin_bytes
        steps.append(
            Step(
                f"{dev} needed",
                needs[dev],
                f"needs {sum_text} = {needs[dev]:,} {'<=' if needs[dev] <= limit else '>'} "
                f"budget {raw:,} - margin {b.margin_bytes:,} = {limit:,}",
                (
                    Input(
                        "budget",
                        f"{raw:,}",
                        b.source if dev == "CPU" else "--gpu / --rpc-node or the detected device",
                    ),
                    Input(
                        "counted",
                        "resident bytes",
                        "memory-mapped pages that CPU_REPACK copies replace are not counted",
                    ),
                ),
            )
        )
    return tuple(steps)
