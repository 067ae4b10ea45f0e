"""`schoolctl users import`: a school's roster (CSV) made true in its directory (OpenLDAP).

Pure parts (no host): `parse_roster` (every row validated first, errors as `file:LINE: message`),
`make_uid`, `parse_ldif`/`read_directory`, `diff` (the plan) and `to_ldif` (the change set).
The remote part (`Server`) is one `ldapsearch` of everything and one `ldapmodify` of the whole
change set, both as root over ldapi:/// (SASL EXTERNAL) on the school server, LDIF on stdin.

Who is who: a person is identified by their normalised name (given + family, ascii-folded,
lowercased, punctuation dropped), stored as `employeeNumber: p-<sha256 prefix>`; two rows with
the same normalised name are refused as a duplicate. The uid (`marta.puig`, `marta.puig2` on a
collision) is chosen once, when the person is first added, and never changes; a person's group,
role, email and the spelling of their name may change. A name change is a new person (the old
one is suspended, then deleted after the grace period).

Leavers: people missing from the roster are moved to `ou=suspended` at once (out of every
group, invisible to the apps, unable to log in, `description: suspended YYYY-MM-DD`); a later
import deletes them once `privacy.leaver_grace_days` have passed; a suspended person who is in
the roster again is restored (same uid, same password).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib
import io
import re
import shlex
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.identity import CLASS_PREFIX, STUDENTS, TEACHERS, class_group_cn, ldif_line, ssha512

from .secrets import Secret, generate

if TYPE_CHECKING:
    from .config.model import EffectiveSchool
    from .secrets import SecretStore

COLUMNS = ("given_name", "family_name", "role", "group", "email")
REQUIRED = ("given_name", "family_name", "role")
ROLES = ("teacher", "student")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL = re.compile(rf"^[^@\s,;<>()\[\]\"']+@{_LABEL}(\.{_LABEL})+$")
GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,19}$")
KEY_PREFIX = "p-"
SUSPENDED = "suspended "
PARTICLES = {"de", "del", "della", "la", "las", "los", "el", "i", "y", "da", "das", "do", "dos", "van", "von", "der",
             "den", "di", "du", "le", "d", "l"}
_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
                       "đ": "d", "Đ": "D", "ß": "ss", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "ı": "i"})


class RosterError(Exception):
    """The roster has bad rows; `problems` holds every one as `file:LINE: message`."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s) in the roster")
        self.problems = problems


# --- the roster ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    """One row of the roster, validated."""

    given_name: str
    family_name: str
    role: str                   # teacher | student
    group: str = ""             # the class, e.g. 1A ("" for a teacher without a class)
    email: str = ""
    line: int = 0

    @property
    def key(self) -> str:
        return person_key(self.given_name, self.family_name)

    @property
    def cn(self) -> str:
        return f"{self.given_name} {self.family_name}"


def fold(text: str) -> str:
    """Lowercase ASCII: accents removed (à->a, ç->c, ñ->n, l·l->ll), other letters mapped or dropped."""
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return text.encode("ascii", "ignore").decode().lower()


def _words(text: str) -> list[str]:
    """ASCII words of a name: spaces and hyphens separate words, other punctuation is dropped."""
    return [w for w in (re.sub(r"[^a-z0-9]", "", part) for part in re.split(r"[\s\-_]+", fold(text))) if w]


def person_key(given: str, family: str) -> str:
    """The stable identity of a person: a hash of their normalised name."""
    norm = " ".join(_words(given)) + "|" + " ".join(_words(family))
    return KEY_PREFIX + hashlib.sha256(norm.encode()).hexdigest()[:24]


def base_uid(given: str, family: str) -> str:
    """`given.family` from the first given name and the first family name that is not a particle."""
    g = _words(given)
    f = [w for w in _words(family) if w not in PARTICLES] or _words(family)
    first = (g[0] if g else "")[:20]
    last = (f[0] if f else "")[:20]
    if not first or not last:
        return first or last or "user"
    return f"{first}.{last}"


def make_uid(given: str, family: str, taken: set[str]) -> str:
    """A free uid: `marta.puig`, then `marta.puig2`, `marta.puig3`..."""
    base = base_uid(given, family)
    uid, n = base, 1
    while uid in taken:
        n += 1
        uid = f"{base}{n}"
    return uid


