"""The exit-code and message sweep (issue #18): every verb and option of the CLI driven with bad input
and bad set-up. Each case must end with exit 2 and a message naming the file, option or setting and
the fix; no traceback, no Python repr, no pydantic wording; nothing written on this machine; no
connection tried (no socket connects, no name lookups, no program started: the lab's services
included). Cases marked `fixed` ended otherwise (exit 1, a false exit 0, an unclear message, or a
side effect) before the sweep."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ansible.parsing.vault  # noqa: F401  (imported before the guard: on import it probes libc and a socket)
import pytest
from typer.testing import CliRunner

from schoolctl.cli.main import app
from schoolctl.secrets import SecretStore

from .conftest import Run, edit

HEADER = "given_name,family_name,role,group,email\n"
# what a person should never be shown: tracebacks, reprs, library wording instead of ours
UNCLEAR = re.compile(r"Traceback|<class |ValidationError|Value error,|Input should be a valid date|object at 0x"
                     r"|\[Errno|internal error|CommentedMap|CommentedSeq|Exception:|Error: \w+Error")


@dataclass
class Env:
    """Where a case stands: the work folder (cwd, with schools/), the vault's key and folder."""

    work: Path
    key: Path
    secrets: Path

    @property
    def schools(self) -> Path:
        return self.work / "schools"


@dataclass
class Case:
    args: tuple[str, ...]
    expect: str                                  # a regex that stderr must match (names the thing and/or the fix)
    setup: Callable[[Env], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    fixed: bool = False                          # it failed the sweep before this change
    stdout: bool = False                         # `expect` is in stdout (a school's failed result in `plan`)


CASES: dict[str, Case] = {}


def case(name: str, *args: str, expect: str, **kw) -> None:
    assert name not in CASES, name
    CASES[name] = Case(args, expect, **kw)


# --- helpers that break one thing ------------------------------------------------------------------

def write(rel: str, data: str | bytes) -> Callable[[Env], None]:
    def setup(e: Env) -> None:
        p = e.work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data) if isinstance(data, bytes) else p.write_text(data, encoding="utf-8")
    return setup


def folder(rel: str) -> Callable[[Env], None]:
    return lambda e: (e.work / rel).mkdir(parents=True)


def replace(rel: str, old: str, new: str) -> Callable[[Env], None]:
    return lambda e: edit(e.work / rel, old, new)


def both(*steps: Callable[[Env], None]) -> Callable[[Env], None]:
    def setup(e: Env) -> None:
        for s in steps:
            s(e)
    return setup


def loopback(e: Env) -> None:
    """escola-pins served at a closed port of 127.0.0.1: any connection would be caught by the guard."""
    edit(e.schools / "escola-pins.yaml", "server: 10.20.42.10", "server: {address: 127.0.0.1, ssh_port: 1}")


def key(e: Env) -> None:
    e.key.parent.mkdir(parents=True, exist_ok=True)
    e.key.write_text("k" * 64)


def vault_of(scope: str, as_: str, key_text: str = "k" * 64) -> Callable[[Env], None]:
    """A real vault of `scope` encrypted with `key_text`, stored as `as_`.vault."""
    def setup(e: Env) -> None:
        other = e.work / "other.key"
        other.write_text(key_text)
        SecretStore(e.secrets, other).put(scope, "x", "abcdefghij")
        if as_ != scope:
            (e.secrets / f"{scope}.vault").rename(e.secrets / f"{as_}.vault")
        other.unlink()
    return setup


def first(rel: str, old: str, new: str) -> Callable[[Env], None]:
    """`old` replaced by `new` where it first occurs in `rel`."""
    def setup(e: Env) -> None:
        text = (e.work / rel).read_text(encoding="utf-8")
        assert old in text
        (e.work / rel).write_text(text.replace(old, new, 1), encoding="utf-8")
    return setup


def fifo(rel: str) -> Callable[[Env], None]:
    def setup(e: Env) -> None:
        (e.work / rel).unlink(missing_ok=True)
        os.mkfifo(e.work / rel)
    return setup


