"""``membudget plan`` refuses what the engine cannot run, warns where the engine warns, and
plans Apple Silicon from any machine."""

from __future__ import annotations

import json

import pytest

from membudget.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["qwen3-8b", "--gpu", "24GiB", "-ts", "3,1", "--ram", "32GiB"],
            "--tensor-split has 2 shares but the devices given or detected are 1 (CUDA0)",
            id="-ts with more shares than GPUs",
        ),
        pytest.param(
            ["qwen3-30b-a3b", "--memory", "128GiB", "--n-cpu-moe", "5"],
            "--n-cpu-moe keeps experts on the CPU instead of a GPU",
            id="--n-cpu-moe with no GPU",
        ),
        pytest.param(
            ["qwen3-8b", "--gpu", "24GiB", "--memory", "32GiB", "--n-cpu-moe", "2"],
            "needs a mixture of experts",
            id="--n-cpu-moe on a dense model",
        ),
        pytest.param(
            ["qwen3-8b", "--memory", "32GiB", "-ngl", "10"],
            "--n-gpu-layers needs a GPU or RPC device",
            id="-ngl with no device",
        ),
        pytest.param(
            ["qwen3-8b", "--memory", "32GiB", "-ngl", "-1"],
            "--n-gpu-layers must be 0 or more",
            id="negative -ngl",
        ),
        pytest.param(
            ["qwen3-30b-a3b", "--gpu", "8GiB", "--memory", "32GiB", "--n-cpu-moe", "-3"],
            "--n-cpu-moe must be 0 or more",
            id="negative --n-cpu-moe",
        ),
        pytest.param(
            ["llama-3.1-8b", "--engine", "vllm", "--gpu", "80GiB", "--max-model-len", "-5"],
            "--max-model-len must be -1 or more",
            id="negative --max-model-len",
        ),
        pytest.param(
            ["llama-3.1-8b", "--engine", "vllm", *["--gpu", "80GiB"] * 3, "-tp", "3"],
            "does not divide Llama 3.1 8B's 32 attention heads",
            id="vLLM -tp 3 for 32 heads",
        ),
        pytest.param(
            ["qwen3-14b", "--engine", "vllm", *["--gpu", "80GiB"] * 5, "-tp", "5"],
            "does not split Qwen3 14B's 8 KV heads evenly",
            id="vLLM -tp 5 for 40 heads and 8 KV heads",
        ),
        pytest.param(
            ["llama-3.1-8b", "--engine", "vllm", "--gpu", "80GiB", "--quant", "Q4_K_M"],
            "--quant requantises for llama.cpp",
            id="--quant with vLLM",
        ),
        pytest.param(
            ["llama-3.1-8b", "--engine", "vllm", "--gpu", "80GiB", "-ngl", "10"],
            "--n-gpu-layers is not used by the vllm engine",
            id="a llama.cpp flag with vLLM",
        ),
        pytest.param(
            ["llama-3.1-8b", "--engine", "vllm", "--gpu", "80GiB", "-ctk", "q8_0"],
            "--cache-type-k is not used by the vllm engine",
            id="a llama.cpp cache type with vLLM",
        ),
        pytest.param(
            ["llama-3.1-8b", "--gpu", "80GiB", "-tp", "2"],
            "--tensor-parallel-size is not used by the llama-server engine",
            id="a vLLM flag with llama.cpp",
        ),
        pytest.param(
            ["llama-3.1-8b", "--memory", "8GiB", "--max-model-len", "4096"],
            "--max-model-len is not used by the llama-server engine",
            id="--max-model-len with llama.cpp",
        ),
        pytest.param(
            [
                "llama-3.1-8b",
                "--engine",
                "vllm",
                "--gpu",
                "80GiB",
                "--ctx",
                "8192",
                "--max-model-len",
                "4096",
            ],
            "--ctx is vLLM's --max-model-len here; give one of them",
            id="--ctx and a different --max-model-len",
        ),
        pytest.param(
            ["qwen3-8b", "--apple", "16GiB", "--gpu", "8GiB"],
            "--apple plans an Apple Silicon machine, which has no --gpu",
            id="--apple with --gpu",
        ),
        pytest.param(
            ["deepseek-v3", "--memory", "512GiB", "-ctk", "q8_0", "-ctv", "f16", "-fa", "on"],
            "llama.cpp refuses different K and V cache types for DeepSeek-V3",
            id="different K and V types on an MLA model",
        ),
        pytest.param(
            ["qwen3-8b", "--memory", "32GiB", "-ctv", "q8_0", "-fa", "off"],
            "allows only with flash attention on",
            id="a quantised V cache without flash attention",
        ),
        pytest.param(
            ["qwen3-8b", "--memory", "8GiB", "--rpc-node", "24GiB:tpu"],
            "--rpc-node takes a size, then optionally :cpu or :cuda",
            id="an RPC worker of an unknown backend",
        ),
        pytest.param(
            ["qwen3-8b", "--memory", "32GiB", "-lm", "lock"],
            "--load-mode must be one of auto, mmap, none, dio, mlock, mmap+mlock",
            id="a load mode llama.cpp does not have",
        ),
        pytest.param(
            ["qwen3-30b-a3b", "--gpu", "8GiB", "--memory", "32GiB", "-cmoe", "--n-cpu-moe", "3"],
            "--cpu-moe and --n-cpu-moe say the same; give one",
            id="--cpu-moe with --n-cpu-moe",
        ),
        pytest.param(
            ["llama-3.1-8b", "--engine", "vllm", "--gpu", "80GiB", "-lm", "none"],
            "--load-mode is not used by the vllm engine",
            id="a load mode with vLLM",
        ),
        pytest.param(
            ["qwen3-8b", "--apple", "m9-lots"],
            "--apple must be a size such as 16GiB or a name such as m3-16gb",
            id="an unknown Mac",
        ),
    ],
)
def test_refuses_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.count("\n") == 1, err
    assert "None" not in err
    assert "got ''" not in err