def _decode(data: bytes, name: str) -> tuple[str, list[str]]:
    """Text of the roster: UTF-8 (with or without BOM), UTF-16 with BOM, or Windows-1252 (what a
    spreadsheet saves as "CSV" on Windows), with a note when it is not UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError:
            raise RosterError([f"{name}:1: not valid UTF-16 text; save the roster as CSV UTF-8"]) from None
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as e:
        utf8_line = data[:e.start].count(b"\n") + 1
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise RosterError([f"{name}:{line}: not UTF-8 text (and not Windows-1252 either); "
                           "save the roster as CSV UTF-8"]) from None
    return text, [f"{name}:{utf8_line}: not UTF-8; read as Windows-1252 (save as CSV UTF-8 to be sure)"]


def _clean(value: str | None) -> str:
    return " ".join((value or "").split())


def parse_roster(data: bytes, name: str = "roster.csv") -> tuple[list[Person], list[str]]:
    """Every row validated; returns (people, notes) or raises RosterError listing every bad row."""
    text, notes = _decode(data, name)
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    problems: list[str] = []
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise RosterError([f"{name}:1: {e}"]) from None
    if header is None or not any(h.strip() for h in header):
        raise RosterError([f"{name}:1: the roster is empty; expected the header {','.join(COLUMNS)}"])
    cols = [h.strip().lower() for h in header]
    unknown = [c for c in cols if c not in COLUMNS]
    missing = [c for c in REQUIRED if c not in cols]
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if unknown or missing or dupes:
        msg = "; ".join(filter(None, [
            f"unknown column(s) {', '.join(unknown)}" if unknown else "",
            f"missing column(s) {', '.join(missing)}" if missing else "",
            f"repeated column(s) {', '.join(dupes)}" if dupes else ""]))
        raise RosterError([f"{name}:1: {msg}; expected {','.join(COLUMNS)} (group and email may be empty)"])
    people: list[Person] = []
    seen: dict[str, int] = {}
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(f"{name}:{reader.line_num}: {e}")
            break
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(cols):
            problems.append(f"{name}:{line}: {len(row)} field(s), expected {len(cols)} ({','.join(cols)})")
            continue
        values = {c: _clean(v) for c, v in zip(cols, row, strict=True)}
        bad = _row_problems(values)
        if bad:
            problems += [f"{name}:{line}: {m}" for m in bad]
            continue
        role = values["role"].lower()
        group = values.get("group", "")
        person = Person(values["given_name"], values["family_name"], role, group.upper() if group else "",
                        values.get("email", ""), line)
        if person.key in seen:
            problems.append(f"{name}:{line}: duplicate person: {person.cn} is already on line {seen[person.key]}")
            continue
        seen[person.key] = line
        people.append(person)
    if problems:
        raise RosterError(problems)
    if not people:
        raise RosterError([f"{name}:{line}: the roster has no people (an empty roster would suspend everybody)"])
    return people, notes


def _row_problems(values: dict[str, str]) -> list[str]:
    found = []
    for col, what in (("given_name", "given name"), ("family_name", "family name")):
        v = values.get(col, "")
        if not v:
            found.append(f"missing {what} ({col})")
        elif len(v) > 100 or any(unicodedata.category(c).startswith("C") for c in v):
            found.append(f"bad {what} {v[:40]!r} (control characters or over 100 characters)")
        elif not _words(v):
            found.append(f"{what} {v!r} has no letters usable in a login name")
    role = values.get("role", "").lower()
    if not role:
        found.append(f"missing role (one of: {', '.join(ROLES)})")
    elif role not in ROLES:
        found.append(f"unknown role {values['role']!r} (one of: {', '.join(ROLES)})")
    group = values.get("group", "")
    if group and not GROUP.match(group):
        found.append(f"bad group {group!r} (a class name like 1A: letters, digits, space . _ -, up to 20)")
    elif not group and role == "student":
        found.append("missing group: a student needs a class (e.g. 1A)")
    email = values.get("email", "")
    if email and not EMAIL.match(email):
        found.append(f"bad email {email!r}")
    return found


# --- the directory as it is ------------------------------------------------------------------

def parse_ldif(text: str) -> list[dict[str, list[str]]]:
    """Entries of an ldapsearch -LLL answer (lower-cased attribute names, base64 values decoded)."""
    entries: list[dict[str, list[str]]] = []
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        elif raw.startswith("#"):
            continue
        else:
            lines.append(raw)
    current: dict[str, list[str]] = {}
    for line in [*lines, ""]:
        if not line.strip():
            if current:
                entries.append(current)
            current = {}
            continue
        attr, sep, value = line.partition(":")
        if not sep:
            continue
        if value.startswith(":"):
            value = base64.b64decode(value[1:].strip()).decode()
        else:
            value = value[1:] if value.startswith(" ") else value
        current.setdefault(attr.lower(), []).append(value)
    return entries


@dataclass
class Account:
    """A managed person in the directory."""

    dn: str
    uid: str
    key: str
    given_name: str
    family_name: str
    role: str
    group: str
    email: str
    suspended: date | None = None       # set when under ou=suspended
    description: str = ""


@dataclass
class Directory:
    base_dn: str
    accounts: list[Account] = field(default_factory=list)
    groups: dict[str, set[str]] = field(default_factory=dict)   # cn -> member DNs (lower-cased)
    group_dns: dict[str, str] = field(default_factory=dict)     # cn -> dn
    ous: set[str] = field(default_factory=set)                 # lower-cased DNs of the OUs
    taken_uids: set[str] = field(default_factory=set)          # every uid in use (managed or not)
    unmanaged: int = 0

    @property
    def people_dn(self) -> str:
        return f"ou=people,{self.base_dn}"

    @property
    def groups_dn(self) -> str:
        return f"ou=groups,{self.base_dn}"

    @property
    def suspended_dn(self) -> str:
        return f"ou=suspended,{self.base_dn}"


def _one(entry: dict[str, list[str]], attr: str) -> str:
    return (entry.get(attr) or [""])[0]


def _suspended_on(description: str, today: date) -> date:
    m = re.search(r"suspended (\d{4}-\d{2}-\d{2})", description)
    try:
        return date.fromisoformat(m.group(1)) if m else today
    except ValueError:
        return today


def read_directory(entries: list[dict[str, list[str]]], base_dn: str, today: date) -> Directory:
    d = Directory(base_dn)
    suspended_suffix = "," + d.suspended_dn.lower()
    for e in entries:
        dn = _one(e, "dn")
        classes = {c.lower() for c in e.get("objectclass", [])}
        if "organizationalunit" in classes:
            d.ous.add(dn.lower())
        elif "groupofnames" in classes:
            cn = _one(e, "cn").lower()
            d.groups[cn] = {m.lower() for m in e.get("member", [])}
            d.group_dns[cn] = dn
        elif "inetorgperson" in classes:
            uid = _one(e, "uid").lower()
            if uid:
                d.taken_uids.add(uid)
            key = _one(e, "employeenumber")
            if not key.startswith(KEY_PREFIX) or not uid:
                d.unmanaged += 1
                continue
            description = _one(e, "description")
            suspended = _suspended_on(description, today) if dn.lower().endswith(suspended_suffix) else None
            d.accounts.append(Account(dn, uid, key, _one(e, "givenname"), _one(e, "sn"), _one(e, "employeetype"),
                                      _one(e, "departmentnumber"), _one(e, "mail"), suspended, description))
    return d


# --- the plan --------------------------------------------------------------------------------

@dataclass
class Change:
    uid: str
    person: Person
    fields: dict[str, tuple[str, str]]      # field -> (old, new)


@dataclass
class Plan:
    """What an import does. Group changes follow from the people's."""

    base_dn: str
    add: list[tuple[str, Person]] = field(default_factory=list)         # (uid, person)
    change: list[Change] = field(default_factory=list)
    restore: list[Change] = field(default_factory=list)                 # suspended, back in the roster
    suspend: list[Account] = field(default_factory=list)
    delete: list[Account] = field(default_factory=list)                 # suspended past the grace period
    waiting: list[tuple[Account, date]] = field(default_factory=list)   # suspended, deleted after date
    unchanged: list[str] = field(default_factory=list)
    ous: list[str] = field(default_factory=list)                        # missing OUs to create
    groups: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)  # cn -> (add dns, remove dns)
    new_groups: dict[str, tuple[str, set[str]]] = field(default_factory=dict)   # cn -> (description, members)
    drop_groups: list[str] = field(default_factory=list)                # group DNs that end up empty
    suspended_on: date = field(default_factory=date.today)

    @property
    def empty(self) -> bool:
        return not (self.add or self.change or self.restore or self.suspend or self.delete or self.ous
                    or self.groups or self.new_groups or self.drop_groups)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.add), "changed": len(self.change), "restored": len(self.restore),
                "suspended": len(self.suspend), "deleted": len(self.delete), "unchanged": len(self.unchanged),
                "waiting": len(self.waiting),
                "groups_changed": len(self.groups) + len(self.new_groups) + len(self.drop_groups)}


