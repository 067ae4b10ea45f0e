"""Input is data, never code, proven for every field: each string value of the fleet file and of a
school file with all five services (every optional string field filled, and the keys of the
mappings keyed by version) is given hostile values, one at a time and in three shapes: the value
replaced by the hostile one, the hostile one appended to the valid value, and inserted inside it
(after its `://`, its first space or its `@`, else in its middle: a field whose format starts with a
prefix, a URL, an SSH key or an e-mail address, sees hostile content past the prefix). A few
variants of the files reach the rendering of what the main one leaves unused: the city CA
(`tls.mode: internal`), a school's own certificate files (`provided`), the city's BigBlueButton
pool. Each value is either refused by `validate` (a ConfigError naming file and line), or refused
when rendering (a clear error, nothing deployed), or rendered harmlessly:
(a) every shell command (steps' check/apply, files' check/then) still parses into the same number
    of words, and neither the value nor its hostile part stands outside single quotes;
(b) every rendered file keeps its shape: as many lines; JavaScript that node parses (node is
    required: the test fails without it); JSON and YAML (yaml.safe_load) that parse into the same
    keys; LDIF with the same records and attributes, every value a valid LDIF value; properties with
    the same keys; APT configuration with the same statements around its quoted values;
(c) the value appears only where it belongs: no new file path, no path with `..`.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from schoolctl.config.loader import effective
from schoolctl.config.model import Fleet, School
from schoolctl.deploy.bbb_host import bbb_rounds
from schoolctl.deploy.school import school_rounds
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Round
from schoolctl.errors import SchoolctlError
from schoolctl.secrets import Secret

from .conftest import city_ca
from .rendered import commands, files

REPO = Path(__file__).resolve().parents[2]
SCHOOL = "institut-mar"  # all five services, BigBlueButton on its own host
HOSTILE = ["a'b", 'a"b', "$(touch /tmp/pwned)", "`id`", "a;reboot", "x\nkeepRecordings=true", "../../etc/x",
           "-oProxyCommand=x", "</script><script>alert(1)</script>", "=HYPERLINK(1)", "a b&c|d"]
SHAPES = ("replace", "append", "insert")
NODE = shutil.which("node")
NO_NODE = "node is needed to parse the rendered JavaScript (Debian: apt install nodejs)"
Path_ = tuple[Any, ...]
# a placeholder for the files the variants name on the controller, replaced by the real folder in a test
CONTROLLER = "/controller"


@dataclass(frozen=True)
class Key:
    """In a path: the key (not the value) of a mapping keyed by data, e.g. a pinned version."""

    name: str

    def __str__(self) -> str:
        return f"<{self.name}>"


# the mappings whose keys are data (versions, language packs), not the model's own field names
KEYED = {("artifacts", a, m) for a in ("moodle", "nextcloud", "etherpad", "node") for m in ("sha256", "files", "urls")}
KEYED.add(("artifacts", "langpacks", "sha256"))


def _leaves(data: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    """(path, value) of every string leaf of parsed YAML, and of every key of the KEYED mappings."""
    if isinstance(data, dict):
        for k, v in data.items():
            if path in KEYED:
                yield (*path, Key(k)), k
            yield from _leaves(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _leaves(v, (*path, i))
    elif isinstance(data, str):
        yield path, data


def _set(data: Any, path: Path_, value: str) -> Any:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    if isinstance(path[-1], Key):  # rename the key, keeping its value and the mapping's order
        items = list(node.items())
        node.clear()
        node.update((value if k == path[-1].name else k, v) for k, v in items)
    else:
        node[path[-1]] = value
    return out


def _at(original: str) -> int:
    """Where the `insert` shape puts the hostile value: past the format's prefix."""
    for mark in ("://", " ", "@"):
        if mark in original:
            return original.index(mark) + len(mark)
    return len(original) // 2


def _values(original: str, shape: str) -> list[tuple[str, str]]:
    """(field value, its hostile part) of one shape."""
    if shape == "replace":
        return [(h, h) for h in HOSTILE]
    if shape == "append":
        return [(original + h, h) for h in HOSTILE]
    i = _at(original)
    return [(original[:i] + h + original[i:], h) for h in HOSTILE]


# --- the files: the shipped ones with every optional string field filled, and their variants --------

