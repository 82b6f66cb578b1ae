"""The CUDA grid: what ``scripts/cuda_accuracy.sh`` runs in a real CUDA ``llama-server`` on a
lent GPU machine, and what ``tests/test_cuda_logs.py`` replays from the logs it brought back.

Each case is a small model written by the tests, the ``membudget plan`` arguments that choose
its settings (``--gpu``/``--memory`` are added), and optionally flags appended to the printed
command or a bare command of llama-server's own. Run on the device machine::

    python3 -m tests.cuda_grid OUT_DIR SERVER_DIR [DEADLINE_S]

writes ``OUT_DIR/manifest.json`` and one log per case under ``OUT_DIR/logs``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

GPU = "140GiB"  # an H200 has 143,771 MiB; the plans only need a GPU larger than the models
RAM = "100GiB"
PLANS = Path(__file__).resolve().parent.parent / ".device" / "plans.json"
MODEL = "{model}"


@dataclass(frozen=True)
class CudaCase:
    id: str
    model: str
    """An ``ARCHS``/``SMALL_VOCAB`` name of ``tests/arch_models.py``, or NAME-q4_0."""
    plan: tuple[str, ...] = ()
    """``membudget plan`` arguments; the command it prints is what runs."""
    extra: tuple[str, ...] = ()
    """llama-server flags appended to the printed command (or to the bare command)."""
    bare: bool = False
    """Run ``llama-server -m FILE EXTRA`` instead of the plan's command."""
    serial: bool = False
    """Run alone (its log depends on the device's free memory: --fit)."""


