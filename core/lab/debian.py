"""Which Debian archive the lab's school servers install from: the build machine's own.

A lab host reaches Debian through the lab's apt-cacher-ng, which forwards each request to the host
named in its URI; so the lab's servers use the URIs this machine's apt already uses (no mirror
name is written anywhere in schoolctl). `archive()` reads them from the build machine's apt
sources, both formats apt reads:

- one-line: `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*.list`
  (`deb [options] URI SUITE [COMPONENT...]`);
- deb822: `/etc/apt/sources.list.d/*.sources` (paragraphs with `Types:`, `URIs:`, `Suites:`,
  `Enabled:`).

Only the URIs are taken from the build machine, never its release: the mirror is the URI that
serves the build machine's own codename (VERSION_CODENAME of its /etc/os-release), the security
archive the URI that serves `<codename>-security` (or the old `<codename>/updates`). The school
servers and lab hosts are Debian 13 and ask those URIs for trixie, trixie-updates and
trixie-security (deploy/base.py: CODENAME).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from schoolctl.errors import LabError


@dataclass(frozen=True)
class Entry:
    """One `deb` source: where it was read, its URI and its suite."""

    where: str
    uri: str
    suite: str


def one_line_entries(text: str, where: str = "sources.list") -> list[Entry]:
    """The `deb` entries of a one-line-format sources file (`deb-src`, comments and options skipped)."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        kind, _, rest = raw.split("#", 1)[0].strip().partition(" ")
        rest = rest.strip()
        if kind != "deb":
            continue
        if rest.startswith("["):  # options: `[arch=amd64 signed-by=/x]`, spaces allowed inside
            closing = rest.find("]")
            if closing < 0:
                continue
            rest = rest[closing + 1:]
        words = rest.split()
        if len(words) >= 2:
            out.append(Entry(f"{where}:{number}", words[0], words[1]))
    return out


def deb822_entries(text: str, where: str = "debian.sources") -> list[Entry]:
    """The `deb` entries of a deb822 sources file: every URI x every suite of each enabled paragraph."""
    out = []
    for number, fields in _paragraphs(text):
        types = fields.get("types", "").split()
        if "deb" not in types or fields.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        for uri in fields.get("uris", "").split():
            out += [Entry(f"{where}:{number}", uri, suite) for suite in fields.get("suites", "").split()]
    return out


def _paragraphs(text: str) -> list[tuple[int, dict[str, str]]]:
    """(first line, {lower-case field: value}) of each paragraph; comments dropped, continuation
    lines (starting with a space or tab) joined to their field."""
    found: list[tuple[int, dict[str, str]]] = []
    fields: dict[str, str] = {}
    start, key = 0, None
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            if fields:
                found.append((start, fields))
            fields, key = {}, None
            continue
        if line[0] in " \t" and key:
            fields[key] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if not fields:
            start = number
        key = name.strip().lower()
        fields[key] = value.strip()
    return found


def read_entries(etc: Path = Path("/etc/apt")) -> list[Entry]:
    """Every `deb` entry of the apt sources under `etc` (apt's own reading order)."""
    entries: list[Entry] = []
    main = etc / "sources.list"
    if main.is_file():
        entries += one_line_entries(main.read_text(errors="replace"), str(main))
    parts = etc / "sources.list.d"
    for path in sorted(parts.iterdir()) if parts.is_dir() else []:
        if path.suffix == ".list" and path.is_file():
            entries += one_line_entries(path.read_text(errors="replace"), str(path))
        elif path.suffix == ".sources" and path.is_file():
            entries += deb822_entries(path.read_text(errors="replace"), str(path))
    return entries


def codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    """The machine's release codename (VERSION_CODENAME), or None."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    return m.group(1) if m else None


def pick(entries: list[Entry], release: str | None) -> tuple[str, str]:
    """(mirror URI, security URI): the http(s) URIs serving `release` and `release`-security. Without
    a known release, the one whose -security suite is configured. LabError when either is missing."""
    web = [e for e in entries if e.uri.startswith(("http://", "https://"))]
    if release is None:
        suites = {e.suite for e in web}
        release = next((s for s in (e.suite for e in web) if f"{s}-security" in suites), None)
    mirror = next((e.uri for e in web if e.suite == release), None)
    security = next((e.uri for e in web if e.suite in (f"{release}-security", f"{release}/updates")), None)
    if not release or not mirror or not security:
        seen = ", ".join(f"{e.uri} {e.suite} ({e.where})" for e in entries) or "no deb entry at all"
        missing = " and ".join(w for w, v in (("the release", mirror), ("its -security suite", security)) if not v)
        raise LabError(f"this machine's apt sources name no http(s) archive for {missing} "
                       f"(release {release or 'unknown'}; found: {seen})",
                       "the lab's servers use the build machine's Debian archive: configure its own release and "
                       "<codename>-security in /etc/apt/sources.list.d/debian.sources")
    return mirror, security


def archive(etc: Path = Path("/etc/apt"), os_release: Path = Path("/etc/os-release")) -> tuple[str, str]:
    """(mirror, security): the Debian archive URIs this build machine's apt uses (see module doc)."""
    return pick(read_entries(etc), codename(os_release))
