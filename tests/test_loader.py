"""load_model: paths, checkpoint directories, the offline Hugging Face cache, catalogue names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from membudget import ConfigError, ModelFileError, UnknownModelError, load_model
from tests.ggufs import Tiny, write_model
from tests.test_hf_config import LLAMA


def _checkpoint(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(LLAMA))
    save_file(
        {
            "model.embed_tokens.weight": np.zeros((1000, 256), dtype=np.float16),
            "model.layers.0.self_attn.q_proj.weight": np.zeros((256, 256), dtype=np.float16),
            "lm_head.weight": np.zeros((1000, 256), dtype=np.float16),
        },
        str(directory / "model.safetensors"),
    )
    return directory


def test_checkpoint_directory_uses_real_bytes(tmp_path: Path) -> None:
    spec = load_model(_checkpoint(tmp_path / "ckpt"))
    assert spec.source_kind == "safetensors"
    assert spec.weights.total == (1000 * 256 * 2) * 2 + 256 * 256 * 2
    assert spec.weights.token_embd == 1000 * 256 * 2
    assert spec.weights.layers[0] == 256 * 256 * 2
    assert spec.n_params == 1000 * 256 * 2 + 256 * 256


def test_single_safetensors_file_needs_its_config(tmp_path: Path) -> None:
    save_file({"x": np.zeros((2,), dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(ConfigError, match=r"config\.json"):
        load_model(tmp_path / "m.safetensors")


def test_hf_cache_by_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hub" / "models--acme--tiny"
    _checkpoint(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = load_model("acme/tiny")
    assert spec.name == "acme/tiny"
    assert spec.source_kind == "safetensors"


def test_gguf_directory_and_file(tmp_path: Path) -> None:
    write_model(tmp_path / "m.gguf", Tiny())
    assert load_model(tmp_path).source_kind == "gguf"
    assert load_model(tmp_path / "m.gguf").n_layer == 2


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        pytest.param(lambda p: p, ModelFileError, "no such file", id="nothing there"),
        pytest.param(
            lambda p: (p.mkdir(), p)[1], ModelFileError, "no config.json", id="empty directory"
        ),
        pytest.param(
            lambda p: (p.write_text("hello"), p)[1],
            ModelFileError,
            "unknown format",
            id="text file",
        ),
    ],
)
def test_errors(tmp_path: Path, make: object, error: type[Exception], fragment: str) -> None:
    target = make(tmp_path / "thing")  # type: ignore[operator]
    with pytest.raises(error, match=fragment):
        load_model(target)


def test_missing_file_with_model_suffix(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"absent\.gguf': no such file"):
        load_model(tmp_path / "absent.gguf")


def test_unknown_bare_name() -> None:
    with pytest.raises(UnknownModelError, match="Cannot find model 'no-such-model'"):
        load_model("no-such-model")


@pytest.mark.parametrize("given", ["/dev/null", "models/absent.gguf"])
def test_errors_name_the_path_as_given(given: str) -> None:
    """Not a bare base name ('null'): the path the user typed, whole."""
    with pytest.raises(ModelFileError) as info:
        load_model(given)
    assert f"{given!r}" in str(info.value)
