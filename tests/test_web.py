"""The web API behind ``membudget serve``: same documents as the CLI, safe paths, bounded
requests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from membudget.cli import main
from membudget.web.app import create_app
from tests.ggufs import Tiny, write_model
from tests.schema_check import check


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    write_model(root / "tiny.gguf", Tiny())
    return root


@pytest.fixture
def client(models_dir: Path) -> TestClient:
    return TestClient(create_app((models_dir,), max_body_bytes=4096))


def test_plan_is_the_same_document_as_the_cli(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    r = client.post("/api/plan", json={"model": "qwen3-8b", "memory": "16GiB", "ctx": 8192})
    assert r.status_code == 200
    web = check(r.json())
    main(["plan", "qwen3-8b", "--engine", "llama.cpp", "--memory", "16GiB", "-c", "8192", "--json"])
    cli = json.loads(capsys.readouterr().out)
    assert web["memory"] == cli["memory"]
    assert web["budget"] == cli["budget"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "llama-3.1-8b", "engine": "vllm", "gpus": ["24GiB"]}, id="vllm"),
        pytest.param({"model": "llama-3.1-8b", "engine": "reference", "memory": "8GiB"}, id="ref"),
        pytest.param(
            {"model": "qwen3-8b", "engine": "sglang", "gpus": ["80GiB"], "ctx": 32768},
            id="sglang",
        ),
        pytest.param(
            {
                "model": "gemma-3-4b",
                "memory": "8GiB",
                "cache_type_k": "q8_0",
                "cache_type_v": "q8_0",
                "flash_attn": "on",
                "parallel": 4,
            },
            id="cache-types",
        ),
        pytest.param({"model": "qwen3-8b", "memory": "8GiB", "gpus": ["6GiB"]}, id="gpu"),
        pytest.param({"model": "qwen3-8b", "memory": "8GiB", "quant": "Q4_K_M"}, id="quant"),
    ],
)
def test_plan_answers_match_their_schemas(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/api/plan", json=body)
    assert r.status_code == 200, r.text
    check(r.json())


def test_catalogue_hardware_and_curve(client: TestClient) -> None:
    check(client.get("/api/models").json())
    check(client.get("/api/hardware").json())
    curve = check(client.post("/api/curve", json={"model": "qwen3-0.6b", "memory": "4GiB"}).json())
    assert curve["max_context"] > 0


def test_local_files_inside_allowed_dirs(client: TestClient, models_dir: Path) -> None:
    files = client.get("/api/files").json()
    assert files["files"] == [str(models_dir / "tiny.gguf")]
    for path in (str(models_dir / "tiny.gguf"), "tiny.gguf"):
        r = client.post("/api/plan", json={"path": path, "memory": "1GiB"})
        assert r.status_code == 200, r.text
        assert check(r.json())["model"]["architecture"] == "llama"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/etc/passwd", id="absolute outside"),
        pytest.param("../../../../etc/passwd", id="dot-dot"),
        pytest.param("sub/../../outside.gguf", id="dot-dot inside a name"),
        pytest.param("escape.gguf", id="symlink out"),
        pytest.param("linkdir/outside.gguf", id="symlinked directory out"),
        pytest.param("tiny.gguf\x00.txt", id="nul byte"),
    ],
)
def test_paths_outside_the_allowed_dirs_are_refused(
    client: TestClient, models_dir: Path, path: str
) -> None:
    outside = models_dir.parent / "outside.gguf"
    write_model(outside, Tiny())
    (models_dir / "escape.gguf").symlink_to(outside)
    (models_dir / "linkdir").symlink_to(models_dir.parent, target_is_directory=True)
    r = client.post("/api/plan", json={"path": path, "memory": "1GiB"})
    assert r.status_code == 403, r.text
    assert "outside the directories" in r.json()["error"] or "malformed" in r.json()["error"]
    assert "escape.gguf" not in json.dumps(client.get("/api/files").json())


def test_a_model_whose_sibling_shard_escapes_is_refused(
    client: TestClient, models_dir: Path
) -> None:
    outside = models_dir.parent / "secret.gguf"
    write_model(outside, Tiny())
    (models_dir / "m-00002-of-00002.gguf").symlink_to(outside)
    r = client.post("/api/plan", json={"path": "tiny.gguf", "memory": "1GiB"})
    assert r.status_code == 403


def test_without_allowed_dirs_no_file_is_read() -> None:
    c = TestClient(create_app(()))
    r = c.post("/api/plan", json={"path": os.devnull})
    assert r.status_code == 403
    assert "--allow-dir" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param({"model": "lama-3.1-8b"}, 400, "Did you mean 'llama-3.1-8b'", id="typo"),
        pytest.param({"model": "qwen3-8b", "ctx": -1}, 422, "ctx", id="negative ctx"),
        pytest.param({"model": "qwen3-8b", "memory": "8G"}, 400, "8G", id="ambiguous unit"),
        pytest.param({"model": "qwen3-8b", "cache_type_k": "q9"}, 400, "cache type", id="cache"),
        pytest.param({}, 400, "exactly one", id="no model"),
        pytest.param({"model": "a", "path": "b"}, 400, "exactly one", id="both"),
        pytest.param({"model": "qwen3-8b", "bogus": 1}, 422, "bogus", id="unknown field"),
        pytest.param({"path": "missing.gguf"}, 404, "missing.gguf", id="missing file"),
    ],
)
def test_bad_requests_get_one_line_errors(
    client: TestClient, body: dict[str, Any], status: int, message: str
) -> None:
    r = client.post("/api/plan", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error
    assert "\n" not in error


def test_request_bodies_are_limited(client: TestClient) -> None:
    big = {"model": "qwen3-8b", "memory": "8GiB", "path": None, "x": "y" * 5000}
    r = client.post("/api/plan", json=big)
    assert r.status_code == 413

    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    r = client.post("/api/plan", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert {"/api/plan", "/api/models", "/api/hardware", "/api/curve", "/api/files"} <= set(
        doc["paths"]
    )
    plan = doc["paths"]["/api/plan"]["post"]
    schema = plan["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$id"] == "urn:membudget:schema:plan:2"


def test_page_and_static_files(client: TestClient) -> None:
    assert "membudget" in client.get("/").text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../../etc/passwd").status_code == 404
    assert client.get("/static/nope.js").status_code == 404


def test_serve_refuses_bad_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--allow-dir", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
