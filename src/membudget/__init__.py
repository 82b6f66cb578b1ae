"""membudget: will this model fit in my memory, and if not, what should I change?"""

from __future__ import annotations

from membudget.budget import MemoryBudget
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
from membudget.loader import load_model
from membudget.model import ModelSpec
from membudget.units import format_bytes, parse_size

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
