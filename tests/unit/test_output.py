"""cli/output.py prints what rich's Console prints, without importing rich for plain lines and
plain tables (issue #16: start-up): each is compared with the Console and the settings it stands
in for, over many texts; what it cannot draw as rich would goes through rich itself."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys

import pytest
from rich.console import Console
from rich.table import Table

from schoolctl.cli import output
from schoolctl.secrets import MASK, Secret

from .conftest import REPO, SHIPPED

# the pieces texts are made of: rich's stripped control codes, line breaks, markup and emoji codes,
# wide, combining and zero-width characters, escape sequences, long runs
PIECES = [*"ab :[]/\\\n\r\x07\x08\x0b\x0c\x00\x1b\x7f\x85\u2028\u200b\u0301é漢🏫", ":school:", ":100:", "[b]", "[/]",
          "[red]x[/red]", "\x1b[31m", "\r\n", "  ", "\u00a0", "\ufeff", "x" * 250, "\n\n", "fleet.yaml:100:3"]
TABLE_PIECES = [*"abcXYZ019 -_.,:/*()'\"!?", "à", "é", "í", "ò", "ó", "ú", "ü", "ç", "ñ", "l·l", "Ç", "ß", "ĳ",
                "  ", "x" * 30]


def texts(n: int, pieces: list[str], most: int = 12, seed: int = 16) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, most))) for _ in range(n)]


def rich_print(text: str, terminal: bool, width: int | None = 200) -> str:
    """What the Console output.py stood in for prints for `say(text)` (redaction aside)."""
    buffer = io.StringIO()
    Console(file=buffer, highlight=False, soft_wrap=True, emoji=False, width=width or 80,
            force_terminal=terminal).print(text, markup=False)
    return buffer.getvalue()


def rich_table(columns: list[str], rows: list[list[str]], encoding: str = "utf-8") -> str:
    buffer = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    Console(file=buffer, highlight=False, soft_wrap=True, emoji=False, width=200).print(table)
    buffer.flush()
    return buffer.buffer.getvalue().decode(encoding)


class Stream(io.StringIO):
    """A stand-in for stdout/stderr: `tty` says whether it is a terminal."""

    def __init__(self, tty: bool = False, encoding: str = "utf-8"):
        super().__init__()
        self.tty, self._encoding = tty, encoding

    def isatty(self) -> bool:
        return self.tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def plain_stdout(monkeypatch: pytest.MonkeyPatch) -> Stream:
    """A Stream as sys.stdout, no FORCE_COLOR nor TTY_COMPATIBLE (set in the test itself: pytest's
    capture sets sys.stdout again after the fixtures)."""
    stream = Stream()
    monkeypatch.setattr(sys, "stdout", stream)
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    return stream


def test_a_plain_line_is_what_the_console_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    for stderr in (False, True):
        for tty in (False, True):
            stream = Stream(tty)
            monkeypatch.setattr(sys, "stderr" if stderr else "stdout", stream)
            console = output._LazyConsole(stderr=stderr, width=None if tty else 200)
            expected = []
            for text in texts(1500, PIECES):
                console.line(text)
                expected.append(rich_print(text, terminal=tty))
            assert console._console is None  # rich was not needed
            assert stream.getvalue() == "".join(expected)


def test_a_line_with_a_tab_goes_through_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = plain_stdout(monkeypatch)
    console = output._LazyConsole(stderr=False, width=200)
    console.line("a\tb漢\tc")
    assert console._console is not None and stdout.getvalue() == rich_print("a\tb漢\tc", terminal=False)
    console.line("then :school: [b]x[/b]")  # once rich prints on a stream, it prints the rest
    assert stdout.getvalue().endswith("then :school: [b]x[/b]\n")


def test_say_and_warn_keep_emoji_codes_and_markup_and_mask_secrets(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("out", "err"):
        monkeypatch.setattr(output, name, output._LazyConsole(stderr=name == "err", width=200))
    secret = Secret("s3cret-value-16")
    output.say(f"Escola :school: [b]del[/b] Mar at fleet.yaml:100:3 {secret.reveal()}")
    output.warn(f"warning: {secret.reveal()} :100:")
    seen = capsys.readouterr()
    assert seen.out == f"Escola :school: [b]del[/b] Mar at fleet.yaml:100:3 {MASK}\n"
    assert seen.err == f"warning: {MASK} :100:\n"


def test_the_consoles_are_rich_consoles_made_on_first_use() -> None:
    console = output._LazyConsole(stderr=True, width=None)
    assert console._console is None
    assert isinstance(console.console(), Console) and console.console() is console.console()
    made = console.console()
    assert made.stderr and made.soft_wrap and not made._highlight and not made._emoji


def test_a_closed_pipe_ends_the_command_quietly_with_exit_1(tmp_path: object) -> None:
    """As rich's Console did: `schoolctl validate | true` and `schoolctl list | head -1` exit 1 without a
    traceback."""
    env = {**os.environ, "SCHOOLCTL_SCHOOLS_DIR": str(SHIPPED), "COLUMNS": "120"}
    for args in (["validate", "demo"], ["list"]):
        read, write = os.pipe()
        os.close(read)
        proc = subprocess.run([sys.executable, "-c", "from schoolctl.cli.main import main; main()", *args],
                              stdout=write, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, timeout=60)
        os.close(write)
        assert proc.returncode == 1 and proc.stderr == "", (args, proc.stderr)


def test_the_live_board_runs_on_the_rich_console(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """rich's Live is given the Console itself (it enters it, hooks its rendering): lines printed
    meanwhile go through it, above the board."""
    monkeypatch.setattr(output, "err", output._LazyConsole(stderr=True, width=None))
    with output.Board(["demo", "escola-pins"], live=True) as board:
        board("demo", "connecting to demo")
        output.warn("warning: a line above the board")
        board("demo", "done")
    assert output.err._console is not None
    assert "warning: a line above the board\n" in capsys.readouterr().err
