"""What every subcommand shares: the program name, notes on stderr, CommandError."""

from __future__ import annotations

import sys

__all__ = ["PROG", "CommandError", "note", "plural"]

PROG = "bsdbpf"


class CommandError(Exception):
    """A problem the command line reports as one line (exit status 1)."""


def note(text: str) -> None:
    """One line on standard error, prefixed with the program's name."""
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def plural(n: int, word: str) -> str:
    """``1 packet``, ``2 packets``."""
    return f"{n} {word}{'' if n == 1 else 's'}"
