"""The data model of schoolctl, in one place: the fleet file, a school file, and the effective
configuration of one school (fleet defaults and floors merged with the school's own settings).

Field descriptions double as the config reference: `schoolctl schema` publishes them as JSON Schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from schoolctl.config.values import (
    ADDRESS,
    COMPONENT,
    SECRET_NAME,
    SUITE,
    Host,
    Ip,
    PathText,
    SshKey,
    Text,
    check_base_dn,
    check_email,
    check_file_template,
    check_mirror,
    check_proxy,
    check_timezone,
    check_url_template,
    domain_length,
    host_port,
    host_problem,
    in_tls_folder,
    pattern_check,
    shown_folder,
    shown_value,
    tls_folder,
    url_check,
    value_error,
)
from schoolctl.errors import SecretError

SCHOOL_ID = r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$"
DOMAIN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
LOGIN = r"^[a-z_][a-z0-9_-]{0,31}$"
VERSION = r"^\d+\.\d+(\.\d+)?$"


@dataclass(frozen=True)
class ServiceInfo:
    """What the rest of schoolctl needs to know of a service, in one table (SERVICE_TABLE)."""

    name: str
    title: str                  # as people call it (landing page, reports)
    host: str | None = None     # its name under the school's domain (moodle.<domain>); None: not a site of its own
    database: bool = False      # has its own PostgreSQL database and role
    php: bool = False           # runs in its own PHP-FPM pool
    release: bool = False       # a pinned upstream release (fleet artifacts, `versions:`)


# Each web service has its own name under the school's domain (own origin: cookies and scripts of
# one app cannot reach another's); the landing page is the school's domain itself.
SERVICE_TABLE = (
    ServiceInfo("moodle", "Moodle", host="moodle", database=True, php=True, release=True),
    ServiceInfo("nextcloud", "Nextcloud", host="cloud", database=True, php=True, release=True),
    ServiceInfo("etherpad", "Etherpad", host="pad", database=True, release=True),
    ServiceInfo("jitsi", "Jitsi Meet", host="meet"),
    ServiceInfo("bigbluebutton", "BigBlueButton"),
)
SERVICES = tuple(s.name for s in SERVICE_TABLE)
SERVICE_HOSTS = {s.name: s.host for s in SERVICE_TABLE if s.host}
DB_SERVICES = tuple(s.name for s in SERVICE_TABLE if s.database)
PHP_SERVICES = tuple(s.name for s in SERVICE_TABLE if s.php)
RELEASE_SERVICES = tuple(s.name for s in SERVICE_TABLE if s.release)
SERVICE_TITLES = {s.name: s.title for s in SERVICE_TABLE}
LANGUAGES = ("ca", "es", "en")
SHA256 = r"^[0-9a-f]{64}$"


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, defer_build=True)


# --- privacy: the fleet sets floors, a school may only be stricter ------------------------------

def stricter(direction: str, *order: str) -> dict[str, Any]:
    """Field metadata saying which way is stricter: 'lower', 'false', 'true' or an explicit order."""
    return {"stricter": direction, "order": list(order)}


class Privacy(Strict):
    """The privacy policy. In fleet.yaml these values are the floors every school inherits; a school
    may set any of them again, but only to a stricter value."""

    log_retention_days: Annotated[int, Field(
        ge=1, le=365, json_schema_extra=stricter("lower"),
        description="Days system, web and application logs are kept (journald, logrotate, Moodle logs).")] = 14
    access_log: Annotated[Literal["off", "anonymised", "full"], Field(
        json_schema_extra=stricter("order", "off", "anonymised", "full"),
        description="nginx access logs: off, anonymised (client address truncated) or full.")] = "anonymised"
    outbound: Annotated[Literal["deny", "allow"], Field(
        json_schema_extra=stricter("order", "deny", "allow"),
        description="Outbound traffic from the school server: deny all but the allow-list "
                    "(city proxy, mirror, ACME, DNS, NTP), or allow.")] = "deny"
    recordings: Annotated[bool, Field(
        json_schema_extra=stricter("false"),
        description="Whether video classes may be recorded (BigBlueButton, Jitsi).")] = False
    recording_retention_days: Annotated[int, Field(
        ge=1, le=365, json_schema_extra=stricter("lower"),
        description="Days a recording is kept before automatic deletion.")] = 7
    guests: Annotated[bool, Field(
        json_schema_extra=stricter("false"),
        description="Whether people without a school account may join a video room opened by a teacher.")] = False
    lobby: Annotated[bool, Field(
        json_schema_extra=stricter("true"),
        description="Guests wait in a lobby until a moderator lets them in.")] = True
    learning_dashboard_retention_days: Annotated[int, Field(
        ge=0, le=365, json_schema_extra=stricter("lower"),
        description="Days BigBlueButton's learning dashboard data is kept (0 = dashboard off).")] = 0
    leaver_grace_days: Annotated[int, Field(
        ge=0, le=365, json_schema_extra=stricter("lower"),
        description="Days a person missing from the roster stays suspended before all their "
                    "accounts and personal data are deleted (GDPR Art. 17).")] = 30
    require_login: Annotated[bool, Field(
        json_schema_extra=stricter("true"),
        description="Pages of Moodle and Nextcloud are only shown to logged-in users.")] = True
    search_indexing: Annotated[bool, Field(
        json_schema_extra=stricter("false"),
        description="Whether search engines may index the school's sites.")] = False
    data_retention_days: Annotated[int, Field(
        ge=30, le=3650, json_schema_extra=stricter("lower"),
        description="Moodle data privacy: days after a course ends before its users' data is "
                    "eligible for deletion (tool_dataprivacy retention).")] = 365


def _optional(annotation: Any, metadata: list[Any]) -> Any:
    """`annotation | None`, keeping the field's constraints (ge, le, ...)."""
    return (Annotated[(annotation, *metadata)] if metadata else annotation) | None