def _raw(variant: str = "base", controller: str = CONTROLLER) -> tuple[dict[str, Any], dict[str, Any]]:
    fleet = yaml.safe_load((REPO / "schools" / "fleet.yaml").read_text())
    school = yaml.safe_load((REPO / "schools" / f"{SCHOOL}.yaml").read_text())
    fleet.update(dns=["192.0.2.53"], ntp=["ntp.escoles.bcn.example"], proxy="http://proxy.bcn.example:3128",
                 mirror="https://mirror.bcn.example/schoolctl/")
    art = fleet["artifacts"]
    versions = {app: art[app]["version"] for app in ("moodle", "nextcloud", "etherpad", "node")}
    for n, (app, version) in enumerate(versions.items()):  # every release pinned (so rendered), its own name and URL
        art[app]["sha256"] = {**art[app].get("sha256", {}), version: f"{n + 1:x}" * 64}
        art[app]["files"] = {**art[app].get("files", {}), version: art[app]["file"].format(version=version)}
        art[app]["urls"] = {**art[app].get("urls", {}), version: art[app]["url"]}
    art["etherpad"]["sha256"]["2.5.3"] = "e" * 64
    art["langpacks"]["sha256"] = {"4.5/ca": "f" * 64}
    for n, app in enumerate(("moodle", "nextcloud", "etherpad", "debian")):
        support = fleet["support"][app]
        support["lines"][0]["source"] = f"https://releases.example/{app}"
        support.setdefault("advisories", []).append(
            {"id": f"CVE-2026-{n + 1000}", "affected": ">=1.0,<1.1", "fixed": "1.1", "severity": "low",
             "summary": f"an advisory of {app}"})
    fleet["backup"].update(host={"address": "backup.bcn.example", "ssh_user": "borgadmin"}, user="borg",
                           path="/srv/schoolctl-backups")
    services = school["services"]
    for app in ("moodle", "nextcloud", "etherpad"):
        services[app] = {**(services[app] if isinstance(services[app], dict) else {}), "version": versions[app]}
    services["jitsi"] = {"version": "2.0"}
    services["bigbluebutton"]["version"] = "3.0"
    services["bigbluebutton"]["server"]["ssh_user"] = "ubuntu"
    if variant == "internal":
        fleet["tls"] = {"mode": "internal", "ca_file": f"{controller}/city-ca.pem",
                        "ca_key_file": f"{controller}/city-ca.key"}
    elif variant == "provided":
        fleet["tls"] = {"mode": "provided"}
        school["tls"] = {"cert_file": "fullchain.pem", "key_file": "privkey.pem"}
    elif variant == "pool":  # and a Jitsi repository with components (the real one is flat: `stable/`)
        fleet["bbb_pool"] = {"url": "https://bbb.bcn.example/bigbluebutton/", "secret_name": "bbb_pool"}
        services["bigbluebutton"] = {"pool": True, "version": "3.0"}
        fleet["apt_repos"]["jitsi"].update(suite="stable", components=["main"])
    return fleet, school


VARIANTS = ("base", "internal", "provided", "pool")


def _render(fleet: dict[str, Any], school: dict[str, Any]) -> tuple[list[Round], Site]:
    """Validate with the model (what `validate` checks per field; the loader adds only positions and
    cross-file checks) and render every layer of the school server and its BBB host."""
    eff = effective(School.model_validate(school), Fleet.model_validate(fleet), f"schools/{SCHOOL}.yaml")
    site = Site(school=eff, secret=lambda name, length=32: Secret("S" * length),
                fleet_secret=lambda name, length=32: Secret("P" * 32), proxy=fleet.get("proxy"),
                apt_proxy=fleet.get("proxy"), mirror=None, acme_directory=eff.fleet.tls.acme_directory or "")
    if eff.backup is not None:  # as deploy/sites.py sets them for a backup host that is not a lab host
        site.backup_address, site.backup_port = eff.backup.host.address, eff.backup.host.ssh_port
        site.backup_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBackupHostKeyOfTheTestOnly00000000000000"
    return school_rounds(site) + bbb_rounds(site), site


# --- the judge -------------------------------------------------------------------------------------

def _single_quoted(cmd: str) -> list[bool]:
    """For each character of a POSIX shell word list: is it inside single quotes?"""
    inside, state, i = [False] * len(cmd), "", 0
    while i < len(cmd):
        c = cmd[i]
        if state == "'":
            if c == "'":
                state = ""
            else:
                inside[i] = True
        elif state == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                state = ""
        elif c == "\\":
            i += 1
        elif c in "'\"":
            state = c
        i += 1
    return inside