S = ("--schools-dir", "schools")
PINS_LINE = "server: 10.20.42.10"

# --- the schools folder and its files ---------------------------------------------------------------
case("schools-dir missing", "--schools-dir", "nowhere", "validate", expect=r"^nowhere:1:1: no such schools folder")
case("schools-dir is a file", "--schools-dir", "schools/demo.yaml", "validate",
     expect=r"schools/demo.yaml:1:1: not a folder \(pass --schools-dir", fixed=True)
case("schools-dir option empty", "--schools-dir", "", "validate", expect=r"--schools-dir is empty", fixed=True)
case("SCHOOLCTL_SCHOOLS_DIR blank", "validate", env={"SCHOOLCTL_SCHOOLS_DIR": " "},
     expect=r"SCHOOLCTL_SCHOOLS_DIR is set but empty", fixed=True)
case("fleet file missing", *S, "list", setup=lambda e: (e.schools / "fleet.yaml").unlink(),
     expect=r"schools/fleet.yaml:1:1: the fleet file is missing")
case("fleet file is a folder", *S, "validate",
     setup=both(lambda e: (e.schools / "fleet.yaml").unlink(), folder("schools/fleet.yaml")),
     expect=r"schools/fleet.yaml:1:1: cannot read the file: Is a directory")
case("fleet file empty", *S, "validate", setup=write("schools/fleet.yaml", ""),
     expect=r"schools/fleet.yaml:1:1: the file is empty")
case("fleet file binary", *S, "validate", setup=write("schools/fleet.yaml", b"\x00\x01\x02\xff"),
     expect=r"schools/fleet.yaml:1:\d+: the file is not valid UTF-8")
case("fleet file a list", *S, "validate", setup=write("schools/fleet.yaml", "- a\n- b\n"),
     expect=r"schools/fleet.yaml:1:1: expected a mapping of keys, found a list")
case("school file non-UTF-8", *S, "list",
     setup=write("schools/demo.yaml", "id: demo\nname: Escola\xe9\n".encode("latin-1")),
     expect=r"schools/demo.yaml:2:\d+: the file is not valid UTF-8 text \(save it as UTF-8\)")
case("school file huge", *S, "validate", setup=write("schools/demo.yaml", "# " + "x" * (2 * 1024 * 1024) + "\n"),
     expect=r"schools/demo.yaml:1:1: the file is too large")
case("school file a FIFO", *S, "validate", setup=fifo("schools/demo.yaml"),
     expect=r"schools/demo.yaml:1:1: cannot read the file: it is a named pipe")
case("school file a scalar", *S, "validate", setup=write("schools/demo.yaml", "just text\n"),
     expect=r"schools/demo.yaml:1:1: expected a mapping of keys, found a str")
case("school file YAML error", *S, "plan", "demo", setup=replace("schools/demo.yaml", "name: Escola Demo", "name: [x"),
     expect=r"schools/demo.yaml:\d+:\d+: YAML syntax error")
case("school file alias bomb", *S, "validate",
     setup=write("schools/demo.yaml", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
         f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
         for p, c in zip("abcde", "bcdef", strict=True))),
     expect=r"schools/demo.yaml:\d+:\d+: the alias \*\w would expand the document")

