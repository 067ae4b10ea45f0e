"""Terminal output: one console for results (stdout), one for messages (stderr), both scrubbed of
secrets; and the exits every command shares (2 = bad input, 1 = something failed)."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

from schoolctl.secrets import redact

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(text: str) -> None:
    out.print(redact(text), markup=False)


def warn(text: str) -> None:
    err.print(redact(text), markup=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `message` to stderr and exit with `code` (2: bad input or setup; 1: runtime failure)."""
    warn(f"error: {message}")
    raise typer.Exit(code)
