"""``membudget fit``: what fits this machine, across models and presets."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from membudget.cli._app import app
from membudget.cli._output import Quiet, busy, render
from membudget.cli._params import parse_rpc_node
from membudget.cli._plan import Apple, Gpu, Margin, Memory, Ram, RpcNode
from membudget.errors import InvalidArgumentError
from membudget.model import ModelSpec
from membudget.units import parse_size

_SORTS = ("params", "quality", "context", "headroom")


def _sources(given: list[str]) -> list[tuple[str, Callable[[], ModelSpec]]]:
    """The models to sweep: the catalogue, or each --source (a model, a directory of GGUFs,
    ``hf-cache`` for every model in the Hugging Face cache, ``ollama`` for Ollama's store)."""
    from membudget.loader import hf_cache_dirs, load_model
    from membudget.readers.catalog import catalog, catalog_spec

    def loader(source: str) -> Callable[[], ModelSpec]:
        return lambda: load_model(source)

    if not given:
        return [(name, functools.partial(catalog_spec, name)) for name in catalog()]
    out: list[tuple[str, Callable[[], ModelSpec]]] = []
    for source in given:
        if source == "catalogue":
            out += [(name, functools.partial(catalog_spec, name)) for name in catalog()]
        elif source == "hf-cache":
            for cache in hf_cache_dirs():
                if cache.is_dir():
                    for repo in sorted(cache.glob("models--*--*")):
                        name = repo.name.removeprefix("models--").replace("--", "/", 1)
                        out.append((name, loader(name)))
        elif source == "ollama":
            from membudget.readers.remote.ollama import ollama_models_dir

            root = ollama_models_dir() / "manifests"
            for manifest in sorted(p for p in root.rglob("*") if p.is_file()):
                host, ns, model, tag = manifest.relative_to(root).parts[-4:]
                prefix = "" if (host, ns) == ("registry.ollama.ai", "library") else f"{host}/{ns}/"
                name = f"ollama:{prefix}{model}:{tag}"
                out.append((name, loader(name)))
        elif Path(source).is_dir() and not (Path(source) / "config.json").is_file():
            ggufs = sorted(Path(source).glob("*.gguf"))
            for g in ggufs:
                if "-of-" in g.name and "-00001-of-" not in g.name:
                    continue  # later parts of a split model are read with its first
                out.append((os.fspath(g), loader(os.fspath(g))))
        else:
            out.append((source, loader(source)))
    return out


@app.command()
def fit(
    engine: Annotated[
        str, typer.Option(help="llama-server (the default), llama.cpp, vllm or sglang.")
    ] = "llama-server",
    min_ctx: Annotated[
        int, typer.Option(help="The least context a fit must hold, one sequence, in tokens.")
    ] = 4096,
    ctx: Annotated[
        int | None,
        typer.Option(
            "--ctx", "-c", help="Tokens a sequence for the parallel column (default: --min-ctx)."
        ),
    ] = None,
    memory: Memory = None,
    ram: Ram = None,
    gpu: Gpu = None,
    margin: Margin = None,
    apple: Apple = None,
    rpc_node: RpcNode = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            help="Sweep these instead of the catalogue, repeatable: a model, a directory of "
            "GGUFs, hf-cache (every model in the Hugging Face cache), ollama (Ollama's "
            "store), catalogue."
        ),
    ] = None,
    sort: Annotated[str, typer.Option(help="params, quality, context or headroom.")] = "params",
    family: Annotated[
        str | None, typer.Option(help="Only models whose name contains this (qwen3, gemma).")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="Only this architecture (llama4).")] = None,
    moe: Annotated[
        bool | None, typer.Option("--moe/--dense", help="Only mixtures of experts / dense.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            help="Worker processes to plan models in (default: the CPUs available; 1: none).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    quiet: Quiet = False,
) -> None:
    """What fits this machine? Every model's best preset that holds --min-ctx tokens, its
    largest context, its most parallel sequences, and the command to run it."""
    from membudget.fit import default_jobs
    from membudget.hardware import detect
    from membudget.report_fit import run_fit
    from membudget.request import PlanRequest, engine_name

    if sort not in _SORTS:
        raise InvalidArgumentError("--sort", sort, f"must be one of {', '.join(_SORTS)}")
    if min_ctx < 1:
        raise InvalidArgumentError("--min-ctx", min_ctx, "must be 1 or more")
    if jobs is not None and jobs < 1:
        raise InvalidArgumentError("--jobs", jobs, "must be 1 or more")
    if ram is not None:
        if memory is not None and parse_size(memory) != parse_size(ram):
            raise InvalidArgumentError("--ram", ram, "conflicts with --memory; give one of them")
        memory = ram
    workers = [parse_rpc_node(n) for n in rpc_node or ()]
    name = engine_name(engine)
    if name not in ("llama.cpp", "llama-server", "vllm", "sglang"):
        raise InvalidArgumentError(
            "--engine", engine, "must be llama-server, llama.cpp, vllm or sglang"
        )
    # the sweep sets the context (and, for llama.cpp, one sequence) of every plan it makes
    given = ({"ctx"} if name in ("vllm", "sglang") else {"ctx", "parallel"}) | (
        {"memory_bytes"} if memory else set()
    )
    base = PlanRequest(
        engine=name,
        memory_bytes=parse_size(memory) if memory else None,
        margin_bytes=parse_size(margin) if margin else None,
        gpu_bytes=tuple(parse_size(g) for g in gpu) if gpu else None,
        rpc_bytes=tuple(parse_size(n) for n, _ in workers),
        rpc_cpu=tuple(cpu for _, cpu in workers),
        apple=apple,
        given=frozenset(given),
    )
    probe = functools.cache(detect)

    def keep(spec: ModelSpec) -> bool:
        if family and family.lower() not in f"{spec.name} {spec.source}".lower():
            return False
        if arch and spec.architecture != arch:
            return False
        return moe is None or spec.is_moe == moe

    # the sweep reports each model done; no timer thread, so its workers are forked
    with busy("sweeping models", quiet=quiet, steps_only=True):
        report = run_fit(
            _sources(source or []),
            base,
            probe,
            min_ctx=min_ctx,
            ctx=ctx,
            sort=sort,  # type: ignore[arg-type]
            keep=keep,
            jobs=jobs or default_jobs(),
        )
    render(report, as_json=as_json, quiet=quiet, explain=False)
