"""Run the real vLLM engine (CPU build) over the tiny-model zoo, for the live tests and to
record the fixtures the fast tests replay.

``python tests/vllm_live.py [MODEL ...]`` writes ``tests/data/vllm-cpu.json.gz``: for each zoo
model its ``config.json`` as transformers saved it and, for every setting of :data:`GRID`,
what the engine decided (or the error that refused it). The vLLM environment comes from
``scripts/vllm_cpu.py`` (or ``MEMBUDGET_VLLM_PYTHON``).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.vllm_zoo import ZOO  # noqa: E402

FIXTURE = HERE / "data" / "vllm-cpu.json.gz"
MIB = 1 << 20

# Each setting is a vllm.LLM keyword set; "boundary" also starts the engine with exactly the
# bytes the first run's max_model_len needs, and with one byte fewer.
GRID: list[dict[str, Any]] = [
    {"kv_cache_memory_bytes": 4 * MIB, "max_model_len": 2048, "boundary": True},
    {"kv_cache_memory_bytes": 1 * MIB, "max_model_len": 8192},
    {"kv_cache_memory_bytes": 3 * MIB, "max_model_len": -1},
    {"kv_cache_memory_bytes": 4 * MIB, "max_model_len": 2048, "block_size": 32},
    {"kv_cache_memory_bytes": 4 * MIB, "max_model_len": 4096, "max_num_batched_tokens": 512},
    {"kv_cache_memory_bytes": 4 * MIB, "max_model_len": 2048, "enable_prefix_caching": False},
    {"kv_cache_memory_bytes": 4 * MIB, "max_model_len": 2048, "kv_cache_dtype": "fp8"},
    {"kv_cache_memory_bytes": 4 * MIB, "max_model_len": 2048, "num_gpu_blocks_override": 20},
    {
        "kv_cache_memory_bytes": 4 * MIB,
        "max_model_len": 2048,
        "disable_hybrid_kv_cache_manager": True,
    },
    {"kv_cache_memory_bytes": 4 * MIB, "max_model_len": 2048, "dtype": "float32"},
]


def vllm_python() -> str:
    """The vLLM environment's interpreter: ``MEMBUDGET_VLLM_PYTHON``, else the one
    ``scripts/vllm_cpu.py`` builds (and prints)."""
    found = os.environ.get("MEMBUDGET_VLLM_PYTHON")
    if found:
        return found
    done = subprocess.run(
        [sys.executable, str(HERE.parent / "scripts" / "vllm_cpu.py")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def run_model(python: str, name: str, grid: list[dict[str, Any]]) -> dict[str, Any]:
    """Start the engine on zoo model ``name`` for every setting of ``grid``."""
    model_type, config = ZOO[name]
    with tempfile.TemporaryDirectory(prefix=f"vllm-{name}-") as tmp:
        job = {"dir": tmp, "model_type": model_type, "config": config, "runs": grid}
        done = subprocess.run(
            [python, str(HERE / "vllm_harness.py")],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"vLLM harness failed on {name}: {done.stderr[-2000:]}")
    return {
        "model_type": model_type,
        "config": lines[0]["config"],
        "n_params": lines[0]["n_params"],
        "runs": lines[1:],
    }


def main(args: list[str]) -> None:
    """``[--params-only] [MODEL ...]``: every zoo model (or those named) under the grid; with
    ``--params-only`` only the checkpoints are built again, for their parameter counts."""
    params_only = "--params-only" in args
    names = [a for a in args if a != "--params-only"]
    python = vllm_python()
    data: dict[str, Any] = {"vllm": "0.32.0", "platform": "cpu", "models": {}}
    if FIXTURE.exists() and (names or params_only):
        with gzip.open(FIXTURE, "rt") as f:
            data = json.load(f)
    for name in names or list(ZOO):
        print(f"{name} ...", file=sys.stderr, flush=True)
        if params_only:
            built = run_model(python, name, [])
            data["models"][name]["n_params"] = built["n_params"]
            continue
        data["models"][name] = run_model(python, name, GRID)
    with gzip.open(FIXTURE, "wt") as f:
        json.dump(data, f, indent=0, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
