"""`schoolctl validate` on broken configs: each case is a valid copy of schools/ with one small edit,
and the test asserts the exact `path:line:column: message (hint)` lines, exit status 2, no traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import Run, at, edit, line_of, summary

FLEET_PRIVACY_NOTE = "a school may be stricter than the fleet, never laxer"
BBB_SERVER = "    server:\n      address: 10.20.31.11\n      os: ubuntu-24.04\n"


@dataclass
class Expect:
    """What `validate [ids]` must print on stderr (before the summary line)."""

    lines: list[str]
    ids: list[str] = field(default_factory=list)


CASES: dict[str, Callable[[Path], Expect]] = {}


def case(fn: Callable[[Path], Expect]) -> Callable[[Path], Expect]:
    CASES[fn.__name__] = fn
    return fn


# --- files that cannot be read or parsed -------------------------------------------------------

@case
def unreadable_directory_named_yaml(s: Path) -> Expect:
    (s / "x.yaml").mkdir()
    return Expect(["schools/x.yaml:1:1: cannot read the file: Is a directory (check that it exists and is readable)"])


@case
def non_utf8_bytes(s: Path) -> Expect:
    p = s / "demo.yaml"
    p.write_bytes(p.read_bytes().replace("Protecció".encode(), "Protecció".encode("latin-1")))
    raw = p.read_bytes().split(b"\n")
    line = next(i for i, text in enumerate(raw, 1) if b"Protecci\xf3" in text)
    col = raw[line - 1].index(b"\xf3") + 1
    return Expect([f"schools/demo.yaml:{line}:{col}: the file is not valid UTF-8 text (save it as UTF-8)"])


@case
def yaml_colon_in_plain_value(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "name: Escola Demo", "name: Escola: Demo")
    return Expect([f"schools/demo.yaml:{at(p, '^name:', ': Demo')}: YAML syntax error: mapping values are not "
                   "allowed in this context (check indentation, colons and quotes on this line and the one before)"])


@case
def yaml_unclosed_flow_mapping(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  jitsi: {}", "  jitsi: {")
    return Expect([f"schools/demo.yaml:{at(p, '^  dpo:', ':')}: YAML syntax error: did not find expected ',' "
                   "or '}' (check indentation, colons and quotes on this line and the one before)"])


@case
def yaml_unclosed_quote(s: Path) -> Expect:
    # The error must point at the quote that is never closed, not past the end of the file.
    p = s / "demo.yaml"
    edit(p, 'version: "3.3.1"', 'version: "3.3.1')
    return Expect([f"schools/demo.yaml:{at(p, '3[.]3[.]1', chr(34))}: YAML syntax error: while scanning a quoted "
                   "scalar: found unexpected end of stream (check indentation, colons and quotes on this line "
                   "and the one before)"])


@case
def yaml_bad_indentation(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "    default_quota: 2 GB", "      default_quota: 2 GB")
    return Expect([f"schools/demo.yaml:{at(p, 'default_quota', 'default_quota')}: YAML syntax error: did not "
                   "find expected key (check indentation, colons and quotes on this line and the one before)"])


@case
def yaml_two_documents(s: Path) -> Expect:
    p = s / "demo.yaml"
    p.write_text(p.read_text(encoding="utf-8") + "---\nid: demo\n", encoding="utf-8")
    return Expect([f"schools/demo.yaml:{line_of(p, '^---$')}:1: YAML syntax error: but found another document "
                   "(check indentation, colons and quotes on this line and the one before)"])


@case
def tab_indentation(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "server: lab:demo", "server: lab:demo\n\tssh_port: 22")
    return Expect([f"schools/demo.yaml:{line_of(p, chr(9))}:1: YAML syntax error: found a tab "
                   "character that violates indentation (YAML indents with spaces, never tabs)"])


@case
def duplicate_top_level_key(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "name: Escola Demo", "name: Escola Demo\nname: Escola Nova")
    return Expect([f"schools/demo.yaml:{at(p, 'Escola Nova')}: duplicate key 'name' (a key may appear only once "
                   "in a mapping; remove or merge the repeats)"])


@case
def duplicate_service_key(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  jitsi: {}", "  jitsi: {}\n  jitsi: {jvb_port: 10001}")
    return Expect([f"schools/demo.yaml:{at(p, 'jvb_port', 'jitsi')}: duplicate key 'jitsi' (a key may appear "
                   "only once in a mapping; remove or merge the repeats)"])


@case
def fleet_duplicate_privacy_key(s: Path) -> Expect:
    p = s / "fleet.yaml"
    edit(p, "  lobby: true", "  lobby: true\n  lobby: false")
    return Expect([f"schools/fleet.yaml:{at(p, '^  lobby: false')}: duplicate key 'lobby' (a key may appear only "
                   "once in a mapping; remove or merge the repeats)"])


@case
def key_with_a_line_break(s: Path) -> Expect:
    # One problem, one line: a key or value from the file is shown escaped, never with its line break.
    p = s / "demo.yaml"
    edit(p, "  jitsi: {}", '  jitsi: {}\n  "jitsi\\nx": {}')
    return Expect([f"schools/demo.yaml:{at(p, 'jitsi.nx')}: unknown key 'jitsi\\nx' under 'services' "
                   "(did you mean 'jitsi'?)"])


@case
def value_with_a_line_break(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "id: demo", 'id: "de\\nmo"')
    return Expect([f"schools/demo.yaml:{at(p, '^id', chr(34))}: id: 'de\\nmo' is not valid (expected lowercase "
                   "letters, digits and '-' (2 to 40, not starting or ending with '-'))"])


# --- wrong types ---------------------------------------------------------------------------------

@case
def string_for_int(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  jitsi: {}", "  jitsi:\n    jvb_port: lots")
    return Expect([f"schools/demo.yaml:{at(p, 'jvb_port', 'lots')}: services.jitsi.jvb_port: expected a whole "
                   "number, got 'lots'"])


@case
def float_for_int(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "  ssh_user: root", "  ssh_user: root\n  ssh_port: 22.5")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'ssh_port', '22.5')}: server.ssh_port: expected a whole "
                   "number, got 22.5"])


@case
def list_for_mapping(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  jitsi: {}", "  jitsi: [videobridge]")
    return Expect([f"schools/demo.yaml:{at(p, 'jitsi')}: services.jitsi: expected a mapping of keys, "
                   "got ['videobridge']"])


@case
def list_of_services(s: Path) -> Expect:
    p = s / "escola-pins.yaml"
    edit(p, "services:\n  moodle: {}\n  nextcloud:\n    default_quota: 1 GB\n  etherpad: {}",
         "services: [moodle, nextcloud]")
    return Expect([f"schools/escola-pins.yaml:{at(p, '^services')}: services: expected a mapping of keys, "
                   "got ['moodle', 'nextcloud']"])


@case
def text_for_bool(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "recordings: false", "recordings: maybe")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'recordings', 'maybe')}: privacy.recordings: expected "
                   "true or false, got 'maybe'"])


@case
def number_for_text(s: Path) -> Expect:
    p = s / "escola-pins.yaml"
    edit(p, "name: Escola Els Pins", "name: 42")
    return Expect([f"schools/escola-pins.yaml:{at(p, '^name', '42')}: name: expected text, got 42"])


@case
def empty_admins_list(s: Path) -> Expect:
    p = s / "fleet.yaml"
    text = p.read_text(encoding="utf-8")
    start = text.index("admins:")
    end = text.index("\ntls:")
    p.write_text(text[:start] + "admins: []\n" + text[end:], encoding="utf-8")
    return Expect([f"schools/fleet.yaml:{at(p, '^admins')}: admins: needs at least one entry"])


# --- unknown and missing keys ---------------------------------------------------------------------

@case
def unknown_top_level_key_typo(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "services:", "servces:")
    return Expect([
        "schools/demo.yaml:1:1: missing required key 'services' (add `services:`)",
        f"schools/demo.yaml:{at(p, '^servces')}: unknown key 'servces' (did you mean 'services'?)",
    ])


@case
def unknown_top_level_service(s: Path) -> Expect:
    # A service written at the top level instead of under `services:` must be pointed there.
    p = s / "demo.yaml"
    edit(p, "contacts:", "nextclod: {}\ncontacts:")
    return Expect([f"schools/demo.yaml:{at(p, '^nextclod')}: unknown key 'nextclod' "
                   "(did you mean 'services.nextcloud'?)"])


@case
def unknown_service(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  jitsi: {}", "  jitsi: {}\n  nextclod: {}")
    return Expect([f"schools/demo.yaml:{at(p, 'nextclod')}: unknown key 'nextclod' under 'services' "
                   "(did you mean 'nextcloud'?)"])


@case
def unknown_privacy_key(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  log_retention_days: 7", "  log_retention_day: 7")
    return Expect([f"schools/demo.yaml:{at(p, 'log_retention_day')}: unknown key 'log_retention_day' under "
                   "'privacy' (did you mean 'log_retention_days'?)"])


@case
def unknown_key_under_a_service(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "    default_quota: 2 GB", "    defualt_quota: 2 GB")
    return Expect([f"schools/demo.yaml:{at(p, 'defualt')}: unknown key 'defualt_quota' under "
                   "'services.nextcloud' (did you mean 'default_quota'?)"])


@case
def unknown_key_without_close_match(s: Path) -> Expect:
    p = s / "escola-pins.yaml"
    edit(p, "  etherpad: {}", "  etherpad:\n    colour: blue")
    return Expect([f"schools/escola-pins.yaml:{at(p, 'colour')}: unknown key 'colour' under 'services.etherpad' "
                   "(allowed here: version)"])


@case
def fleet_unknown_key(s: Path) -> Expect:
    p = s / "fleet.yaml"
    edit(p, "bbb_pool: null", "bbb_pol: null")
    return Expect([f"schools/fleet.yaml:{at(p, '^bbb_pol')}: unknown key 'bbb_pol' (did you mean 'bbb_pool'?)"])


@case
def fleet_unknown_privacy_key(s: Path) -> Expect:
    p = s / "fleet.yaml"
    edit(p, "  lobby: true", "  loby: true")
    return Expect([f"schools/fleet.yaml:{at(p, '^  loby')}: unknown key 'loby' under 'privacy' "
                   "(did you mean 'lobby'?)"])


@case
def missing_required_key(s: Path) -> Expect:
    edit(s / "demo.yaml", "district: Ciutat Vella\n", "")
    return Expect(["schools/demo.yaml:1:1: missing required key 'district' (add `district:`)"])


@case
def missing_nested_required_key(s: Path) -> Expect:
    p = s / "escola-pins.yaml"
    edit(p, "    email: dpd@bcn.example\n", "")
    return Expect([f"schools/escola-pins.yaml:{at(p, '^  dpo:')}: missing required key 'contacts.dpo.email' "
                   "(add `email:`)"])


@case
def fleet_missing_required_key(s: Path) -> Expect:
    edit(s / "fleet.yaml", "city: Barcelona\n", "")
    return Expect(["schools/fleet.yaml:1:1: missing required key 'city' (add `city:`)"])


# --- patterns, choices, ranges ----------------------------------------------------------------

@case
def bad_school_id(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "id: demo", "id: Demo_1")
    return Expect([f"schools/demo.yaml:{at(p, '^id', 'Demo_1')}: id: 'Demo_1' is not valid (expected lowercase "
                   "letters, digits and '-' (2 to 40, not starting or ending with '-'))"])


@case
def bad_domain(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "domain: institutmar.escoles.bcn.example", "domain: Institut Mar")
    return Expect([f"schools/institut-mar.yaml:{at(p, '^domain', 'Institut')}: domain: 'Institut Mar' is not "
                   "valid (expected a lowercase DNS name such as school.example.org)"])


@case
def bad_ssh_key(s: Path) -> Expect:
    p = s / "fleet.yaml"
    key = "AAAAC3NzaC1lZDI1NTE5AAAAIDmew4FELI7W4fb2mLyMU8XOB1aoh1RRcmpo9rtZLehe ana@ajuntament"
    edit(p, key, "ana-laptop")
    return Expect([f"schools/fleet.yaml:{at(p, 'ana-laptop', 'ssh-ed25519')}: admins[0].ssh_keys[0]: "
                   "'ssh-ed25519 ana-laptop' is not valid (expected one OpenSSH public key line, "
                   "e.g. 'ssh-ed25519 AAAA... name@laptop')"])


@case
def bad_school_admin_ssh_key(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "      - ssh-ed25519 AAAA", "      - ssh-dss AAAA")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'ssh-dss', 'ssh-dss')}: admins[0].ssh_keys[0]: "
                   "'ssh-dss AAAAC3NzaC1lZDI1NTE5AAAAIFUVXR5kmXYjvz8z/gP9GDNp8gCYuVYrLV2XwwTLAuPK marta@escola-mar' "
                   "is not valid (expected one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... name@laptop')"])


@case
def bad_sha256(s: Path) -> Expect:
    p = s / "fleet.yaml"
    edit(p, '"5.3": 7e5edf110555956571f40e42acffde0eb23681ebebd212a2fec0fe7d795dd511', '"5.3": DEADBEEF')
    return Expect([f"schools/fleet.yaml:{at(p, 'DEADBEEF', 'DEADBEEF')}: artifacts.moodle.sha256.5.3: "
                   "'DEADBEEF' is not valid (expected 64 lowercase hexadecimal digits)"])


@case
def bad_fleet_version(s: Path) -> Expect:
    p = s / "fleet.yaml"
    edit(p, 'version: "5.3"', 'version: "5.3.x"')
    return Expect([f"schools/fleet.yaml:{at(p, '5.3.x', chr(34))}: artifacts.moodle.version: '5.3.x' is not "
                   "valid (expected a version such as 5.0.6)"])


@case
def bad_school_version(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, 'version: "5.0.6"', "version: latest")
    return Expect([f"schools/demo.yaml:{at(p, 'latest', 'latest')}: services.moodle.version: 'latest' is not "
                   "valid (expected a version such as 5.0.6)"])


@case
def bad_email(s: Path) -> Expect:
    # Every pattern needs a human description; a bare regular expression is no help to a school.
    p = s / "escola-pins.yaml"
    edit(p, "email: dpd@bcn.example", "email: dpd")
    return Expect([f"schools/escola-pins.yaml:{at(p, 'email', 'dpd')}: contacts.dpo.email: 'dpd' is not valid "
                   "(expected an email address such as dpd@example.org)"])


@case
def bad_lab_name(s: Path) -> Expect:
    p = s / "escola-pins.yaml"
    edit(p, "server: 10.20.42.10", "server: lab:Pins_1")
    return Expect([f"schools/escola-pins.yaml:{at(p, '^server', 'lab:')}: server.address: a lab host is lab:NAME "
                   "with NAME of lowercase letters, digits and '-'"])


@case
def access_log_partial(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  log_retention_days: 7", "  access_log: partial")
    return Expect([f"schools/demo.yaml:{at(p, 'access_log', 'partial')}: privacy.access_log: 'partial' is not "
                   "one of: off, anonymised, full (use one of: off, anonymised, full)"])


@case
def fleet_literal_with_close_choice(s: Path) -> Expect:
    p = s / "fleet.yaml"
    edit(p, "access_log: anonymised", "access_log: anonymized")
    return Expect([f"schools/fleet.yaml:{at(p, 'access_log', 'anonymized')}: privacy.access_log: 'anonymized' "
                   "is not one of: off, anonymised, full (did you mean 'anonymised'?)"])


@case
def unknown_language(s: Path) -> Expect:
    p = s / "escola-pins.yaml"
    edit(p, "languages: [ca, es]", "languages: [ca, fr]")
    return Expect([f"schools/escola-pins.yaml:{at(p, '^languages', 'fr')}: languages[1]: 'fr' is not one of: "
                   "ca, es, en (use one of: ca, es, en)"])


@case
def number_above_range(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "log_retention_days: 7", "log_retention_days: 400")
    return Expect([f"schools/demo.yaml:{at(p, 'log_retention', '400')}: privacy.log_retention_days: 400 is out "
                   "of range (it must be at most 365)"])


@case
def number_below_range(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "log_retention_days: 7", "log_retention_days: 0")
    return Expect([f"schools/demo.yaml:{at(p, 'log_retention', '0')}: privacy.log_retention_days: 0 is out of "
                   "range (it must be at least 1)"])


@case
def port_out_of_range(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "  ssh_user: root", "  ssh_user: root\n  ssh_port: 70000")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'ssh_port', '70000')}: server.ssh_port: 70000 is out of "
                   "range (it must be at most 65535)"])


# --- privacy floors ------------------------------------------------------------------------------

def _laxer(school: str, p: Path, fleet: Path, key: str, value: str, floor: str, token: str) -> str:
    fleet_line = line_of(fleet, f"^  {key}:")
    return (f"schools/{school}:{at(p, f'^  {key}:', token)}: privacy.{key}: {value} is laxer than the fleet floor "
            f"{floor} (schools/fleet.yaml:{fleet_line}) ({FLEET_PRIVACY_NOTE}; remove the key or use {floor} or "
            "a stricter value)")


@case
def privacy_more_log_days_than_floor(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "log_retention_days: 7", "log_retention_days: 30")
    return Expect([_laxer("demo.yaml", p, s / "fleet.yaml", "log_retention_days", "30", "14", "30")])


@case
def privacy_full_access_log(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, 'access_log: "off"', "access_log: full")
    return Expect([_laxer("institut-mar.yaml", p, s / "fleet.yaml", "access_log", "full", "anonymised", "full")])


@case
def privacy_guests_allowed(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "guests: false", "guests: true")
    return Expect([_laxer("institut-mar.yaml", p, s / "fleet.yaml", "guests", "true", "false", "true")])


@case
def privacy_no_lobby_and_outbound_allowed(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "  log_retention_days: 7", "  lobby: false\n  outbound: allow")
    fleet = s / "fleet.yaml"
    return Expect([_laxer("demo.yaml", p, fleet, "lobby", "false", "true", "false"),
                   _laxer("demo.yaml", p, fleet, "outbound", "allow", "deny", "allow")])


@case
def privacy_laxer_than_builtin_default(s: Path) -> Expect:
    edit(s / "fleet.yaml", "  search_indexing: false\n", "")
    p = s / "demo.yaml"
    edit(p, "  log_retention_days: 7", "  search_indexing: true")
    return Expect([f"schools/demo.yaml:{at(p, 'search_indexing', 'true')}: privacy.search_indexing: true is laxer "
                   "than the fleet floor false (schoolctl's built-in default) (a school may be stricter than the "
                   "fleet, never laxer; remove the key or use false or a stricter value)"])


# --- the fleet as a whole ----------------------------------------------------------------------

@case
def id_not_matching_file_name(s: Path) -> Expect:
    p = s / "demo.yaml"
    edit(p, "id: demo", "id: escola-demo")
    return Expect([f"schools/demo.yaml:{at(p, '^id', 'escola-demo')}: id 'escola-demo' does not match the file "
                   "name 'demo.yaml' (rename the file to escola-demo.yaml or set `id: demo`)"])


@case
def duplicate_school_id_yaml_and_yml(s: Path) -> Expect:
    (s / "demo.yml").write_bytes((s / "demo.yaml").read_bytes())
    return Expect([f"schools/demo.yml:{at(s / 'demo.yml', '^id', 'demo')}: school id 'demo' is already used by "
                   "schools/demo.yaml (every school needs its own id; rename one of the two)"])


@case
def duplicate_domain(s: Path) -> Expect:
    edit(s / "escola-pins.yaml", "server: 10.20.42.10", "server: 10.20.42.10\ndomain: institutmar.escoles.bcn.example")
    p = s / "institut-mar.yaml"
    return Expect([f"schools/institut-mar.yaml:{at(p, '^domain', 'institutmar')}: domain "
                   "'institutmar.escoles.bcn.example' is already used by schools/escola-pins.yaml "
                   "(give each school its own domain)"])


@case
def duplicate_default_domain(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "domain: institutmar.escoles.bcn.example", "domain: demo.escoles.bcn.example")
    return Expect([f"schools/institut-mar.yaml:{at(p, '^domain', 'demo')}: domain 'demo.escoles.bcn.example' is "
                   "already used by schools/demo.yaml (give each school its own domain)"])


@case
def duplicate_server(s: Path) -> Expect:
    edit(s / "escola-pins.yaml", "server: 10.20.42.10", "server: 10.20.31.10")
    p = s / "institut-mar.yaml"
    return Expect([f"schools/institut-mar.yaml:{at(p, '^server')}: server '10.20.31.10' is already used by "
                   "schools/escola-pins.yaml (each school needs its own server)"])


@case
def bbb_pool_without_fleet_pool(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, BBB_SERVER, "    pool: true\n")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'pool: true', 'true')}: services.bigbluebutton.pool: the "
                   "fleet declares no bbb_pool (add `bbb_pool: {url: ...}` to schools/fleet.yaml, or give the "
                   "school its own `server:`)"])


@case
def bbb_on_a_lab_host(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, BBB_SERVER, "    server: lab:mar-bbb\n")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'lab:mar-bbb', 'lab:')}: services.bigbluebutton.server: "
                   "BigBlueButton needs an Ubuntu 24.04 host; lab hosts run Debian 13 (name a real Ubuntu 24.04 "
                   "server, or use `pool: true`)"])


@case
def bbb_on_debian(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "      os: ubuntu-24.04\n", "")
    return Expect([f"schools/institut-mar.yaml:{at(p, '^    server:')}: services.bigbluebutton.server: "
                   "BigBlueButton 4.0 runs only on Ubuntu 24.04, not debian-13 (declare `os: ubuntu-24.04` on a "
                   "host that runs it)"])


@case
def bbb_too_few_cores(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "cores: 8", "cores: 2")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'cores', '2')}: services.bigbluebutton.cores: 2 is too few "
                   "(upstream requires 4 or more CPU cores (8 recommended))"])


@case
def bbb_server_and_pool(s: Path) -> Expect:
    p = s / "institut-mar.yaml"
    edit(p, "cores: 8", "cores: 8\n    pool: true")
    return Expect([f"schools/institut-mar.yaml:{at(p, 'bigbluebutton')}: services.bigbluebutton: say where "
                   "BigBlueButton runs: either `server:` (an Ubuntu 24.04 host) or `pool: true` (the city's BBB "
                   "pool), not both and not neither"])


@case
def school_server_on_ubuntu(s: Path) -> Expect:
    # The problem must point at the school's `server:`, not at the top of the file.
    p = s / "institut-mar.yaml"
    edit(p, "  ssh_user: root", "  ssh_user: root\n  os: ubuntu-24.04")
    return Expect([f"schools/institut-mar.yaml:{at(p, '^server')}: server: a school server runs Debian 13 "
                   "(os: debian-13); only BigBlueButton's own host is Ubuntu 24.04"])


@case
def tls_provided_without_school_files(s: Path) -> Expect:
    edit(s / "fleet.yaml", "  mode: acme ", "  mode: provided ")
    return Expect([f"schools/{name}:1:1: the fleet's tls.mode is 'provided' but the school names no certificate "
                   "(add `tls: {cert_file: ..., key_file: ...}`)"
                   for name in ("demo.yaml", "escola-pins.yaml", "institut-mar.yaml")])


# --- missing, empty and odd files --------------------------------------------------------------

@case
def missing_fleet_file(s: Path) -> Expect:
    (s / "fleet.yaml").unlink()
    return Expect(["schools/fleet.yaml:1:1: the fleet file is missing (create it: the city's domain, admins, "
                   "artifacts and privacy floors (see README.md))"])


@case
def empty_school_file(s: Path) -> Expect:
    (s / "demo.yaml").write_text("")
    return Expect(["schools/demo.yaml:1:1: the file is empty (start from `schoolctl new ID`)"])


@case
def fleet_file_only_comments(s: Path) -> Expect:
    (s / "fleet.yaml").write_text("# the city's settings, one day\n")
    return Expect(["schools/fleet.yaml:1:1: the file is empty (see README.md for the fleet file)"])


@case
def school_file_is_a_list(s: Path) -> Expect:
    (s / "demo.yaml").write_text("- id: demo\n- name: Escola Demo\n")
    return Expect(["schools/demo.yaml:1:1: expected a mapping of keys, found a list (a config file is "
                   "`key: value` lines)"])


@case
def fleet_file_is_text(s: Path) -> Expect:
    (s / "fleet.yaml").write_text("Barcelona\n")
    return Expect(["schools/fleet.yaml:1:1: expected a mapping of keys, found a str (a config file is "
                   "`key: value` lines)"])


@case
def unknown_school_id_close(s: Path) -> Expect:
    return Expect(["schools/dmeo.yaml:1:1: no school 'dmeo' in schools/ (did you mean 'demo'?)"], ["dmeo"])


@case
def unknown_school_id_far(s: Path) -> Expect:
    return Expect(["schools/zzz.yaml:1:1: no school 'zzz' in schools/ (known schools: demo, escola-pins, "
                   "institut-mar)"], ["zzz"])


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_config(name: str, schools: Path, validate: Callable[..., Run]) -> None:
    expect = CASES[name](schools)
    run = validate(*expect.ids)
    assert run.lines == [*expect.lines, summary(len(expect.lines))]
    assert run.code == 2
    assert run.stdout == ""
    assert isinstance(run.result.exception, SystemExit)
    assert "Traceback" not in run.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway (see the x.yaml directory case)")
def test_permission_denied(schools: Path, validate: Callable[..., Run]) -> None:
    (schools / "demo.yaml").chmod(0)
    try:
        run = validate()
    finally:
        (schools / "demo.yaml").chmod(0o644)
    assert run.lines == ["schools/demo.yaml:1:1: cannot read the file: Permission denied (check that it exists and "
                         "is readable)", summary(1)]
    assert run.code == 2


def test_only_the_named_school_is_checked(schools: Path, validate: Callable[..., Run]) -> None:
    """`validate ID` reports the named school and the fleet file, not the other schools' problems."""
    (schools / "escola-pins.yaml").write_text("- broken\n")
    run = validate("demo")
    assert (run.code, run.lines) == (0, [])
    assert run.stdout == "ok: schools/ is valid (1 school checked)\n"
    assert validate("escola-pins").code == 2
    edit(schools / "fleet.yaml", "city: Barcelona\n", "")
    assert validate("demo").lines == ["schools/fleet.yaml:1:1: missing required key 'city' (add `city:`)", summary(1)]


