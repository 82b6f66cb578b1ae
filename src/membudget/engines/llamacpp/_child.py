"""Child process: load a model in the real llama.cpp (llama-cpp-python) and let it log.

Run as ``python -m membudget.engines.llamacpp._child '<json settings>'``. llama.cpp's log goes
to stderr unchanged; the parent parses it. A child process keeps llama.cpp's memory and any
crash away from the caller.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

_FLASH = {"auto": -1, "off": 0, "on": 1}


def main(argv: list[str]) -> int:
    import llama_cpp as lc  # noqa: PLC0415 - only in the child, and only with the extra

    cfg: dict[str, Any] = json.loads(argv[0])

    @lc.llama_log_callback  # type: ignore[untyped-decorator]
    def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        sys.stderr.write(text.decode("utf-8", errors="replace"))

    lc.llama_log_set(_log, ctypes.c_void_p(0))
    lc.llama_backend_init()
    mp = lc.llama_model_default_params()
    mp.n_gpu_layers = int(cfg.get("n_gpu_layers", 0))
    mp.use_extra_bufts = bool(cfg.get("repack", True))
    model = lc.llama_model_load_from_file(cfg["model"].encode(), mp)
    if not model:
        sys.stderr.write("membudget-child: llama.cpp could not load the model\n")
        return 3
    cp = lc.llama_context_default_params()
    cp.n_ctx = int(cfg["n_ctx"])
    cp.n_batch = int(cfg["n_batch"])
    cp.n_ubatch = int(cfg["n_ubatch"])
    cp.n_seq_max = int(cfg["n_parallel"])
    cp.kv_unified = bool(cfg["kv_unified"])
    cp.swa_full = bool(cfg["swa_full"])
    cp.embeddings = bool(cfg["embeddings"])
    cp.flash_attn_type = _FLASH[cfg["flash_attn"]]
    cp.type_k = int(cfg["type_k"])
    cp.type_v = int(cfg["type_v"])
    cp.n_threads = cp.n_threads_batch = 1
    ctx = lc.llama_init_from_model(model, cp)
    if not ctx:
        sys.stderr.write("membudget-child: llama.cpp could not create the context\n")
        lc.llama_model_free(model)
        return 4
    sys.stderr.flush()
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
