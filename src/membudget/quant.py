"""Weight and cache types: block sizes, bytes per block, bits per weight.

ggml's types come from the ``gguf`` package (llama.cpp's own Python package), which publishes
``GGML_QUANT_SIZES`` as ``{type: (block_size, bytes_per_block)}``. Nothing here retypes that
table; ``_SUPPLEMENT`` only fills in types an older installed ``gguf`` may lack, each with its
source. A tensor's bytes are ``n_elements // block_size * bytes_per_block``.

Formats users meet outside GGUF (GPTQ, AWQ, bitsandbytes, FP8, MXFP4, NVFP4) are described by
their storage per weight, with the source of each figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache

from membudget._gguf import GGML_QUANT_SIZES, GGMLQuantizationType

__all__ = [
    "CACHE_TYPES",
    "EXTERNAL_FORMATS",
    "ExternalFormat",
    "GGMLType",
    "ggml_type",
    "ggml_type_by_name",
    "ggml_types",
]


@dataclass(frozen=True, slots=True)
class GGMLType:
    """One ggml tensor type: ``block_size`` elements are stored in ``type_size`` bytes."""

    type_id: int
    name: str
    block_size: int
    type_size: int

    @property
    def bits_per_weight(self) -> Fraction:
        """Exact storage per element, scales included (Q8_0: 34 bytes per 32 = 8.5 bits)."""
        return Fraction(self.type_size * 8, self.block_size)

    def nbytes(self, n_elements: int) -> int:
        """Bytes of ``n_elements`` elements; ``n_elements`` must be a whole number of blocks."""
        return n_elements // self.block_size * self.type_size

    def row_bytes(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` elements (ggml_row_size)."""
        return self.nbytes(n_per_row)


# Types an older ``gguf`` package may not know. id: (name, block_size, bytes_per_block).
# Sources: llama.cpp ggml/include/ggml.h (type ids) and ggml/src/ggml-common.h (block structs):
#   TQ1_0 34: block_tq1_0 = 256 weights in 48 + 4 bytes of trits + fp16 scale = 54 bytes
#   TQ2_0 35: block_tq2_0 = 256 weights in 64 bytes of 2-bit codes + fp16 scale = 66 bytes
#   MXFP4 39: block_mxfp4 = 32 weights in 16 bytes of e2m1 + one e8m0 scale byte = 17 bytes
#   NVFP4 40: block_nvfp4 = 64 weights in 32 bytes of e2m1 + 4 fp8 scales = 36 bytes
#   Q1_0  41: block_q1_0 = 128 weights in 16 bytes of signs + fp16 scale = 18 bytes
#             (1.125 bits per weight; earlier named Q1_0_g128 in the 1-bit runtime)
_SUPPLEMENT: dict[int, tuple[str, int, int]] = {
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}


@cache
def ggml_types() -> dict[int, GGMLType]:
    """Every ggml type this installation knows, by id."""
    table: dict[int, GGMLType] = {}
    for qtype, (block, size) in GGML_QUANT_SIZES.items():
        table[int(qtype)] = GGMLType(int(qtype), GGMLQuantizationType(qtype).name, block, size)
    for type_id, (name, block, size) in _SUPPLEMENT.items():
        table.setdefault(type_id, GGMLType(type_id, name, block, size))
    return table


def ggml_type(type_id: int) -> GGMLType | None:
    """The ggml type with this id, or ``None`` when it is unknown."""
    return ggml_types().get(type_id)


@cache
def _by_name() -> dict[str, GGMLType]:
    return {t.name.lower(): t for t in ggml_types().values()}


def ggml_type_by_name(name: str) -> GGMLType | None:
    """Look a type up by name, case-insensitively: ``"q8_0"``, ``"Q4_K"``, ``"bf16"``."""
    return _by_name().get(name.lower())


# The KV-cache types llama.cpp accepts for --cache-type-k/-v (common/arg.cpp, kv_cache_types).
CACHE_TYPES: tuple[str, ...] = (
    "f32",
    "f16",
    "bf16",
    "q8_0",
    "q4_0",
    "q4_1",
    "iq4_nl",
    "q5_0",
    "q5_1",
)


@dataclass(frozen=True, slots=True)
class ExternalFormat:
    """A weight format outside GGUF, with its storage cost per quantised weight."""

    name: str
    bits_per_weight: Fraction
    source: str


def _gptq_bits(bits: int, group: int) -> Fraction:
    # GPTQ/AWQ store ``bits`` per weight plus, per group, an fp16 scale and a packed zero point
    # of ``bits`` bits (AutoGPTQ/AutoAWQ qzeros, packed 32 // bits per int32).
    return Fraction(bits) + Fraction(16 + bits, group)


EXTERNAL_FORMATS: dict[str, ExternalFormat] = {
    f.name: f
    for f in (
        ExternalFormat(
            "gptq-4bit-g128", _gptq_bits(4, 128), "AutoGPTQ qweight/qzeros/scales layout"
        ),
        ExternalFormat("gptq-4bit-g32", _gptq_bits(4, 32), "AutoGPTQ qweight/qzeros/scales layout"),
        ExternalFormat(
            "gptq-8bit-g128", _gptq_bits(8, 128), "AutoGPTQ qweight/qzeros/scales layout"
        ),
        ExternalFormat(
            "awq-4bit-g128", _gptq_bits(4, 128), "AutoAWQ GEMM layout, same storage as GPTQ"
        ),
        # bitsandbytes: 4-bit codes plus one fp32 absmax per 64-weight block; with double quant
        # the absmax is stored as 8 bits plus an fp32 per 256 blocks (QLoRA paper, sec. 3).
        ExternalFormat("bnb-nf4", Fraction(4) + Fraction(32, 64), "bitsandbytes blocksize 64"),
        ExternalFormat(
            "bnb-nf4-double-quant",
            Fraction(4) + Fraction(8, 64) + Fraction(32, 64 * 256),
            "QLoRA (Dettmers et al. 2023), double quantisation",
        ),
        ExternalFormat("bnb-fp4", Fraction(4) + Fraction(32, 64), "bitsandbytes blocksize 64"),
        # LLM.int8(): int8 weights with one fp16 scale per output row; rows are long, so the
        # per-row term is negligible and counted at the tensor level, not here.
        ExternalFormat("bnb-int8", Fraction(8), "LLM.int8() (Dettmers et al. 2022)"),
        ExternalFormat("fp8", Fraction(8), "e4m3/e5m2, per-tensor or per-channel scales"),
        ExternalFormat(
            "fp8-block128",
            Fraction(8) + Fraction(32, 128 * 128),
            "DeepSeek-V3 128x128 fp32 block scales",
        ),
        # OCP Microscaling: 32 e2m1 values share one e8m0 scale byte (OCP MX spec v1.0).
        ExternalFormat("mxfp4", Fraction(4) + Fraction(8, 32), "OCP Microscaling Formats v1.0"),
        # NVFP4: 16 e2m1 values share one e4m3 scale, plus an fp32 per tensor (NVIDIA Blackwell).
        ExternalFormat("nvfp4", Fraction(4) + Fraction(8, 16), "NVIDIA NVFP4 (16-element blocks)"),
        ExternalFormat("bf16", Fraction(16), "bfloat16"),
        ExternalFormat("f16", Fraction(16), "IEEE half"),
        ExternalFormat("f32", Fraction(32), "IEEE single"),
    )
}
