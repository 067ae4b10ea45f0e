"""The roster: a school's people as the secretary's CSV gives them, every row checked first
(`file:LINE: message`), and the uids chosen for them (`marta.puig`, `marta.puig2`, never changed)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from schoolctl.config.yamlfile import FileTooLarge, NotRegularFile, read_bounded, size_text
from schoolctl.errors import RosterError

COLUMNS = ("given_name", "family_name", "role", "group", "email")
REQUIRED = ("given_name", "family_name", "role")
ROLES = ("teacher", "student")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL = re.compile(rf"^[^@\s,;<>()\[\]\"']+@{_LABEL}(\.{_LABEL})+$")
GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,19}$")
KEY_PREFIX = "p-"
SUSPENDED = "suspended "
MAX_ROSTER_BYTES = 4 * 1024 * 1024   # a big school's roster (2000 people) has about 100 KiB
MAX_ROWS = 20_000                    # rows after the header, blank ones included
PARTICLES = {"de", "del", "della", "la", "las", "los", "el", "i", "y", "da", "das", "do", "dos", "van", "von", "der",
             "den", "di", "du", "le", "d", "l"}
_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
                       "đ": "d", "Đ": "D", "ß": "ss", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "ı": "i"})


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


def make_uid(given: str, family: str, taken: set[str], last: dict[str, int] | None = None) -> str:
    """A free uid: `marta.puig`, then `marta.puig2`, `marta.puig3`... A caller that only adds to
    `taken` may keep `last` (base -> the last number given) so that many people of one name cost
    linear time, not quadratic: every number below the last is taken already."""
    base = base_uid(given, family)
    n = last.get(base, 1) if last is not None else 1
    uid = base if n == 1 else f"{base}{n}"
    while uid in taken:
        n += 1
        uid = f"{base}{n}"
    if last is not None:
        last[base] = n
    return uid


def _too_large(name: str, size: int | None) -> str:
    got = f"{size} bytes, more" if size is not None else "more"
    return (f"{name}:1: the roster is too large: {got} than the {size_text(MAX_ROSTER_BYTES)} a roster may have; "
            "it has one line per person")


def read_roster(path: Path) -> bytes:
    """The bytes of a roster file. A FIFO, device or socket is refused before it is opened (reading
    one would wait for ever), a file over MAX_ROSTER_BYTES before it is read (RosterError,
    `file:1: message`); a directory or another failure to read is an OSError."""
    try:
        return read_bounded(path, MAX_ROSTER_BYTES)
    except NotRegularFile as e:
        raise RosterError([f"{path}:1: cannot read the roster: {e}; export the roster to a CSV file and name "
                           "that file"]) from None
    except FileTooLarge as e:
        raise RosterError([_too_large(str(path), e.size)]) from None


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
    """Every row validated; returns (people, notes) or raises RosterError listing every bad row.
    A roster over MAX_ROSTER_BYTES or MAX_ROWS is refused at once, before any row is checked."""
    if len(data) > MAX_ROSTER_BYTES:
        raise RosterError([_too_large(name, len(data))])
    text, notes = _decode(data, name)
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    counter = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for rows, _ in enumerate(counter):      # the header is row 0
            if rows > MAX_ROWS:
                raise RosterError([f"{name}:{counter.line_num}: more than {MAX_ROWS} rows; a roster has one row "
                                   "per person of one school (is this the right file?)"])
    except csv.Error:
        pass                                    # reported below, with the rows before it
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
