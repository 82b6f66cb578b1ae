"""The FastAPI application behind ``membudget serve``.

Endpoints (documented at ``/openapi.json``):

- ``GET /api/models``: the catalogue (``membudget/catalog/1``);
- ``GET /api/files``: model files inside the allowed directories;
- ``GET /api/hardware``: this machine (``membudget/hardware/1``);
- ``POST /api/plan``: a plan (``membudget/plan/2``, or ``membudget/estimate/1`` for the
  reference engine), the same document ``membudget plan --json`` prints;
- ``POST /api/curve``: memory against context (the numbers ``membudget plot`` draws).

Errors are ``{"error": "one line"}`` with status 400 (bad input), 403 (a path outside the
allowed directories), 404 or 413 (a request body over the limit).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from membudget import __version__
from membudget.curves import PLOT_SCHEMA, memory_curve
from membudget.errors import MembudgetError
from membudget.hardware import Hardware, detect
from membudget.loader import load_model
from membudget.model import ModelSpec
from membudget.readers.catalog import catalog, catalog_spec, find_entry
from membudget.report import CatalogReport, HardwareReport
from membudget.report_fit import run_fit
from membudget.request import PlanRequest, engine_name, run_plan
from membudget.schemas import load_schema
from membudget.units import parse_size
from membudget.web.paths import AllowedDirs, PathRefusedError

__all__ = ["DEFAULT_MAX_BODY_BYTES", "PlanBody", "create_app"]

DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""A plan request is a few hundred bytes; anything near this limit is not one."""
_SPEC_CACHE_SIZE = 16
_HARDWARE_TTL_S = 2.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PlanBody(BaseModel):
    """What the page (or any client) asks for. Sizes are strings with a unit: ``16GiB``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        max_length=300,
        description="A catalogue name; with serve --allow-remote also OWNER/REPO[:QUANT], "
        "ollama:NAME[:TAG] or a URL on the Hub's host.",
    )
    path: str | None = Field(
        None, max_length=4096, description="A model file inside an allowed directory."
    )
    engine: Literal[
        "llama.cpp", "llamacpp", "llama-server", "ollama", "vllm", "sglang", "reference"
    ] = "llama.cpp"
    ctx: int = Field(4096, ge=0, le=1 << 24)
    batch: int = Field(2048, ge=1, le=1 << 20)
    ubatch: int = Field(512, ge=1, le=1 << 20)
    parallel: int = Field(1, ge=1, le=256)
    kv_unified: bool = False
    cache_type_k: str = Field("f16", max_length=16)
    cache_type_v: str = Field("f16", max_length=16)
    flash_attn: Literal["on", "off", "auto"] = "auto"
    swa_full: bool = False
    quant: str | None = Field(None, max_length=16)
    memory: str | None = Field(
        None, max_length=32, description="RAM budget; null uses this machine's."
    )
    margin: str | None = Field(None, max_length=32)
    gpus: list[str] = Field(default_factory=list, max_length=16)
    tensor_parallel: int = Field(1, ge=1, le=64)
    max_model_len: int = Field(0, ge=0, le=1 << 24)
    gpu_memory_utilization: float = Field(0.92, gt=0, le=1)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bf16"] = "auto"
    mem_fraction_static: float | None = Field(
        None, gt=0, lt=1, description="SGLang's --mem-fraction-static; null: its default."
    )
    page_size: int = Field(1, ge=1, le=1024, description="SGLang's --page-size.")


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not they declare a
    length, before the application reads them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await self._refuse(send)
                    return
        # Read the whole body first (it is small by definition), refusing it once it passes
        # the limit; then hand the application a receive that replays it.
        chunks: list[bytes] = []
        seen = 0
        more = scope.get("method") in ("POST", "PUT", "PATCH")
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"error": "The request body is larger than this server accepts."}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def remote_name_allowed(name: str) -> bool:
    """Whether the page may read ``name`` remotely (under ``--allow-remote``): a Hub repo, an
    Ollama name, or a URL on the Hub's own host. Never an arbitrary host: a server that fetched
    any URL it was given would be an SSRF hole."""
    from membudget.readers.remote.hub import endpoint, hub_source  # noqa: PLC0415

    if name.startswith("ollama:") or hub_source(name) is not None:
        return True
    if name.startswith(("http://", "https://")):
        return urlsplit(name).netloc == urlsplit(endpoint()).netloc
    return False


class _Specs:
    """Loaded models, kept while their file is unchanged (a few, least recently used first)."""

    def __init__(self, allowed: AllowedDirs, allow_remote: bool = False) -> None:
        self.allowed = allowed
        self.allow_remote = allow_remote
        self.cache: OrderedDict[tuple[str, int, int], ModelSpec] = OrderedDict()
        self.lock = threading.Lock()

    def _remember(self, key: tuple[str, int, int], load: Callable[[], ModelSpec]) -> ModelSpec:
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        spec = load()
        with self.lock:
            self.cache[key] = spec
            while len(self.cache) > _SPEC_CACHE_SIZE:
                self.cache.popitem(last=False)
        return spec

    def get(self, body: PlanBody) -> tuple[ModelSpec, str]:
        if (body.model is None) == (body.path is None):
            raise MembudgetError("Give exactly one of 'model' (a catalogue name) or 'path'.")
        if body.model is not None:
            name = body.model
            if find_entry(name) is None and self.allow_remote and remote_name_allowed(name):
                return self._remember((name, 0, 0), lambda: load_model(name)), name
            if find_entry(name) is None and remote_name_allowed(name):
                raise MembudgetError(
                    f"{name!r} is a remote model; this server reads only catalogue models and "
                    "allowed directories (start it with --allow-remote to read Hub repos)"
                )
            return catalog_spec(name), name  # unknown names get suggestions
        assert body.path is not None
        real = self.allowed.resolve(body.path)
        if not real.is_file():
            raise FileNotFoundError(2, "no such file", body.path)
        # A model's parts and shards are its siblings: every one must stay inside too.
        for sibling in real.parent.iterdir():
            if sibling.name.endswith((".gguf", ".safetensors")):
                self.allowed.resolve(str(sibling))
        st = real.stat()
        key = (str(real), st.st_mtime_ns, st.st_size)
        return self._remember(key, lambda: load_model(real)), str(real)


class _Hardware:
    """This machine, read at most every couple of seconds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: Hardware | None = None
        self.at = 0.0

    def __call__(self) -> Hardware:
        with self.lock:
            now = time.monotonic()
            if self.value is None or now - self.at > _HARDWARE_TTL_S:
                self.value, self.at = detect(), now
            return self.value


