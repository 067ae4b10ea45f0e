"""The release controls (audit/releases.py) on sample evidence, and the judgement they share with
`validate` and `plan` (schoolctl.releases): the running version against the tests' own support
table, never the shipped one."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from schoolctl.audit import releases as r
from schoolctl.audit.catalogue import Context, Expect, load_all, run_control
from schoolctl.config.loader import load
from schoolctl.releases import control_for, findings, school_findings, today

TODAY = date(2026, 12, 2)
SUPPORT = """\
support:
  moodle:
    lines:
      - {line: "4.5", security_until: 2027-10-04}
      - {line: "5.0", security_until: 2026-10-05}
      - {line: "5.3", security_until: 2029-10-01}
  nextcloud:
    lines:
      - {line: "31", security_until: 2026-02-25}
      - {line: "34", security_until: 2027-06-09}
  etherpad:
    lines:
      - {line: "2"}
      - {line: "3"}
    advisories:
      - id: CVE-2026-114516
        affected: "<3.3.3"
        fixed: "3.3.3"
        severity: critical
        summary: unauthenticated arbitrary file read
  debian:
    lines:
      - {line: "12", security_until: 2026-06-10}
      - {line: "13", security_until: 2028-08-09}
"""
IDS = ("MOODLE-RELEASE-SUPPORTED", "MOODLE-NO-KNOWN-VULNERABILITY", "NEXTCLOUD-RELEASE-SUPPORTED",
       "NEXTCLOUD-NO-KNOWN-VULNERABILITY", "ETHERPAD-RELEASE-SUPPORTED", "ETHERPAD-NO-KNOWN-VULNERABILITY",
       "HOST-OS-SUPPORTED")


def write_fleet(schools: Path, support: str = SUPPORT, accept: str = "accept: []\n") -> Path:
    """The copied fleet file with the tests' own `support:` and `accept:` (written last, so their
    line numbers are the file's last lines)."""
    fleet = schools / "fleet.yaml"
    data = yaml.safe_load(fleet.read_text(encoding="utf-8"))
    data.pop("support", None)
    data.pop("accept", None)
    fleet.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + support + accept, encoding="utf-8")
    return fleet


@pytest.fixture
def school(schools: Path) -> Any:
    """escola-pins (Moodle, Nextcloud, Etherpad) judged by the tests' support table."""
    write_fleet(schools)
    return load(schools).select(["escola-pins"])[0]


def evidence(moodle: str | None = "4.5.10 (Build: 20260310)", nextcloud: str | None = "34.0.1",
             etherpad: str | None = "3.3.3", os: tuple[str, str] = ("debian", "13"),
             moodle_public: bool = False) -> dict[str, Any]:
    """What the evidence script prints, for these versions (None: no release tree there)."""
    out: dict[str, Any] = {}
    if moodle is None:
        out["moodle"] = {"error": "/srv/moodle/current/public/version.php: No such file or directory; "
                                  "/srv/moodle/current/version.php: No such file or directory"}
    else:
        path = "/srv/moodle/current/public/version.php" if moodle_public else "/srv/moodle/current/version.php"
        v = moodle.split()[0].rstrip("+")
        out["moodle"] = {"path": path, "real": path.replace("current", f"releases/{v}"),
                         "text": f"<?php\ndefined('MOODLE_INTERNAL') || die();\n$version  = 2024100710.00;\n"
                                 f"$release  = '{moodle}';    // Human-friendly version name\n$branch = '405';\n"}
    if nextcloud is None:
        out["nextcloud"] = {"error": "/srv/nextcloud/current/version.php: No such file or directory"}
    else:
        out["nextcloud"] = {"path": "/srv/nextcloud/current/version.php",
                            "real": f"/srv/nextcloud/releases/{nextcloud}/version.php",
                            "text": f"<?php \n$OC_Version = array(34,0,1,2);\n$OC_VersionString = '{nextcloud}';\n"
                                    "$OC_Edition = '';\n$OC_Channel = 'stable';\n"}
    if etherpad is None:
        out["etherpad"] = {"error": "/srv/etherpad/current/src/package.json: No such file or directory"}
    else:
        out["etherpad"] = {"path": "/srv/etherpad/current/src/package.json",
                           "real": f"/srv/etherpad/releases/{etherpad}/src/package.json",
                           "text": json.dumps({"name": "ep_etherpad-lite", "version": etherpad,
                                               "dependencies": {"express": {"version": "4.0.0"}}}, indent=2)}
    os_id, version = os
    out["os"] = {"path": "/etc/os-release", "real": "/usr/lib/os-release",
                 "text": f'PRETTY_NAME="Debian GNU/Linux {version} (trixie)"\nNAME="Debian GNU/Linux"\n'
                         f'VERSION_ID="{version}"\nVERSION="{version} (trixie)"\nID={os_id}\n'}
    return out


