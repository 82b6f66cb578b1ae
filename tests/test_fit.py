"""``membudget fit``: every row is what ``membudget plan`` says for that model, preset and
machine, and the preset is the best that fits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from membudget import load_model
from membudget.cli import main
from membudget.fit import candidates
from membudget.schemas import load_schema
from tests.ggufs import Tiny, write_model

MACHINES = {
    "cpu 16 GiB": ["--memory", "16GiB"],
    "24 GiB GPU + 32 GiB RAM": ["--memory", "32GiB", "--gpu", "24GiB"],
}
SAMPLE = ["qwen3-8b", "qwen3-30b-a3b", "gemma-3-12b", "bonsai-4b", "llama-3.1-70b", "mamba-2.8b"]


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out)


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_rows_are_what_plan_says(machine: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A sample of rows, each planned again with membudget plan: the same verdict, context,
    parallel sequences, needed bytes and command; and the preset one step better does not
    fit."""
    hw = MACHINES[machine]
    sources = [a for m in SAMPLE for a in ("--source", m)]
    _, doc = _json(capsys, "fit", *hw, *sources, "--json")
    jsonschema.validate(doc, load_schema("membudget/fit/1"))
    rows = doc["rows"]
    assert isinstance(rows, list)
    assert rows, "something fits"
    for row in rows:
        quant = ["--quant", row["quant"]] if row["quant"] else []
        args = ["plan", row["model"], *hw, *quant, "--ctx", "4096", "--parallel", "1", "--json"]
        code, plan = _json(capsys, *args)
        budget = plan["budget"]
        assert isinstance(budget, dict)
        assert code == 0
        assert budget["max_context"] == row["max_context"], row["model"]
        assert budget["max_context_limit"] == row["max_context_limit"]
        assert budget["max_parallel"] == row["max_parallel"]
        assert plan["memory"]["needed_bytes"] == row["needed_bytes"]  # type: ignore[index]
        assert plan["commands"]["llama.cpp"] == row["command"]  # type: ignore[index]
        better = [c for c, _ in candidates(load_model(row["model"]))]
        i = better.index(row["quant"])
        if i > 0:
            up = better[i - 1]
            quant = ["--quant", up] if up else []
            code, _ = _json(
                capsys,
                "plan",
                row["model"],
                *hw,
                *quant,
                "--ctx",
                "4096",
                "--parallel",
                "1",
                "--json",
            )
            assert code == 1, f"{row['model']}: {up} fits too, so it is the better row"


def test_no_upward_requantisation(tmp_path: Path) -> None:
    """A 1-bit model is swept as released; a Q4_K_M GGUF only at its own type and below."""
    assert [p for p, _ in candidates(load_model("bonsai-8b"))] == [None]
    from gguf import GGMLQuantizationType as Q

    gguf_file = write_model(tmp_path / "m.gguf", Tiny(n_layer=2, n_embd=256, matrix_type=Q.Q4_K))
    presets = [p for p, _ in candidates(load_model(gguf_file))]
    assert presets[0] is None
    assert "Q8_0" not in presets
    assert "F16" not in presets


