"""Every `--json` output, produced through the CLI on a test fleet, is valid under its documented
schema (docs/schemas/<verb>.schema.json), names it and the tool's version, and is plain JSON
(no rich markup or emoji codes turned into emoji)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from schoolctl import __version__
from tests.unit.conftest import REPO, edit, run_cli

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
        "audit", "backup", "backup-list", "backup-prune", "backup-verify", "deploy", "lab-status", "list", "log",
        "plan", "restore", "rollback", "users-import"))
    for name in names:
        schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        verb = name.removesuffix(".schema.json")
        assert schema["$id"] == f"urn:schoolctl:output:{verb}:1"
        assert schema["properties"]["schema"] == {"const": f"schoolctl-{verb}/1"}
