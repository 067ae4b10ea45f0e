"""What the fleet's support table says of a version: past upstream's security support, in a known
vulnerable range, or not in the table at all. One judgement, used by `validate` and `plan` (on the
configured versions) and by the audit's release controls (on the versions found running), and the
accepted risks (`accept:`) that turn a failing control into `accepted` until their date.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from schoolctl.config.model import Acceptance, AppSupport, EffectiveSchool, Fleet, ReleaseLine
from schoolctl.config.problems import few

if TYPE_CHECKING:  # packaging is imported where versions are compared: a table without advisories needs none
    from packaging.version import Version

Kind = Literal["unsupported", "vulnerable", "unlisted"]
TITLES = {"moodle": "Moodle", "nextcloud": "Nextcloud", "etherpad": "Etherpad", "debian": "Debian"}
APPS = ("moodle", "nextcloud", "etherpad")   # the applications with release controls of their own
OS_CONTROL = "HOST-OS-SUPPORTED"             # the OS's (every key of the support table that is not an app)


def today(fleet: Fleet) -> date:
    """Today in the city's time zone (fleet `timezone`): the day support dates and `until` are read on."""
    return datetime.now(ZoneInfo(fleet.timezone)).date()


def control_for(app: str, kind: Kind) -> str:
    """The audit control that judges a finding of `kind` on the server: APP-RELEASE-SUPPORTED
    (past support, or in no listed line), APP-NO-KNOWN-VULNERABILITY, or HOST-OS-SUPPORTED for the OS."""
    if app not in APPS:
        return OS_CONTROL
    return f"{app.upper()}-{'NO-KNOWN-VULNERABILITY' if kind == 'vulnerable' else 'RELEASE-SUPPORTED'}"


@dataclass(frozen=True)
class Finding:
    """One reason a version is not safe to run."""

    app: str
    version: str
    kind: Kind
    message: str                 # one line, with the date or the advisory id and the fixed version
    advisory: str | None = None
    fixed: str | None = None
    until: date | None = None
    line: str | None = None      # the release line the version belongs to (None: unlisted)
    severity: str | None = None  # an advisory's
    affected: str | None = None  # an advisory's range

    @property
    def control(self) -> str:
        return control_for(self.app, self.kind)

    def as_json(self) -> dict[str, Any]:
        return {"app": self.app, "version": self.version, "kind": self.kind, "control": self.control,
                "message": self.message, "line": self.line, "until": self.until.isoformat() if self.until else None,
                "advisory": self.advisory, "severity": self.severity, "affected": self.affected,
                "fixed": self.fixed}


def line_of(support: AppSupport, version: str) -> ReleaseLine | None:
    """The release line `version` belongs to: the longest listed line that is a prefix of it by
    components (5.0.6 -> 5.0; 34.0.1 -> 34; 13.8 -> 13)."""
    parts = version.split(".")
    best: ReleaseLine | None = None
    for line in support.lines:
        own = line.line.split(".")
        if parts[:len(own)] == own and (best is None or len(own) > len(best.line.split("."))):
            best = line
    return best


def _version(text: str) -> Version | None:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def findings(fleet: Fleet, app: str, version: str, today: date) -> list[Finding]:
    """Why `app` at `version` is unsafe on `today` by the fleet's table (empty: it is fine)."""
    support: AppSupport = getattr(fleet.support, app)
    title = TITLES.get(app, app)
    out: list[Finding] = []
    line = line_of(support, version)
    if line is None:
        if support.lines:
            known = ", ".join(x.line for x in support.lines)
            out.append(Finding(app, version, "unlisted",
                               f"{title} {version} belongs to no release line in fleet.yaml support.{app} "
                               f"(listed: {known}); its upstream support is unknown"))
    elif line.security_until is not None and line.security_until < today:
        out.append(Finding(app, version, "unsupported",
                           f"{title} {version}: upstream security support for {line.line} ended on "
                           f"{line.security_until.isoformat()}", until=line.security_until, line=line.line))
    if not support.advisories:
        return out
    from packaging.specifiers import SpecifierSet

    parsed = _version(version)
    for adv in support.advisories:
        if parsed is not None and parsed in SpecifierSet(adv.affected):
            out.append(Finding(app, version, "vulnerable",
                               f"{title} {version} is affected by {adv.id} ({adv.severity}: {adv.summary}); "
                               f"fixed in {adv.fixed}", advisory=adv.id, fixed=adv.fixed,
                               line=line.line if line else None, severity=adv.severity, affected=adv.affected))
    return out


