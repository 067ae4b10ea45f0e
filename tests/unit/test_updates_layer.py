"""Security updates that arrive (no hosts): the base layer's apt sources from the model (and the
lab's from the build machine's apt), refusal of URLs deb822 cannot hold, the reader of apt's
two source formats, the unattended-upgrades origins, the ledger hook, and the update controls'
verdicts on sample evidence."""

from __future__ import annotations

import json
import py_compile
import time
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schoolctl.audit import updates as u
from schoolctl.audit.catalogue import CachedHost, Context, Expect, load_all, run_control
from schoolctl.audit.host import PKGS, UNITS
from schoolctl.config.loader import load
from schoolctl.config.model import EffectiveSchool
from schoolctl.deploy import base
from schoolctl.deploy.site import Site
from schoolctl.errors import ConfigError, LabError
from schoolctl.lab import debian

from .rendered import files
from .test_audit_catalogue import FakeBackend

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
DAY = 86400


@cache
def _shipped() -> EffectiveSchool:
    return load(SCHOOLS).schools["institut-mar"]


def school(**fleet: Any) -> EffectiveSchool:
    """The shipped school with fleet fields replaced WITHOUT validation (the rendering's own defence)."""
    eff = _shipped()
    if fleet:
        eff = eff.model_copy(update={"fleet": eff.fleet.model_copy(update=fleet)})
    return eff


def site(eff: EffectiveSchool | None = None, **kw: Any) -> Site:
    from schoolctl.secrets import Secret

    return Site(school=eff or school(), secret=lambda name, length=32: Secret("S" * length), **kw)


def sources_of(s: Site) -> str:
    return files([base.layer(s)])[base.SOURCES]


# --- the base layer's apt sources ----------------------------------------------------------------

def test_debian_sources_come_from_the_fleet_and_are_in_place_before_any_package() -> None:
    s = site()
    layer = base.layer(s)
    [src] = [f for f in layer.pre_files if f.path == base.SOURCES]
    assert src.then and "apt-get" in src.then and src.then.endswith(" update")
    debian_ = s.school.fleet.debian
    entries = [(e.uri, e.suite) for e in debian.deb822_entries(src.data.decode())]
    assert entries == [(debian_.mirror, "trixie"), (debian_.mirror, "trixie-updates"),
                       (debian_.security, "trixie-security")]
    text = src.data.decode()
    assert text.count("Components: main\n") == 2
    assert text.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n") == 2
    assert {"debian-archive-keyring", "python3-apt", "unattended-upgrades"} <= set(layer.packages)
    assert not any(f.path == base.SOURCES for f in layer.files), "a pre_file, not a file of the round"


def test_the_stray_sources_list_is_moved_aside_never_deleted() -> None:
    [step] = [st for st in base.layer(site()).pre_steps if "sources.list" in st.name]
    assert step.check.startswith("! grep -qsEv") and base.STRAY in step.check
    assert f">> {base.REPLACED}" in step.apply and step.apply.index(">>") < step.apply.index("rm -f")
    assert step.apply.endswith(" update")


def test_the_lab_uses_the_build_machines_archive() -> None:
    s = site(debian_mirror="http://mirror.example/debian/", debian_security="http://security.example/debian-sec")
    entries = [(e.uri, e.suite) for e in debian.deb822_entries(sources_of(s))]
    assert entries == [("http://mirror.example/debian/", "trixie"), ("http://mirror.example/debian/", "trixie-updates"),
                       ("http://security.example/debian-sec", "trixie-security")]
    assert "build machine" in sources_of(s)


def test_a_real_server_without_a_debian_archive_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        base.layer(site(school(debian=None)))
    assert e.value.exit_code == 2
    [problem] = e.value.problems
    assert problem.path.endswith("fleet.yaml") and "`debian:`" in problem.message
    assert "mirror:" in problem.hint and "security:" in problem.hint


