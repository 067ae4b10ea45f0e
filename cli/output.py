"""Terminal output: one console for results (stdout), one for messages (stderr), both scrubbed of
secrets; progress (a live board on a terminal, one plain line per school and phase otherwise);
confirmation; and the exits every command shares (2 = bad input, 1 = something failed)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, NoReturn

import typer
from rich.console import Console

from schoolctl.errors import INPUT, SchoolctlError
from schoolctl.secrets import redact

# emoji=False: ":100:" in "fleet.yaml:100:3" (or ":school:" in a school's name) stays text, never an emoji
out = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def say(text: str) -> None:
    out.print(redact(text), markup=False)


def warn(text: str) -> None:
    err.print(redact(text), markup=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `message` to stderr and exit with `code` (2: bad input or setup; 1: runtime failure)."""
    warn(f"error: {message}")
    raise typer.Exit(code)


class NotConfirmed(SchoolctlError):
    """A verb that changes servers or people's data was not confirmed (exit 2: nothing changed)."""

    exit_code = INPUT


def confirm(question: str, yes: bool, hint: str = "pass --yes to go ahead without asking") -> None:
    """Ask `question` on the terminal unless `yes`; without a terminal on stdin, refuse (exit 2,
    nothing changed) instead of waiting for an answer that cannot come. A "no" is exit 1."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmed(f"{question.rstrip('?')}: not confirmed (stdin is not a terminal); nothing was changed",
                           hint)
    if not typer.confirm(question, err=True):
        raise typer.Exit(1)


def progress_line(school: str, what: str, seconds: float) -> str:
    """One plain progress line (piped or in CI): `  12.3s demo: connecting to demo`."""
    return redact(f"{seconds:7.1f}s {school}: {' '.join(what.split())}")


class Board:
    """Per-school progress on stderr, called as `board(school, what)` from any greenlet or thread:
    on a terminal a live table (one row per school); otherwise one plain line per school and
    phase as it happens (progress_line), so a piped or CI run shows what it is doing."""

    def __init__(self, ids: list[str], live: bool | None = None):
        self.state = dict.fromkeys(ids, "waiting")
        self.is_live = err.is_terminal if live is None else live
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.live: Any = None
        if self.is_live:
            from rich.live import Live

            self.live = Live(self._table(), console=err, transient=True, auto_refresh=True)

    def _table(self) -> Any:
        from rich.table import Table

        t = Table("school", "now", box=None)
        for sid, what in self.state.items():
            t.add_row(sid, redact(what))
        return t

    def __call__(self, school: str, what: str) -> None:
        with self.lock:
            self.state[school] = what
            if self.live is not None:
                self.live.update(self._table())
            else:
                err.print(progress_line(school, what, time.monotonic() - self.start), markup=False, highlight=False)

    def __enter__(self) -> Board:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
