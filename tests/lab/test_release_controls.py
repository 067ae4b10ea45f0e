"""The release controls against a real lab server (host r-1): only the base layer is deployed, with
Moodle, Nextcloud and Etherpad configured; release trees are then laid down where the deploy puts
them (/srv/<app>/releases/<version>, `current` switched to it) holding just the file each control
reads, and each control is seen to FAIL on a release the test's own support table condemns and to
PASS on one it does not. HOST-OS-SUPPORTED reads the lab's real Debian 13: it passes, and fails once
the fleet says 13's support ended yesterday (a fleet change, as a city would see it). An accepted
risk turns a fail into `accepted` with its evidence. The other controls fail here (nothing else is
deployed): only the release controls are run.

Needs root and the lab (no mirror); skips with the reason otherwise. SCHOOLCTL_KEEP_LAB=1 keeps r-1.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support import SchoolEnv, booted, skip_reason

pytestmark = pytest.mark.lab

HOST = "r-1"
SID = "r-releases"
IDS = ["HOST-OS-SUPPORTED", "MOODLE-RELEASE-SUPPORTED", "MOODLE-NO-KNOWN-VULNERABILITY",
       "NEXTCLOUD-RELEASE-SUPPORTED", "NEXTCLOUD-NO-KNOWN-VULNERABILITY", "ETHERPAD-RELEASE-SUPPORTED",
       "ETHERPAD-NO-KNOWN-VULNERABILITY"]


def support(today: date, debian_until: date | None = None) -> dict[str, Any]:
    """The test's own support table, its dates relative to today (so the test holds every day)."""
    ended, later = (today - timedelta(days=30)).isoformat(), (today + timedelta(days=365)).isoformat()
    return {
        "moodle": {"lines": [{"line": "4.5", "security_until": later}, {"line": "5.0", "security_until": ended}],
                   "advisories": [{"id": "MSA-26-0042", "affected": ">=5.0,<5.0.7", "fixed": "5.0.7",
                                   "severity": "high", "summary": "stored XSS in the forum"}]},
        "nextcloud": {"lines": [{"line": "31", "security_until": ended}, {"line": "34", "security_until": later}],
                      "advisories": [{"id": "NC-SA-2026-007", "affected": ">=31.0.0,<31.0.12", "fixed": "31.0.12",
                                      "severity": "moderate", "summary": "share link enumeration"}]},
        "etherpad": {"lines": [{"line": "2", "security_until": ended}, {"line": "3"}],
                     "advisories": [{"id": "CVE-2026-114516", "affected": "<3.3.3", "fixed": "3.3.3",
                                     "severity": "critical", "summary": "unauthenticated arbitrary file read"}]},
        "debian": {"lines": [{"line": "13", "security_until": (debian_until or today + timedelta(days=365))
                              .isoformat()}]},
    }


def set_fleet(env: SchoolEnv, today: date, debian_until: date | None = None,
              accept: list[dict[str, Any]] | None = None) -> Any:
    fleet = env.schools / "fleet.yaml"
    data = yaml.safe_load(fleet.read_text())
    data.update(support=support(today, debian_until), accept=accept or [])
    fleet.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return env.school


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchoolEnv]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with booted(HOST, timeout=180) as lab:
        e = SchoolEnv(lab, tmp_path_factory.mktemp("releases"), HOST, SID, "base",
                      services={"moodle": {}, "nextcloud": {}, "etherpad": {}})
        e.deploy("base")
        yield e


@pytest.fixture(scope="module")
def today(env: SchoolEnv) -> date:
    from schoolctl.releases import today

    return today(env.school.fleet)


def install(env: SchoolEnv, app: str, version: str) -> None:
    """A release tree of `app` at `version` holding the one file its controls read, made `current`
    the way the deploy switches it (symlink replaced atomically)."""
    name, text = {
        "moodle": ("version.php", "<?php\ndefined('MOODLE_INTERNAL') || die();\n$version  = 2025041406.11;\n"
                                  f"$release  = '{version}+ (Build: 20260403)';    // Human-friendly version name\n"
                                  "$branch   = '500';\n$maturity = MATURITY_STABLE;\n"),
        "nextcloud": ("version.php", f"<?php \n$OC_Version = array({','.join(version.split('.'))},2);\n"
                                     f"$OC_VersionString = '{version}';\n$OC_Edition = '';\n$OC_Channel = 'stable';\n"),
        "etherpad": ("src/package.json", json.dumps({"name": "ep_etherpad-lite", "version": version,
                                                     "dependencies": {"express": "^4.21.2"}}, indent=2) + "\n"),
    }[app]
    base = f"/srv/{app}/releases/{version}"
    path, current = f"{base}/{name}", f"/srv/{app}/current"
    env.lab.run(HOST, f"install -d {shlex.quote(str(Path(path).parent))} && cat > {shlex.quote(path)} && "
                      f"ln -sfn {shlex.quote(base)} {current}.new && mv -T {current}.new {current}",
                input=text, check=True)


def audit(env: SchoolEnv, school: Any) -> dict[str, Any]:
    from schoolctl.audit.catalogue import Expect
    from schoolctl.audit.runner import audit_school

    result = audit_school(school, expect=Expect(names=(school.domain,)), only=IDS)
    assert result.error is None, result.error
    assert result.extra_commands == 0, "the release controls read only their prefetched evidence"
    return {r.control.id: r for r in result.controls}