def _fields(person: Person, acc: Account) -> dict[str, tuple[str, str]]:
    pairs = {"given_name": (acc.given_name, person.given_name), "family_name": (acc.family_name, person.family_name),
             "role": (acc.role, person.role), "group": (acc.group, person.group), "email": (acc.email, person.email)}
    return {k: v for k, v in pairs.items() if v[0] != v[1]}


def _groups_of(person: Person) -> list[tuple[str, str]]:
    """(cn, description) of every group a person belongs to."""
    found = [(TEACHERS, "Teachers") if person.role == "teacher" else (STUDENTS, "Students")]
    if person.group:
        found.append((class_group_cn(person.group), f"Class {person.group}"))
    return found


def diff(people: list[Person], directory: Directory, today: date, grace_days: int) -> Plan:
    """Compare the roster with the directory: a pure function (no host)."""
    base = directory.base_dn
    plan = Plan(base, suspended_on=today)
    by_key = {a.key: a for a in directory.accounts}
    taken = set(directory.taken_uids)
    wanted: dict[str, set[str]] = {}
    descriptions: dict[str, str] = {}
    for p in people:
        acc = by_key.get(p.key)
        if acc is None:
            uid = make_uid(p.given_name, p.family_name, taken)
            taken.add(uid)
            plan.add.append((uid, p))
        elif acc.suspended is not None:
            uid = acc.uid
            plan.restore.append(Change(uid, p, _fields(p, acc)))
        else:
            uid = acc.uid
            fields = _fields(p, acc)
            if fields:
                plan.change.append(Change(uid, p, fields))
            else:
                plan.unchanged.append(uid)
        for cn, desc in _groups_of(p):
            wanted.setdefault(cn, set()).add(f"uid={uid},ou=people,{base}".lower())
            descriptions[cn] = desc
    in_roster = {p.key for p in people}
    for acc in directory.accounts:
        if acc.key in in_roster:
            continue
        if acc.suspended is None:
            plan.suspend.append(acc)
        elif acc.suspended + timedelta(days=grace_days) <= today:
            plan.delete.append(acc)
        else:
            plan.waiting.append((acc, acc.suspended + timedelta(days=grace_days)))
    for dn, name in ((directory.people_dn, "people"), (directory.groups_dn, "groups"),
                     (directory.suspended_dn, "suspended")):
        if dn.lower() not in directory.ous:
            plan.ous.append(name)
    managed = {TEACHERS, STUDENTS}
    for cn in sorted(set(wanted) | {c for c in directory.groups if c in managed or c.startswith(CLASS_PREFIX)}):
        want, have = wanted.get(cn, set()), directory.groups.get(cn)
        if have is None:
            plan.new_groups[cn] = (descriptions[cn], want)
        elif not want:
            plan.drop_groups.append(directory.group_dns[cn])
        elif want != have:
            plan.groups[cn] = (want - have, have - want)
    return plan