PrivacyOverride = create_model(
    "PrivacyOverride",
    __base__=Strict,
    __doc__="A school's own privacy settings: each optional (absent = the fleet's), each only ever stricter.",
    **{
        name: (_optional(info.annotation, info.metadata),
               Field(default=None, description=info.description, json_schema_extra=info.json_schema_extra))
        for name, info in Privacy.model_fields.items()
    },
)


def is_laxer(field: str, value: Any, floor: Any) -> bool:
    """True when a school's `value` for privacy `field` is laxer than the fleet's `floor`."""
    extra = Privacy.model_fields[field].json_schema_extra or {}
    direction = extra["stricter"]  # type: ignore[index]
    if direction == "lower":
        return value > floor
    if direction == "false":
        return bool(value) and not floor
    if direction == "true":
        return not value and bool(floor)
    order: list[str] = extra["order"]  # type: ignore[index,assignment]
    return order.index(value) > order.index(floor)


# --- the fleet -------------------------------------------------------------------------------

class Admin(Strict):
    """A technician who may log in on the school servers (as the admin user, with these keys)."""

    name: Annotated[str, Field(pattern=LOGIN, description="Login name.")]
    ssh_keys: Annotated[list[SshKey], Field(
        min_length=1, description="OpenSSH public keys, one line each.")]


class Tls(Strict):
    """How each school's web server gets its certificate."""

    mode: Annotated[Literal["acme", "provided", "internal"], Field(
        description="acme: Let's Encrypt (or any ACME directory); provided: certificate files "
                    "named per school; internal: issued by the city's own CA.")] = "acme"
    acme_directory: Annotated[str, Field(pattern=r"^https://", json_schema_extra={"format": "uri"}),
                              url_check("https", example="https://acme-v02.api.letsencrypt.org/directory")] = \
        "https://acme-v02.api.letsencrypt.org/directory"
    acme_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", json_schema_extra={"format": "email"}),
                          AfterValidator(check_email)] | None = None
    ca_file: Annotated[PathText | None, Field(description="internal mode: the city CA certificate (PEM).")] = None
    ca_key_file: Annotated[PathText | None, Field(description="internal mode: the city CA key (PEM).")] = None

    @model_validator(mode="after")
    def _internal_has_its_ca(self) -> Tls:
        """`internal` issues every school's certificate from the city's CA: both its files are needed,
        and must be files on this machine (a deploy reads them when it renders). Refused here, at the
        `mode:` line (a key missing) or the key's own line (no such file), not when a deploy renders."""
        from pathlib import Path

        if self.mode != "internal":
            return self
        examples = {"ca_file": "`ca_file: /path/ca.pem` (its PEM certificate)",
                    "ca_key_file": "`ca_key_file: /path/ca.key` (its PEM key)"}
        missing = [key for key in examples if not getattr(self, key)]
        if missing:
            raise ValidationError.from_exception_data("Tls", [InitErrorDetails(type=value_error(
                f"'internal' issues the schools' certificates from the city's CA, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set (add {' and '.join(examples[k] for k in missing)} "
                "under `tls:`, or use mode acme or provided)"), loc=("mode",), input=self.mode)])
        absent = []
        for key in examples:
            value = getattr(self, key)
            try:
                found = Path(value).is_file()
            except OSError:
                found = False
            if not found:
                absent.append(InitErrorDetails(type=value_error(
                    f"{shown_value(value)} is not a file on this machine (the city CA's "
                    f"{'certificate' if key == 'ca_file' else 'key'}, PEM, read when a deploy renders; a "
                    "relative path is taken from the folder schoolctl runs in)"), loc=(key,), input=value))
        if absent:
            raise ValidationError.from_exception_data("Tls", absent)
        return self


