"""docs/cli.rst documents every option of every subcommand, and nothing else."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from bsdbpf.cli import build_parser

CLI_RST = Path(__file__).resolve().parent.parent / "docs" / "cli.rst"
SECTION = re.compile(r"^``(\w+)``\n-+\n", re.M)
TERM = re.compile(r"^``(-[^` ]+)", re.M)  # a definition-list term naming an option
OPTION_IN_TERM = re.compile(r"``(-[^` ]+)")


def documented() -> dict[str, set[str]]:
    """Subcommand -> the option strings its section defines."""
    text = CLI_RST.read_text()
    heads = list(SECTION.finditer(text))
    found: dict[str, set[str]] = {}
    for head, after in zip(heads, [*heads[1:], None]):
        body = text[head.end(): after.start() if after else len(text)]
        terms = [line for line in body.splitlines() if TERM.match(line)]
        found[head[1]] = {opt for line in terms for opt in OPTION_IN_TERM.findall(line)}
    return found


def parser_options() -> dict[str, set[str]]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: {s for action in p._actions for s in action.option_strings
                   if s not in ("-h", "--help")}
            for name, p in sub.choices.items()}


@pytest.mark.parametrize("command", sorted(parser_options()))
def test_every_option_is_documented_and_every_documented_option_exists(command: str) -> None:
    docs = documented()
    assert command in docs, f"docs/cli.rst has no section ``{command}``"
    assert docs[command] == parser_options()[command]


def test_the_synopsis_names_only_existing_options() -> None:
    synopsis = CLI_RST.read_text().split(".. code-block:: text", 1)[1].split("\n\n", 2)[1]
    options = parser_options()
    command = ""
    for line in synopsis.splitlines():
        words = line.split()
        if words[0] == "bsdbpf":
            command = words[1]  # continuation lines belong to the command above
            assert command in options, line
        for opt in re.findall(r"\[(-[\w-]+)", line):
            assert opt in options[command] or opt.rstrip(".") in options[command], (line, opt)
