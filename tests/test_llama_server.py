"""Printed commands, run as printed in the real llama-server, allocate what the plan says.

Each case plans a small model written by the tests (``--memory 64GiB``, CPU only), runs the
``llama-server`` command the plan prints, exactly as printed, on 127.0.0.1, and compares every
buffer the server reports with the plan's, to llama.cpp's printed 0.01 MiB; ``membudget
validate --from-log`` must accept the same log. The binaries are built from the llama-cpp-python
sdist by ``scripts/llama_server.py`` (``python3 scripts/test.py`` does it); without them these
tests skip, unless MEMBUDGET_REQUIRE_LLAMA_SERVER=1 (CI sets it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from membudget.cli import main
from membudget.engines.llamacpp.log import parse_llamacpp_log
from tests.accuracy import make_model
from tests.llama_server import REQUIRE_ENV, binaries, run_server

pytestmark = pytest.mark.llamaserver

if binaries() is None:
    if os.environ.get(REQUIRE_ENV) == "1":
        raise RuntimeError(f"llama-server is required ({REQUIRE_ENV}=1) but was not built")
    pytest.skip(
        "llama-server was not built (python scripts/llama_server.py)", allow_module_level=True
    )


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def _plan(*args: str) -> dict[str, Any]:
    """``membudget plan ARGS --json``; the llama.cpp engine (the settings as given) unless ARGS
    name another."""
    engine = () if "--engine" in args else ("--engine", "llama.cpp")
    code, out = _cli("plan", *args, *engine, "--json")
    assert code in (0, 1), out
    data: dict[str, Any] = json.loads(out[: out.rindex("}") + 1])
    return data


def _planned(data: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Bytes per (device, kind) as the plan says llama.cpp reports them."""
    out: dict[tuple[str, str], int] = {}
    for dev in data["devices"]:
        for b in dev["buffers"]:
            kind = "kv" if b["kind"] == "kv_swa" else b["kind"]
            key = (dev["device"], kind)
            out[key] = out.get(key, 0) + b["bytes"]
    return out


def _reported(log: str) -> dict[tuple[str, str], tuple[float, int]]:
    """(MiB, number of lines) per (device, kind) from the server's log."""
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for b in parse_llamacpp_log(log):
        kind = "kv" if b.kind == "kv_swa" else b.kind
        dev = b.device.split("[", 1)[0]  # RPC0[127.0.0.1:50052] is RPC0
        mib, n = out.get((dev, kind), (0.0, 0))
        out[(dev, kind)] = (mib + b.mib, n + 1)
    return out


def assert_same_buffers(data: dict[str, Any], log: str, *, compute: bool = True) -> None:
    """Every buffer the plan says equals the server's to its printed 0.01 MiB (each printed
    figure is rounded, so several lines of one kind may add their rounding); ``compute=False``
    leaves out the compute buffers (not modelled yet for a graph split over backends)."""
    kinds = {k for k in _reported(log) if compute or k[1] != "compute"}
    planned = {k: v for k, v in _planned(data).items() if v and (compute or k[1] != "compute")}
    reported = {k: v for k, v in _reported(log).items() if v[0] and k in kinds}
    assert set(planned) == set(reported), (sorted(planned), sorted(reported))
    for key, (mib, lines) in reported.items():
        assert abs(planned[key] / 2**20 - mib) <= 0.005 * lines + 1e-9, (
            key,
            planned[key] / 2**20,
            mib,
        )


def _run_with_workers(data: dict[str, Any], workers: int) -> str:
    """The plan's RPC command with ``workers`` rpc-servers on loopback as its devices."""
    from tests.llama_server import rpc_servers

    command = data["commands"]["llama.cpp_rpc"][-1]
    with rpc_servers(workers) as endpoints:
        command[command.index("--rpc") + 1] = ",".join(endpoints)
        return run_server(command[1:])


CASES = [
    pytest.param("qwen3", ["--ctx", "2048"], id="qwen3"),
    pytest.param("gemma3", ["--ctx", "3000", "--parallel", "2"], id="gemma3 SWA, 2 sequences"),
    pytest.param(
        "qwen3moe", ["--ctx", "4096", "-ctk", "q8_0", "-ctv", "q8_0"], id="qwen3moe q8_0 cache"
    ),
    pytest.param("granitehybrid", ["--ctx", "2048", "--parallel", "3"], id="granite hybrid"),
    pytest.param("deepseek2", ["--ctx", "2048", "-fa", "off"], id="deepseek2 MLA, no FA"),
    pytest.param(
        "gemma2", ["--ctx", "1024", "--parallel", "4", "--kv-unified"], id="gemma2 unified"
    ),
    pytest.param("llama4", ["--ctx", "3000", "--parallel", "2"], id="llama4 chunked, 2 sequences"),
]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-zoo")


