"""Terminal output: one console for results (stdout), one for messages (stderr), both scrubbed of
secrets; progress (a live board on a terminal, one plain line per school and phase otherwise);
confirmation; and the exits every command shares (2 = bad input, 1 = something failed).

rich is imported only when something rich is printed (coloured markup, a table, the live board):
`out` and `err` make their rich Console on first use. say() and warn() print their plain lines
without it, exactly as the Console prints them (tests/unit/test_output.py compares the two)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from schoolctl.errors import INPUT, SchoolctlError
from schoolctl.secrets import redact

if TYPE_CHECKING:
    from rich.console import Console

# the control codes rich's Text drops (rich.control.STRIP_CONTROL_CODES: BEL, BS, VT, FF, CR)
_STRIPPED = dict.fromkeys((7, 8, 11, 12, 13))


class _LazyConsole:
    """A rich Console made on first use, with these settings. emoji=False: ":100:" in
    "fleet.yaml:100:3" (or ":school:" in a school's name) stays text, never an emoji."""

    def __init__(self, stderr: bool, width: int | None):
        self._stderr, self._width = stderr, width
        self._console: Console | None = None
        self._quiet = False  # a broken pipe was met by a plain line (rich's Console.on_broken_pipe)
        self._lock = threading.RLock()

    def console(self) -> Console:
        with self._lock:
            if self._console is None:
                from rich.console import Console

                self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True, emoji=False,
                                        width=self._width)
                self._console.quiet = self._quiet
            return self._console

    def __getattr__(self, name: str) -> Any:  # print, file, is_terminal, ...: the Console's
        return getattr(self.console(), name)

    def line(self, text: str) -> None:
        """Print `text` (already redacted) as one line, as `Console.print(text, markup=False)`
        prints it: without rich while nothing rich was printed on this stream (a live board on it
        places lines above itself) and the text has no tab (rich expands tabs by cell width)."""
        if self._console is not None or "\t" in text:
            self.console().print(text, markup=False)
        else:
            self._write(text.translate(_STRIPPED) + "\n")

    def table(self, columns: list[str], rows: list[list[str]]) -> None:
        """Print a table with rich (the first thing rich on this stream loads it)."""
        from rich.table import Table

        t = Table(*columns)
        for row in rows:
            t.add_row(*row)
        self.console().print(t)

    def _file(self) -> Any:
        file = sys.stderr if self._stderr else sys.stdout
        return getattr(file, "rich_proxied_file", file)  # as rich's Console.file

    def _write(self, text: str) -> None:
        """Write as rich's Console does: flushed; a broken pipe silences the stream and exits 1."""
        file = self._file()
        with self._lock:
            if self._quiet or file is None:
                return
            try:
                try:
                    file.write(text)
                except UnicodeEncodeError as error:  # with rich's words
                    error.reason = (f"{error.reason}\n*** You may need to add PYTHONIOENCODING=utf-8 to your "
                                    "environment ***")
                    raise
                file.flush()
            except BrokenPipeError:  # as rich's Console.on_broken_pipe
                self._quiet = True
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise SystemExit(1) from None


# the rich Console's settings (Any: `out.print(...)` and the rest are the Console's)
out: Any = _LazyConsole(stderr=False, width=None if sys.stdout.isatty() else 200)
err: Any = _LazyConsole(stderr=True, width=None)


def say(text: str) -> None:
    out.line(redact(text))


def warn(text: str) -> None:
    err.line(redact(text))


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

            self.live = Live(self._table(), console=err.console(), transient=True, auto_refresh=True)

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
