"""``membudget serve``: the local web page (the ``web`` extra: FastAPI and uvicorn)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer

from membudget.cli._app import app, emit_json, warn
from membudget.cli._output import Quiet
from membudget.errors import InvalidArgumentError, MembudgetError

SERVE_SCHEMA = "membudget/serve/1"
_INSTALL = "pip install 'membudget[web]'"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind. Loopback by default; anything else is public.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8000,
    allow_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-dir",
            help="A directory whose model files the page may read, repeatable. Without one, "
            "only catalogue models can be planned.",
        ),
    ] = None,
    max_body: Annotated[int, typer.Option(help="Largest request body accepted, in bytes.")] = 64
    * 1024,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Let the page read Hugging Face repos (OWNER/REPO[:QUANT]), Hub URLs and "
            "Ollama names by their headers. Without it the server makes no outbound request.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the address as JSON on stdout once listening.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Serve the membudget page and its JSON API (documented at /openapi.json)."""
    try:
        import uvicorn

        from membudget.web.app import create_app
    except ImportError:
        raise MembudgetError(
            f"The web page needs FastAPI and uvicorn, which are not installed. Install them "
            f"with: {_INSTALL}"
        ) from None
    if not 0 <= port <= 65535:
        raise InvalidArgumentError("--port", port, "must be between 0 and 65535")
    if max_body < 1024:
        raise InvalidArgumentError("--max-body", max_body, "must be at least 1024 bytes")
    if not _is_loopback(host):
        warn(f"binding to {host}: the page is reachable from other machines.")
    application = create_app(tuple(allow_dir or ()), max_body, allow_remote)
    # try the port first, so a busy one is one line and exit 2, not uvicorn's own exit
    if port:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as e:
                raise MembudgetError(
                    f"Cannot serve on {host}:{port}: {e.strerror or e} (another server on that "
                    "port? choose another with --port, or 0 for a free one)"
                ) from None
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        limit_concurrency=256,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
        # SIGTERM or Ctrl-C stops within a second (uvicorn waits with asyncio, floats are fine)
        timeout_graceful_shutdown=0.5,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: object = None) -> None:
        await original_startup(sockets=sockets)  # type: ignore[arg-type]
        bound = [s.getsockname() for srv in server.servers for s in srv.sockets]
        actual_port = bound[0][1] if bound else port
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{actual_port}/"
        if as_json:
            emit_json({"schema": SERVE_SCHEMA, "url": url, "openapi": f"{url}openapi.json"})
        elif quiet:
            typer.echo(url)
        else:
            warn(f"serving on {url} (Ctrl+C stops)")

    server.startup = startup  # type: ignore[method-assign]
    server.run()