def _model(zoo: Path, arch: str) -> Path:
    path = zoo / f"{arch}.gguf"
    if not path.exists():
        make_model(arch, path)
    return path


@pytest.mark.parametrize(("arch", "args"), CASES)
def test_the_printed_command_allocates_what_the_plan_says(
    zoo: Path, arch: str, args: list[str]
) -> None:
    path = _model(zoo, arch)
    data = _plan(str(path), "--memory", "64GiB", *args)
    command = data["commands"]["llama.cpp"]
    assert command[:3] == ["llama-server", "-m", str(path)]
    log = run_server(command[1:])
    assert_same_buffers(data, log)
    log_file = zoo / f"{arch}-{len(args)}.log"
    log_file.write_text(log)
    code, out = _cli("validate", str(path), "--from-log", str(log_file), *args)
    assert code == 0, out


@pytest.mark.parametrize(
    ("arch", "args", "workers"),
    [
        pytest.param("qwen3", ["--ctx", "2048"], 2, id="qwen3 on two workers"),
        pytest.param(
            "qwen3", ["--ctx", "2048", "-ngl", "5", "-ts", "3,2"], 2, id="qwen3 -ngl 5 -ts 3,2"
        ),
        pytest.param("gemma3", ["--ctx", "2048", "-ngl", "3"], 1, id="gemma3, one worker, -ngl 3"),
        pytest.param(
            "gemma3", ["--ctx", "3000", "--parallel", "2"], 2, id="gemma3 SWA on two workers"
        ),
        pytest.param(
            "qwen3moe",
            ["--ctx", "2048", "--n-cpu-moe", "2"],
            2,
            id="qwen3moe --n-cpu-moe 2",
        ),
        pytest.param(
            "granitehybrid", ["--ctx", "2048", "--parallel", "2"], 3, id="granite on three"
        ),
        pytest.param("deepseek2", ["--ctx", "2048"], 2, id="deepseek2 MLA on two workers"),
        pytest.param("qwen3next", ["--ctx", "2048"], 2, id="qwen3next on two workers"),
        pytest.param("llama4", ["--ctx", "2048", "-ngl", "3"], 1, id="llama4, one worker, -ngl 3"),
        pytest.param("llama4", ["--ctx", "2048"], 2, id="llama4 on two workers"),
        pytest.param(
            "granite", ["--ctx", "2048", "-ngl", "3"], 1, id="granite, one worker, -ngl 3"
        ),
        pytest.param("olmo2-swa", ["--ctx", "2048"], 2, id="olmo2 SWA on two workers"),
        pytest.param("minimax-m2", ["--ctx", "2048", "-ngl", "3"], 2, id="minimax-m2 -ngl 3"),
        pytest.param(
            "qwen3moe", ["--ctx", "2048", "-ot", "exps=CPU"], 2, id="qwen3moe -ot exps=CPU"
        ),
        pytest.param(
            "qwen3",
            ["--ctx", "2048", "-ot", r"blk\.[01]\.ffn_down=CPU"],
            1,
            id="qwen3 -ot ffn_down of two layers",
        ),
        pytest.param("gpt-oss", ["--ctx", "2048", "-ncffn", "1"], 2, id="gpt-oss -ncffn 1"),
        pytest.param("qwen3", ["--ctx", "2048", "-ncffn", "2"], 2, id="qwen3 -ncffn 2"),
    ],
)
def test_rpc_workers_hold_what_the_plan_says(
    zoo: Path, arch: str, args: list[str], workers: int
) -> None:
    """llama.cpp's RPC backend as the multi-device stand-in: every printed command, its worker
    addresses put in, places weights, KV cache, output and compute buffers exactly as planned,
    RPC servers first. The compute buffers follow llama.cpp's scheduler: each split's input
    copies, four of each (and of every graph input) when several workers hold every layer
    (pipeline parallelism), each layer's norm on its layer's device, the host's share."""

    path = _model(zoo, arch)
    data = _plan(str(path), "--memory", "64GiB", *args, *["--rpc-node", "1GiB:cpu"] * workers)
    command = data["commands"]["llama.cpp_rpc"][-1]
    assert command[:3] == ["llama-server", "-m", str(path)]
    assert data["engine_rules"]["compute_method"] == "scheduled"
    assert not any("compute buffers" in w for w in data["warnings"])
    assert_same_buffers(data, _run_with_workers(data, workers))


