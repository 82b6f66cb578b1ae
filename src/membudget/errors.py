"""The exceptions membudget raises, and when.

Every exception the library raises on purpose derives from :class:`MembudgetError`, which is a
:class:`ValueError`, so ``except ValueError`` keeps working for callers that do not care::

    MembudgetError (ValueError)
    ├── InvalidArgumentError      an argument is of the wrong type, negative, non-integral, NaN, ...
    ├── SizeParseError            "8 GiB"-style text could not be read as a size
    ├── UnknownModelError         a catalogue name or source matched nothing (has suggestions)
    └── ModelFileError            a model file or directory cannot be used (has ``path``)
        ├── GGUFError             malformed, truncated or unsupported GGUF
        ├── SafetensorsError      malformed, truncated or unsupported safetensors
        └── ConfigError           malformed or inconsistent config.json

Messages follow one shape: what failed, for which file, what was found, what to do, e.g.
``Cannot read GGUF header of 'x.gguf': tensor 'blk.3.ffn_up.weight' has 5 dimensions (at most 4).``
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ConfigError",
    "GGUFError",
    "InvalidArgumentError",
    "MembudgetError",
    "ModelFileError",
    "SafetensorsError",
    "SizeParseError",
    "UnknownModelError",
]


class MembudgetError(ValueError):
    """Base of every error membudget raises on purpose."""


class InvalidArgumentError(MembudgetError):
    """Raised when a function argument has the wrong type or an impossible value.

    The message names the argument and shows the value with ``!r`` (unless the value is
    :attr:`NO_VALUE`, for a flag that is wrong to give at all).
    """

    NO_VALUE: object = object()

    def __init__(self, name: str, value: object, problem: str) -> None:
        self.name = name
        self.value = value
        shown = "" if value is InvalidArgumentError.NO_VALUE else f", got {value!r}"
        super().__init__(f"{name} {problem}{shown}")


class SizeParseError(MembudgetError):
    """Raised when text such as ``"8 GiB"`` cannot be parsed as a size in bytes."""


class UnknownModelError(MembudgetError):
    """Raised when a model source is neither a readable path nor a catalogue name."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = (
            f" Did you mean {', '.join(repr(s) for s in self.suggestions)}?"
            if self.suggestions
            else " Run 'membudget models' to list the catalogue."
        )
        super().__init__(
            f"Cannot find model {name!r}: it is not a file, a directory, a cached Hugging Face "
            f"repo or a catalogue name.{hint}"
        )


class ModelFileError(MembudgetError):
    """Raised when a model file exists but cannot be used; ``path`` names it."""

    kind = "model file"

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"Cannot read {self.kind} {self.path!r}: {problem}")


class GGUFError(ModelFileError):
    """Raised for a malformed, truncated or unsupported GGUF file."""

    kind = "GGUF header of"


class SafetensorsError(ModelFileError):
    """Raised for a malformed, truncated or unsupported safetensors file."""

    kind = "safetensors header of"


class ConfigError(ModelFileError):
    """Raised for a malformed or inconsistent Hugging Face ``config.json``."""

    kind = "model config"
