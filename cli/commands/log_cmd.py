"""`schoolctl log`: the run journal (schoolctl.journal): who deployed, imported or audited what,
when, with what result. `journal(...)` is how the verbs record a school's run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer

from schoolctl.cli.options import Json, Limit
from schoolctl.cli.output import fail, out, say, warn

app = typer.Typer()


# verbs whose line on the server is written by the run itself, over its own connection (cli/runner.py)
RECORDED_BY_RUNNER = ("deploy",)
_pending: Any = None  # schoolctl.server_record.Pending, once a record was started
_fleets: dict[str, Any] = {}  # schools folder -> its loaded fleet (one load per process)


def journal(verb: str, school: str, result: str, changes: Iterable[str] = (),
            detail: dict[str, Any] | None = None, seconds: float | None = None, count: int | None = None) -> None:
    """Record one school's run in the controller's journal and on the school's server (started
    here, waited for when the verb ends: `server_records_done`); a journal or a record that cannot
    be written is a warning, never a failed run."""
    from schoolctl import journal as runs

    changed = list(changes)
    try:
        runs.record(verb, school, result, changes=changed, detail=detail, seconds=seconds, count=count)
    except OSError as e:
        warn(f"warning: the run journal {runs.path()} was not written: {e.strerror or e} "
             f"(set {runs.ENV} to a file you can write)")
    if verb not in RECORDED_BY_RUNNER:
        _server_record(verb, school, result, len(changed) if count is None else count, detail or {})


def _school(school_id: str) -> Any:
    """The school's effective config, from the schools folder of the running command (None outside one)."""
    from typer._click.globals import get_current_context  # typer's own copy of click: the verbs' context

    ctx = get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    folder = getattr(root, "schools_dir", None)
    if folder is None:
        return None
    from pathlib import Path

    key = str(Path(folder).resolve())
    if key not in _fleets:
        _fleets[key] = root.config()
    return _fleets[key].schools.get(school_id)


def _server_record(verb: str, school_id: str, result: str, changes: int, detail: dict[str, Any]) -> None:
    """Start writing the run's line on the school's server (a restore: on the server restored to),
    when this process connected to it."""
    import atexit

    from schoolctl import server_record
    from schoolctl.connect import reached, ssh_argv
    from schoolctl.errors import SchoolctlError

    global _pending
    try:
        school = _school(school_id)
        if school is None:
            return
        server = school.server
        if verb == "restore" and isinstance(detail.get("to"), str):
            from schoolctl.config.model import Server

            server = Server(address=detail["to"])
        if not reached(server) or (verb == "audit" and detail.get("error")):
            return  # the verb never got to the server (or ran without one): nothing to record there
        if _pending is None:
            _pending = server_record.Pending()
            atexit.register(server_records_done)
        _pending.start(ssh_argv(server), school_id, server_record.entry(verb, school_id, result, changes),
                       school.privacy.log_retention_days)
    except (SchoolctlError, ValueError, OSError) as e:
        warn(f"warning: {school_id}: run record not written on the server: {getattr(e, 'message', None) or e}")


def server_records_done() -> None:
    """Wait for the records started on the servers; a warning for each one not written."""
    global _pending
    if _pending is None:
        return
    for note in _pending.wait():
        warn(f"warning: {note}")
    _pending = None


@app.command("log")
def log(ctx: typer.Context,
        school_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="Only this school.")] = None,
        limit: Limit = None,
        since: Annotated[str | None, typer.Option("--since", help="From a day (2026-11-01) or an age (7d, 12h).")]
        = None,
        as_json: Json = False) -> None:
    """Show the run journal: every deploy, users import and audit, per school, with who ran it
    (the OS user and SUDO_USER), when (UTC), the result and the changes. `--limit` chooses the
    schools from the fleet as every verb does."""
    from rich.table import Table
    from rich.text import Text

    from schoolctl import journal as runs

    try:
        start = runs.parse_since(since) if since is not None else None
    except ValueError as e:
        fail(f"--since: {e}")
    try:
        entries = runs.read(school_id, start)
    except OSError as e:
        fail(f"cannot read the run journal {runs.path()}: {e.strerror or e}")
    except UnicodeDecodeError:
        fail(f"the run journal {runs.path()} is not UTF-8 text (not a journal schoolctl wrote?); move it aside, or "
             f"set {runs.ENV} to another file")
    if limit:  # the fleet's schools the selection chooses (schoolctl.config.selection), narrowing ID
        from schoolctl.cli.context import get

        chosen = {s.id for s in get(ctx).chosen([school_id] if school_id else None, limit)[1]}
        entries = [e for e in entries if e.get("school") in chosen]
    if as_json:
        from schoolctl.cli.json_out import emit

        emit("log", {"journal": str(runs.path()), "entries": entries})
        return
    if not entries:
        which = " for " + ", ".join([*([school_id] if school_id else []), *(f"--limit {t}" for t in limit or [])])
        say(f"no runs recorded{which if school_id or limit else ''}{' since ' + since if since else ''} "
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
