"""Every field with a syntax has a strict validator: hostile values are refused by the real loader with
`file:line:column: key: message` naming the problem, and ordinary values (names with quotes and
colons, IPv6 addresses, a proxy with a port, Europe/Madrid) are accepted. The trust model: the city
writes fleet.yaml, a school its own file; nothing either writes may run as code or reach a file it
should not (a school's TLS files lie in its own folder, `<secrets dir>/tls/<id>/`)."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path

import pytest
from pydantic import ValidationError

from schoolctl.config.loader import Config, load
from schoolctl.config.model import (
    DOMAIN,
    LOGIN,
    VERSION,
    Artifact,
    Fleet,
    School,
    SchoolTls,
    Server,
)
from schoolctl.config.problems import Problem
from schoolctl.config.values import TEXT_MAX
from schoolctl.errors import ConfigError

from .conftest import at, edit

HOSTILE = ["$(id)", "`id`", "a;reboot", "a'b", 'a"b', "x\nkeepRecordings=true", "../../etc/x", "-oProxyCommand=x",
           "</script><script>alert(1)</script>", "=cmd", "127.0.0.1:2222", "http://user:pw@host/"]
KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIDmew4FELI7W4fb2mLyMU8XOB1aoh1RRcmpo9rtZLehe"
BBB_ADDRESS = "      address: 10.20.31.11"


def q(value: str) -> str:
    """`value` as a YAML double-quoted scalar (JSON's string syntax is YAML's), every control, format
    and line-break character escaped, so that the file itself stays plain printable text."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c)[0] in "CZ" and c != " " else c
                   for c in json.dumps(value, ensure_ascii=False))


def spot(path: Path, token: str) -> tuple[int, int]:
    """(line, column) of the first `token` in the file, counted from 1."""
    lines = path.read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if token in text)
    return line, lines[line - 1].index(token) + 1


def problems(schools: Path) -> list[Problem]:
    """What `load` refuses (nothing when the folder is valid)."""
    try:
        load(schools)
    except ConfigError as e:
        return list(e.problems)
    return []


def loaded(schools: Path) -> Config:
    found = problems(schools)
    assert found == [], "\n".join(map(str, found))
    return load(schools)


def the_problem(schools: Path, name: str, where: str) -> Problem:
    """The one problem of schools/`name` about key `where`, with every problem shown on failure."""
    found = problems(schools)
    mine = [p for p in found if p.path == f"schools/{name}" and p.message.startswith(f"{where}: ")]
    assert len(mine) == 1, "\n".join(map(str, found)) or "no problem at all"
    return mine[0]


def position(p: Problem) -> str:
    return f"{p.line}:{p.column}"


# --- every technical field refuses every hostile value, at its own line --------------------------

