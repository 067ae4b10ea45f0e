"""The run record on the server itself: every deploy, users import, backup, restore and audit of a
school also leaves one JSON line on its server, in `/var/log/schoolctl/runs-<UTC day>.jsonl`
(root:adm 0640), so that whoever looks after the server can tell who ran what there and when,
without the controller's journal (schoolctl.journal). A line holds when (UTC), who (the OS user
and SUDO_USER on the controller, and the controller's name), the verb, the result, the number of
changes and the schoolctl version: never a secret, never a changed item's name (that stays in the
controller's journal), never a person.

The same command that appends the line removes the day files older than the school's
`privacy.log_retention_days`, so the record is kept no longer than the other logs. Writing it never
fails a verb: a server that cannot be written says so in a note.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import UTC, date, datetime, timedelta
from typing import Any

import schoolctl
from schoolctl.secrets import redact

DIR = "/var/log/schoolctl"
TIMEOUT = 20  # seconds for a record written over its own ssh command
MAX_RESULT = 120  # characters of the result kept (e.g. `failed (rolled back to 33.0.3)`)


def entry(verb: str, school: str, result: str, changes: int = 0, at: datetime | None = None) -> dict[str, Any]:
    """The record of one run (redacted: callers pass names and results, never values)."""
    from socket import gethostname

    from schoolctl.journal import RUN, who

    found = {"at": (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"), "run": RUN, **who(),
             "controller": gethostname(), "verb": verb, "school": school, "result": result[:MAX_RESULT],
             "changes": int(changes), "schoolctl_version": schoolctl.__version__}
    return json.loads(redact(json.dumps(found, ensure_ascii=False)))


def line(record: dict[str, Any]) -> str:
    """The record as the one line it is stored as (no newline inside: JSON escapes them)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def command(day: date, retention_days: int) -> str:
    """Shell: append the line read from stdin to `day`'s file, then remove every day file older than
    `retention_days` (a file of day D goes once D is `retention_days` days ago). Exits non-zero only
    when the line could not be appended."""
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, not {retention_days}")
    cutoff = (day - timedelta(days=retention_days)).strftime("%Y%m%d")
    name = f"{DIR}/runs-{day.isoformat()}.jsonl"
    return "\n".join([
        f"umask 027; install -d -m 0750 -o root -g adm {DIR} 2>/dev/null || mkdir -p -m 0750 {DIR} || exit 1",
        f"IFS= read -r record || exit 1; printf '%s\\n' \"$record\" >> {name} || exit 1",
        f"chgrp adm {name} 2>/dev/null; chmod 0640 {name}",
        f"for old in {DIR}/runs-*.jsonl; do d=${{old##*/runs-}}; d=${{d%.jsonl}}",
        '  case "$d" in [0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]) '
        f'[ "$(printf %s "$d" | tr -d -)" -le {cutoff} ] && rm -f -- "$old";; esac',
        "done; exit 0"])


def _day(record: dict[str, Any]) -> date:
    return datetime.fromisoformat(record["at"]).astimezone(UTC).date()


def write_pyinfra(host: Any, record: dict[str, Any], retention_days: int) -> str | None:
    """Append the record over a connected pyinfra host (the deploy's own SSH connection: one short
    command, no new connection). Answers a note when it could not, None when written."""
    from pyinfra.api import StringCommand

    try:
        ok, output = host.run_shell_command(StringCommand(command(_day(record), retention_days)),
                                            _stdin=line(record) + "\n", _timeout=TIMEOUT)
    except Exception as e:  # a lost connection, a timeout: the run itself is not failed for it
        return f"run record not written on the server: {type(e).__name__}: {redact(str(e))[:200]}"
    if not ok:
        why = "; ".join(output.stderr_lines[-2:]) or "the command failed"
        return f"run record not written on the server ({DIR}): {redact(why)[:200]}"
    return None


class Pending:
    """Records written over ssh (the verbs other than deploy), started at once and waited for
    together at the end, so that 300 schools' records cost the time of the slowest one."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, argv: list[str], school: str, record: dict[str, Any], retention_days: int) -> None:
        """Run `argv` (the ssh command line to the school's server, schoolctl.connect.ssh_argv) with
        the record's command; stdin carries the line."""
        remote = command(_day(record), retention_days)
        proc = subprocess.Popen([*argv, f"sh -c {shlex.quote(remote)}"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None
        try:
            proc.stdin.write(line(record) + "\n")
            proc.stdin.close()
        except OSError:  # ssh already gone: its exit status says why
            pass
        proc.stdin = None  # written and closed: communicate() only reads
        self.started.append((school, proc))

    def wait(self, timeout: float = TIMEOUT) -> list[str]:
        """Wait for every record started; one note per school whose record was not written."""
        notes = []
        for school, proc in self.started:
            try:
                _out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                notes.append(f"{school}: run record not written on the server: no answer in {timeout:.0f} s")
                continue
            if proc.returncode != 0:
                why = (err or "").strip().splitlines()
                notes.append(f"{school}: run record not written on the server ({DIR}): "
                             f"{redact(why[-1] if why else f'exit {proc.returncode}')[:200]}")
        self.started = []
        return notes
