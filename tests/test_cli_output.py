"""Terminal output: --quiet, --explain, the budget bar, NO_COLOR, and progress on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from membudget.cli import _output, main
from tests.ggufs import Tiny, write_model


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["plan", "llama-3.1-8b", "--memory", "24GiB"], "fits: needs", id="plan"),
        pytest.param(["plan", "qwen3-32b", "--memory", "8GiB"], "does NOT fit", id="plan-no-fit"),
        pytest.param(
            ["estimate", "--memory", "8GiB", "--params", "8B", "--bits", "1.125"],
            "total=8192MB",
            id="estimate",
        ),
        pytest.param(["inspect", "qwen3-8b"], "parameters", id="inspect"),
        pytest.param(["models"], "llama-3.1-8b", id="models"),
        pytest.param(["recommend", "qwen3-8b", "--memory", "32GiB"], "-fa", id="recommend"),
    ],
)
def test_quiet_prints_one_answer(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    _, out, err = run(capsys, *args, "--quiet")
    assert expected in out
    assert err == ""
    if args[0] != "models":
        assert out.count("\n") == 1, out


def test_quiet_silences_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "--memory", "8000000000", "--params", "8B", "--bits", "1.125"]
    _, _, err = run(capsys, *args)
    assert "not a whole number of MiB" in err
    _, _, err = run(capsys, *args, "-q")
    assert err == ""


def test_plan_shows_the_breakdown_as_a_bar_against_the_budget(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(capsys, "plan", "llama-3.1-8b", "--memory", "24GiB")
    bar = next(line for line in out.splitlines() if line.startswith("["))
    assert "|" in bar
    assert "of 24.00 GiB budget" in bar
    assert "weights" in out
    assert "KV cache" in out


def test_every_size_in_the_plan_table_names_its_unit(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "plan", "llama-3.1-8b", "--memory", "24GiB")
    header = next(line for line in out.splitlines() if "buffer" in line and "device" in line)
    assert "bytes" in header
    assert "MiB" in header


def test_explain_names_gguf_keys_and_engine_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = write_model(tmp_path / "m.gguf", Tiny(n_layer=2, n_head_kv=2, head_dim=64))
    _, out, _ = run(capsys, "plan", str(model), "--memory", "1GiB", "-c", "1000", "--explain")
    assert "GGUF key 'llama.attention.head_count_kv'" in out
    assert "GGUF key 'llama.attention.key_length'" in out
    assert "n_ctx = pad(1000, 256) = 1,024" in out
    # 2 layers x (K 128 values + V 128 values) x 2 B x 1024 cells = 1 MiB
    assert "KV cache = 1,048,576 bytes" in out
    assert "llama.cpp 0c1e570" in out


def test_explain_names_config_fields_for_catalogue_models(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(capsys, "plan", "llama-3.1-8b", "--memory", "24GiB", "--explain")
    assert "catalogue entry 'llama-3.1-8b'" in out
    assert "field 'num_key_value_heads'" in out
    assert "default 128 (head_dim absent)" in out


def test_explain_json_steps_sum_to_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "plan", "gemma-3-4b", "--memory", "24GiB", "--explain", "--json")
    data = json.loads(out)
    steps = {s["quantity"]: s["bytes"] for s in data["explain"]}
    parts = ("weights", "KV cache", "KV cache, SWA layers", "output", "compute")
    assert sum(steps.get(p) or 0 for p in parts) == data["memory"]["total_bytes"]
    assert steps["KV cache, SWA layers"] == data["memory"]["kv_swa_bytes"]


def test_inspect_explain_names_every_source(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "inspect", "deepseek-v3", "--explain")
    assert "kv_lora_rank = 512" in out
    assert "field 'kv_lora_rank'" in out


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "membudget", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=60,
    )


_COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|9[0-7])(?:;[0-9]+)*m")


def test_no_color_is_respected() -> None:
    args = ("plan", "llama-3.1-8b", "--memory", "24GiB")
    coloured = _cli(*args, env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"})
    assert _COLOUR.search(coloured.stdout)
    plain = _cli(*args, env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    assert not _COLOUR.search(plain.stdout)  # no colour codes (bold and italic may stay)
    assert "of 24.00 GiB budget" in plain.stdout


def test_progress_bar_on_stderr_for_many_shards(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A split model read slowly shows a progress bar on stderr; stdout stays pure JSON."""
    import gguf

    from membudget.readers import gguf as reader

    parts = 3
    for i in range(parts):
        w = gguf.GGUFWriter(tmp_path / f"m-{i + 1:05d}-of-{parts:05d}.gguf", "llama")
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, i)
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, parts)
        w.add_int32(gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, 0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    slow_reads: list[str] = []
    real = reader._read_one

    def slow(path: Path, index: int) -> reader.GGUFFile:
        slow_reads.append(path.name)
        import time

        time.sleep(0.05)
        return real(path, index)

    monkeypatch.setattr(reader, "_read_one", slow)
    monkeypatch.setattr(_output, "PROGRESS_DELAY_S", 0.0)
    monkeypatch.setenv(_output.PROGRESS_ENV, "1")
    code, out, err = run(capsys, "inspect", str(tmp_path / "m-00001-of-00003.gguf"), "--json")
    assert len(slow_reads) == parts
    assert code == 2  # the parts hold no model, which is reported as one line
    assert out == ""
    assert "reading" in err
    assert "membudget: error:" in err.strip().splitlines()[-1]


def test_no_progress_when_quiet_or_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_output, "PROGRESS_DELAY_S", 0.0)
    monkeypatch.delenv(_output.PROGRESS_ENV, raising=False)
    _, _, err = run(capsys, "plot", "--help")
    assert err == ""
    monkeypatch.setenv(_output.PROGRESS_ENV, "1")
    with _output.busy("work", quiet=True):
        pass
    assert capsys.readouterr().err == ""
