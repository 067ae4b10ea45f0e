"""Load schools/: validate every file against the model, check the fleet as a whole, and merge each
school with the fleet into its effective configuration. Every problem names file, line and fix."""

from __future__ import annotations

import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from schoolctl.config.model import (
    ACCEPT_SCHOOL,
    ADVISORY_ID,
    CONTROL_ID,
    DOMAIN,
    RELEASE_LINE,
    RELEASE_SERVICES,
    SCHOOL_ID,
    SHA256,
    Backup,
    EffectiveSchool,
    Fleet,
    Privacy,
    Retention,
    School,
    is_laxer,
)
from schoolctl.config.problems import Problem, few
from schoolctl.config.values import ADDRESS, SSH_KEY
from schoolctl.config.yamlfile import locate, plain, read_yaml
from schoolctl.errors import ConfigError

FLEET_FILES = ("fleet.yaml", "fleet.yml")
# the largest files read (the shipped ones have a few KiB): checked before reading, so that a huge
# file is refused at once; nesting and the number of values are bounded in schoolctl.config.yamlfile
SCHOOL_MAX_BYTES = 1024 * 1024
FLEET_MAX_BYTES = 2 * 1024 * 1024

PATTERNS = {
    r"^(/[a-z0-9_][a-z0-9_.-]*)+$": "an absolute folder path of lowercase letters, digits, '.', '_' and '-'",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$": "a time of day as HH:MM, e.g. 02:30",
    SCHOOL_ID: "lowercase letters, digits and '-' (2 to 40, not starting or ending with '-')",
    DOMAIN: "a lowercase DNS name such as school.example.org",
    ADDRESS: "a host name, an IP address or lab:NAME (no spaces, no port)",
    SSH_KEY: "one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... name@laptop'",
    SHA256: "64 lowercase hexadecimal digits",
    r"^\d+\.\d+(\.\d+)?$": "a version such as 5.0.6",
    r"^https://": "an https:// URL",
    r"^https?://": "an http:// or https:// URL",
    r"^[^@\s]+@[^@\s]+\.[^@\s]+$": "an email address such as dpd@example.org",
    r"^[^@\s]+@[^@\s]+$": "an email address such as admin@example.org",
    r"^[0-9A-F]{40}$": "a key fingerprint of 40 uppercase hexadecimal digits",
    r"^[a-z_][a-z0-9_-]{0,31}$": "a login name: lowercase letters, digits, '_' and '-', up to 32",
    r"^\d+ ?(MB|GB|TB)$": "a size such as '5 GB' (MB, GB or TB)",
    r"^https://.+/bigbluebutton/$": "an https:// URL ending in /bigbluebutton/",
    RELEASE_LINE: "a release line such as 5.0 (Moodle), 34 (Nextcloud) or 13 (Debian)",
    ADVISORY_ID: "an advisory id such as CVE-2026-114516 or GHSA-mc8w-wjhw-45x5",
    ACCEPT_SCHOOL: "a school id, or * for every school",
    CONTROL_ID: "a control id such as ETHERPAD-NO-KNOWN-VULNERABILITY (capital letters, digits and '-')",
}

TYPE_MESSAGES = {
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "dict_type": "expected a mapping of keys",
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
}


def default_schools_dir() -> Path:
    """SCHOOLCTL_SCHOOLS_DIR, or ./schools when it is unset; set but empty (or blank) is an error
    (exit 2), never the current folder."""
    value = os.environ.get("SCHOOLCTL_SCHOOLS_DIR")
    if value is None:
        return Path("schools")
    if not value.strip():
        raise ConfigError(["SCHOOLCTL_SCHOOLS_DIR is set but empty: unset it to use ./schools, or set it to "
                           "the schools folder ('.' for the current folder)"])
    return Path(value)