# (file, text in the shipped file, the same text with {v} where the value goes, key in the message)
FIELDS = [
    ("fleet.yaml", "timezone: Europe/Madrid", "timezone: {v}", "timezone"),
    ("fleet.yaml", "domain: escoles.bcn.example ", "domain: {v} ", "domain"),
    ("fleet.yaml", "dns: [9.9.9.9]", "dns: [9.9.9.9, {v}]", "dns[1]"),
    ("fleet.yaml", "ntp: [time.bcn.example]", "ntp: [time.bcn.example, {v}]", "ntp[1]"),
    ("fleet.yaml", "proxy: null", "proxy: {v}", "proxy"),
    ("fleet.yaml", "mirror: null", "mirror: {v}", "mirror"),
    ("fleet.yaml", "  acme_directory: https://acme-v02.api.letsencrypt.org/directory", "  acme_directory: {v}",
     "tls.acme_directory"),
    ("fleet.yaml", "  acme_email: suport-escoles@bcn.example", "  acme_email: {v}", "tls.acme_email"),
    ("fleet.yaml", "  base_dn: dc=escoles,dc=bcn,dc=example", "  base_dn: {v}", "identity.base_dn"),
    ("fleet.yaml", "    url: https://download.nextcloud.com/server/releases/{file}", "    url: {v}",
     "artifacts.nextcloud.url"),
    ("fleet.yaml", "    file: moodle-{version}.tgz", "    file: {v}", "artifacts.moodle.file"),
    ("fleet.yaml", '    version: "34.0.4"', "    version: {v}", "artifacts.nextcloud.version"),
    ("fleet.yaml", "    url: https://download.jitsi.org\n", "    url: {v}\n", "apt_repos.jitsi.url"),
    ("fleet.yaml", "    key_url: https://ubuntu.bigbluebutton.org/repo/bigbluebutton.asc", "    key_url: {v}",
     "apt_repos.bigbluebutton.key_url"),
    ("fleet.yaml", "    suite: bigbluebutton-noble", "    suite: {v}", "apt_repos.bigbluebutton.suite"),
    ("fleet.yaml", "    components: [main]", "    components: [{v}]", "apt_repos.bigbluebutton.components[0]"),
    ("fleet.yaml", "bbb_pool: null", "bbb_pool: {{url: {v}}}", "bbb_pool.url"),
    ("fleet.yaml", "  - name: ana", "  - name: {v}", "admins[0].name"),
    ("institut-mar.yaml", "domain: institutmar.escoles.bcn.example", "domain: {v}", "domain"),
    ("escola-pins.yaml", "server: 10.20.42.10", "server: {v}", "server.address"),
    ("institut-mar.yaml", "  ssh_user: root", "  ssh_user: {v}", "server.ssh_user"),
    ("institut-mar.yaml", BBB_ADDRESS, "      address: {v}", "services.bigbluebutton.server.address"),
    ("demo.yaml", 'version: "5.0.6"', "version: {v}", "services.moodle.version"),
    ("escola-pins.yaml", "    email: dpd@bcn.example", "    email: {v}", "contacts.dpo.email"),
]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
@pytest.mark.parametrize(("name", "old", "new", "where"), FIELDS, ids=[f[3] for f in FIELDS])
def test_a_hostile_value_is_refused_at_its_line(schools: Path, name: str, old: str, new: str, where: str,
                                                value: str) -> None:
    path = schools / name
    edit(path, old, new.replace("{v}", q(value)).replace("{{", "{").replace("}}", "}"))
    p = the_problem(schools, name, where)
    assert (p.line, p.column) == spot(path, q(value)), str(p)
    # the message says what is wrong: the value (escaped, on one line) and why, or the expected form
    assert "\n" not in str(p)
    assert re.search(r"is not (valid|a valid|a plain|a time zone|one of)|holds|is empty", p.message), str(p)
    assert "(" in str(p), f"no hint in: {p}"


@pytest.mark.parametrize("inside", ["$(id)", "`id`", "a;b", "a'b", 'a"b', "a\nb", "../x", "</script>", " x",
                                    "%zz", "{version}x"])
def test_a_hostile_part_inside_a_url_is_refused(schools: Path, inside: str) -> None:
    value = q("https://dl.example/" + inside)
    edit(schools / "fleet.yaml", "    url: https://download.jitsi.org\n", f"    url: {value}\n")
    p = the_problem(schools, "fleet.yaml", "apt_repos.jitsi.url")
    assert "is not a valid URL: " in p.message
    assert "(expected e.g. https://download.jitsi.org)" in p.message


@pytest.mark.parametrize("value", ["dc={v}", "dc=escoles,o={v}", "{v},dc=x"])
@pytest.mark.parametrize("hostile", ["$(id)", "`id`", "a;b", "a'b", 'a"b', "a\nb", "a+cn=admin", "a\\,b", "-x",
                                     "</script>", "=cmd", "#x"])
def test_a_hostile_directory_base_is_refused(schools: Path, value: str, hostile: str) -> None:
    edit(schools / "fleet.yaml", "  base_dn: dc=escoles,dc=bcn,dc=example", f"  base_dn: {q(value.format(v=hostile))}")
    p = the_problem(schools, "fleet.yaml", "identity.base_dn")
    assert "is not a valid directory base: " in p.message
    assert p.message.endswith("(expected e.g. dc=escoles,dc=bcn,dc=example: attr=value parts separated by ',')")


# --- the messages name the problem and its fix ---------------------------------------------------------

def test_an_address_with_a_port_points_to_ssh_port(schools: Path) -> None:
    p = schools / "escola-pins.yaml"
    edit(p, "server: 10.20.42.10", 'server: "127.0.0.1:2222"')
    assert str(the_problem(schools, "escola-pins.yaml", "server.address")) == (
        f"schools/escola-pins.yaml:{at(p, '^server', chr(34))}: server.address: '127.0.0.1:2222' is not valid: a "
        "port does not belong in the address (write the address alone and the port as ssh_port: "
        "`server: {address: 127.0.0.1, ssh_port: 2222}`)")