# --- the change set --------------------------------------------------------------------------

def _person_attrs(uid: str, p: Person) -> list[str]:
    lines = ["objectClass: top", "objectClass: person", "objectClass: organizationalPerson",
             "objectClass: inetOrgPerson", f"uid: {uid}", ldif_line("cn", p.cn), ldif_line("displayName", p.cn),
             ldif_line("givenName", p.given_name), ldif_line("sn", p.family_name), f"employeeType: {p.role}",
             f"employeeNumber: {p.key}"]
    if p.group:
        lines.append(ldif_line("departmentNumber", p.group))
    if p.email:
        lines.append(ldif_line("mail", p.email))
    return lines


def _modify(dn: str, fields: dict[str, tuple[str, str]], p: Person, extra: list[str] | None = None) -> list[str]:
    ops: list[str] = []
    attrs = {"given_name": "givenName", "family_name": "sn", "role": "employeeType", "group": "departmentNumber",
             "email": "mail"}
    values = {"givenName": p.given_name, "sn": p.family_name, "employeeType": p.role, "departmentNumber": p.group,
              "mail": p.email}
    names = [attrs[f] for f in fields]
    if "given_name" in fields or "family_name" in fields:
        names += ["cn", "displayName"]
        values["cn"] = values["displayName"] = p.cn
    for a in names:
        ops += [f"replace: {a}", *([ldif_line(a, values[a])] if values[a] else []), "-"]
    ops += extra or []
    if not ops:
        return []
    return [f"dn: {dn}", "changetype: modify", *ops, ""]


