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
  ``--load-mode none`` when ``use_mmap`` is false; ``PredictServerVRAM``: Ollama's own guess of
  the GPU memory a model takes, the file's size plus an F16 cache of the smallest KV head count;
- ``llm/server.go`` (``NewLlamaServer``): ``num_ctx`` is lowered to the trained context;
- ``server/sched.go`` (``load``): ``N`` is ``OLLAMA_NUM_PARALLEL`` (default 1), forced to 1 for
  the architectures it lists and for embedding models; mmap is off by default on a machine
  without GPUs or with ``num_gpu`` 0 (``disableMmapDefaultReason``: "cpu"), and with discrete
  GPUs on Linux when the host's free memory is below the file's size plus a headroom while the
  prediction fits the GPUs (``disableMmapForHostPressure``); ``num_batch``, when the user leaves
  it, by ``automaticGenerationBatch``: 512 up to 4096 tokens in all (context times sequences,
  the context lowered to the trained one), 1024 up to 32768, 2048 above, each step down to 512
  when the prediction leaves too little of the GPUs' free memory (``generationBatchFits``;
  with no GPU there is none to leave, so the step holds); with flash attention off on CUDA, 512,
  or 256 past 4096 tokens on a GPU of 8 GiB or less;
- ``server/routes.go`` (``Serve``): ``num_ctx`` defaults to ``OLLAMA_CONTEXT_LENGTH``, else by
  the GPUs' total memory: 262,144 tokens from 47 GiB, 32,768 from 23 GiB, 4,096 below.
