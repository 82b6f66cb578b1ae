#!/usr/bin/env python3
"""Run the whole test suite from a fresh checkout, needing only python3.

Creates ``.venv`` beside the checkout if it is missing, installs the package with its ``test``
and ``llamacpp`` extras into it (llama-cpp-python builds from source the first time; pip's wheel
cache makes later installs quick), then runs ruff (lint and format check), mypy --strict and
pytest. The accuracy suite against llama.cpp is required here, never skipped. Extra arguments go
to pytest. The exit status is the first failing step's, or 0.
"""

from __future__ import annotations

import os
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


def main() -> None:
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
    step("ruff check", python, "-m", "ruff", "check", ".")
    step("ruff format --check", python, "-m", "ruff", "format", "--check", ".")
    step("mypy --strict", python, "-m", "mypy")
    step("pytest", python, "-m", "pytest", *sys.argv[1:])


if __name__ == "__main__":
    main()