GRID: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("c1000", ("--ctx", "1000")),
    ("c3000-fa-off", ("--ctx", "3000", "-fa", "off")),
    ("c4096-ub128-fa-off", ("--ctx", "4096", "-ub", "128", "-fa", "off")),
    ("c2000-q8_0-fa-on", ("--ctx", "2000", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on")),
    ("c5000-np3", ("--ctx", "5000", "-np", "3")),
    ("c5000-np3-unified-fa-off", ("--ctx", "5000", "-np", "3", "--kv-unified", "-fa", "off")),
    ("c3000-swa-full-ub256", ("--ctx", "3000", "--swa-full", "-ub", "256")),
    (
        "c700-b300-q4_0",
        ("--ctx", "700", "-b", "300", "-ub", "300", "-ctk", "q4_0", "-ctv", "q4_0"),
    ),
)
GRID_ARCHS = ("llama", "gemma3", "deepseek2", "gpt-oss", "granitehybrid", "qwen3next", "qwen3moe")
ALL_ARCHS = (
    "llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "qwen3moe", "deepseek2", "glm4moe",
    "gpt-oss", "granitehybrid", "mamba", "mamba2", "jamba", "falcon-h1", "lfm2", "rwkv6",
    "qwen3next", "qwen35", "qwen35moe", "deepseek2-mtp",
)  # fmt: skip
MOE = ("qwen3moe", "gpt-oss", "deepseek2", "glm4moe", "qwen35moe")


def _cases() -> tuple[CudaCase, ...]:
    c: list[CudaCase] = []
    ctx = ("--ctx", "2048")
    # Every layer on the GPU, each architecture, then the settings grid.
    c += [CudaCase(f"{a}/full", a, ctx) for a in ALL_ARCHS]
    c += [CudaCase(f"{a}-v512/full", f"{a}-v512", ctx) for a in GRID_ARCHS]
    c += [CudaCase(f"{a}/{name}", a, args) for a in GRID_ARCHS for name, args in GRID]
    # Part of the layers: the CPU's weights, KV and graph beside CUDA0's.
    for a in (*GRID_ARCHS, "qwen3", "qwen3-q4_0"):
        c += [CudaCase(f"{a}/ngl{n}", a, (*ctx, "-ngl", str(n))) for n in (0, 1, 3)]
    # One device named by -ts; tensor overrides; experts on the CPU.
    c += [CudaCase(f"{a}/ts1", a, (*ctx, "-ts", "1"), ("-ts", "1")) for a in ("qwen3", "qwen3moe")]
    c += [CudaCase(f"{a}/ot-exps-cpu", a, ctx, ("-ot", "exps=CPU")) for a in MOE]
    c += [CudaCase(f"{a}/cpu-moe", a, (*ctx, "-cmoe")) for a in ("qwen3moe", "gpt-oss")]
    c += [CudaCase(f"{a}/ncmoe1", a, (*ctx, "-ncmoe", "1")) for a in ("qwen3moe", "deepseek2")]
    c += [CudaCase(f"{a}/ncffn1", a, ctx, ("-ncffn", "1")) for a in ("qwen3", "qwen3moe")]
    c += [
        CudaCase("qwen3/ot-ffn-down-cpu", "qwen3", ctx, ("-ot", r"blk\.[01]\.ffn_down=CPU")),
        CudaCase("qwen3moe/ot-blk1-cpu", "qwen3moe", ctx, ("-ot", r"blk\.1\.=CPU")),
    ]
    # Load modes and host buffers.
    for a in ("qwen3", "qwen3-q4_0"):
        c += [
            CudaCase(f"{a}/lm-none-ngl2", a, (*ctx, "-ngl", "2", "-lm", "none")),
            CudaCase(f"{a}/lm-none-full", a, (*ctx, "-lm", "none")),
            CudaCase(f"{a}/no-host-ngl2", a, (*ctx, "-ngl", "2"), ("--no-host",)),
            CudaCase(f"{a}/no-repack-ngl2", a, (*ctx, "-ngl", "2"), ("-nr",)),
        ]
    c += [CudaCase("qwen3-q4_0/full", "qwen3-q4_0", ctx)]
    # What llama.cpp refuses.
    c += [
        CudaCase("deepseek2/refuse-k-q8-v-f16", "deepseek2", (), ("-ctk", "q8_0"), bare=True),
        CudaCase(
            "qwen3/refuse-v-q8-fa-off", "qwen3", (), ("-ctv", "q8_0", "-fa", "off"), bare=True
        ),
    ]
    # A bare llama-server: its own defaults, --fit on.
    bare = ("qwen3", "gemma3", "granitehybrid", "gpt-oss", "qwen3moe", "deepseek2")
    c += [CudaCase(f"{a}/bare", a, (), bare=True) for a in bare]
    c += [CudaCase(f"{a}/bare-np1", a, (), ("-np", "1"), bare=True) for a in ("qwen3", "gemma3")]
    # --fit with a target margin near the free memory, so it must cut -c and then layers:
    # FREE is replaced by the device's free MiB minus the number after it.
    for a in ("qwen3", "qwen3moe", "gemma3", "gpt-oss"):
        for left in (60, 30, 22, 16, 10, 6):
            c.append(CudaCase(f"{a}/fit-left{left}", a, (), ("-fitt", f"FREE-{left}"), True, True))
    return tuple(c)


CASES = _cases()


def make(model: str, path: Path) -> None:
    from gguf.constants import GGMLQuantizationType

    from tests.accuracy import make_model
    from tests.arch_models import ARCHS

    if model.endswith("-q4_0"):
        ARCHS[model.removesuffix("-q4_0")](path, GGMLQuantizationType.Q4_0)
    else:
        make_model(model, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plan_command(path: Path, case: CudaCase) -> list[str]:
    import contextlib
    import io

    from membudget.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        argv = ["plan", str(path), "--engine", "llama.cpp", "--gpu", GPU, "--memory", RAM]
        code = main([*argv, *case.plan, "--json"])
    text = out.getvalue()
    if code not in (0, 1):
        raise RuntimeError(f"plan exited {code}: {text[-500:]}")
    command: list[str] = json.loads(text[: text.rindex("}") + 1])["commands"]["llama.cpp"]
    return command[1:]


def _free_mib(server_dir: Path, model: Path) -> int:
    """The free device memory --fit sees (its own CUDA context already taken), from
    llama-fit-params' trace line "projected to use X MiB of device memory vs. Y MiB of free
    device memory"."""
    import re

    text, _ = _run_tool([str(server_dir / "llama-fit-params"), "-m", str(model), "-lv", "4"])
    m = re.search(r"vs\. (\d+) MiB of free device memory", text)
    if m is None:
        raise RuntimeError(f"no free memory line from llama-fit-params: {text[-400:]}")
    return int(m[1])


def run(out: Path, server_dir: Path, deadline: float) -> None:
    import os

    from tests import llama_server

    os.environ[llama_server.BIN_ENV] = str(server_dir)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    for case in CASES:
        if case.model not in paths:
            paths[case.model] = models / f"{case.model}.gguf"
            make(case.model, paths[case.model])
    results: list[dict[str, object]] = []
    # The plans, made before the run (``prepare``) or here, one at a time (the CLI writes to
    # sys.stdout, which threads would share).
    prepared = out / "plans.json"
    planned: dict[str, list[str] | str] = {}
    if PLANS.exists():
        for key, value in json.loads(PLANS.read_text()).items():
            planned[key] = [str(paths[key.split("/")[0]]) if a == MODEL else a for a in value]
    for case in CASES:
        if case.id in planned:
            continue
        try:
            planned[case.id] = (
                ["-m", str(paths[case.model])]
                if case.bare
                else _plan_command(paths[case.model], case)
            )
        except Exception as e:  # noqa: BLE001 - recorded for the replay
            planned[case.id] = f"error: {e}"
    prepared.write_text(json.dumps(planned, indent=1))

    def one(case: CudaCase) -> None:
        if time.monotonic() > deadline:
            return
        path = paths[case.model]
        entry: dict[str, object] = {**asdict(case), "sha256": _sha256(path)}
        log, status = "", str(planned[case.id])
        base = planned[case.id]
        if isinstance(base, list):
            try:
                extra = list(case.extra)
                if extra and extra[-1].startswith("FREE-"):
                    free = _free_mib(server_dir, path)
                    entry["free_mib"] = free
                    extra[-1] = str(free - int(extra[-1].removeprefix("FREE-")))
                args = [*base, *extra]
                entry["args"] = args
                log, status = _server(server_dir, args)
                fit = server_dir / "llama-fit-params"
                if case.serial and fit.exists():
                    entry["fit_params"], _ = _run_tool([str(fit), *args, "-lv", "4"])
            except Exception as e:  # noqa: BLE001 - recorded for the replay
                status = f"error: {e}"
        entry["status"] = status
        name = case.id.replace("/", "__") + ".log"
        (out / "logs" / name).write_text(log)
        entry["log"] = name
        results.append(entry)
        sys.stdout.write(f"{case.id}: {status}\n")
        sys.stdout.flush()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, [c for c in CASES if not c.serial]))
    for case in CASES:
        if case.serial:
            one(case)
    (out / "manifest.json").write_text(json.dumps(results, indent=1))


