"""Security updates that arrive, for real on lab host u-1 (layers base and firewall): after a deploy
apt has trixie-security (fetched through the lab's apt-cacher-ng from the build machine's own
Debian archive), and the four update controls pass; the second deploy changes nothing. Then each
control is made to fail, by the causes that keep updates away in life:

- HOST-APT-SECURITY-SUITE: the suite removed from debian.sources; a stale copy of its index
  (InRelease Date old); an apt that stopped updating (the index's file old);
- HOST-UNATTENDED-UPGRADES: an origins pattern that looks right but matches nothing
  (pre-bullseye `codename=trixie,label=Debian-Security`), APT::Periodic::Unattended-Upgrade "0",
  apt-daily-upgrade.timer disabled, apt-daily.timer stopped;
- HOST-SECURITY-UPDATES-APPLIED: a real pending security update (the `schoolctl-probe` package,
  v1 installed, v2 served by a local flat repository whose Release says Origin Debian, Label
  Debian-Security, Codename trixie-security): the apt hook records it, it fails once its ledger
  entry is older than allowed, and stays failing when unattended-upgrade really runs while the
  package is held or blacklisted; unattended-upgrade run for real then installs it and the
  control passes again (the whole chain);
- HOST-REBOOT-PENDING: a reboot-required flag ten days old.

The Debian archive reachable from the lab may be a copy older than the fleet's default
`index_max_age_days` (2): the test then raises the limit to the copy's age (printed), so that the
other causes are what it tests. Needs root and the lab. SCHOOLCTL_KEEP_LAB=1 keeps the host.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .support import SchoolEnv, booted, skip_reason

pytestmark = pytest.mark.lab

HOST = "u-1"
SID = "u-updates"
LAYERS = "base,firewall"
IDS = ("HOST-APT-SECURITY-SUITE", "HOST-UNATTENDED-UPGRADES", "HOST-SECURITY-UPDATES-APPLIED",
       "HOST-REBOOT-PENDING")
SOURCES = "/etc/apt/sources.list.d/debian.sources"
LEDGER = "/var/lib/schoolctl/security-updates.json"
LISTS = "/var/lib/apt/lists"
APT_GET = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300"
PROBE = "schoolctl-probe"
PROBE_REPO = "/srv/schoolctl-probe"
PROBE_SOURCE = "/etc/apt/sources.list.d/schoolctl-probe.sources"
BLACKLIST = "/etc/apt/apt.conf.d/99probe-blacklist"

# Builds schoolctl-probe 1 (installed) and 2 (in a flat file: repository that says it is Debian's
# security suite), on the host itself, with dpkg-deb. `[trusted=yes]` (Trusted: yes) here only.
_PROBE_PY = r'''
import email.utils, hashlib, os, subprocess
REPO, SOURCE = "@REPO@", "@SOURCE@"
def build(version, dest):
    root = f"/tmp/schoolctl-probe-{version}"
    os.makedirs(f"{root}/DEBIAN", exist_ok=True)
    os.makedirs(f"{root}/usr/share/doc/schoolctl-probe", exist_ok=True)
    open(f"{root}/usr/share/doc/schoolctl-probe/README", "w").write(f"schoolctl lab probe {version}\n")
    open(f"{root}/DEBIAN/control", "w").write(
        f"Package: schoolctl-probe\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: schoolctl lab <lab@example.invalid>\nSection: misc\nPriority: optional\n"
        "Description: schoolctl lab probe\n a package that exists to be updated\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", root, dest], check=True, capture_output=True)
os.makedirs(REPO, exist_ok=True)
build("1", "/tmp/schoolctl-probe_1_all.deb")
deb = f"{REPO}/schoolctl-probe_2_all.deb"
build("2", deb)
subprocess.run(["dpkg", "-i", "/tmp/schoolctl-probe_1_all.deb"], check=True, capture_output=True)
data = open(deb, "rb").read()
fields = subprocess.run(["dpkg-deb", "-f", deb], check=True, capture_output=True, text=True).stdout.rstrip("\n")
packages = (f"{fields}\nFilename: ./schoolctl-probe_2_all.deb\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n").encode()
open(f"{REPO}/Packages", "wb").write(packages)
open(f"{REPO}/Release", "w").write(
    "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: trixie-security\n"
    f"Date: {email.utils.formatdate(usegmt=True)}\nArchitectures: all amd64\nComponents: main\n"
    f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n")
open(SOURCE, "w").write(f"Types: deb\nURIs: file:{REPO}\nSuites: ./\nTrusted: yes\n")
'''.replace("@REPO@", PROBE_REPO).replace("@SOURCE@", PROBE_SOURCE)
PROBE_SETUP = f"python3 -c {shlex.quote(_PROBE_PY)} && {APT_GET} update >/dev/null"
PROBE_REMOVE = (f"rm -f {PROBE_SOURCE} {BLACKLIST}; apt-mark unhold {PROBE} >/dev/null 2>&1; "
                f"dpkg --purge {PROBE} >/dev/null 2>&1; rm -rf {PROBE_REPO} /tmp/schoolctl-probe*; "
                f"{APT_GET} update >/dev/null")


def backdate_ledger(key: str, days: float) -> str:
    """A command that sets ledger entry `key` (package=version) to `days` ago."""
    py = (f"import datetime, json; p = {LEDGER!r}; d = json.load(open(p)); "
          f"d['pending'][{key!r}] = (datetime.datetime.now(datetime.timezone.utc) - "
          f"datetime.timedelta(days={days})).strftime('%Y-%m-%dT%H:%M:%SZ'); json.dump(d, open(p, 'w'))")
    return f"python3 -c {shlex.quote(py)}"


PROBE_PENDING_BREAK = f"{PROBE_SETUP} && {backdate_ledger(f'{PROBE}=2', 10)}"  # for test_audit_host's table


class Env(SchoolEnv):
    limit = 2                # the index_max_age_days this test's fleet says
    original_sources = ""    # /etc/apt/sources.list as the lab image has it


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with booted(HOST, timeout=180, fresh=True) as lab:
        kept = os.environ.get("SCHOOLCTL_UPDATES_LAB_DIR")
        yield Env(lab, Path(kept) if kept else tmp_path_factory.mktemp("updates"), HOST, SID, LAYERS, services={})


@pytest.fixture(scope="module")
def deployed(env: Env) -> Env:
    env.original_sources = env.ok("cat /etc/apt/sources.list 2>/dev/null; true")
    first = env.deploy("first deploy")
    assert first["status"] == "changed", first
    # the archive copy this machine reaches may be older than the fleet's default limit
    age = float(env.ok(f"python3 -c {shlex.quote(_SECURITY_AGE_PY)}").strip())
    limit = 2 if age < 2 else min(30, math.ceil(age) + 1)
    if limit != 2:
        print(f"\nthe Debian security archive reachable here was signed {age:.1f} days ago: "
              f"index_max_age_days {limit} for this test")
    fleet_file = env.schools / "fleet.yaml"
    fleet = yaml.safe_load(fleet_file.read_text())
    fleet.setdefault("updates", {})["index_max_age_days"] = limit
    fleet_file.write_text(yaml.safe_dump(fleet))
    env.limit = limit
    return env


_SECURITY_AGE_PY = r'''
import email.utils, glob, re, time
ages = []
for path in glob.glob("/var/lib/apt/lists/*_InRelease"):
    text = open(path, errors="replace").read()
    if re.search(r"^Label: Debian-Security$", text, re.M):
        ages.append((time.time() - email.utils.parsedate_to_datetime(re.search(r"^Date: (.*)$", text, re.M)
                                                                         .group(1)).timestamp()) / 86400)
print(min(ages))
'''


def audit(env: SchoolEnv, only: tuple[str, ...] = IDS) -> dict[str, tuple[str, str]]:
    from schoolctl.audit.runner import audit_school, expectations

    os.environ.update({k: env.env[k] for k in ("SCHOOLCTL_VAULT_KEY_FILE", "SCHOOLCTL_SECRETS_DIR")})
    school = env.school
    start = time.monotonic()
    result = audit_school(school, expect=expectations(school), only=list(only))
    assert result.error is None, result.error
    found = {r.control.id: (r.status, r.observed) for r in result.controls}
    print(f"audit {time.monotonic() - start:.1f} s: " + "; ".join(f"{c} {s}" for c, (s, _) in found.items()))
    for c, (s, o) in found.items():
        if s != "pass" or os.environ.get("SCHOOLCTL_SHOW_EVIDENCE"):
            print(f"  {c}: {s}: {o}")
    return found


def fails_alone(env: SchoolEnv, cid: str, word: str, also: tuple[str, ...] = ()) -> str:
    """Audit: `cid` fails with `word` in its evidence, every other update control (but `also`) passes."""
    now = audit(env)
    status, observed = now[cid]
    assert status == "fail", f"{cid} did not fail: {observed}"
    assert word in observed, f"{cid}'s evidence does not name the cause ({word!r}): {observed}"
    others = {c: v for c, v in now.items() if c != cid and c not in also and v[0] != "pass"}
    assert not others, f"breaking {cid} also failed: {others}"
    return observed


def all_pass(env: SchoolEnv) -> dict[str, tuple[str, str]]:
    now = audit(env)
    bad = {c: v for c, v in now.items() if v[0] != "pass"}
    assert not bad, bad
    return now


# --- after the deploy ---------------------------------------------------------------------------

def test_the_deploy_owns_the_sources_and_every_update_control_passes(deployed: Env) -> None:
    from schoolctl.lab.debian import archive

    mirror, security = archive()
    sources = deployed.ok(f"cat {SOURCES}")
    assert f"URIs: {mirror}\nSuites: trixie trixie-updates\n" in sources
    assert f"URIs: {security}\nSuites: trixie-security\n" in sources
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in sources
    assert deployed.sh("test -e /etc/apt/sources.list").returncode != 0, "the stray sources.list is still there"
    if deployed.original_sources.strip():
        assert deployed.original_sources in deployed.ok("cat /etc/apt/sources.list.schoolctl-replaced")
    now = all_pass(deployed)
    assert now["HOST-REBOOT-PENDING"][1] == "no /run/reboot-required flag"
    assert "trixie-security from " + security.rstrip("/") in now["HOST-APT-SECURITY-SUITE"][1]
    assert "allowed" in now["HOST-UNATTENDED-UPGRADES"][1]
    ledger = json.loads(deployed.ok(f"cat {LEDGER}"))
    assert ledger["suite"] == "trixie-security" and isinstance(ledger["pending"], dict)


def test_apt_really_fetched_trixie_security(deployed: Env) -> None:
    from schoolctl.lab.debian import archive

    _, security = archive()
    policy = deployed.ok("apt-cache policy")
    assert "n=trixie-security,l=Debian-Security" in policy, policy
    assert f"{security.rstrip('/')} trixie-security/main" in policy, policy
    assert "n=trixie-updates" in policy
    listed = deployed.ok(f"ls {LISTS}")
    assert "_dists_trixie-security_InRelease" in listed and "trixie-security_main_binary-amd64_Packages" in listed


def test_the_second_deploy_changes_nothing(deployed: Env) -> None:
    again = deployed.deploy("second deploy")
    assert again["status"] == "unchanged", again["changes"]


# --- HOST-APT-SECURITY-SUITE ---------------------------------------------------------------------

def test_security_suite_removed_fails(deployed: Env) -> None:
    drop = ("import re; p = '/etc/apt/sources.list.d/debian.sources'; t = open(p).read(); open(p, 'w').write("
            "re.sub(r'\\n\\nTypes: deb\\nURIs: \\S+\\nSuites: trixie-security\\n[^\\n]*\\n[^\\n]*\\n', '\\n', t))")
    deployed.ok(f"cp -p {SOURCES} /root/debian.sources.bak && python3 -c {shlex.quote(drop)} && "
                f"! grep -q trixie-security {SOURCES} && {APT_GET} update >/dev/null")
    try:
        # without the suite no pending security update can be known: the outcome control says so too
        observed = fails_alone(deployed, "HOST-APT-SECURITY-SUITE", "apt knows no trixie-security suite",
                               also=("HOST-SECURITY-UPDATES-APPLIED",))
        assert "trixie-updates" in observed or "trixie " in observed
        applied = audit(deployed, ("HOST-SECURITY-UPDATES-APPLIED",))["HOST-SECURITY-UPDATES-APPLIED"]
        assert applied[0] == "fail" and "cannot be known" in applied[1], applied
    finally:
        deployed.ok(f"mv /root/debian.sources.bak {SOURCES} && {APT_GET} update >/dev/null")
    all_pass(deployed)


def _security_inrelease(env: SchoolEnv) -> str:
    return env.ok(f"ls {LISTS}/*_dists_trixie-security_InRelease").split()[0]


@pytest.mark.parametrize("how", ["stale copy (old InRelease Date)", "apt stopped updating (old index file)"])
def test_stale_security_index_fails(deployed: SchoolEnv, how: str) -> None:
    days = deployed.limit + 5
    path = _security_inrelease(deployed)
    old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)).strftime("%a, %d %b %Y %H:%M:%S UTC")
    brk = (f"sed -i 's/^Date: .*/Date: {old}/' {path}" if how.startswith("stale")
           else f"touch -d '{days} days ago' {path}")
    deployed.ok(f"cp -p {path} /root/inrelease.bak && {brk}")
    try:
        observed = fails_alone(deployed, "HOST-APT-SECURITY-SUITE", "stale")
        assert f"{days:.1f} days old" in observed, observed
    finally:
        deployed.ok(f"cp -p /root/inrelease.bak {path} && rm /root/inrelease.bak")
    all_pass(deployed)


# --- HOST-UNATTENDED-UPGRADES --------------------------------------------------------------------

UU_BREAKS = {
    # looks like Debian's own pattern, but trixie's security suite is Codename trixie-security
    "origins pattern that matches nothing": (
        "printf '#clear Unattended-Upgrade::Origins-Pattern;\\nUnattended-Upgrade::Origins-Pattern "
        "{ \"origin=Debian,codename=${distro_codename},label=Debian-Security\"; };\\n' > "
        "/etc/apt/apt.conf.d/99uu-break", "rm /etc/apt/apt.conf.d/99uu-break", "NOT allowed"),
    "Unattended-Upgrade 0": ("echo 'APT::Periodic::Unattended-Upgrade \"0\";' > /etc/apt/apt.conf.d/99uu-break",
                             "rm /etc/apt/apt.conf.d/99uu-break", "cause: Unattended-Upgrade 0"),
    "Update-Package-Lists 0": ("echo 'APT::Periodic::Update-Package-Lists \"0\";' > /etc/apt/apt.conf.d/99uu-break",
                               "rm /etc/apt/apt.conf.d/99uu-break", "cause: Update-Package-Lists 0"),
    "apt-daily-upgrade.timer disabled": ("systemctl disable -q --now apt-daily-upgrade.timer",
                                         "systemctl enable -q --now apt-daily-upgrade.timer",
                                         "apt-daily-upgrade.timer disabled/inactive"),
    "apt-daily.timer stopped": ("systemctl stop apt-daily.timer", "systemctl start apt-daily.timer",
                                "apt-daily.timer enabled/inactive"),
}


@pytest.mark.parametrize("how", sorted(UU_BREAKS))
def test_unattended_upgrades_broken_fails(deployed: SchoolEnv, how: str) -> None:
    brk, restore, word = UU_BREAKS[how]
    deployed.ok(brk)
    try:
        fails_alone(deployed, "HOST-UNATTENDED-UPGRADES", word)
    finally:
        deployed.ok(restore)
    all_pass(deployed)


# --- HOST-SECURITY-UPDATES-APPLIED: a real pending security update --------------------------------

@pytest.fixture(scope="module")
def probe(deployed: Env) -> Iterator[Env]:
    deployed.ok(PROBE_SETUP)
    try:
        yield deployed
    finally:
        deployed.ok(PROBE_REMOVE)


def _ledger(env: SchoolEnv) -> dict[str, str]:
    return json.loads(env.ok(f"cat {LEDGER}"))["pending"]


def test_the_apt_hook_records_a_pending_security_update(probe: SchoolEnv) -> None:
    assert probe.ok(f"dpkg-query -W -f='${{Version}}' {PROBE}") == "1"
    policy = probe.ok("apt-cache policy").splitlines()
    at = next(i for i, line in enumerate(policy) if f"file:{PROBE_REPO} ./ Packages" in line)
    assert "o=Debian,a=stable-security,n=trixie-security,l=Debian-Security" in policy[at + 1], policy[at:at + 3]
    first = _ledger(probe)[f"{PROBE}=2"]  # written by the real hook, during PROBE_SETUP's apt-get update
    age = time.time() - datetime.datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    assert 0 <= age < 600, first
    probe.ok(f"{APT_GET} update >/dev/null")
    assert _ledger(probe)[f"{PROBE}=2"] == first, "a second update must keep the first-seen time"
    observed = all_pass(probe)["HOST-SECURITY-UPDATES-APPLIED"][1]
    assert f"{PROBE}=2 (installed 1; pending 0.0 days" in observed, observed


def test_a_missing_ledger_entry_counts_as_seen_now(probe: SchoolEnv) -> None:
    probe.ok(f"cp -p {LEDGER} /root/ledger.bak && echo '{{\"pending\": {{}}}}' > {LEDGER}")
    try:
        observed = audit(probe)["HOST-SECURITY-UPDATES-APPLIED"]
    finally:
        probe.ok(f"mv /root/ledger.bak {LEDGER}")
    assert observed[0] == "pass" and f"{PROBE}=2 (installed 1; not in the ledger yet: seen now" in observed[1]


def test_a_security_update_pending_too_long_fails(probe: SchoolEnv) -> None:
    days = probe.school.fleet.updates.security_within_days + 1
    probe.ok(backdate_ledger(f"{PROBE}=2", days))
    observed = fails_alone(probe, "HOST-SECURITY-UPDATES-APPLIED", f"{PROBE}=2 (installed 1; pending {days:.1f} days")
    assert "waiting longer than" in observed


def _unattended_upgrade(env: SchoolEnv) -> str:
    start = time.monotonic()
    proc = env.sh("unattended-upgrade -v 2>&1")
    print(f"unattended-upgrade: {time.monotonic() - start:.1f} s, exit {proc.returncode}")
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


CAUSES = {
    "held": (f"apt-mark hold {PROBE}", f"apt-mark unhold {PROBE}", "held"),
    "blacklisted": (f"echo 'Unattended-Upgrade::Package-Blacklist {{ \"{PROBE}\"; }};' > {BLACKLIST}",
                    f"rm {BLACKLIST}", "in Package-Blacklist"),
}


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_a_held_or_blacklisted_update_stays_out_and_fails(probe: SchoolEnv, cause: str) -> None:
    brk, restore, word = CAUSES[cause]
    probe.ok(backdate_ledger(f"{PROBE}=2", probe.school.fleet.updates.security_within_days + 1))
    probe.ok(brk)
    try:
        _unattended_upgrade(probe)  # the real thing: it must leave the probe alone
        assert probe.ok(f"dpkg-query -W -f='${{Version}}' {PROBE}") == "1"
        fails_alone(probe, "HOST-SECURITY-UPDATES-APPLIED", word)
    finally:
        probe.ok(restore)


def test_unattended_upgrade_installs_it_and_the_control_passes_again(probe: SchoolEnv) -> None:
    probe.ok(backdate_ledger(f"{PROBE}=2", probe.school.fleet.updates.security_within_days + 1))
    assert audit(probe)["HOST-SECURITY-UPDATES-APPLIED"][0] == "fail"
    log = _unattended_upgrade(probe)
    assert probe.ok(f"dpkg-query -W -f='${{Version}}' {PROBE}") == "2", log[-3000:]
    observed = all_pass(probe)["HOST-SECURITY-UPDATES-APPLIED"][1]
    assert observed.startswith("no security update pending"), observed
    probe.ok(f"{APT_GET} update >/dev/null")
    assert f"{PROBE}=2" not in _ledger(probe), "the hook must drop what is no longer pending"


# --- HOST-REBOOT-PENDING ---------------------------------------------------------------------------

def test_an_old_reboot_required_flag_fails(deployed: Env) -> None:
    deployed.ok("touch /run/reboot-required && echo linux-image-amd64 > /run/reboot-required.pkgs")
    try:
        fresh = audit(deployed)["HOST-REBOOT-PENDING"]
        assert fresh[0] == "pass" and "0.0 days" in fresh[1], fresh
        deployed.ok("touch -d '10 days ago' /run/reboot-required")
        observed = fails_alone(deployed, "HOST-REBOOT-PENDING", "linux-image-amd64")
        assert "(10.0 days)" in observed, observed
    finally:
        deployed.ok("rm -f /run/reboot-required /run/reboot-required.pkgs")
    all_pass(deployed)
