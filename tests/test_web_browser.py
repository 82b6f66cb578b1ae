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
from playwright.sync_api import Browser, Page, expect, sync_playwright

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
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(server: str, browser: Browser) -> Iterator[Page]:
    p = browser.new_page(viewport={"width": 1200, "height": 900})
    p.goto(server)
    expect(p.locator("#verdict")).to_have_attribute("data-fits", "true", timeout=20_000)
    yield p
    p.close()


def _change(page: Page, selector: str, value: str) -> None:
    """Fill an input or pick an option, then wait for the page's answer (or its error)."""
    before = page.locator("body").get_attribute("data-ready") or "0"
    if page.locator(selector).evaluate("e => e.tagName") == "SELECT":
        page.select_option(selector, value)
    else:
        page.fill(selector, value)
    page.wait_for_function(
        f"Number(document.body.dataset.ready || 0) > {before} "
        "|| !document.getElementById('error').hidden",
        timeout=20_000,
    )


def _bytes(page: Page, part: str) -> int:
    cell = page.locator(f'#breakdown tr[data-part="{part}"] td').nth(3)
    return int(cell.inner_text().replace(",", ""))


def test_page_plans_updates_and_shows_the_command(page: Page) -> None:
    _change(page, "#model", "qwen3-8b")
    _change(page, "#memory", "24GiB")
    _change(page, "#ctx", "8192")
    expect(page.locator("#verdict")).to_have_attribute("data-fits", "true")
    max_ctx = page.locator("#max-context").inner_text()
    assert max_ctx.endswith("tokens")
    assert int(max_ctx.split()[0].replace(",", "")) > 8192
    expect(page.locator("#command")).to_contain_text("llama-server")
    expect(page.locator("#command")).to_contain_text("-c 8192")
    assert page.locator("#chart svg rect").count() >= 3
    assert page.locator("#budget-line").count() == 1
    # memory against context, with the budget and the largest context marked
    expect(page.locator("#curve polyline.curve-line")).to_have_count(1, timeout=20_000)
    expect(page.locator("#curve-budget")).to_have_count(1)
    expect(page.locator("#curve-max")).to_have_count(1)
    f16 = _bytes(page, "KV cache")
    # A quantised cache shrinks the KV cache by ggml's block sizes: q8_0 is 34 bytes per 32.
    _change(page, "#cache-type-k", "q8_0")
    _change(page, "#cache-type-v", "q8_0")
    assert _bytes(page, "KV cache") == f16 * 34 // 64
    _change(page, "#ctx", "1000000")
    expect(page.locator("#verdict")).to_have_attribute("data-fits", "false")
    expect(page.locator("#verdict")).to_contain_text("Does not fit")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)


def test_page_vllm_and_errors(page: Page) -> None:
    _change(page, "#engine", "vllm")
    _change(page, "#gpus", "80GiB")
    _change(page, "#ctx", "0")
    expect(page.locator("#command")).to_contain_text("vllm serve")
    _change(page, "#memory", "8G")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("8G")
    _change(page, "#memory", "")
    _change(page, "#engine", "llama.cpp")
    _change(page, "#gpus", "")


def test_page_reads_only_allowed_files(page: Page) -> None:
    _change(page, "#source-kind", "path")
    _change(page, "#path", "tiny.gguf")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#command")).to_contain_text("tiny.gguf")
    _change(page, "#path", "/etc/passwd")
    expect(page.locator("#error")).to_contain_text("outside the directories")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-refused.png"), full_page=True)


def test_what_fits_tab(page: Page) -> None:
    """The sweep of membudget fit on the page: rows, sortable, each planning its model."""
    _change(page, "#memory", "8GiB")
    page.click("#fit-run")
    expect(page.locator("#fit-table")).to_be_visible(timeout=120_000)
    rows = page.locator("#fit-table tbody tr")
    assert rows.count() > 5
    first = rows.first.get_attribute("data-model")
    page.click('#fit-table button[data-sort="n_params"]')  # descending -> ascending
    assert rows.first.get_attribute("data-model") != first
    target = rows.first.get_attribute("data-model") or ""
    rows.first.locator("a").click()
    page.wait_for_function(f"document.getElementById('model').value === {target!r}", timeout=20_000)
    expect(page.locator("#verdict")).to_have_attribute("data-fits", "true", timeout=20_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-what-fits.png"), full_page=True)
    _change(page, "#memory", "")


def test_load_is_clean_and_usable_on_a_phone(server: str, browser: Browser) -> None:
    """No console error and no failed request on load (the favicon included); at 390 px wide
    nothing scrolls sideways; every control has a label and is reachable by the keyboard."""
    problems: list[str] = []
    p = browser.new_page(viewport={"width": 390, "height": 844})
    p.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    p.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
    p.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    p.goto(server)
    expect(p.locator("#verdict")).to_have_attribute("data-fits", "true", timeout=20_000)
    p.wait_for_timeout(300)  # the favicon is fetched after load
    assert problems == []
    width = p.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px phone"
    unlabelled = p.evaluate(
        """() => [...document.querySelectorAll('input, select, button')]
            .filter(e => !e.closest('[hidden]'))
            .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label')
                           || e.textContent.trim()))
            .map(e => e.id)"""
    )
    assert unlabelled == []
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.id") == "source-kind", "keyboard focus starts there"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    p.screenshot(path=str(ARTIFACTS / "web-phone.png"), full_page=True)
    p.close()


def test_repack_copies_are_named_apart(page: Page) -> None:
    _change(page, "#model", "qwen3-8b")
    _change(page, "#quant", "Q4_K_M")  # Q4_K repacks on an AVX2 CPU
    _change(page, "#memory", "32GiB")
    rows = page.locator("#breakdown tbody tr td:nth-child(2)").all_inner_texts()
    assert "weights, repacked copy (CPU_REPACK)" in rows
    assert "weights, memory-mapped" in rows
    _change(page, "#quant", "")
    _change(page, "#memory", "")


def test_suggestions_apply_with_one_click(page: Page) -> None:
    """When it does not fit, the page lists the planner's suggestions; one click applies one,
    and the plan then fits."""
    _change(page, "#engine", "llama.cpp")
    _change(page, "#model", "qwen3-8b")
    _change(page, "#memory", "12GiB")
    _change(page, "#ctx", "32768")
    expect(page.locator("#verdict")).to_have_attribute("data-fits", "false")
    button = page.locator("#suggestions button:not([disabled])").first
    expect(button).to_be_visible()
    before = page.locator("body").get_attribute("data-ready") or "0"
    button.click()
    page.wait_for_function(f"Number(document.body.dataset.ready || 0) > {before}", timeout=20_000)
    expect(page.locator("#verdict")).to_have_attribute("data-fits", "true")
    expect(page.locator("#suggestions-block")).to_be_hidden()
    _change(page, "#quant", "")
    _change(page, "#ctx", "4096")
    _change(page, "#memory", "")