def test_table_lists_gpu_fits_first(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "fit",
            "--memory",
            "32GiB",
            "--gpu",
            "8GiB",
            "--source",
            "qwen3-0.6b",
            "--source",
            "qwen3-14b",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.index("on the GPUs alone") < out.index("with offload")
    code = main(["fit", "--memory", "32GiB", "--source", "qwen3-0.6b"])
    assert "on the CPU" in capsys.readouterr().out
    assert "(trained)" in out


def test_filters(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = _json(
        capsys,
        "fit",
        "--memory",
        "16GiB",
        "--source",
        "qwen3-0.6b",
        "--source",
        "qwen3-30b-a3b",
        "--moe",
        "--json",
    )
    rows = doc["rows"]
    assert isinstance(rows, list)
    assert [r["model"] for r in rows] == ["qwen3-30b-a3b"]
    code = main(["fit", "--sort", "size"])
    assert code == 2


def test_worker_processes_give_the_same_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs plans the models in worker processes (forked, or spawned beside other threads),
    each handed the model as loaded and the machine as read once: the same document, rows and skipped models in the same order, as
    in one process."""
    sources = [a for m in [*SAMPLE, "llama-3.1-405b"] for a in ("--source", m)]
    hw = ["--memory", "32GiB", "--gpu", "12GiB"]
    _, alone = _json(capsys, "fit", *hw, *sources, "--jobs", "1", "--json")
    _, workers = _json(capsys, "fit", *hw, *sources, "--jobs", "2", "--json")
    assert workers == alone
    assert [s["model"] for s in alone["skipped"]] == ["llama-3.1-405b"]  # type: ignore[attr-defined]
    assert main(["fit", "--jobs", "0"]) == 2
    assert "--jobs must be 1 or more" in capsys.readouterr().err


def test_the_web_api_answers_as_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """GET /api/fit sweeps the catalogue as membudget fit does."""
    from fastapi.testclient import TestClient

    from membudget.web.app import create_app

    client = TestClient(create_app())
    r = client.get("/api/fit", params={"memory": "16GiB", "family": "qwen3-"})
    assert r.status_code == 200, r.text
    web = r.json()
    jsonschema.validate(web, load_schema("membudget/fit/1"))
    _, cli = _json(capsys, "fit", "--memory", "16GiB", "--family", "qwen3-", "--json")
    assert web["rows"] == cli["rows"]
    r = client.get("/api/fit", params={"engine": "sglang", "gpus": "24GiB", "family": "qwen3-"})
    assert r.status_code == 200, r.text
    _, cli = _json(
        capsys, "fit", "--engine", "sglang", "--gpu", "24GiB", "--family", "qwen3-", "--json"
    )
    assert r.json()["rows"] == cli["rows"]


def test_vllm_rows_are_what_plan_says(capsys: pytest.CaptureFixture[str]) -> None:
    """With --engine vllm each checkpoint is swept as published; its row is plan's at
    --max-model-len MIN_CTX (the longest length by vLLM's auto-fit)."""
    hw = ["--gpu", "80GiB", "--memory", "64GiB"]
    _, doc = _json(
        capsys,
        "fit",
        "--engine",
        "vllm",
        *hw,
        "--source",
        "qwen3-8b",
        "--source",
        "gpt-oss-20b",
        "--json",
    )
    jsonschema.validate(doc, load_schema("membudget/fit/1"))
    rows = doc["rows"]
    assert isinstance(rows, list)
    assert len(rows) == 2
    for row in rows:
        code, plan = _json(
            capsys,
            "plan",
            row["model"],
            "--engine",
            "vllm",
            *hw,
            "--max-model-len",
            "4096",
            "--json",
        )
        assert code == 0
        budget = plan["budget"]
        assert isinstance(budget, dict)
        assert budget["max_context"] == row["max_context"]
        assert budget["max_parallel"] == row["max_parallel"]
        assert plan["commands"]["vllm"] == row["command"]  # type: ignore[index]
        assert row["placement"] == "gpu"


def test_sglang_rows_are_what_plan_says(capsys: pytest.CaptureFixture[str]) -> None:
    """With --engine sglang each checkpoint is swept as published on one GPU; its row is
    plan's at --ctx MIN_CTX (its longest --context-length, requests of --ctx the pool holds,
    needed bytes per GPU and the launch command)."""
    hw = ["--gpu", "80GiB", "--memory", "64GiB"]
    sources = [a for m in ("qwen3-8b", "gemma-3-27b", "gpt-oss-120b") for a in ("--source", m)]
    _, doc = _json(capsys, "fit", "--engine", "sglang", *hw, *sources, "--ctx", "8192", "--json")
    jsonschema.validate(doc, load_schema("membudget/fit/1"))
    assert doc["engine"] == "sglang"
    rows = doc["rows"]
    assert isinstance(rows, list)
    assert len(rows) == 3
    for row in rows:
        code, plan = _json(
            capsys, "plan", row["model"], "--engine", "sglang", *hw, "--ctx", "4096", "--json"
        )
        assert code == 0
        budget = plan["budget"]
        assert isinstance(budget, dict)
        assert budget["max_context"] == row["max_context"]
        assert budget["max_context_limit"] == row["max_context_limit"]
        assert plan["memory"]["needed_bytes"] == row["needed_bytes"]  # type: ignore[index]
        assert plan["commands"]["sglang"] == row["command"]  # type: ignore[index]
        _, at_ctx = _json(
            capsys, "plan", row["model"], "--engine", "sglang", *hw, "--ctx", "8192", "--json"
        )
        assert at_ctx["budget"]["max_parallel"] == row["max_parallel"]  # type: ignore[index]
        assert row["placement"] == "gpu"
        assert row["quant"] is None


@pytest.mark.parametrize(("engine", "name"), [("vllm", "vLLM"), ("sglang", "SGLang")])
def test_an_engine_on_gpus_refuses_a_machine_without_one(
    engine: str, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --gpu and none detected: one error and exit 2, not a sweep of rows that all fail
    for that reason."""
    from membudget import hardware

    real = hardware.detect
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: replace(real(*a, **k), gpus=()))
    code = main(["fit", "--engine", engine, "--memory", "16GiB", "--family", "qwen3-8b"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"membudget: error: --gpu is needed: {name} runs on NVIDIA GPUs and none was detected"
    ]


def test_planning_paces_the_collector_and_restores_its_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a sweep or a plan runs the cyclic collector runs once a million objects are
    held; the last of them to end gives the process its own pace back."""
    import gc

    from membudget import _collector, plan

    before = gc.get_threshold()
    with _collector.paced():
        assert gc.get_threshold() == (_collector.THRESHOLD, *before[1:])
        with _collector.paced():  # a second sweep beside it (the web server's threads)
            pass
        assert gc.get_threshold()[0] == _collector.THRESHOLD
    assert gc.get_threshold() == before
    seen: list[int] = []
    real = plan.placer_for

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold()[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(plan, "placer_for", spy)
    assert main(["plan", "qwen3-0.6b", "--memory", "8GiB", "-q"]) == 0
    assert seen
    assert set(seen) == {_collector.THRESHOLD}
    assert gc.get_threshold() == before


def test_the_progress_bar_counts_models_and_starts_no_thread_before_the_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal the sweep shows a bar of models done; it starts no thread before the
    worker processes are made, so they are forked (spawned ones import everything again)."""
    import threading

    from membudget import fit
    from membudget.cli import _output

    monkeypatch.setenv("MEMBUDGET_PROGRESS", "1")
    monkeypatch.setattr(_output, "PROGRESS_DELAY_S", 0.0)
    seen: list[int] = []
    real = fit._start_method

    def spy() -> str:
        seen.append(threading.active_count())
        return real()

    monkeypatch.setattr(fit, "_start_method", spy)
    before = threading.active_count()
    assert main(["fit", "--memory", "16GiB", "--family", "qwen3-", "--jobs", "2"]) == 0
    assert seen == [before]
    err = capsys.readouterr().err
    assert "sweeping models: qwen3-" in err


@pytest.mark.parametrize(("engine", "length"), [("vllm", "--max-model-len"), ("sglang", "--ctx")])
def test_a_serving_engine_takes_the_fewest_gpus_that_hold_the_model(
    engine: str, length: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With several GPUs a checkpoint is served with the fewest that hold one request of
    --min-ctx (tensor parallel 1, 2, 4, ...): Qwen3-32B's 65 GB of BF16 needs both 40 GiB
    GPUs, Qwen3-8B one; each row is plan's at that tensor-parallel size, and one size less
    does not fit."""
    hw = ["--gpu", "40GiB", "--gpu", "40GiB", "--memory", "64GiB"]
    sources = ["--source", "qwen3-32b", "--source", "qwen3-8b"]
    _, doc = _json(capsys, "fit", "--engine", engine, *hw, *sources, "--json")
    found = doc["rows"]
    assert isinstance(found, list)
    rows = {r["model"]: r for r in found}
    for model, tp in (("qwen3-32b", 2), ("qwen3-8b", 1)):
        row = rows[model]
        args = ["plan", model, "--engine", engine, *hw, length, "4096", "--json"]
        code, plan = _json(capsys, *args, "-tp", str(tp))
        assert code == 0
        assert plan["budget"]["max_context"] == row["max_context"]  # type: ignore[index]
        assert plan["memory"]["needed_bytes"] == row["needed_bytes"]  # type: ignore[index]
        assert plan["commands"][engine] == row["command"]  # type: ignore[index]
        if tp > 1:
            code, _ = _json(capsys, *args, "-tp", str(tp // 2))
            assert code == 1