class Host:
    """A host answering the release evidence command with `answer` (and nothing else)."""

    def __init__(self, answer: dict[str, Any], rc: int = 0):
        self.answer, self.rc, self.ran = answer, rc, []

    def run(self, command: str) -> Any:
        self.ran.append(command)
        assert command == r.STATE
        return SimpleNamespace(rc=self.rc, stdout=json.dumps(self.answer), stderr="boom" if self.rc else "")


def check(school: Any, cid: str, on: date = TODAY, **versions: Any) -> Any:
    return run_control(load_all()[cid], Context(Host(evidence(**versions)), school, Expect(), on))


def test_the_controls_exist_with_translated_titles_and_their_ids_are_the_judgements() -> None:
    controls = load_all()
    for cid in IDS:
        c = controls[cid]
        assert set(c.titles) == {"ca", "es"} and c.legal == ("32",) and c.severity == "high", cid
    assert controls["HOST-OS-SUPPORTED"].service == "host"
    for app in ("moodle", "nextcloud", "etherpad"):
        assert controls[control_for(app, "unsupported")].service == app
        assert control_for(app, "unlisted") == control_for(app, "unsupported") == f"{app.upper()}-RELEASE-SUPPORTED"
        assert control_for(app, "vulnerable") == f"{app.upper()}-NO-KNOWN-VULNERABILITY"
    assert control_for("debian", "unsupported") == control_for("debian", "vulnerable") == "HOST-OS-SUPPORTED"


def test_one_evidence_command_reads_every_release_file() -> None:
    """The script runs (here, on the controller): the os-release of this machine, no app trees."""
    proc = subprocess.run(["sh", "-c", r.STATE], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"moodle", "nextcloud", "etherpad", "os"}
    assert "ID=" in data["os"]["text"] and data["os"]["path"] == "/etc/os-release"
    if not Path("/srv/moodle/current").exists():
        assert "No such file" in data["moodle"]["error"]


def test_moodle_past_support_fails_with_version_line_and_end_date(school: Any) -> None:
    res = check(school, "MOODLE-RELEASE-SUPPORTED", moodle="5.0.6+ (Build: 20260403)")
    assert res.status == "fail"
    assert res.observed == ("Moodle 5.0.6 running ($release '5.0.6+ (Build: 20260403)' in "
                            "/srv/moodle/current/version.php -> /srv/moodle/releases/5.0.6/version.php); "
                            "5.0: upstream security support ended on 2026-10-05")
    assert res.expected == ("a release line with upstream security support on 2026-12-02 "
                            "(fleet.yaml support.moodle)")
    ok = check(school, "MOODLE-RELEASE-SUPPORTED", moodle="4.5.10 (Build: 20260310)")
    assert ok.status == "pass" and ok.observed.endswith("4.5: upstream security support until 2027-10-04")
    # the day matters: 5.0 was still supported on its last day
    assert check(school, "MOODLE-RELEASE-SUPPORTED", date(2026, 10, 5), moodle="5.0.6 (Build: 1)").status == "pass"


def test_moodle_5_1_and_later_is_read_from_public(school: Any) -> None:
    res = check(school, "MOODLE-RELEASE-SUPPORTED", moodle="5.3 (Build: 20261006)", moodle_public=True)
    assert res.status == "pass" and "/srv/moodle/current/public/version.php" in res.observed
    assert "Moodle 5.3 running" in res.observed