def test_a_bbb_host_with_a_port_and_a_host_with_a_space(schools: Path) -> None:
    p = schools / "institut-mar.yaml"
    edit(p, BBB_ADDRESS, "      address: bbb.example.org:2200")
    assert the_problem(schools, "institut-mar.yaml", "services.bigbluebutton.server.address").message.endswith(
        "`server: {address: bbb.example.org, ssh_port: 2200}`)")
    edit(p, "      address: bbb.example.org:2200", '      address: "bad host;rm -rf /"')
    assert the_problem(schools, "institut-mar.yaml", "services.bigbluebutton.server.address").message == (
        "services.bigbluebutton.server.address: 'bad host;rm -rf /' is not valid: it holds '/', ';' and a space "
        "(expected a host name, an IP address, or lab:NAME)")


def test_a_trailing_newline_is_no_longer_an_address(schools: Path) -> None:
    # re.match('...$') used to accept '10.20.42.10\n'
    edit(schools / "escola-pins.yaml", "server: 10.20.42.10", 'server: "10.20.42.10\\n"')
    assert "it holds a line break" in the_problem(schools, "escola-pins.yaml", "server.address").message


def test_a_proxy_with_credentials(schools: Path) -> None:
    p = schools / "fleet.yaml"
    edit(p, "proxy: null", "proxy: http://user:pw@proxy.bcn.example:3128")
    assert str(the_problem(schools, "fleet.yaml", "proxy")) == (
        f"schools/fleet.yaml:{at(p, '^proxy', 'http')}: proxy: 'http://user:pw@proxy.bcn.example:3128' is not a "
        "valid URL: it holds a user name or password ('...@' before the host); credentials do not belong in the "
        "config (expected e.g. http://proxy.example.org:3128)")


def test_a_proxy_of_another_scheme(schools: Path) -> None:
    edit(schools / "fleet.yaml", "proxy: null", "proxy: socks5://proxy.bcn.example:1080")
    assert str(the_problem(schools, "fleet.yaml", "proxy")).endswith(
        "proxy: 'socks5://proxy.bcn.example:1080' is not valid (expected an http:// or https:// URL)")


@pytest.mark.parametrize(("value", "reason"), [
    ("http://proxy.bcn.example:99999", "its port is not a number from 1 to 65535"),
    ("http://proxy.bcn.example/x", "a proxy URL has no path"),
    ("http://", "it names no host"),
    ("http://-proxy:3128", "its host '-proxy' is not valid: it starts with '-'"),
])
def test_a_proxy_that_is_no_plain_proxy_url(schools: Path, value: str, reason: str) -> None:
    edit(schools / "fleet.yaml", "proxy: null", f"proxy: {q(value)}")
    assert f"is not a valid URL: {reason} (" in the_problem(schools, "fleet.yaml", "proxy").message


def test_a_misspelt_time_zone_gets_a_suggestion(schools: Path) -> None:
    p = schools / "fleet.yaml"
    edit(p, "timezone: Europe/Madrid", "timezone: Europe/Madird")
    assert str(the_problem(schools, "fleet.yaml", "timezone")) == (
        f"schools/fleet.yaml:{at(p, '^timezone', 'Europe')}: timezone: 'Europe/Madird' is not a time zone of the "
        "zoneinfo database (did you mean 'Europe/Madrid'?)")


@pytest.mark.parametrize("value", ["/etc/passwd", "../../../../etc/passwd", "Europe/../../etc/passwd",
                                   "Europe//Madrid", "Europe\\Madrid", "./UTC"])
def test_a_time_zone_is_never_a_path(schools: Path, value: str) -> None:
    edit(schools / "fleet.yaml", "timezone: Europe/Madrid", f"timezone: {q(value)}")
    assert the_problem(schools, "fleet.yaml", "timezone").message == (
        f"timezone: {value!r} is not valid: a time zone is a name, not a path (use a name of the zoneinfo database "
        "such as Europe/Madrid)")


