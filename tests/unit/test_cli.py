"""The fleet commands of the real CLI: validate, list, new, schema, inventory; SCHOOLCTL_SCHOOLS_DIR."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from schoolctl.config.model import Fleet, Privacy, School

from .conftest import REPO, SHIPPED, line_of, run_cli, summary

IDS = ["demo", "escola-pins", "institut-mar"]


def test_validate_the_shipped_schools() -> None:
    run = run_cli("--schools-dir", str(SHIPPED), "validate")
    assert run.code == 0, run.stderr
    # the only lines on stderr: warnings about releases (the demo's are old on purpose) and waivers
    assert all(re.match(r"^warning: (demo|escola-pins|institut-mar|\S*fleet\.yaml:\d+): ", line)
               for line in run.stderr.splitlines()), run.stderr
    assert run.stdout.startswith("ok: ") and "is valid (3 schools checked)" in run.stdout


def test_validate_named_schools(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "validate", "demo", "institut-mar")
    assert (run.code, run.stdout) == (0, "ok: schools/ is valid (2 schools checked)\n")


def test_env_schools_dir_works_like_the_option(schools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    env = {"SCHOOLCTL_SCHOOLS_DIR": str(schools)}
    run = run_cli("validate", env=env)
    assert (run.code, run.stdout) == (0, f"ok: {schools}/ is valid (3 schools checked)\n")
    run = run_cli("list", "--json", env=env)
    assert [r["id"] for r in json.loads(run.stdout)["schools"]] == IDS
    (schools / "demo.yaml").write_text("")
    run = run_cli("validate", env=env)
    assert run.code == 2
    assert run.lines == [f"{schools}/demo.yaml:1:1: the file is empty (start from `schoolctl new ID`)", summary(1)]
    # the option wins over the environment
    assert run_cli("--schools-dir", str(SHIPPED), "validate", env=env).code == 0


def test_default_schools_dir_is_schools(schools: Path) -> None:
    run = run_cli("validate")
    assert (run.code, run.stdout) == (0, "ok: schools/ is valid (3 schools checked)\n")


def test_list(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "list")
    assert run.code == 0
    for sid, name, domain in [("demo", "Escola Demo", "demo.escoles.bcn.example"),
                              ("escola-pins", "Escola Els Pins", "escola-pins.escoles.bcn.example"),
                              ("institut-mar", "Institut del Mar", "institutmar.escoles.bcn.example")]:
        line = next(ln for ln in run.stdout.splitlines() if f" {sid} " in ln)
        assert name in line and domain in line
    assert "moodle, nextcloud, etherpad, jitsi, bigbluebutton" in run.stdout


def test_list_json(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "list", "--json")
    assert run.code == 0
    rows = json.loads(run.stdout)["schools"]
    assert [r["id"] for r in rows] == IDS
    assert rows[0] == {"id": "demo", "name": "Escola Demo", "district": "Ciutat Vella",
                       "domain": "demo.escoles.bcn.example", "server": "lab:demo",
                       "services": ["moodle", "nextcloud", "etherpad", "jitsi"]}
    assert rows[1]["district"] == "Horta-Guinardó"


def test_list_of_a_broken_fleet_exits_2(schools: Path) -> None:
    (schools / "fleet.yaml").unlink()
    run = run_cli("--schools-dir", "schools", "list", "--json")
    assert run.code == 2 and run.stdout == ""
    assert run.lines[0].startswith("schools/fleet.yaml:1:1: the fleet file is missing")


@pytest.mark.parametrize("school_id", ["escola-nova", "x1", "escola-de-la-ciutat-vella-nord-numero-2"])
def test_new_writes_a_file_that_validates(schools: Path, school_id: str) -> None:
    run = run_cli("--schools-dir", "schools", "new", school_id, "--name", "Escola Nova", "--district", "Gràcia")
    assert run.stderr == ""
    assert run.code == 0
    assert run.stdout == f"wrote schools/{school_id}.yaml; edit it, then `schoolctl validate {school_id}`\n"
    doc = yaml.safe_load((schools / f"{school_id}.yaml").read_text(encoding="utf-8"))
    assert (doc["id"], doc["name"], doc["district"]) == (school_id, "Escola Nova", "Gràcia")
    assert run_cli("--schools-dir", "schools", "validate").code == 0
    listed = json.loads(run_cli("--schools-dir", "schools", "list", "--json").stdout)["schools"]
    assert school_id in [r["id"] for r in listed]


@pytest.mark.parametrize("school_id", ["demo", "escola-pins"])
def test_new_refuses_an_existing_id(schools: Path, school_id: str) -> None:
    before = (schools / f"{school_id}.yaml").read_bytes()
    run = run_cli("--schools-dir", "schools", "new", school_id)
    assert run.code == 2
    assert run.lines == [f"error: schools/{school_id}.yaml already exists; edit it, or choose another id"]
    assert (schools / f"{school_id}.yaml").read_bytes() == before


def test_new_refuses_an_id_taken_by_a_yml_file(schools: Path) -> None:
    (schools / "demo.yaml").rename(schools / "demo.yml")
    run = run_cli("--schools-dir", "schools", "new", "demo")
    assert run.code == 2 and not (schools / "demo.yaml").exists()


@pytest.mark.parametrize("school_id", ["Escola", "a", "-escola", "escola-", "escola_nova", "fleet/../x", "x" * 41])
def test_new_refuses_a_bad_id(schools: Path, school_id: str) -> None:
    run = run_cli("--schools-dir", "schools", "new", "--", school_id)
    assert run.code == 2
    assert run.lines == [f"error: '{school_id}' is not a valid school id: use lowercase letters, digits and '-' "
                         "(2 to 40)"]
    assert sorted(p.name for p in schools.iterdir()) == ["demo.yaml", "escola-pins.yaml", "fleet.yaml",
                                                         "institut-mar.yaml"]


def test_new_refuses_the_fleet_file_name(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "new", "fleet")
    assert run.code == 2 and "already exists" in run.stderr


def test_new_with_a_broken_fleet_writes_nothing(schools: Path) -> None:
    (schools / "fleet.yaml").write_text("- nope\n")
    run = run_cli("--schools-dir", "schools", "new", "escola-nova")
    assert run.code == 2
    assert not (schools / "escola-nova.yaml").exists()


def test_new_that_would_not_validate_is_removed(schools: Path) -> None:
    # escola-nova.escoles.bcn.example is already taken by another school: the starter must not stay behind
    p = schools / "escola-pins.yaml"
    p.write_text(p.read_text(encoding="utf-8") + "domain: escola-nova.escoles.bcn.example\n", encoding="utf-8")
    run = run_cli("--schools-dir", "schools", "new", "escola-nova")
    assert run.code == 2
    assert "domain 'escola-nova.escoles.bcn.example' is already used" in run.stderr
    assert not (schools / "escola-nova.yaml").exists()


def _props(schema: dict, name: str | None = None) -> dict:
    return (schema["$defs"][name] if name else schema)["properties"]


def test_schema_of_a_school() -> None:
    run = run_cli("schema")
    assert run.code == 0
    schema = json.loads(run.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "schoolctl school file"
    assert set(_props(schema)) == set(School.model_fields)
    assert set(schema["required"]) == {"id", "name", "district", "server", "services", "contacts"}
    assert _props(schema)["id"]["description"] == "Must equal the file name."
    privacy = _props(schema, "PrivacyOverride")
    assert set(privacy) == set(Privacy.model_fields)
    assert privacy["lobby"]["stricter"] == "true"
    assert privacy["access_log"]["order"] == ["off", "anonymised", "full"]
    assert set(_props(schema, "Services")) == {"moodle", "nextcloud", "etherpad", "jitsi", "bigbluebutton"}


def test_schema_of_the_fleet() -> None:
    run = run_cli("schema", "--fleet")
    assert run.code == 0
    schema = json.loads(run.stdout)
    assert schema["title"] == "schoolctl fleet file"
    assert set(_props(schema)) == set(Fleet.model_fields)
    assert set(_props(schema, "Privacy")) == set(Privacy.model_fields)
    assert _props(schema, "Privacy")["log_retention_days"]["maximum"] == 365


def test_inventory_json(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "json")
    assert run.code == 0
    inv = json.loads(run.stdout)["schools"]
    assert list(inv) == IDS
    assert inv["escola-pins"]["host"] == "10.20.42.10"
    assert inv["demo"]["server"] == "lab:demo"  # no lab host up: the address stays as written
    assert inv["institut-mar"]["bigbluebutton_host"] == "10.20.31.11"
    assert run_cli("--schools-dir", "schools", "inventory").stdout == run.stdout


def test_inventory_to_a_file(schools: Path, tmp_path: Path) -> None:
    target = tmp_path / "inv.json"
    run = run_cli("--schools-dir", "schools", "inventory", "-o", str(target))
    assert run.code == 0 and run.stdout == f"wrote {target}\n"
    assert list(json.loads(target.read_text(encoding="utf-8"))["schools"]) == IDS


def test_inventory_pyinfra_is_importable(schools: Path, tmp_path: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "pyinfra")
    assert run.code == 0
    target = tmp_path / "inventory_fleet.py"
    target.write_text(run.stdout, encoding="utf-8")
    module = runpy.run_path(str(target))
    hosts = dict(module["schools"])
    assert list(hosts) == IDS
    assert hosts["escola-pins"] == {"ssh_hostname": "10.20.42.10", "ssh_user": "root", "ssh_port": 22,
                                    "school_id": "escola-pins"}
    assert module["bigbluebutton"] == ["institut-mar"]
    assert module["moodle"] == IDS


def test_inventory_ansible_loads_in_ansible_inventory(schools: Path, tmp_path: Path) -> None:
    tool = REPO / ".venv" / "bin" / "ansible-inventory"
    if not tool.exists():
        pytest.skip(f"{tool} is not installed")
    target = tmp_path / "inventory.yaml"
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "ansible", "-o", str(target))
    assert run.code == 0
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true", "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(tool), "-i", str(target), "--list"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    inv = json.loads(proc.stdout)
    assert sorted(inv["schools"]["hosts"]) == IDS
    assert inv["_meta"]["hostvars"]["escola-pins"]["ansible_host"] == "10.20.42.10"
    assert inv["_meta"]["hostvars"]["institut-mar"]["school_services"][-1] == "bigbluebutton"
    assert sorted(inv["bigbluebutton"]["hosts"]) == ["institut-mar"]
    assert inv["_meta"]["hostvars"]["institut-mar-bbb"]["ansible_host"] == "10.20.31.11"
    assert "district_ciutat_vella" in inv and "district_horta_guinardo" in inv


def test_inventory_of_a_broken_fleet_exits_2(schools: Path) -> None:
    (schools / "demo.yaml").write_text("id: [\n")
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "ansible")
    assert run.code == 2 and run.stdout == ""
    assert run.lines[-1] == summary(1)


def test_unknown_format_is_a_usage_error(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "csv")
    assert run.code == 2 and "csv" in run.stderr


def test_an_audit_report_that_cannot_be_written_is_refused_before_any_server_is_asked(
        schools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.audit.runner as runner

    monkeypatch.setattr(runner, "audit_all", lambda *a, **k: pytest.fail("the audit ran"))
    for target, said in ((Path("/proc/no/such/report.html"), "cannot write the report"), (tmp_path, "is a folder")):
        r = run_cli("audit", "demo", "--format", "html", "--output", str(target))
        assert r.code == 2 and said in r.stderr and "internal error" not in r.stderr, r.stderr


def test_secrets_set_refuses_a_bad_scope_before_reading_the_value(schools: Path) -> None:
    r = run_cli("secrets", "set", "Bad Scope", "x")
    assert r.code == 2 and "invalid vault name 'Bad Scope'" in r.stderr and "hint:" in r.stderr


# --- releases and accepted risks: validate warns, refuses a waiver of nothing; plan says it ---------

def _today() -> date:
    from schoolctl.config.loader import load
    from schoolctl.releases import today

    return today(load(Path("schools")).fleet)


def _old_fleet(schools: Path, accept: str = "accept: []\n") -> None:
    from .test_release_controls import old_school, write_fleet

    write_fleet(schools, accept=accept)
    old_school(schools)


WARN_VELLA = [
    "warning: escola-vella: Etherpad 3.3.1 is affected by CVE-2026-114516 (critical: unauthenticated arbitrary "
    "file read); fixed in 3.3.3",
    "warning: escola-vella: Moodle 5.0.6: upstream security support for 5.0 ended on 2026-10-05",
    "warning: escola-vella: Nextcloud 31.0.11: upstream security support for 31 ended on 2026-02-25",
]


def test_validate_warns_per_school_of_unsupported_and_vulnerable_releases(schools: Path) -> None:
    _old_fleet(schools)
    (schools / "demo.yaml").unlink()  # the shipped demo's versions are the lead's to choose
    run = run_cli("--schools-dir", "schools", "validate")
    assert run.code == 0
    assert run.lines == WARN_VELLA
    assert run.stdout == "ok: schools/ is valid (3 schools checked)\n"
    run = run_cli("--schools-dir", "schools", "validate", "escola-pins")
    assert (run.code, run.lines) == (0, [])  # only the named school's releases


def test_validate_is_quiet_on_an_accepted_finding_and_warns_of_an_expired_acceptance(schools: Path) -> None:
    today = _today()
    live, gone = today + timedelta(days=20), today - timedelta(days=1)
    _old_fleet(schools, "accept:\n"
               f"  - {{control: ETHERPAD-NO-KNOWN-VULNERABILITY, school: escola-vella, reason: pads off until the "
               f"upgrade, accepted_by: Ana, until: {live.isoformat()}}}\n"
               "  - control: MOODLE-RELEASE-SUPPORTED\n    school: '*'\n    reason: upgrade booked\n"
               f"    accepted_by: Jordi\n    until: {gone.isoformat()}\n")
    (schools / "demo.yaml").unlink()
    run = run_cli("--schools-dir", "schools", "validate", "escola-vella")
    until_line = line_of(schools / "fleet.yaml", rf"^    until: {gone.isoformat()}$")
    assert run.code == 0
    assert run.lines == [
        f"warning: schools/fleet.yaml:{until_line}: accept[1] MOODLE-RELEASE-SUPPORTED for * expired on "
        f"{gone.isoformat()} (accepted by Jordi: upgrade booked); the control fails again: fix it, or renew the "
        "entry with a new `until`",
        # the accepted Etherpad finding is not warned about (plan and the audit show it as accepted)
        WARN_VELLA[1], WARN_VELLA[2]]


def test_validate_refuses_a_waiver_of_an_unknown_control_or_school(schools: Path) -> None:
    until = (_today() + timedelta(days=20)).isoformat()
    from .test_release_controls import write_fleet

    write_fleet(schools, accept="accept:\n"
                f"  - {{control: ETHERPAD-NO-KNOWN-VULNERABILTY, school: demo, reason: r, accepted_by: a, "
                f"until: {until}}}\n"
                f"  - {{control: HOST-OS-SUPPORTED, school: escola-pin, reason: r, accepted_by: a, until: {until}}}\n"
                f"  - {{control: NO-SUCH-THING, school: nowhere, reason: r, accepted_by: a, until: {until}}}\n"
                f"  - {{control: WEB-CSP, school: '*', reason: r, accepted_by: a, until: {until}}}\n")
    fleet = schools / "fleet.yaml"
    first = line_of(fleet, "ETHERPAD-NO-KNOWN-VULNERABILTY")
    second, third = first + 1, first + 2
    rows = fleet.read_text().splitlines()

    def col(line: int, word: str) -> int:
        return rows[line - 1].index(word) + 1

    run = run_cli("--schools-dir", "schools", "validate", "demo")
    assert run.code == 2 and run.stdout == ""
    assert run.lines == [
        f"schools/fleet.yaml:{first}:{col(first, 'ETHERPAD')}: accept[0].control: no audit control "
        "'ETHERPAD-NO-KNOWN-VULNERABILTY' (did you mean 'ETHERPAD-NO-KNOWN-VULNERABILITY'?)",
        f"schools/fleet.yaml:{second}:{col(second, 'escola-pin')}: accept[1].school: no school 'escola-pin' in the "
        "folder (did you mean 'escola-pins'?)",
        f"schools/fleet.yaml:{third}:{col(third, 'NO-SUCH')}: accept[2].control: no audit control 'NO-SUCH-THING' "
        "(use a control id as `schoolctl audit` reports it, e.g. ETHERPAD-NO-KNOWN-VULNERABILITY)",
        f"schools/fleet.yaml:{third}:{col(third, 'nowhere')}: accept[2].school: no school 'nowhere' in the "
        "folder (known schools: demo, escola-pins, institut-mar; or * for every school)",
        summary(4)]


def _plan(schools: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    import schoolctl.cli.runner as runner
    from schoolctl.cli.runner import Result

    monkeypatch.setattr(runner, "run", lambda schools, plan, progress, **_: [
        Result(s.id, "unchanged" if s.id != "escola-pins" else "planned",
               changes=[] if s.id != "escola-pins" else [{"kind": "file", "what": "/etc/x", "detail": ""}])
        for s in schools])
    return run_cli("--schools-dir", "schools", "plan", *args)


def test_plan_says_each_schools_release_findings(schools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = (_today() + timedelta(days=20)).isoformat()
    _old_fleet(schools, "accept:\n  - {control: MOODLE-RELEASE-SUPPORTED, school: escola-vella, reason: exams, "
               f"accepted_by: Ana, until: {live}}}\n")
    run = _plan(schools, monkeypatch, "escola-vella", "escola-pins")
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines() == [
        "escola-vella: no changes",
        "  ! Etherpad 3.3.1 is affected by CVE-2026-114516 (critical: unauthenticated arbitrary file read); "
        "fixed in 3.3.3",
        f"  = Moodle 5.0.6: upstream security support for 5.0 ended on 2026-10-05; accepted until {live} by Ana: "
        "exams (MOODLE-RELEASE-SUPPORTED)",
        "  ! Nextcloud 31.0.11: upstream security support for 31 ended on 2026-02-25",
        "escola-pins: 1 change(s)",
        "  ~ file: /etc/x"]
    data = json.loads(_plan(schools, monkeypatch, "escola-vella", "escola-pins", "--json").stdout)
    vella, pins = data["schools"]
    assert pins["releases"] == []
    assert [(f["app"], f["kind"], f["control"]) for f in vella["releases"]] == [
        ("etherpad", "vulnerable", "ETHERPAD-NO-KNOWN-VULNERABILITY"),
        ("moodle", "unsupported", "MOODLE-RELEASE-SUPPORTED"),
        ("nextcloud", "unsupported", "NEXTCLOUD-RELEASE-SUPPORTED")]
    ether, moodle, _ = vella["releases"]
    assert (ether["advisory"], ether["fixed"], ether["severity"], ether["accepted"]) == \
        ("CVE-2026-114516", "3.3.3", "critical", None)
    assert (moodle["until"], moodle["line"]) == ("2026-10-05", "5.0")
    assert moodle["accepted"] == {"reason": "exams", "by": "Ana", "until": live}


@pytest.mark.parametrize(("var", "value", "words"), [
    ("SCHOOLCTL_MIRROR", "relative/path", "neither an absolute path nor an http(s):// URL"),
    ("SCHOOLCTL_MIRROR", "", "set but empty"),
    ("SCHOOLCTL_LAYERS", "base,nope", "unknown layer(s) nope"),
])
def test_a_bad_setting_is_exit_2_before_any_school_is_touched(schools, var, value, words) -> None:
    run = run_cli("--schools-dir", str(schools), "plan", "demo", env={var: value})
    assert run.code == 2 and words in run.stderr, run.stderr
    assert run.stdout == ""


def test_new_in_an_empty_folder_writes_a_fleet_without_the_examples_accepted_risks(tmp_path) -> None:
    folder = tmp_path / "schools"
    run = run_cli("--schools-dir", str(folder), "new", "escola-nova")
    assert run.code == 0, run.stderr
    fleet = (folder / "fleet.yaml").read_text()
    assert "accept: []" in fleet and "MOODLE-RELEASE-SUPPORTED" not in fleet and "support:" in fleet
    assert run_cli("--schools-dir", str(folder), "validate").code == 0
