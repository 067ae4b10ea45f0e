"""`schoolctl users import`: a school's roster (CSV) into its directory; see cli/users/."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from schoolctl.cli.context import get
from schoolctl.cli.output import fail, say, warn

app = typer.Typer(help="The people of a school (its OpenLDAP directory).", no_args_is_help=True)


def _lines(result: Any) -> list[str]:
    """The human report of an import (no passwords, ever)."""
    from schoolctl.cli.users.roster import SUSPENDED

    plan = result.plan
    grace = timedelta(days=result.grace_days)
    rows = [f"  + add      {uid:<24} {p.role}{' ' + p.group if p.group else ''}" for uid, p in plan.add]
    for c in plan.change:
        what = ", ".join(f"{f} {old or '-'} -> {new or '-'}" for f, (old, new) in c.fields.items())
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
    return (f"{n['added']} added, {n['changed']} changed, {n['restored']} restored, {n['suspended']} suspended, "
            f"{n['deleted'] - len(result.kept)} deleted, {n['unchanged']} unchanged; "
            f"{n['groups_changed']} group(s) changed")


def _json(result: Any) -> dict[str, Any]:
    plan = result.plan
    return {
        "school": result.school, "status": result.status, "dry_run": result.dry_run, "counts": plan.counts(),
        "added": [{"uid": uid, "role": p.role, "group": p.group} for uid, p in plan.add],
        "changed": [{"uid": c.uid, "fields": {k: list(v) for k, v in c.fields.items()}} for c in plan.change],
        "restored": [c.uid for c in plan.restore],
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
            as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Make the school's directory hold exactly the roster: add, change, restore; suspend who is
    missing (deleted after the privacy policy's leaver_grace_days, on a later import). Initial
    passwords go only to an encrypted file for the school's secretary."""
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
    result = import_roster(school, people, dry_run, store)
    if as_json:
        say(json.dumps(_json(result), indent=2))
    else:
        _report(result, people, roster)
    if result.error:
        raise typer.Exit(1)


def _report(result: Any, people: list[Any], roster: Path) -> None:
    teachers = sum(p.role == "teacher" for p in people)
    classes = len({p.group for p in people if p.group})
    say(f"{result.school}: {len(people)} people in {roster.name} ({teachers} teachers, "
        f"{len(people) - teachers} students, {classes} classes)")
    for note in result.notes:
        say(f"  note: {note}")
    if result.status == "unchanged":
        say(f"{result.school}: unchanged ({len(result.plan.unchanged)} people, nothing to do)")
        return
    for line in _lines(result):
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
