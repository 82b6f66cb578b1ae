"""The CUDA rules, pinned by logs of a real CUDA llama-server (no GPU needed here).

``tests/data/llama-server-cuda-h200.json.gz`` holds what ``scripts/cuda_accuracy.sh`` brought
back from an NVIDIA H200 (llama.cpp 0c1e570, the tree llama-cpp-python 0.3.36 vendors, built
with ``-DGGML_CUDA=ON``): for each case of :mod:`tests.cuda_grid`, the command that ran, the
sha256 of the model the tests write, and the log's device, fit, buffer and error lines.

Each case is planned again here with the same flags (``--gpu 140GiB --memory 100GiB``):

- the printed command is the command that ran;
- every model, KV, SWA, recurrent-state and output buffer, per device, equals the log's to its
  printed 0.01 MiB;
- the compute buffers of both the GPU and the host equal the log's too (llama.cpp's scheduler,
  :mod:`membudget.engines.llamacpp.sched`), in every placement: every layer on the GPU, CPU
  layers beside it (op offload), weights kept on the host by -ot, -ncffn and --n-cpu-moe;
  for the models it does not cover (a Mamba scan CUDA cannot run, gated-delta-net hybrids)
  the plan must say in a warning that they are estimated;
- what llama.cpp refused, membudget refuses, with llama.cpp's reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.cuda_grid import CASES, FIXTURE, GPU, RAM, CudaCase, make
from tests.test_llama_server import _cli, _plan, _planned, _reported

_DATA: dict[str, Any] = json.loads(gzip.decompress(FIXTURE.read_bytes()))
_BY_ID = {c["id"]: c for c in _DATA["cases"]}
# Spellings of one llama-server flag: the printed command may use either.
_ALIASES = {"--no-repack": "-nr", "--n-cpu-moe": "-ncmoe", "--tensor-split": "-ts"}
# llama.cpp's own failures on the CPU side of these tiny random models (an F16 vector that a
# CPU op asserts on), not a memory question.
_CRASHED = {"gemma2/full", "lfm2/full", "rwkv6/full"}
# llama.cpp's refusal (its log) and the words of membudget's for the same settings.
_REASONS = {
    "does not support different K (q8_0) and V (f16) cache types": "different K and V cache types",
    "quantized V cache requires flash_attn": "quantised V cache, which llama.cpp allows only with "
    "flash attention on",
}
_AMX = "the device's CPU has AMX: with --no-host llama.cpp uses its AMX buffer type, not modelled"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}


def _model(models: dict[str, Path], folder: Path, case: CudaCase) -> Path:
    if case.model not in models:
        path = folder / f"{case.model}.gguf"
        make(case.model, path)
        models[case.model] = path
    path = models[case.model]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == _BY_ID[case.id]["sha256"], (
        f"{case.model}: the test model changed since the CUDA logs were taken; run "
        "scripts/cuda_accuracy.sh on a GPU again"
    )
    return path


def _pairs(args: list[str]) -> list[tuple[str, str]]:
    """Flags and their values, spelling unified, in a comparable order."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        flag = _ALIASES.get(args[i], args[i])
        value = ""
        switch = args[i] in _FLAGS or flag in _FLAGS
        if not switch and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        out.append((flag, value))
        i += 1
    return sorted(out)


_FLAGS = {"-nr", "--no-host", "--kv-unified", "--swa-full", "-cmoe"}


def _differences(data: dict[str, Any], log: str, compute: bool) -> list[str]:
    planned, reported = _planned(data), _reported(log)
    keys = {k for k, v in planned.items() if v} | {k for k, v in reported.items() if v[0]}
    out = []
    for key in sorted(keys):
        if (key[1] == "compute") != compute:
            continue
        mine = planned.get(key, 0) / 2**20
        mib, lines = reported.get(key, (0.0, 0))
        if abs(mine - mib) > 0.005 * max(lines, 1) + 1e-6:
            out.append(f"{key[0]} {key[1]}: plan {mine:.4f} MiB, log {mib:.2f} MiB")
    return out


REPLAYED = [c for c in CASES if "fit-left" not in c.id and c.id not in _CRASHED]


