"""`schoolctl users import`: a school's roster (CSV) into its directory; see cli/users/."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from schoolctl.cli.context import get
from schoolctl.cli.json_out import emit
from schoolctl.cli.options import Json, Yes
from schoolctl.cli.output import confirm, fail, say, warn

app = typer.Typer(help="The people of a school (its OpenLDAP directory).", no_args_is_help=True)


def _lines(result: Any) -> list[str]:
    """The human report of an import (no passwords, ever)."""
    from schoolctl.cli.users.roster import SUSPENDED

    plan = result.plan
    grace = timedelta(days=result.grace_days)
    rows = [f"  + add      {uid:<24} {p.role}{' ' + p.group if p.group else ''}" for uid, p in plan.add]
    for c in plan.change:
        what = ", ".join(f"{f} {old or '-'} -> {new or '-'}" for f, (old, new) in c.fields.items() if f != "group")
        if "group" in c.fields:   # the school-year move: directory group, Moodle cohort, Nextcloud group
            old, new = c.fields["group"]
            rows.append(f"  > move     {c.uid:<24} class {old or '-'} -> {new or '-'}" + (f"; {what}" if what else ""))
        else:
            rows.append(f"  ~ change   {c.uid:<24} {what}")
    rows += [f"  ^ restore  {c.uid:<24} back in the roster" for c in plan.restore]
    rows += [f"  - suspend  {a.uid:<24} {SUSPENDED}{plan.suspended_on} (deleted after {plan.suspended_on + grace})"
             for a in plan.suspend]
    for a in plan.delete:
        apps = result.hooks.get(a.uid, {})
        done = [app for app, status in apps.items() if status == "ok"]
        failed = [f"{app}: {status}" for app, status in apps.items() if status != "ok"]
        detail = f"suspended {a.suspended}"
        if done:
            detail += f"; deleted from {'/'.join(done)}"
        if failed:
            detail += f"; NOT deleted: {'; '.join(failed)}"
        rows.append(f"  x delete   {a.uid:<24} {detail}")
    rows += [f"  . waiting  {a.uid:<24} suspended {a.suspended}, deleted after {when}" for a, when in plan.waiting]
    return rows


def _summary(result: Any) -> str:
    n = result.plan.counts()
    moved = f"{len(result.plan.moves)} moved to another class, " if result.plan.moves else ""
    return (f"{n['added']} added, {moved}{n['changed']} changed, {n['restored']} restored, {n['suspended']} suspended, "
            f"{n['deleted'] - len(result.kept)} deleted, {n['unchanged']} unchanged; "
            f"{n['groups_changed']} group(s) changed")


def _json(result: Any) -> dict[str, Any]:
    plan = result.plan
    return {
        "school": result.school, "status": result.status, "dry_run": result.dry_run, "counts": plan.counts(),
        "added": [{"uid": uid, "role": p.role, "group": p.group} for uid, p in plan.add],
        "changed": [{"uid": c.uid, "fields": {k: list(v) for k, v in c.fields.items()}} for c in plan.change],
        "restored": [c.uid for c in plan.restore],
        "moved": [{"uid": uid, "from": old, "to": new} for uid, old, new in plan.moves],
        "classes": result.classes,
        "suspended": [a.uid for a in plan.suspend],
        "deleted": [{"uid": a.uid, "suspended": str(a.suspended), "apps": result.hooks.get(a.uid, {}),
                     "kept": a.uid in result.kept} for a in plan.delete],
        "waiting": [{"uid": a.uid, "delete_after": str(when)} for a, when in plan.waiting],
        "groups": {"created": sorted(plan.new_groups), "changed": sorted(plan.groups),
                   "deleted": plan.drop_groups},
        "passwords_file": str(result.passwords_file) if result.passwords_file else None,
        "notes": result.notes, "error": result.error, "seconds": round(result.seconds, 2),
    }


@app.command("import")
def import_(ctx: typer.Context,
            school_id: Annotated[str, typer.Argument(metavar="ID", help="School id.")],
            roster: Annotated[Path, typer.Argument(metavar="ROSTER.csv", help="CSV: given_name,family_name,role,"
                                                   "group,email (role teacher|student; group = class, e.g. 1A).")],
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]
            = False,
            yes: Yes = False, as_json: Json = False) -> None:
    """Make the school's directory hold exactly the roster: add, change, restore; suspend who is
    missing (deleted after the privacy policy's leaver_grace_days, on a later import). Initial
    passwords go only to an encrypted file for the school's secretary. Asks first, saying how many,
    when anyone would be suspended or deleted (--yes for scripts; without a terminal it refuses)."""
    from schoolctl.cli.users.importer import import_roster
    from schoolctl.cli.users.roster import parse_roster, read_roster
    from schoolctl.secrets import SecretStore

    school = get(ctx).config([school_id]).select([school_id])[0]
    try:
        data = read_roster(roster)
    except OSError as e:
        fail(f"cannot read {roster}: {e.strerror}")
    people, notes = parse_roster(data, str(roster))
    for note in notes:
        warn(f"note: {note}")
    store = SecretStore()
    if not dry_run and not yes:
        _ask(school, people, store)
    result = import_roster(school, people, dry_run, store)
    from schoolctl.cli.commands.log_cmd import journal

    plan = result.plan
    journal("users import", school_id, ("dry run: " if dry_run else "") + str(result.status),
            # how many people changed, never who: the journal keeps no pupil's name
            count=0 if dry_run else sum(len(x) for x in (plan.add, plan.change, plan.restore, plan.suspend,
                                                         plan.delete)),
            detail={"roster": roster.name, "people": len(people), "dry_run": dry_run, "counts": plan.counts(),
                    "error": result.error}, seconds=result.seconds)
    if as_json:
        emit("users import", _json(result))
    else:
        _report(result, people, roster)
    if result.error:
        raise typer.Exit(1)


def _ask(school: Any, people: list[Any], store: Any) -> None:
    """Confirm an import that would suspend or delete people: refused at once without a terminal
    (exit 2, before the server is asked); on a terminal, the directory is read first (a dry run)
    and the question says how many would be suspended and deleted (with their data in the apps)."""
    from schoolctl.cli.users.importer import import_roster

    hint = "check it with --dry-run, then pass --yes to import without asking"
    if not sys.stdin.isatty():
        confirm(f"Import the roster into {school.id}, suspending or deleting who is not in it?", False, hint)
    plan = import_roster(school, people, True, store).plan
    if plan.suspend or plan.delete:
        apps = [a for a in ("moodle", "nextcloud", "etherpad") if school.has(a)]
        confirm(f"{school.id}: suspend {len(plan.suspend)} and delete {len(plan.delete)} people (deleting their "
                f"accounts and data{' in ' + ', '.join(apps) if apps else ''})?", False, hint)


def _report(result: Any, people: list[Any], roster: Path) -> None:
    teachers = sum(p.role == "teacher" for p in people)
    classes = len({p.group for p in people if p.group})
    say(f"{result.school}: {len(people)} people in {roster.name} ({teachers} teachers, "
        f"{len(people) - teachers} students, {classes} classes)")
    for note in result.notes:
        say(f"  note: {note}")
    from schoolctl.cli.users.classes import summary

    apps = [f"  {summary(app, answer)}" for app, answer in result.classes.items()]
    if result.status == "unchanged":
        say(f"{result.school}: unchanged ({len(result.plan.unchanged)} people, nothing to do)")
        for line in apps:
            say(line)
        return
    for line in _lines(result) + apps:
        say(line)
    say(("dry run, nothing changed: would be " if result.dry_run else "done: ") + _summary(result)
        + f" ({result.seconds:.1f}s)")
    if result.passwords_file:
        from schoolctl.secrets import SecretStore

        say(f"initial passwords of the {len(result.plan.add)} new people (for the school's secretary, encrypted): "
            f"{result.passwords_file}")
        say(f"  read them with: ansible-vault view --vault-password-file {SecretStore().key_file} "
            f"{result.passwords_file}")
    if result.error:
        warn(f"error: {result.error}")


def _letters_command() -> None:
    """`users letters` lives in its own module (cli/commands/letters_cmd.py)."""
    from schoolctl.cli.commands.letters_cmd import letters

    app.command("letters")(letters)


_letters_command()