# --- wrong types and values, one of each kind of field ---------------------------------------------
for name, rel, old, new, expect in [
    ("text field given a list", "demo", "name: Escola Demo", "name: [1, 2]", r"demo.yaml:\d+:\d+: name: expected text"),
    ("whole number given text", "demo", "log_retention_days: 7", "log_retention_days: many",
     r"privacy.log_retention_days: expected a whole number, got 'many'"),
    ("whole number given a float", "demo", "log_retention_days: 7", "log_retention_days: 7.5",
     r"privacy.log_retention_days: expected a whole number"),
    ("number out of range", "demo", "log_retention_days: 7", "log_retention_days: -1",
     r"privacy.log_retention_days: -1 is out of range \(it must be"),
    ("true/false given text", "demo", "log_retention_days: 7", "guests: maybe",
     r"privacy.guests: expected true or false"),
    ("a list given text", "demo", "server: lab:demo", "server: lab:demo\nlanguages: ca",
     r"languages: expected a list"),
    ("a mapping given a list", "demo", "  jitsi: {}", "  jitsi: [a]", r"services.jitsi: "),
    ("a choice given another word", "fleet", "mode: acme", "mode: letsencrypt",
     r"tls.mode: 'letsencrypt' is not one of: acme, provided, internal"),
    ("a pattern field", "demo", "default_quota: 2 GB", "default_quota: lots",
     r"services.nextcloud.default_quota: 'lots' is not valid \(expected a size such as '5 GB'"),
    ("an address starting with -", "demo", "server: lab:demo", "server: -oProxyCommand=x",
     r"server.address: .*starts with '-'"),
    ("a port out of range", "escola-pins", PINS_LINE, "server: {address: 10.20.42.10, ssh_port: 70000}",
     r"server.ssh_port: 70000 is out of range"),
    ("an e-mail address", "demo", "email: dpd@bcn.example", "email: nobody", r"contacts.dpo.email: "),
    ("a time zone", "fleet", "timezone: Europe/Madrid", "timezone: Mars/Olympus", r"timezone: "),
    ("a date given text", "fleet", "  until: 2027-03-31", "  until: soon",
     r"accept\[0\].until: expected a date, got 'soon' \(write it as YYYY-MM-DD"),
    ("a date given a number", "fleet", "  until: 2027-03-31", "  until: 12345678901234567890",
     r"accept\[0\].until: expected a date"),
    ("a date given a list", "fleet", "security_until: 2027-10-04}     # LTS\n      - {line: \"5.0\"",
     "security_until: [1]}     # LTS\n      - {line: \"5.0\"",
     r"support.moodle.lines\[0\].security_until: expected a date"),
    ("an unknown key", "demo", "server: lab:demo", "server: lab:demo\nsevices: {}", r"unknown key 'sevices'"),
    ("an unknown nested key", "demo", "log_retention_days: 7", "log_retention_days: 7\n  gests: false",
     r"unknown key 'gests' under 'privacy'"),
    ("a required key null", "demo", "district: Ciutat Vella", "district: null", r"district: "),
    ("a laxer privacy value", "demo", "log_retention_days: 7", "log_retention_days: 99",
     r"privacy.log_retention_days: 99 is laxer than the fleet floor"),
]:
    f = "schools/fleet.yaml" if rel == "fleet" else f"schools/{rel}.yaml"
    fixed = "date" in name
    ids = () if rel == "fleet" else (rel,)
    case(f"field: {name}", *S, "validate", *ids, setup=first(f, old, new), expect=expect, fixed=fixed)

# a setting that only the rendering used to refuse (exit 1 and "ValueError: ..." from `plan`)
case("tls internal without its CA", *S, "validate", setup=first("schools/fleet.yaml", "mode: acme", "mode: internal"),
     expect=r"schools/fleet.yaml:18:\d+: tls.mode: 'internal' issues the schools' certificates from the city's CA, "
            r"but ca_file and ca_key_file are not set \(add `ca_file: ", fixed=True)
case("tls internal without its CA key", *S, "plan", "escola-pins",
     setup=both(loopback, first("schools/fleet.yaml", "mode: acme", "mode: internal\n  ca_file: /srv/ca.pem")),
     expect=r"schools/fleet.yaml:18:\d+: tls.mode: .* but ca_key_file is not set \(add `ca_key_file: ", fixed=True)

# one broken file is refused by every verb that reads the fleet, before anything else
BROKEN = replace("schools/demo.yaml", "name: Escola Demo", "name: [1, 2]")
for verb in (("list",), ("inventory",), ("plan", "demo"), ("deploy", "demo", "--yes"), ("audit", "demo"),
             ("backup", "demo"), ("backup", "list", "demo"), ("rollback", "demo", "moodle", "--yes"),
             ("new", "escola-nova"), ("restore", "demo", "--to", "127.0.0.1", "--yes")):
    case(f"broken school: {' '.join(verb)}", *S, *verb, setup=BROKEN,
         expect=r"schools/demo.yaml:\d+:\d+: name: expected text")

