"""The one exception the lab raises: a message a person can act on, and a hint."""

from __future__ import annotations


class LabError(Exception):
    """A lab failure with a clear message and, where there is one, a hint.

    ``usage`` is True for bad input or missing prerequisites (the CLI exits 2), False for a
    runtime failure (exit 1).
    """

    def __init__(self, message: str, hint: str = "", *, usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.usage = usage

    def __str__(self) -> str:
        return f"{self.message}\nhint: {self.hint}" if self.hint else self.message