def test_validate_id_reports_its_conflicts_with_other_schools(schools: Path, validate: Callable[..., Run]) -> None:
    """A clash between two schools concerns both: `validate ID` of either one must report it."""
    p = schools / "a-school.yaml"
    p.write_text((schools / "demo.yaml").read_text(encoding="utf-8").replace("id: demo", "id: a-school")
                 .replace("server: lab:demo", "server: lab:a-school\ndomain: demo.escoles.bcn.example"),
                 encoding="utf-8")
    clash = (f"schools/demo.yaml:{at(schools / 'demo.yaml', '^id', 'demo')}: domain 'demo.escoles.bcn.example' is "
             "already used by schools/a-school.yaml (give each school its own domain)")
    assert validate().lines == [clash, summary(1)]
    assert validate("demo").lines == [clash, summary(1)]
    run = validate("a-school")
    assert (run.code, run.lines) == (2, [clash, summary(1)])


def test_every_problem_is_reported_at_once(schools: Path, validate: Callable[..., Run]) -> None:
    edit(schools / "demo.yaml", "id: demo", "id: Demo")
    edit(schools / "escola-pins.yaml", "languages: [ca, es]", "languages: [ca, fr]")
    edit(schools / "fleet.yaml", "  lobby: true", "  loby: true")
    run = validate()
    assert run.code == 2
    assert [line.split(":")[0] for line in run.lines[:-1]] == \
        ["schools/demo.yaml", "schools/escola-pins.yaml", "schools/fleet.yaml"]
    assert run.lines[-1] == summary(3)