class Artifact(Strict):
    """One upstream download: the default version, where upstream publishes it, and the sha256 of
    each version the city has pinned (taken from upstream)."""

    version: Annotated[str, Field(pattern=VERSION, description="Default version.")]
    url: Annotated[str, Field(pattern=r"^https?://", description="Upstream URL (http or https, no user or "
                              "password); {version}, {file} and {branch} (5.0 -> 500) are filled in."),
                   AfterValidator(check_url_template)]
    file: Annotated[str, Field(description="Upstream file name, a plain name (letters, digits, '.', '_', '+', '-'); "
                               "{version} is filled in."), AfterValidator(check_file_template)]
    files: Annotated[dict[str, Annotated[str, AfterValidator(check_file_template)]], Field(
        description="version -> upstream file name, where a version's name differs from `file` (e.g. "
                    "Etherpad 2.x was etherpad-lite-<version>.tar.gz).",
        json_schema_extra={"propertyNames": {"pattern": VERSION}})] = {}
    urls: Annotated[dict[str, Annotated[str, AfterValidator(check_url_template)]], Field(
        description="version -> upstream URL, where a version's differs from `url`.",
        json_schema_extra={"propertyNames": {"pattern": VERSION}})] = {}
    sha256: Annotated[dict[str, Annotated[str, Field(pattern=SHA256)]], Field(
        description="version -> sha256 pinned from upstream.",
        json_schema_extra={"propertyNames": {"pattern": VERSION}})] = {}

    @field_validator("sha256", "files", "urls")
    @classmethod
    def _pinned_versions(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.fullmatch(VERSION, k)]
        if bad:  # each at its own line: the key's value in the file
            raise ValidationError.from_exception_data("sha256", [InitErrorDetails(
                type=value_error(f"the pinned version {shown_value(k)} is not valid "
                                 "(expected a version such as 5.0.6)"),
                loc=(k,), input=k) for k in bad])
        return v

    def file_name(self, version: str) -> str:
        return self.files.get(version, self.file).format(version=version)

    def url_for(self, version: str) -> str:
        major, minor = (int(x) for x in version.split(".")[:2])
        return self.urls.get(version, self.url).format(version=version, file=self.file_name(version),
                                                       branch=f"{major}{minor:02d}")


class AptRepo(Strict):
    """An upstream apt repository with its signing key pinned by fingerprint."""

    url: Annotated[str, Field(pattern=r"^https?://", json_schema_extra={"format": "uri"}),
                   url_check("https", "http", example="https://download.jitsi.org")]
    suite: Annotated[str, pattern_check(SUITE, "letters, digits, '.', '_', '-' and '/'", "stable/ or noble-400")]
    components: list[Annotated[str, pattern_check(COMPONENT, "letters, digits, '.', '_' and '-'", "main")]] = ["main"]
    key_url: Annotated[str, Field(pattern=r"^https?://", json_schema_extra={"format": "uri"}),
                       url_check("https", "http", example="https://download.jitsi.org/jitsi-key.gpg.key")]
    fingerprint: Annotated[str, Field(pattern=r"^[0-9A-F]{40}$")]


LANGPACK_KEY = r"^\d+\.\d+/(ca|es|en)$"


