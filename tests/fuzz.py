"""Fuzz targets and mutators for the readers, shared by the test suite (a short hypothesis run,
``tests/test_fuzz.py``) and the long run (``benchmarks/fuzz.py``).

A target takes bytes, writes them where the loader expects a model file, loads it, and returns
normally or raises one of membudget's documented exceptions. Anything else is a finding.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from membudget.errors import MembudgetError
from membudget.loader import load_model
from tests.ggufs import Tiny, write_model
from tests.hostile import CONFIG, valid_gguf

__all__ = ["ALLOWED", "INTERESTING", "TARGETS", "mutate", "seeds"]

ALLOWED: type[Exception] = MembudgetError
"""The documented exception tree (``membudget.errors``): the only exceptions allowed."""

INTERESTING = (0, 1, 7, 8, 255, 2**16, 2**31 - 1, 2**32, 2**32 - 1, 2**62, 2**63 - 1, 2**64 - 1)


def _safetensors_seed() -> bytes:
    header = {
        "__metadata__": {"format": "pt"},
        "model.embed_tokens.weight": {"dtype": "F16", "shape": [32, 64], "data_offsets": [0, 4096]},
        "model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [4096, 4352]},
    }
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * 4352


def seeds(tmp: Path) -> dict[str, list[bytes]]:
    """Valid inputs each target's mutations start from."""
    tiny = write_model(
        tmp / "seed.gguf", Tiny(n_layer=1, n_embd=64, n_ff=64, n_vocab=32, head_dim=32)
    ).read_bytes()
    return {
        "gguf": [valid_gguf(), valid_gguf(">"), tiny],
        "safetensors": [_safetensors_seed()],
        "config": [json.dumps(CONFIG).encode()],
    }


def mutate(data: bytes, rng: random.Random, rounds: int = 3) -> bytes:
    """A few random edits: overwrite an integer with an interesting value, flip bytes,
    truncate, duplicate or delete a slice, splice in junk."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        if not buf:
            buf.extend(rng.randbytes(rng.randint(1, 16)))
            continue
        op = rng.randrange(7)
        at = rng.randrange(len(buf))
        if op == 0 and len(buf) >= 8:
            at = min(at, len(buf) - 8)
            struct.pack_into(rng.choice("<>") + "Q", buf, at, rng.choice(INTERESTING))
        elif op == 1 and len(buf) >= 4:
            at = min(at, len(buf) - 4)
            struct.pack_into("<I", buf, at, rng.choice(INTERESTING) & 0xFFFFFFFF)
        elif op == 2:
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 3:
            del buf[at:]
        elif op == 4:
            end = min(len(buf), at + rng.randint(1, 64))
            buf[at:at] = buf[at:end]
        elif op == 5:
            del buf[at : at + rng.randint(1, 64)]
        else:
            buf[at:at] = rng.randbytes(rng.randint(1, 32))
    return bytes(buf)


def _mutate_json(data: bytes, rng: random.Random) -> bytes:
    """Config mutations that stay JSON half the time: replace a value with a hostile one."""
    if rng.random() < 0.5:
        return mutate(data, rng)
    cfg: dict[str, Any] = json.loads(data)
    hostile: list[Any] = [
        0,
        -1,
        2**64,
        10**400,
        1.5,
        float("inf"),
        "64",
        True,
        None,
        [],
        {},
        [1] * 3,
        {"text_config": {"text_config": {}}},
    ]
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(
            [
                *cfg,
                "text_config",
                "layer_types",
                "sliding_window",
                "kv_lora_rank",
                "num_local_experts",
                "quantization_config",
                "head_dim",
            ]
        )
        cfg[key] = rng.choice(hostile)
    return json.dumps(cfg).encode()


Target = Callable[[bytes, Path], None]


def _gguf(data: bytes, tmp: Path) -> None:
    path = tmp / "fuzz.gguf"
    path.write_bytes(data)
    load_model(path)


def _safetensors(data: bytes, tmp: Path) -> None:
    (tmp / "config.json").write_text(json.dumps(CONFIG))
    path = tmp / "model.safetensors"
    path.write_bytes(data)
    load_model(path)


def _config(data: bytes, tmp: Path) -> None:
    path = tmp / "config.json"
    path.write_bytes(data)
    load_model(path)


TARGETS: dict[str, tuple[Target, Callable[[bytes, random.Random], bytes]]] = {
    "gguf": (_gguf, mutate),
    "safetensors": (_safetensors, mutate),
    "config": (_config, _mutate_json),
}