def test_tls_provided_with_school_files_is_valid(schools: Path, validate: Callable[..., Run]) -> None:
    edit(schools / "fleet.yaml", "  mode: acme ", "  mode: provided ")
    for name in ("demo", "escola-pins", "institut-mar"):
        p = schools / f"{name}.yaml"
        p.write_text(p.read_text(encoding="utf-8") + f"tls: {{cert_file: {name}.pem, key_file: {name}.key}}\n",
                     encoding="utf-8")
    run = validate()
    assert (run.code, run.stderr) == (0, "")


def test_fleet_bbb_pool_makes_pool_valid(schools: Path, validate: Callable[..., Run]) -> None:
    edit(schools / "fleet.yaml", "bbb_pool: null", "bbb_pool: {url: https://bbb.bcn.example/bigbluebutton/}")
    edit(schools / "institut-mar.yaml", BBB_SERVER, "    pool: true\n")
    run = validate()
    assert (run.code, run.stderr) == (0, "")


def test_missing_schools_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import run_cli

    monkeypatch.chdir(tmp_path)
    run = run_cli("--schools-dir", "nowhere", "validate")
    assert run.lines == ["nowhere:1:1: no such schools folder (pass --schools-dir DIR or set SCHOOLCTL_SCHOOLS_DIR)",
                         summary(1)]
    assert run.code == 2