class Langpacks(Strict):
    """Moodle's language packs, `langpack/<branch>/<lang>.zip` as download.moodle.org names them. They
    come from the mirror only: upstream rebuilds a pack whenever its strings change, under the same
    name, so an upstream pin would break at once; the city keeps reviewed copies in its mirror."""

    sha256: Annotated[dict[str, Annotated[str, Field(pattern=SHA256)]], Field(
        description="'<branch>/<lang>' (e.g. 4.5/ca) -> sha256 the mirror's copy must have.")] = {}

    @field_validator("sha256")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.fullmatch(LANGPACK_KEY, k)]
        if bad:
            raise ValidationError.from_exception_data("sha256", [InitErrorDetails(
                type=value_error(f"the language pack {shown_value(k)} is not valid (expected <branch>/<lang>, "
                                 "e.g. 4.5/ca)"), loc=(k,), input=k) for k in bad])
        return v


class Artifacts(Strict):
    moodle: Artifact
    nextcloud: Artifact
    etherpad: Artifact
    node: Annotated[Artifact | None, Field(
        description="Node.js for Etherpad 3.x (needs Node >= 24; Debian 13 has 20.19): the linux-x64 .tar.xz, "
                    "pinned from upstream's signed SHASUMS256.txt.")] = None
    langpacks: Annotated[Langpacks, Field(description="Moodle's language packs (from the mirror).")] = Langpacks()


class Debian(Strict):
    """The Debian archive every school server installs from: the release, its -updates suite (from
    `mirror`) and its -security suite (from `security`), signed by Debian's archive keyring."""

    mirror: Annotated[str, Field(pattern=r"^https?://", json_schema_extra={"format": "uri"}),
                      url_check("http", "https", example="http://debian.city.example/debian")]
    security: Annotated[str, Field(pattern=r"^https?://", json_schema_extra={"format": "uri"}),
                        url_check("http", "https", example="http://debian.city.example/debian-security")]


class Updates(Strict):
    """How fast security updates must arrive (the audit's HOST-* update controls)."""

    index_max_age_days: Annotated[int, Field(ge=1, le=30, description=(
        "The security suite's index must have been refreshed within this many days."))] = 2
    security_within_days: Annotated[int, Field(ge=0, le=60, description=(
        "A security update still pending this many days after it was first seen fails the audit."))] = 3
    reboot_within_days: Annotated[int, Field(ge=0, le=90, description=(
        "A reboot-required flag older than this many days fails the audit."))] = 7


RELEASE_LINE = r"^\d+(\.\d+)?$"
ADVISORY_ID = r"^[A-Za-z][A-Za-z0-9._:-]{1,63}$"
CONTROL_ID = r"^[A-Z][A-Z0-9-]{1,63}$"
ACCEPT_SCHOOL = r"^(\*|[a-z0-9][a-z0-9-]{0,38}[a-z0-9])$"


def check_specifier(value: str) -> str:
    """A version range in PEP 440's specifier syntax (`<3.3.3`, `>=2.0,<3.3.3`)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{shown_value(value)} is not a version range (write e.g. '<3.3.3' or "
                         "'>=5.0,<5.0.7')") from None
    return value


class ReleaseLine(Strict):
    """One release line of an application and the day upstream's security support ends."""

    line: Annotated[str, Field(pattern=RELEASE_LINE, description="5.0 (Moodle), 34 (Nextcloud), 13 (Debian).")]
    security_until: Annotated[date | None, Field(description=(
        "Last day of upstream security support (null: supported, no end announced)."))] = None
    source: Annotated[Text | None, Field(description="Where the date comes from (a URL or a document).")] = None


class Advisory(Strict):
    """A known vulnerability: the versions it affects and the first fixed one."""

    id: Annotated[str, Field(pattern=ADVISORY_ID, description="CVE-2026-114516, MSA-26-0001, GHSA-...")]
    affected: Annotated[str, Field(description="Affected versions, e.g. '<3.3.3' or '>=5.0,<5.0.7'."),
                        AfterValidator(check_specifier)]
    fixed: Annotated[str, Field(pattern=VERSION, description="The first version with the fix.")]
    severity: Literal["low", "moderate", "high", "critical"] = "high"
    summary: Text


class AppSupport(Strict):
    lines: list[ReleaseLine] = []
    advisories: list[Advisory] = []