@pytest.mark.parametrize(("value", "reason"), [
    ("{version.__class__}.tgz", "'{version.__class__}' is not a placeholder here (use {version})"),
    ("{0}.tgz", "'{0}' is not a placeholder here (use {version})"),
    ("moodle-{version!r}.tgz", "'{version!r}' is not a placeholder here (use {version})"),
    ("moodle-{file}.tgz", "'{file}' is not a placeholder here (use {version})"),
    ("moodle-{version.tgz", "its braces do not pair up"),
    ("../moodle-{version}.tgz", "it holds '/' (a file name, not a path)"),
    ("moodle-{version}..tgz", "it holds '..'"),
    ("moodle {version}.tgz", "it holds a space"),
    ("moodle-$(id){version}.tgz", "it holds '$', '(' and ')'"),
])
def test_artifact_file_names(schools: Path, value: str, reason: str) -> None:
    edit(schools / "fleet.yaml", "    file: moodle-{version}.tgz", f"    file: {q(value)}")
    assert the_problem(schools, "fleet.yaml", "artifacts.moodle.file").message == (
        f"artifacts.moodle.file: {value!r} is not a plain file name: {reason} (expected e.g. moodle-{{version}}.tgz: "
        "letters, digits, '.', '_', '+' and '-')")


@pytest.mark.parametrize(("value", "reason"), [
    ("https://x.example/{version.__init__.__globals__}", "is not a placeholder here (use {version}, {file}, {branch})"),
    ("https://x.example/{}", "'{}' is not a placeholder here"),
    ("https://{version}/{file}", "its host '5.0.6' is not valid: it is not a valid IPv4 address"),
    ("https://user@x.example/{file}", "it holds a user name or password"),
    ("https://x.example/../{file}", "its path holds '.' or '..'"),
    ("file:///srv/{file}", "is not valid (expected an http:// or https:// URL)"),
])
def test_artifact_url_templates(schools: Path, value: str, reason: str) -> None:
    edit(schools / "fleet.yaml", "    url: https://download.nextcloud.com/server/releases/{file}",
         f"    url: {q(value)}")
    assert reason in str(the_problem(schools, "fleet.yaml", "artifacts.nextcloud.url"))


def test_a_pinned_version_is_a_version(schools: Path) -> None:
    p = schools / "fleet.yaml"
    edit(p, '"5.3": 7e5edf', '"../5.3": 7e5edf')
    assert str(the_problem(schools, "fleet.yaml", "artifacts.moodle.sha256.../5.3")) == (
        f"schools/fleet.yaml:{at(p, '[.][.]/5[.]3', '7e5edf')}: artifacts.moodle.sha256.../5.3: the pinned version "
        "'../5.3' is not valid (expected a version such as 5.0.6)")


@pytest.mark.parametrize(("value", "reason"), [
    ("relative/mirror", "it is neither an absolute path nor an http(s):// URL"),
    ("/srv/../etc", "it holds '.' or '..'"),
    ("/srv/mirror\n/etc", "it holds a line break"),
    ("/srv/$(id)", "it holds '$'"),
    ("ftp://mirror.bcn.example/", "it must start with https:// or http://"),
    ("https://u:p@mirror.bcn.example/", "it holds a user name or password"),
])
def test_a_mirror_is_a_folder_or_a_url(schools: Path, value: str, reason: str) -> None:
    edit(schools / "fleet.yaml", "mirror: null", f"mirror: {q(value)}")
    message = the_problem(schools, "fleet.yaml", "mirror").message
    assert f"is not valid: {reason}" in message
    assert message.endswith("(expected a folder such as /srv/mirror or a URL such as https://mirror.example.org/schoolctl/)")


PATTERN_HINT = "(expected an email address such as dpd@example.org)"  # the pattern's: no '@', a space...