def _request(body: PlanBody, source: str) -> PlanRequest:
    return PlanRequest(
        engine=engine_name(body.engine),
        ctx=body.ctx,
        batch=body.batch,
        ubatch=body.ubatch,
        parallel=body.parallel,
        kv_unified=body.kv_unified,
        cache_type_k=body.cache_type_k,
        cache_type_v=body.cache_type_v,
        flash_attn=body.flash_attn,
        swa_full=body.swa_full,
        quant=body.quant or None,
        memory_bytes=parse_size(body.memory) if body.memory else None,
        memory_text=body.memory or "",
        margin_bytes=parse_size(body.margin) if body.margin else None,
        gpu_bytes=tuple(parse_size(g) for g in body.gpus) if body.gpus else None,
        tensor_parallel=body.tensor_parallel,
        max_model_len=body.max_model_len,
        gpu_memory_utilization=body.gpu_memory_utilization,
        kv_cache_dtype=body.kv_cache_dtype,
        mem_fraction_static=body.mem_fraction_static,
        page_size=body.page_size,
        source=source,
        # ctx is SGLang's --context-length (0: the model's own)
        given=frozenset({"ctx"}) if body.engine == "sglang" else frozenset(),
    )


_FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect x="1" y="9" width="14" height="6" fill="#4c72b0"/>'
    '<rect x="1" y="4" width="9" height="5" fill="#dd8452"/>'
    '<line x1="12" y1="1" x2="12" y2="15" stroke="#222" stroke-dasharray="2 1"/></svg>'
)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def _schema_response(schema_id: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"schema": load_schema(schema_id)}}}}


