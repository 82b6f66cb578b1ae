"""A bounded load test of ``membudget serve`` on loopback, shared by the tests and
``benchmarks/web_load.py``: a fixed number of requests from concurrent clients, each answer
checked, stopping by itself."""

from __future__ import annotations

import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.ggufs import Tiny, write_model

# (method, path, body, expected status, expected "schema" of a 200 answer)
MIX: tuple[tuple[str, str, bytes | None, int, str | None], ...] = (
    (
        "POST",
        "/api/plan",
        b'{"model": "qwen3-8b", "memory": "16GiB", "ctx": 8192}',
        200,
        "membudget/plan/2",
    ),
    ("POST", "/api/plan", b'{"path": "tiny.gguf", "memory": "1GiB"}', 200, "membudget/plan/2"),
    ("GET", "/api/models", None, 200, "membudget/catalog/1"),
    ("GET", "/api/hardware", None, 200, "membudget/hardware/1"),
    ("POST", "/api/plan", b'{"path": "../../../etc/passwd"}', 403, None),
    ("POST", "/api/plan", b'{"model": "qwen3-8b", "ctx": -1}', 422, None),
    ("POST", "/api/plan", b'{"model": "qwen3-8b", "pad": "' + b"x" * 70_000 + b'"}', 413, None),
    ("GET", "/api/health", None, 200, None),
)


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def serving_process(models: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``membudget serve`` on a free loopback port; yield its URL and the process (stopped
    by its PID when the block ends, if it is still running)."""
    write_model(models / "tiny.gguf", Tiny())
    env = {**os.environ, "MEMBUDGET_PROGRESS": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "membudget",
            "serve",
            "--port",
            "0",
            "--json",
            "--allow-dir",
            str(models),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "}":
                break
        info = json.loads("".join(lines))
        yield str(info["url"]), proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def serving(models: Path) -> Iterator[str]:
    """Run ``membudget serve`` on a free loopback port; yield its URL."""
    with serving_process(models) as (url, _):
        yield url


def run_load(url: str, total: int, clients: int) -> LoadResult:
    """Send ``total`` requests from ``clients`` threads (keep-alive connections), check each."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    jobs: queue.Queue[int] = queue.Queue()
    for i in range(total):
        jobs.put(i)
    result = LoadResult()
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while True:
            try:
                i = jobs.get_nowait()
            except queue.Empty:
                break
            method, path, body, status, schema = MIX[i % len(MIX)]
            headers = {"content-type": "application/json"} if body is not None else {}
            t0 = time.perf_counter()
            problem = None
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != status:
                    problem = f"{method} {path}: status {response.status}, expected {status}"
                elif schema is not None and json.loads(data).get("schema") != schema:
                    problem = f"{method} {path}: not a {schema} document"
                elif status != 200 and "error" not in json.loads(data):
                    problem = f"{method} {path}: error without a message"
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=30)
            except (OSError, http.client.HTTPException, ValueError) as e:
                problem = f"{method} {path}: {type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
            elapsed = time.perf_counter() - t0
            with lock:
                result.requests += 1
                result.latencies.append(elapsed)
                if problem is not None:
                    result.errors += 1
                    result.problems.append(problem)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - start
    return result
