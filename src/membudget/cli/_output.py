"""Rendering shared by every command: JSON, tables, ``--quiet``, ``--explain``, progress.

stdout carries only data (the table or the JSON); everything for people (warnings, progress)
goes to stderr. Colour follows rich, which honours ``NO_COLOR`` and plain pipes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from membudget.cli._app import emit_json, stdout_console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from membudget.explain import Step
    from membudget.model import ModelSpec

__all__ = [
    "SOURCE_HELP",
    "Explain",
    "Quiet",
    "Report",
    "Revision",
    "busy",
    "load_with_progress",
    "render",
]

SOURCE_HELP = (
    "A GGUF file, safetensors file or directory, config.json, catalogue name, Hugging Face "
    "repo (OWNER/REPO, or OWNER/REPO:QUANT for a GGUF in it; headers only), http(s) URL of a "
    "GGUF or safetensors file, or ollama:NAME[:TAG] from Ollama's local store."
)

Revision = Annotated[
    str,
    typer.Option(help="The Hub revision (branch, tag or commit) of an OWNER/REPO source."),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print only the one-line answer; no table, notes or progress."
    ),
]
Explain = Annotated[
    bool,
    typer.Option(
        "--explain",
        help="Show the equation behind each number and where each input came from "
        "(GGUF key, config field, catalogue entry or engine rule).",
    ),
]

PROGRESS_DELAY_S = 1.0
"""Work that ends sooner than this shows no progress bar."""
PROGRESS_ENV = "MEMBUDGET_PROGRESS"
"""``1`` shows progress even when stderr is not a terminal (tests), ``0`` never."""


class Report(Protocol):
    """What every report object offers (see :mod:`membudget.report`)."""

    @property
    def fits(self) -> bool | None: ...

    def to_dict(self) -> dict[str, Any]: ...

    def headline(self) -> str: ...

    def explanation(self) -> tuple[Step, ...]: ...


def render(result: Report, *, as_json: bool, quiet: bool = False, explain: bool = False) -> None:
    """Print ``result`` on stdout as JSON, as its one-line headline, or as its table."""
    from membudget.explain import to_dicts

    if as_json:
        data = result.to_dict()
        if explain:
            data["explain"] = to_dicts(result.explanation())
        emit_json(data)
        return
    console = stdout_console()
    if not quiet:
        for warning in getattr(result, "warnings", ()):
            sys.stderr.write(f"membudget: warning: {warning}\n")
    if quiet:
        console.print(result.headline(), markup=False)
    else:
        console.print(result)
    if explain:
        _print_explanation(result.explanation())


def _print_explanation(steps: tuple[Step, ...]) -> None:
    from rich.text import Text

    console = stdout_console()
    if not steps:
        console.print("explain: nothing is computed here; the values are read as shown.")
        return
    console.print(Text("How each number was computed (bytes):", style="bold"))
    for s in steps:
        value = f" = {s.n_bytes:,} bytes" if s.n_bytes is not None else ""
        console.print(Text(f"{s.quantity}{value}", style="bold"))
        console.print(Text(f"  {s.equation}"))
        for i in s.inputs:
            console.print(Text(f"    {i.name} = {i.value}  <- {i.source}"))


def _forced() -> bool:
    return os.environ.get(PROGRESS_ENV, "") == "1"


def _show_progress(quiet: bool) -> bool:
    if quiet or os.environ.get(PROGRESS_ENV, "") == "0":
        return False
    return _forced() or sys.stderr.isatty()


@contextmanager
def busy(label: str, *, quiet: bool = False, steps_only: bool = False) -> Iterator[None]:
    """Show a progress bar on stderr for the work inside, if it lasts over a second.

    Readers report shards and parts through :mod:`membudget.progress`; work that reports
    nothing gets a spinner with the elapsed time, from a timer thread. ``steps_only``: no
    timer, the bar starts with a step reported after the first second (work that forks
    worker processes first, which a thread beside it would make unsafe).
    """
    from membudget.progress import reporting

    if not _show_progress(quiet):
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, force_terminal=True if _forced() else None),
        transient=True,
    )
    state: dict[str, Any] = {"task": None, "started": False}
    lock = threading.Lock()
    start = time.monotonic()

    def ensure_started() -> TaskID:
        if not state["started"]:
            progress.start()
            state["started"] = True
            state["task"] = progress.add_task(label, total=None)
        task: TaskID = state["task"]
        return task

    def on_step(done: int, total: int, name: str) -> None:
        with lock:
            if not state["started"] and time.monotonic() - start < PROGRESS_DELAY_S:
                return
            task = ensure_started()
            progress.update(task, completed=done, total=total, description=f"{label}: {name}")

    def late_start() -> None:
        with lock:
            ensure_started()

    timer = None if steps_only else threading.Timer(PROGRESS_DELAY_S, late_start)
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        with reporting(on_step):
            yield
    finally:
        if timer is not None:
            timer.cancel()
        with lock:
            if state["started"]:
                _stop(progress)


def _stop(progress: Progress) -> None:
    progress.stop()


def load_with_progress(
    source: str | os.PathLike[str], *, quiet: bool = False, revision: str = "main"
) -> ModelSpec:
    """``load_model(source)``, with a progress bar when reading takes over a second."""
    from membudget.loader import load_model

    with busy(f"reading {os.fspath(source)}", quiet=quiet):
        return load_model(source, revision=revision)