def test_ctx_with_vllm_is_its_max_model_len(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "llama-3.1-8b", "--engine", "vllm", "--gpu", "80GiB", "--ctx", "8192", "--json"
    )
    assert code == 0
    assert json.loads(out)["settings"]["max_model_len"] == 8192


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        pytest.param(
            ["qwen3-8b", "--memory", "64GiB", "--ctx", "65536"],
            "past the 40,960 the model was trained on",
            id="context past the trained one",
        ),
        pytest.param(
            ["qwen3-8b", "--memory", "64GiB", "-b", "512", "-ub", "1024"],
            "-ub 1024 is larger than -b 512",
            id="-ub larger than -b",
        ),
        pytest.param(
            ["qwen3-8b", "--memory", "64GiB", "--rpc-node", "16GiB"],
            "rpc-server -H 0.0.0.0 listens on every interface",
            id="an RPC server beyond loopback",
        ),
    ],
)
def test_warns_where_the_engine_warns(
    capsys: pytest.CaptureFixture[str], args: list[str], warning: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 0
    assert warning in err
    code, out, err = run(capsys, *args, "--json")
    assert any(warning in w for w in json.loads(out)["warnings"])
    assert err == ""


def test_apple_target_from_any_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "qwen3-8b", "--quant", "Q4_K_M", "--apple", "m3-16gb", "--json")
    assert code == 0
    data = json.loads(out)
    assert [d["device"] for d in data["devices"]] == ["CPU", "MTL0"]
    metal = data["devices"][1]
    assert metal["budget_bytes"] == 16 * 2**30 * 2 // 3, "two thirds of 16 GiB"
    command = data["commands"]["llama.cpp"]
    assert command[command.index("-ngl") + 1] == "99"
    code, out, _ = run(
        capsys,
        *("qwen3-8b", "--quant", "Q4_K_M", "--apple", "16GiB", "--wired-limit-mb", "4096"),
        "--json",
    )
    assert code == 0, "a 4 GiB wired limit holds part of the layers; the rest run on the CPU"
    data = json.loads(out)
    assert 0 < data["settings"]["n_gpu_layers"] < 37
    assert data["devices"][1]["budget_bytes"] == 4 * 2**30


def test_a_single_rpc_node_gets_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "qwen3-8b", "--quant", "Q4_K_M", "--memory", "8GiB", "--rpc-node", "24GiB"
    )
    assert code == 0
    assert "on worker 0: rpc-server" in out
    assert "--rpc WORKER0:50052" in out
    assert "CUDA" not in out


def test_plan_text_names_the_ollama_settings_and_the_placement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys, "qwen3-8b", "--quant", "Q4_K_M", "--gpu", "8GiB", "--ram", "32GiB", "--ctx", "24320"
    )
    assert code == 0
    assert "Ollama: num_ctx 6080, OLLAMA_NUM_PARALLEL=4" in out  # 4 slots sharing 24,320
    assert "placement (chosen by membudget)" in out
    assert "largest context that fits: 40,960 tokens (the trained context" in out


