"""vLLM (V1 engine): its KV-cache decision (:mod:`.kvcache`, exact, checked against the real
engine's CPU build) and its memory budget on a device (:mod:`.profile`)."""

from membudget.engines.vllm.kvcache import (
    CacheGroup,
    CacheSpec,
    KvCacheDecision,
    KvCacheOptions,
    decide_kv_cache,
    layer_specs,
)
from membudget.engines.vllm.profile import (
    KvCacheDtype,
    VllmEstimate,
    VllmSettings,
    activation_bytes,
    check_vllm_parallel,
    estimate_vllm,
    max_model_len,
    vllm_command,
)

__all__ = [
    "CacheGroup",
    "CacheSpec",
    "KvCacheDecision",
    "KvCacheDtype",
    "KvCacheOptions",
    "VllmEstimate",
    "VllmSettings",
    "activation_bytes",
    "check_vllm_parallel",
    "decide_kv_cache",
    "estimate_vllm",
    "layer_specs",
    "max_model_len",
    "vllm_command",
]