# --- choosing schools ------------------------------------------------------------------------------
case("unknown school id", *S, "plan", "nosuch", expect=r"schools/nosuch.yaml:1:1: no school 'nosuch' .*known schools")
case("unknown school, close", *S, "validate", "demoo", expect=r"did you mean 'demo'\?")
case("no school named", *S, "deploy", "--yes", expect=r"name the schools to work on, pass --all")
case("ids and --all", *S, "deploy", "demo", "--all", "--yes", expect=r"--all and the school ids demo ask for two "
     "selections", fixed=True)
case("--limit empty", *S, "list", "--limit", "", expect=r"--limit '' names no school", fixed=True)
case("--limit only commas", *S, "plan", "--limit", ",,", expect=r"--limit ',,' names no school", fixed=True)
case("--limit bare !", *S, "list", "--limit", "!", expect=r"--limit !: '!' leaves out nothing", fixed=True)
case("--limit unknown selector", *S, "list", "-l", "town=x", expect=r"--limit town=x: unknown selector 'town='")
case("--limit district=", *S, "list", "-l", "district=", expect=r"--limit district=: no district named")
case("--limit unknown service", *S, "validate", "-l", "service=wiki", expect=r"there is no service 'wiki'")
case("--limit matches nothing", *S, "list", "-l", "zz-*", expect=r"--limit zz-\* matches no school")
case("--limit leaves out everything", *S, "audit", "-l", "demo,!demo", expect=r"matches no school")
case("--parallel 0", *S, "deploy", "demo", "--parallel", "0", expect=r"Invalid value for '--parallel'")
case("--parallel text", *S, "plan", "demo", "--parallel", "many", expect=r"Invalid value for '--parallel'")

# --- settings ----------------------------------------------------------------------------------------
for var in ("SCHOOLCTL_JOURNAL", "SCHOOLCTL_LAB_DIR", "SCHOOLCTL_LAB_SUBNET", "SCHOOLCTL_LETTERS_FONT"):
    case(f"{var} empty", *S, "validate", env={var: ""}, expect=rf"{var} is set but empty", fixed=True)
case("SCHOOLCTL_MIRROR empty", *S, "plan", "demo", env={"SCHOOLCTL_MIRROR": ""},
     expect=r"SCHOOLCTL_MIRROR is set but empty")
case("SCHOOLCTL_MIRROR relative", *S, "plan", "demo", env={"SCHOOLCTL_MIRROR": "mirror"},
     expect=r"SCHOOLCTL_MIRROR: .*neither an absolute path nor")
case("SCHOOLCTL_LAYERS unknown", *S, "deploy", "demo", "--yes", env={"SCHOOLCTL_LAYERS": "base,wiki"},
     expect=r"SCHOOLCTL_LAYERS names unknown layer\(s\) wiki")
case("SCHOOLCTL_LAYERS no layer", *S, "deploy", "demo", "--yes", env={"SCHOOLCTL_LAYERS": ","},
     expect=r"SCHOOLCTL_LAYERS=',' names no layer", fixed=True)
case("SCHOOLCTL_LOG unknown", *S, "validate", env={"SCHOOLCTL_LOG": "LOUD"}, expect=r"SCHOOLCTL_LOG='LOUD' is not a "
     "log level", fixed=True)
case("SCHOOLCTL_LAB_DIR a file", "lab", "status", env={"SCHOOLCTL_LAB_DIR": "/etc/hostname"},
     expect=r"SCHOOLCTL_LAB_DIR=/etc/hostname is not a folder", fixed=True)
case("SCHOOLCTL_LAB_SUBNET bad", "lab", "status", env={"SCHOOLCTL_LAB_SUBNET": "ten"},
     expect=r"SCHOOLCTL_LAB_SUBNET='ten' is not an IPv4 network")
case("SCHOOLCTL_LAB_SUBNET public", "lab", "status", env={"SCHOOLCTL_LAB_SUBNET": "8.8.8.0/24"},
     expect=r"must be a private range")