HOSTILE = ["http://x.example/debian\nTypes: deb-src", "http://x.example/debian http://evil.example/debian",
           "http://x.example/$(id)", "ftp://x.example/debian", "http://x.example/debian#x", "file:/srv/debian",
           "http://x.example/deb\"ian", "http://x.example/debian;", "", "http://user:pw@x.example/debian",
           "http://x.example/%2e%2e/", "http://x.example:99999999/debian"]


@pytest.mark.parametrize("url", HOSTILE)
def test_an_archive_url_deb822_cannot_hold_is_refused(url: str) -> None:
    ok = school().fleet.debian
    with pytest.raises(ValueError, match=r"fleet.debian.mirror"):
        sources_of(site(school(debian=ok.model_copy(update={"mirror": url}))))
    with pytest.raises(ValueError, match=r"fleet.debian.security"):
        sources_of(site(school(debian=ok.model_copy(update={"security": url}))))
    with pytest.raises(ValueError, match="lab"):
        sources_of(site(debian_mirror=url or "x y", debian_security="http://s.example/debian-security"))


def test_plain_archive_urls_are_taken() -> None:
    for url in ("http://debian.bcn.example/debian", "https://mirror.example:8443/debian/", "http://10.0.0.5/debian",
                "http://[2001:db8::1]/debian-security"):
        assert base.archive_url(url, "x") == url


def test_unattended_upgrades_origins_are_ours_alone_and_match_trixie_security() -> None:
    text = files([base.layer(site())])["/etc/apt/apt.conf.d/52schoolctl-unattended-upgrades"]
    lines = [ln.strip() for ln in text.splitlines() if not ln.strip().startswith("//")]
    clear = lines.index("#clear Unattended-Upgrade::Origins-Pattern;")
    assert clear < lines.index("Unattended-Upgrade::Origins-Pattern {")
    assert '"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";' in lines
    assert 'APT::Periodic::Unattended-Upgrade "1";' in lines and 'APT::Periodic::Update-Package-Lists "1";' in lines


def test_the_ledger_hook_is_installed_and_never_fails_apt(tmp_path: Path) -> None:
    layer = base.layer(site())
    out = files([layer])
    hook = out["/etc/apt/apt.conf.d/60schoolctl-security-ledger"]
    assert f'APT::Update::Post-Invoke-Success {{ "[ ! -x {base.LEDGER_HOOK} ] || {base.LEDGER_HOOK} || true"; }};' \
        in hook
    script = out[base.LEDGER_HOOK]
    assert script.startswith("#!/usr/bin/python3\n")
    assert f'LEDGER = "{base.LEDGER}"' in script
    assert 'SECURITY = ("Debian", "Debian-Security", "trixie-security")' in script
    (tmp_path / "hook.py").write_text(script)
    py_compile.compile(str(tmp_path / "hook.py"), doraise=True)
    [f] = [f for f in layer.files if f.path == base.LEDGER_HOOK]
    assert f.mode == "0755"
    [step] = [st for st in layer.steps if "ledger" in st.name]
    assert step.check == f"test -s {base.LEDGER}" and step.apply == base.LEDGER_HOOK
    assert base.LEDGER == u.LEDGER, "the audit reads the ledger the base layer writes"


# --- the lab's reader of the build machine's apt sources -------------------------------------------

DEB822 = """\
Types: deb
# a snapshot of the archive, once
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://old.example/debian
Suites: bookworm-security
Enabled: no

Types: deb
URIs: https://vendor.example/apt
 https://vendor2.example/apt
Suites: nodistro
Components: main
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror1.example/debian bookworm main contrib
deb [ trusted=yes ] http://security1.example/debian-security bookworm-security main # a comment
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
"""


def test_deb822_entries_skip_disabled_paragraphs_and_join_continuation_lines() -> None:
    found = [(e.uri, e.suite) for e in debian.deb822_entries(DEB822)]
    assert found == [("http://mirror.example/debian", "bookworm"), ("http://mirror.example/debian", "bookworm-updates"),
                     ("http://security.example/debian-security", "bookworm-security"),
                     ("https://vendor.example/apt", "nodistro"), ("https://vendor2.example/apt", "nodistro")]


