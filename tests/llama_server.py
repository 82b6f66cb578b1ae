"""The real ``llama-server`` and ``rpc-server`` for the tests: started on 127.0.0.1 with a free
port, read until they report their buffers and listen, stopped by their PID.

The binaries come from ``scripts/llama_server.py`` (built once per machine from the
llama-cpp-python sdist, so llama.cpp at the same commit as the C API tests), found through
``MEMBUDGET_LLAMA_SERVER_DIR`` or that script's cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

BIN_ENV = "MEMBUDGET_LLAMA_SERVER_DIR"
REQUIRE_ENV = "MEMBUDGET_REQUIRE_LLAMA_SERVER"
_READY = "listening on"  # tools/server/server.cpp logs it after "model loaded"


def binaries() -> Path | None:
    """The folder holding llama-server and rpc-server, or None when they were not built."""
    env = os.environ.get(BIN_ENV)
    if env:
        return Path(env)
    base = os.environ.get("MEMBUDGET_BUILD_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "membudget"
        / "llama-server"
    )
    built = sorted(Path(base).glob("*/llama-server"), key=lambda p: p.stat().st_mtime)
    return built[-1].parent if built else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process:
    """A child whose output is collected by a thread, so a full pipe never blocks it."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.text:
                return self.text
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(
                    f"{Path(self.argv[0]).name} exited with {self.proc.returncode} before "
                    f"{marker!r}:\n{self.text[-3000:]}"
                )
            time.sleep(0.05)
        raise TimeoutError(f"{Path(self.argv[0]).name} did not print {marker!r} in {timeout} s")

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_server(args: Sequence[str], timeout: float = 180) -> str:
    """Start ``llama-server ARGS`` on loopback, return its log once it listens, stop it."""
    return run_server_with_prompts(args, (), timeout)


def run_server_with_prompts(
    args: Sequence[str], prompts: Sequence[Sequence[int]], timeout: float = 180
) -> str:
    """Start ``llama-server ARGS`` on loopback, send each prompt (token ids) to its
    ``/completion`` endpoint in turn, and return its log once they are answered.

    -lv 4 prints llama.cpp's buffer report; --no-warmup skips the empty decode that runs after
    the buffers are reserved (the tests' random models store some vectors in F16, which a CPU
    op asserts on), so neither changes what is allocated."""
    folder = binaries()
    assert folder is not None, "llama-server was not built (scripts/llama_server.py)"
    port = free_port()
    server = _Process(
        [
            str(folder / "llama-server"),
            *args,
            *("--host", "127.0.0.1", "--port", str(port), "-lv", "4", "--no-warmup"),
        ]
    )
    try:
        server.wait_for(_READY, timeout)
        for prompt in prompts:
            body = json.dumps({"prompt": list(prompt), "n_predict": 1, "cache_prompt": True})
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/completion",
                body.encode(),
                {"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        return server.text
    finally:
        server.stop()


def _wait_port(p: _Process, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"rpc-server exited with {p.proc.returncode}:\n{p.text[-2000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"rpc-server did not listen on port {port} in {timeout} s")


@contextlib.contextmanager
def rpc_servers(count: int) -> Iterator[list[str]]:
    """``count`` rpc-servers (CPU devices) on loopback; yields their ``host:port``, in the
    order that makes them ``RPC0``, ``RPC1``, ... of a llama-server given ``--rpc``."""
    folder = binaries()
    assert folder is not None, "rpc-server was not built (scripts/llama_server.py)"
    started: list[_Process] = []
    endpoints: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            p = _Process([str(folder / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(port)])
            started.append(p)
            _wait_port(p, port, 30)
            endpoints.append(f"127.0.0.1:{port}")
        yield endpoints
    finally:
        for p in started:
            p.stop()
