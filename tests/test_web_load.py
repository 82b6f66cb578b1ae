"""The server under concurrent load on loopback keeps answering correctly, and binds to
loopback unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("uvicorn")

from tests.loadtest import run_load, serving, serving_process


def test_serves_on_loopback_by_default_and_survives_concurrent_load(tmp_path: Path) -> None:
    with serving(tmp_path) as url:
        assert urlsplit(url).hostname == "127.0.0.1"
        result = run_load(url, total=240, clients=12)
    assert result.requests == 240
    assert result.errors == 0, result.problems[:5]


def test_a_busy_port_is_one_line_and_exit_2() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "membudget", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"Cannot serve on 127.0.0.1:{port}" in lines[0]


def test_sigterm_stops_the_server_within_a_second(tmp_path: Path) -> None:
    import os
    import signal
    import time

    with serving_process(tmp_path) as (url, proc):
        assert url.startswith("http://127.0.0.1:")
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - started < 1.0
