"""The command line: exit statuses, one-line errors, JSON on stdout, messages on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from membudget.cli import main
from tests.schema_check import check

BASE = ["estimate", "--memory", "8GiB", "--params", "8e9", "--bits", "1.125"]
GEOMETRY = ["--layers", "36", "--heads", "32", "--head-dim", "128"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_prints_summary_and_max_context(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE, *GEOMETRY)
    assert code == 0
    assert err == ""
    assert "total=8192MB, weights=1073MB, kv_budget=5490MB, overhead=256MB, available=6863MB" in out
    assert "max context: 9,760 tokens" in out
    assert "GiB" in out


@pytest.mark.parametrize(
    ("context", "code", "fits"),
    [
        pytest.param("9760", 0, True, id="largest context fits"),
        pytest.param("9761", 1, False, id="one more token does not"),
    ],
)
def test_estimate_exit_status_follows_fit(
    capsys: pytest.CaptureFixture[str], context: str, code: int, fits: bool
) -> None:
    got, out, _ = run(capsys, *BASE, *GEOMETRY, "--context", context, "--json")
    assert got == code
    data = json.loads(out)
    assert data["fits"] is fits
    assert data["schema"] == "membudget/estimate/1"
    assert data["max_context"] == 9760
    assert data["budget"]["kv_cache_budget"] == 5757199308
    assert isinstance(data["budget"]["total_system_bytes"], int)


def test_estimate_without_geometry_has_no_max_context(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *BASE, "--json")
    assert code == 0
    assert json.loads(out)["max_context"] is None


def test_memory_in_decimal_units_is_not_gib(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = run(
        capsys, "estimate", "--memory", "8GB", "--params", "1", "--bits", "1", "--json"
    )
    assert json.loads(out)["input"]["total_available_mb"] == 7629  # 8e9 bytes // 2**20
    assert "not a whole number of MiB" in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(
            ["estimate", "--memory", "8G", "--params", "1", "--bits", "1"],
            "'8G'",
            id="ambiguous size",
        ),
        pytest.param(
            ["estimate", "--memory", "8GiB", "--params", "1.5", "--bits", "1"],
            "--params",
            id="fractional params",
        ),
        pytest.param(
            ["estimate", "--memory", "8GiB", "--params", "-8", "--bits", "1"],
            "--params",
            id="negative params",
        ),
        pytest.param(
            ["estimate", "--memory", "8GiB", "--params", "8", "--bits", "nan"],
            "bits_per_weight",
            id="NaN bits",
        ),
        pytest.param(
            ["estimate", "--memory", "8GiB", "--params", "8", "--bits", "-1"],
            "bits_per_weight",
            id="negative bits",
        ),
        pytest.param([*BASE, "--layers", "3"], "--heads", id="partial geometry"),
        pytest.param([*BASE, "--context", "5"], "--context", id="context without geometry"),
        pytest.param([*BASE, *GEOMETRY, "--context", "-5"], "--context", id="negative context"),
        pytest.param(["estimate", "--memry", "8GiB"], "--memry", id="misspelt option"),
        pytest.param(["nonsense"], "nonsense", id="unknown command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("membudget: error: ")
    assert fragment in err
    assert "Traceback" not in err


def test_traceback_only_when_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBUDGET_TRACEBACK", "1")
    code, _, err = run(capsys, "estimate", "--memory", "8G", "--params", "1", "--bits", "1")
    assert code == 2
    assert "Traceback" in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.startswith("membudget ")
    code, out, _ = run(capsys)
    assert code == 0
    assert "estimate" in out


def test_python_dash_m_runs_the_same_cli() -> None:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", "membudget", *BASE, *GEOMETRY, "--context", "99999"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert "does NOT fit" in done.stdout
    assert "\x1b[" not in done.stdout, "NO_COLOR is honoured"


def test_models_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "membudget/catalog/1"
    assert len(data["models"]) >= 30
    assert all(m["source"] for m in data["models"])
    code, out, _ = run(capsys, "models")
    assert "bonsai-8b" in out


def test_inspect_json_has_integer_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inspect", "qwen3-8b", "--quant", "Q4_K_M", "--json")
    assert code == 0
    assert err == ""
    model = json.loads(out)["model"]
    assert model["quantization"]["file_type"] == "Q4_K_M"
    assert isinstance(model["weights"]["total_bytes"], int)
    assert model["attention"]["n_head_kv"] == [8] * 36


def test_inspect_table_names_units(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", "gpt-oss-20b")
    assert code == 0
    assert "GiB" in out
    assert "GB" in out
    assert "sliding window" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["inspect", "lama-3.1-8b"], "llama-3.1-8b", id="typo gets a suggestion"),
        pytest.param(["inspect", "/no/such/model.gguf"], "no such file", id="missing file"),
        pytest.param(["inspect", "qwen3-8b", "--quant", "Q9"], "Q4_K_M", id="unknown preset"),
    ],
)
def test_inspect_errors(capsys: pytest.CaptureFixture[str], args: list[str], fragment: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert fragment in err


def test_plan_json_has_the_contract_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "plan",
        "qwen3-8b",
        "--ctx",
        "8192",
        "-ctk",
        "q8_0",
        "-ctv",
        "q8_0",
        "--memory",
        "64GiB",
        "--json",
    )
    assert code == 0
    assert err == ""
    data = json.loads(out)
    assert data["schema"] == "membudget/plan/2"
    mem = data["memory"]
    for key in (
        "weights_bytes",
        "kv_cache_bytes",
        "recurrent_state_bytes",
        "output_bytes",
        "compute_bytes",
        "total_bytes",
    ):
        assert isinstance(mem[key], int), key
    assert mem["total_bytes"] == sum(
        mem[k]
        for k in (
            "weights_bytes",
            "kv_cache_bytes",
            "recurrent_state_bytes",
            "output_bytes",
            "compute_bytes",
        )
    )
    assert mem["kv_cache_bytes"] == 36 * 8192 * 2 * (8 * 128 // 32 * 34)
    assert data["devices"][0]["device"] == "CPU"


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "gemma-3-1b", "-c", "4000", "-fa", "off", "--memory", "8GiB")
    assert code == 0
    assert "KV cache, SWA" in out
    assert "MiB" in out


def test_plan_reference_engine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "plan", "bonsai-8b", "--engine", "reference", "--memory", "8GiB", "--json"
    )
    assert code == 0
    assert json.loads(out)["schema"] == "membudget/estimate/1"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(
            ["plan", "qwen3-8b", "-ctv", "q8_0", "-fa", "off"],
            "flash attention",
            id="quantised V without FA",
        ),
        pytest.param(["plan", "qwen3-8b", "-ctk", "q3_k"], "cache type", id="unknown cache type"),
        pytest.param(["plan", "qwen3-8b", "-fa", "maybe"], "--flash-attn", id="bad flash-attn"),
        pytest.param(["plan", "qwen3-8b", "--engine", "vllm2"], "--engine", id="unknown engine"),
        pytest.param(
            ["plan", "qwen3-8b", "--engine", "reference"], "--memory", id="reference needs memory"
        ),
    ],
)
def test_plan_errors(capsys: pytest.CaptureFixture[str], args: list[str], fragment: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert fragment in err


def _log_for(model: str, ctx: int, compute_scale: float = 1.0) -> str:
    from membudget import load_model
    from membudget.engines.llamacpp import LlamaCppSettings, estimate_llamacpp

    e = estimate_llamacpp(load_model(model), LlamaCppSettings(n_ctx=ctx))
    names = {
        "model": "load_tensors:   CPU_Mapped model",
        "kv": "llama_kv_cache:        CPU KV",
        "output": "llama_context:        CPU  output",
        "compute": "sched_reserve:        CPU compute",
    }
    lines = []
    for b in e.buffers:
        scale = compute_scale if b.kind == "compute" else 1.0
        lines.append(f"{names[b.kind]} buffer size = {b.n_bytes * scale / 2**20:8.2f} MiB")
    return "\n".join(lines) + "\n"


def test_validate_from_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.ggufs import Tiny, write_model

    model = write_model(tmp_path / "m.gguf", Tiny(n_vocab=4096))
    good = tmp_path / "good.log"
    good.write_text(_log_for(str(model), 2048))
    code, out, _ = run(
        capsys, "validate", str(model), "--from-log", str(good), "-c", "2048", "--json"
    )
    assert code == 0
    data = check(json.loads(out))
    assert data["schema"] == "membudget/validate/1"
    assert data["ok"] is True
    code, out, _ = run(
        capsys, "validate", str(model), "--from-log", str(good), "-c", "2048", "--explain", "--json"
    )
    assert check(json.loads(out))["explain"][0]["quantity"] == "weights"
    bad = tmp_path / "bad.log"
    bad.write_text(_log_for(str(model), 2048, compute_scale=1.5))
    code, out, _ = run(capsys, "validate", str(model), "--from-log", str(bad), "-c", "2048")
    assert code == 1
    assert "MISMATCH" in out


def test_plan_budget_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "qwen3-32b", "--memory", "16GiB", "-c", "32768", "--json")
    assert code == 1
    data = json.loads(out)
    b = data["budget"]
    assert b["fits"] is False
    assert b["memory_bytes"] == 16 * 2**30
    for key in ("max_context", "max_parallel", "headroom_bytes"):
        assert isinstance(b[key], int), key
    assert data["commands"]["llama.cpp"][0] == "llama-server"
    code, out, _ = run(capsys, "plan", "bonsai-8b", "--memory", "8GiB", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["budget"]["fits"] is True
    assert data["budget"]["max_context"] == 40960, "capped at the trained context"


def test_plan_detects_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "qwen3-0.6b", "--json")
    assert code in (0, 1)
    assert "available RAM" in json.loads(out)["budget"]["source"]


def test_hw(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hw", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "membudget/hardware/1"
    assert data["ram"]["total_bytes"] > 0
    code, out, _ = run(capsys, "hw")
    assert "RAM" in out


def test_plan_vllm(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "plan", "llama-3.1-8b", "--engine", "vllm", "--gpu", "80GiB", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["engine"] == "vllm"
    assert data["commands"]["vllm"][:3] == ["vllm", "serve", "meta-llama/Llama-3.1-8B"]
    assert data["vllm"]["gpu_kv_cache_tokens"] > 0
    assert isinstance(data["memory"]["kv_cache_bytes"], int)
    code, _, _ = run(
        capsys, "plan", "deepseek-v3", "--engine", "vllm", "--gpu", "80GiB", "-tp", "8"
    )
    assert code == 1


def test_plan_ram_and_vllm_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--ram", "32GiB", "--gpu", "24GiB", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["budget"]["memory_bytes"] == 32 * 2**30
    assert "-ngl" in data["commands"]["llama.cpp"]
    code, out, _ = run(
        capsys,
        "plan",
        "deepseek-v3",
        "--engine",
        "vllm",
        "--gpu",
        "141GiB",
        "-tp",
        "8",
        "--nodes",
        "2",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["nodes"]["count"] == 2
    assert "--distributed-executor-backend" in data["commands"]["vllm"]
    assert data["commands"]["ray"][0] == ["ray", "start", "--head"]


@pytest.mark.parametrize(
    "command",
    [
        "plan",
        "fit",
        "inspect",
        "recommend",
        "plot",
        "validate",
        "estimate",
        "models",
        "hw",
        "schema",
        "serve",
    ],
)
def test_every_command_takes_quiet_and_json(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--quiet and --json work wherever output is printed."""
    from membudget.cli import main as cli_main

    assert cli_main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--quiet" in out
    assert "--json" in out


