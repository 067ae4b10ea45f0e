"""The directory as it is (parsed from one ldapsearch), the plan that makes it hold the roster, and
the change set (one LDIF) that carries the plan out."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from schoolctl.cli.users.roster import KEY_PREFIX, SUSPENDED, Person, make_uid
from schoolctl.deploy.identity import CLASS_PREFIX, MUST_CHANGE, STUDENTS, TEACHERS, class_group_cn, ldif_line, ssha512

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
    must_change: bool = False           # pwdReset: still the initial password of the letter


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
                                      _one(e, "departmentnumber"), _one(e, "mail"), suspended, description,
                                      _one(e, MUST_CHANGE.lower()).upper() == "TRUE"))
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
    roster: dict[str, Person] = field(default_factory=dict)             # uid -> person, everyone in the roster
    must_change: set[str] = field(default_factory=set)                  # uids still on their initial password

    @property
    def empty(self) -> bool:
        return not (self.add or self.change or self.restore or self.suspend or self.delete or self.ous
                    or self.groups or self.new_groups or self.drop_groups)

    @property
    def moves(self) -> list[tuple[str, str, str]]:
        """(uid, old class, new class) of everyone whose class changes (the school-year move)."""
        return [(c.uid, *c.fields["group"]) for c in (*self.change, *self.restore) if "group" in c.fields]

    def classes(self) -> dict[str, list[str]]:
        """Class -> the uids of its members (teachers with a class too, as in the directory's group)."""
        found: dict[str, list[str]] = {}
        for uid, p in sorted(self.roster.items()):
            if p.group:
                found.setdefault(p.group, []).append(uid)
        return found

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
    last: dict[str, int] = {}
    wanted: dict[str, set[str]] = {}
    descriptions: dict[str, str] = {}
    for p in people:
        acc = by_key.get(p.key)
        if acc is None:
            uid = make_uid(p.given_name, p.family_name, taken, last)
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
        plan.roster[uid] = p
        if acc is None or acc.must_change:
            plan.must_change.add(uid)
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
        # pwdReset (ppolicy): the letter's password is to be changed at first login; the change removes it
        out += [f"dn: uid={uid},{people}", "changetype: add", *_person_attrs(uid, p), f"userPassword: {hashed}",
                f"{MUST_CHANGE}: TRUE", ""]
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


# A cell a spreadsheet would run as a formula starts with one of these (OWASP, "CSV Injection"), or
# with their fullwidth forms, which some spreadsheets read as the same.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def inert_cell(value: str) -> str:
    """`value` as a spreadsheet shows it and never runs it: a leading `'` before a formula start."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def passwords_csv(plan: Plan, passwords: dict[str, str]) -> str:
    """The secretary's list of initial passwords (CSV), one row per new person; no cell runs as a
    formula in a spreadsheet (a roster name `=HYPERLINK(...)` comes out as `'=HYPERLINK(...)`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["uid", "given_name", "family_name", "role", "group", "email", "initial_password"])
    for uid, p in plan.add:
        w.writerow([inert_cell(c) for c in (uid, p.given_name, p.family_name, p.role, p.group, p.email,
                                            passwords[uid])])
    return buf.getvalue()


def passwords_path(directory: Path, school_id: str, today: date) -> Path:
    """`<dir>/<id>-initial-passwords-<date>.vault`, with -2, -3... when one exists already."""
    path = directory / f"{school_id}-initial-passwords-{today.isoformat()}.vault"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{school_id}-initial-passwords-{today.isoformat()}-{n}.vault"
    return path