"""

from __future__ import annotations

from dataclasses import dataclass

from membudget.model import ModelSpec

__all__ = [
    "OLLAMA_HOST_HEADROOM",
    "OLLAMA_VERSION",
    "SERIAL_ARCHITECTURES",
    "OllamaFile",
    "OllamaLaunch",
    "OllamaMachine",
    "OllamaSettings",
    "automatic_generation_batch",
    "default_num_ctx",
    "generation_batch",
    "host_headroom",
    "host_pressure",
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

_MIB = 1 << 20
_GIB = 1 << 30
# server/sched.go: llamaServerGenerationBatchDefault / Medium / Large / Constrained
_BATCH_DEFAULT, _BATCH_MEDIUM, _BATCH_LARGE = 512, 1024, 2048
_BATCH_CONSTRAINED = 256
# server/sched.go: llamaServerGenerationBatchMediumHeadroomPercent / LargeHeadroomPercent, and
# generationBatchSurcharge: the extra memory a larger batch is assumed to take
_HEADROOM_MEDIUM, _HEADROOM_LARGE = 75, 60
_SURCHARGE = {_BATCH_LARGE: 2 * _GIB, _BATCH_MEDIUM: 768 * _MIB}
# server/sched.go, mmapHostPressureHeadroom: 8 GB (format.GigaByte, decimal) or a tenth of RAM
OLLAMA_HOST_HEADROOM = 8 * 10**9


def default_num_ctx(total_vram: int) -> int:
    """``num_ctx`` when neither the model nor ``OLLAMA_CONTEXT_LENGTH`` sets it: by the GPUs'
    total memory (server/routes.go, ``Serve``; 47 and 23 GiB, a little under 48 and 24)."""
    if total_vram >= 47 * _GIB:
        return 262144
    if total_vram >= 23 * _GIB:
        return 32768
    return 4096


def generation_batch(effective_ctx: int) -> int:
    """``num_batch`` by the context alone (server/sched.go, ``generationBatchForContext``): what
    Ollama chooses on a machine without GPUs, where ``generationBatchFits`` always holds."""
    if effective_ctx > 32768:
        return _BATCH_LARGE
    if effective_ctx > 4096:
        return _BATCH_MEDIUM
    return _BATCH_DEFAULT


def _batch_fits(batch: int, predicted: int, available: int) -> bool:
    """server/sched.go, ``generationBatchFits`` and ``generationBatchHasHeadroom``."""
    if predicted == 0 or available == 0:
        return True
    threshold = available * 80 // 100
    if predicted > threshold:
        return False
    if batch >= _BATCH_LARGE and predicted > available * _HEADROOM_LARGE // 100:
        return False
    if batch >= _BATCH_MEDIUM and predicted > available * _HEADROOM_MEDIUM // 100:
        return False
    return _SURCHARGE.get(batch, 0) <= threshold - predicted


def automatic_generation_batch(
    effective_ctx: int,
    predicted: int,
    available: int,
    flash_attn: str,
    cuda_memory: int | None,
) -> int:
    """``num_batch`` Ollama chooses (server/sched.go, ``automaticGenerationBatch``):
    ``predicted`` is its guess of the model's GPU memory (:meth:`OllamaFile.predicted_vram`),
    ``available`` the GPUs' free memory (0: none), ``flash_attn`` the mode it passes, and
    ``cuda_memory`` the free memory of its CUDA GPU (None: no CUDA device)."""
    if flash_attn == "off" and cuda_memory is not None:
        # constrainedCUDAWithoutFlashAttention
        if effective_ctx > 4096 and 0 < cuda_memory <= 8 * _GIB:
            return _BATCH_CONSTRAINED
        return _BATCH_DEFAULT
    batch = generation_batch(effective_ctx)
    while batch > _BATCH_DEFAULT and not _batch_fits(batch, predicted, available):
        batch = _BATCH_MEDIUM if batch > _BATCH_MEDIUM else _BATCH_DEFAULT  # nextLower...
    return batch


def host_headroom(host_total: int) -> int:
    """server/sched.go, ``mmapHostPressureHeadroom``: 8 GB, or a tenth of the host's memory."""
    return max(OLLAMA_HOST_HEADROOM, host_total // 10) if host_total else OLLAMA_HOST_HEADROOM


def host_pressure(
    file_size: int, predicted: int, available: int, host_free: int, host_total: int
) -> bool:
    """Whether Ollama turns mmap off for a load on discrete GPUs under Linux
    (server/sched.go, ``disableMmapForHostPressure``, with no other model mapped): only while
    its prediction fits 80% of the GPUs' free memory, when the host's free memory is below the
    file's size plus :func:`host_headroom`."""
    if file_size == 0 or host_free == 0:
        return False
    if predicted == 0 or available == 0 or predicted > available * 80 // 100:
        return False
    return host_free < file_size + host_headroom(host_total)


@dataclass(frozen=True, slots=True)
class OllamaFile:
    """What Ollama reads of a GGUF file to guess its GPU memory (llm/llama_server.go,
    ``PredictServerVRAM``): the file's size and four header values, as its ``fs/ggml`` KV
    getters read them."""

    size: int
    block_count: int
    """``{arch}.block_count``."""
    head_count_max: int
    """The largest ``{arch}.attention.head_count`` (``HeadCountMax``; 1 when absent)."""
    head_count_kv_min: int
    """The smallest ``{arch}.attention.head_count_kv`` (``HeadCountKVMin``; a recurrent
    layer's 0 included; 1 when absent)."""
    embedding_length: int

    def predicted_vram(self, n_ctx: int) -> int:
        """The file's size plus K and V at F16 for ``n_ctx`` tokens in every block, with the
        smallest KV head count (0 taken as 1) and ``embedding_length / head_count_max`` a head."""
        heads = self.head_count_kv_min or 1
        head_dim = self.embedding_length // self.head_count_max if self.head_count_max else 0
        return self.size + 2 * self.block_count * heads * head_dim * n_ctx * 2


@dataclass(frozen=True, slots=True)
class OllamaMachine:
    """What Ollama reads of the machine when it loads a model (server/sched.go, ``load``),
    taken from the plan's budget: one discrete CUDA GPU at most (several, or Apple's unified
    memory, take rules membudget does not model), on Linux, with no other model loaded."""

    total_vram: int = 0
    """The GPUs' total memory (``num_ctx``'s default)."""
    gpu_free: int = 0
    """The GPU's free memory (``availableMemoryForLoad``); 0: no GPU."""
    host_free: int = 0
    host_total: int = 0


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
    num_gpu: int | None = None
    """The ``num_gpu`` option, passed as ``-ngl``; None: Ollama's -1, which passes none and
    leaves the layers to llama-server's ``--fit``."""


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
        if self.settings.num_gpu is not None:
            out["num_gpu"] = self.settings.num_gpu
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
        if self.settings.num_gpu is not None:
            args += ["-ngl", str(self.settings.num_gpu)]
        return args


def ollama_launch(
    spec: ModelSpec,
    s: OllamaSettings,
    machine: OllamaMachine | None = None,
    file: OllamaFile | None = None,
) -> OllamaLaunch:
    """How Ollama starts ``spec`` under ``s`` on ``machine`` (None: no GPU). With a GPU its
    batch and mmap choices read ``file`` (required then); the layers are left to
    llama-server's ``--fit`` unless ``num_gpu`` is set, which the caller models."""
    machine = machine or OllamaMachine()
    gpu = machine.gpu_free > 0 or machine.total_vram > 0
    if gpu and file is None:
        raise ValueError("Ollama's choices with a GPU read the GGUF file: give its OllamaFile")
    notes: list[str] = []
    requested = s.num_ctx or default_num_ctx(machine.total_vram)
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
    fa = "auto" if s.flash_attention is None else "on" if s.flash_attention else "off"
    predicted = file.predicted_vram(effective) if gpu and file is not None else 0
    available = machine.gpu_free if gpu else 0
    if s.num_batch is not None:
        batch = s.num_batch
    else:
        batch = automatic_generation_batch(
            effective, predicted, available, fa, machine.gpu_free if gpu else None
        )
    if s.use_mmap is not None:
        use_mmap = s.use_mmap
    elif not gpu or s.num_gpu == 0:
        use_mmap = False  # disableMmapDefaultReason: "cpu"
    else:
        assert file is not None
        use_mmap = not host_pressure(
            file.size, predicted, available, machine.host_free, machine.host_total
        )
        if not use_mmap:
            notes.append(
                "Ollama turns mmap off: the host's free memory is below the file's size plus "
                f"{host_headroom(machine.host_total):,} bytes of headroom (server/sched.go, "
                "disableMmapForHostPressure)"
            )
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
