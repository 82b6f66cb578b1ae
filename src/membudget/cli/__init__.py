"""The ``membudget`` command line. An interface only: it parses, calls the core, renders."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from membudget.cli import (  # noqa: F401 - importing registers the commands
    _estimate,
    _fit,
    _hw,
    _models,
    _plan,
    _plot,
    _recommend,
    _schema,
    _serve,
)
from membudget.cli._app import EXIT_OK, app
from membudget.cli._errors import report

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status; errors become one line on stderr and status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]
    try:
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name="membudget", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        sys.stderr.write("membudget: aborted\n")
        return 130
    except (Exception, MemoryError) as e:  # noqa: BLE001 - the one place exceptions become messages
        return report(e)
    if isinstance(result, int) and not isinstance(result, bool):
        return result  # typer returns the Exit code here when standalone_mode is off
    return EXIT_OK


def run() -> None:  # pragma: no cover - thin wrapper for ``python -m`` and the console script
    sys.exit(main())