def to_ldif(plan: Plan, passwords: dict[str, str], deleted: Iterable[Account] | None = None,
            salt: bytes | None = None) -> str:
    """The whole change set, in an order that holds at every step: OUs, new people, restored
    people, changed people, groups, then leavers out (suspended, then deleted)."""
    import os

    base = plan.base_dn
    people, groups, suspended = f"ou=people,{base}", f"ou=groups,{base}", f"ou=suspended,{base}"
    out: list[str] = []
    for name in plan.ous:
        out += [f"dn: ou={name},{base}", "changetype: add", "objectClass: organizationalUnit", f"ou: {name}", ""]
    for uid, p in plan.add:
        hashed = ssha512(passwords[uid], salt if salt is not None else os.urandom(16))
        out += [f"dn: uid={uid},{people}", "changetype: add", *_person_attrs(uid, p), f"userPassword: {hashed}", ""]
    for c in plan.restore:
        out += [f"dn: uid={c.uid},{suspended}", "changetype: modrdn", f"newrdn: uid={c.uid}", "deleteoldrdn: 1",
                f"newsuperior: {people}", ""]
        out += _modify(f"uid={c.uid},{people}", c.fields, c.person, ["replace: description", "-"])
    for c in plan.change:
        out += _modify(f"uid={c.uid},{people}", c.fields, c.person)
    for cn, (desc, members) in sorted(plan.new_groups.items()):
        out += [f"dn: cn={cn},{groups}", "changetype: add", "objectClass: groupOfNames", f"cn: {cn}",
                ldif_line("description", desc), *(f"member: {m}" for m in sorted(members)), ""]
    for cn, (add, remove) in sorted(plan.groups.items()):
        ops = []
        if add:
            ops += ["add: member", *(f"member: {m}" for m in sorted(add)), "-"]
        if remove:
            ops += ["delete: member", *(f"member: {m}" for m in sorted(remove)), "-"]
        out += [f"dn: cn={cn},{groups}", "changetype: modify", *ops, ""]
    for dn in plan.drop_groups:
        out += [f"dn: {dn}", "changetype: delete", ""]
    stamp = f"{SUSPENDED}{plan.suspended_on.isoformat()}"
    for acc in plan.suspend:
        out += [f"dn: {acc.dn}", "changetype: modify", "replace: description", f"description: {stamp}", "-", ""]
        out += [f"dn: {acc.dn}", "changetype: modrdn", f"newrdn: uid={acc.uid}", "deleteoldrdn: 1",
                f"newsuperior: {suspended}", ""]
    for acc in plan.delete if deleted is None else deleted:
        out += [f"dn: {acc.dn}", "changetype: delete", ""]
    return "\n".join(out) + ("\n" if out else "")


