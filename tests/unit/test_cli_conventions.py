"""The conventions a fleet operator expects of the CLI (issue #16): --version, -h, completion,
-v/--debug, --limit, --parallel, --json, confirmation, plain progress lines, inventory groups."""

from __future__ import annotations

import io
import json
import logging
import runpy
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from schoolctl.cli import logs
from schoolctl.cli.main import needs_gevent, version
from schoolctl.cli.output import Board, progress_line
from schoolctl.config.loader import load
from schoolctl.config.selection import SelectionError, district_group, select, slug
from schoolctl.secrets import MASK, Secret

from .conftest import FakeSession, run_cli

IDS = ["demo", "escola-pins", "institut-mar"]


@pytest.fixture(autouse=True)
def _quiet_logs():
    """-v/--debug change logger levels: put them back after each test."""
    names = ["", *logs.LIBRARIES, *logs.HUSHED]
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    logs._state["verbosity"] = 0


def listed(*args: str) -> list[str]:
    run = run_cli("--schools-dir", "schools", "list", "--json", *args)
    assert run.code == 0, run.stderr
    return [r["id"] for r in json.loads(run.stdout)["schools"]]


# --- root conventions -----------------------------------------------------------------------------

def test_version() -> None:
    run = run_cli("--version")
    assert run.code == 0 and run.stdout == f"schoolctl {version()}\n"
    assert version()[0].isdigit()


def test_dash_h_is_help_on_the_root_and_on_subcommands() -> None:
    root = run_cli("-h")
    assert root.code == 0 and "Usage: schoolctl" in root.stdout and "deploy" in root.stdout
    assert root.stdout == run_cli("--help").stdout
    for verb in (["deploy"], ["audit"], ["users", "import"], ["lab", "up"]):
        run = run_cli(*verb, "-h")
        assert run.code == 0 and f"Usage: schoolctl {' '.join(verb)}" in run.stdout, run.stdout


def test_shell_completion_is_offered() -> None:
    run = run_cli("--help")
    assert "--install-completion" in run.stdout and "--show-completion" in run.stdout


def test_help_version_and_local_verbs_start_without_gevent() -> None:
    assert not needs_gevent([]) and not needs_gevent(["--help"]) and not needs_gevent(["deploy", "-h"])
    assert not needs_gevent(["--schools-dir", "deploy", "validate", "demo"])
    assert not needs_gevent(["list", "--json"]) and not needs_gevent(["--version"])
    assert needs_gevent(["deploy", "demo"]) and needs_gevent(["--schools-dir", "x", "audit", "--all"])
    assert needs_gevent(["users", "import", "demo", "r.csv"])


# --- -v / --debug ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "level"), [([], None), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
                                              (["--debug"], logging.DEBUG)])
def test_verbosity_raises_the_library_log_level(schools: Path, flags: list[str], level: int | None) -> None:
    before = logging.getLogger("pyinfra").getEffectiveLevel()
    run = run_cli(*flags, "--schools-dir", "schools", "list")
    assert run.code == 0, run.stderr
    for name in ("pyinfra", "testinfra"):
        assert logging.getLogger(name).getEffectiveLevel() == (before if level is None else level)
    assert logs.shows_libraries() is (level is not None)


def test_a_debug_line_is_masked(schools: Path, capsys: pytest.CaptureFixture[str]) -> None:
    value = "s3cr3t-Value-of-the-test"
    Secret(value)
    run = run_cli("--debug", "--schools-dir", "schools", "list")
    assert run.code == 0 and logs.debugging()
    logging.getLogger("pyinfra.api.connectors.ssh").debug("running: mysql -p%s", value)
    err = capsys.readouterr().err
    assert f"DEBUG pyinfra.api.connectors.ssh: running: mysql -p{MASK}" in err
    assert value not in err


# --- --limit -------------------------------------------------------------------------------------------

