"""Model files are only ever opened read-only, never locked or written, and special files
(FIFOs, devices, directories, symlink loops) are handled without hanging."""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from membudget.errors import MembudgetError
from membudget.loader import load_model
from tests.fuzz import seeds
from tests.ggufs import Tiny, write_model

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def watch(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """From now on, record every open and fail on any write mode or lock."""
    opened: list[tuple[str, Any]] = []
    real_os_open = os.open
    real_open = builtins.open

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append((os.fspath(path), flags))
        assert not flags & _WRITE_FLAGS, f"{path} opened with write flags {flags:#o}"
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not isinstance(file, int):
            opened.append((os.fspath(file), mode))
            assert not set(mode) & set("wax+"), f"{file} opened with mode {mode!r}"
        return real_open(file, mode, *args, **kwargs)

    def no_lock(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model file was locked")

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(fcntl, "flock", no_lock)
    monkeypatch.setattr(fcntl, "lockf", no_lock)
    return opened


def _checkpoint(d: Path) -> Path:
    data = seeds(d)["safetensors"][0]
    (d / "model-00001-of-00001.safetensors").write_bytes(data)
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "model-00001-of-00001.safetensors"}})
    )
    (d / "config.json").write_text(json.dumps(json.loads(seeds(d)["config"][0])))
    return d


def _split(d: Path) -> Path:
    import gguf

    for i in range(2):
        w = gguf.GGUFWriter(d / f"m-{i + 1:05d}-of-00002.gguf", "llama")
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, i)
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, 2)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return d / "m-00001-of-00002.gguf"


MAKERS: dict[str, Callable[[Path], Path]] = {
    "gguf": lambda d: write_model(d / "m.gguf", Tiny()),
    "split gguf": _split,
    "checkpoint directory": _checkpoint,
    "config.json": lambda d: _checkpoint(d) / "config.json",
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_model_files_are_opened_read_only_and_left_alone(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = MAKERS[kind](tmp_path)
    for p in tmp_path.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP)  # as a downloaded model often is
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    watched = watch(monkeypatch)
    # A split file with no tensors is refused; the point is how the files were opened.
    with contextlib.suppress(MembudgetError):
        load_model(target)
    monkeypatch.undo()
    assert watched, "nothing was opened?"
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()} == before
    assert sorted(tmp_path.iterdir()) == sorted(before), "no file was created beside the model"


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: _fifo(d / "p.gguf"), id="fifo"),
        pytest.param(lambda d: _fifo(d / "config.json"), id="fifo config"),
        pytest.param(lambda d: Path("/dev/zero"), id="/dev/zero"),
        pytest.param(lambda d: Path("/dev/null"), id="/dev/null"),
        pytest.param(
            lambda d: (d / "x.safetensors").mkdir() or d / "x.safetensors", id="directory"
        ),
    ],
)
def test_special_files_are_refused_without_hanging(
    make: Callable[[Path], Path], tmp_path: Path
) -> None:
    with pytest.raises(MembudgetError):
        load_model(make(tmp_path))


def test_fifo_index_in_a_checkpoint_does_not_hang(tmp_path: Path) -> None:
    _checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").unlink()
    os.mkfifo(tmp_path / "model.safetensors.index.json")
    spec = load_model(tmp_path)  # a FIFO is not an index: the shards are globbed instead
    assert spec.architecture == "llama"
