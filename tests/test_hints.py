"""Every `newsclf ...` command a message, hint or help text names exists, with the options it names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "newsclf"

# a command as the messages write one: in backticks, after "Hint: " / "· ", or on a line of its own
# (help examples); prose that merely starts with the word newsclf is not one
MENTION = re.compile(r"(?:`|: |· |\n[ \t]*)(newsclf(?: +[^\s`·]+)+)")
GLOBAL_FLAGS = {"--json", "--quiet", "-q", "--debug", "--help", "-h", "--version"}


def mentions() -> list[tuple[str, str]]:
    """(where, command line) for each command named in a string literal of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for m in MENTION.finditer(node.value):
                    found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", m.group(1)))
    return found


def problem(words: list[str]) -> str | None:
    """What is wrong with `newsclf WORDS...`, or None: walks the real Typer app as click sees it."""
    import typer
    import typer.core
    import typer.main

    from newsclf.cli import app

    cmd = typer.main.get_command(app)
    path = ["newsclf"]
    for word in words:
        if word in ("&&", "||", "|", ";", ">", "2>&1"):
            break  # a shell pipeline: the rest is another program
        ends = word[-1] in ",.;)"  # "run `newsclf data push`, then ..." without backticks
        word = word.rstrip(",.;)")
        if word == "--" or (word.startswith("-") and cmd.context_settings.get("ignore_unknown_options")):
            return None  # what follows goes to another parser (train options)
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            if flag not in options | GLOBAL_FLAGS:
                return f"`{' '.join(path)}` has no option {flag}"
        elif isinstance(cmd, typer.core.TyperGroup):
            sub = cmd.get_command(typer.Context(cmd), word)
            if sub is None:
                return f"`{' '.join(path)}` has no command {word!r} (it has: {', '.join(sorted(cmd.commands))})"
            cmd, path = sub, [*path, word]
        if ends:
            break
    return None


def test_every_command_named_in_a_message_exists():
    found = mentions()
    assert len(found) > 50  # the scan sees the hints (a broken pattern would pass vacuously)
    commands = {line.split()[1] for _, line in found}
    assert {"cloud", "models", "data", "train", "job"} <= commands
    bad = [f"{where}: {line!r}: {why}" for where, line in found if (why := problem(line.split()[1:]))]
    assert bad == []


def test_the_walk_catches_a_wrong_command_and_a_wrong_option():
    assert problem(["cloud", "train"]) is not None and "has no command 'train'" in problem(["cloud", "train"])
    assert problem(["models", "list", "--sweeps"]) == "`newsclf models list` has no option --sweeps"
    assert problem(["models", "pull", "RUN_ID", "--dest", "x"]) is None
    assert problem(["cloud", "run", "--", "--epochs", "2"]) is None
