"""Accepted risks (`accept:` in fleet.yaml): a failing control covered by one becomes `accepted`,
evidence kept, until its date; past it the control fails again. A waiver never hides a pass, an
error or an n/a. The same in `schoolctl audit`, the reports' counts and the packaged testinfra suite."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schoolctl.audit.catalogue import ACCEPTED, FAIL, Context, Expect, Outcome, load_all, run_control, waived
from schoolctl.audit.runner import audit_school
from schoolctl.config.loader import load
from schoolctl.releases import acceptance, expired

from .test_release_controls import TODAY, Host, evidence, write_fleet

ETHERPAD = "ETHERPAD-NO-KNOWN-VULNERABILITY"
RELEASE_IDS = ["MOODLE-RELEASE-SUPPORTED", "MOODLE-NO-KNOWN-VULNERABILITY", "NEXTCLOUD-RELEASE-SUPPORTED",
               "ETHERPAD-RELEASE-SUPPORTED", ETHERPAD, "HOST-OS-SUPPORTED"]


def accept(*entries: tuple[str, str, date]) -> str:
    lines = ["accept:\n"]
    for control, school, until in entries:
        lines.append(f"  - {{control: {control}, school: \"{school}\", reason: upgrade booked for the holidays, "
                     f"accepted_by: Ana Soler (DPD), until: {until.isoformat()}}}\n")
    return lines[0] if len(lines) == 1 else "".join(lines)


def school_with(schools: Path, *entries: tuple[str, str, date], sid: str = "escola-pins") -> Any:
    write_fleet(schools, accept=accept(*entries))
    return load(schools).select([sid])[0]


def etherpad_331(school: Any, on: date = TODAY) -> Any:
    ctx = Context(Host(evidence(etherpad="3.3.1")), school, Expect(), on)
    return waived(run_control(load_all()[ETHERPAD], ctx), school, on)


def test_a_failing_control_covered_by_an_acceptance_is_accepted_with_its_evidence(schools: Path) -> None:
    school = school_with(schools, (ETHERPAD, "escola-pins", TODAY + timedelta(days=30)))
    res = etherpad_331(school)
    assert res.status == ACCEPTED
    assert "affected by CVE-2026-114516 (critical, affected <3.3.3)" in res.observed
    assert res.expected == "Etherpad 3.3.3 or later (fixes CVE-2026-114516)"
    a = res.accepted
    assert (a.reason, a.accepted_by, a.until) == ("upgrade booked for the holidays", "Ana Soler (DPD)",
                                                  TODAY + timedelta(days=30))
    assert res.as_json()["accepted"] == {"reason": "upgrade booked for the holidays", "by": "Ana Soler (DPD)",
                                         "until": (TODAY + timedelta(days=30)).isoformat()}
    assert res.as_json()["status"] == "accepted"


def test_until_yesterday_fails_again_and_until_today_still_covers(schools: Path) -> None:
    school = school_with(schools, (ETHERPAD, "escola-pins", TODAY - timedelta(days=1)))
    res = etherpad_331(school)
    assert res.status == FAIL and res.accepted is None
    assert expired(school.fleet, TODAY) == list(school.fleet.accept)
    school = school_with(schools, (ETHERPAD, "escola-pins", TODAY))
    assert etherpad_331(school).status == ACCEPTED
    assert etherpad_331(school, TODAY + timedelta(days=1)).status == FAIL


def test_star_covers_every_school_and_a_schools_own_entry_comes_first(schools: Path) -> None:
    school = school_with(schools, (ETHERPAD, "*", TODAY + timedelta(days=5)),
                         (ETHERPAD, "escola-pins", TODAY + timedelta(days=9)))
    assert etherpad_331(school).accepted.until == TODAY + timedelta(days=9)
    assert acceptance(school.fleet, ETHERPAD, "institut-mar", TODAY).until == TODAY + timedelta(days=5)
    other = school_with(schools, (ETHERPAD, "demo", TODAY + timedelta(days=5)))
    assert etherpad_331(other).status == FAIL  # demo's waiver is not escola-pins'
    wrong = school_with(schools, ("ETHERPAD-RELEASE-SUPPORTED", "escola-pins", TODAY + timedelta(days=5)))
    assert etherpad_331(wrong).status == FAIL  # another control's waiver covers nothing here


def test_a_waiver_never_hides_a_pass_an_error_or_an_na(schools: Path) -> None:
    school = school_with(schools, (ETHERPAD, "*", TODAY + timedelta(days=5)))
    c = load_all()[ETHERPAD]
    ok = waived(run_control(c, Context(Host(evidence(etherpad="3.3.3")), school, Expect(), TODAY)), school, TODAY)
    assert ok.status == "pass" and ok.accepted is None
    err = waived(run_control(c, Context(Host(evidence(etherpad=None)), school, Expect(), TODAY)), school, TODAY)
    assert err.status == "error"
    off = school.model_copy(update={"services": school.services.model_copy(update={"etherpad": None})})
    na = waived(run_control(c, Context(Host(evidence()), off, Expect(), TODAY)), off, TODAY)
    assert na.status == "n/a"


def test_a_check_cannot_itself_say_accepted() -> None:
    with pytest.raises(ValueError):
        Outcome("accepted")


class Backend:
    """A testinfra-like backend for audit_school: the prefetch answers the release evidence."""

    def __init__(self, answer: dict[str, Any]):
        import json

        self.answer, self.encoding, self.json = answer, "utf-8", json

    def run(self, command: str, *args: Any) -> Any:
        from schoolctl.audit import releases as r

        cmds = self.json.loads(bytes.fromhex(command.split("| python3 - ")[-1]).decode())
        out = {c: ([0, self.json.dumps(self.answer), ""] if c == r.STATE else [1, "", "not in this test"])
               for c in cmds}
        return self.result(0, b"", self.json.dumps(out).encode(), b"")

    def result(self, rc: int, cmd: bytes, out: bytes, err: bytes) -> Any:
        from testinfra.backend.base import CommandResult

        return CommandResult(backend=self, exit_status=rc, command=cmd, _stdout=out, _stderr=err)

    def encode(self, s: str) -> bytes:
        return s.encode()

    def decode(self, data: bytes) -> str:
        return data.decode()


def test_audit_school_reports_accepted_counts_it_and_notes_unused_waivers(schools: Path) -> None:
    until = TODAY + timedelta(days=30)
    school = school_with(schools, (ETHERPAD, "escola-pins", until), ("MOODLE-RELEASE-SUPPORTED", "*", until),
                         ("HOST-OS-SUPPORTED", "escola-pins", TODAY - timedelta(days=1)))
    host = SimpleNamespace(backend=Backend(evidence(moodle="4.5.10 (Build: 1)", etherpad="3.3.1")))
    result = audit_school(school, expect=Expect(), host=host, only=RELEASE_IDS, today=TODAY)
    status = {r.control.id: r.status for r in result.controls}
    assert status == {"MOODLE-RELEASE-SUPPORTED": "pass", "MOODLE-NO-KNOWN-VULNERABILITY": "pass",
                      "NEXTCLOUD-RELEASE-SUPPORTED": "pass", "ETHERPAD-RELEASE-SUPPORTED": "pass",
                      ETHERPAD: "accepted", "HOST-OS-SUPPORTED": "pass"}
    assert result.status == "accepted"
    assert result.counts() == {"pass": 5, "fail": 0, "accepted": 1, "error": 0, "n/a": 0}
    assert [u.control for u in result.unused] == ["MOODLE-RELEASE-SUPPORTED"]  # it passes: the waiver can go
    # past its date the same audit fails
    later = audit_school(school, expect=Expect(), host=host, only=RELEASE_IDS, today=until + timedelta(days=1))
    assert later.status == "fail" and {r.control.id for r in later.controls if r.status == "fail"} == {ETHERPAD}


def test_the_packaged_suite_skips_an_accepted_control_with_its_reason(schools: Path) -> None:
    from schoolctl.audit import test_controls

    school = school_with(schools, (ETHERPAD, "escola-pins", TODAY + timedelta(days=30)))
    ctx = Context(Host(evidence(etherpad="3.3.1")), school, Expect(), TODAY)
    with pytest.raises(pytest.skip.Exception) as skipped:
        test_controls.test_control(ETHERPAD, ctx)
    msg = str(skipped.value)
    assert msg.startswith(f"{ETHERPAD}: accepted until {(TODAY + timedelta(days=30)).isoformat()} by Ana Soler "
                          "(DPD): upgrade booked for the holidays; observed: Etherpad 3.3.1 running")
    assert "expected: Etherpad 3.3.3 or later" in msg
    expired_school = school_with(schools, (ETHERPAD, "escola-pins", TODAY - timedelta(days=1)))
    with pytest.raises(AssertionError, match="CVE-2026-114516"):
        test_controls.test_control(ETHERPAD, Context(Host(evidence(etherpad="3.3.1")), expired_school, Expect(),
                                                     TODAY))
