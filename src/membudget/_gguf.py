"""gguf-py's constants (llama.cpp's own key names and type tables), without the rest of gguf.

``import gguf`` loads its reader, writer and quantisers, and with them numpy: about 0.15 s of a
command's start-up. membudget needs only ``gguf/constants.py``, which imports nothing but the
standard library, so that one file of the installed package is loaded by itself. When ``gguf`` is
already imported, its own ``gguf.constants`` is used, so there is never a second copy beside it.
The enums are ``IntEnum``\\ s, which compare by value either way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = [
    "GGML_QUANT_SIZES",
    "GGUF_DEFAULT_ALIGNMENT",
    "GGUF_MAGIC",
    "GGMLQuantizationType",
    "GGUFValueType",
    "Keys",
    "LlamaFileType",
]


def _load() -> ModuleType:
    loaded = sys.modules.get("gguf.constants")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("gguf")
    if package is None or not package.submodule_search_locations:
        raise ImportError("membudget needs the gguf package (pip install gguf)")
    path = Path(next(iter(package.submodule_search_locations))) / "constants.py"
    spec = importlib.util.spec_from_file_location("membudget._gguf_constants", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from gguf.constants import (
        GGML_QUANT_SIZES,
        GGUF_DEFAULT_ALIGNMENT,
        GGUF_MAGIC,
        GGMLQuantizationType,
        GGUFValueType,
        Keys,
        LlamaFileType,
    )
else:
    _constants = _load()
    GGML_QUANT_SIZES = _constants.GGML_QUANT_SIZES
    GGUF_DEFAULT_ALIGNMENT = _constants.GGUF_DEFAULT_ALIGNMENT
    GGUF_MAGIC = _constants.GGUF_MAGIC
    GGMLQuantizationType = _constants.GGMLQuantizationType
    GGUFValueType = _constants.GGUFValueType
    Keys = _constants.Keys
    LlamaFileType = _constants.LlamaFileType
