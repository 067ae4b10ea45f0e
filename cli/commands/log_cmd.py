"""`schoolctl log`: the run journal (schoolctl.journal): who deployed, imported or audited what,
when, with what result. `journal(...)` is how the verbs record a school's run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from schoolctl import journal as runs
from schoolctl.cli.output import fail, out, say, warn

app = typer.Typer()


def journal(verb: str, school: str, result: str, changes: Iterable[str] = (),
            detail: dict[str, Any] | None = None, seconds: float | None = None, count: int | None = None) -> None:
    """Record one school's run; a journal that cannot be written is a warning, never a failed run."""
    try:
        runs.record(verb, school, result, changes=changes, detail=detail, seconds=seconds, count=count)
    except OSError as e:
        warn(f"warning: the run journal {runs.path()} was not written: {e.strerror or e} "
             f"(set {runs.ENV} to a file you can write)")


@app.command("log")
def log(school_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="Only this school.")] = None,
        since: Annotated[str | None, typer.Option("--since", help="From a day (2026-11-01) or an age (7d, 12h).")]
        = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show the run journal: every deploy, users import and audit, per school, with who ran it
    (the OS user and SUDO_USER), when (UTC), the result and the changes."""
    try:
        start = runs.parse_since(since) if since is not None else None
    except ValueError as e:
        fail(f"--since: {e}")
    try:
        entries = runs.read(school_id, start)
    except OSError as e:
        fail(f"cannot read the run journal {runs.path()}: {e.strerror or e}")
    if as_json:
        from schoolctl.cli.json_out import emit

        emit("log", {"journal": str(runs.path()), "entries": entries})
        return
    if not entries:
        say(f"no runs recorded{' for ' + school_id if school_id else ''}{' since ' + since if since else ''} "
            f"in {runs.path()}")
        return
    t = Table("when (UTC)", "who", "verb", "school", "result", "changes", "version")
    for e in entries:
        who = e.get("user") or "?"
        if e.get("sudo_user"):
            who += f" (sudo by {e['sudo_user']})"
        changed = ", ".join(e.get("changed") or [])
        shown = f"{e.get('changes', 0)}" + (f": {changed[:80]}{'...' if len(changed) > 80 else ''}" if changed else "")
        cells = (str(e["at"]).replace("+00:00", "Z"), who, e.get("verb"), e.get("school"), e.get("result"), shown,
                 e.get("schoolctl_version"))
        t.add_row(*(Text(str(c)) for c in cells))  # Text: no markup, no emoji codes
    out.print(t)