def test_the_mapped_span_when_repacked_tensors_sit_at_its_edges(zoo: Path) -> None:
    """A Q4_0 model: its matrices (output.weight, the last tensor, among them) go to CPU_REPACK
    on a CPU with AVX2, so CPU_Mapped spans token_embd to the last norm, repacked tensors in
    between included; and, with two workers, offloaded layers in between too."""
    from gguf import GGMLQuantizationType

    from tests.arch_models import ARCHS

    path = zoo / "qwen3-q4_0.gguf"
    if not path.exists():
        ARCHS["qwen3"](path, GGMLQuantizationType.Q4_0)
    data = _plan(str(path), "--memory", "64GiB", "--ctx", "2048")
    assert_same_buffers(data, run_server(data["commands"]["llama.cpp"][1:]))
    data = _plan(
        str(path), "--memory", "64GiB", "--ctx", "2048", "-ngl", "2", "--rpc-node", "1GiB:cpu"
    )
    assert_same_buffers(data, _run_with_workers(data, 1))


def test_load_mode_none_reads_the_weights_into_memory(zoo: Path) -> None:
    """``-lm none``: the CPU's weights in a buffer of their own (the repacked tensors' originals
    not kept), so llama.cpp reports no span and nothing twice; what must fit is unchanged."""
    from gguf import GGMLQuantizationType

    from tests.arch_models import ARCHS

    path = zoo / "qwen3-q4_0.gguf"
    if not path.exists():
        ARCHS["qwen3"](path, GGMLQuantizationType.Q4_0)
    mapped = _plan(str(path), "--memory", "64GiB", "--ctx", "2048")
    data = _plan(str(path), "--memory", "64GiB", "--ctx", "2048", "-lm", "none")
    assert data["commands"]["llama.cpp"][-2:] == ["-lm", "none"]
    assert data["memory"]["needed_bytes"] == mapped["memory"]["needed_bytes"]
    assert data["memory"]["total_bytes"] < mapped["memory"]["total_bytes"]
    assert_same_buffers(data, run_server(data["commands"]["llama.cpp"][1:]))


def test_cpu_moe_keeps_every_expert_on_the_cpu(zoo: Path) -> None:

    path = _model(zoo, "qwen3moe")
    data = _plan(str(path), "--memory", "64GiB", "--ctx", "2048", "-cmoe", "--rpc-node", "1GiB:cpu")
    command = data["commands"]["llama.cpp_rpc"][-1]
    assert "--n-cpu-moe" in command
    assert_same_buffers(data, _run_with_workers(data, 1))


@pytest.mark.parametrize("arch", ["qwen3", "gemma3", "granitehybrid", "gpt-oss"])
def test_a_bare_llama_server_allocates_what_the_llama_server_engine_says(
    zoo: Path, arch: str
) -> None:
    """``llama-server -m FILE`` with nothing else (its -c 0, -np auto: 4 slots, one unified
    cache; --fit changes nothing without a GPU) against ``--engine llama-server`` with no
    settings; and the engine's printed command, run as printed, gives the same."""
    path = _model(zoo, arch)
    data = _plan(str(path), "--engine", "llama-server", "--memory", "64GiB")
    assert data["settings"]["n_parallel"] == 4
    assert data["settings"]["kv_unified"] is True
    assert_same_buffers(data, run_server(["-m", str(path)]))
    assert_same_buffers(data, run_server(data["commands"]["llama.cpp"][1:]))


REFUSAL_ARCHS = ("qwen3", "gemma3", "deepseek2", "granitehybrid", "gpt-oss", "qwen3next")
REFUSAL_FLAGS = [
    pytest.param(["-ctk", "q8_0"], id="K q8_0, V f16"),
    pytest.param(["-ctv", "q8_0"], id="K f16, V q8_0"),
    pytest.param(["-ctk", "q8_0", "-ctv", "q8_0", "-fa", "off"], id="q8_0 without FA"),
    pytest.param(["-ctk", "q4_0", "-ctv", "q4_0", "-fa", "on"], id="q4_0 with FA"),
    pytest.param(["-ctk", "q8_0", "-ctv", "q4_0", "-fa", "auto"], id="q8_0/q4_0, FA auto"),
    pytest.param(["-ctk", "f16", "-ctv", "f16", "-fa", "off", "--swa-full"], id="f16, swa-full"),
]