def passwords_csv(plan: Plan, passwords: dict[str, str]) -> str:
    """The secretary's list of initial passwords (CSV), one row per new person."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["uid", "given_name", "family_name", "role", "group", "email", "initial_password"])
    for uid, p in plan.add:
        w.writerow([uid, p.given_name, p.family_name, p.role, p.group, p.email, passwords[uid]])
    return buf.getvalue()


def passwords_path(directory: Path, school_id: str, today: date) -> Path:
    """`<dir>/<id>-initial-passwords-<date>.vault`, with -2, -3... when one exists already."""
    path = directory / f"{school_id}-initial-passwords-{today.isoformat()}.vault"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{school_id}-initial-passwords-{today.isoformat()}-{n}.vault"
    return path


# --- the school server -----------------------------------------------------------------------

SEARCH_ATTRS = ("objectClass", "uid", "cn", "givenName", "sn", "mail", "employeeType", "employeeNumber",
                "departmentNumber", "description", "member", "ou")
SEARCH_FILTER = "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames)(objectClass=organizationalUnit))"
LDAPI = "-Q -Y EXTERNAL -H ldapi:///"


class ServerError(Exception):
    """The school server cannot be reached or refused a command."""


class Server:
    """One SSH connection to a school server (pyinfra's connector, the deploy's connection data);
    commands run as root (sudo when the SSH user is not root), stdin carries the LDIF."""

    def __init__(self, school: EffectiveSchool):
        self.school = school
        self.state: Any = None
        self.host: Any = None

    def __enter__(self) -> Server:
        from pyinfra.api import Config, Inventory, State
        from pyinfra.api.connect import connect_all
        from pyinfra.api.exceptions import PyinfraError

        from inventories.build import AddressError, connection

        try:
            data = {**connection(self.school), "ssh_connect_retries": 1, "ssh_strict_host_key_checking": "accept-new"}
        except AddressError as e:
            raise ServerError(str(e)) from None
        inventory = Inventory(([(self.school.id, data)], {}))
        self.state = State(inventory=inventory, config=Config(CONNECT_TIMEOUT=15))
        with contextlib.suppress(PyinfraError):
            connect_all(self.state)
        self.host = inventory.get_host(self.school.id)
        if not self.state.activated_hosts or self.host in self.state.failed_hosts:
            raise ServerError(f"cannot connect to {self.school.id}'s server ({data['ssh_hostname']}) over SSH")
        self.sudo = data.get("ssh_user", "root") != "root"
        return self

    def __exit__(self, *exc: object) -> None:
        from pyinfra.api.connect import disconnect_all

        if self.state is not None:
            disconnect_all(self.state)

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        from pyinfra.api import StringCommand

        extra: dict[str, Any] = {"_timeout": timeout}
        if self.sudo:
            extra["_sudo"] = True
        if stdin is not None:
            extra["_stdin"] = stdin
        ok, output = self.host.run_shell_command(StringCommand(command), **extra)
        return ok, output.stdout, output.stderr


def search_command(base_dn: str) -> str:
    return (f"ldapsearch {LDAPI} -LLL -o ldif-wrap=no -b {shlex.quote(base_dn)} "
            f"{shlex.quote(SEARCH_FILTER)} {' '.join(SEARCH_ATTRS)}")


def fetch_directory(server: Server, base_dn: str, today: date) -> Directory:
    ok, out, err = server.run(search_command(base_dn))
    if not ok:
        if "No such object" in err or "(32)" in err:
            raise ServerError(f"the directory {base_dn} does not exist on the server: deploy the school first "
                              "(the identity layer)")
        raise ServerError(f"ldapsearch failed: {err.strip()[-500:]}")
    return read_directory(parse_ldif(out), base_dn, today)


def apply_ldif(server: Server, ldif: str) -> None:
    """The whole change set in one ldapmodify run (LDIF on stdin); stops at the first error, and a
    re-run converges because the plan is recomputed from the directory."""
    ok, out, err = server.run(f"ldapmodify {LDAPI}", stdin=ldif)
    if not ok:
        done = out.count("modifying entry") + out.count("adding new entry") + out.count("deleting entry")
        raise ServerError(f"ldapmodify stopped after {done} change(s): {err.strip()[-500:]} "
                          "(run the import again: it starts from what the directory holds now)")


# --- leavers in the apps ---------------------------------------------------------------------

def delete_hooks(school: EffectiveSchool) -> list[tuple[str, Callable[..., str]]]:
    """(app, `deploy.<app>.delete_user_command`) for each enabled app whose module defines it."""
    found = []
    for app in school.enabled:
        try:
            module = importlib.import_module(f"deploy.{app}")
        except ModuleNotFoundError as e:
            if e.name in (f"deploy.{app}", "deploy"):
                continue
            raise
        hook = getattr(module, "delete_user_command", None)
        if callable(hook):
            found.append((app, hook))
    return found


def run_hooks(server: Server, site: Any, hooks: list[tuple[str, Callable[..., str]]], uids: list[str]) \
        -> dict[str, dict[str, str]]:
    """Run every app's delete command for every uid in one script; {uid: {app: "ok" | error}}."""
    jobs = [(uid, app, hook(site, uid)) for uid in uids for app, hook in hooks]
    results: dict[str, dict[str, str]] = {uid: {} for uid in uids}
    if not jobs:
        return results
    script = []
    for i, (_, _, command) in enumerate(jobs):
        script.append(f"if out=$( ( {command} ) 2>&1 </dev/null ); then echo '@@ok {i}'; "
                      f"else echo \"@@fail {i} $?\"; printf '%s\\n' \"$out\" | tail -n 3 | sed 's/^/@@out {i} /'; fi")
    _, out, err = server.run("sh -s", stdin="\n".join(script) + "\n", timeout=1800)
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) >= len(jobs):
            continue
        uid, app, _ = jobs[int(parts[1])]
        if parts[0] == "@@ok":
            results[uid][app] = "ok"
        elif parts[0] == "@@fail":
            results[uid][app] = f"failed (exit {parts[2] if len(parts) > 2 else '?'})"
        elif parts[0] == "@@out" and len(parts) > 2:
            results[uid][app] = results[uid].get(app, "failed") + f": {parts[2]}"
    for uid, app, _ in jobs:
        results[uid].setdefault(app, f"not run ({err.strip()[-200:] or 'no answer'})")
    return results


