"""``recommend``: the settings the reference auto-tuner recommends, done properly: each one
chosen from the model, the plan and the machine, with the reason for the choice."""

from __future__ import annotations

from dataclasses import dataclass, replace

from membudget.engines.llamacpp import LlamaCppRules, LlamaCppSettings, estimate_llamacpp
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.plan import Budget, fits, max_context

__all__ = ["Recommendation", "recommend"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    setting: str
    value: str
    flags: tuple[str, ...]
    reason: str


def recommend(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    hardware: Hardware | None,
    rules: LlamaCppRules | None = None,
) -> list[Recommendation]:
    """KV-cache type, flash attention, prefix caching, batch sizes and threads for llama.cpp."""
    out: list[Recommendation] = []
    f16 = max_context(spec, replace(settings, flash_attn="on"), budget, rules)
    q8 = max_context(
        spec,
        replace(settings, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on"),
        budget,
        rules,
    )
    wanted = settings.n_ctx or spec.n_ctx_train
    if spec.n_layer and not [layer for layer in spec.layers if layer.has_kv]:
        out.append(
            Recommendation(
                "KV cache type", "f16", (), "the model keeps no KV cache (recurrent state only)"
            )
        )
    elif f16 >= wanted:
        out.append(
            Recommendation(
                "KV cache type",
                "f16",
                ("-ctk", "f16", "-ctv", "f16"),
                f"the asked context ({wanted:,} tokens) fits at full precision; f16 keeps attention exact",
            )
        )
    else:
        out.append(
            Recommendation(
                "KV cache type",
                "q8_0",
                ("-ctk", "q8_0", "-ctv", "q8_0"),
                f"f16 fits {f16:,} tokens, q8_0 fits {q8:,} of the {wanted:,} asked; 8.5 bits per value "
                "costs next to no quality",
            )
        )
    out.append(
        Recommendation(
            "flash attention",
            "on",
            ("-fa", "on"),
            "it never materialises the n_kv x n_tokens x n_head score matrix, so the compute buffer "
            "stays flat as the context grows, and a quantised V cache requires it",
        )
    )
    if settings.n_parallel > 1:
        out.append(
            Recommendation(
                "prefix caching",
                "on",
                ("--cache-reuse", "256"),
                f"{settings.n_parallel} parallel sequences usually share a system prompt; reusing "
                "cached prefixes skips recomputing them (vLLM: --enable-prefix-caching, on by default)",
            )
        )
    else:
        out.append(
            Recommendation(
                "prefix caching",
                "on",
                ("--cache-reuse", "256"),
                "a chat resends the whole conversation each turn; reuse the cached prefix",
            )
        )
    bigger = replace(settings, n_ubatch=min(2048, settings.n_batch), flash_attn="on")
    if settings.gpus and fits(estimate_llamacpp(spec, bigger, rules), budget):
        out.append(
            Recommendation(
                "batch size",
                f"{bigger.n_ubatch}",
                ("-b", str(settings.n_batch), "-ub", str(bigger.n_ubatch)),
                "the GPU budget has room for a larger micro-batch, which speeds up prompt processing",
            )
        )
    else:
        out.append(
            Recommendation(
                "batch size",
                f"{settings.n_ubatch}",
                ("-b", str(settings.n_batch), "-ub", str(settings.n_ubatch)),
                "the default micro-batch keeps the compute buffer small; larger ones mostly help GPUs",
            )
        )
    if hardware is not None:
        cores = hardware.cpu.physical_cores
        out.append(
            Recommendation(
                "threads",
                str(cores),
                ("-t", str(cores)),
                f"one thread per physical core ({hardware.cpu.logical_cores} logical); hyper-threads "
                f"share the same {hardware.cpu.simd} units and memory bandwidth, so more threads only contend",
            )
        )
    return out