class Support(Strict):
    """Upstream's support calendar and known advisories, per application and for the OS: what
    `validate`, `plan` and the audit's release controls judge versions by. Kept by the city."""

    moodle: AppSupport = AppSupport()
    nextcloud: AppSupport = AppSupport()
    etherpad: AppSupport = AppSupport()
    debian: AppSupport = AppSupport()


class Acceptance(Strict):
    """An accepted risk: a failing control reported as `accepted` (evidence kept) until a date."""

    control: Annotated[str, Field(pattern=CONTROL_ID, description="The control id, e.g. "
                                                                                  "ETHERPAD-NO-KNOWN-VULNERABILITY.")]
    school: Annotated[str, Field(pattern=ACCEPT_SCHOOL,
                                 description="A school id, or * for every school.")]
    reason: Text
    accepted_by: Text
    until: Annotated[date, Field(description="The last day it is accepted; after it the control fails again.")]


class Retention(Strict):
    """How many archives of a school the backup host keeps (borg prune): the newest of each of
    `daily` days, `weekly` weeks and `monthly` months. borg's rules add up: each one counts only
    periods whose newest archive no earlier rule kept, so the weekly archives reach beyond the daily
    ones and the monthly beyond both (span_days). Backups hold personal data: a leaver deleted from
    the apps stays in older archives until they age out, so the span is bounded by the privacy
    policy's data_retention_days (config/loader.py: _backup)."""

    daily: Annotated[int, Field(ge=1, le=90, description="Daily archives kept.")] = 7
    weekly: Annotated[int, Field(ge=0, le=104, description="Weekly archives kept.")] = 4
    monthly: Annotated[int, Field(ge=0, le=60, description="Monthly archives kept.")] = 6

    @property
    def span_days(self) -> int:
        """How far back the oldest kept archive may reach, in days: the rules' reaches added up
        (daily + 7 x weekly + 31 x monthly), not the longest of them, because a week or month whose
        newest archive the daily (or weekly) rule kept is not counted by the next rule."""
        return self.daily + 7 * self.weekly + 31 * self.monthly


RetentionOverride = create_model(
    "RetentionOverride", __base__=Strict,
    __doc__="A school's own retention: each optional (absent = the fleet's), each only ever lower.",
    **{name: (_optional(info.annotation, info.metadata), Field(default=None, description=info.description))
       for name, info in Retention.model_fields.items()},
)


class AptRepos(Strict):
    """Upstream apt repositories. null: the city ships these packages another way (its own apt
    mirror); in the lab, where they are unreachable, only the Debian-side parts are deployed."""

    jitsi: AptRepo | None = None
    bigbluebutton: AptRepo | None = None


class BbbPool(Strict):
    """A city-wide BigBlueButton endpoint (e.g. Scalelite in front of several BBB servers)."""

    url: Annotated[str, Field(pattern=r"^https://.+/bigbluebutton/$", json_schema_extra={"format": "uri"},
                              description="API base, e.g. https://bbb.city.example/bigbluebutton/"),
                   url_check("https", example="https://bbb.city.example/bigbluebutton/")]
    secret_name: Annotated[str, Field(description="Name of the shared secret in the fleet vault."),
                           pattern_check(SECRET_NAME, "lowercase letters, digits, '_' and '-'", "bbb_pool")] = \
        "bbb_pool"


class Identity(Strict):
    """The schools' directory: one OpenLDAP per school server, under this base."""

    base_dn: Annotated[str, Field(description="Per-school suffix is dc=<school id>,<base_dn>: attr=value parts "
                                              "(dc, o, ou, c, l, st) of letters, digits, spaces, '.', '_', '-'."),
                       AfterValidator(check_base_dn)] = "dc=schools"


