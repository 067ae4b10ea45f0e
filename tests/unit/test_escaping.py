"""Defence in depth in the rendering: every value reaches its file or command escaped for that
destination's format, or is refused with a clear error, even when the config model's validation
is bypassed. Each school here is a shipped one with ONE hostile value put in with pydantic's
`model_copy(update=...)`, which does not validate: what is tested is the rendering layer's own
defence (deploy/render.py's filters and checks, shlex.quote in every command)."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from schoolctl.config.loader import load
from schoolctl.config.model import EffectiveSchool
from schoolctl.deploy import (
    artifacts,
    base,
    bbb_host,
    bigbluebutton,
    etherpad,
    identity,
    jitsi,
    render,
    turn,
    web,
)
from schoolctl.deploy.apt_repo import apt_repo
from schoolctl.deploy.identity import ldif_line
from schoolctl.deploy.school import school_rounds
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import File
from schoolctl.errors import ArtifactError
from schoolctl.secrets import Secret

from .rendered import commands, files

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
SCHOOL = "institut-mar"   # all five services, BigBlueButton on its own host
NAME = "Institut L'Alzina </script><script>alert(1)</script>"
NEWLINE = "x\nkeepRecordings=true"
SHELL = ["Europe/Madrid; touch /tmp/pwned", "$(id)", "`id`", "a'b", 'a"b', "a b&c|d"]
NODE = shutil.which("node")
# the test mirror's checksum of the Etherpad tag archive (upstream publishes none)
ETHERPAD_PIN = "2e310ef09ba9cfb857767ff112a439e83120f84c0b27d384800ee1ed9f8906d3"


# --- building hostile schools (no validation) --------------------------------------------------

@cache
def _shipped(school_id: str) -> EffectiveSchool:
    return load(SCHOOLS).schools[school_id]


def updated(model: Any, path: str, value: Any) -> Any:
    """`model` with the field at dotted `path` replaced, WITHOUT validation (model_copy)."""
    head, _, rest = path.partition(".")
    if isinstance(model, dict):
        return {**model, head: updated(model[head], rest, value) if rest else value}
    return model.model_copy(update={head: updated(getattr(model, head), rest, value) if rest else value})


def school(school_id: str = SCHOOL, **changes: Any) -> EffectiveSchool:
    """A shipped school with fields replaced (`fleet__timezone=...` for fleet.timezone)."""
    eff = updated(_shipped(school_id), "fleet.artifacts.etherpad.sha256", {"2.5.3": ETHERPAD_PIN})
    if "etherpad" in eff.versions:  # the pinned release: 2.5.3 needs no Node.js artifact besides it
        eff = updated(eff, "versions", {**eff.versions, "etherpad": "2.5.3"})
    for key, value in changes.items():
        eff = updated(eff, key.replace("__", "."), value)
    return eff


def site(eff: EffectiveSchool | None = None, **kw: Any) -> Site:
    s = Site(school=eff or school(), secret=lambda name, length=32: Secret("S" * length), **kw)
    s.fleet_secret = lambda name, length=32: Secret("F" * length)
    return s


# --- what "one shell word" means -------------------------------------------------------------

_SAFE = re.compile(r"[\w@%+=:,./-]*", re.ASCII)  # what shlex.quote leaves bare


def shell_words(cmd: str) -> list[list[tuple[str, bool]]]:
    """POSIX shell words of `cmd` (a subset: quotes, backslashes, operators end words), each character
    marked True when the shell takes it literally: inside single quotes, escaped, inside double
    quotes unless it is `$`, a backtick or a backslash, or bare and one shlex.quote leaves bare."""
    words: list[list[tuple[str, bool]]] = []
    cur: list[tuple[str, bool]] | None = None
    state, i = "", 0
    while i < len(cmd):
        c = cmd[i]
        if state == "'":
            if c == "'":
                state = ""
            else:
                cur.append((c, True))  # type: ignore[union-attr]
        elif state == '"':
            if c == '"':
                state = ""
            elif c == "\\" and cmd[i + 1:i + 2] in ("$", "`", '"', "\\"):
                cur.append((cmd[i + 1], True))  # type: ignore[union-attr]
                i += 1
            else:
                cur.append((c, c not in "$`\\"))  # type: ignore[union-attr]
        elif c in " \t\n;&|<>()":
            if cur is not None:
                words.append(cur)
            cur = None
        elif c in "'\"":
            state, cur = c, [] if cur is None else cur
        elif c == "\\":
            cur = [] if cur is None else cur
            cur.append((cmd[i + 1], True))
            i += 1
        else:
            cur = [] if cur is None else cur
            cur.append((c, bool(_SAFE.fullmatch(c))))
        i += 1
    if cur is not None:
        words.append(cur)
    return words


def with_value(cmds: list[str], value: str) -> list[str]:
    """The commands in which `value` appears, as the shell reads them."""
    return [c for c in cmds if any(value in "".join(ch for ch, _ in w) for w in shell_words(c))]


def assert_one_word(cmd: str, value: str) -> None:
    """`value` stands in `cmd` as literal data, inside one shell word: no character of it is one
    the shell would act on (expansion, substitution, a word or command break)."""
    shlex.split(cmd)  # still parses
    found = False
    for word in shell_words(cmd):
        text = "".join(c for c, _ in word)
        start = text.find(value)
        while start != -1:
            found = True
            assert all(lit for _, lit in word[start:start + len(value)]), f"{value!r} is not literal in: {cmd}"
            start = text.find(value, start + 1)
    assert found, f"{value!r} is not intact in one word of: {cmd}"


def test_the_word_check_catches_unquoted_values() -> None:
    for v in ("$(id)", "a'b", "a b", "`id`", "a;b"):
        assert_one_word(f"echo {shlex.quote(v)}", v)
        assert_one_word(f"echo x{shlex.quote(v)}y", v)
        for bad in (f"echo {v}", f"echo x{v}y"):
            with pytest.raises((AssertionError, ValueError)):
                assert_one_word(bad, v)
    assert_one_word('echo "a b"', "a b")          # double quotes keep this one literal...
    for v in ("$(id)", "`id`"):                   # ...but not a substitution
        with pytest.raises(AssertionError):
            assert_one_word(f'echo "{v}"', v)


# --- 1. shell commands: timezone and every other value quoted ---------------------------------

@pytest.mark.parametrize("tz", SHELL)
def test_timezone_is_one_word_in_its_check_and_apply(tz: str) -> None:
    layer = base.layer(site(school(fleet__timezone=tz)))
    [step] = [s for s in layer.steps if s.name.startswith("timezone")]
    for cmd in (step.check, step.apply):
        assert_one_word(cmd, f"/usr/share/zoneinfo/{tz}")
    assert files([layer])["/etc/timezone"] == f"{tz}\n"


def test_a_timezone_check_runs_nothing(tmp_path: Path) -> None:
    """Checks run during `plan` too: running the rendered check must not run the value."""
    pwned = tmp_path / "pwned"
    for tz in (f"$(touch {pwned})", f"`touch {pwned}`", f'x" ] ; touch {pwned} ; [ "'):
        [step] = [s for s in base.layer(site(school(fleet__timezone=tz))).steps if s.name.startswith("timezone")]
        subprocess.run(["sh", "-c", step.check], capture_output=True, timeout=10)
        assert not pwned.exists(), tz


@pytest.mark.parametrize("tz", ["../../etc/x", "/etc/passwd", "Europe/../../x", "-oProxyCommand=x", "a\nb", ""])
def test_a_timezone_outside_zoneinfo_is_refused(tz: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        base.layer(site(school(fleet__timezone=tz)))


@pytest.mark.parametrize(("field", "value", "word"), [
    ("name", NAME, NAME),                                        # moodle --fullname
    ("name", "$(id)", "$(id)"),
    ("contacts__technician__email", "a'$(id)`id`@x.example", "a'$(id)`id`@x.example"),   # moodle --adminemail
    ("fleet__tls__acme_email", "a';reboot;'@x.example", "a';reboot;'@x.example"),         # certbot --email
])
def test_config_values_in_every_command_are_one_word(field: str, value: str, word: str) -> None:
    s = site(school(**{field: value}), acme_directory="https://acme.example/dir")
    cmds = with_value(commands(school_rounds(s) + bbb_host.bbb_rounds(s)), word)
    assert cmds, f"{field} is in no command"
    for cmd in cmds:
        assert_one_word(cmd, word)


@pytest.mark.parametrize("proxy", ["http://proxy.example:3128/$(id)", "http://u:p'w@proxy.example:3128"])
def test_the_proxy_is_one_word_in_downloads(proxy: str) -> None:
    """The files that hold it refuse such a proxy (below); the commands quote it anyway."""
    s = site(school(), proxy=proxy)
    rel = artifacts.release(s, "moodle")
    _, [step] = apt_repo(s, "jitsi", s.school.fleet.apt_repos.jitsi)  # type: ignore[arg-type]
    for cmd in (artifacts.fetch_step(s, rel).apply, step.apply):
        assert_one_word(cmd, proxy)


@pytest.mark.parametrize("name", ["../../etc", "a;reboot", "x\nroot ALL=(ALL) NOPASSWD: ALL", "$(id)"])
def test_a_technician_name_that_is_no_login_name_is_refused(name: str) -> None:
    admins = [_shipped(SCHOOL).admins[0].model_copy(update={"name": name})]
    with pytest.raises(ValueError, match="login name"):
        base.layer(site(school(admins=admins)))


def test_no_file_is_written_outside_its_path() -> None:
    for path in ("/home/../../etc/x", "/etc/x\n/y", "relative/x", "/a/./b"):
        with pytest.raises(ValueError, match="path"):
            File(path, "")


def test_the_school_id_and_domain_are_checked_where_they_become_paths() -> None:
    with pytest.raises(ValueError, match="school id"):
        web.layer(site(school(id="../../etc")))
    with pytest.raises(ValueError, match="domain"):
        web.layer(site(school(domain="demo.example; return 302 http://evil.example")))
    with pytest.raises(ValueError, match="domain"):
        jitsi.layer(site(school(domain='x.example"; os.execute("id"); --')))


# --- 2. artifacts and the mirror ---------------------------------------------------------------

@pytest.mark.parametrize("file", ["moodle-{version}'; touch /tmp/pwned; '.tgz", "../../etc/x", "../{version}.tgz",
                                  "moodle-$(id).tgz", ".hidden", "-rf", "a b.tgz", "x\n.tgz"])
def test_an_artifact_file_name_that_is_not_plain_is_refused(file: str) -> None:
    s = site(school(fleet__artifacts__moodle__file=file))
    with pytest.raises(ArtifactError, match="not a plain file name"):
        artifacts.release(s, "moodle")


@pytest.mark.parametrize("version", ["../../../etc", "5.3; rm -rf /", "5.3\n"])
def test_a_version_that_is_not_plain_is_refused(version: str) -> None:
    eff = school(versions={**_shipped(SCHOOL).versions, "moodle": version},
                 fleet__artifacts__moodle__sha256={version: "0" * 64})
    with pytest.raises(ArtifactError, match="not a plain file name"):
        artifacts.release(site(eff), "moodle")


def test_the_fetch_step_quotes_every_value() -> None:
    url = "https://downloads.example/'$(id)`id`;x/{file}"
    s = site(school(fleet__artifacts__moodle__url=url), proxy="http://proxy.example:3128")
    rel = artifacts.release(s, "moodle")
    step = artifacts.fetch_step(s, rel, owner="moodle")
    assert_one_word(step.apply, rel.source)
    words = shlex.split(step.apply)
    for word in (rel.sha256, rel.path, f"{rel.home}/.download-{rel.file}", "moodle:moodle"):
        assert word in words
    assert shlex.split(step.check) == ["grep", "-qx", rel.sha256, f"{rel.path}/.schoolctl-sha256"]


def test_an_upstream_url_that_is_not_http_is_refused() -> None:
    s = site(school(fleet__artifacts__moodle__url="file:///etc/shadow"))
    with pytest.raises(ArtifactError, match="http"):
        artifacts.release(s, "moodle")


def _mirror(folder: Path, sums: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SHA256SUMS").write_text(sums)
    return str(folder)


def test_a_symlink_in_the_mirror_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "outside"
    secret.write_text("not for the server")
    mirror = _mirror(tmp_path / "mirror", f"{'a' * 64}  etherpad-lite-2.5.3.tar.gz\n")
    os.symlink(secret, Path(mirror) / "etherpad-lite-2.5.3.tar.gz")
    s = site(school(fleet__artifacts__etherpad__sha256={}), mirror=mirror)
    with pytest.raises(ArtifactError, match=r"etherpad-lite-2\.5\.3\.tar\.gz.*symlink"):
        artifacts.release(s, "etherpad")


def test_a_mirror_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path / "mirror", f"{'a' * 64}  etherpad-lite-2.5.3.tar.gz\n")
    (Path(mirror) / "etherpad-lite-2.5.3.tar.gz").mkdir()
    s = site(school(fleet__artifacts__etherpad__sha256={}), mirror=mirror)
    with pytest.raises(ArtifactError, match="not a regular file"):
        artifacts.release(s, "etherpad")


def test_a_regular_mirror_file_is_uploaded(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path / "mirror", f"{'a' * 64} *etherpad-lite-2.5.3.tar.gz\n")
    (Path(mirror) / "etherpad-lite-2.5.3.tar.gz").write_bytes(b"x")
    rel = artifacts.release(site(school(fleet__artifacts__etherpad__sha256={}), mirror=mirror), "etherpad")
    assert rel.upload and rel.source == f"{mirror}/etherpad-lite-2.5.3.tar.gz" and rel.sha256 == "a" * 64


def test_a_sha256sums_that_is_a_symlink_is_an_error(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.write_text(f"{'a' * 64}  etherpad-lite-2.5.3.tar.gz\n")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.symlink(real, mirror / "SHA256SUMS")
    with pytest.raises(ArtifactError, match="symlink"):
        artifacts.mirror_sums(str(mirror))


@pytest.mark.parametrize("entry", ["../etherpad-lite-2.5.3.tar.gz", "/etc/passwd", "sub/../../x",
                                   "\\" + "a" * 64 + "  a\\nb", "a\\b.tgz"])
def test_sha256sums_entries_that_climb_or_escape_are_refused(entry: str) -> None:
    line = entry if entry.startswith("\\") else f"{'a' * 64}  {entry}"
    with pytest.raises(ArtifactError, match="SHA256SUMS"):
        artifacts.parse_sums(f"{'b' * 64}  moodle-5.3.tgz\n{line}\n")


def test_sha256sums_plain_entries_are_read_and_digests_checked() -> None:
    assert artifacts.parse_sums(f"{'B' * 64}  moodle-5.3.tgz\n{'c' * 64} *x.tar.gz\n{'d' * 64}  sub/y.tgz\n") == {
        "moodle-5.3.tgz": "b" * 64, "x.tar.gz": "c" * 64}
    with pytest.raises(ArtifactError, match="sha256"):
        artifacts.parse_sums("$(reboot)" + "x" * 55 + "  moodle-5.3.tgz\n")


# --- 3. the APT proxy -----------------------------------------------------------------------------

def _apt_conf(s: Site) -> str:
    return files([base.layer(s)])["/etc/apt/apt.conf.d/80schoolctl-proxy"]


def test_the_apt_proxy_is_one_quoted_directive() -> None:
    proxy = "http://proxy.bcn.example:3128"
    assert _apt_conf(site(proxy=proxy, apt_proxy=proxy)).splitlines() == [
        "// Managed by schoolctl", f'Acquire::http::Proxy "{proxy}";', f'Acquire::https::Proxy "{proxy}";']


@pytest.mark.parametrize("proxy", ['http://p:3128";\nAcquire::http::Pipeline-Depth "0',
                                   'http://p:3128"; Dir::Etc::Trusted "/tmp/x', "http://p:3128;", "http://p :3128",
                                   "http://p:3128\n", "ftp://p:3128", "http://p/$(id)", "DIRECT"])
def test_an_apt_proxy_that_could_add_a_directive_is_refused(proxy: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        _apt_conf(site(proxy=proxy, apt_proxy=proxy))
    with pytest.raises(ValueError, match="proxy"):
        etherpad.npmrc(site(proxy=proxy))


# --- 4. NTP and the directory's base DN ---------------------------------------------------------

@pytest.mark.parametrize("server", ["ntp.example\nFallbackNTP=evil.example", "a b", "ntp\\", "x;y"])
def test_an_ntp_server_that_could_add_a_setting_is_refused(server: str) -> None:
    with pytest.raises(ValueError, match="ntp server"):
        base.layer(site(school(fleet__ntp=[server])))


def ldif_entries(text: str) -> list[list[tuple[str, str]]]:
    """A small RFC 2849 reader: unfolded lines, comments skipped, `attr:: base64` decoded."""
    lines: list[str] = []
    for line in text.split("\n"):
        if line.startswith(" ") and lines:
            lines[-1] += line[1:]
        elif not line.startswith("#"):
            lines.append(line)
    entries: list[list[tuple[str, str]]] = [[]]
    for line in lines:
        if not line:
            if entries[-1]:
                entries.append([])
            continue
        attr, sep, value = line.partition(":")
        assert sep, f"not an attribute line: {line!r}"
        value = base64.b64decode(value[1:].strip()).decode() if value.startswith(":") else value.removeprefix(" ")
        entries[-1].append((attr, value))
    return [e for e in entries if e]


def _ldifs(eff: EffectiveSchool) -> dict[str, list[list[tuple[str, str]]]]:
    got = files([identity.layer(site(eff))])
    return {p: ldif_entries(t) for p, t in got.items() if p.endswith(".ldif")}


def _shape(entries: list[list[tuple[str, str]]]) -> list[list[str]]:
    return [[attr for attr, _ in e] for e in entries]


@pytest.mark.parametrize("name", [NEWLINE, "Institut\n", "Institut\n\ndn: cn=evil", " leading", NAME])
def test_the_school_name_never_adds_an_ldif_line(name: str) -> None:
    before, after = _ldifs(school()), _ldifs(school(name=name))
    for path in before:
        assert _shape(after[path]) == _shape(before[path]), path
    [o] = [v for e in after["/etc/schoolctl/identity/tree.ldif"] for a, v in e if a == "o"]
    assert o == name


@pytest.mark.parametrize("base_dn", ["dc=escoles\nolcRootPW: x", "dc=x\r\nolcAccess: to * by * write",
                                     'dc=x" by * write', "dc=x\\", "dc=x\x00"])
def test_a_base_dn_that_could_add_an_attribute_or_bend_an_acl_is_refused(base_dn: str) -> None:
    with pytest.raises(ValueError, match="directory base"):
        identity.layer(site(school(fleet__identity__base_dn=base_dn)))


def test_a_base_dn_outside_ascii_goes_through_ldif_rules() -> None:
    base_dn = "dc=escòles,dc=bcn,dc=example"
    before, after = _ldifs(school()), _ldifs(school(fleet__identity__base_dn=base_dn))
    for path in before:
        assert _shape(after[path]) == _shape(before[path]), path
    [config] = [dict(e) for e in after["/etc/schoolctl/identity/slapd-config.ldif"] if "olcSuffix" in dict(e)]
    assert config["olcSuffix"] == f"dc={SCHOOL},{base_dn}"
    text = files([identity.layer(site(school(fleet__identity__base_dn=base_dn)))])
    assert "escòles" not in text["/etc/schoolctl/identity/slapd-config.ldif"]   # base64, as RFC 2849 wants


def test_ldif_line_never_lets_a_newline_through() -> None:
    for value in ("a\n", "a\nb: c", "\n", "a\r", ":x", "<x", " x", "x "):
        line = ldif_line("o", value)
        assert line.startswith("o:: ") and base64.b64decode(line[4:]).decode() == value
    assert ldif_line("o", "Institut del Mar") == "o: Institut del Mar"
    with pytest.raises(ValueError):
        ldif_line("o\nx", "v")


# --- 5. JavaScript (Jitsi) and HTML (the landing page) ------------------------------------------

_EVAL = """
const vm = require('vm'); let src = ''; process.stdin.on('data', d => src += d).on('end', () => {
  const box = {}; vm.runInNewContext(src, box);
  console.log(JSON.stringify({config: box.config, interfaceConfig: box.interfaceConfig}));
});
"""


def _scripts(name: str) -> dict[str, str]:
    layer = jitsi.layer(site(school(name=name)))
    assert layer is not None
    return {p.rsplit("-", 1)[1]: t for p, t in files([layer]).items() if p.endswith(".js")}


def _js_values(text: str) -> dict[str, Any]:
    """Without node: the JSON literals of `key: <literal>,` lines."""
    out = {}
    for m in re.finditer(r"^\s*([A-Za-z_]+): (\"(?:[^\"\\]|\\.)*\"),", text, re.M):
        out[m.group(1)] = json.loads(m.group(2))
    return out


@pytest.mark.parametrize("name", [NAME, "Institut L'Alzina", NEWLINE, "a\u2028b\u2029c", "x\\", "<!--"])
def test_the_school_name_is_data_in_jitsi_javascript(name: str, tmp_path: Path) -> None:
    scripts = _scripts(name)
    for text in scripts.values():
        assert "</script" not in text.lower() and "<!--" not in text and "\u2028" not in text
    if NODE:
        for fname, text in scripts.items():
            (tmp_path / fname).write_text(text)
            check = subprocess.run([NODE, "--check", str(tmp_path / fname)], capture_output=True, text=True,
                                   timeout=60)
            assert check.returncode == 0, check.stderr
        out = subprocess.run([NODE, "-e", _EVAL], input=scripts["interface_config.js"], capture_output=True,
                             text=True, timeout=60, check=True)
        ifc = json.loads(out.stdout)["interfaceConfig"]
    else:
        ifc = _js_values(scripts["interface_config.js"])
    assert ifc["PROVIDER_NAME"] == name and ifc["APP_NAME"] == f"Meet · {name}"
    # the same number of lines as for an ordinary name: nothing added after a // comment either
    plain = _scripts("Institut del Mar")
    assert {k: v.count("\n") for k, v in scripts.items()} == {k: v.count("\n") for k, v in plain.items()}


def test_the_js_filter_is_json_and_script_safe() -> None:
    for value in (NAME, "a&b", "\u2028", "x'y\"z", "😀", ["a", 1, None]):
        text = render.js(value)
        assert json.loads(text) == value
        assert not set(text) & set("<>&\u2028\u2029") and text.isascii()


@pytest.mark.parametrize(("field", "value"), [("name", NAME), ("name", NEWLINE), ("district", NAME),
                                              ("contacts__dpo__name", '"><img src=x onerror=alert(1)>')])
def test_the_landing_page_escapes_html(field: str, value: str) -> None:
    pages = web.landing_pages(site(school(**{field: value})))
    plain = web.landing_pages(site(school()))
    for name, page in pages.items():
        assert "<script>" not in page and "<img" not in page and "</script>" not in page
        assert page.count("\n") == plain[name].count("\n")     # a newline is &#10;, not a new line
    shown = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    assert shown.replace("'", "&#39;").replace("\n", "&#10;") in pages["index.html"]


def test_html_and_xml_templates_autoescape() -> None:
    """Besides the explicit `html` filter: a value a template forgets to filter is escaped anyway."""
    select = render._env().autoescape
    assert callable(select)
    assert select("web/landing.html.j2") and select("bigbluebutton/turn-stun-servers.xml.j2")
    assert not select("jitsi/config.js.j2") and not select("base/sshd.conf.j2")


# --- 6. BigBlueButton: java properties, YAML, XML; systemd, nginx, coturn without escaping -------

def java_properties(text: str) -> dict[str, str]:
    """A small reader of java.util.Properties.load's format: comments, continuation lines, the first
    unescaped `=`, `:` or whitespace ends the key, backslash escapes and \\uXXXX."""
    def unescape(s: str) -> str:
        out, i = [], 0
        while i < len(s):
            c = s[i]
            if c == "\\" and i + 1 < len(s):
                n = s[i + 1]
                if n == "u":
                    out.append(chr(int(s[i + 2:i + 6], 16)))
                    i += 6
                    continue
                out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(n, n))
                i += 2
                continue
            out.append(c)
            i += 1
        return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")

    props: dict[str, str] = {}
    logical = ""
    for raw in re.split(r"\r\n|\r|\n", text):
        line = raw.lstrip(" \t\f")
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            logical += line[:-1]
            continue
        logical += line
        i = 0
        while i < len(logical) and logical[i] not in "=: \t\f":
            i += 2 if logical[i] == "\\" else 1
        key, rest = logical[:i], logical[i:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        props[unescape(key)] = unescape(rest)
        logical = ""
    return props


def test_the_properties_reader_reads_what_java_writes() -> None:
    assert java_properties("# c\na=b\\\n   c\nk\\=x\\:y = v\\u00e9\n! x=y\n") == {"a": "bc", "k=x:y": "vé"}


@pytest.mark.parametrize("value", [NEWLINE, "a\\", " lead", "a=b:c#d!e", "\r\nx=y", "é😀", "\\u0041"])
def test_the_properties_filter_round_trips(value: str) -> None:
    assert java_properties(f"k={render.properties(value)}\n") == {"k": value}


def _web_properties(eff: EffectiveSchool) -> str:
    return files([bigbluebutton.layer(site(eff))])[bigbluebutton.WEB_PROPERTIES]  # type: ignore[list-item]


@pytest.mark.parametrize("name", [NEWLINE, "x\r\nallowStartStopRecording=true", "x\\", NAME])
def test_the_school_name_adds_no_key_to_bbb_web_properties(name: str) -> None:
    before, after = java_properties(_web_properties(school())), java_properties(_web_properties(school(name=name)))
    assert after == before
    assert "keepRecordings" not in after


def test_bbb_yml_values_are_yaml_scalars() -> None:
    lang = "ca\n  externalVideoPlayer:\n    enabled: true"
    layer = bigbluebutton.layer(site(school(languages=[lang, "es"])))
    assert layer is not None
    yml = yaml.safe_load(files([layer])[bigbluebutton.HTML5_YML])
    assert yml["public"]["app"]["defaultSettings"]["application"]["overrideLocale"] == lang
    assert yml["public"]["externalVideoPlayer"] == {"enabled": False}
    for value in (lang, "😀 \u0085 \x7f", 'a"b\\', "yes", "1.0", ""):
        assert yaml.safe_load(f"k: {render.yaml_str(value)}\n") == {"k": value}


def test_the_bbb_host_address_cannot_add_a_coturn_or_xml_setting() -> None:
    address = "bbb.example\nallowed-peer-ip=10.0.0.1"
    eff = school(services__bigbluebutton__server__address=address)
    with pytest.raises(ValueError, match="BigBlueButton server"):
        bigbluebutton.layer(site(eff))
    with pytest.raises(ValueError, match="TURN realm"):
        turn.coturn_file(site(), "x\nallowed-peer-ip=10.0.0.1", 3478, secret_name="turn_secret")


@pytest.mark.parametrize("value", ["a b", "a;b", "a{b", "a}b", 'a"b', "a'b", "a\nb", "a$b", "a\\b", "a#b", "a%b", ""])
def test_bare_refuses_what_unescaped_formats_cannot_hold(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value)[1:-1]) if value else "''"):
        render.bare(value, "a value")


def test_nginx_and_systemd_values_from_config_are_checked() -> None:
    with pytest.raises(ValueError, match="server name"):
        render.render("web/server.conf.j2", label="x", server_name="a.example; return 302 http://evil", body="",
                      csp="c", permissions="p", access_log="off")
    with pytest.raises(ValueError, match="Content-Security-Policy"):
        render.render("web/server.conf.j2", label="x", server_name="a.example", body="", csp='x" always;\n',
                      permissions="p", access_log="off")
    with pytest.raises(ValueError, match="Etherpad release"):
        render.render("etherpad/etherpad.service.j2", user="etherpad", home="/h", release="/srv/x\nExecStartPre=/x",
                      settings="/s", apikey="/a", pnpm="/p")
    assert render.dquoted("default-src 'self'", "csp") == "\"default-src 'self'\""


def test_the_lua_filter_is_a_lua_string() -> None:
    assert render.lua('x"; os.execute("id") --\n') == '"x\\"; os.execute(\\"id\\") --\\010"'
    assert render.lua("meet.example") == '"meet.example"'


# --- every field at once: what the shipped examples render stays as it was ----------------------

def test_ordinary_values_render_as_before() -> None:
    """Quoting a plain word changes nothing: the shipped school's commands keep their words."""
    s = site()
    layer = base.layer(s)
    [tz] = [st for st in layer.steps if st.name.startswith("timezone")]
    assert tz.apply == "ln -sf /usr/share/zoneinfo/Europe/Madrid /etc/localtime"
    rel = artifacts.release(s, "nextcloud")
    step = artifacts.fetch_step(s, rel)
    assert f"echo '{rel.sha256}  /srv/nextcloud/.download-{rel.file}' | sha256sum --check --quiet" in step.apply
    assert step.check == f"grep -qx {rel.sha256} /srv/nextcloud/releases/{rel.version}/.schoolctl-sha256"
    props = _web_properties(school())
    assert f"bigbluebutton.web.serverURL=https://{bigbluebutton.bbb_host(site())}\n" in props
    assert "# Managed by schoolctl: bbb-web overrides for Institut del Mar (merged over" in props


def test_every_step_of_a_hostile_school_parses() -> None:
    """The hostile name and district go through every layer; every command still splits, and the
    values stand in single quotes wherever they appear."""
    eff = school(name=NAME, district="$(id) `id`")
    s = site(eff, proxy="http://proxy.example:3128")
    rounds = school_rounds(s) + bbb_host.bbb_rounds(s)
    cmds = commands(rounds)
    assert with_value(cmds, NAME)
    for cmd in cmds:
        shlex.split(cmd)
    for value in (NAME, "$(id) `id`"):
        for cmd in with_value(cmds, value):
            assert_one_word(cmd, value)
