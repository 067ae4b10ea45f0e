"""The audit's reports (JSON schema, JUnit, static HTML checked in headless Chromium) and the verb's
exit codes, on made-up results (no hosts)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from schoolctl.audit.catalogue import ControlResult, load_all
from schoolctl.audit.runner import SchoolAudit
from schoolctl.cli.reports import html, json_report, junit
from schoolctl.secrets import MASK, Secret

SECRET = Secret("s3cr3t-db-password-xyz")
WHEN = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def audits() -> list[SchoolAudit]:
    c = load_all()
    ok = SchoolAudit("escola-a", "Escola A", [
        ControlResult(c["HOST-SSH-NO-PASSWORD"], "pass", "sshd -T: passwordauthentication no", "no"),
        ControlResult(c["WEB-CSP"], "fail", f"default-src https://cdn.example.net; pw {SECRET.reveal()}",
                      "only the school's own origins"),
        ControlResult(c["DB-LOCAL-ONLY"], "n/a", "escola-a does not run database", ""),
    ], seconds=1.2)
    down = SchoolAudit("escola-b", "Escola <B>", [ControlResult(c["HOST-SSH-NO-PASSWORD"], "error", "ssh: timeout",
                                                                "")], error="RuntimeError: ssh: connect timed out")
    return [ok, down]


def test_json_schema_is_stable_and_redacted() -> None:
    text = json_report.render(audits(), WHEN)
    data = json.loads(text)
    assert SECRET.reveal() not in text and MASK in text
    assert data["schema"] == "schoolctl-audit/1" and data["generated"].startswith("2026-11-23T12:00")
    a, b = data["schools"]
    assert (a["school"], a["status"], b["status"]) == ("escola-a", "fail", "error")
    assert set(a["controls"][0]) >= {"id", "service", "title", "severity", "legal", "status", "observed",
                                     "expected", "why"}
    assert a["controls"][1]["legal"][0].startswith("GDPR Art. 5(1)(c)")


def test_junit_one_suite_per_school_one_case_per_control() -> None:
    text = junit.render(audits())
    assert SECRET.reveal() not in text
    root = ET.fromstring(text)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["escola-a", "escola-b"]
    cases = suites[0].findall("testcase")
    assert len(cases) == 3
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    failure = cases[1].find("failure")
    assert failure is not None and "cdn.example.net" in failure.text and "expected:" in failure.text
    assert cases[2].find("skipped") is not None
    assert suites[1].findall("testcase")[0].find("error") is not None
    assert suites[0].get("failures") == "1" and suites[0].get("skipped") == "1"


# a URL a browser would fetch: src/href/action/poster/url()/@import with a scheme or protocol-relative
FETCHING = re.compile(r"""(?:\b(?:src|href|action|poster|data|srcset)\s*=\s*["']?\s*(?:https?:)?//)"""
                      r"""|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


@pytest.mark.parametrize("lang", ["ca", "es", "en"])
def test_html_is_one_static_file_that_loads_nothing(lang: str) -> None:
    page = html.render(audits(), lang, WHEN)
    assert SECRET.reveal() not in page
    assert "<script" not in page.lower() and not FETCHING.search(page)
    assert f'<html lang="{lang}">' in page and "Escola &lt;B&gt;" in page
    assert {"ca": "Auditoria de privacitat", "es": "Auditoría de privacidad", "en": "Privacy and security audit"}[
        lang] in page
    assert 'id="escola_a-WEB_CSP"' in page and 'href="#escola_a-WEB_CSP"' in page


def test_html_unknown_language() -> None:
    with pytest.raises(ValueError):
        html.render(audits(), "fr")


CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_html_renders_in_headless_chromium_without_network(tmp_path: Path) -> None:
    report = tmp_path / "audit.html"
    report.write_text(html.render(audits(), "ca", WHEN), encoding="utf-8")
    shot = tmp_path / "audit.png"
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                              "--window-size=1400,1000", report.as_uri()], capture_output=True, text=True, timeout=90)
        assert shot.exists() and shot.stat().st_size > 20000, run.stderr[-2000:]
        dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
                             capture_output=True, text=True, timeout=90).stdout
    assert "Auditoria de privacitat i seguretat" in dom and "escola-b" in dom
    assert not FETCHING.search(dom) and "<script" not in dom.lower()


# --- the verb ----------------------------------------------------------------------------------

def _app(schools_dir: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """The real CLI (its root command maps errors to exit codes), on the given schools folder."""
    from schoolctl.cli.main import app

    monkeypatch.setenv("SCHOOLCTL_SCHOOLS_DIR", str(schools_dir))
    return app


@pytest.fixture
def schools_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "schools"


def test_verb_exit_codes_and_formats(schools_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import schoolctl.audit.runner as runner

    results = audits()
    monkeypatch.setattr(runner, "audit_all", lambda schools, **kw: results[:len(schools)])
    app, cli = _app(schools_dir, monkeypatch), CliRunner()
    assert cli.invoke(app, ["audit", "escola-pins", "--format", "xml"]).exit_code == 2
    assert cli.invoke(app, ["audit", "no-such-school"]).exit_code == 2
    assert cli.invoke(app, ["audit"]).exit_code == 2
    assert cli.invoke(app, ["audit", "escola-pins", "--lang", "fr", "--format", "html"]).exit_code == 2
    res = cli.invoke(app, ["audit", "escola-pins", "--format", "json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["schema"] == "schoolctl-audit/1"
    out = tmp_path / "r.html"
    res = cli.invoke(app, ["audit", "escola-pins", "--format", "html", "--lang", "es", "-o", str(out)])
    assert res.exit_code == 1 and "Auditoría" in out.read_text()
    results[0] = SchoolAudit("escola-pins", "P", [results[0].controls[0]])
    res = cli.invoke(app, ["audit", "escola-pins"])
    assert res.exit_code == 0, res.stdout


# --- accepted risks in every report -----------------------------------------------------------

UNTIL = dt.date(2027, 1, 31)


def accepted_audits() -> list[SchoolAudit]:
    from schoolctl.config.model import Acceptance

    c = load_all()
    waiver = Acceptance(control="ETHERPAD-NO-KNOWN-VULNERABILITY", school="escola-a", reason="upgrade on <Friday>",
                        accepted_by="Ana Soler", until=UNTIL)
    unused = Acceptance(control="HOST-SSH-NO-PASSWORD", school="*", reason="old", accepted_by="Jordi", until=UNTIL)
    return [SchoolAudit("escola-a", "Escola A", [
        ControlResult(c["HOST-SSH-NO-PASSWORD"], "pass", "sshd -T: passwordauthentication no", "no"),
        ControlResult(c["ETHERPAD-NO-KNOWN-VULNERABILITY"], "accepted",
                      "Etherpad 3.3.1 running; affected by CVE-2026-114516 (critical, affected <3.3.3)",
                      "Etherpad 3.3.3 or later (fixes CVE-2026-114516)", waiver),
        ControlResult(c["DB-LOCAL-ONLY"], "n/a", "escola-a does not run database", ""),
    ], seconds=1.0, unused=[unused])]


def test_json_accepted_status_with_reason_by_until_and_counts() -> None:
    data = json.loads(json_report.render(accepted_audits(), WHEN))
    [a] = data["schools"]
    assert a["status"] == "accepted"
    assert a["counts"] == {"pass": 1, "fail": 0, "accepted": 1, "error": 0, "n/a": 1}
    ok, acc, na = a["controls"]
    assert acc["status"] == "accepted"
    assert acc["accepted"] == {"reason": "upgrade on <Friday>", "by": "Ana Soler", "until": "2027-01-31"}
    assert "CVE-2026-114516" in acc["observed"] and acc["expected"].startswith("Etherpad 3.3.3")
    assert ok["accepted"] is None and na["accepted"] is None
    assert a["unused_acceptances"] == [{"control": "HOST-SSH-NO-PASSWORD", "reason": "old", "by": "Jordi",
                                        "until": "2027-01-31"}]


def test_junit_accepted_is_a_skipped_case_with_who_when_why_and_the_evidence() -> None:
    root = ET.fromstring(junit.render(accepted_audits()))
    [suite] = root.findall("testsuite")
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "2")
    case = suite.findall("testcase")[1]
    skipped = case.find("skipped")
    assert case.find("failure") is None and skipped is not None
    assert skipped.get("message") == "accepted until 2027-01-31 by Ana Soler: upgrade on <Friday>"
    assert "observed: Etherpad 3.3.1 running" in skipped.text and "expected: Etherpad 3.3.3 or later" in skipped.text


def test_html_accepted_cell_and_drill_down() -> None:
    page = html.render(accepted_audits(), "en", WHEN)
    link = 'class="accepted" href="#escola_a-ETHERPAD_NO_KNOWN_VULNERABILITY"'
    assert f'{link} title="Accepted until 2027-01-31 (Ana Soler)"' in page  # the school's row links to it
    assert ".chip.accepted" in page  # its own colour in the inline CSS
    drill = page[page.index('<tr id="escola_a-ETHERPAD_NO_KNOWN_VULNERABILITY" class="accepted">'):]
    drill = drill[:drill.index("</tr>")]
    assert "<dt>Accepted until</dt><dd class=\"acc\">2027-01-31</dd>" in drill
    assert "<dt>Accepted by</dt><dd class=\"acc\">Ana Soler</dd>" in drill
    assert "upgrade on &lt;Friday&gt;" in drill and "affected by CVE-2026-114516" in drill
    assert '<li class="accepted"><b>1</b> only accepted risks</li>' in page
    assert 'id="escola_a-HOST_SSH_NO_PASSWORD"' not in page  # a pass is counted, not listed
    for lang, word in (("ca", "acceptat"), ("es", "aceptado")):
        assert f'<span class="chip accepted">{word}</span>' in html.render(accepted_audits(), lang, WHEN)


def test_terminal_table_shows_accepted_with_reason_and_date_and_exit_0(schools_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolctl.audit.runner as runner

    results = accepted_audits()
    monkeypatch.setattr(runner, "audit_all", lambda schools, **kw: results)
    res = CliRunner().invoke(_app(schools_dir, monkeypatch), ["audit", "escola-pins"])
    assert res.exit_code == 0, res.stdout
    assert "accepted" in res.stdout and "ETHERPAD-NO-KNOWN-VULNERABILITY" in res.stdout
    assert "2027-01-31" in res.stdout and "upgrade on <Friday>" in res.stdout and "Ana Soler" in res.stdout
    assert ("note: escola-a: HOST-SSH-NO-PASSWORD passes; the accepted risk for it (until 2027-01-31, by Jordi) is "
            "not needed any more") in res.stdout
    res = CliRunner().invoke(_app(schools_dir, monkeypatch), ["audit", "escola-pins", "--format", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["schools"][0]["status"] == "accepted"
    # one real fail next to the accepted one: exit 1
    from schoolctl.audit.catalogue import ControlResult as CR

    results[0].controls.append(CR(load_all()["WEB-CSP"], "fail", "default-src *", "self"))
    assert CliRunner().invoke(_app(schools_dir, monkeypatch), ["audit", "escola-pins"]).exit_code == 1