def _properties_keys(text: str) -> list[str]:
    keys, cont = [], False
    for line in text.splitlines():
        if not cont and line.strip() and not line.lstrip().startswith(("#", "!")):
            keys.append(line.split("=", 1)[0].strip())
        cont = line.endswith("\\") and not line.endswith("\\\\")
    return keys


def _shape(data: Any) -> Any:
    """The structure of parsed JSON/YAML: its keys and nesting, not its values."""
    if isinstance(data, dict):
        return {str(k): _shape(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_shape(v) for v in data]
    return type(data).__name__


_LDIF_ATTR = re.compile(r"^([A-Za-z][A-Za-z0-9-]*(?:;[A-Za-z0-9-]+)*)(::?|:<)( ?)(.*)$")
_LDIF_SAFE = re.compile(r"^[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*$")


def _ldif(text: str) -> list[list[str]]:
    """The records of an LDIF file (RFC 2849), each as its attribute names and `-` separators; a
    line that is no attribute, a value that is no SAFE-STRING or no base64, raise ValueError."""
    records: list[list[str]] = [[]]
    lines: list[str] = []
    for raw in text.split("\n"):
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]  # a folded line
        else:
            lines.append(raw)
    for number, line in enumerate(lines, 1):
        if not line:
            if records[-1]:
                records.append([])
            continue
        if line.startswith("#"):
            continue
        if line == "-":
            records[-1].append("-")
            continue
        m = _LDIF_ATTR.match(line)
        if not m:
            raise ValueError(f"line {number} is no attribute: {line[:80]!r}")
        attr, kind, _, value = m.groups()
        if kind == "::":
            base64.b64decode(value, validate=True)
        elif kind == ":" and value and not _LDIF_SAFE.match(value):
            raise ValueError(f"line {number}: {attr}'s value is no LDIF SAFE-STRING: {value[:80]!r}")
        records[-1].append(attr.lower())
    return [r for r in records if r]


def _apt_skeleton(text: str) -> str:
    """An APT configuration without its quoted values and comments: its statements and braces (APT's
    strings have no escapes: a `"` in a value would end it, and what follows would be statements)."""
    text = re.sub(r'"[^"\n]*"', '""', text)
    return "\n".join(line for line in (re.sub(r"(//|#).*", "", raw).strip() for raw in text.splitlines()) if line)


def _parsed(path: str, text: str) -> Any:
    """What a file's own format makes of it (its shape), or None for a format not parsed here."""
    if path.startswith("/etc/apt/apt.conf.d/"):
        return _apt_skeleton(text)
    if path.endswith(".json"):
        return _shape(json.loads(text))
    if path.endswith((".yml", ".yaml")):
        return _shape(yaml.safe_load(text))
    if path.endswith(".ldif"):
        return _ldif(text)
    if path.endswith(".properties"):
        return _properties_keys(text)
    return None


@dataclass
class Baseline:
    """A variant rendered unchanged, with what the judge compares against computed once."""

    rounds: list[Round]
    commands: list[str] = field(init=False)
    words: dict[str, int] = field(init=False)
    files: dict[str, str] = field(init=False)
    joined: str = field(init=False)
    parsed: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.commands = commands(self.rounds)
        self.words = {c: len(shlex.split(c)) for c in self.commands}
        self.files = files(self.rounds)
        self.joined = " ".join(self.files)
        self.parsed = {p: _parsed(p, t) for p, t in self.files.items()}


_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)  # what shlex.quote leaves as it is


def _outside_quotes(cmd: str, needle: str) -> bool:
    """Whether `needle` occurs in `cmd` with any character of it outside single quotes: unless it is
    made only of characters no shell treats specially (shlex.quote leaves such a word unquoted), and
    does not start a word with `-` (an option)."""
    if not needle or needle not in cmd:
        return False
    quoted = _single_quoted(cmd)
    plain = bool(_SHELL_SAFE.fullmatch(needle))
    start = cmd.find(needle)
    while start != -1:
        if not all(quoted[start:start + len(needle)]):
            starts_word = start == 0 or cmd[start - 1] in " \t\n;|&(){}"
            if not plain or (needle.startswith("-") and starts_word):
                return True
        start = cmd.find(needle, start + 1)
    return False