@pytest.mark.parametrize("flags", REFUSAL_FLAGS)
@pytest.mark.parametrize("arch", REFUSAL_ARCHS)
def test_membudget_refuses_what_llama_server_refuses(
    zoo: Path, arch: str, flags: list[str]
) -> None:
    """The same settings, planned and run: membudget exits 2 exactly when llama-server stops
    before listening, and its reason names what llama.cpp's does."""
    path = _model(zoo, arch)
    args = ["-m", str(path), "-c", "1024", "-np", "1", *flags]
    try:
        run_server(args)
        refused = ""
    except RuntimeError as e:
        refused = "\n".join(line for line in str(e).splitlines() if " E " in line)
    code, out = _cli("plan", str(path), "--engine", "llama.cpp", "--memory", "64GiB", *args[2:])
    assert (code == 2) == bool(refused), (out, refused)
    if refused:
        if "different K" in refused:
            assert "different K and V cache types" in out
        if "quantized V cache requires flash_attn" in refused:
            assert "allows only with flash attention on" in out


@pytest.mark.parametrize("mode", ["mlock", "mmap+mlock", "dio"])
def test_the_other_load_modes_allocate_what_the_plan_says(zoo: Path, mode: str) -> None:
    """``-lm mlock`` reads the weights in as ``none`` does and locks them; ``mmap+mlock`` maps
    the file as ``mmap`` does and locks the span (nothing of it reclaimable); ``dio`` reads."""
    path = _model(zoo, "qwen3")
    data = _plan(str(path), "--memory", "64GiB", "--ctx", "2048", "-lm", mode)
    assert data["commands"]["llama.cpp"][-2:] == ["-lm", mode]
    assert_same_buffers(data, run_server(data["commands"]["llama.cpp"][1:]))
    if mode != "dio":
        model = [b for d in data["devices"] for b in d["buffers"] if b["kind"] == "model"]
        assert all(not b.get("reclaimable_bytes") for b in model)


def test_yarn_scaling_stretches_the_trained_context(zoo: Path) -> None:
    """``--rope-scaling yarn --rope-scale 2`` with no -c: llama-server takes twice the trained
    context (n_ctx_train = n_ctx_orig_yarn / rope_freq_scale), and so does the plan; its
    printed command passes the flags on and allocates the same."""
    path = _model(zoo, "qwen3")
    rope = ["--rope-scaling", "yarn", "--rope-scale", "2"]
    data = _plan(str(path), "--engine", "llama-server", "--memory", "64GiB", *rope)
    assert data["settings"]["n_ctx"] == 2 * 4096
    assert data["commands"]["llama.cpp"][-4:] == rope
    assert_same_buffers(data, run_server(["-m", str(path), *rope]))
    assert_same_buffers(data, run_server(data["commands"]["llama.cpp"][1:]))


@pytest.mark.parametrize(
    "arch", ["qwen3", "gemma3", "granitehybrid", "deepseek2", "qwen3next", "llama4", "olmo2"]
)
def test_one_worker_with_every_layer_is_scheduled_exactly(zoo: Path, arch: str) -> None:
    """Every layer on one RPC worker: the worker's compute buffer and the host's (the graph
    inputs and token rows llama.cpp's scheduler leaves on the CPU) equal the log's, as they do
    on a CUDA device (tests/test_cuda_logs.py)."""
    path = _model(zoo, arch)
    data = _plan(str(path), "--memory", "64GiB", "--ctx", "2048", "--rpc-node", "1GiB:cpu")
    assert not any("compute buffers" in w for w in data["warnings"])
    assert_same_buffers(data, _run_with_workers(data, 1))


@pytest.mark.parametrize("short_mib", [0, 1, 2])
def test_the_fit_report_is_the_context_a_bare_llama_server_runs(zoo: Path, short_mib: int) -> None:
    """``--fit`` on a CPU-only machine: with -fitt set so that the trained context does not fit
    the total memory, a bare llama-server lowers -c by fit's interpolation; the plan's ``fit``
    says which -c (and the plan's own command pins the largest that fits its budget)."""
    import os
    import re

    path = _model(zoo, "qwen3")
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # as ggml's CPU device
    mid = _plan(str(path), "--engine", "llama-server", "--memory", str(total), "-c", "2048")
    used = sum(b["bytes"] for d in mid["devices"] for b in d["buffers"])
    fitt = (total - used) // 2**20 + short_mib
    flags = ["-fitt", str(fitt), "-fitc", "256"]
    data = _plan(str(path), "--engine", "llama-server", "--memory", str(total), *flags)
    log = run_server(["-m", str(path), *flags])
    ran = int(re.findall(r"llama_context: n_ctx += (\d+)", log)[-1])
    assert data["fit"]["n_ctx"] == ran, (data["fit"], ran)
    assert 256 <= ran < 4096