def create_app(
    allowed_dirs: tuple[str | os.PathLike[str], ...] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    allow_remote: bool = False,
) -> ASGIApp:
    """The ASGI application: the page, the JSON API and its OpenAPI document. With
    ``allow_remote`` the model box also takes Hub repos, Ollama names and Hub URLs;
    without it the server makes no outbound request."""
    allowed = AllowedDirs(allowed_dirs)
    specs = _Specs(allowed, allow_remote)
    hardware = _Hardware()
    api = FastAPI(
        title="membudget",
        version=__version__,
        summary="Will this LLM fit in my memory? The JSON API behind `membudget serve`.",
        docs_url=None,  # the interactive docs load scripts from a CDN; this server is offline
        redoc_url=None,
    )

    @api.exception_handler(MembudgetError)
    async def _membudget_error(request: Request, exc: MembudgetError) -> JSONResponse:
        return _error(403 if isinstance(exc, PathRefusedError) else 400, str(exc))

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error(422, f"Invalid request: {problems}")

    @api.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        name = exc.filename if isinstance(exc.filename, str) else "the file"
        status = 404 if isinstance(exc, FileNotFoundError) else 400
        return _error(status, f"Cannot read {name!r}: {exc.strerror or exc}.")

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        page = resources.files("membudget.web").joinpath("static/index.html")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @api.get("/favicon.svg", include_in_schema=False)
    @api.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(_FAVICON, media_type="image/svg+xml")

    @api.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        types = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            return _error(404, f"No static file {name[:100]!r}.")
        text = resources.files("membudget.web").joinpath(f"static/{name}").read_text("utf-8")
        return Response(text, media_type=types[name])

    @api.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @api.get("/api/models", responses=_schema_response("membudget/catalog/1"))
    def models() -> dict[str, Any]:
        return CatalogReport(tuple(catalog().values())).to_dict()

    @api.get("/api/files")
    def files() -> dict[str, Any]:
        return {"allowed_dirs": [str(r) for r in allowed.roots], "files": allowed.list_models()}

    @api.get("/api/hardware", responses=_schema_response("membudget/hardware/1"))
    def machine() -> dict[str, Any]:
        return HardwareReport(hardware()).to_dict()

    @api.get("/api/fit", responses=_schema_response("membudget/fit/1"))
    def fit(
        memory: str | None = None,
        gpus: str = "",
        engine: Literal["llama.cpp", "llama-server", "vllm", "sglang"] = "llama-server",
        min_ctx: int = Query(4096, ge=1, le=1 << 24),
        ctx: int | None = Query(None, ge=1, le=1 << 24),
        sort: Literal["params", "quality", "context", "headroom"] = "params",
        family: str = Query("", max_length=64),
    ) -> dict[str, Any]:
        """What fits: every catalogue model's best preset (membudget fit)."""
        sizes = tuple(parse_size(g) for g in gpus.split(",") if g.strip())[:16]
        base = PlanRequest(
            engine=engine_name(engine),
            memory_bytes=parse_size(memory) if memory else None,
            gpu_bytes=sizes or None,
            given=frozenset({"ctx"} if engine in ("vllm", "sglang") else {"ctx", "parallel"}),
        )
        models = [
            (name, functools.partial(catalog_spec, name))
            for name in catalog()
            if family.lower() in name.lower()
        ]
        return run_fit(models, base, hardware, min_ctx=min_ctx, ctx=ctx, sort=sort).to_dict()

    @api.post("/api/plan", responses=_schema_response("membudget/plan/2"))
    def plan(body: PlanBody) -> dict[str, Any]:
        spec, source = specs.get(body)
        return run_plan(_request(body, source), spec, hardware).to_dict()

    @api.post("/api/curve")
    def curve(body: PlanBody) -> dict[str, Any]:
        spec, source = specs.get(body)
        data = memory_curve(spec, _request(body, source), hardware)
        return {
            "schema": PLOT_SCHEMA,
            "out": None,
            "format": None,
            **data.to_dict(),
            "compare": None,
        }

    return _BodyLimit(api, max_body_bytes)
