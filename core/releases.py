"""What the fleet's support table says of a version: past upstream's security support, in a known
vulnerable range, or not in the table at all. One judgement, used by `validate` and `plan` (on the
configured versions) and by the audit's release controls (on the versions found running), and the
accepted risks (`accept:`) that turn a failing control into `accepted` until their date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from schoolctl.config.model import Acceptance, AppSupport, EffectiveSchool, Fleet, ReleaseLine

Kind = Literal["unsupported", "vulnerable", "unlisted"]
TITLES = {"moodle": "Moodle", "nextcloud": "Nextcloud", "etherpad": "Etherpad", "debian": "Debian"}


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
                           f"{line.security_until.isoformat()}", until=line.security_until))
    parsed = _version(version)
    for adv in support.advisories:
        if parsed is not None and parsed in SpecifierSet(adv.affected):
            out.append(Finding(app, version, "vulnerable",
                               f"{title} {version} is affected by {adv.id} ({adv.severity}: {adv.summary}); "
                               f"fixed in {adv.fixed}", advisory=adv.id, fixed=adv.fixed))
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
