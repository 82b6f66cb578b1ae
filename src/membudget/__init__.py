"""membudget: will this model fit in my memory, and if not, what should I change?"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from membudget.errors import (
    ConfigError,
    GGUFError,
    InvalidArgumentError,
    MembudgetError,
    ModelFileError,
    SafetensorsError,
    SizeParseError,
    UnknownModelError,
)
from membudget.units import format_bytes, parse_size

if TYPE_CHECKING:
    from membudget.budget import MemoryBudget
    from membudget.loader import load_model
    from membudget.model import ModelSpec

# The readers pull in gguf and numpy: imported on first use, so the command line starts fast.
_LAZY = {
    "MemoryBudget": "membudget.budget",
    "load_model": "membudget.loader",
    "ModelSpec": "membudget.model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'membudget' has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "GGUFError",
    "InvalidArgumentError",
    "MembudgetError",
    "MemoryBudget",
    "ModelFileError",
    "ModelSpec",
    "SafetensorsError",
    "SizeParseError",
    "UnknownModelError",
    "__version__",
    "format_bytes",
    "load_model",
    "parse_size",
]