# --- one import ------------------------------------------------------------------------------

@dataclass
class ImportResult:
    school: str
    plan: Plan
    dry_run: bool
    notes: list[str] = field(default_factory=list)
    passwords_file: Path | None = None
    hooks: dict[str, dict[str, str]] = field(default_factory=dict)   # uid -> app -> ok | error
    kept: list[str] = field(default_factory=list)                   # leavers not deleted (a hook failed)
    error: str | None = None
    seconds: float = 0.0
    grace_days: int = 0

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if self.plan.empty:
            return "unchanged"
        return "planned" if self.dry_run else "changed"


def write_passwords(store: SecretStore, school_id: str, text: str, today: date) -> Path:
    """The initial passwords, ansible-vault encrypted with the vault key, for the school's secretary."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    from .secrets import SecretError, _write_private

    try:
        key = store.key_file.read_bytes().strip()
    except OSError:
        raise SecretError(f"no vault key at {store.key_file}; run `schoolctl secrets init`") from None
    path = passwords_path(store.directory, school_id, today)
    _write_private(path, VaultLib([("default", VaultSecret(key))]).encrypt(text.encode()))
    return path


def import_roster(school: EffectiveSchool, people: list[Person], dry_run: bool, store: SecretStore | None = None,
                  today: date | None = None, server: Server | None = None) -> ImportResult:
    """Make the directory hold exactly the roster (see the module's docstring)."""
    from .secrets import SecretStore as Store

    start = time.monotonic()
    store = store or Store()
    today = today or date.today()
    base = school.ldap_base
    with server or Server(school) as srv:
        directory = fetch_directory(srv, base, today)
        plan = diff(people, directory, today, school.privacy.leaver_grace_days)
        result = ImportResult(school.id, plan, dry_run, grace_days=school.privacy.leaver_grace_days)
        if directory.unmanaged:
            result.notes.append(f"{directory.unmanaged} person entr(y/ies) without a schoolctl key left alone")
        if dry_run or plan.empty:
            result.seconds = time.monotonic() - start
            return result
        deleted = list(plan.delete)
        if plan.delete:
            hooks = delete_hooks(school)
            if hooks:
                from .sites import build_site

                site = build_site(school, store, readonly=True)
                result.hooks = run_hooks(srv, site, hooks, [a.uid for a in plan.delete])
                deleted = [a for a in plan.delete if all(v == "ok" for v in result.hooks[a.uid].values())]
                result.kept = [a.uid for a in plan.delete if a not in deleted]
        passwords = {uid: generate(14) for uid, _ in plan.add}
        for value in passwords.values():
            Secret(value)  # registered with the redactor: never printed, even by accident
        if plan.add:
            result.passwords_file = write_passwords(store, school.id, passwords_csv(plan, passwords), today)
        apply_ldif(srv, to_ldif(plan, passwords, deleted))
        if result.kept:
            result.error = (f"not deleted (an app's delete command failed, still suspended): {', '.join(result.kept)}")
    result.seconds = time.monotonic() - start
    return result
