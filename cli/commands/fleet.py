"""Commands about the fleet's configuration: validate, list, new, schema, inventory."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from schoolctl.cli.context import get
from schoolctl.cli.options import Json, Limit
from schoolctl.cli.output import fail, out, say, warn

if TYPE_CHECKING:  # the model (pydantic) is imported when a command needs it: `--help` starts fast
    from schoolctl.config.loader import Config
    from schoolctl.config.model import EffectiveSchool, Fleet

app = typer.Typer()

Ids = Annotated[list[str] | None, typer.Argument(help="School ids (default: every school).", show_default=False)]


def accept_check(config: Config, ids: list[str] | None) -> list[str]:
    """Refuse (ConfigError, exit 2) `accept:` entries naming a control the audit does not have or a
    school not in the folder; return the warnings for entries past their `until` that concern
    the schools checked (`file:line: ...`)."""
    from schoolctl import releases
    from schoolctl.config.problems import Problem
    from schoolctl.config.yamlfile import locate
    from schoolctl.errors import ConfigError

    fleet = config.fleet
    if not fleet.accept:
        return []
    from schoolctl.audit.ids import CONTROL_IDS  # the ids alone: the controls would import testinfra

    doc, shown = config.fleet_doc, config.fleet_shown
    bad = releases.accept_problems(fleet, CONTROL_IDS, config.school_files)
    if bad:
        raise ConfigError([Problem(shown, *locate(doc, ("accept", i, key)), message, hint)
                           for i, key, message, hint in bad])
    on = today(fleet)
    lines = []
    gone = releases.expired(fleet, on)
    for i, a in enumerate(fleet.accept):
        if any(a is g for g in gone) and releases.concerns(a, ids):
            line, _ = locate(doc, ("accept", i, "until"))
            lines.append(f"warning: {shown}:{line}: accept[{i}] {a.control} for {a.school} expired on "
                         f"{a.until.isoformat()} (accepted by {a.accepted_by}: {a.reason}); the control fails "
                         "again: fix it, or renew the entry with a new `until`")
    return lines


def today(fleet: Fleet) -> date:
    """releases.today (the day in the fleet's time zone), told to the result cache: a recorded
    `validate` is reused on that day only."""
    from schoolctl import releases
    from schoolctl.config import result_cache

    on = releases.today(fleet)
    result_cache.note_day(fleet.timezone, on)
    return on


def release_lines(school: EffectiveSchool, on: date) -> list[str]:
    """`warning: ID: <finding>` for each unsafe release the school is configured to run, unless the
    fleet accepts the risk (a live `accept:` entry for the control that would fail on the server:
    `plan` and the audit show those as accepted, with their reason and date)."""
    from schoolctl import releases

    return [f"warning: {school.id}: {f.message}" for f, a in releases.reviewed(school, on) if a is None]


@app.command()
def validate(ctx: typer.Context, ids: Ids = None, limit: Limit = None) -> None:
    """Check the fleet file and the school files; print every problem as file:line:column (exit 2).
    Warn (exit 0) when a school would run a release past upstream's security support or with a
    known vulnerability (fleet.yaml `support:`) that no `accept:` entry covers, and for accepted
    risks past their date. A success is cached by content: run again with the same code, files,
    settings and day, it is printed again without validating (SCHOOLCTL_CACHE_DIR=off turns that off)."""
    from schoolctl.config.loader import shown_path

    c = get(ctx)
    config, chosen = c.chosen(ids, limit, default_all=True)
    named = ids or ([s.id for s in chosen] if limit else None)
    warnings = accept_check(config, named)
    on = today(config.fleet)
    for school in chosen:
        warnings += release_lines(school, on)
    for line in warnings:
        warn(line)
    n = len(named) if named else len(config.schools)
    say(f"ok: {shown_path(c.schools_dir)}/ is valid ({n} school{'s' if n != 1 else ''} checked)")


@app.command("list")
def list_(ctx: typer.Context, limit: Limit = None, as_json: Json = False) -> None:
    """The fleet at a glance: school, district, server, services (cached by content, as validate)."""
    _, chosen = get(ctx).chosen(None, limit, default_all=True)
    rows = [{"id": s.id, "name": s.name, "district": s.district, "domain": s.domain,
             "server": s.server.address, "services": s.enabled} for s in chosen]
    if as_json:
        from schoolctl.cli.json_out import emit

        emit("list", {"schools": rows})
        return
    out.table(["school", "name", "district", "domain", "server", "services"],
              [[r["id"], r["name"], r["district"], r["domain"], r["server"], ", ".join(r["services"])] for r in rows])


STARTER = """\
# {title}: a school of the fleet. Reference: README.md ("The config") or `schoolctl schema`.
id: {quoted_id}                     # must equal the file name
name: {name}
district: {district}
# domain: {id}.{domain}       # the default; set it to use another name
server: lab:{lab}               # rehearse in the lab first; then the school server's address, e.g.
#  address: 10.20.30.40        #   server: {{address: 10.20.30.40, ssh_user: root, ssh_port: 22}}
services:                      # a service is on when listed; remove a line to turn it off
  moodle: {{}}
  nextcloud:
    default_quota: 5 GB
  etherpad: {{}}
  # jitsi: {{}}
  # bigbluebutton:             # needs its own Ubuntu 24.04 host, or the city pool:
  #   server: {{address: 10.20.30.41, os: ubuntu-24.04}}
  #   pool: true
contacts:
  dpo:                         # the data protection officer, shown in Moodle's privacy page
    name: Delegat de Protecció de Dades
    email: dpd@example.org
privacy: {{}}                   # stricter than the fleet's floors only, e.g. log_retention_days: 7
"""


def _quoted(text: str) -> str:
    """`text` as a YAML double-quoted scalar, whatever it holds (`:`, `#`, quotes, `null`, `123`):
    JSON's string syntax is YAML's; characters YAML would not keep as they stand (line breaks it
    would fold, other non-printable ones) are escaped too."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
                   for c in json.dumps(text, ensure_ascii=False))