def _problems(base: Baseline, after: list[Round], value: str, original: str, hostile: str | None = None,
              scripts: dict[str, str] | None = None) -> list[str]:
    """What is wrong with `after` (the rendering with `value`) compared with the baseline. Changed
    JavaScript files are added to `scripts` for one node run (`_unparsed_js`)."""
    bad: list[str] = []
    new_cmds = commands(after)
    if len(base.commands) != len(new_cmds):
        bad.append(f"{len(new_cmds)} commands instead of {len(base.commands)}")
    for old, new in zip(base.commands, new_cmds, strict=False):
        if new == old:
            continue
        try:
            words = shlex.split(new)
        except ValueError as e:
            bad.append(f"command no longer parses ({e}): {new[:200]}")
            continue
        if len(words) != base.words[old]:
            bad.append(f"command has {len(words)} words instead of {base.words[old]}: {new[:300]}")
        if _outside_quotes(new, value) or (hostile != value and _outside_quotes(new, hostile or "")):
            bad.append(f"value outside single quotes in: {new[:300]}")
    new_files = files(after)
    if original not in base.joined:
        added = sorted(set(new_files) - set(base.files))
        if added:
            bad.append(f"new file paths: {added}")
    bad += [f"path with .. or a newline: {p!r}" for p in new_files if "/../" in p or "\n" in p]
    for path, text in new_files.items():
        old = base.files.get(path)
        if old is None or text == old:
            continue
        if text.count("\n") != old.count("\n"):
            bad.append(f"{path}: {text.count(chr(10))} lines instead of {old.count(chr(10))}")
        try:
            shape = _parsed(path, text)
        except (ValueError, yaml.YAMLError) as e:
            bad.append(f"{path}: no longer parses in its format ({str(e)[:200]})")
        else:
            if shape != base.parsed[path]:
                bad.append(f"{path}: its keys, records or attributes changed")
        if path.endswith(".js"):
            if "</script" in text.lower() and "</script" not in old.lower():
                bad.append(f"{path}: holds </script")
            if scripts is not None:
                scripts[f"{len(scripts)}:{value!r}:{path}"] = text
    return bad