def test_schema_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    from membudget.cli import main as cli_main

    assert cli_main(["schema", "plan/2", "-q"]) == 0
    assert capsys.readouterr().out.strip() == "membudget/plan/2: membudget plan"


def test_plan_and_plot_share_one_option_set() -> None:
    """The hardware, placement and vLLM options are declared once: plan and plot expose the
    same flags with the same help, so they cannot drift apart (plot -tp 2 once failed)."""
    import typer

    from membudget.cli import app

    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]

    def options(name: str) -> dict[str, tuple[tuple[str, ...], str | None]]:
        return {
            p.name: (tuple(sorted(p.opts)), getattr(p, "help", None))
            for p in commands[name].params
            if p.name is not None
        }

    plan, plot = options("plan"), options("plot")
    shared = [
        "memory",
        "margin",
        "gpu",
        "ram",
        "rpc_node",
        "apple",
        "wired_limit_mb",
        "n_gpu_layers",
        "tensor_split",
        "n_cpu_moe",
        "cpu_moe",
        "tensor_parallel",
        "pipeline_parallel",
        "nodes",
        "max_model_len",
        "kv_cache_dtype",
        "gpu_memory_utilization",
        "ctx",
        "batch",
        "ubatch",
        "parallel",
        "kv_unified",
        "cache_type_k",
        "cache_type_v",
        "flash_attn",
        "swa_full",
        "quant",
        "quiet",
        "revision",
    ]
    for name in shared:
        assert name in plot, f"plot lacks {plan[name][0]}"
        assert plan[name] == plot[name], name
    # the other commands that take a concept take it as plan declares it
    for command in ("recommend", "fit", "validate"):
        theirs = options(command)
        for name in set(theirs) & set(shared) - {"ctx", "parallel"}:
            assert theirs[name] == plan[name], (command, name)
    assert {"memory", "gpu"} <= set(options("recommend"))
    assert {"memory", "ram", "gpu", "margin", "apple", "rpc_node"} <= set(options("fit"))
