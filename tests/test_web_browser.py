"""End to end: the page in headless Chromium (Debian's ``chromium``, driven by Playwright),
against a real uvicorn server on loopback. Saves a screenshot as a test artifact."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright")

import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

from membudget.web.app import create_app
from tests.ggufs import Tiny, write_model

CHROMIUM = os.environ.get("MEMBUDGET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("MEMBUDGET_REQUIRE_BROWSER", "") not in ("", "0")
ARTIFACTS = Path(
    os.environ.get("MEMBUDGET_ARTIFACTS", Path(__file__).parent.parent / "build" / "test-artifacts")
)
# Chromium as root in a closed network: no sandbox, and none of its background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    if REQUIRED:
        pytest.fail(f"MEMBUDGET_REQUIRE_BROWSER is set but {CHROMIUM} does not exist")
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = tmp_path_factory.mktemp("models")
    write_model(models / "tiny.gguf", Tiny(n_vocab=1024))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = uvicorn.Config(create_app((models,)), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        p = browser.new_page(viewport={"width": 1200, "height": 900})
        p.goto(server)
        expect(p.locator("#verdict")).to_have_attribute("data-fits", "true", timeout=20_000)
        yield p
        browser.close()


def _set(page: Page, selector: str, value: str) -> None:
    before = page.locator("body").get_attribute("data-ready") or "0"
    page.fill(selector, value)
    page.wait_for_function(
        f"Number(document.body.dataset.ready || 0) > {before} "
        "|| !document.getElementById('error').hidden",
        timeout=20_000,
    )


def _select(page: Page, selector: str, value: str) -> None:
    before = page.locator("body").get_attribute("data-ready") or "0"
    page.select_option(selector, value)
    page.wait_for_function(
        f"Number(document.body.dataset.ready || 0) > {before} "
        "|| !document.getElementById('error').hidden",
        timeout=20_000,
    )


def _bytes(page: Page, part: str) -> int:
    cell = page.locator(f'#breakdown tr[data-part="{part}"] td').nth(3)
    return int(cell.inner_text().replace(",", ""))


def test_page_plans_updates_and_shows_the_command(page: Page) -> None:
    _select(page, "#model", "qwen3-8b")
    _set(page, "#memory", "24GiB")
    _set(page, "#ctx", "8192")
    expect(page.locator("#verdict")).to_have_attribute("data-fits", "true")
    max_ctx = page.locator("#max-context").inner_text()
    assert max_ctx.endswith("tokens")
    assert int(max_ctx.split()[0].replace(",", "")) > 8192
    expect(page.locator("#command")).to_contain_text("llama-server")
    expect(page.locator("#command")).to_contain_text("-c 8192")
    assert page.locator("#chart svg rect").count() >= 3
    assert page.locator("#budget-line").count() == 1
    f16 = _bytes(page, "KV cache")
    # A quantised cache shrinks the KV cache by ggml's block sizes: q8_0 is 34 bytes per 32.
    _select(page, "#cache-type-k", "q8_0")
    _select(page, "#cache-type-v", "q8_0")
    assert _bytes(page, "KV cache") == f16 * 34 // 64
    _set(page, "#ctx", "1000000")
    expect(page.locator("#verdict")).to_have_attribute("data-fits", "false")
    expect(page.locator("#verdict")).to_contain_text("Does not fit")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)


def test_page_vllm_and_errors(page: Page) -> None:
    _select(page, "#engine", "vllm")
    _set(page, "#gpus", "80GiB")
    _set(page, "#ctx", "0")
    expect(page.locator("#command")).to_contain_text("vllm serve")
    _set(page, "#memory", "8G")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("8G")
    _set(page, "#memory", "")
    _select(page, "#engine", "llama.cpp")
    _set(page, "#gpus", "")


def test_page_reads_only_allowed_files(page: Page) -> None:
    _select(page, "#source-kind", "path")
    _set(page, "#path", "tiny.gguf")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#command")).to_contain_text("tiny.gguf")
    _set(page, "#path", "/etc/passwd")
    expect(page.locator("#error")).to_contain_text("outside the directories")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-refused.png"), full_page=True)