def _unparsed_js(scripts: dict[str, str]) -> list[str]:
    """The scripts node cannot parse (one node process; vm.Script compiles without running)."""
    if not scripts:
        return []
    if NODE is None:
        pytest.fail(NO_NODE)
    proc = subprocess.run([NODE, "-e", _PARSE_JS], input=json.dumps(scripts), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [f"{line} (node cannot parse it)" for line in proc.stdout.splitlines()]


_PARSE_JS = """
const vm = require('vm'); let input = '';
process.stdin.on('data', d => input += d).on('end', () => {
  for (const [path, src] of Object.entries(JSON.parse(input))) {
    try { new vm.Script(src, {filename: path}); } catch (e) { console.log(path + ': ' + e.message); }
  }
});
"""


def _judge(base: Baseline, after: list[Round], value: str, original: str) -> list[str]:
    scripts: dict[str, str] = {}
    bad = _problems(base, after, value, original, scripts=scripts)
    return bad + _unparsed_js(scripts)


# --- the cases -------------------------------------------------------------------------------------

@cache
def _paths(variant: str) -> dict[str, dict[Path_, str]]:
    fleet, school = _raw(variant)
    return {"fleet": dict(_leaves(fleet)), "school": {p: v for p, v in _leaves(school) if p != ("id",)}}


def _cases() -> list[tuple[str, str, Path_]]:
    """Every field in the main variant; in the others, the fields the main one lacks or sets otherwise."""
    found = []
    for variant in VARIANTS:
        for where, paths in _paths(variant).items():
            base = _paths("base")[where]
            found += [(variant, where, p) for p, v in paths.items() if variant == "base" or base.get(p) != v]
    return found


def _id(case: Any) -> str:
    return ".".join(map(str, case)) if isinstance(case, tuple) else str(case)


@pytest.fixture(scope="session")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's side of the variants: the city CA's files, and the school's TLS folder under a
    secrets folder of its own (with its certificate files)."""
    folder = tmp_path_factory.mktemp("controller")
    cert, _ = city_ca(folder, days=9, stem="city-ca")
    tls = folder / "secrets" / "tls" / SCHOOL
    tls.mkdir(parents=True)
    (tls / "fullchain.pem").write_bytes(cert.read_bytes())
    (tls / "privkey.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key: the rendering does not read it\n"
                                     "-----END PRIVATE KEY-----\n")
    return folder


def _provide(controller: Path, value: str, original: str) -> None:
    """The file a school's `tls.cert_file`/`key_file` names (a copy of the one `original` names), put
    in its TLS folder (as its technician would) when `validate` accepts the name: the rendering then
    reads it, and is judged."""
    from schoolctl.config.values import in_tls_folder

    folder = (controller / "secrets" / "tls" / SCHOOL).resolve()
    problem, target = in_tls_folder(value, folder)
    if problem is None and target is not None and target not in (folder / "fullchain.pem", folder / "privkey.pem"):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((folder / original).read_text())


@pytest.fixture(scope="session")
def baselines(controller: Path) -> dict[str, Baseline]:
    found = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCHOOLCTL_SECRETS_DIR", str(controller / "secrets"))
        for variant in VARIANTS:
            rounds, site = _render(*_raw(variant, str(controller)))
            assert not site.skipped and not site.left_out, (variant, site.skipped, site.left_out)  # every layer
            found[variant] = Baseline(rounds)
    return found


@pytest.mark.parametrize(("variant", "where", "path"), _cases(), ids=_id)
def test_every_field_is_data_never_code(variant: str, where: str, path: Path_, baselines: dict[str, Baseline],
                                        controller: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOOLCTL_SECRETS_DIR", str(controller / "secrets"))
    fleet, school = _raw(variant, str(controller))
    original = dict(_leaves(fleet if where == "fleet" else school))[path]
    accepted: dict[str, list[str]] = {}
    scripts: dict[str, str] = {}
    tried: set[str] = set()
    for shape in SHAPES:
        for value, hostile in _values(original, shape):
            if value in tried:
                continue
            tried.add(value)
            data = {"fleet": fleet, "school": school}
            data[where] = _set(data[where], path, value)
            if variant == "provided" and where == "school" and path[0] == "tls":
                _provide(controller, value, original)
            try:
                rounds, _ = _render(data["fleet"], data["school"])
            except ValidationError as e:   # refused by validate, with a message for the key
                assert e.errors()[0]["msg"], value
                continue
            except SchoolctlError as e:     # refused when rendering, with a clear message: nothing deployed
                assert e.message, value
                continue
            except ValueError as e:    # a layer's own refusal (e.g. a value a format cannot escape)
                assert str(e), value
                continue
            problems = _problems(baselines[variant], rounds, value, original, hostile, scripts)
            if problems:
                accepted[value] = problems[:5]
    for line in _unparsed_js(scripts):  # each names the value and the file
        accepted.setdefault("javascript", []).append(line)
    assert not accepted, f"{where}.{_id(path)}: " + json.dumps(accepted, indent=1, ensure_ascii=False)[:4000]


# --- the test's own reach --------------------------------------------------------------------------

def _schema_strings(schema: dict[str, Any]) -> set[Path_]:
    """The paths of every free string of a JSON Schema (no enum, no date): `[]` for a list's items,
    `{}` for a mapping's values, `<key>` for its keys."""
    defs, out = schema.get("$defs", {}), set()

    def walk(node: dict[str, Any], path: Path_, seen: frozenset[str]) -> None:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(defs[name], path, seen | {name})
            return
        for sub in node.get("anyOf", []) + node.get("oneOf", []) + node.get("allOf", []):
            walk(sub, path, seen)
        if node.get("type") == "string" and "enum" not in node and "const" not in node \
                and node.get("format") != "date":
            out.add(path)
        for k, sub in node.get("properties", {}).items():
            walk(sub, (*path, k), seen)
        if isinstance(node.get("additionalProperties"), dict):
            out.add((*path, "<key>"))
            walk(node["additionalProperties"], (*path, "{}"), seen)
        if node.get("type") == "array" and "items" in node:
            walk(node["items"], (*path, "[]"), seen)

    walk(schema, (), frozenset())
    return out


def _schema_path(path: Path_) -> Path_:
    out: list[Any] = []
    for i, p in enumerate(path):
        if isinstance(p, Key):
            out.append("<key>")
        elif isinstance(p, int):
            out.append("[]")
        elif path[:i] in KEYED:
            out.append("{}")
        else:
            out.append(p)
    return tuple(out)


def test_every_string_field_of_the_model_gets_hostile_values() -> None:
    """A string field added to the model without a value in these files (or in a variant) fails here:
    the hostile test would never have tried it."""
    # the address alone (`server: HOST`) is a Server's other spelling, tried as its `address`; a school
    # server's `server.ssh_user` is in the files, its BBB server's too
    spelled_out = {("server",), ("services", "bigbluebutton", "server"), ("backup", "host")}
    cases = {(where, _schema_path(p)) for _, where, p in _cases()}
    for where, model in (("fleet", Fleet), ("school", School)):
        wanted = _schema_strings(model.model_json_schema()) - spelled_out - ({("id",)} if where == "school" else set())
        missing = sorted(".".join(p) for p in wanted if (where, p) not in cases)
        assert not missing, f"{where}: string fields no hostile value reaches: {missing}"


def test_the_checks_catch_what_they_claim() -> None:
    """The judge itself: an unquoted value, a split command, a broken script, an added key, line,
    YAML key or LDIF attribute, a broken LDIF value."""
    from schoolctl.deploy.state import File, Step

    assert NODE, NO_NODE

    def rounds(cmd: str, files: dict[str, str]) -> list[Round]:
        r = Round(1)
        r.steps = [Step("s", cmd, "true")]
        r.files = [File(p, t) for p, t in files.items()]
        return [r]

    ok_files = {"/a.js": "var a = 'x';\n", "/b.properties": "a=x\n", "/c.yml": "a:\n  b: x\n",
                "/d.ldif": "dn: cn=x\ncn: x\n", "/e.json": '{"a": "x"}\n'}
    ok = Baseline(rounds("echo 'x'", ok_files))
    v = "$(id)"
    assert _judge(ok, rounds(f"echo {shlex.quote(v)}", {"/a.js": "var a = '$(id)';\n", "/b.properties": "a=$(id)\n"}),
                  v, "x") == []
    assert any("outside single quotes" in p for p in _judge(ok, rounds(f'echo "{v}"', {}), v, "x"))
    assert any("outside single quotes" in p for p in _problems(ok, rounds("echo 'http://'$(id)", {}), "http://$(id)",
                                                               "x", hostile=v))
    assert any("words" in p for p in _judge(ok, rounds("echo a b", {}), "a b", "x"))
    assert any("outside single quotes" in p for p in _judge(ok, rounds("ssh -oProxyCommand=x", {}), "-oProxyCommand=x",
                                                            "x"))
    assert _judge(ok, rounds("curl https://a.example/dir-oProxyCommand=x", {}), "https://a.example/dir-oProxyCommand=x",
                  "x") == []  # one plain word: no option
    assert any("node cannot parse" in p for p in _judge(ok, rounds("echo 'x'", {"/a.js": "var a = 'x'';\n"}), "x'",
                                                        "x"))
    assert any("keys" in p or "lines" in p for p in _judge(ok, rounds("echo 'x'", {"/b.properties": "a=x\nb=y\n"}),
                                                           "x\nb=y", "x"))
    assert any("keys" in p for p in _judge(ok, rounds("echo 'x'", {"/c.yml": "a: {b: x, c: y}\n"}), "x, c: y", "x"))
    assert any("keys" in p for p in _judge(ok, rounds("echo 'x'", {"/c.yml": "a:\n  b: {c: y}\n"}), "{c: y}", "x"))
    assert any("parses" in p for p in _judge(ok, rounds("echo 'x'", {"/c.yml": "a:\n  b: 'x\n"}), "'x", "x"))
    assert any("attributes" in p for p in _judge(ok, rounds("echo 'x'", {"/d.ldif": "dn: cn=x\nuid: x\n"}), "x", "x"))
    assert any("SAFE-STRING" in p for p in _judge(ok, rounds("echo 'x'", {"/d.ldif": "dn: cn=x\ncn: <x\n"}), "<x", "x"))
    assert any("keys" in p for p in _judge(ok, rounds("echo 'x'", {"/e.json": '{"a": "x", "b": 1}\n'}), "x", "x"))
    apt = Baseline(rounds("echo 'x'", {"/etc/apt/apt.conf.d/80p": 'Acquire::http::Proxy "http://p:1";\n'}))
    assert any("keys" in p for p in _judge(apt, rounds("echo 'x'", {"/etc/apt/apt.conf.d/80p": 'Acquire::http::Proxy '
                                                                   '"http://p:1"; DPkg::Pre-Invoke {"id";}; //";\n'}),
                                           'http://p:1"; DPkg::Pre-Invoke {"id";}; //', "x"))
    assert any("new file paths" in p for p in _judge(ok, rounds("echo 'x'", {**ok_files, "/f": ""}), "q", "x"))
    assert _values("http://proxy.example:3128", "insert")[0][0] == "http://a'bproxy.example:3128"
    assert _values("ssh-ed25519 AAAA k@h", "insert")[3][0] == "ssh-ed25519 `id`AAAA k@h"
    assert _values("http://proxy.example:3128/", "append")[2][0] == "http://proxy.example:3128/$(touch /tmp/pwned)"
