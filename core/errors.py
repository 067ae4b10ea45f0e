"""One error hierarchy: every failure schoolctl expects is a `SchoolctlError` with an exit code
(2: bad input or set-up, nothing changed; 1: something failed on a server or in the lab).
`schoolctl.cli.main.main()` turns them into a message and that exit code, in one place."""

from __future__ import annotations

INPUT = 2    # bad input or set-up: nothing deployed, nothing half-written
RUNTIME = 1  # a server, the lab or an upload failed


class SchoolctlError(Exception):
    """A failure with a message a person can act on and, where there is one, a hint."""

    exit_code = RUNTIME

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """What the CLI prints, one line each (secrets are scrubbed by the printer)."""
        return [f"error: {self.message}", *([f"hint: {self.hint}"] if self.hint else [])]

    def __str__(self) -> str:
        return f"{self.message}\nhint: {self.hint}" if self.hint else self.message


class _Problems(SchoolctlError):
    """Bad input with several problems, each on its own line (`file:line: message`)."""

    exit_code = INPUT
    what = "problem"

    def __init__(self, problems: list) -> None:  # list[Problem] or list[str]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def lines(self) -> list[str]:
        n = len(self.problems)
        return [*(str(p) for p in self.problems), f"{n} {self.what}{'s' if n != 1 else ''} found; {self.footer}"]

    footer = "nothing was changed."


class ConfigError(_Problems):
    """The fleet's configuration is not valid; `problems` holds every one (schoolctl.config.problems)."""

    def __init__(self, problems: list) -> None:
        super().__init__(sorted(set(problems)))


class RosterError(_Problems):
    """The roster has bad rows; `problems` holds every one as `file:LINE: message`."""

    footer = "nothing was imported."


class PreflightError(_Problems):
    """What a verb that connects to servers needs on this machine is not there (a lab host, a usable
    vault): found before any connection, every problem at once."""

    what = "set-up problem"


class SettingError(SchoolctlError):
    """A SCHOOLCTL_* environment setting is not valid (checked before any command runs)."""

    exit_code = INPUT


class SecretError(SchoolctlError):
    """The vault cannot be used: missing key, wrong key, unreadable file."""

    exit_code = INPUT


class ArtifactError(SchoolctlError):
    """A release cannot be fetched safely (no pin, checksum mismatch, missing from the mirror)."""

    exit_code = INPUT


class RenderError(SchoolctlError, ValueError):
    """A value the deploy refuses to write into a server's files or commands, found while rendering
    (on the controller, before any connection): bad input or set-up, nothing changed. Also a
    ValueError, as the refusals it replaces were (callers catching ValueError still do)."""

    exit_code = INPUT

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint or RENDER_HINT)


RENDER_HINT = ("correct the value in the school's file or in fleet.yaml; that `schoolctl validate` let it "
               "through is a schoolctl bug worth reporting")


class ServerError(SchoolctlError):
    """A server cannot be reached, or refused a command."""


class _Usage(SchoolctlError):
    """A failure that is bad input or set-up (`usage`: exit 2) or a runtime failure (exit 1)."""

    def __init__(self, message: str, hint: str = "", *, usage: bool = False) -> None:
        super().__init__(message, hint)
        self.usage = usage

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return INPUT if self.usage else RUNTIME


class LabError(_Usage):
    """A lab failure. `usage` is True for bad input or missing prerequisites (exit 2), False for a
    runtime failure (exit 1)."""


class BackupError(_Usage):
    """A backup, restore or drill failed (exit 1), or was asked for what cannot be (`usage`: exit 2,
    e.g. no backup host in the fleet, an unknown archive, a server that already holds school data)."""
