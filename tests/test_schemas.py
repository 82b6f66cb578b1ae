"""The JSON contract: every command's --json output validates against its schema file, and
stdout carries nothing but the document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from membudget.cli import main
from membudget.hardware import AppleInfo, CpuInfo, GpuInfo, Hardware, RamInfo
from membudget.report import HardwareReport
from membudget.schemas import SCHEMA_IDS, load_schema
from tests.ggufs import Tiny, write_model
from tests.schema_check import check


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main([*args, "--json"])
    out, _ = capsys.readouterr()
    assert code in (0, 1), out
    data: dict[str, Any] = json.loads(out)  # the whole of stdout is one document
    return check(data)


@pytest.mark.parametrize("schema_id", SCHEMA_IDS)
def test_schema_files_are_valid_json_schema(schema_id: str) -> None:
    schema = load_schema(schema_id)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].startswith("urn:membudget:schema:")
    assert schema_id.split("/")[1] in schema["$id"]


def test_schema_files_are_in_the_repo_and_the_package() -> None:
    folder = Path(__file__).parent.parent / "src" / "membudget" / "schemas"
    on_disk = {p.name for p in folder.glob("*.json")}
    assert on_disk == {f"{sid.split('/')[1]}.{sid.split('/')[2]}.json" for sid in SCHEMA_IDS}


def test_unknown_schema_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "plan/9"]) == 2
    assert "must be one of" in capsys.readouterr().err


def test_schema_command_prints_a_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "plan/2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"] == "urn:membudget:schema:plan:2"
    run_json(capsys, "schema")


def test_schema_command_prints_the_fields_readably(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json: each field's path, type and description, for people."""
    assert main(["schema", "hardware/1"]) == 0
    out = capsys.readouterr().out
    assert "ram.available_bytes" in out
    assert "gpus[].total_bytes" in out
    assert "psutil" in out


@pytest.mark.parametrize("sid", SCHEMA_IDS)
def test_every_field_is_described(sid: str) -> None:
    """Every field of every schema says what it counts, its unit and where it comes from."""
    from membudget.cli._schema import fields

    missing = [path for path, _, text in fields(load_schema(sid)) if not text and path != "schema"]
    assert not missing, f"{sid}: {missing}"


COMMANDS = [
    pytest.param(
        ["estimate", "--memory", "8GiB", "--params", "8B", "--bits", "1.125"], id="estimate"
    ),
    pytest.param(
        [
            "estimate",
            "--memory",
            "8GiB",
            "--params",
            "8B",
            "--bits",
            "4",
            "--layers",
            "32",
            "--heads",
            "32",
            "--head-dim",
            "128",
            "--context",
            "99999",
            "--explain",
        ],
        id="estimate-explain-no-fit",
    ),
    pytest.param(["models"], id="models"),
    pytest.param(["inspect", "deepseek-v3", "--explain"], id="inspect-mla"),
    pytest.param(["inspect", "mamba-2.8b"], id="inspect-mamba"),
    pytest.param(["inspect", "gemma-3-27b", "--quant", "Q4_K_M"], id="inspect-preset"),
    pytest.param(["hw"], id="hw"),
    pytest.param(["plan", "llama-3.1-8b", "--memory", "24GiB", "--explain"], id="plan"),
    pytest.param(["plan", "qwen3-32b", "--memory", "8GiB"], id="plan-no-fit"),
    pytest.param(
        ["plan", "gemma-3-27b", "--memory", "64GiB", "--gpu", "16GiB", "--explain"], id="plan-gpu"
    ),
    pytest.param(["plan", "llama-3.1-8b", "--memory", "8GiB", "--rpc-node", "8GiB"], id="plan-rpc"),
    pytest.param(
        ["plan", "granite-4.0-h-small", "--memory", "64GiB", "--explain"], id="plan-hybrid"
    ),
    pytest.param(["plan", "deepseek-v3", "--memory", "1TiB", "--explain"], id="plan-mla"),
    pytest.param(
        ["plan", "qwen3-8b", "--engine", "vllm", "--gpu", "24GiB", "--explain"], id="plan-vllm"
    ),
    pytest.param(
        [
            "plan",
            "qwen3-235b-a22b",
            "--engine",
            "vllm",
            "--gpu",
            "80GiB",
            "-tp",
            "8",
            "--nodes",
            "2",
        ],
        id="plan-vllm-nodes",
    ),
    pytest.param(
        ["plan", "llama-3.1-8b", "--engine", "reference", "--memory", "16GiB", "--explain"],
        id="plan-reference",
    ),
    pytest.param(["recommend", "llama-3.1-8b", "--memory", "16GiB", "--explain"], id="recommend"),
]


@pytest.mark.parametrize("args", COMMANDS)
def test_every_command_output_matches_its_schema(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    data = run_json(capsys, *args)
    if "--explain" in args:
        assert data["explain"], "--explain adds the steps to the JSON"


def test_gguf_outputs_match_their_schemas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = str(write_model(tmp_path / "m.gguf", Tiny(n_swa=128, n_layer=4)))
    run_json(capsys, "inspect", model, "--explain")
    run_json(capsys, "plan", model, "--memory", "1GiB", "-c", "1000", "--parallel", "2")
    run_json(capsys, "plan", model, "--memory", "1GiB", "-ngl", "99", "--gpu", "1GiB")


def test_plot_output_matches_its_schema(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = str(tmp_path / "m.svg")
    data = run_json(
        capsys, "plot", "qwen3-8b", "--memory", "16GiB", "--out", out, "--compare", "cache-types"
    )
    assert data["compare"]["by"] == "cache-types"


def test_hardware_with_gpus_and_apple_matches_its_schema() -> None:
    hw = Hardware(
        ram=RamInfo(64 * 2**30, 60 * 2**30, 64 * 2**30, 32 * 2**30, "cgroup v2"),
        gpus=(GpuInfo(0, "NVIDIA H100", 80 * 2**30, 79 * 2**30),),
        apple=AppleInfo(64 * 2**30, 48 * 2**30, "sysctl"),
        cpu=CpuInfo("arm64", "neon", 12, 12),
    )
    check(HardwareReport(hw).to_dict())
