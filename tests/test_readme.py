"""The README says what the tool does: its commands run, its flags exist, its fields exist.

When the code changes, the README changes in the same commit, or one of these fails:

- every ``membudget ...`` line of the command synopsis names a command, and every flag on it is
  one that command accepts;
- the opening block's ``membudget`` command runs (exit 0 or 1: fits or not);
- the Python block runs, and each ``# value`` comment beside a line is what that line gives;
- every ``memory.*``, ``budget.*``, ``settings.*``, ``best_quant.*`` and ``model.*`` field the
  README names is in a real ``plan --json`` document;
- the schema ids the README lists are the ones ``membudget schema`` knows.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from membudget.cli import app, main
from membudget.schemas import SCHEMA_IDS

README = (Path(__file__).parents[1] / "README.md").read_text()
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(lang: str | None = None) -> list[str]:
    return [body for kind, body in _BLOCK.findall(README) if lang is None or kind == lang]


def _synopsis() -> list[tuple[str, list[str]]]:
    """(command, flags) for each ``membudget CMD ...`` entry of the synopsis block (an entry
    continues on the indented lines below it)."""
    block = next(b for b in _blocks("") if b.lstrip().startswith("membudget models"))
    entries: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        text = line.split("#", 1)[0]
        if text.startswith("membudget "):
            entries.append((text.split()[1], []))
            text = text[len("membudget ") + len(entries[-1][0]) :]
        flags = re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", text)
        entries[-1][1].extend(flags)
    return entries


def _options(command: str) -> set[str]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    out: set[str] = set()
    for p in cmd.params:
        out.update(getattr(p, "opts", ()))
        out.update(getattr(p, "secondary_opts", ()))
    return out


@pytest.mark.parametrize(("command", "flags"), _synopsis(), ids=lambda x: str(x)[:40])
def test_synopsis_flags_exist(command: str, flags: list[str]) -> None:
    accepted = _options(command)
    unknown = [f for f in flags if f not in accepted]
    assert not unknown, f"README shows `membudget {command}` with {unknown}, which it lacks"


def test_every_command_is_in_the_synopsis() -> None:
    group = typer.main.get_command(app)
    listed = {c for c, _ in _synopsis()}
    missing = set(group.commands) - listed  # type: ignore[attr-defined]
    assert not missing, f"the README's synopsis does not show {sorted(missing)}"


def test_the_opening_command_runs(capsys: pytest.CaptureFixture[str]) -> None:
    first = _blocks("sh")[0].splitlines()[0]
    args = first.split(".venv/bin/membudget ", 1)[1].split()
    assert main([*args, "--memory", "16GiB"]) in (0, 1)
    assert "llama-server" in capsys.readouterr().out


def test_the_python_block_gives_what_its_comments_say() -> None:
    code = _blocks("python")[0]
    namespace: dict[str, Any] = {}
    lines = code.splitlines()
    checked = 0
    for i, line in enumerate(lines):
        body, _, comment = line.partition("  # ")
        if not comment:
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec("\n".join(lines[:i]), namespace)
        value = eval(body, namespace)
        expected = ast.literal_eval(comment)
        assert value == expected, f"README: {body.strip()} gives {value!r}, not {expected!r}"
        checked += 1
    assert checked >= 3


def test_plan_fields_named_in_the_readme_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "qwen3-8b", "--memory", "16GiB", "--gpu", "8GiB", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    named = set(re.findall(r"`((?:memory|budget|settings|best_quant|model)\.[a-z_]+)`", README))
    assert named
    for field in sorted(named):
        head, tail = field.split(".")
        assert tail in doc[head], f"README names {field}, which plan --json lacks"


def test_the_schema_list_is_the_real_one() -> None:
    listed = set(re.findall(r"`(membudget/[a-z]+/\d+)`", README))
    assert listed >= set(SCHEMA_IDS) - {"membudget/schemas/1"}, set(SCHEMA_IDS) - listed
    assert listed <= set(SCHEMA_IDS), listed - set(SCHEMA_IDS)
