"""Exceptions to messages, in one place.

Every error leaves as one line on stderr and exit status 2. A traceback is printed only when the
environment variable ``MEMBUDGET_TRACEBACK`` is set to a non-empty value other than ``0``.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from membudget.errors import MembudgetError

EXIT_BAD_INPUT = 2
TRACEBACK_ENV = "MEMBUDGET_TRACEBACK"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def message_for(exc: BaseException) -> str:
    """The one line a user sees for ``exc``."""
    if isinstance(exc, typer.TyperException):
        # Usage errors carry the command's context; point at its --help.
        ctx = getattr(exc, "ctx", None)
        path = getattr(ctx, "command_path", None)
        where = f" (see '{path} --help')" if path else ""
        return _one_line(f"{exc.format_message()}{where}")
    if isinstance(exc, MembudgetError):
        return _one_line(str(exc))
    if isinstance(exc, FileNotFoundError):
        return _one_line(f"Cannot open {exc.filename!r}: no such file or directory.")
    if isinstance(exc, IsADirectoryError):
        return _one_line(f"Cannot open {exc.filename!r}: it is a directory, not a file.")
    if isinstance(exc, PermissionError):
        return _one_line(f"Cannot open {exc.filename!r}: permission denied.")
    if isinstance(exc, OSError):
        name = f" {exc.filename!r}" if exc.filename else ""
        return _one_line(f"Cannot read{name}: {exc.strerror or exc}.")
    if isinstance(exc, MemoryError):
        return "Ran out of memory; the input is larger than this machine can handle."
    return _one_line(f"Internal error ({type(exc).__name__}): {exc}. Please report this.")


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr (plus a traceback if asked) and return the exit code."""
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"membudget: error: {message_for(exc)}\n")
    sys.stderr.flush()
    return EXIT_BAD_INPUT