class Fleet(Strict):
    """schools/fleet.yaml: the city's settings shared by every school."""

    city: Text
    domain: Annotated[str, Field(pattern=DOMAIN, description="A school's default domain is <id>.<domain>.",
                                 json_schema_extra={"format": "hostname", "maxLength": 200}), domain_length(200)]
    timezone: Annotated[str, Field(description="A time zone of the zoneinfo database.",
                                   json_schema_extra={"examples": ["Europe/Madrid"]}),
                        AfterValidator(check_timezone)] = "Europe/Madrid"
    languages: Annotated[list[Literal["ca", "es", "en"]], Field(min_length=1)] = ["ca", "es", "en"]
    admins: Annotated[list[Admin], Field(min_length=1, description="Technicians on every school server.")]
    tls: Tls = Tls()
    mirror: Annotated[Annotated[str, AfterValidator(check_mirror)] | None, Field(
        description="Folder (an absolute path) or http(s) URL with upstream-named files and SHA256SUMS; "
                    "overridden by SCHOOLCTL_MIRROR.")] = None
    proxy: Annotated[Annotated[str, Field(pattern=r"^https?://", json_schema_extra={"format": "uri"}),
                               AfterValidator(check_proxy)] | None, Field(
        description="City HTTP proxy for apt, npm and downloads, e.g. http://proxy.example.org:3128 (no user or "
                    "password).")] = None
    dns: Annotated[list[Ip], Field(description="Resolvers (IP addresses) the servers may query.")] = []
    ntp: Annotated[list[Host], Field(description="NTP servers (host names or IP addresses) the servers may "
                                                 "reach.")] = []
    identity: Identity = Identity()
    debian: Annotated[Debian | None, Field(description="The Debian archive of the servers (required for a "
                                                         "real server; the lab uses the build machine's).")] = None
    updates: Updates = Updates()
    artifacts: Artifacts
    apt_repos: AptRepos
    bbb_pool: BbbPool | None = None
    privacy: Privacy = Privacy()
    support: Support = Support()
    accept: Annotated[list[Acceptance], Field(description="Accepted risks, each with an expiry.")] = []
    backup: Annotated[Backup | None, Field(description="The city's backup host (BorgBackup): every school's "
                                                       "nightly archive goes there.")] = None


# --- a school --------------------------------------------------------------------------------

class Server(Strict):
    """Where a school's services run: an SSH-reachable Debian 13 server, or `lab:NAME`."""

    # the pattern is for editors (the JSON Schema); the validator below checks more, with better messages
    address: Annotated[str, Field(json_schema_extra={"pattern": ADDRESS},
                                  description="Host name or IP address (no port: that is ssh_port), or lab:NAME "
                                              "for a lab host.")]
    ssh_user: Annotated[str, Field(pattern=LOGIN, description="A unix user name.")] = "root"
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    os: Annotated[Literal["debian-13", "ubuntu-24.04"], Field(description="The server's OS.")] = "debian-13"

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v.startswith("lab:"):
            if not re.match(r"^lab:(?=.{1,20}$)[a-z](-?[a-z0-9])*$", v):
                raise ValueError("a lab host is lab:NAME with NAME of lowercase letters, digits and '-'")
        else:
            problem = host_problem(v)
            if problem == "port":
                address, port = host_port(v)
                raise ValueError(f"{shown_value(v)} is not valid: a port does not belong in the address (write the "
                                 f"address alone and the port as ssh_port: `server: {{address: {address}, "
                                 f"ssh_port: {port or 22}}}`)")
            if problem:
                raise ValueError(f"{shown_value(v)} is not valid: {problem} (expected a host name, an IP address, "
                                 "or lab:NAME)")
        return v

    @property
    def lab_name(self) -> str | None:
        return self.address[4:] if self.address.startswith("lab:") else None


def _server(v: Any) -> Any:
    return {"address": v} if isinstance(v, str) else v


# what `_server` accepts, for the JSON Schema (editors): the mapping, or its address alone
SERVER_INPUT = Server | Annotated[str, Field(pattern=ADDRESS, description="The address alone: a host name, an "
                                                                         "IP address or lab:NAME.")]


