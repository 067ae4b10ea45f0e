"""Which schools a command works on: the one selection the verbs (`--limit`) and the inventories'
groups share. A selection is terms, given repeatedly or comma-separated; a school is chosen when
any term matches it, and a term starting with `!` leaves out what it matches:

- `esc-pins`: a school id; `esc-*`, `*-mar`: a glob over ids;
- `district=NAME`: the school's district, accents, case, spaces and punctuation ignored
  (`district=sant-marti` is "Sant Martí"), also in the inventories' group spelling (`sant_marti`);
- `service=NAME`: the schools running that service (moodle, nextcloud, etherpad, jitsi, bigbluebutton).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from schoolctl.config.model import SERVICES
from schoolctl.config.problems import few
from schoolctl.errors import INPUT, SchoolctlError

KEYS = ("district", "service")
_GLOB = re.compile(r"[*?\[]")


class SelectionError(SchoolctlError):
    """A `--limit` that is malformed, names what the fleet does not have, or matches no school."""

    exit_code = INPUT


def fold(text: str) -> str:
    """`text` for comparison: accents transliterated (NFKD, combining marks dropped), case folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def slug(text: str) -> str:
    """`text` as an inventory group word: `Sant Martí` -> `sant_marti`, `Horta-Guinardó` -> `horta_guinardo`."""
    return re.sub(r"[^a-z0-9]+", "_", fold(text).encode("ascii", "ignore").decode()).strip("_")


def district_group(district: str) -> str:
    """The inventory group of a district (Ansible and pyinfra exports alike)."""
    return f"district_{slug(district) or 'schools'}"


def terms(limit: Iterable[str] | None) -> list[str]:
    """The terms of `--limit` options (each may hold several, comma-separated), blanks dropped; a
    `--limit` with no term at all (`''`, `','`) or a bare `!` is a SelectionError, never "every school"."""
    found = []
    for value in limit or []:
        here = [t.strip() for t in value.split(",") if t.strip()]
        if not here:
            raise SelectionError(f"--limit {value!r} names no school",
                                 "give ids, globs, district=NAME or service=NAME; leave --limit out for every school")
        bare = next((t for t in here if not t[1:].strip() and t.startswith("!")), None)
        if bare is not None:
            raise SelectionError(f"--limit {value}: '!' leaves out nothing", "write !TERM, e.g. !escola-pins")
        found += here
    return found


def plain_ids(found: Sequence[str]) -> list[str] | None:
    """The ids when every term is a plain school id (the loader can then check just those files),
    else None."""
    if found and all(not _GLOB.search(t) and "=" not in t and not t.startswith("!") for t in found):
        return list(found)
    return None


def _matcher(term: str, schools: Sequence[Any]) -> Any:
    """A predicate for one term; SelectionError when the term cannot match by its very form."""
    if "=" in term:
        key, _, value = term.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key not in KEYS:
            raise SelectionError(f"--limit {term}: unknown selector '{key}='",
                                 "use a school id, a glob such as 'esc-*', district=NAME or service=NAME")
        if not value:
            raise SelectionError(f"--limit {term}: no {key} named", f"write it as {key}=NAME")
        if key == "service":
            name = value.lower()
            if name not in SERVICES:
                close = difflib.get_close_matches(name, SERVICES, n=1)
                raise SelectionError(f"--limit {term}: there is no service '{value}'",
                                     f"did you mean service={close[0]}?" if close else
                                     f"services: {', '.join(SERVICES)}")
            return lambda s: getattr(s.services, name) is not None
        want = slug(value)
        return lambda s: slug(s.district) == want
    if _GLOB.search(term):
        return lambda s: fnmatch.fnmatchcase(s.id, term)
    ids = [s.id for s in schools]
    if term not in ids:
        close = difflib.get_close_matches(term, ids, n=1)
        raise SelectionError(f"--limit {term}: no school '{term}' in the fleet",
                             f"did you mean '{close[0]}'?" if close else f"known schools: {few(ids)}")
    return lambda s: s.id == term


def select(schools: Iterable[Any], limit: Iterable[str] | None, fleet: Iterable[Any] | None = None) -> list[Any]:
    """The schools (School or EffectiveSchool, in their order) the `--limit` terms choose; every
    school when there are no terms. `fleet` (default: `schools`) is what an id is checked against.
    Raises SelectionError when a term is malformed or unknown, or when nothing is chosen (the hint
    lists the fleet's schools, districts and services)."""
    pool = list(schools)
    found = terms(limit)
    if not found:
        return pool
    every = list(fleet) if fleet is not None else pool
    take = [_matcher(t, every) for t in found if not t.startswith("!")]
    drop = [_matcher(t[1:].strip(), every) for t in found if t.startswith("!")]
    chosen = [s for s in pool if (not take or any(m(s) for m in take)) and not any(m(s) for m in drop)]
    if not chosen:
        districts = sorted({s.district for s in every})
        raise SelectionError(f"--limit {','.join(found)} matches no school{' of those named' if fleet else ''}",
                             f"known schools: {few([s.id for s in every])}; districts: "
                             f"{few(districts)}; services: {', '.join(SERVICES)}")
    return chosen
