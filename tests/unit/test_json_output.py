"""Every `--json` output, produced through the CLI on a test fleet, is valid under its documented
schema (docs/schemas/<verb>.schema.json), names it and the tool's version, and is plain JSON
(no rich markup or emoji codes turned into emoji)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from schoolctl import __version__
from tests.unit.conftest import REPO, Run, edit, run_cli

from .conftest import FakeSession

SCHEMAS = REPO / "docs" / "schemas"
ODD_NAME = "Escola :school: [b]del[/b] Mar"


def _check(verb: str, stdout: str) -> dict:
    schema = json.loads((SCHEMAS / f"{verb}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    data = json.loads(stdout)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER) \
        .validate(data)
    assert data["schema"] == f"schoolctl-{verb}/1" and data["schoolctl_version"] == __version__
    return data


@pytest.fixture
def fleet(schools: Path) -> Path:
    edit(schools / "escola-pins.yaml", "name: Escola Els Pins", f"name: {json.dumps(ODD_NAME)}")
    return schools


def test_list(fleet: Path) -> None:
    run = run_cli("--schools-dir", "schools", "list", "--json")
    assert run.code == 0, run.stderr
    data = _check("list", run.stdout)
    assert [s["name"] for s in data["schools"]][1] == ODD_NAME  # no emoji, no markup eaten
    assert "🏫" not in run.stdout


def _fake_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.cli.context
    import schoolctl.cli.runner as runner
    from schoolctl.cli.runner import Result

    monkeypatch.setattr(schoolctl.cli.context, "lab_problems", lambda schools: [])  # no lab host: the run is faked

    monkeypatch.setattr(runner, "run", lambda schools, plan, progress, **_: [
        Result(s.id, ("planned" if plan else "changed") if s.id == "escola-pins" else "unchanged", seconds=1.5,
               changes=[{"kind": "file", "what": "/etc/x :school:", "detail": "+1 -0", "diff": "x"}]
               if s.id == "escola-pins" else [])
        for s in schools])


@pytest.mark.parametrize("verb", ["plan", "deploy"])
def test_plan_and_deploy(fleet: Path, monkeypatch: pytest.MonkeyPatch, verb: str) -> None:
    _fake_run(monkeypatch)
    run = run_cli("--schools-dir", "schools", verb, "demo", "escola-pins", "--json", *(["--yes"] * (verb == "deploy")))
    assert run.code == 0, run.stderr
    data = _check(verb, run.stdout)
    assert [s["school"] for s in data["schools"]] == ["demo", "escola-pins"]
    assert data["schools"][1]["changes"] == [{"kind": "file", "what": "/etc/x :school:", "detail": "+1 -0"}]
    if verb == "plan":
        assert any(f["app"] == "moodle" for f in data["schools"][0]["releases"])  # the demo's Moodle 5.0.6


def test_a_deploy_is_journaled_and_log_json_is_valid(fleet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_run(monkeypatch)
    assert run_cli("--schools-dir", "schools", "deploy", "escola-pins", "--yes", "--json").code == 0
    run = run_cli("log", "--json")
    data = _check("log", run.stdout)
    [entry] = data["entries"]
    assert (entry["verb"], entry["school"], entry["result"], entry["changes"]) == ("deploy", "escola-pins",
                                                                                  "changed", 1)
    assert entry["changed"] == ["file: /etc/x :school:"]


def test_inventory(fleet: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--json")
    assert run.code == 0, run.stderr
    data = _check("inventory", run.stdout)
    assert data["schools"]["escola-pins"]["name"] == ODD_NAME and data["schools"]["escola-pins"]["ssh_port"] == 22


def test_lab_status() -> None:
    run = run_cli("lab", "status", "--json")
    assert run.code == 0, run.stderr
    assert _check("lab-status", run.stdout)["hosts"] == []


def test_audit(fleet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.audit.runner as runner
    from schoolctl.audit.catalogue import ControlResult, load_all
    from schoolctl.audit.runner import SchoolAudit

    c = load_all()
    monkeypatch.setattr(runner, "audit_all", lambda schools, **kw: [SchoolAudit(s.id, s.name, [
        ControlResult(c["HOST-SSH-NO-PASSWORD"], "pass", "sshd -T: passwordauthentication no :school:", "no")])
        for s in schools])
    run = run_cli("--schools-dir", "schools", "audit", "escola-pins", "--format", "json")
    assert run.code == 0, run.stderr
    data = _check("audit", run.stdout)
    assert data["schools"][0]["name"] == ODD_NAME
    assert data["schools"][0]["controls"][0]["observed"].endswith(":school:")


def test_every_documented_schema_is_a_valid_schema_with_an_id() -> None:
    names = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    assert names == sorted(f"{v}.schema.json" for v in (
        "audit", "backup", "backup-list", "backup-prune", "backup-verify", "deploy", "inventory", "lab-status", "list",
        "log", "plan", "restore", "rollback", "users-import"))
    for name in names:
        schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        verb = name.removesuffix(".schema.json")
        assert schema["$id"] == f"urn:schoolctl:output:{verb}:1"
        assert schema["properties"]["schema"] == {"const": f"schoolctl-{verb}/1"}


# --- users import and rollback: through the CLI, with the server faked -------------------------------------

ROSTER = "given_name,family_name,role,group,email\nAnna,Puig,student,4A,\nNou,Alumne Ferrer,student,4A,\n"


def _import_result(people: list, dry_run: bool):
    """What the importer answers for demo: a real plan (cli/users/directory.diff) of the roster
    against a directory holding Anna in 3A (she moves), Pau (suspended now), Old (suspended long
    ago: deleted) and Rita (suspended yesterday: waiting); a real import also says what the apps did."""
    from datetime import date

    from schoolctl.cli.users.directory import Account, Directory, diff
    from schoolctl.cli.users.importer import ImportResult
    from schoolctl.cli.users.roster import person_key

    base = "dc=demo,dc=escoles,dc=bcn,dc=example"

    def account(uid: str, given: str, family: str, suspended: date | None = None) -> Account:
        ou = "suspended" if suspended else "people"
        return Account(f"uid={uid},ou={ou},{base}", uid, person_key(given, family), given, family, "student", "3A",
                       "", suspended, f"suspended {suspended}" if suspended else "")

    directory = Directory(base, [account("anna.puig", "Anna", "Puig"), account("pau.vidal", "Pau", "Vidal"),
                                 account("old.one", "Old", "One", date(2026, 1, 5)),
                                 account("rita.mas", "Rita", "Mas", date(2026, 8, 31))],
                          ous={f"ou={o},{base}" for o in ("people", "groups", "suspended")})
    result = ImportResult("demo", diff(people, directory, date(2026, 9, 1), 30), dry_run, grace_days=30, seconds=0.3)
    if not dry_run:
        result.hooks = {"old.one": {"moodle": "ok", "nextcloud": "error: occ user:delete exited 1"}}
        result.kept = ["old.one"]
        result.passwords_file = Path("secrets/demo-initial-passwords-2026-09-01.vault")
        result.classes = {"moodle": {"changes": ["cohort 4A: +2"]}, "nextcloud": {"error": "OCS answered 503"}}
        result.error = "classes not synced in nextcloud (run the import again)"
    return result


@pytest.mark.parametrize("dry_run", [True, False])
def test_users_import(schools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool) -> None:
    import schoolctl.cli.users.importer as importer

    monkeypatch.setattr(importer, "import_roster", lambda school, people, dry, store=None, **_: _import_result(
        people, dry))
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER, encoding="utf-8")
    run = run_cli("--schools-dir", "schools", "users", "import", "demo", str(roster), "--json",
                  "--dry-run" if dry_run else "--yes")
    assert run.code == (0 if dry_run else 1), run.stderr
    data = _check("users-import", run.stdout)
    assert data["dry_run"] is dry_run and data["status"] == ("planned" if dry_run else "failed")
    assert [a["uid"] for a in data["added"]] == ["nou.alumne"]
    assert data["moved"] == [{"uid": "anna.puig", "from": "3A", "to": "4A"}]
    assert data["suspended"] == ["pau.vidal"] and [d["uid"] for d in data["deleted"]] == ["old.one"]
    assert data["waiting"] == [{"uid": "rita.mas", "delete_after": "2026-09-30"}]
    assert data["deleted"][0]["kept"] is not dry_run
    assert (data["passwords_file"] is None) is dry_run and "password\"" not in run.stdout


POINT = ("from=33.0.3\nto=34.0.1\nprevious=/srv/nextcloud/releases/33.0.3\n"
         "dump=/var/backups/schoolctl/nextcloud-20261202T010000Z.dump\nat=2026-12-02T01:00:00Z\nschoolctl-rc=0\n")


ROLLED_BACK = (True, "schoolctl-rc=0\n",
               "nextcloud: restored release 33.0.3\nschoolctl-rolled-back: nextcloud 33.0.3\n")


def _rollback(monkeypatch: pytest.MonkeyPatch, answer: tuple[bool, str, str]) -> Run:
    import schoolctl.connect

    monkeypatch.setattr(schoolctl.connect, "Session", FakeSession)
    monkeypatch.setattr("schoolctl.cli.context.lab_problems", lambda schools: [])  # no lab host: the server is faked
    FakeSession.answers = [(True, POINT, ""), answer]
    run = run_cli("--schools-dir", "schools", "rollback", "demo", "nextcloud", "--yes", "--json")
    assert FakeSession.answers == []
    return run


@pytest.mark.parametrize(("answer", "code"), [
    (ROLLED_BACK, 0), ((False, "schoolctl-rc=1\n", "nextcloud: pg_restore: error: could not connect\n"), 1)])
def test_rollback(schools: Path, monkeypatch: pytest.MonkeyPatch, answer: tuple[bool, str, str], code: int) -> None:
    run = _rollback(monkeypatch, answer)
    assert run.code == code, run.stderr
    data = _check("rollback", run.stdout)
    assert (data["app"], data["from"], data["to"], data["rolled_back"], data["code"]) == (
        "nextcloud", "34.0.1", "33.0.3", code == 0, code)
    assert data["output"][-1].startswith("schoolctl-rolled-back: " if code == 0 else "nextcloud: pg_restore")


def test_rollback_json_is_the_only_thing_on_stdout(schools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _rollback(monkeypatch, ROLLED_BACK)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["schema"] == "schoolctl-rollback/1"