case("SCHOOLCTL_JOURNAL a folder", *S, "log", setup=folder("journal"), env={"SCHOOLCTL_JOURNAL": "journal"},
     expect=r"SCHOOLCTL_JOURNAL=journal is a folder", fixed=True)
case("SCHOOLCTL_VAULT_KEY_FILE empty", "secrets", "init", env={"SCHOOLCTL_VAULT_KEY_FILE": ""},
     expect=r"SCHOOLCTL_VAULT_KEY_FILE is set but empty")
case("SCHOOLCTL_SECRETS_DIR empty", "secrets", "list", "demo", env={"SCHOOLCTL_SECRETS_DIR": ""},
     expect=r"SCHOOLCTL_SECRETS_DIR is set but empty")

# --- a broken mirror: bad set-up, refused before any school is touched (it was "app left out", exit 1) --
def mirror(sums: str | None = None, link: bool = False) -> Callable[[Env], None]:
    """The fleet's mirror: a folder of the work folder with this SHA256SUMS (None: none; `link`: the
    SHA256SUMS a symlink to a file with that text elsewhere); escola-pins on a closed loopback port.
    `plan` shows the school's failure in its result (stdout); the guard proves nothing connected."""
    def setup(e: Env) -> None:
        folder = e.work / "mirror"
        folder.mkdir()
        if sums is not None:
            target = e.work / ("elsewhere" if link else "mirror/SHA256SUMS")
            target.write_text(sums, encoding="utf-8")
            if link:
                (folder / "SHA256SUMS").symlink_to(target)
        edit(e.schools / "fleet.yaml", "mirror: null", f"mirror: {folder}")
        loopback(e)
    return setup


GOOD_SUMS = f"{'a' * 64}  moodle-5.3.tgz\n"
case("mirror: a climbing SHA256SUMS entry", *S, "plan", "escola-pins", setup=mirror(GOOD_SUMS + f"{'b' * 64}  ../x\n"),
     expect=r"mirror/SHA256SUMS line 2: the entry '\.\./x' is not a plain file name.*\n.*hint: .*fix or remove that "
            r"line", fixed=True, stdout=True)
case("mirror: an absolute SHA256SUMS entry", *S, "plan", "escola-pins",
     setup=mirror(f"{'b' * 64}  /etc/passwd\n"), expect=r"SHA256SUMS line 1: the entry '/etc/passwd'", fixed=True,
     stdout=True)
case("mirror: SHA256SUMS a symlink", *S, "plan", "escola-pins", setup=mirror(GOOD_SUMS, link=True),
     expect=r"mirror/SHA256SUMS is a symlink; .*\n.*hint: put the file itself there", fixed=True, stdout=True)
case("mirror: no SHA256SUMS", *S, "plan", "escola-pins", setup=mirror(None),
     expect=r"the mirror folder .*mirror has no SHA256SUMS file\n.*hint: list the folder's files", fixed=True,
     stdout=True)

# --- the vault (the runner reports a vault a deploy cannot use per school, in its results: exit 1) ------
case("secrets list, wrong key", "secrets", "list", "demo", setup=both(key, vault_of("demo", "demo", "z" * 64)),
     expect=r"cannot decrypt .*demo.vault: wrong vault key")
case("secrets list, another school's vault", "secrets", "list", "escola-pins",
     setup=both(key, vault_of("demo", "escola-pins")), expect=r"belongs to 'demo', not to 'escola-pins'")
case("secrets list, corrupt vault", "secrets", "list", "demo",
     setup=both(key, write("../vault/secrets/demo.vault", "x")),
     expect=r"cannot decrypt .*demo.vault")
case("secrets list, vault a folder", "secrets", "list", "demo", setup=both(key, folder("../vault/secrets/demo.vault")),
     expect=r"the vault .*demo.vault is not a file", fixed=True)
case("secrets list, bad scope", "secrets", "list", "Demo!", expect=r"invalid vault name 'Demo!'")
case("secrets set, short value", "secrets", "set", "fleet", "bbb_pool", stdin="short", setup=key,
     expect=r"a secret needs at least 8 characters")