def _run_tool(argv: list[str]) -> tuple[str, int]:
    import subprocess

    p = subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=120, errors="replace"
    )
    return p.stdout + p.stderr, p.returncode


def _server(server_dir: Path, args: list[str]) -> tuple[str, str]:
    from tests.llama_server import _Process, free_port

    port = free_port()
    p = _Process(
        [
            str(server_dir / "llama-server"),
            *args,
            *("--host", "127.0.0.1", "--port", str(port), "-lv", "4", "--no-warmup"),
        ]
    )
    try:
        p.wait_for("listening on", 120)
        return p.text, "ok"
    except RuntimeError:
        return p.text, f"exit {p.proc.returncode}"
    except TimeoutError:
        return p.text, "timeout"
    finally:
        p.stop()


FIXTURE = Path(__file__).resolve().parent / "data" / "llama-server-cuda-h200.json.gz"
# The log lines a replay reads: devices, --fit, the buffers, the context, errors.
_KEEP = re.compile(
    r"common_param: +- |common_init_|common_params_fit|common_fit_params|common_memory_breakdown"
    r"|llama_prepare_model_devices|load_tensors:|llama_context:|llama_kv_cache:"
    r"|llama_memory_recurrent:|sched_reserve:|llama_init_from_model|graph_reserve| [EW] "
    r"|listening on|^-c [0-9]"
)


def trim(log: str) -> str:
    """The lines of a llama-server log that the replay reads."""
    return "".join(line for line in log.splitlines(keepends=True) if _KEEP.search(line))


def pack(results: Path) -> None:
    """Keep what the device run brought back (``RESULTS/manifest.json``, ``RESULTS/logs``) as
    the test fixture: each case's entry, its trimmed log, model paths as ``{model}``."""
    import gzip

    entries = json.loads((results / "manifest.json").read_text())
    order = {c.id: i for i, c in enumerate(CASES)}
    cases = []
    for original in sorted(entries, key=lambda e: order[e["id"]]):
        e = dict(original)
        e["log"] = trim((results / "logs" / e["log"]).read_text())
        if "fit_params" in e:
            e["fit_params"] = trim(e["fit_params"])
        if "args" in e:
            i = e["args"].index("-m")
            e["args"][i + 1] = MODEL
        cases.append(e)
    meta = (results / "gpu.txt").read_text() if (results / "gpu.txt").exists() else ""
    data = {"gpu": meta, "llama_cpp_python": "0.3.36", "cases": cases}
    FIXTURE.write_bytes(gzip.compress(json.dumps(data, indent=0).encode(), mtime=0))


def prepare() -> None:
    """Plan every case here, so the device machine only runs the commands."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        plans: dict[str, list[str]] = {}
        paths: dict[str, Path] = {}
        for case in CASES:
            if case.model not in paths:
                paths[case.model] = Path(tmp) / f"{case.model}.gguf"
                make(case.model, paths[case.model])
            path = paths[case.model]
            args = ["-m", str(path)] if case.bare else _plan_command(path, case)
            plans[case.id] = [MODEL if a == str(path) else a for a in args]
    PLANS.parent.mkdir(exist_ok=True)
    PLANS.write_text(json.dumps(plans, indent=1))


if __name__ == "__main__" and sys.argv[1:] == ["prepare"]:
    prepare()
elif __name__ == "__main__" and sys.argv[1] == "pack":
    pack(Path(sys.argv[2]))
elif __name__ == "__main__":
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else 3600.0
    run(Path(sys.argv[1]), Path(sys.argv[2]), time.monotonic() + limit)