def test_a_version_in_no_listed_line_fails(school: Any) -> None:
    res = check(school, "NEXTCLOUD-RELEASE-SUPPORTED", nextcloud="35.0.0")
    assert res.status == "fail"
    assert "Nextcloud 35.0.0 running" in res.observed and "belongs to no release line" in res.observed
    assert "listed: 31, 34" in res.observed


def test_nextcloud_past_support_fails_and_a_supported_one_passes(school: Any) -> None:
    res = check(school, "NEXTCLOUD-RELEASE-SUPPORTED", nextcloud="31.0.11")
    assert res.status == "fail"
    assert "Nextcloud 31.0.11 running ($OC_VersionString '31.0.11' in /srv/nextcloud/current/version.php" \
           in res.observed
    assert res.observed.endswith("31: upstream security support ended on 2026-02-25")
    assert check(school, "NEXTCLOUD-RELEASE-SUPPORTED", nextcloud="34.0.1").status == "pass"
    assert check(school, "NEXTCLOUD-NO-KNOWN-VULNERABILITY", nextcloud="31.0.11").status == "pass"


def test_etherpad_in_a_vulnerable_range_fails_with_advisory_severity_and_fixed_version(school: Any) -> None:
    res = check(school, "ETHERPAD-NO-KNOWN-VULNERABILITY", etherpad="3.3.1")
    assert res.status == "fail"
    assert res.observed == ("Etherpad 3.3.1 running (version '3.3.1' in /srv/etherpad/current/src/package.json -> "
                            "/srv/etherpad/releases/3.3.1/src/package.json); affected by CVE-2026-114516 "
                            "(critical, affected <3.3.3)")
    assert res.expected == "Etherpad 3.3.3 or later (fixes CVE-2026-114516)"
    ok = check(school, "ETHERPAD-NO-KNOWN-VULNERABILITY", etherpad="3.3.3")
    assert ok.status == "pass" and "none of the 1 advisory of fleet.yaml support.etherpad affects it" in ok.observed
    # line 3 has no end announced: supported, whatever the advisories say
    sup = check(school, "ETHERPAD-RELEASE-SUPPORTED", etherpad="3.3.1")
    assert sup.status == "pass" and sup.observed.endswith("3: supported, no end announced")


def test_no_release_tree_is_an_error_and_a_service_that_is_off_is_na(school: Any) -> None:
    res = check(school, "ETHERPAD-RELEASE-SUPPORTED", etherpad=None)
    assert res.status == "error" and "no Etherpad release" in res.observed and "No such file" in res.observed
    off = school.model_copy(update={"services": school.services.model_copy(update={"etherpad": None})})
    assert check(off, "ETHERPAD-RELEASE-SUPPORTED", etherpad=None).status == "n/a"
    assert check(off, "ETHERPAD-NO-KNOWN-VULNERABILITY").status == "n/a"
    bad = evidence()
    bad["moodle"]["text"] = "<?php\n$version = 1;\n"
    res = run_control(load_all()["MOODLE-RELEASE-SUPPORTED"], Context(Host(bad), school, Expect(), TODAY))
    assert res.status == "error" and "no $release" in res.observed
    broken = run_control(load_all()["HOST-OS-SUPPORTED"], Context(Host({}, rc=1), school, Expect(), TODAY))
    assert broken.status == "error" and "boom" in broken.observed


def test_an_app_without_release_lines_is_not_judged(schools: Path) -> None:
    write_fleet(schools, SUPPORT.replace('      - {line: "2"}\n      - {line: "3"}\n', "      []\n"))
    school = load(schools).select(["escola-pins"])[0]
    assert school.fleet.support.etherpad.lines == []
    res = check(school, "ETHERPAD-RELEASE-SUPPORTED")
    assert res.status == "n/a" and "lists no release lines" in res.observed