@pytest.mark.parametrize("case", REPLAYED, ids=[c.id for c in REPLAYED])
def test_the_cuda_log_matches_the_plan(
    case: CudaCase, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    entry = _BY_ID[case.id]
    folder = tmp_path_factory.getbasetemp() / "cuda-models"
    folder.mkdir(exist_ok=True)
    path = _model(models, folder, case)
    base = ["--gpu", GPU, "--memory", RAM]
    if entry["status"] != "ok":
        # llama.cpp refused (exit 1 before any buffer): membudget refuses too, with the reason.
        errors = "\n".join(line for line in entry["log"].splitlines() if " E " in line)
        theirs, ours = next((k, v) for k, v in _REASONS.items() if k in errors)
        code, out = _cli("plan", str(path), "--engine", "llama-server", *base, *case.extra)
        assert code == 2, out
        assert ours in out, (theirs, out)
        return
    if case.bare:
        data = _plan(str(path), "--engine", "llama-server", *base, *case.extra)
    else:
        ran = [str(path) if a == "{model}" else a for a in entry["args"]]
        # the command pinned -fa as the plan of the day resolved "auto"; plan that command
        fa = [] if "-fa" in case.plan else ["-fa", ran[ran.index("-fa") + 1]]
        data = _plan(str(path), *base, *case.plan, *fa, *case.extra)
        # the logs predate --cache-ram and -ctxcp in the printed command: run-time limits that
        # allocate nothing at start
        planned = _pairs(data["commands"]["llama.cpp"][1:])
        assert [p for p in planned if p[0] not in ("--cache-ram", "-ctxcp")] == _pairs(ran)
    if "--no-host" in case.extra and "AMX model buffer" in entry["log"]:
        pytest.skip(_AMX)
    assert _differences(data, entry["log"], compute=False) == []
    warned = any("compute buffers" in w for w in data["warnings"])
    if not warned:
        # a dense model with every layer on the GPU: the scheduler's split, to the 0.01 MiB
        assert _differences(data, entry["log"], compute=True) == []
    if case.model.removesuffix("-v512") not in _ESTIMATED:
        assert not warned, data["warnings"]
        assert data["engine_rules"]["compute_method"] == "scheduled"


# Models whose compute buffers on CUDA membudget still estimates (the replay above checks
# every other case's exactly): the Mamba scans CUDA has no kernel for at these sizes, which
# leave the scan and its ssm_a on the host, and the gated-delta-net hybrids, a few KiB off.
_ESTIMATED = {"granitehybrid", "mamba2", "falcon-h1", "qwen3next", "qwen35", "qwen35moe"}


def test_the_fixture_covers_the_grid() -> None:
    """Every case the grid defines was run on the GPU, and nearly all loaded."""
    assert set(_BY_ID) == {c.id for c in CASES}
    ok = [c for c in _DATA["cases"] if c["status"] == "ok"]
    assert len(ok) >= len(CASES) - len(_CRASHED) - 2
    assert "H200" in _DATA["gpu"]


FIT_CASES = [
    c for c in CASES if c.bare and ("fit-left" in c.id or c.id.endswith(("/bare", "-np1")))
]


@pytest.mark.parametrize("case", FIT_CASES, ids=[c.id for c in FIT_CASES])
def test_the_fit_report_with_one_gpu_is_what_fit_did(
    case: CudaCase, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A bare llama-server with --fit on one GPU (its targets here leave it a few MiB, so it
    must lower -c, then move layers, then experts): the plan's ``fit`` names the -c fit ran,
    and the layers and expert overrides it chose (none where it needed no change, or only a
    smaller -c); planned with those, every buffer equals the run's. Only where the compute
    buffer is estimated does the plan say fit is not modelled rather than guess."""
    import re

    entry = _BY_ID[case.id]
    folder = tmp_path_factory.getbasetemp() / "cuda-models"
    folder.mkdir(exist_ok=True)
    path = _model(models, folder, case)
    free = f"{entry['free_mib']}MiB" if entry.get("free_mib") else GPU
    ran = [a for a in entry["args"] if a != "{model}"][1:]
    base = ["--gpu", free, "--margin", "0", "--memory", RAM]
    data = _plan(str(path), "--engine", "llama-server", *base, *ran)
    log = entry["log"]
    n_ctx = int(re.findall(r"llama_context: n_ctx += (\d+)", log)[-1])
    # common/fit.cpp: step 1 needs no change, step 2 lowers -c only; later steps move tensors
    kept = "no changes needed" in log or "entire model can be fit by reducing context" in log
    offloaded = [int(n) for n in re.findall(r"offloaded (\d+)/\d+ layers to GPU", log)][-1]
    fit = data["fit"]
    if fit["n_ctx"] is None:
        assert "estimated" in fit["reason"], fit
        return
    assert fit["n_ctx"] == n_ctx
    if fit["n_gpu_layers"] is None:
        assert kept, fit
        return
    # fit moved layers (and experts)
    assert not kept
    _fit_steps_are_fit_steps(path, entry, base, ran, n_ctx, offloaded)


# common/fit.cpp, common_layer_fraction_t, by the number its trace prints
_FRACTION = {1: "attn", 2: "up", 3: "gate", 4: "moe"}
_PROBE = re.compile(r"id=0, n_layer= *(\d+), n_part= *(\d+), overflow_type=(\d), mem= *(\d+) MiB")


def _fit_steps_are_fit_steps(
    path: Path, entry: dict[str, Any], base: list[str], ran: list[str], n_ctx: int, ngl: int
) -> None:
    """Fit's steps 3 and 4 against its own trace. Every layout it tried uses, by the plan, the
    MiB its trace prints (floored); for a free memory within the MiB the trace prints (fit's
    choices between partial layers can turn on less), membudget's fit tries the same layouts
    in the same order and keeps the one fit kept; planned with that layout, every buffer
    equals the run's."""
    from membudget.loader import load_model
    from membudget.request import _MOE_ALL, _fit_experts, _fit_layers, _FitLayers

    log = entry["log"]
    n_slots = load_model(str(path)).n_layer + 1
    probes = [_FitLayers(int(a), int(b), _FRACTION[int(t)]) for a, b, t, _ in _PROBE.findall(log)]
    traced = [int(m) for *_, m in _PROBE.findall(log)]
    moe = entry["model"] in ("qwen3moe", "gpt-oss")
    mems: dict[_FitLayers, int] = {}

    def mem(layers: _FitLayers) -> int:
        if layers not in mems:
            args = ["-c", str(n_ctx), "-ngl", str(layers.n_layer)]
            patterns = layers.overrides(n_slots) if moe else ()
            if patterns:
                args += ["-ot", ",".join(f"{p}=CPU" for p in patterns)]
            data = _plan(str(path), "--engine", "llama-server", *base, *ran, *args)
            mems[layers] = sum(v for k, v in _planned(data).items() if k[0] == "CUDA0")
        return mems[layers]

    assert [mem(p) // 2**20 for p in probes] == traced
    mem_all = 0  # every layer offloaded, every expert on the CPU: fit's dense surplus
    if moe:
        args = ["-c", str(n_ctx), "-ngl", str(n_slots), "-ot", f"{_MOE_ALL}=CPU"]
        data = _plan(str(path), "--engine", "llama-server", *base, *ran, *args)
        mem_all = sum(v for k, v in _planned(data).items() if k[0] == "CUDA0")
    fitt = int(ran[ran.index("-fitt") + 1]) * 2**20
    lowest = entry["free_mib"] * 2**20 - fitt
    found = None
    for step in range(256):  # the MiB of free memory, 4 KiB at a time
        target = lowest + step * 4096
        tried: list[_FitLayers] = []

        def recorded(layers: _FitLayers, tried: list[_FitLayers] = tried) -> int:
            tried.append(layers)
            return mem(layers)

        if moe:
            chosen = _fit_experts(recorded, n_slots, target, mem_all < target)
        else:
            layers = _fit_layers(lambda n: recorded(_FitLayers(n)), n_slots, target)
            chosen = _FitLayers(layers)
        if tried == probes:
            found = chosen
            break
    assert found is not None, ("no free memory in that MiB makes fit's choices", probes)
    assert found.n_layer == ngl
    args = ["-c", str(n_ctx), "-ngl", str(ngl)]
    if moe and found.overrides(n_slots):
        args += ["-ot", ",".join(f"{p}=CPU" for p in found.overrides(n_slots))]
    placed = _plan(str(path), "--engine", "llama-server", *base, *ran, *args)
    assert _differences(placed, log, compute=False) == []
    assert _differences(placed, log, compute=True) == []