def test_llama_server_takes_the_trained_context_or_the_largest_that_fits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The default engine runs -c 0 as llama-server does: the trained context when it fits;
    when it does not, the largest context that does (what --fit would lower it to, at most),
    pinned in the printed command and said in a warning; never below 4096 a stream."""
    code, out, _ = run(capsys, "qwen3-8b", "--quant", "Q4_K_M", "--memory", "64GiB", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["settings"]["n_ctx"] == 40960
    assert data["commands"]["llama.cpp"][3:7] == ["-c", "40960", "-np", "4"]

    code, out, _ = run(capsys, "qwen3-8b", "--quant", "Q4_K_M", "--memory", "8GiB", "--json")
    data = json.loads(out)
    assert code == 0
    n_ctx = data["settings"]["n_ctx"]
    assert 4096 <= n_ctx < 40960
    assert n_ctx == data["budget"]["max_context"]
    assert data["commands"]["llama.cpp"][3:5] == ["-c", str(n_ctx)]
    assert any("-c left to llama-server" in w for w in data["warnings"])
    # one token more does not fit: the context is the largest
    code, _, _ = run(
        capsys, "qwen3-8b", "--quant", "Q4_K_M", "--memory", "8GiB", "-c", str(n_ctx + 256)
    )
    assert code == 1

    # a context given is kept, fitting or not
    code, out, _ = run(
        capsys, "qwen3-8b", "--quant", "Q4_K_M", "--memory", "8GiB", "-c", "0", "--json"
    )
    assert json.loads(out)["settings"]["n_ctx"] == n_ctx  # -c 0 is fit's automatic context too
    code, out, _ = run(
        capsys, "qwen3-8b", "--quant", "Q4_K_M", "--memory", "8GiB", "-c", "40960", "--json"
    )
    assert code == 1
    assert json.loads(out)["settings"]["n_ctx"] == 40960


def test_llama_server_gives_each_stream_the_trained_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-np 2 without a unified cache and no -c: fit sets n_ctx to the trained context times the
    streams (common/fit.cpp)."""
    _, out, _ = run(
        capsys, "qwen3-8b", "--quant", "Q4_K_M", "--memory", "64GiB", "-np", "2", "--json"
    )
    data = json.loads(out)
    assert data["settings"]["n_ctx"] == 2 * 40960
    assert data["settings"]["n_ctx_seq"] == 40960


@pytest.mark.parametrize("gpu_gib", [7, 9])
def test_fit_with_one_gpu_lowers_the_context_to_keep_every_layer(
    capsys: pytest.CaptureFixture[str], gpu_gib: int
) -> None:
    """A bare llama-server's --fit on one GPU that cannot hold the trained context: a -c
    between --fit-ctx and the trained context, on fit's 256-token grid, at which every layer
    and its cache fit the GPU less fit's 1024 MiB."""
    args = ["qwen3-8b", "--quant", "Q4_K_M", "--gpu", f"{gpu_gib}GiB", "--memory", "32GiB"]
    code, out, _ = run(capsys, *args, "--margin", "0", "--json")
    assert code == 0
    fit = json.loads(out)["fit"]
    n_ctx = fit["n_ctx"]
    assert fit["reason"].startswith("fit lowers -c")
    assert 4096 <= n_ctx < 40960
    assert n_ctx % 256 == 0
    pinned = [*args, "--margin", "0", "-c", str(n_ctx), "-ngl", "99", "--json"]
    code, out, _ = run(capsys, *pinned)
    needs = {d["device"]: d["needed_bytes"] for d in json.loads(out)["devices"]}
    assert needs["CUDA0"] <= gpu_gib * 2**30 - 1024 * 2**20


@pytest.mark.parametrize(
    ("model", "gpu_gib"),
    [("qwen3-8b", 4), ("qwen3-30b-a3b", 12), ("gemma-3-12b", 6)],
)
def test_what_fit_moves_off_one_gpu_fits_it(
    capsys: pytest.CaptureFixture[str], model: str, gpu_gib: int
) -> None:
    """Where even --fit-ctx does not keep every layer on the GPU, the fit report names the
    layers (and, for a mixture of experts, the -ot patterns of the experts) fit keeps there;
    planned with exactly that (and no --n-cpu-moe: the bare command has none), the GPU holds
    no more than fit's target, and one layer more (or one partial layer less) would not."""
    args = [model, "--quant", "Q4_K_M", "--gpu", f"{gpu_gib}GiB", "--memory", "64GiB"]
    code, out, _ = run(capsys, *args, "--margin", "0", "--json")
    assert code in (0, 1)
    fit = json.loads(out)["fit"]
    ngl = fit["n_gpu_layers"]
    assert ngl is not None, fit
    target = gpu_gib * 2**30 - 1024 * 2**20

    def gpu_needs(n: int, overrides: list[str]) -> int:
        pinned = [*args, "--margin", "0", "-c", str(fit["n_ctx"]), "-ngl", str(n)]
        pinned += ["--n-cpu-moe", "0"]
        if overrides:
            pinned += ["-ot", ",".join(overrides)]
        code, out, _ = run(capsys, *pinned, "--json")
        assert code in (0, 1), out
        needs = {d["device"]: d["needed_bytes"] for d in json.loads(out)["devices"]}
        return int(needs["CUDA0"])

    assert gpu_needs(ngl, fit["overrides"]) <= target
    if fit["overrides"]:
        assert len(fit["overrides"]) < ngl
        assert gpu_needs(ngl, fit["overrides"][1:]) > target
    else:
        assert gpu_needs(ngl + 1, []) > target


def test_the_parallel_line_says_when_slots_share_one_cache(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """llama-server's default -np auto runs one unified cache: its slots share the -c cells
    (each may grow to all of them, not all at once), so the text says "sharing", not "each"."""
    code, out, _ = run(capsys, "qwen3-0.6b", "--memory", "8GiB")
    assert code == 0
    assert "most slots sharing the 40,960-token unified cache: " in out
    code, out, _ = run(capsys, "qwen3-0.6b", "--memory", "8GiB", "--engine", "llama.cpp")
    assert code == 0
    assert "most parallel sequences at 4,096 tokens each: " in out