_ACCEPT_BLOCK = re.compile(r"^accept:[^\n]*\n(?:[ ]+[^\n]*\n)*", re.M)


def starter_fleet(text: str) -> str:
    """The example fleet for a new folder: without the example's accepted risks (they name its demo
    school, which the new folder does not have)."""
    return _ACCEPT_BLOCK.sub('accept: []                             # accepted risks: {control, school (or "*"), '
                             "reason, accepted_by, until}\n", text, count=1)


@app.command()
def new(ctx: typer.Context, school_id: Annotated[str, typer.Argument(metavar="ID", help="The new school's id.")],
        name: Annotated[str | None, typer.Option(help="The school's name.")] = None,
        district: Annotated[str, typer.Option(help="The school's district.")] = "Districte") -> None:
    """Write a commented starter file schools/ID.yaml that validates (and, in a folder without a
    fleet file, the example city's schools/fleet.yaml to edit first)."""
    from schoolctl.config.loader import FLEET_FILES, load, shown_path
    from schoolctl.config.model import SCHOOL_ID
    from schoolctl.errors import ConfigError
    from schoolctl.resources import templates

    c = get(ctx)
    if not re.match(SCHOOL_ID, school_id):
        fail(f"'{school_id}' is not a valid school id: use lowercase letters, digits and '-' (2 to 40)")
    for option, value in (("--name", name), ("--district", district)):
        if value is not None and not value.strip():
            fail(f"{option} is empty; give the text, or leave {option} out for the default")
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value or ""):
            fail(f"{option} is not valid UTF-8 text")
    path = c.schools_dir / f"{school_id}.yaml"
    if path.exists() or (c.schools_dir / f"{school_id}.yml").exists() or f"{school_id}.yaml" in FLEET_FILES:
        fail(f"{shown_path(path)} already exists; edit it, or choose another id")
    if not any((c.schools_dir / f).exists() for f in FLEET_FILES):
        fleet = c.schools_dir / FLEET_FILES[0]
        _write(fleet, starter_fleet((templates() / "starter" / "fleet.yaml").read_text(encoding="utf-8")),
               mkdir=True)
        say(f"wrote {shown_path(fleet)}: the example city's settings; set your domain, technicians, TLS and "
            "artifact pins there before a real deploy")
    domain = load(c.schools_dir).fleet.domain
    lab = re.sub(r"-+", "-", school_id if school_id[0].isalpha() else f"s-{school_id}")[:20].rstrip("-")
    name = name or school_id.replace("-", " ").title()
    text = STARTER.format(id=school_id, quoted_id=_quoted(school_id), lab=lab, name=_quoted(name),
                          district=_quoted(district), domain=domain,
                          title="".join(ch for ch in name if ch.isprintable()))
    _write(path, text)
    try:
        load(c.schools_dir, [school_id])
    except ConfigError:
        path.unlink()
        raise
    say(f"wrote {shown_path(path)}; edit it, then `schoolctl validate {school_id}`")