def shown_path(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass
class Config:
    """The whole fleet, validated: the fleet file and the effective config of every school."""

    schools_dir: Path
    fleet: Fleet
    schools: dict[str, EffectiveSchool] = field(default_factory=dict)
    fleet_doc: Any = None     # the fleet file as read (for line numbers), and its path as shown
    fleet_shown: str = ""
    school_files: list[str] = field(default_factory=list)  # the ids of every school file (valid or not)

    def select(self, ids: list[str] | None = None, all_: bool = False) -> list[EffectiveSchool]:
        """The schools named by `ids` (every school when none are named)."""
        if not ids:
            return list(self.schools.values())
        missing = [i for i in ids if i not in self.schools]
        if missing:
            raise ConfigError([unknown_school(self.schools_dir, i, list(self.schools)) for i in missing])
        return [self.schools[i] for i in ids]


def unknown_school(schools_dir: Path, school_id: str, known: list[str]) -> Problem:
    close = difflib.get_close_matches(school_id, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known schools: {few(sorted(known))}"
    return Problem(shown_path(schools_dir / f"{school_id}.yaml"), 1, 1, f"no school '{school_id}' in "
                   f"{shown_path(schools_dir)}/", hint)


# --- pydantic errors -> problems -------------------------------------------------------------

def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `X | None`, `list[X]`, `Annotated[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found:
            return found
    return None


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        inner = _model_in(info.annotation) if info else None
        if inner is None:
            return None
        model = inner
    return model


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _close(word: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def _close_nested(word: Any, model: type[BaseModel] | None) -> str:
    """'did you mean 'services.nextcloud'?' for a key that belongs one level further down."""
    nested = {sub: f"{name}.{sub}" for name, info in (model.model_fields.items() if model else [])
              if (inner := _model_in(info.annotation)) for sub in inner.model_fields}
    close = difflib.get_close_matches(str(word), list(nested), n=1, cutoff=0.6)
    return f"did you mean '{nested[close[0]]}'?" if close else ""


TAG = re.compile(r"^(function|nullable|default|union|tagged-union|json-or-python)[\w-]*\[.*\]$")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds validator/union tags such as 'function-after[...]' to locations
    return tuple(p for p in loc if not (isinstance(p, str) and TAG.match(p)))


def problems_from(err: ValidationError, doc: Any, shown: str, model: type[BaseModel]) -> list[Problem]:
    """Turn pydantic's errors into Problems pointing at the offending line."""
    out: list[Problem] = []
    for e in err.errors(include_url=False):
        loc = _clean_loc(tuple(e["loc"]))
        kind, where, value = e["type"], _dotted(loc), e.get("input")
        parent = _model_at(model, loc[:-1]) if loc else model
        if kind == "extra_forbidden":
            line, col = locate(doc, loc, on_key=True)
            allowed = sorted(parent.model_fields) if parent else []
            hint = (_close(loc[-1], allowed) or _close_nested(loc[-1], parent)
                    or f"allowed here: {', '.join(allowed)}")
            scope = f" under '{_dotted(loc[:-1])}'" if len(loc) > 1 else ""
            out.append(Problem(shown, line, col, f"unknown key {str(loc[-1])!r}{scope}", hint))
            continue
        if kind == "missing":
            line, col = locate(doc, loc[:-1])
            info = parent.model_fields.get(loc[-1]) if parent else None
            desc = f": {info.description}" if info and info.description else ""
            out.append(Problem(shown, line, col, f"missing required key '{where}'",
                               f"add `{loc[-1]}:`{desc}"))
            continue
        line, col = locate(doc, loc)
        if kind == "string_pattern_mismatch":
            pattern = (e.get("ctx") or {}).get("pattern", "")
            msg, hint = f"{value!r} is not valid", f"expected {PATTERNS.get(pattern, 'text matching ' + pattern)}"
        elif kind == "literal_error":
            expected = (e.get("ctx") or {}).get("expected", "")
            choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",") if c.strip(" '")]
            msg = f"{value!r} is not one of: {', '.join(choices)}"
            hint = _close(value, choices) or f"use one of: {', '.join(choices)}"
        elif kind.startswith(("date_", "datetime_")):  # pydantic's own words name its parser, not the fix
            msg, hint = f"expected a date, got {value!r}", "write it as YYYY-MM-DD, e.g. 2027-03-31"
        elif kind in TYPE_MESSAGES:
            msg, hint = f"{TYPE_MESSAGES[kind]}, got {value!r}", ""
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            ctx = e.get("ctx") or {}
            bound = next(iter(ctx.values()), "")
            word = {"greater_than_equal": "at least", "less_than_equal": "at most",
                    "greater_than": "more than", "less_than": "less than"}[kind]
            msg, hint = f"{value!r} is out of range", f"it must be {word} {bound}"
        elif kind == "too_short":
            msg, hint = "needs at least one entry", ""
        elif kind == "value_error":
            msg, hint = str(e["msg"]).removeprefix("Value error, "), ""
        else:
            msg, hint = str(e["msg"]), ""
        out.append(Problem(shown, line, col, f"{where}: {msg}" if where else msg, hint))
    return out


def _validate(model: type[BaseModel], path: Path) -> tuple[Any, Any, str, list[Problem]]:
    """Read and validate one file: (model instance or None, document, shown path, problems)."""
    shown = shown_path(path)
    fleet = model is Fleet
    doc, problems = read_yaml(path, shown, FLEET_MAX_BYTES if fleet else SCHOOL_MAX_BYTES,
                              "the fleet file" if fleet else "a school file")
    if problems:
        return None, doc, shown, problems
    if doc is None:
        return None, doc, shown, [Problem(shown, 1, 1, "the file is empty",
                                          "start from `schoolctl new ID`" if model is School
                                          else "see README.md for the fleet file")]
    if not isinstance(doc, dict):
        kind = type(plain(doc)).__name__  # list, str, int...: not the reader's Sequence
        return None, doc, shown, [Problem(shown, 1, 1, f"expected a mapping of keys, found a {kind}",
                                          "a config file is `key: value` lines")]
    try:
        return model.model_validate(plain(doc)), doc, shown, []
    except ValidationError as err:
        return None, doc, shown, problems_from(err, doc, shown, model)


# --- the fleet as a whole --------------------------------------------------------------------

def effective(school: School, fleet: Fleet, shown: str) -> EffectiveSchool:
    """Merge a school with the fleet: defaults filled in, privacy floors applied."""
    override = {k: v for k, v in school.privacy.model_dump().items() if v is not None}
    services = school.services
    versions = {
        name: (getattr(services, name).version if getattr(services, name) else None)
        or getattr(fleet.artifacts, name).version
        for name in RELEASE_SERVICES
    }
    return EffectiveSchool(
        id=school.id, name=school.name, district=school.district,
        domain=school.domain or f"{school.id}.{fleet.domain}",
        server=school.server, languages=list(school.languages or fleet.languages),
        services=services, contacts=school.contacts, admins=[*fleet.admins, *school.admins], tls=school.tls,
        privacy=Privacy(**{**fleet.privacy.model_dump(), **override}),
        backup=_backup(school, fleet),
        versions=versions, fleet=fleet, source=shown,
    )


def _backup(school: School, fleet: Fleet) -> Backup | None:
    """The fleet's backup settings with the school's own retention (each count only ever lower),
    cut to what fits in the school's privacy.data_retention_days. borg's prune rules add up (the
    weekly archives reach beyond the daily ones, the monthly beyond both), so what must fit is
    Retention.span_days, daily + 7 x weekly + 31 x monthly days. The monthly count is cut first, then
    the weekly, then the daily: the newest archives are the ones a school most needs back."""
    if fleet.backup is None:
        return None
    own = {k: v for k, v in school.backup.retention.model_dump().items() if v is not None}
    r = Retention(**{**fleet.backup.retention.model_dump(), **own})
    # a deleted person's data must not outlive the privacy policy's retention in the archives
    days = (school.privacy.data_retention_days or fleet.privacy.data_retention_days)
    daily = min(r.daily, days)
    weekly = min(r.weekly, (days - daily) // 7)
    monthly = min(r.monthly, (days - daily - 7 * weekly) // 31)
    r = Retention(daily=daily, weekly=weekly, monthly=monthly)
    return fleet.backup.model_copy(update={"retention": r})


def _backup_problems(school: School, doc: Any, shown: str, fleet: Fleet, fleet_doc: Any,
                     fleet_shown: str) -> list[Problem]:
    """A school keeps at most the fleet's archives (the data retention cuts them further: _backup)."""
    out: list[Problem] = []
    own = {k: v for k, v in school.backup.retention.model_dump().items() if v is not None}
    if own and fleet.backup is None:
        line, col = locate(doc, ("backup",))
        return [Problem(shown, line, col, "backup: the fleet names no backup host",
                        f"add `backup: {{host: ...}}` to {fleet_shown}, or remove the school's `backup:`")]
    if fleet.backup is None:
        return out
    floor = fleet.backup.retention
    for name, value in own.items():
        if value > getattr(floor, name):
            line, col = locate(doc, ("backup", "retention", name))
            out.append(Problem(shown, line, col, f"backup.retention.{name}: {value} keeps more archives than the "
                               f"fleet's {getattr(floor, name)}", "backups hold personal data: a school may keep "
                               f"fewer archives, never more; remove the key or use {getattr(floor, name)} or less"))
    return out


def _school_problems(school: School, doc: Any, shown: str, path: Path, fleet: Fleet | None,
                     fleet_doc: Any, fleet_shown: str) -> list[Problem]:
    out: list[Problem] = []
    if school.id != path.stem:
        line, col = locate(doc, ("id",))
        out.append(Problem(shown, line, col, f"id '{school.id}' does not match the file name '{path.name}'",
                           f"rename the file to {school.id}.yaml or set `id: {path.stem}`"))
    if fleet is None:
        return out
    for name, value in school.privacy.model_dump().items():
        if value is None:
            continue
        floor = getattr(fleet.privacy, name)
        if is_laxer(name, value, floor):
            line, col = locate(doc, ("privacy", name))
            if isinstance(fleet_doc, dict) and name in (fleet_doc.get("privacy") or {}):
                fl, _ = locate(fleet_doc, ("privacy", name))
                where = f"{fleet_shown}:{fl}"
            else:
                where = "schoolctl's built-in default"
            out.append(Problem(shown, line, col,
                               f"privacy.{name}: {_yaml(value)} is laxer than the fleet floor {_yaml(floor)} "
                               f"({where})", f"a school may be stricter than the fleet, never laxer; "
                               f"remove the key or use {_yaml(floor)} or a stricter value"))
    out += _backup_problems(school, doc, shown, fleet, fleet_doc, fleet_shown)
    if fleet.debian is None and not school.server.lab_name:
        line, col = locate(doc, ("server",))
        out.append(Problem(shown, line, col, f"server {school.server.address}: the fleet names no Debian archive for "
                           "its apt sources", f"add `debian: {{mirror: http://.../debian, security: "
                           f"http://.../debian-security}}` to {fleet_shown} (the city's mirror or Debian's own)"))
    if fleet.tls.mode == "provided" and school.tls is None:
        out.append(Problem(shown, 1, 1, "the fleet's tls.mode is 'provided' but the school names no certificate",
                           "add `tls: {cert_file: ..., key_file: ...}`"))
    bbb = school.services.bigbluebutton
    if bbb is not None:
        if bbb.pool and fleet.bbb_pool is None:
            line, col = locate(doc, ("services", "bigbluebutton", "pool"))
            out.append(Problem(shown, line, col, "services.bigbluebutton.pool: the fleet declares no bbb_pool",
                               f"add `bbb_pool: {{url: ...}}` to {fleet_shown}, or give the school its own "
                               "`server:`"))
        if bbb.server is not None:
            line, col = locate(doc, ("services", "bigbluebutton", "server"))
            if bbb.server.lab_name:
                out.append(Problem(shown, line, col, "services.bigbluebutton.server: BigBlueButton needs an "
                                   "Ubuntu 24.04 host; lab hosts run Debian 13",
                                   "name a real Ubuntu 24.04 server, or use `pool: true`"))
            elif bbb.server.os != "ubuntu-24.04":
                out.append(Problem(shown, line, col, "services.bigbluebutton.server: BigBlueButton 4.0 runs "
                                   f"only on Ubuntu 24.04, not {bbb.server.os}",
                                   "declare `os: ubuntu-24.04` on a host that runs it"))
            if bbb.cores < 4:
                line, col = locate(doc, ("services", "bigbluebutton", "cores"))
                out.append(Problem(shown, line, col, f"services.bigbluebutton.cores: {bbb.cores} is too few",
                                   "upstream requires 4 or more CPU cores (8 recommended)"))
    return out


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def load(schools_dir: Path | None = None, only: list[str] | None = None) -> Config:
    """Load and validate the fleet in `schools_dir`. Raises ConfigError listing every problem
    (restricted to the fleet file and the schools in `only` when given)."""
    schools_dir = Path(schools_dir or default_schools_dir())
    problems: list[Problem] = []
    if not schools_dir.is_dir():
        what = "not a folder" if schools_dir.exists() else "no such schools folder"
        raise ConfigError([Problem(shown_path(schools_dir), 1, 1, what,
                                   "pass --schools-dir DIR or set SCHOOLCTL_SCHOOLS_DIR")])
    fleet_path = next((schools_dir / n for n in FLEET_FILES if (schools_dir / n).exists()), None)
    fleet, fleet_doc, fleet_shown = None, None, shown_path(schools_dir / FLEET_FILES[0])
    if fleet_path is None:
        problems.append(Problem(fleet_shown, 1, 1, "the fleet file is missing",
                                "create it: the city's domain, admins, artifacts and privacy floors "
                                "(see README.md)"))
    else:
        fleet, fleet_doc, fleet_shown, found = _validate(Fleet, fleet_path)
        problems += found
    paths = sorted(p for p in schools_dir.iterdir()
                   if p.suffix in (".yaml", ".yml") and p.name not in FLEET_FILES and not p.name.startswith("."))
    by_id: dict[str, tuple[str, int]] = {}
    by_domain: dict[str, str] = {}
    by_server: dict[str, str] = {}
    stems = [p.stem for p in paths]
    config = Config(schools_dir, fleet, fleet_doc=fleet_doc, fleet_shown=fleet_shown, school_files=stems) \
        if fleet else None
    for path in paths:
        school, doc, shown, found = _validate(School, path)
        problems += found
        if school is None:
            continue
        problems += _school_problems(school, doc, shown, path, fleet, fleet_doc, fleet_shown)
        line, col = locate(doc, ("id",))
        if school.id in by_id:
            other = by_id[school.id][0]
            problems.append(Problem(shown, line, col, f"school id '{school.id}' is already used by {other}",
                                    "every school needs its own id; rename one of the two"))
            continue
        by_id[school.id] = (shown, line)
        if fleet is None:
            continue
        eff = effective(school, fleet, shown)
        dl, dc = locate(doc, ("domain",)) if "domain" in doc else (line, col)
        if eff.domain in by_domain:
            problems.append(Problem(shown, dl, dc, f"domain '{eff.domain}' is already used by "
                                    f"{by_domain[eff.domain]}", "give each school its own domain"))
        by_domain.setdefault(eff.domain, shown)
        server_key = f"{eff.server.address}:{eff.server.ssh_port}"
        if server_key in by_server:
            sl, sc = locate(doc, ("server",))
            problems.append(Problem(shown, sl, sc, f"server '{eff.server.address}' is already used by "
                                    f"{by_server[server_key]}", "each school needs its own server"))
        by_server.setdefault(server_key, shown)
        if config is not None:
            config.schools[school.id] = eff
    if only:
        known = set(stems) | set(by_id)
        missing = [i for i in only if i not in known]
        wanted = {shown_path(schools_dir / f"{i}{ext}") for i in only for ext in (".yaml", ".yml")}
        problems = [p for p in problems if p.path == fleet_shown or p.path in wanted
                    or any(p.message.endswith(f" already used by {w}") for w in wanted)]
        problems += [unknown_school(schools_dir, i, sorted(known)) for i in missing]
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


__all__ = ["Config", "ConfigError", "Problem", "load"]