def test_host_os_supported_passes_on_the_labs_debian_13_and_fails_when_13_ended_yesterday(env, today) -> None:
    results = audit(env, set_fleet(env, today))
    os_res = results["HOST-OS-SUPPORTED"]
    assert os_res.status == "pass", os_res.observed
    assert "(ID=debian, VERSION_ID=13)" in os_res.observed
    yesterday = today - timedelta(days=1)
    ended = audit(env, set_fleet(env, today, debian_until=yesterday))["HOST-OS-SUPPORTED"]
    set_fleet(env, today)
    assert ended.status == "fail", ended.observed
    assert ended.observed.endswith(f"13: upstream security support ended on {yesterday.isoformat()}")


def test_no_release_tree_yet_is_an_error_not_a_pass(env, today) -> None:
    env.lab.run(HOST, "rm -rf /srv/moodle /srv/nextcloud /srv/etherpad", check=True)
    results = audit(env, set_fleet(env, today))
    for cid in IDS[1:]:
        assert results[cid].status == "error", (cid, results[cid].observed)
        assert "No such file or directory" in results[cid].observed


# (app, version): {control: (status, words its observed evidence must hold, words of its expected value)}
CASES: list[tuple[str, str, dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]]] = [
    ("moodle", "5.0.6", {
        "MOODLE-RELEASE-SUPPORTED": ("fail", ("Moodle 5.0.6 running", "$release '5.0.6+ (Build: 20260403)'",
                                              "/srv/moodle/releases/5.0.6/version.php",
                                              "5.0: upstream security support ended on"), ("release line",)),
        "MOODLE-NO-KNOWN-VULNERABILITY": ("fail", ("MSA-26-0042 (high, affected >=5.0,<5.0.7)",),
                                          ("Moodle 5.0.7 or later (fixes MSA-26-0042)",))}),
    ("moodle", "4.5.10", {
        "MOODLE-RELEASE-SUPPORTED": ("pass", ("Moodle 4.5.10 running", "4.5: upstream security support until"), ()),
        "MOODLE-NO-KNOWN-VULNERABILITY": ("pass", ("none of the 1 advisory",), ())}),
    ("nextcloud", "31.0.11", {
        "NEXTCLOUD-RELEASE-SUPPORTED": ("fail", ("Nextcloud 31.0.11 running", "$OC_VersionString '31.0.11'",
                                                 "31: upstream security support ended on"), ()),
        "NEXTCLOUD-NO-KNOWN-VULNERABILITY": ("fail", ("NC-SA-2026-007 (moderate",),
                                             ("Nextcloud 31.0.12 or later (fixes NC-SA-2026-007)",))}),
    ("nextcloud", "34.0.1", {
        "NEXTCLOUD-RELEASE-SUPPORTED": ("pass", ("Nextcloud 34.0.1 running", "34: upstream security support until"),
                                        ()),
        "NEXTCLOUD-NO-KNOWN-VULNERABILITY": ("pass", ("Nextcloud 34.0.1 running",), ())}),
    ("etherpad", "2.5.3", {
        "ETHERPAD-RELEASE-SUPPORTED": ("fail", ("Etherpad 2.5.3 running", "version '2.5.3'",
                                                "/srv/etherpad/releases/2.5.3/src/package.json",
                                                "2: upstream security support ended on"), ())}),
    ("etherpad", "3.3.1", {
        "ETHERPAD-RELEASE-SUPPORTED": ("pass", ("3: supported, no end announced",), ()),
        "ETHERPAD-NO-KNOWN-VULNERABILITY": ("fail", ("Etherpad 3.3.1 running", "CVE-2026-114516 (critical"),
                                            ("Etherpad 3.3.3 or later (fixes CVE-2026-114516)",))}),
    ("etherpad", "3.3.3", {
        "ETHERPAD-NO-KNOWN-VULNERABILITY": ("pass", ("Etherpad 3.3.3 running", "none of the 1 advisory"), ())}),
]


@pytest.mark.parametrize(("app", "version", "wanted"), CASES, ids=[f"{a}-{v}" for a, v, _ in CASES])
def test_the_running_release_is_judged(env, today, app: str, version: str, wanted) -> None:
    school = set_fleet(env, today)
    install(env, app, version)
    results = audit(env, school)
    for cid, (status, seen, expected) in wanted.items():
        res = results[cid]
        assert res.status == status, f"{cid} on {app} {version}: {res.status}: {res.observed}"
        for word in seen:
            assert word in res.observed, f"{cid}: {word!r} not in {res.observed!r}"
        for word in expected:
            assert word in res.expected, f"{cid}: {word!r} not in {res.expected!r}"


def test_every_release_control_is_seen_to_fail_here() -> None:
    failing = {cid for _, _, wanted in CASES for cid, (status, _, _) in wanted.items() if status == "fail"}
    assert failing | {"HOST-OS-SUPPORTED"} == set(IDS)


def test_an_accepted_risk_is_reported_accepted_until_its_date(env, today) -> None:
    install(env, "etherpad", "3.3.1")
    waiver = {"control": "ETHERPAD-NO-KNOWN-VULNERABILITY", "school": SID, "reason": "pads closed until the upgrade",
              "accepted_by": "Ana (DPD)", "until": today.isoformat()}
    res = audit(env, set_fleet(env, today, accept=[waiver]))["ETHERPAD-NO-KNOWN-VULNERABILITY"]
    assert res.status == "accepted", res.observed
    assert "CVE-2026-114516" in res.observed and res.accepted.accepted_by == "Ana (DPD)"
    gone = audit(env, set_fleet(env, today, accept=[{**waiver, "until": (today - timedelta(days=1)).isoformat()}]))
    assert gone["ETHERPAD-NO-KNOWN-VULNERABILITY"].status == "fail"
    set_fleet(env, today)