def os_version(school: EffectiveSchool) -> tuple[str, str]:
    """The OS a school's server is configured to run, as (support table key, version)."""
    name, _, version = school.server.os.partition("-")
    return name, version


def school_findings(school: EffectiveSchool, today: date) -> list[Finding]:
    """Every finding for the releases a school is configured to run (its apps and its OS)."""
    out: list[Finding] = []
    for app, version in sorted(school.versions.items()):
        if school.has(app) and hasattr(school.fleet.support, app):
            out += findings(school.fleet, app, version, today)
    os_name, os_release = os_version(school)
    if hasattr(school.fleet.support, os_name):
        out += findings(school.fleet, os_name, os_release, today)
    return out


def acceptance(fleet: Fleet, control: str, school_id: str, today: date) -> Acceptance | None:
    """The accepted risk covering `control` on `school_id` today, if any (a school's own entry
    before a `*` one; an entry past its `until` covers nothing)."""
    live = [a for a in fleet.accept if a.control == control and a.school in (school_id, "*") and a.until >= today]
    live.sort(key=lambda a: a.school == "*")
    return live[0] if live else None


def expired(fleet: Fleet, today: date) -> list[Acceptance]:
    """Accepted risks whose date has passed (their controls fail again)."""
    return [a for a in fleet.accept if a.until < today]


def accepted_as_json(a: Acceptance | None) -> dict[str, str] | None:
    """An accepted risk as the reports show it: {"reason", "by", "until"} (None: not accepted)."""
    return None if a is None else {"reason": a.reason, "by": a.accepted_by, "until": a.until.isoformat()}


def accepted_text(a: Acceptance) -> str:
    """`accepted until 2027-01-31 by ana: reason`, the one-line form of an accepted risk."""
    return f"accepted until {a.until.isoformat()} by {a.accepted_by}: {a.reason}"


def reviewed(school: EffectiveSchool, on: date) -> list[tuple[Finding, Acceptance | None]]:
    """The school's findings (its configured releases), each with the accepted risk covering the
    control that would fail on the server (None: not accepted)."""
    return [(f, acceptance(school.fleet, f.control, school.id, on)) for f in school_findings(school, on)]


def concerns(a: Acceptance, school_ids: Iterable[str] | None) -> bool:
    """Whether an accepted risk concerns any of `school_ids` (None: every school)."""
    return school_ids is None or a.school == "*" or a.school in set(school_ids)


def accept_problems(fleet: Fleet, controls: Iterable[str], schools: Iterable[str]) \
        -> list[tuple[int, str, str, str]]:
    """`accept:` entries naming a control the audit does not have, or a school not in the folder
    (other than `*`): (index, key, message, hint) each, for the caller to place in the file."""
    controls, schools = sorted(controls), sorted(schools)
    out: list[tuple[int, str, str, str]] = []
    for i, a in enumerate(fleet.accept):
        if a.control not in controls:
            close = difflib.get_close_matches(a.control, controls, n=1, cutoff=0.6)
            out.append((i, "control", f"accept[{i}].control: no audit control {a.control!r}",
                        f"did you mean '{close[0]}'?" if close else
                        "use a control id as `schoolctl audit` reports it, e.g. ETHERPAD-NO-KNOWN-VULNERABILITY"))
        if a.school != "*" and a.school not in schools:
            close = difflib.get_close_matches(a.school, schools, n=1, cutoff=0.6)
            out.append((i, "school", f"accept[{i}].school: no school {a.school!r} in the folder",
                        f"did you mean '{close[0]}'?" if close else
                        f"known schools: {few(schools)}; or * for every school"))
    return out