@pytest.mark.parametrize(
    ("arch", "args"),
    [
        pytest.param("qwen3", [], id="qwen3, Ollama's defaults"),
        pytest.param(
            "gemma3",
            ["--ctx", "3000", "-np", "2", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"],
            id="gemma3 SWA, two sequences, q8_0 cache",
        ),
        pytest.param("qwen3moe", ["--ctx", "8192", "-lm", "mmap"], id="qwen3moe past its context"),
        pytest.param("qwen3next", ["-np", "3"], id="qwen3next, run one sequence at a time"),
        pytest.param("granitehybrid", ["-np", "2", "-b", "256"], id="granite hybrid, num_batch"),
    ],
)
def test_the_command_ollama_starts_allocates_what_the_plan_says(
    zoo: Path, arch: str, args: list[str]
) -> None:
    """``--engine ollama`` on a machine without GPUs: the llama-server command Ollama starts
    (its -c num_ctx*N -np N, --load-mode none, cache types, -fa, -b/-ub num_batch), run as
    printed, allocates every buffer the plan says."""
    path = _model(zoo, arch)
    data = _plan(str(path), "--engine", "ollama", "--memory", "64GiB", *args)
    command = data["commands"]["ollama"]["llama_server"]
    assert command == data["commands"]["llama.cpp"]
    assert command[:3] == ["llama-server", "-m", str(path)]
    assert_same_buffers(data, run_server(command[1:]))


def test_the_printed_command_caps_the_prompt_cache_at_what_the_plan_leaves(zoo: Path) -> None:
    """llama-server's prompt cache fills RAM at run time up to --cache-ram (8192 MiB by
    default); the plan gives it what the budget leaves and pins that, and the server takes it."""
    import re

    path = _model(zoo, "qwen3")
    data = _plan(str(path), "--engine", "llama-server", "--memory", "100MiB")
    command = data["commands"]["llama.cpp"]
    mib = int(command[command.index("--cache-ram") + 1])
    left = data["budget"]["memory_bytes"] - data["memory"]["needed_bytes"]
    assert mib == left // 2**20
    assert data["budget"]["prompt_cache_bytes"] == mib * 2**20
    log = run_server(command[1:])
    assert re.search(rf"prompt cache is enabled, size limit: {mib} MiB", log), log[-3000:]


@pytest.mark.parametrize(
    ("arch", "extra"),
    [
        pytest.param("qwen3next", [], id="qwen3next: its recurrent state"),
        pytest.param("gemma3", ["-ctxcp", "5"], id="gemma3: its window, 5 a slot"),
    ],
)
def test_context_checkpoints_are_no_larger_than_planned(
    zoo: Path, arch: str, extra: list[str]
) -> None:
    """Recurrent and sliding-window models: llama-server keeps context checkpoints of every
    slot in RAM as conversations grow; the printed command pins how many, the server takes
    that, and each one it makes is no larger than the plan's figure (equal to its 0.001 MiB,
    headers aside)."""
    import re

    from tests.llama_server import run_server_with_prompts

    path = _model(zoo, arch)
    data = _plan(str(path), "--engine", "llama-server", "-np", "1", "-c", "4096", *extra)
    planned = data["budget"]["context_checkpoints"]
    command = data["commands"]["llama.cpp"]
    count = int(command[command.index("-ctxcp") + 1])
    assert count == planned["count"] == (int(extra[1]) if extra else 32)
    prompts = [[(7 * i) % 400 + 5 for i in range(n)] for n in (300, 700)]
    log = run_server_with_prompts(command[1:], prompts)
    assert f"context checkpoints enabled, max = {count}," in log
    sizes = [
        float(x) for x in re.findall(r"created context checkpoint .* size = ([\d.]+) MiB", log)
    ]
    assert sizes, log[-3000:]
    each = planned["each_bytes"] / 2**20
    for size in sizes:
        assert each - 0.002 <= size <= each + 0.0005, (size, each)