def test_one_line_entries_skip_comments_deb_src_and_options() -> None:
    found = [(e.uri, e.suite) for e in debian.one_line_entries(ONE_LINE) if e.uri.startswith("http")]
    assert found == [("http://mirror1.example/debian", "bookworm"),
                     ("http://security1.example/debian-security", "bookworm-security")]
    assert debian.pick(debian.one_line_entries(ONE_LINE), "bookworm") == (
        "http://mirror1.example/debian", "http://security1.example/debian-security")


def _etc(tmp_path: Path, main: str | None = None, parts: dict[str, str] | None = None) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if main is not None:
        (etc / "sources.list").write_text(main)
    for name, text in (parts or {}).items():
        (etc / "sources.list.d" / name).write_text(text)
    return etc


def test_the_archive_of_a_machine_like_this_one(tmp_path: Path) -> None:
    etc = _etc(tmp_path, parts={"debian.sources": DEB822, "vendor.list.disabled-by-farm": ONE_LINE,
                                "vendor.list": "deb https://vendor.example/apt nodistro main\n"})
    os_release = tmp_path / "os-release"
    os_release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    assert debian.archive(etc, os_release) == ("http://mirror.example/debian", "http://security.example/debian-security")
    # without os-release: the release whose -security suite is configured
    assert debian.archive(etc, tmp_path / "missing") == ("http://mirror.example/debian",
                                                         "http://security.example/debian-security")


def test_one_line_sources_list_and_the_old_security_suite_name(tmp_path: Path) -> None:
    etc = _etc(tmp_path, main="deb http://m.example/debian buster main\n"
                              "deb http://s.example/debian-security buster/updates main\n")
    assert debian.pick(debian.read_entries(etc), "buster") == ("http://m.example/debian",
                                                                "http://s.example/debian-security")


def test_no_security_suite_on_the_build_machine_is_a_lab_error(tmp_path: Path) -> None:
    etc = _etc(tmp_path, main="deb http://m.example/debian bookworm main\n")
    with pytest.raises(LabError, match="-security") as e:
        debian.pick(debian.read_entries(etc), "bookworm")
    assert "m.example" in str(e.value) and "debian.sources" in e.value.hint


# --- the controls on sample evidence -------------------------------------------------------------

NOW = 1_800_000_000.0
SEC_URI = "http://security.example/debian-security/"


def state(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "now": NOW, "suite": "trixie-security",
        "sources": [{"uri": "http://mirror.example/debian/", "dist": "trixie", "release": "/l/m_InRelease",
                     "origin": "Debian", "label": "Debian", "codename": "trixie", "date": NOW - 20 * DAY,
                     "valid_until": None, "mtime": NOW - 3600},
                    {"uri": SEC_URI, "dist": "trixie-security", "release": "/l/s_InRelease", "origin": "Debian",
                     "label": "Debian-Security", "codename": "trixie-security", "date": NOW - 0.5 * DAY,
                     "valid_until": NOW + 6 * DAY, "mtime": NOW - 3600}],
        "indexes": ["security.example"],
        "uu": {"allowed_origins": ["origin=Debian,codename=trixie-security,label=Debian-Security"], "blacklist": [],
               "matches": [["security.example", True]]},
        "pending": {}, "ledger": {"suite": "trixie-security", "pending": {}}}
    data.update(changes)
    return data


APTCONF_OK = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
UNITS_OK = "\n\n".join(f"Id={t}\nUnitFileState=enabled\nActiveState=active\nConditionResult=yes"
                       for t in ("apt-daily.timer", "apt-daily-upgrade.timer")) + "\n\nnone\n"


def check(cid: str, data: dict[str, Any] | str, aptconf: str = APTCONF_OK, units: str = UNITS_OK,
          reboot: str = f"{int(NOW)}\n@@pkgs\n", **updates: int) -> tuple[str, str]:
    answers = {u.APT_STATE: (0, data if isinstance(data, str) else json.dumps(data)), u.APTCONF: (0, aptconf),
               UNITS: (0, units), PKGS: (0, "unattended-upgrades ii \n"), u.REBOOT: (0, reboot)}
    limits = {"index_max_age_days": 2, "security_within_days": 3, "reboot_within_days": 7, **updates}
    eff = SimpleNamespace(fleet=SimpleNamespace(updates=SimpleNamespace(**limits)), has=lambda s: False)
    ctx = Context(CachedHost(SimpleNamespace(backend=FakeBackend(answers))), eff, Expect())
    ctx.host.prefetch(list(answers))
    r = run_control(load_all()[cid], ctx)
    return r.status, r.observed


