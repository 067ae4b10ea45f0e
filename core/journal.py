"""The run journal on the controller: who ran which verb against which school, when, with what
result and which changes. One JSON line per school and run, appended under an exclusive file lock
(fcntl) to a 0600 file: `$SCHOOLCTL_JOURNAL`, default ~/.local/state/schoolctl/journal.jsonl.
Every line goes through schoolctl.secrets.redact; callers pass names and results, never values.
Any verb may record (`record(...)`); `schoolctl log` reads it (`read(...)`)."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import socket
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import schoolctl
from schoolctl.secrets import redact

ENV = "SCHOOLCTL_JOURNAL"
DEFAULT = Path("~/.local/state/schoolctl/journal.jsonl")
MAX_CHANGED = 200  # changed item names kept per line (the count is always whole)
RUN = uuid.uuid4().hex[:12]  # one id for every line this process writes: the schools of one run
_SINCE = re.compile(r"^(\d{1,5})([dhm])$")


def path() -> Path:
    """Where the journal is."""
    return Path(os.environ.get(ENV) or DEFAULT).expanduser()


def who() -> dict[str, str | None]:
    """The OS user running schoolctl, and the one who called sudo (if any)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "sudo_user": os.environ.get("SUDO_USER") or None}


@contextlib.contextmanager
def _locked(mode: str, lock: int) -> Iterator[IO[str]]:
    file = path()
    if mode == "a":
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
    else:
        fd = os.open(file, os.O_RDONLY)
    with os.fdopen(fd, mode, encoding="utf-8") as f:
        fcntl.flock(f, lock)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def record(verb: str, school: str, result: str, changes: Iterable[str] = (),
           detail: dict[str, Any] | None = None, seconds: float | None = None,
           count: int | None = None) -> dict[str, Any]:
    """Append one line for `school` and return it. `changes`: the names of the changed items
    (`count` instead when they must not be named, e.g. people); `detail`: the arguments that matter
    (never a secret). Raises OSError when it cannot be written."""
    changed = list(changes)
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "run": RUN, **who(),
             "controller": socket.gethostname(), "verb": verb, "school": school, "result": result,
             "changes": len(changed) if count is None else count, "changed": changed[:MAX_CHANGED],
             "detail": detail or {},
             "seconds": None if seconds is None else round(seconds, 2), "schoolctl_version": schoolctl.__version__}
    line = redact(json.dumps(entry, ensure_ascii=False))
    with _locked("a", fcntl.LOCK_EX) as f:
        f.write(line + "\n")
    return json.loads(line)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`2026-11-01` (that day, 00:00 UTC), or `7d` / `12h` / `30m` before now; ValueError otherwise."""
    now = now or datetime.now(UTC)
    m = _SINCE.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: n})
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither a date (2026-11-01) nor an age (7d, 12h, 30m)") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def read(school: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    """The journal's lines, oldest first, of one school and/or since a time (unreadable lines skipped)."""
    if not path().exists():
        return []
    with _locked("r", fcntl.LOCK_SH) as f:
        text = f.read()
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["at"])
        except (ValueError, KeyError, TypeError):
            continue
        if (school is None or entry.get("school") == school) and (since is None or at >= since):
            entries.append(entry)
    return entries
