"""llama-server's run-time host memory: the prompt cache (--cache-ram) and the context
checkpoints (--ctx-checkpoints) get what the plan leaves of the RAM budget and are pinned in the
printed command. The real server's side is in tests/test_llama_server.py."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from membudget.cli import main


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    ("extra", "cache", "warned"),
    [
        ([], 8192, False),
        (["--cache-ram", "1024"], 1024, False),
        (["--cache-ram", "-1"], -1, True),
        (["--cache-ram", "999999"], 999999, True),
    ],
)
def test_the_prompt_cache_is_pinned_in_the_llama_server_command(
    extra: list[str], cache: int, warned: bool
) -> None:
    code, out = _cli("plan", "qwen3-0.6b", "--memory", "64GiB", *extra, "--json")
    assert code == 0, out
    data = json.loads(out[: out.rindex("}") + 1])
    command = data["commands"]["llama.cpp"]
    assert command[command.index("--cache-ram") + 1] == str(cache)
    assert data["budget"]["prompt_cache_bytes"] == (-1 if cache < 0 else cache * 2**20)
    assert any("--cache-ram" in w for w in data["warnings"]) == warned


def test_vllm_has_no_prompt_cache_flag() -> None:
    code, out = _cli("plan", "qwen3-0.6b", "--engine", "vllm", "--gpu", "24GiB", "--cache-ram", "1")
    assert code == 2
    assert "--cache-ram" in out


def test_checkpoints_come_before_the_prompt_cache() -> None:
    """A hybrid model: every slot's context checkpoints (32 by default) first, the prompt cache
    gets what is left; both pinned; a tight budget lowers the checkpoints."""
    code, out = _cli("plan", "qwen3-next-80b-a3b", "--memory", "256GiB", "--json")
    assert code == 0, out
    data = json.loads(out[: out.rindex("}") + 1])
    c = data["budget"]["context_checkpoints"]
    assert c["count"] == 32
    assert c["slots"] == data["settings"]["n_parallel"]
    assert c["total_bytes"] == 32 * c["each_bytes"] * c["slots"]
    command = data["commands"]["llama.cpp"]
    assert command[command.index("-ctxcp") + 1] == "32"
    needed = data["memory"]["needed_bytes"]
    tight = needed + c["total_bytes"] // 2
    code, out = _cli(
        "plan", "qwen3-next-80b-a3b", "--memory", str(tight), "--margin", "0", "--json"
    )
    data = json.loads(out[: out.rindex("}") + 1])
    c = data["budget"]["context_checkpoints"]
    assert 0 < c["count"] < 32
    assert c["total_bytes"] <= tight - data["memory"]["needed_bytes"]
    assert data["budget"]["prompt_cache_bytes"] < 2**20 * 8192


def test_a_negative_checkpoint_count_is_refused() -> None:
    code, out = _cli("plan", "qwen3-next-80b-a3b", "--memory", "64GiB", "-ctxcp", "-1")
    assert code == 2
    assert "--ctx-checkpoints" in out
    assert "Traceback" not in out