def test_the_update_controls_are_registered_with_their_metadata() -> None:
    controls = load_all()
    for cid in ("HOST-APT-SECURITY-SUITE", "HOST-UNATTENDED-UPGRADES", "HOST-SECURITY-UPDATES-APPLIED",
                "HOST-REBOOT-PENDING"):
        c = controls[cid]
        assert c.check.__module__ == "schoolctl.audit.updates" and c.legal == ("32",)
        assert set(c.titles) == {"ca", "es"} and c.why


def test_security_suite_fresh_passes_with_its_age() -> None:
    status, observed = check("HOST-APT-SECURITY-SUITE", state())
    assert status == "pass" and f"trixie-security from {SEC_URI}" in observed and "0.5 days old" in observed


@pytest.mark.parametrize(("field", "days"), [("date", 5), ("mtime", 4)])
def test_a_stale_security_index_fails_whichever_clock_is_old(field: str, days: float) -> None:
    data = state()
    data["sources"][1][field] = NOW - days * DAY
    status, observed = check("HOST-APT-SECURITY-SUITE", data)
    assert status == "fail" and f"{days:.1f} days old" in observed and "stale" in observed
    assert check("HOST-APT-SECURITY-SUITE", data, index_max_age_days=days + 1)[0] == "pass"


def test_every_security_source_must_be_fresh() -> None:
    data = state()
    data["sources"].append({**data["sources"][1], "uri": "http://stale.example/debian-security/",
                            "date": NOW - 9 * DAY})
    status, observed = check("HOST-APT-SECURITY-SUITE", data)
    assert status == "fail" and "stale.example" in observed and "9.0 days old" in observed


def test_no_security_suite_fails_naming_the_sources_apt_has() -> None:
    status, observed = check("HOST-APT-SECURITY-SUITE", state(sources=state()["sources"][:1], indexes=[]))
    assert status == "fail" and "apt knows no trixie-security suite" in observed and "trixie (Debian)" in observed
    status, observed = check("HOST-SECURITY-UPDATES-APPLIED", state(sources=state()["sources"][:1], indexes=[]))
    assert status == "fail" and "cannot be known" in observed


def test_no_python3_apt_or_a_broken_script_fails_with_the_reason() -> None:
    status, observed = check("HOST-APT-SECURITY-SUITE", {"error": "python3-apt is not installed (x)"})
    assert status == "fail" and "python3-apt" in observed
    status, observed = check("HOST-SECURITY-UPDATES-APPLIED", "Traceback ...")
    assert status == "fail" and "evidence script failed" in observed


def test_unattended_upgrades_passes_when_it_would_install_security_daily() -> None:
    status, observed = check("HOST-UNATTENDED-UPGRADES", state())
    assert status == "pass", observed
    assert "security.example: allowed" in observed and "apt-daily-upgrade.timer enabled/active" in observed


@pytest.mark.parametrize(("kind", "word"), [
    ("matcher", "would not install from trixie-security"), ("periodic", "cause: Unattended-Upgrade 0"),
    ("lists", "cause: Update-Package-Lists (unset)"), ("timer", "apt-daily-upgrade.timer disabled/inactive"),
    ("uu-error", "cannot be asked: UnknownMatcherError")])
