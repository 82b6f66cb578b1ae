"""The server under concurrent load on loopback keeps answering correctly, and binds to
loopback unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("uvicorn")

from tests.loadtest import run_load, serving


def test_serves_on_loopback_by_default_and_survives_concurrent_load(tmp_path: Path) -> None:
    with serving(tmp_path) as url:
        assert urlsplit(url).hostname == "127.0.0.1"
        result = run_load(url, total=240, clients=12)
    assert result.requests == 240
    assert result.errors == 0, result.problems[:5]
