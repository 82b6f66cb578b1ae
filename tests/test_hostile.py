"""Hostile input: every case of the adversarial corpus makes the CLI exit 2 with one clear
line on stderr naming the file and the problem, in under a second and 100 MB, and the model
file is left exactly as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile import CASES, Case

TIME_LIMIT_S = 1.0
MEMORY_LIMIT_BYTES = 100 * 2**20


def _snapshot(path: Path) -> tuple[int, int, bytes] | None:
    if not path.is_file() or path.is_symlink() or path.stat().st_size > 2**20:
        return None
    st = path.stat()
    return st.st_mtime_ns, st.st_mode, path.read_bytes()


# The CLI runs as a grandchild: a fresh process forked from a small launcher, so its peak RSS
# is its own (a child forked straight from pytest inherits pytest's high-water mark).
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.monotonic()
proc = subprocess.Popen([sys.executable, "-m", "membudget", "inspect", sys.argv[1]])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = 0
with open(sys.argv[2], "w") as fh:
    json.dump({"status": os.waitstatus_to_exitcode(status), "rss": usage.ru_maxrss * 1024,
               "seconds": time.monotonic() - start}, fh)
"""


def _run(arg: str, report: Path) -> tuple[int, str, str, float, int]:
    """Run ``membudget inspect arg``; return status, stdout, stderr, seconds and peak RSS."""
    env = {k: v for k, v in os.environ.items() if k != "MEMBUDGET_TRACEBACK"}
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, arg, str(report)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,  # a hang fails the test instead of blocking it
        check=False,
    )
    assert done.returncode == 0, done.stderr
    r = json.loads(report.read_text())
    return r["status"], done.stdout, done.stderr, r["seconds"], r["rss"]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    kinds = {c.id.split("-")[0] for c in CASES}
    assert {"gguf", "st", "config", "catalogue", "special"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    arg = case.build(tmp_path)
    target = Path(arg)
    before = _snapshot(target)
    code, out, err, elapsed, rss = _run(arg, tmp_path.parent / f"{tmp_path.name}.report.json")
    assert code == case.exit_code, err
    if case.exit_code == 2:
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("membudget: error: ")
        assert "Traceback" not in err
        assert case.fragment in lines[0], lines[0]
        if "/" in arg:
            assert Path(arg).name in lines[0] or case.id.startswith("config-nested"), lines[0]
    assert elapsed < TIME_LIMIT_S, f"{elapsed:.2f} s, interpreter start-up included"
    assert rss < MEMORY_LIMIT_BYTES, f"peak RSS {rss / 2**20:.1f} MiB"
    assert _snapshot(target) == before, "the model file was modified"
