"""`schoolctl backup`, `backup list`, `backup prune`, `backup verify` and `schoolctl restore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from schoolctl.cli.context import get, preflight
from schoolctl.cli.json_out import emit
from schoolctl.cli.options import All, Ids, Json, Limit, Yes
from schoolctl.cli.output import confirm, fail, say, warn

if TYPE_CHECKING:  # typer >= 0.2x carries its own click: importing the package costs start-up time
    import click


class _TakeByDefault(TyperGroup):
    """`schoolctl backup ID...|--all` takes archives (the hidden `now` command); `backup list|prune|
    verify ...` are the other verbs."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["now", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_TakeByDefault, no_args_is_help=True,
                  help="The schools' archives on the city's backup host (BorgBackup): `schoolctl backup ID...|--all` "
                       "takes one now.")
verbs = typer.Typer()



def _schools(ctx: typer.Context, ids: list[str] | None, all_: bool, limit: list[str] | None = None,
             servers: bool = True) -> list[Any]:
    """The schools named, or --all, narrowed by --limit; each must have a backup host, and (with
    `servers`) its lab host running when it is one (context.preflight; a restore needs neither)."""
    schools = get(ctx).chosen(ids, limit, all_)[1]
    missing = [s.id for s in schools if s.backup is None]
    if missing:
        fail(f"the fleet names no backup host for {', '.join(missing)}", 2)
    if servers:
        preflight(schools)  # their lab hosts, before any connection
    return schools


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return "?"


def _each(schools: list[Any], work: Any, verb: str) -> list[dict[str, Any]]:
    """`work(school)` for every school at once (gevent); a school's failure never stops the others.
    Each school's outcome goes into the run journal (`schoolctl log`)."""
    import time

    import gevent

    from schoolctl.cli.commands.log_cmd import journal
    from schoolctl.errors import SchoolctlError
    from schoolctl.secrets import redact

    def one(school: Any) -> dict[str, Any]:
        start = time.monotonic()
        try:
            result = {"school": school.id, **work(school)}
        except SchoolctlError as e:
            result = {"school": school.id, "status": "failed", "error": redact(e.message),
                      "usage": e.exit_code == 2}
        detail = {k: result[k] for k in ("archive", "error", "kept") if k in result}
        journal(verb, school.id, result.get("status", "ok"), detail=detail, seconds=time.monotonic() - start)
        return result

    jobs = [gevent.spawn(one, s) for s in schools]
    gevent.joinall(jobs)
    return [j.value for j in jobs]


def _finish(results: list[dict[str, Any]]) -> None:
    for r in results:
        if r.get("status") == "failed":
            warn(f"{r['school']}: failed: {r.get('error')}")
    if any(r.get("status") == "failed" for r in results):
        raise typer.Exit(2 if all(r.get("usage") for r in results if r.get("status") == "failed") else 1)


@app.command("now", hidden=True)
def backup(ctx: typer.Context, ids: Ids = None, all_: All = False, limit: Limit = None, as_json: Json = False) -> None:
    """Take an archive of each school now (the same program as its nightly timer), then note the
    repository's archives on the backup host; per school: archive, size, deduplicated size, time."""
    from schoolctl.cli.backup import host
    from schoolctl.cli.backup.school import program
    from schoolctl.deploy.sites import build_site
    from schoolctl.secrets import SecretStore

    store = SecretStore()
    schools = _schools(ctx, ids, all_, limit)

    def take(school: Any) -> dict[str, Any]:
        result = program(school.server, school.id, "create")
        host.remember(build_site(school, store, readonly=True), store)
        return result

    results = _each(schools, take, "backup")
    if as_json:
        emit("backup", {"schools": results})
    else:
        for r in results:
            if r.get("status") == "ok":
                say(f"{r['school']}: {r['archive']}: {_size(r['original_size'])}, {_size(r['deduplicated_size'])} "
                    f"new on the backup host, {r['seconds']} s")
    _finish(results)


@app.command("list")
def list_(ctx: typer.Context, school_id: Annotated[str, typer.Argument(metavar="ID", help="School id.")],
          as_json: Json = False) -> None:
    """The school's archives: time, size, and the versions and counts of its manifest."""
    from schoolctl.cli.backup.school import program

    [school] = _schools(ctx, [school_id], False)
    found = program(school.server, school.id, "list")
    if as_json:
        emit("backup-list", {"school": school.id, **found})
        return
    say(f"{school.id}: {found['repository']} (encryption {found['encryption']})")
    for a in found["archives"]:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(a["versions"].items()))
        when = f"{a['time'][:19].replace('T', ' ')} UTC" if a.get("time") else "?"  # the program gives UTC
        say(f"  {a['name']}  {when}  {_size(a['original_size'])}  {versions}")


