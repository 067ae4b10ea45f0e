"""`schoolctl rollback ID APP`: an app back to the release and database of before its last upgrade
(the rollback point the upgrade wrote: deploy/upgrade.py), by hand, e.g. after an upgrade that
succeeded but does not work for the school."""

from __future__ import annotations

from typing import Annotated

import typer

from schoolctl.cli.context import get, preflight
from schoolctl.cli.output import fail, say, warn

app = typer.Typer()

APPS = ("moodle", "nextcloud", "etherpad")


def upgrade_app(name: str):
    """The deploy module's upgrade.App of `name`."""
    from schoolctl.deploy import etherpad, moodle, nextcloud

    return {"moodle": moodle.APP_UPGRADE, "nextcloud": nextcloud.APP, "etherpad": etherpad.APP}[name]


def _fields(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line and not line.startswith("schoolctl-"))


@app.command()
def rollback(ctx: typer.Context,
             school_id: Annotated[str, typer.Argument(metavar="ID", help="School id.")],
             app_name: Annotated[str, typer.Argument(metavar="APP", help="moodle, nextcloud or etherpad.")],
             yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
             as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Put APP back to the release and database of before its last upgrade: `current` to the previous
    release, the dump taken just before the upgrade restored, services restarted, maintenance mode
    off. Refuses (exit 2) when there is no previous release or no dump. What was written in the app
    since the upgrade is lost (the database goes back to the dump)."""
    from schoolctl.cli.json_out import emit
    from schoolctl.connect import Session
    from schoolctl.deploy import upgrade

    if app_name not in APPS:
        fail(f"{app_name!r} is not an app schoolctl upgrades; name one of {', '.join(APPS)}")
    school = get(ctx).config([school_id]).select([school_id])[0]
    if not school.has(app_name):
        fail(f"{school_id} has no {app_name} (services.{app_name} in its school file)")
    preflight([school])  # its lab host, before any connection
    spec = upgrade_app(app_name)
    with Session(school.server, school.id) as srv:
        ok, stdout, stderr = srv.run(upgrade.describe_command(spec), timeout=120)
        code = upgrade.result_code(stdout)
        if not ok or code is None:
            detail = (stderr or stdout).strip()[-500:]
            fail(f"{school_id}: reading the rollback point of {app_name} failed: {detail}", 1)
        if code in (upgrade.NO_POINT, upgrade.NO_DUMP):
            fail(f"{school_id}: {stderr.strip().splitlines()[-1] if stderr.strip() else 'no rollback point'}")
        point = _fields(stdout)
        tell = warn if as_json else say  # with --json, stdout holds the JSON document alone
        tell(f"{school_id}: {app_name} {point['to']} -> {point['from']}: release {point['previous']}, database from "
             f"{point['dump']} (taken {point['at']}, just before the upgrade); what was written since is lost")
        if not yes and not typer.confirm(f"Roll {app_name} of {school_id} back to {point['from']}?", err=True):
            raise typer.Exit(1)
        ok, stdout, stderr = srv.run(upgrade.rollback_command(spec), timeout=3600)
    code = upgrade.result_code(stdout)
    lines = [line for line in stderr.splitlines() if line.strip()]
    back = upgrade.rolled_back(stderr)
    if as_json:
        emit("rollback", {"school": school_id, "app": app_name, "from": point["to"], "to": point["from"],
                          "release": point["previous"], "dump": point["dump"], "dump_taken": point["at"],
                          "rolled_back": back is not None and code == 0, "code": code,
                          "output": lines[-30:]})
    if code != 0 or back is None:
        for line in lines[-20:]:
            warn(line)
        fail(f"{school_id}: the rollback of {app_name} failed (see above)", 2 if code in (upgrade.NO_POINT,
                                                                                      upgrade.NO_DUMP) else 1)
    if not as_json:
        for line in lines:
            if not line.startswith(upgrade.MARKER):
                say(f"  {line}")
        say(f"{school_id}: {app_name} rolled back to {back[1]} (release {point['previous']}, database restored "
            f"from {point['dump']})")
    configured = school.versions.get(app_name)
    if configured and configured != back[1]:
        warn(f"note: {school_id}.yaml still asks for {app_name} {configured}: the next deploy upgrades again; set "
             f"services.{app_name}.version: \"{back[1]}\" to stay")
