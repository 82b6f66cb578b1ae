"""llama.cpp as membudget models it, one module a concern:

- :mod:`.profile`: the settings, the rules and the estimate of every buffer per device (this
  package re-exports it: ``from membudget.engines.llamacpp import estimate_llamacpp``);
- :mod:`.layout`: per-slot weight and cache tables and the memoised compute figure the
  estimate and the placer share; :mod:`.memo`: what every module computes once per model;
- :mod:`.devices`: which device holds each layer and tensor, CUDA's allocation rules, host pins;
- :mod:`.ggml`: a shape-only ggml graph and the replay of ggml-alloc (the allocator);
  :mod:`.reduce`: a deep model's one-backend buffer from a short graph, with its proof;
- :mod:`.graph`, :mod:`.ops`, :mod:`.recurrent`: the worst-case graphs llama.cpp reserves,
  rebuilt op by op; :mod:`.phases`: the phase model for architectures without a builder;
- :mod:`.log`: llama.cpp's buffer report parsed from its log; :mod:`.validate`: estimate
  against report; :mod:`.run` and :mod:`._child`: loading a model in the real llama.cpp.
"""

from membudget.engines.llamacpp.profile import (
    LOAD_MODES,
    Buffer,
    BufferKind,
    ComputeMethod,
    FlashAttn,
    LlamaCppEstimate,
    LlamaCppRules,
    LlamaCppSettings,
    LoadMode,
    estimate_llamacpp,
    graph_bytes,
    host_compute_bytes,
    host_pins,
    output_bytes,
    repack_types,
    repack_types_for,
    resolve,
    scheduled_exactly,
    scheduled_split,
)

__all__ = [
    "LOAD_MODES",
    "Buffer",
    "BufferKind",
    "ComputeMethod",
    "FlashAttn",
    "LlamaCppEstimate",
    "LlamaCppRules",
    "LlamaCppSettings",
    "LoadMode",
    "estimate_llamacpp",
    "graph_bytes",
    "host_compute_bytes",
    "host_pins",
    "output_bytes",
    "repack_types",
    "repack_types_for",
    "resolve",
    "scheduled_exactly",
    "scheduled_split",
]
