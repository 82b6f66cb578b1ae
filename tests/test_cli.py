"""The command line: exit statuses, one-line errors, JSON on stdout, messages on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from membudget.cli import main

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