class Backup(Strict):
    """The city's backup host: one BorgBackup repository per school, pushed to over SSH by the
    school's own key (append-only, restricted to its repository), pruned from the controller."""

    host: Annotated[Server, Field(description="The backup host: address (or lab:NAME), or a mapping with "
                                              "address/ssh_user/ssh_port (the account schoolctl administers it "
                                              "with).")]
    user: Annotated[str, Field(pattern=LOGIN, description="The account on the backup host the schools push "
                                                          "to (each school's key may only run borg serve).")] = "borg"
    path: Annotated[str, Field(pattern=r"^(/[a-z0-9_][a-z0-9_.-]*)+$", description="Folder of the "
                               "repositories on the backup host (one per school: <path>/<id>).")] = \
        "/srv/schoolctl-backups"
    at: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="Daily start time (the "
                             "server's local time, HH:MM).")] = "02:30"
    randomized_delay_minutes: Annotated[int, Field(ge=0, le=180, description="Each server starts up to this "
                                                   "many minutes later (spreads the fleet's load).")] = 60
    max_age_hours: Annotated[int, Field(ge=24, le=336, description="The audit fails a school whose last "
                                        "good archive is older than this.")] = 27
    drill_max_age_days: Annotated[int, Field(ge=1, le=365, description="The audit fails a school whose last "
                                             "passed restore drill is older than this.")] = 31
    retention: Retention = Retention()

    _host = field_validator("host", mode="before", json_schema_input_type=SERVER_INPUT)(lambda cls, v: _server(v))

    @model_validator(mode="after")
    def _schedule_fits(self) -> Backup:
        if self.max_age_hours * 60 < 24 * 60 + self.randomized_delay_minutes:
            raise ValueError(f"max_age_hours {self.max_age_hours} is shorter than a day plus the randomized "
                             f"delay ({self.randomized_delay_minutes} min): every night's archive would look late "
                             f"(use at least {24 + -(-self.randomized_delay_minutes // 60)})")
        return self


class SchoolBackup(Strict):
    """A school's own backup settings: it may keep fewer archives than the fleet, never more."""

    retention: RetentionOverride = RetentionOverride()  # type: ignore[valid-type]


class Service(Strict):
    """Options common to every service. A service is on when its key is present (`moodle: {}` or
    `moodle: true`), off when absent or `false`."""

    version: Annotated[str | None, Field(pattern=VERSION, description="Override the fleet's default version.")] = None


class Moodle(Service):
    max_upload_mb: Annotated[int, Field(ge=1, le=2048)] = 100


class Nextcloud(Service):
    default_quota: Annotated[str, Field(pattern=r"^\d+ ?(MB|GB|TB)$", description="e.g. '5 GB'.")] = "5 GB"


class Etherpad(Service):
    pass


class Jitsi(Service):
    jvb_port: Annotated[int, Field(ge=1024, le=65535, description="Videobridge UDP port.")] = 10000
    turn_port: Annotated[int, Field(ge=1, le=65535, description="coturn listening port.")] = 3478


class BigBlueButton(Service):
    """BigBlueButton runs on its own Ubuntu 24.04 host (upstream requires it), or on the city pool."""

    server: Annotated[Server | None, Field(description="The school's own BBB host.")] = None
    pool: Annotated[bool, Field(description="Use the fleet's bbb_pool instead of an own server.")] = False
    cores: Annotated[int, Field(ge=1, description="CPU cores of the BBB host (upstream wants 4 or more).")] = 8

    _srv = field_validator("server", mode="before", json_schema_input_type=SERVER_INPUT)(lambda cls, v: _server(v))

    @model_validator(mode="after")
    def _where(self) -> BigBlueButton:
        if self.pool == (self.server is not None):
            raise ValueError("say where BigBlueButton runs: either `server:` (an Ubuntu 24.04 host) "
                             "or `pool: true` (the city's BBB pool), not both and not neither")
        return self


def _on_off(v: Any) -> Any:
    if v is True:
        return {}
    if v is False:
        return None
    return v


class Services(Strict):
    moodle: Moodle | None = None
    nextcloud: Nextcloud | None = None
    etherpad: Etherpad | None = None
    jitsi: Jitsi | None = None
    bigbluebutton: BigBlueButton | None = None

    # `moodle: true` / `moodle: false` as well as the options (the JSON Schema says so, for editors)
    _on_moodle = field_validator("moodle", mode="before", json_schema_input_type=Moodle | bool | None)(
        lambda cls, v: _on_off(v))
    _on_nextcloud = field_validator("nextcloud", mode="before", json_schema_input_type=Nextcloud | bool | None)(
        lambda cls, v: _on_off(v))
    _on_etherpad = field_validator("etherpad", mode="before", json_schema_input_type=Etherpad | bool | None)(
        lambda cls, v: _on_off(v))
    _on_jitsi = field_validator("jitsi", mode="before", json_schema_input_type=Jitsi | bool | None)(
        lambda cls, v: _on_off(v))
    _on_bigbluebutton = field_validator("bigbluebutton", mode="before",
                                        json_schema_input_type=BigBlueButton | bool | None)(lambda cls, v: _on_off(v))

    def enabled(self) -> list[str]:
        return [s for s in SERVICES if getattr(self, s) is not None]