@pytest.mark.parametrize(("value", "reason"), [
    ('"DPD"<dpd@bcn.example>', "it holds '\"', '<' and '>'"),
    ('"DPD" <dpd@bcn.example>', PATTERN_HINT),
    ("dpd@bcn.example\r", PATTERN_HINT),
    ("dpd@bcn.example,tic@example.org", PATTERN_HINT),
    ("dpd@bcn.example,tic", "it holds ','"),
    ("dpd@bcn.example;x@y", PATTERN_HINT),
    ("dpd;x@bcn.example", "it holds ';'"),
    ("'dpd'@bcn.example", "it holds \"'\""),
    ("-dpd@bcn.example", "'-dpd' before '@' may hold only letters, digits and '.', '_', '%', '+', '-'"),
    ("d..pd@bcn.example", "'d..pd' before '@' may hold only letters, digits and '.', '_', '%', '+', '-'"),
    ("dpd@-bcn.example", "'-bcn.example' after '@' is not a domain (it starts with '-')"),
    ("dpd@bcn.example\u2028", PATTERN_HINT),
    ("dpd@bcn.example\x00", "it holds a control character (U+0000)"),
    ("dpd\u200b@bcn.example", "it holds a control character (U+200B)"),
])
def test_an_email_is_one_address(schools: Path, value: str, reason: str) -> None:
    edit(schools / "escola-pins.yaml", "    email: dpd@bcn.example", f"    email: {q(value)}")
    p = the_problem(schools, "escola-pins.yaml", "contacts.dpo.email")
    if reason == PATTERN_HINT:
        assert str(p).endswith(f"contacts.dpo.email: {value!r} is not valid {PATTERN_HINT}")
    else:
        assert p.message == (f"contacts.dpo.email: {value!r} is not valid: {reason} (expected one email address "
                             "such as dpd@example.org)")


@pytest.mark.parametrize("comment", ["ana\rx", "ana\x00", "ana\x1b[2J", "ana\u2028x", "ana\u202ex"])
def test_an_ssh_key_comment_holds_no_control_characters(schools: Path, comment: str) -> None:
    edit(schools / "fleet.yaml", f"- ssh-ed25519 {KEY} ana@ajuntament", f"- {q('ssh-ed25519 ' + KEY + ' ' + comment)}")
    p = the_problem(schools, "fleet.yaml", "admins[0].ssh_keys[0]")
    assert re.search(r"the key line holds (a line break|a control character \(U\+[0-9A-F]{4}\)) \(expected one "
                     r"OpenSSH public key line", p.message), str(p)


@pytest.mark.parametrize("comment", ["ana@ajuntament", "Ana Puig (portàtil) 'casa' $HOME", "x" * 80])
def test_an_ssh_key_comment_is_free_text(schools: Path, comment: str) -> None:
    edit(schools / "fleet.yaml", f"- ssh-ed25519 {KEY} ana@ajuntament", f"- {q('ssh-ed25519 ' + KEY + ' ' + comment)}")
    assert loaded(schools).fleet.admins[0].ssh_keys[0].endswith(comment)


# --- free text: any printable character, one line, bounded --------------------------------------------

TEXT_FIELDS = [
    ("escola-pins.yaml", "name: Escola Els Pins", "name: {v}", "name"),
    ("escola-pins.yaml", "district: Horta-Guinardó", "district: {v}", "district"),
    ("fleet.yaml", "city: Barcelona", "city: {v}", "city"),
    ("escola-pins.yaml", "    name: Delegat de Protecció de Dades", "    name: {v}", "contacts.dpo.name"),
    ("institut-mar.yaml", "    name: Marta Puig", "    name: {v}", "contacts.technician.name"),
]
PRINTABLE = ["Institut L'Alzina: 1r & 2n #3", 'Escola "La Mar" $(id) `id` ; <b>', "</script><script>x</script>",
             "=HYPERLINK(1)", "-oProxyCommand=x", "../../etc/x", "Escola d’Horta — 100% 😀", "a" * TEXT_MAX]


@pytest.mark.parametrize("value", PRINTABLE, ids=lambda v: v[:20])
@pytest.mark.parametrize(("name", "old", "new", "where"), TEXT_FIELDS, ids=[f[3] for f in TEXT_FIELDS])
def test_free_text_takes_any_printable_character(schools: Path, name: str, old: str, new: str, where: str,
                                                 value: str) -> None:
    edit(schools / name, old, new.replace("{v}", q(value)))
    config = loaded(schools)
    if name == "fleet.yaml":
        assert config.fleet.city == value
    else:
        school = config.schools[name.removesuffix(".yaml")]
        node = school
        for part in where.split("."):
            node = getattr(node, part)
        assert node == value