def test_unattended_upgrades_fails_naming_the_cause(kind: str, word: str) -> None:
    data, aptconf, units = state(), APTCONF_OK, UNITS_OK
    if kind == "matcher":
        data["uu"]["matches"] = [["security.example", False]]
    elif kind == "periodic":
        aptconf = aptconf.replace('Unattended-Upgrade "1"', 'Unattended-Upgrade "0"')
    elif kind == "lists":
        aptconf = aptconf.splitlines()[1]
    elif kind == "timer":
        units = units.replace("Id=apt-daily-upgrade.timer\nUnitFileState=enabled\nActiveState=active",
                              "Id=apt-daily-upgrade.timer\nUnitFileState=disabled\nActiveState=inactive")
    else:
        data["uu"] = {"error": "UnknownMatcherError: Unknown whitelist entry for matcher x"}
    status, observed = check("HOST-UNATTENDED-UPGRADES", data, aptconf, units)
    assert status == "fail" and word in observed, observed


def test_periodic_intervals() -> None:
    assert u.daily("1") and u.daily("always") and u.daily("12h") and u.daily("86400s")
    assert not any(u.daily(v) for v in (None, "0", "2", "", "yes", "25h"))


def _iso(days_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - days_ago * DAY))


def test_security_updates_applied_reads_ages_from_the_ledger() -> None:
    assert check("HOST-SECURITY-UPDATES-APPLIED", state()) == (
        "pass", "no security update pending (apt's trixie-security index from security.example)")
    pending = {"openssl=3.5.4-1~deb13u2": {"installed": "3.5.4-1~deb13u1", "candidate": "3.5.4-1~deb13u2",
                                            "held": False, "blacklisted": False},
               "libc6=2.41-12+deb13u1": {"installed": "2.41-12", "candidate": "2.41-12+deb13u1", "held": True,
                                         "blacklisted": False}}
    ledger = {"pending": {"openssl=3.5.4-1~deb13u2": _iso(1), "libc6=2.41-12+deb13u1": _iso(4)}}
    status, observed = check("HOST-SECURITY-UPDATES-APPLIED", state(pending=pending, ledger=ledger))
    assert status == "fail" and observed.startswith("1 of 2 pending security update(s) waiting longer than 3")
    assert "libc6=2.41-12+deb13u1 (installed 2.41-12; pending 4.0 days, over 3; held)" in observed
    assert "openssl=3.5.4-1~deb13u2 (installed 3.5.4-1~deb13u1; pending 1.0 days)" in observed
    assert check("HOST-SECURITY-UPDATES-APPLIED", state(pending=pending, ledger=ledger), security_within_days=5)[0] \
        == "pass"


def test_a_pending_update_the_ledger_does_not_know_is_seen_now() -> None:
    pending = {"curl=8.14.1-2+deb13u1": {"installed": "8.14.1-2", "candidate": "8.14.1-2", "held": False,
                                         "blacklisted": True}}
    status, observed = check("HOST-SECURITY-UPDATES-APPLIED", state(pending=pending, ledger=None,
                                                                     ledger_error="FileNotFoundError: x"))
    assert status == "pass"
    assert "curl=8.14.1-2+deb13u1 (installed 8.14.1-2; not in the ledger yet: seen now, 0 days; " \
           "in Package-Blacklist; apt's candidate is 8.14.1-2)" in observed
    assert "no ledger (FileNotFoundError: x)" in observed


def test_reboot_pending() -> None:
    assert check("HOST-REBOOT-PENDING", state()) == ("pass", "no /run/reboot-required flag")
    old = f"{int(NOW)}\n{int(NOW - 10 * DAY)} /run/reboot-required\n@@pkgs\nlinux-image-amd64\nlibc6\n"
    status, observed = check("HOST-REBOOT-PENDING", state(), reboot=old)
    assert status == "fail" and "(10.0 days)" in observed and "libc6, linux-image-amd64" in observed
    assert check("HOST-REBOOT-PENDING", state(), reboot=old, reboot_within_days=10)[0] == "pass"
    assert u.parse_reboot(f"{int(NOW)}\n{int(NOW - 5)} /run/reboot-required\n@@pkgs\n") == (NOW, NOW - 5, [])


def test_the_evidence_script_compiles(tmp_path: Path) -> None:
    (tmp_path / "state.py").write_text(u.APT_STATE_PY)
    py_compile.compile(str(tmp_path / "state.py"), doraise=True)
    assert repr(u.LEDGER) in u.APT_STATE_PY