@app.command()
def prune(ctx: typer.Context, ids: Ids = None, all_: All = False, limit: Limit = None, as_json: Json = False,
          yes: Yes = False) -> None:
    """Thin each school's archives to its retention, on the backup host (never from the school): the
    archives beyond it are deleted for good, so it asks first (--yes for scripts and cron).
    Refused for a school whose archives vanished without a prune (a deletion through its key)."""
    from schoolctl.cli.backup import host
    from schoolctl.deploy.sites import build_site
    from schoolctl.secrets import SecretStore

    schools = _schools(ctx, ids, all_, limit)
    confirm(f"Delete the archives beyond their retention of {len(schools)} school(s) "
            f"({', '.join(s.id for s in schools[:8])}{' ...' if len(schools) > 8 else ''}) on the backup host?", yes)
    store = SecretStore()
    results = _each(schools,
                    lambda s: {"status": "ok", **host.prune(build_site(s, store, readonly=True), store)},
                    "backup prune")
    if as_json:
        emit("backup-prune", {"schools": results})
    else:
        for r in results:
            if r.get("status") == "ok":
                say(f"{r['school']}: {r['kept']} archives kept, {len(r['pruned'])} pruned")
    _finish(results)


@app.command()
def verify(ctx: typer.Context, ids: Ids = None, all_: All = False, limit: Limit = None, as_json: Json = False) -> None:
    """The restore drill: the newest archive restored onto a scratch lab host, logins, the manifest's
    counts and the audit checked there, the result recorded on the school's server, the host removed."""
    from schoolctl.cli.backup.drill import drill
    from schoolctl.secrets import SecretStore

    store = SecretStore()
    schools = _schools(ctx, ids, all_, limit)
    results = []
    for school in schools:  # one scratch host at a time: a drill is a whole school's deploy
        results += _each([school], lambda s: drill(s, store, say=(lambda line: None) if as_json else say),
                         "backup verify")
    if as_json:
        emit("backup-verify", {"schools": results})
    else:
        for r in results:
            if r.get("status") == "ok":
                counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
                say(f"{r['school']}: drill passed for {r['archive']} in {r['seconds']} s ({counts}; logins "
                    f"{', '.join(r['logins'])} ok; audit clean)")
    _finish(results)


@verbs.command()
def restore(ctx: typer.Context, school_id: Annotated[str, typer.Argument(metavar="ID", help="School id.")],
            to: Annotated[str, typer.Option("--to", metavar="SERVER", help="The server to restore onto: an "
                                            "address or lab:NAME.")],
            archive: Annotated[str | None, typer.Option("--archive", help="An archive name (default: the "
                                                        "newest).")] = None,
            yes: Yes = False,
            force: Annotated[bool, typer.Option("--force", help="Replace the data a server already holds "
                                                "(moved aside, not deleted).")] = False,
            as_json: Json = False) -> None:
    """Deploy the school's configuration onto SERVER, then put the archive's data back (databases,
    directory, files), then converge (the apps' upgrade steps when the archive is older)."""
    from pydantic import ValidationError

    from schoolctl.cli.backup.restore import restore as do_restore
    from schoolctl.config.model import Server
    from schoolctl.secrets import SecretStore

    [school] = _schools(ctx, [school_id], False, servers=False)  # the school's own server may be gone
    try:
        target = Server(address=to)
    except ValidationError as e:
        fail(f"--to {to}: {e.errors()[0]['msg'].removeprefix('Value error, ')}")
    if target.lab_name:
        from schoolctl.lab import Lab

        Lab().up([target.lab_name])
    confirm(f"Restore {school_id} onto {to}?", yes)
    from schoolctl.cli.commands.log_cmd import journal
    from schoolctl.errors import SchoolctlError

    try:
        result = do_restore(school, target, SecretStore(), archive=archive, force=force,
                            say=(lambda line: None) if as_json else say)
    except SchoolctlError as e:
        journal("restore", school_id, "failed", detail={"to": to, "error": e.message})
        raise
    journal("restore", school_id, "ok", detail={"to": to, "archive": result["archive"]}, seconds=result["seconds"])
    if as_json:
        emit("restore", result)
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["restored_counts"].items()))
    say(f"{school_id}: {result['archive']} restored onto {to} in {result['seconds']} s ({counts})")
    for k, (a, b) in result["differ"].items():
        warn(f"{school_id}: {k}: the archive says {a}, the restored server has {b}")
    if to != school.server.address:
        say(f"to make it the school's server: set `server: {to}` in {school.source}")