def test_limit_by_id_glob_district_and_service(schools: Path) -> None:
    assert listed() == IDS
    assert listed("--limit", "demo") == ["demo"]
    assert listed("-l", "escola-*") == ["escola-pins"]
    assert listed("-l", "*-mar,demo") == ["demo", "institut-mar"]
    for district in ("Sant Martí", "sant marti", "SANT-MARTI", "district_sant_marti"[9:]):
        assert listed("--limit", f"district={district}") == ["institut-mar"], district
    assert listed("-l", "district=horta-guinardo") == ["escola-pins"]
    assert listed("-l", "service=bigbluebutton") == ["institut-mar"]
    assert listed("-l", "service=jitsi") == ["demo", "institut-mar"]
    assert listed("-l", "service=moodle", "-l", "!demo") == ["escola-pins", "institut-mar"]


def test_a_limit_that_matches_nothing_exits_2_naming_the_schools(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "list", "--limit", "district=Gràcia")
    assert run.code == 2 and run.stdout == ""
    assert run.lines[0] == "error: --limit district=Gràcia matches no school"
    assert run.lines[1].startswith("hint: known schools: demo, escola-pins, institut-mar; districts: Ciutat Vella")
    run = run_cli("--schools-dir", "schools", "deploy", "--limit", "esc-*", "--yes")
    assert run.code == 2 and "known schools: demo, escola-pins, institut-mar" in run.stderr
    run = run_cli("--schools-dir", "schools", "audit", "--limit", "deom")  # as a school id named
    assert run.code == 2
    assert run.lines[0] == "schools/deom.yaml:1:1: no school 'deom' in schools/ (did you mean 'demo'?)"
    run = run_cli("--schools-dir", "schools", "audit", "--limit", "deom,esc*")
    assert run.code == 2 and run.lines == ["error: --limit deom: no school 'deom' in the fleet",
                                           "hint: did you mean 'demo'?"]
    run = run_cli("--schools-dir", "schools", "plan", "-l", "service=moodel")
    assert run.code == 2 and "did you mean service=moodle?" in run.stderr
    run = run_cli("--schools-dir", "schools", "plan", "-l", "city=bcn")
    assert run.code == 2 and "unknown selector 'city='" in run.stderr


def test_limit_narrows_named_schools_and_validate(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "validate", "--limit", "district=ciutat vella")
    assert run.code == 0 and "(1 school checked)" in run.stdout
    run = run_cli("--schools-dir", "schools", "plan", "demo", "escola-pins", "--limit", "service=bigbluebutton")
    assert run.code == 2 and "matches no school of those named" in run.stderr


def test_deploy_needs_schools_named_or_chosen(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "deploy")
    assert run.code == 2 and "pass --all, or choose with --limit" in run.stderr


def test_selection_is_the_inventories_spelling() -> None:
    assert slug("Sant Martí") == "sant_marti" and district_group("Horta-Guinardó") == "district_horta_guinardo"
    assert district_group("L'Hospitalet de Llobregat") == "district_l_hospitalet_de_llobregat"
    schools = list(load(Path(__file__).resolve().parents[2] / "schools").schools.values())
    assert [s.id for s in select(schools, ["district=SANT MARTÍ"])] == ["institut-mar"]
    with pytest.raises(SelectionError):
        select(schools, ["district=nowhere"])


# --- --parallel, --json, confirmation ------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["deploy", "plan", "audit"])
@pytest.mark.parametrize("n", ["0", "-3"])
def test_parallel_must_be_positive(schools: Path, verb: str, n: str) -> None:
    run = run_cli("--schools-dir", "schools", verb, "demo", "--parallel", n)
    assert run.code == 2 and "--parallel" in run.stderr


def test_audit_takes_json_as_an_alias_of_format_json(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "audit", "demo", "--json", "--format", "html")
    assert run.code == 2 and "--json and --format html ask for two formats" in run.stderr
    run = run_cli("--schools-dir", "schools", "inventory", "--json", "--format", "ansible")
    assert run.code == 2 and "two formats" in run.stderr
    assert run_cli("--schools-dir", "schools", "inventory", "--json").stdout == \
        run_cli("--schools-dir", "schools", "inventory", "--format", "json").stdout


