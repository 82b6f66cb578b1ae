"""Ollama as a front end of llama-server: the settings Ollama starts llama-server with for a
model, from Ollama's own defaults and the user's settings (its environment variables and the
model's options).

Read from Ollama's source at commit fb3076099 (2026-08), which runs every GGUF model through
the upstream llama-server:

- ``llm/llama_server.go`` (``NewLlamaServerRunner``): ``-c num_ctx*N -np N``; the K and V
  cache types both ``OLLAMA_KV_CACHE_TYPE`` when set; ``--flash-attn`` on/off when
  ``OLLAMA_FLASH_ATTENTION`` is set, else auto (off where a device has no kernel:
  ``ml.FlashAttentionSupported``; every CPU has one); ``-b num_batch -ub num_batch``;
  ``-ngl`` only when ``num_gpu`` is set, otherwise llama-server's ``--fit`` places the layers;
  ``--load-mode none`` when ``use_mmap`` is false;
- ``llm/server.go`` (``NewLlamaServer``): ``num_ctx`` is lowered to the trained context;
- ``server/sched.go`` (``load``): ``N`` is ``OLLAMA_NUM_PARALLEL`` (default 1), forced to 1 for
  the architectures it lists and for embedding models; mmap is off by default on a machine
  without GPUs (``disableMmapDefaultReason``: "cpu"); ``num_batch``, when the user leaves it,
  by ``automaticGenerationBatch``: 512 up to 4096 tokens in all (context times sequences, the
  context lowered to the trained one), 1024 up to 32768, 2048 above, each step down to 512 when
  Ollama's own VRAM prediction leaves too little of the free GPU memory (with no GPU there is
  none to leave, so the step holds);
- ``server/routes.go`` (``Serve``): ``num_ctx`` defaults to ``OLLAMA_CONTEXT_LENGTH``, else by
  the GPUs' total memory: 262,144 tokens from 47 GiB, 32,768 from 23 GiB, 4,096 below.
"""

from __future__ import annotations

from dataclasses import dataclass

from membudget.model import ModelSpec

__all__ = [
    "OLLAMA_VERSION",
    "SERIAL_ARCHITECTURES",
    "OllamaLaunch",
    "OllamaSettings",
    "default_num_ctx",
    "generation_batch",
    "ollama_launch",
]

OLLAMA_VERSION = "fb3076099 (2026-08)"

# server/sched.go, load(): "Some architectures are not safe with num_parallel > 1"
SERIAL_ARCHITECTURES = frozenset(
    {
        "mllama",
        "qwen3vl",
        "qwen3vlmoe",
        "qwen35",
        "qwen35moe",
        "qwen3next",
        "lfm2",
        "lfm2moe",
        "nemotron_h",
        "nemotron_h_moe",
        "nemotron_h_omni",
    }
)

_GIB = 1 << 30
# server/sched.go: llamaServerGenerationBatchDefault / Medium / Large
_BATCH_DEFAULT, _BATCH_MEDIUM, _BATCH_LARGE = 512, 1024, 2048


def default_num_ctx(total_vram: int) -> int:
    """``num_ctx`` when neither the model nor ``OLLAMA_CONTEXT_LENGTH`` sets it: by the GPUs'
    total memory (server/routes.go, ``Serve``; 47 and 23 GiB, a little under 48 and 24)."""
    if total_vram >= 47 * _GIB:
        return 262144
    if total_vram >= 23 * _GIB:
        return 32768
    return 4096


def generation_batch(effective_ctx: int) -> int:
    """``num_batch`` Ollama chooses on a machine without GPUs (server/sched.go,
    ``generationBatchForContext``; ``generationBatchFits`` holds with no free GPU memory)."""
    if effective_ctx > 32768:
        return _BATCH_LARGE
    if effective_ctx > 4096:
        return _BATCH_MEDIUM
    return _BATCH_DEFAULT