class Contact(Strict):
    name: Text
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", json_schema_extra={"format": "email"}),
                     AfterValidator(check_email)]


class Contacts(Strict):
    dpo: Annotated[Contact, Field(description="Data protection officer (shown in Moodle's privacy page).")]
    technician: Contact | None = None


class SchoolTls(Strict):
    """The school's own certificate files on the controller (fleet tls.mode: provided)."""

    cert_file: Annotated[PathText, Field(description="PEM certificate chain covering the school's names: a file "
                                                     "in the school's TLS folder <secrets dir>/tls/<id>/ (a name "
                                                     "such as fullchain.pem, or an absolute path inside it).")]
    key_file: Annotated[PathText, Field(description="PEM private key, in the same folder (e.g. privkey.pem).")]


class School(Strict):
    """schools/<id>.yaml: one school."""

    id: Annotated[str, Field(pattern=SCHOOL_ID, description="Must equal the file name.")]
    name: Text
    district: Text
    domain: Annotated[Annotated[str, Field(pattern=DOMAIN, json_schema_extra={"format": "hostname", "maxLength": 240}),
                                domain_length(240)] | None, Field(description="Default <id>.<fleet domain>.")] = None
    server: Annotated[Server, Field(description="address (or lab:NAME), or a mapping with "
                                                "address/ssh_user/ssh_port.")]
    languages: list[Literal["ca", "es", "en"]] | None = None
    services: Services
    contacts: Contacts
    admins: list[Admin] = []
    tls: Annotated[SchoolTls | None, Field(description="Only with the fleet's tls.mode: provided.")] = None
    privacy: PrivacyOverride = PrivacyOverride()
    backup: SchoolBackup = SchoolBackup()

    _srv = field_validator("server", mode="before", json_schema_input_type=SERVER_INPUT)(lambda cls, v: _server(v))

    @field_validator("server")
    @classmethod
    def _debian(cls, v: Server) -> Server:
        if v.os != "debian-13":
            raise ValueError("a school server runs Debian 13 (os: debian-13); only BigBlueButton's own "
                             "host is Ubuntu 24.04")
        return v

    @field_validator("tls")
    @classmethod
    def _tls_in_own_folder(cls, v: SchoolTls | None, info: ValidationInfo) -> SchoolTls | None:
        """The school's certificate and key lie in its own TLS folder (symlinks followed): a school
        file cannot make schoolctl read, and send to a server, any other file of the controller.
        The paths are kept resolved, so what is read is what was checked."""
        school_id = info.data.get("id")
        if v is None or school_id is None:  # no valid id: that is the problem reported
            return v
        try:
            folder = tls_folder(school_id)
        except SecretError as e:
            raise ValueError(f"{e.message} ({e.hint})" if e.hint else e.message) from None
        shown, found, errors = shown_folder(folder), {}, []
        for key in ("cert_file", "key_file"):
            value = getattr(v, key)
            problem, target = in_tls_folder(value, folder)
            if problem:
                example = "fullchain.pem" if key == "cert_file" else "privkey.pem"
                errors.append(InitErrorDetails(type=value_error(
                    f"{shown_value(value)} {problem} (put the file in {shown} and write its name there, e.g. "
                    f"`{key}: {example}`)"), loc=(key,), input=value))
            found[key] = str(target)
        if errors:
            raise ValidationError.from_exception_data("SchoolTls", errors)
        return SchoolTls(**found)


# --- the effective configuration of one school -------------------------------------------------

class EffectiveSchool(BaseModel):
    """What a deploy or an audit of one school works from: the school merged with the fleet."""

    model_config = ConfigDict(frozen=True, defer_build=True)  # built when first used, from the built Fleet and School

    id: str
    name: str
    district: str
    domain: str
    server: Server
    languages: list[str]
    services: Services
    contacts: Contacts
    admins: list[Admin]
    tls: SchoolTls | None = None
    privacy: Privacy
    backup: Backup | None = None  # the fleet's, with the school's own (lower) retention
    versions: dict[str, str]
    fleet: Fleet
    source: str

    @property
    def enabled(self) -> list[str]:
        return self.services.enabled()

    def has(self, service: str) -> bool:
        return getattr(self.services, service) is not None

    @property
    def ldap_base(self) -> str:
        return f"dc={self.id},{self.fleet.identity.base_dn}"