@pytest.mark.parametrize(("value", "reason"), [
    ("Escola\nEls Pins", "holds a line break (write it as one line of printable text)"),
    ("Escola\r", "holds a line break (write it as one line of printable text)"),
    ("Escola\u2028Els Pins", "holds a line break (write it as one line of printable text)"),
    ("Escola\tEls Pins", "holds a tab (write it as one line of printable text)"),
    ("Escola\x1b[31mEls Pins", "holds a control character (U+001B) (write it as one line of printable text)"),
    ("Escola \u202eEls Pins", "holds a control character (U+202E) (write it as one line of printable text)"),
    ("   ", "is empty (write the text, e.g. the school's name as people know it)"),
    ("a" * (TEXT_MAX + 1), f"is {TEXT_MAX + 1} characters long (at most {TEXT_MAX}: shorten it)"),
])
@pytest.mark.parametrize(("name", "old", "new", "where"), TEXT_FIELDS, ids=[f[3] for f in TEXT_FIELDS])
def test_free_text_is_one_line(schools: Path, name: str, old: str, new: str, where: str, value: str,
                               reason: str) -> None:
    path = schools / name
    edit(path, old, new.replace("{v}", q(value)))
    p = the_problem(schools, name, where)
    assert p.message.endswith(reason), str(p)
    assert (p.line, p.column) == spot(path, q(value))


# --- a school's TLS files lie in its own folder ---------------------------------------------------------

@pytest.fixture
def tls_dir(schools: Path) -> Path:
    """The fleet in tls mode 'provided', and demo's own TLS folder under SCHOOLCTL_SECRETS_DIR."""
    edit(schools / "fleet.yaml", "  mode: acme ", "  mode: provided ")
    for name in ("escola-pins", "institut-mar"):
        path = schools / f"{name}.yaml"
        path.write_text(path.read_text(encoding="utf-8") + "tls: {cert_file: c.pem, key_file: k.pem}\n",
                        encoding="utf-8")
    folder = Path(os.environ["SCHOOLCTL_SECRETS_DIR"]) / "tls" / "demo"
    folder.mkdir(parents=True)
    return folder


def _demo_tls(schools: Path, cert: str, key: str = "privkey.pem") -> Path:
    path = schools / "demo.yaml"
    path.write_text(path.read_text(encoding="utf-8") + f"tls:\n  cert_file: {q(cert)}\n  key_file: {q(key)}\n",
                    encoding="utf-8")
    return path


def test_tls_files_in_the_schools_folder_are_accepted(schools: Path, tls_dir: Path) -> None:
    (tls_dir / "privkey.pem").write_text("key")
    (tls_dir / "2026").mkdir()
    (tls_dir / "2026" / "fullchain.pem").write_text("cert")
    (tls_dir / "current.pem").symlink_to(tls_dir / "2026" / "fullchain.pem")  # a link inside, to inside
    _demo_tls(schools, "current.pem", str(tls_dir / "privkey.pem"))
    tls = loaded(schools).schools["demo"].tls
    assert tls is not None
    # kept resolved: what the deploy reads is what was checked
    assert (tls.cert_file, tls.key_file) == (str((tls_dir / "2026" / "fullchain.pem").resolve()),
                                             str((tls_dir / "privkey.pem").resolve()))


@pytest.mark.parametrize(("cert", "reason"), [
    ("/etc/passwd", "'/etc/passwd' is outside the school's TLS folder"),
    ("../../../../../../etc/ssl/private/ssl-cert-snakeoil.key",
     "'../../../../../../etc/ssl/private/ssl-cert-snakeoil.key' is outside the school's TLS folder"),
    ("../escola-pins/fullchain.pem", "'../escola-pins/fullchain.pem' is outside the school's TLS folder"),
    (".", "'.' names the school's TLS folder itself, not a file in it"),
    ("$(id).pem", "'$(id).pem' is not a plain file name (it holds '$', '(' and ')' in '$(id).pem')"),
    ("-x.pem", "'-x.pem' is not a plain file name (it starts with '-' in '-x.pem')"),
])
def test_tls_files_outside_the_schools_folder_are_refused(schools: Path, tls_dir: Path, cert: str,
                                                          reason: str) -> None:
    path = _demo_tls(schools, cert)
    p = the_problem(schools, "demo.yaml", "tls.cert_file")
    folder = tls_dir.resolve()
    shown = f"{folder.relative_to(Path.cwd().resolve())}/" if folder.is_relative_to(Path.cwd().resolve()) \
        else f"{folder}/"
    assert str(p) == (f"schools/demo.yaml:{at(path, '^  cert_file', chr(34))}: tls.cert_file: {reason} (put the "
                      f"file in {shown} and write its name there, e.g. `cert_file: fullchain.pem`)")