@dataclass(frozen=True, slots=True)
class OllamaSettings:
    """What an Ollama user sets: the model's options and the server's environment."""

    num_ctx: int | None = None
    """The ``num_ctx`` option (or ``OLLAMA_CONTEXT_LENGTH``); None: Ollama's default."""
    num_parallel: int = 1
    """``OLLAMA_NUM_PARALLEL``."""
    kv_cache_type: str | None = None
    """``OLLAMA_KV_CACHE_TYPE``, for K and V alike; None: llama-server's f16."""
    flash_attention: bool | None = None
    """``OLLAMA_FLASH_ATTENTION``; None: unset (llama-server's auto)."""
    num_batch: int | None = None
    """The ``num_batch`` option; None: Ollama's automatic choice."""
    use_mmap: bool | None = None
    """The ``use_mmap`` option; None: Ollama's default (off without GPUs)."""


@dataclass(frozen=True, slots=True)
class OllamaLaunch:
    """The llama-server settings Ollama starts a model with."""

    num_ctx: int
    """Tokens a sequence, after the cap at the trained context."""
    num_parallel: int
    num_batch: int
    cache_type: str | None
    flash_attn: str
    """``on``, ``off`` or ``auto``."""
    use_mmap: bool
    settings: OllamaSettings
    notes: tuple[str, ...] = ()

    @property
    def n_ctx(self) -> int:
        """llama-server's ``-c``."""
        return self.num_ctx * self.num_parallel

    def env(self) -> dict[str, str]:
        """The environment of ``ollama serve`` that gives these settings."""
        out = {"OLLAMA_NUM_PARALLEL": str(self.settings.num_parallel)}
        if self.cache_type is not None:
            out["OLLAMA_KV_CACHE_TYPE"] = self.cache_type
        if self.settings.flash_attention is not None:
            out["OLLAMA_FLASH_ATTENTION"] = "1" if self.settings.flash_attention else "0"
        return out

    def options(self) -> dict[str, int | bool]:
        """The model options (a Modelfile's ``PARAMETER``, or the API's ``options``)."""
        out: dict[str, int | bool] = {"num_ctx": self.settings.num_ctx or self.num_ctx}
        if self.settings.num_batch is not None:
            out["num_batch"] = self.settings.num_batch
        if self.settings.use_mmap is not None:
            out["use_mmap"] = self.settings.use_mmap
        return out

    def server_args(self) -> list[str]:
        """The llama-server flags Ollama passes that decide what is allocated, in its order."""
        args = ["-c", str(self.n_ctx), "-np", str(self.num_parallel)]
        if not self.use_mmap:
            args += ["--load-mode", "none"]
        if self.cache_type is not None:
            args += ["--cache-type-k", self.cache_type, "--cache-type-v", self.cache_type]
        args += ["--flash-attn", self.flash_attn]
        args += ["-b", str(self.num_batch), "-ub", str(self.num_batch)]
        return args


def ollama_launch(spec: ModelSpec, s: OllamaSettings, total_vram: int = 0) -> OllamaLaunch:
    """How Ollama starts ``spec`` under ``s`` on a machine whose GPUs hold ``total_vram``
    bytes in all (0: none). The batch and mmap choices are those of a machine without GPUs;
    with GPUs Ollama leaves the placement to llama-server's ``--fit``, which the caller must
    refuse until it is modelled."""
    notes: list[str] = []
    requested = s.num_ctx or default_num_ctx(total_vram)
    num_ctx = requested
    if spec.n_ctx_train and num_ctx > spec.n_ctx_train:
        num_ctx = spec.n_ctx_train
        notes.append(
            f"Ollama lowers num_ctx {requested:,} to the trained context, {num_ctx:,} "
            "(llm/server.go)"
        )
    parallel = s.num_parallel
    if parallel > 1 and spec.architecture in SERIAL_ARCHITECTURES:
        parallel = 1
        notes.append(
            f"Ollama runs {spec.architecture} one sequence at a time whatever "
            f"OLLAMA_NUM_PARALLEL says (server/sched.go)"
        )
    effective = num_ctx * parallel
    batch = s.num_batch if s.num_batch is not None else generation_batch(effective)
    fa = "auto" if s.flash_attention is None else "on" if s.flash_attention else "off"
    use_mmap = s.use_mmap if s.use_mmap is not None else total_vram > 0
    return OllamaLaunch(
        num_ctx=num_ctx,
        num_parallel=parallel,
        num_batch=batch,
        cache_type=s.kv_cache_type.lower() if s.kv_cache_type else None,
        flash_attn=fa,
        use_mmap=use_mmap,
        settings=s,
        notes=tuple(notes),
    )
