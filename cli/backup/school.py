"""The school server's backup program (deploy/backup.py: SCRIPT), run over SSH: every subcommand
answers one JSON object on its last line."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from schoolctl.config.model import Server
from schoolctl.connect import Session
from schoolctl.deploy.backup import ARCHIVE, SCRIPT
from schoolctl.errors import BackupError


def checked_archive(name: str) -> str:
    """An archive name as schoolctl makes them (<id>-<UTC time>); BackupError (exit 2) otherwise."""
    if not re.match(ARCHIVE, name):
        raise BackupError(f"{name!r} is not an archive name", "archives are named <school>-<YYYY-MM-DDTHHMMSSZ>; "
                          "`schoolctl backup list ID` shows them", usage=True)
    return name


class ProgramError(BackupError):
    """The backup program's failure, with its whole answer (`"changed": false`: it refused before
    changing anything on the server)."""

    def __init__(self, message: str, answer: dict[str, Any]) -> None:
        super().__init__(message)
        self.answer = answer

    @property
    def unchanged(self) -> bool:
        return self.answer.get("changed") is False


def program(server: Server, label: str, *args: str, stdin: str | None = None,
            timeout: int = 6 * 3600) -> dict[str, Any]:
    """Run `schoolctl-backup ARGS` on `server` as root; its JSON answer, or BackupError with its reason
    (ProgramError when the program answered)."""
    with Session(server, label) as s:
        ok, out, err = s.run(" ".join([SCRIPT, *map(shlex.quote, args)]), stdin=stdin, timeout=timeout)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (err or out).strip()[-400:] or "no output"
        raise BackupError(f"{label}: the backup program gave no answer ({detail})",
                          "deploy the school (its backup layer installs the program)") from None
    if not ok or result.get("status", "ok") != "ok":
        raise ProgramError(f"{label}: {result.get('error') or (err or out).strip()[-400:]}", result)
    return result
