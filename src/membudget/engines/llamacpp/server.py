"""What llama-server adds in host memory while it runs: nothing it allocates at start, but
memory that grows with use and that a plan must leave room for.

Read from llama.cpp 0c1e570 (the tree llama-cpp-python 0.3.36 vendors):

- The prompt cache (tools/server/server-task.cpp, ``server_prompt_cache``): the states of
  earlier prompts, kept to reuse their prefix, up to ``--cache-ram`` MiB (common/common.h
  ``cache_ram_mib`` = 8192; -1 no limit, 0 off); past the limit the oldest are evicted.
- Context checkpoints (tools/server/server-context.cpp, ``create_checkpoint``): for a model whose
  cache cannot be rolled back token by token (a recurrent state, or a sliding-window cache
  without ``--swa-full``), every slot keeps up to ``--ctx-checkpoints`` copies (common/common.h
  ``n_ctx_checkpoints`` = 32) of that part of its sequence's state
  (``LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY``): the recurrent state, and the sliding-window cells
  the sequence holds, at most its window and one batch.
"""

from __future__ import annotations

from membudget.engines.llamacpp.profile import LlamaCppEstimate

__all__ = ["CTX_CHECKPOINTS", "PROMPT_CACHE_MIB", "checkpoint_bytes"]

PROMPT_CACHE_MIB = 8192  # common/common.h: cache_ram_mib
CTX_CHECKPOINTS = 32  # common/common.h: n_ctx_checkpoints

# A checkpoint's serialised header (llama-kv-cache.cpp / llama-memory-recurrent.cpp
# state_write: stream and cell counts; per layer and tensor its type and row sizes, at most 32
# bytes) and each cell's metadata (position, sequence count, one sequence id: 4 bytes each).
_CELL_META = 12
_LAYER_HEADER = 64


def checkpoint_bytes(e: LlamaCppEstimate) -> int:
    """The most host memory one context checkpoint of one slot takes, or 0 where llama-server
    makes none: the sequence's recurrent state, and its sliding-window cells (at most the
    window, never more than a stream holds)."""
    spec, s = e.spec, e.settings
    recurrent = spec.recurrent is not None
    swa = spec.sliding_window > 0 and not s.swa_full
    if not (recurrent or swa):
        return 0
    size = _LAYER_HEADER * (spec.n_layer + 1)
    if recurrent:
        size += e.recurrent_state_bytes // max(e.n_seq_max, 1)
    if swa and e.swa_size:
        per_cell = e.kv_swa_bytes // (e.swa_size * max(e.n_stream, 1))
        cells = min(e.swa_size, spec.sliding_window)
        size += cells * (per_cell + _CELL_META)
    return size
