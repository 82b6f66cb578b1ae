"""Load a model in the real llama.cpp and collect its buffer report.

Needs the ``llamacpp`` extra (``pip install 'membudget[llamacpp]'``, which builds
llama-cpp-python from source). The model is loaded in a child process.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from membudget.engines.llamacpp.profile import LlamaCppSettings
from membudget.errors import MembudgetError
from membudget.kv import cache_type

__all__ = ["INSTALL_HINT", "LlamaCppUnavailableError", "llamacpp_available", "run_llamacpp"]

INSTALL_HINT = (
    "validation needs llama-cpp-python: pip install 'membudget[llamacpp]' "
    "(it builds llama.cpp from source, about 5 minutes on 2 cores)"
)


class LlamaCppUnavailableError(MembudgetError):
    """Raised when llama-cpp-python is not installed."""


def llamacpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def run_llamacpp(
    model: str | Path,
    settings: LlamaCppSettings,
    *,
    n_gpu_layers: int = 0,
    repack: bool = True,
    timeout: float = 600.0,
) -> str:
    """Load ``model`` with ``settings`` in llama.cpp and return everything it logged."""
    if not llamacpp_available():
        raise LlamaCppUnavailableError(INSTALL_HINT)
    cfg = {
        "model": str(model),
        "n_ctx": settings.n_ctx,
        "n_batch": settings.n_batch,
        "n_ubatch": settings.n_ubatch,
        "n_parallel": settings.n_parallel,
        "kv_unified": settings.kv_unified,
        "swa_full": settings.swa_full,
        "embeddings": settings.embeddings,
        "flash_attn": settings.flash_attn,
        "type_k": cache_type(settings.cache_type_k).type_id,
        "type_v": cache_type(settings.cache_type_v).type_id,
        "n_gpu_layers": n_gpu_layers,
        "repack": repack,
    }
    done = subprocess.run(  # noqa: S603 - our own module, run with this interpreter
        [sys.executable, "-m", "membudget.engines.llamacpp._child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise MembudgetError(
            f"llama.cpp failed to load {str(model)!r} (exit {done.returncode}): {tail}"
        )
    return done.stderr