def test_a_symlink_in_the_tls_folder_that_leads_outside_is_refused(schools: Path, tls_dir: Path,
                                                                   tmp_path: Path) -> None:
    (tls_dir / "fullchain.pem").symlink_to("/etc/passwd")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "key.pem").write_text("not the school's")
    (tls_dir / "keys").symlink_to(elsewhere, target_is_directory=True)
    _demo_tls(schools, "fullchain.pem", "keys/key.pem")
    cert = the_problem(schools, "demo.yaml", "tls.cert_file")
    key = the_problem(schools, "demo.yaml", "tls.key_file")
    assert cert.message.startswith("tls.cert_file: 'fullchain.pem' is a link that leads outside the school's TLS "
                                   "folder (put the file in ")
    assert key.message.startswith("tls.key_file: 'keys/key.pem' is a link that leads outside the school's TLS folder")
    assert "`key_file: privkey.pem`" in key.message


def test_a_folder_is_not_a_tls_file(schools: Path, tls_dir: Path) -> None:
    (tls_dir / "old").mkdir()
    _demo_tls(schools, "old")
    assert "'old' is not a regular file" in the_problem(schools, "demo.yaml", "tls.cert_file").message


def test_tls_files_are_checked_whatever_the_fleet_mode(schools: Path) -> None:
    """A school file names its files even when the fleet does not use them: still only its own."""
    _demo_tls(schools, "/etc/shadow")
    assert "is outside the school's TLS folder" in the_problem(schools, "demo.yaml", "tls.cert_file").message