def test_host_os_supported_passes_on_debian_13_and_fails_once_its_support_ended(schools: Path, school: Any) -> None:
    ok = check(school, "HOST-OS-SUPPORTED")
    assert ok.status == "pass"
    assert ok.observed == ("Debian GNU/Linux 13 (trixie) (ID=debian, VERSION_ID=13); "
                           "13: upstream security support until 2028-08-09")
    write_fleet(schools, SUPPORT.replace("2028-08-09", "2026-12-01"))
    ended = load(schools).select(["escola-pins"])[0]
    res = check(ended, "HOST-OS-SUPPORTED")
    assert res.status == "fail" and res.observed.endswith("13: upstream security support ended on 2026-12-01")
    old = check(school, "HOST-OS-SUPPORTED", os=("debian", "12"))
    assert old.status == "fail" and "2026-06-10" in old.observed
    other = check(school, "HOST-OS-SUPPORTED", os=("ubuntu", "24.04"))
    assert other.status == "fail" and "no table for ubuntu" in other.observed
    sid = evidence()
    sid["os"]["text"] = 'PRETTY_NAME="Debian GNU/Linux forky/sid"\nID=debian\n'
    res = run_control(load_all()["HOST-OS-SUPPORTED"], Context(Host(sid), school, Expect(), TODAY))
    assert res.status == "fail" and "no VERSION_ID" in res.observed


def test_os_release_parsing() -> None:
    assert r.os_release('ID=debian\nVERSION_ID="13"\n# x=y\nNAME=\'Debian\'\nbad line\n') == \
        {"ID": "debian", "VERSION_ID": "13", "NAME": "Debian"}


OLD_SCHOOL = """\
id: escola-vella
name: Escola Vella
district: Lab
server: 10.20.99.10
services:
  moodle: {version: "5.0.6"}
  nextcloud: {version: "31.0.11"}
  etherpad: {version: "3.3.1"}
  jitsi: {}
contacts:
  dpo: {name: DPD, email: dpd@bcn.example}
"""


def old_school(schools: Path) -> Path:
    """A school configured to run old releases (written into the copied folder)."""
    path = schools / "escola-vella.yaml"
    path.write_text(OLD_SCHOOL, encoding="utf-8")
    return path


def test_findings_for_the_configured_releases(schools: Path, school: Any) -> None:
    old_school(schools)
    vella = load(schools).select(["escola-vella"])[0]
    got = [(f.app, f.kind, f.control, f.message) for f in school_findings(vella, TODAY)]
    assert got == [
        ("etherpad", "vulnerable", "ETHERPAD-NO-KNOWN-VULNERABILITY",
         "Etherpad 3.3.1 is affected by CVE-2026-114516 (critical: unauthenticated arbitrary file read); "
         "fixed in 3.3.3"),
        ("moodle", "unsupported", "MOODLE-RELEASE-SUPPORTED",
         "Moodle 5.0.6: upstream security support for 5.0 ended on 2026-10-05"),
        ("nextcloud", "unsupported", "NEXTCLOUD-RELEASE-SUPPORTED",
         "Nextcloud 31.0.11: upstream security support for 31 ended on 2026-02-25")]
    [f] = findings(school.fleet, "etherpad", "3.3.1", TODAY)
    assert (f.advisory, f.fixed, f.severity, f.affected, f.line) == ("CVE-2026-114516", "3.3.3", "critical",
                                                                      "<3.3.3", "3")
    assert f.as_json()["control"] == "ETHERPAD-NO-KNOWN-VULNERABILITY"
    assert findings(school.fleet, "moodle", "4.5.10", TODAY) == []
    # a service that is off is not judged; the OS is
    off = vella.model_copy(update={"services": vella.services.model_copy(update={"etherpad": None})})
    assert [f.app for f in school_findings(off, TODAY)] == ["moodle", "nextcloud"]
    assert [f.app for f in school_findings(vella, date(2028, 8, 10))][-1] == "debian"


def test_today_is_the_fleets_day(school: Any) -> None:
    assert abs((today(school.fleet) - date.today()).days) <= 1