case("secrets set, two lines", "secrets", "set", "fleet", "bbb_pool", stdin="abcdefghij\nsecond", setup=key,
     expect=r"the value has a newline or another control character")
case("secrets set, reserved name", "secrets", "set", "fleet", "_scope", stdin="abcdefghij", setup=key,
     expect=r"'_scope' is reserved")
case("secrets set, folder is a file", "secrets", "set", "fleet", "bbb_pool", stdin="abcdefghij",
     setup=both(key, write("../vault/secrets", "")), expect=r"cannot write .*fleet.vault: ", fixed=True)
case("secrets init, key path a folder", "secrets", "init", setup=folder("../vault/vault.key"),
     expect=r"the vault key .*vault.key is not a file", fixed=True)
case("secrets init, key path impossible", "secrets", "init", env={"SCHOOLCTL_VAULT_KEY_FILE": "/proc/none/vault.key"},
     expect=r"cannot write /proc/none/vault.key: ", fixed=True)

# --- lab hosts: refused before the lab's services are started or anything is asked ------------------
case("plan: lab host absent", *S, "plan", "demo",
     expect=r"schools/demo.yaml: server lab:demo: no lab host demo on this machine \(run `schoolctl lab up demo` "
            r"first\)", fixed=True)
case("deploy: lab host absent", *S, "deploy", "demo", "--yes", setup=key, expect=r"no lab host demo on this machine",
     fixed=True)
case("audit: lab host absent", *S, "audit", "demo", expect=r"no lab host demo on this machine", fixed=True)
case("backup: lab host absent", *S, "backup", "demo", expect=r"no lab host demo on this machine", fixed=True)
case("rollback: lab host absent", *S, "rollback", "demo", "moodle", "--yes", expect=r"no lab host demo on this "
     "machine", fixed=True)
case("lab up, bad name", "lab", "up", "Bad_Name", expect=r"invalid lab host name 'Bad_Name'")
case("lab up, no name", "lab", "up", expect=r"Missing argument")
case("lab up, timeout below 1", "lab", "up", "t-bad-x", "--timeout", "-1", expect=r"Invalid value for '--timeout'",
     fixed=True)
case("lab ssh, unknown host", "lab", "ssh", "t-bad-none", expect=r"no lab host t-bad-none; run `schoolctl lab up")
case("lab down, bad name", "lab", "down", "x--y", expect=r"invalid lab host name 'x--y'", fixed=True)

# --- options of the verbs ---------------------------------------------------------------------------
case("new: existing id", *S, "new", "demo", expect=r"schools/demo.yaml already exists")
case("new: bad id", *S, "new", "Escola Nova", expect=r"'Escola Nova' is not a valid school id")
case("new: empty name", *S, "new", "escola-nova", "--name", "", expect=r"--name is empty", fixed=True)
case("new: empty district", *S, "new", "escola-nova", "--district", " ", expect=r"--district is empty", fixed=True)
case("new: folder not writable", "--schools-dir", "/proc/none/schools", "new", "escola-nova",
     expect=r"cannot write /proc/none/schools/fleet.yaml: ", fixed=True)
case("inventory: unknown format", *S, "inventory", "--format", "csv",
     expect=r"unknown format 'csv': use one of pyinfra, ansible, json", fixed=True)
case("inventory: two formats", *S, "inventory", "--json", "--format", "ansible", expect=r"ask for two formats")
case("inventory: output a folder", *S, "inventory", "-o", "schools", expect=r"--output schools is a folder", fixed=True)
case("inventory: output impossible", *S, "inventory", "-o", "/proc/none/inv.json",
     expect=r"--output /proc/none/inv.json: cannot make its folder", fixed=True)
case("audit: unknown format", *S, "audit", "demo", "--format", "pdf", expect=r"unknown format 'pdf'")
case("audit: two formats", *S, "audit", "demo", "--json", "--format", "html", expect=r"ask for two formats")
case("audit: unknown language", *S, "audit", "demo", "--lang", "fr", expect=r"unknown language 'fr'")
case("audit: unknown control", *S, "audit", "demo", "-c", "WEB-NOPE", expect=r"unknown control\(s\) WEB-NOPE")
case("audit: output a folder", *S, "audit", "demo", "-f", "html", "-o", "schools",
     expect=r"--output schools is a folder")