def test_users_import_without_yes_and_without_a_terminal_refuses(schools: Path, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("given_name,family_name,role,group,email\nAna,Puig,student,1A,\n", encoding="utf-8")
    run = run_cli("--schools-dir", "schools", "users", "import", "demo", str(roster))
    assert run.code == 2 and run.stdout == ""
    assert "not confirmed (stdin is not a terminal); nothing was changed" in run.lines[0]
    assert run.lines[1] == "hint: check it with --dry-run, then pass --yes to import without asking"


class _Terminal(io.StringIO):
    """stdin as a terminal where the operator types the answer given."""

    def isatty(self) -> bool:
        return True


class _Directory(FakeSession):
    """The demo school's server as `users import` sees it: every command recorded; ldapsearch answers
    a directory with Anna (in the roster), Pau and Joan (not: suspended now), Old (suspended 400
    days ago: deleted) and Rita (suspended yesterday: still waiting)."""

    commands: ClassVar[list[str]] = []

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        from schoolctl.cli.users.roster import person_key

        _Directory.commands.append(command)
        if not command.startswith("ldapsearch"):
            return True, "", ""
        base = "dc=demo,dc=escoles,dc=bcn,dc=example"
        entries = [f"dn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n"
                   for ou in ("people", "groups", "suspended")]
        today = date.today()
        for uid, given, family, suspended in (("anna.puig", "Anna", "Puig", None), ("pau.vidal", "Pau", "Vidal", None),
                                              ("joan.serra", "Joan", "Serra", None),
                                              ("old.one", "Old", "One", today - timedelta(days=400)),
                                              ("rita.mas", "Rita", "Mas", today - timedelta(days=1))):
            ou = "suspended" if suspended else "people"
            entries.append(f"dn: uid={uid},ou={ou},{base}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                           f"employeeNumber: {person_key(given, family)}\ngivenName: {given}\nsn: {family}\n"
                           f"employeeType: student\ndepartmentNumber: 3A\n"
                           + (f"description: suspended {suspended}\n" if suspended else ""))
        return True, "\n".join(entries), ""


def test_users_import_on_a_terminal_asks_how_many_and_no_changes_nothing(
        schools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The directory is read first (one ldapsearch, a dry run); the question counts the people
    suspended and deleted; "n" leaves the directory, the vault and the journal as they were."""
    import schoolctl.cli.users.importer as importer
    from schoolctl.cli.main import app

    _Directory.commands = []
    monkeypatch.setattr(importer, "Session", _Directory)
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    roster = tmp_path / "roster.csv"
    roster.write_text("given_name,family_name,role,group,email\nAnna,Puig,student,3A,\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        app(["--schools-dir", "schools", "users", "import", "demo", str(roster)], prog_name="schoolctl")
    err = capsys.readouterr().err
    assert exited.value.code == 1, err
    assert "demo: suspend 2 and delete 1 people (deleting their accounts and data in moodle, nextcloud, " \
           "etherpad)? [y/N]" in err
    assert len(_Directory.commands) == 1 and _Directory.commands[0].startswith("ldapsearch")  # no ldapmodify
    assert not (tmp_path / "journal.jsonl").exists()
    assert not (tmp_path / "vault" / "secrets").exists() or not any((tmp_path / "vault" / "secrets").iterdir())


def test_deploy_without_yes_and_without_a_terminal_refuses(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "deploy", "demo")
    assert run.code == 2 and run.lines == [
        "error: Deploy demo: not confirmed (stdin is not a terminal); nothing was changed",
        "hint: pass --yes to deploy without asking"]


# --- progress -------------------------------------------------------------------------------------------

def test_plain_progress_lines() -> None:
    assert progress_line("demo", "connecting to demo", 0.04) == "    0.0s demo: connecting to demo"
    assert progress_line("escola-pins", "files,\n  packages", 125.26) == "  125.3s escola-pins: files, packages"
    value = "another-s3cret-value"
    Secret(value)
    assert value not in progress_line("demo", f"step {value}", 1)


def test_the_board_prints_one_line_per_phase_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with Board(["demo", "escola-pins"], live=False) as board:
        board("demo", "connecting to demo")
        board("escola-pins", "preparing")
        board("demo", "unchanged in 3.2s")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("s ", 1)[1] for line in lines] == ["demo: connecting to demo", "escola-pins: preparing",
                                                          "demo: unchanged in 3.2s"]


# --- inventories ------------------------------------------------------------------------------------------

def test_ansible_district_groups_keep_their_accents_transliterated(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "ansible")
    assert run.code == 0
    children = yaml.safe_load(run.stdout)["all"]["children"]
    assert set(children["district_sant_marti"]["hosts"]) == {"institut-mar"}
    assert set(children["district_horta_guinardo"]["hosts"]) == {"escola-pins"}
    assert children["bigbluebutton_servers"]["hosts"]["institut-mar-bbb"]["ansible_host"] == "10.20.31.11"
    assert "&id" not in run.stdout  # no YAML anchors between groups


def test_pyinfra_export_has_the_bbb_hosts_and_district_groups(schools: Path, tmp_path: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "pyinfra")
    assert run.code == 0
    target = tmp_path / "inv.py"
    target.write_text(run.stdout, encoding="utf-8")
    module = runpy.run_path(str(target))
    assert dict(module["bigbluebutton_servers"])["institut-mar-bbb"] == {
        "ssh_hostname": "10.20.31.11", "ssh_user": "root", "ssh_port": 22, "school_id": "institut-mar",
        "schoolctl_role": "bigbluebutton"}
    assert module["district_sant_marti"] == ["institut-mar"]
    assert module["district_ciutat_vella"] == ["demo"]
    assert module["district_horta_guinardo"] == ["escola-pins"]
    ansible = yaml.safe_load(run_cli("--schools-dir", "schools", "inventory", "--format", "ansible").stdout)
    groups = {k for k in ansible["all"]["children"] if k != "schools"}
    assert groups <= set(module), groups - set(module)


def test_a_lab_host_that_is_down_is_exported_with_a_warning(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--format", "ansible")
    assert run.code == 0
    assert yaml.safe_load(run.stdout)["all"]["children"]["schools"]["hosts"]["demo"]["ansible_host"] == "lab:demo"
    warning = [line for line in run.lines if line.startswith("warning: demo: ")]
    assert len(warning) == 1 and "exported as lab:demo, which SSH cannot reach" in warning[0]


def test_inventory_limit(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "inventory", "--limit", "district=sant marti")
    assert list(json.loads(run.stdout)["schools"]) == ["institut-mar"]
    assert not [line for line in run.lines if line.startswith("warning: demo")]


def test_live_pyinfra_inventory_groups(schools: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SCHOOLCTL_SCHOOLS_DIR", str(schools))
    fleet = Path(__file__).resolve().parents[2] / "inventories" / "fleet.py"
    module = runpy.run_path(str(fleet))
    assert module["district_sant_marti"] == ["institut-mar"]
    assert [name for name, _ in module["bigbluebutton_servers"]] == ["institut-mar-bbb"]
    assert "warning: demo: " in capsys.readouterr().err


@pytest.mark.parametrize("parallel", [1, 2, 5])
def test_the_runner_runs_at_most_parallel_schools_at_once(monkeypatch: pytest.MonkeyPatch, parallel: int) -> None:
    """cli/runner.run's gevent pool: the schools' work overlaps up to the cap, never beyond it."""
    import gevent

    import schoolctl.cli.runner as runner

    now = {"running": 0, "most": 0}

    def one_school(school, store, plan, progress, restoring=False):  # the school's work: it yields, as SSH does
        now["running"] += 1
        now["most"] = max(now["most"], now["running"])
        gevent.sleep(0.01)
        now["running"] -= 1
        return runner.Result(school.id, "planned")

    monkeypatch.setattr(runner, "run_school", one_school)
    schools = list(load(Path(__file__).resolve().parents[2] / "schools").schools.values()) * 3
    results = runner.run(schools, plan=True, store=object(), parallel=parallel)  # type: ignore[arg-type]
    assert [r.school for r in results] == [s.id for s in schools]
    assert now["most"] == min(parallel, len(schools))