def _write(path: Path, text: str, mkdir: bool = False) -> None:
    """Write a file the user asked for; a folder that cannot be made or written is exit 2 naming it."""
    from schoolctl.config.loader import shown_path

    try:
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {shown_path(path)}: {e.strerror or e} (choose a folder you can write to)")


def writable_output(output: Path) -> None:
    """Refuse (exit 2), before any work, an --output that names a folder or lies where no file can be
    written; its missing parent folders are made."""
    if output.is_dir():
        fail(f"--output {output} is a folder; give a file name, e.g. {output / 'inventory.json'}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--output {output}: cannot make its folder: {e.strerror or e} (choose a folder you can write to)")
    if not os.access(output.parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        fail(f"--output {output}: the file cannot be written here (choose a folder you can write to)")


@app.command()
def schema(ctx: typer.Context,
           fleet: Annotated[bool, typer.Option("--fleet", help="The fleet file's schema instead.")] = False) -> None:
    """Print the JSON Schema of a school file (for editor completion and checks)."""
    from schoolctl.config.schema import editor_schema

    sys.stdout.write(json.dumps(editor_schema(fleet), indent=2, ensure_ascii=False) + "\n")  # not through rich


class InventoryFormat(StrEnum):
    pyinfra = "pyinfra"
    ansible = "ansible"
    json = "json"


@app.command()
def inventory(ctx: typer.Context,
              fmt_name: Annotated[str, typer.Option("--format", metavar="pyinfra|ansible|json",
                                                    help="Output format.")] = InventoryFormat.json.value,
              as_json_: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
              limit: Limit = None,
              output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None) -> None:
    """The fleet as an inventory (pyinfra, Ansible YAML or JSON); a lab host that is not running
    is exported with its configured address and a warning on stderr."""
    import yaml

    from schoolctl.inventories.build import as_ansible, as_json, as_pyinfra

    if fmt_name not in set(InventoryFormat):  # checked here: typer's own message for an enum is pydantic's
        fail(f"unknown format {fmt_name!r}: use one of {', '.join(InventoryFormat)}")
    fmt = InventoryFormat(fmt_name)
    if as_json_ and fmt is not InventoryFormat.json:
        fail(f"--json and --format {fmt.value} ask for two formats; give one")
    if output:
        writable_output(output)
    config, chosen = get(ctx).chosen(None, limit, default_all=True)
    notes: list[str] = []
    if fmt is InventoryFormat.pyinfra:
        text = as_pyinfra(config, chosen, notes)
    elif fmt is InventoryFormat.ansible:
        text = yaml.safe_dump(as_ansible(config, chosen, notes), sort_keys=False, allow_unicode=True)
    else:
        from schoolctl.cli.json_out import envelope

        # schoolctl's own facts per school (not an Ansible inventory: that is --format ansible)
        text = json.dumps(envelope("inventory", {"schools": as_json(config, chosen, notes)}), indent=2,
                          ensure_ascii=False) + "\n"
    for note in notes:
        warn(note)
    if output:
        _write(output, text)
        say(f"wrote {output}")
    else:
        sys.stdout.write(text)  # as it is: not through rich