case("audit: output for the table", *S, "audit", "demo", "-o", "audit.txt",
     expect=r"--output audit.txt: the table is printed on the terminal; give --format", fixed=True)
case("deploy: not confirmed", *S, "deploy", "escola-pins", setup=both(loopback, key),
     expect=r"not confirmed \(stdin is not a terminal\).*\n.*pass --yes")
case("rollback: unknown app", *S, "rollback", "demo", "wordpress",
     expect=r"'wordpress' is not an app schoolctl upgrades")
case("rollback: app not run", *S, "rollback", "escola-pins", "etherpad", "--yes",
     setup=replace("schools/escola-pins.yaml", "  etherpad: {}\n", ""), expect=r"escola-pins has no etherpad")
case("restore: --to an option", *S, "restore", "demo", "--to", "-oProxyCommand=x", "--yes", expect=r"--to "
     r"-oProxyCommand=x: .*starts with '-'")
case("restore: --to missing", *S, "restore", "demo", expect=r"Missing option '--to'")
case("backup: no backup host", *S, "backup", "demo", setup=lambda e: _no_backup(e), expect=r"the fleet names no "
     "backup host for demo")
case("log: bad --since", "log", "--since", "yesterday", expect=r"--since: 'yesterday' is neither a date")
case("log: journal not UTF-8", "log", setup=write("../journal.jsonl", b"\xff\xfe{}\n"),
     expect=r"the run journal .*journal.jsonl is not UTF-8 text", fixed=True)
case("unknown verb", "deplyo", expect=r"No such command 'deplyo'")
case("unknown option", *S, "list", "--jsn", expect=r"No such option: --jsn")


def _no_backup(e: Env) -> None:
    text = (e.schools / "fleet.yaml").read_text(encoding="utf-8")
    start = text.index("\nbackup:")
    end = re.search(r"\n\S", text[start + 1:])
    (e.schools / "fleet.yaml").write_text(text[:start + 1] + (text[start + 1 + end.start() + 1:] if end else ""),
                                         encoding="utf-8")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            found[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size if p.is_file() else 0)
    return found


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection, name lookup or program start a case tries, recorded and refused."""
    tried: list[str] = []

    def refuse(what: str):
        def stop(*args, **kwargs):
            tried.append(f"{what} {args[1:2] or args[:1]}")
            raise OSError(f"the sweep refuses {what}")
        return stop

    lookup = socket.getaddrinfo

    def resolve(host, *args, **kwargs):  # a loopback address literal is no lookup (ansible probes one on import)
        try:
            if ipaddress.ip_address(host).is_loopback:
                return lookup(host, *args, **kwargs)
        except ValueError:
            pass
        return refuse("getaddrinfo")(None, host)

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess"))
    return tried


def test_the_sweep_is_wide() -> None:
    assert len(CASES) >= 100
    assert sum(c.fixed for c in CASES.values()) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, schools: Path, tmp_path: Path, guard: list[str]) -> None:
    c = CASES[name]
    env = Env(schools.parent, tmp_path / "vault" / "vault.key", tmp_path / "vault" / "secrets")
    if c.setup:
        c.setup(env)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, list(c.args), env=c.env or None, input=c.stdin)
    run = Run(result.exit_code, result.stdout, result.stderr, result)
    assert not guard, f"tried before refusing: {guard}"
    assert run.result.exception is None or isinstance(run.result.exception, SystemExit), repr(run.result.exception)
    assert run.code == 2, f"exit {run.code}\n{run.stderr}{run.stdout}"
    assert re.search(c.expect, run.stdout if c.stdout else run.stderr), run.stderr + run.stdout
    assert not UNCLEAR.search(run.stderr), run.stderr
    assert not c.stdout or not UNCLEAR.search(run.stdout), run.stdout
    assert _snapshot(tmp_path) == before, "something was written"