def test_the_tls_folder_follows_schoolctl_secrets_dir(schools: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOOLCTL_SECRETS_DIR", str(tmp_path / "city-secrets"))
    path = _demo_tls(schools, str(tmp_path / "city-secrets" / "tls" / "demo" / "fullchain.pem"))
    assert loaded(schools).schools["demo"].tls is not None
    path.write_text(path.read_text(encoding="utf-8").replace("/tls/demo/", "/tls/escola-pins/"), encoding="utf-8")
    assert "is outside the school's TLS folder" in the_problem(schools, "demo.yaml", "tls.cert_file").message


def test_a_tls_file_name_is_one_line(schools: Path) -> None:
    _demo_tls(schools, "fullchain.pem\n/etc/passwd")
    assert the_problem(schools, "demo.yaml", "tls.cert_file").message == (
        "tls.cert_file: 'fullchain.pem\\n/etc/passwd' is not a valid path: it holds a line break")


# --- ordinary values are accepted ------------------------------------------------------------------

def test_ordinary_values_are_accepted(schools: Path) -> None:
    fleet = schools / "fleet.yaml"
    edit(fleet, "dns: [9.9.9.9]", 'dns: [9.9.9.9, "2620:fe::fe", "::1"]')
    edit(fleet, "ntp: [time.bcn.example]", 'ntp: [time.bcn.example, "2001:db8::123", 10.0.0.1, ntp]')
    edit(fleet, "proxy: null", "proxy: http://proxy.bcn.example:3128")
    edit(fleet, "mirror: null", "mirror: /var/lib/schoolctl/mirror")
    edit(fleet, "  base_dn: dc=escoles,dc=bcn,dc=example", "  base_dn: ou=Escoles Publiques,o=Ajuntament_BCN,c=ES")
    edit(fleet, "  acme_email: suport-escoles@bcn.example", "  acme_email: suport.escoles+acme@bcn.example")
    edit(fleet, "bbb_pool: null", "bbb_pool: {url: 'https://bbb.bcn.example:8443/bigbluebutton/'}")
    edit(fleet, "    url: https://download.jitsi.org\n", "    url: http://[2001:db8::80]:8080/jitsi\n")
    edit(schools / "escola-pins.yaml", "server: 10.20.42.10", 'server: "2001:db8:42::10"')
    edit(schools / "escola-pins.yaml", "name: Escola Els Pins", "name: \"Institut L'Alzina: 1r & 2n #3\"")
    mar = schools / "institut-mar.yaml"
    edit(mar, "  address: 10.20.31.10", "  address: Server-1.Institutmar.bcn.example")
    edit(mar, "  ssh_user: root", "  ssh_user: _deploy-2\n  ssh_port: 2222")
    edit(mar, BBB_ADDRESS, '      address: "fd00::31:11"')
    config = loaded(schools)
    assert config.fleet.timezone == "Europe/Madrid"
    assert config.fleet.dns == ["9.9.9.9", "2620:fe::fe", "::1"]
    assert config.fleet.proxy == "http://proxy.bcn.example:3128"
    pins = config.schools["escola-pins"]
    assert (pins.name, pins.server.address) == ("Institut L'Alzina: 1r & 2n #3", "2001:db8:42::10")
    assert pins.ldap_base == "dc=escola-pins,ou=Escoles Publiques,o=Ajuntament_BCN,c=ES"
    assert config.schools["institut-mar"].server.ssh_port == 2222


@pytest.mark.parametrize("zone", ["Europe/Madrid", "UTC", "Atlantic/Canary", "America/Argentina/Buenos_Aires",
                                  "Etc/GMT-1"])
def test_time_zones_of_the_database_are_accepted(schools: Path, zone: str) -> None:
    edit(schools / "fleet.yaml", "timezone: Europe/Madrid", f"timezone: {zone}")
    assert loaded(schools).fleet.timezone == zone


def test_a_mirror_url_and_the_shipped_artifacts_are_accepted(schools: Path) -> None:
    edit(schools / "fleet.yaml", "mirror: null", "mirror: https://mirror.bcn.example/schoolctl/")
    fleet = loaded(schools).fleet
    assert fleet.artifacts.moodle.url_for("5.3") == \
        "https://download.moodle.org/download.php/direct/stable503/moodle-5.3.tgz"
    assert fleet.artifacts.etherpad.file_name("2.5.3") == "etherpad-lite-2.5.3.tar.gz"


# --- the model itself, without the loader -------------------------------------------------------------

def test_the_model_refuses_what_the_loader_refuses() -> None:
    with pytest.raises(ValidationError, match="a port does not belong in the address"):
        Server(address="10.0.0.1:22")
    with pytest.raises(ValidationError, match="it starts with '-'"):
        Server(address="-oProxyCommand=x")
    with pytest.raises(ValidationError, match="is not a placeholder here"):
        Artifact(version="5.0.6", url="https://x.example/{file.__class__}", file="m-{version}.tgz")
    assert Server(address="2001:db8::1").lab_name is None
    # SchoolTls alone checks only the syntax; its folder is the school's (checked by School)
    assert SchoolTls(cert_file="/tmp/c.pem", key_file="/tmp/k.pem").cert_file == "/tmp/c.pem"
    with pytest.raises(ValidationError, match="it holds a line break"):
        SchoolTls(cert_file="c.pem\n", key_file="k.pem")


def test_the_json_schema_carries_the_patterns() -> None:
    school, fleet = School.model_json_schema(), Fleet.model_json_schema()
    server = school["$defs"]["Server"]["properties"]
    assert server["ssh_user"]["pattern"] == LOGIN
    assert school["properties"]["name"]["maxLength"] == TEXT_MAX
    domain = next(s for s in school["properties"]["domain"]["anyOf"] if s.get("type") == "string")
    assert domain["pattern"] == DOMAIN and domain["format"] == "hostname"
    assert re.search(domain["pattern"], "bad host;rm -rf /") is None
    assert fleet["properties"]["dns"]["items"]["anyOf"] == [{"format": "ipv4"}, {"format": "ipv6"}]
    assert {"format": "hostname"} in fleet["properties"]["ntp"]["items"]["anyOf"]
    assert fleet["$defs"]["Artifact"]["properties"]["sha256"]["propertyNames"] == {"pattern": VERSION}
    assert fleet["$defs"]["Artifact"]["properties"]["url"]["pattern"] == "^https?://"
    assert fleet["$defs"]["AptRepo"]["properties"]["key_url"]["format"] == "uri"
    assert school["$defs"]["Contact"]["properties"]["email"]["format"] == "email"


def test_the_shipped_schools_still_validate() -> None:
    config = load(Path(__file__).resolve().parents[2] / "schools")
    assert sorted(config.schools) == ["demo", "escola-pins", "institut-mar"]


def test_an_editor_refuses_a_shell_line_as_address() -> None:
    """The JSON Schema carries the address pattern, so an editor flags it before validate does."""
    schema = School.model_json_schema()
    pattern = schema["$defs"]["Server"]["properties"]["address"]["pattern"]
    assert re.match(pattern, "bad host;rm -rf /") is None and re.match(pattern, "-oProxyCommand=x") is None
    assert re.match(pattern, "10.20.31.10") and re.match(pattern, "lab:demo") and re.match(pattern, "fe80::1")
