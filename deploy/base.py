"""The base of every school server: package access, trusted CAs, technicians' accounts, SSH
without passwords, unattended security upgrades, time, journald and logrotate retention.

Apt sources: the base layer owns them. `/etc/apt/sources.list.d/debian.sources` (deb822) names the
release and its -updates suite from `fleet.debian.mirror` and the -security suite from
`fleet.debian.security` (the lab: the build machine's own archive, deploy/sites.py), signed by
Debian's archive keyring; written before any package is installed, then `apt-get update`. A
one-line `/etc/apt/sources.list` with any active line (debootstrap's, the installer's) would be a
second, unmanaged Debian source: it is moved aside, its text appended to
`/etc/apt/sources.list.schoolctl-replaced` (which apt never reads), never deleted. Other
repositories belong in `sources.list.d/` with their own key (deploy/apt_repo.py).

Security updates: unattended-upgrades with the security suite as its origin, the apt timers on,
and a ledger of pending security updates (`schoolctl-security-ledger`, run by apt after every
update) from which the audit (audit/updates.py) knows how long each one has waited.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from schoolctl.config.problems import Problem
from schoolctl.deploy.render import bare, integer, one_line, proxy_url, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM, Directory, File, Layer, Service, Step
from schoolctl.errors import ConfigError, RenderError

PACKAGES = ["openssh-server", "sudo", "ca-certificates", "curl", "unattended-upgrades", "logrotate",
            "tzdata", "systemd-timesyncd", "python3", "python3-apt", "debian-archive-keyring"]
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

CODENAME = "trixie"  # Debian 13, the one OS of a school server (Server.os)
# the security suite as its Release file says (Origin, Label, Codename): what apt and
# unattended-upgrades match, and what the audit looks for
SECURITY_ORIGIN = ("Debian", "Debian-Security", f"{CODENAME}-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCES = "/etc/apt/sources.list.d/debian.sources"
STRAY = "/etc/apt/sources.list"
REPLACED = "/etc/apt/sources.list.schoolctl-replaced"
LEDGER = "/var/lib/schoolctl/security-updates.json"
LEDGER_HOOK = "/usr/local/sbin/schoolctl-security-ledger"
APT_UPDATE = "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update"
# an archive URI as deb822 takes it (no escaping there): scheme, host, optional port and path
_ARCHIVE = re.compile(r"^https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?"
                      r"(?:/[A-Za-z0-9._~+/-]*)?$")


def checked_user(name: str) -> str:
    """`name` when it is a plain login name (safe in a path, a sudoers line and a shell word)."""
    if not isinstance(name, str) or not _USER.fullmatch(name):
        raise RenderError(f"technician name {name!r} is not a login name (lowercase letters, digits, _ and -)")
    return name


def checked_timezone(tz: str) -> str:
    """`tz` when it is one line naming a file under /usr/share/zoneinfo: relative, no empty or `..`
    component, none starting with `-`. (Quoting, not this check, keeps it one shell word.)"""
    one_line(tz, "timezone")
    parts = tz.split("/")
    if not tz or any(p in ("", ".", "..") or p.startswith("-") for p in parts):
        raise RenderError(f"timezone {tz!r} does not name a zone under /usr/share/zoneinfo")
    return tz


def _apt_proxy(site: Site) -> list[File]:
    if not site.apt_proxy:
        return []
    # APT's syntax: a double-quoted string with no escapes; proxy_url refuses anything but a plain
    # http(s) URL, so no `"`, `;`, space or newline can end the string or add a directive
    lines = [f'Acquire::http::Proxy "{proxy_url(site.apt_proxy, "apt proxy")}";']
    if site.proxy:
        lines.append(f'Acquire::https::Proxy "{proxy_url(site.proxy, "proxy")}";')
    return [File("/etc/apt/apt.conf.d/80schoolctl-proxy", "// Managed by schoolctl\n" + "\n".join(lines) + "\n")]


def archive_url(value: object, what: str) -> str:
    """`value` when it is a plain http(s) archive URI (one deb822 word: host, port, path of letters,
    digits and `._~+-/`); ValueError otherwise."""
    text = bare(value, what)
    if not _ARCHIVE.fullmatch(text):
        raise RenderError(f"{what}: {text!r} is not a plain http(s) archive URL (e.g. http://debian.example/debian)")
    return text


def archive(site: Site) -> tuple[str, str]:
    """(mirror, security) URIs of the Debian archive: the lab's (the build machine's), else
    fleet.yaml's `debian:`; a ConfigError when a real server has none."""
    if site.debian_mirror and site.debian_security:
        return (archive_url(site.debian_mirror, "the lab's Debian mirror"),
                archive_url(site.debian_security, "the lab's Debian security archive"))
    debian = site.school.fleet.debian
    if debian is None:
        fleet = str(Path(site.school.source).parent / "fleet.yaml")
        raise ConfigError([Problem(fleet, 1, 1, f"no `debian:` archive: {site.school.id}'s server would get no "
                                   f"security updates ({CODENAME}-security)",
                                   "add `debian:` with `mirror: http://<mirror>/debian` and `security: "
                                   "http://<mirror>/debian-security`, the city's mirror or Debian's own")])
    return archive_url(debian.mirror, "fleet.debian.mirror"), archive_url(debian.security, "fleet.debian.security")


def _sources(site: Site) -> tuple[list[File], list[Step]]:
    """debian.sources (before any package, apt-get update when it changed) and the step that moves a
    stray one-line sources.list aside (see the module doc)."""
    mirror, security = archive(site)
    text = render("base/debian.sources.j2", codename=CODENAME, mirror=mirror, security=security, keyring=KEYRING,
                  origin="the build machine's archive, in the lab" if site.debian_mirror else "fleet.yaml debian:")
    active = f"grep -qsEv '^[[:space:]]*(#|$)' {STRAY}"
    move = Step(f"apt sources: {STRAY} moved aside ({SOURCES} replaces it)", check=f"! {active}",
                apply=f'{{ echo "# {STRAY} as schoolctl found it on $(date -u +%FT%TZ); {SOURCES} replaces it"; '
                      f"cat {STRAY}; }} >> {REPLACED} && rm -f {STRAY} && {APT_UPDATE}")
    # the keyring comes with apt itself (apt depends on it); PACKAGES keeps it installed
    return [File(SOURCES, text, then=APT_UPDATE)], [move]


def _ledger() -> tuple[list[File], list[Step]]:
    """The apt hook that records when each pending security update was first seen (module doc)."""
    origin, label, suite = SECURITY_ORIGIN
    script = render("base/security-ledger.py.j2", ledger=LEDGER, origin=origin, label=label, suite=suite)
    hook = (f"// Managed by schoolctl: the ledger of pending security updates ({LEDGER}).\n"
            f'APT::Update::Post-Invoke-Success {{ "[ ! -x {LEDGER_HOOK} ] || {LEDGER_HOOK} || true"; }};\n')
    return ([File(LEDGER_HOOK, script, "0755"), File("/etc/apt/apt.conf.d/60schoolctl-security-ledger", hook)],
            [Step("the ledger of pending security updates", check=f"test -s {LEDGER}", apply=LEDGER_HOOK)])


def _cas(site: Site) -> list[File]:
    pems = list(site.trusted_ca_pems) + ([site.acme_ca_pem] if site.acme_ca_pem else [])
    return [File(f"/usr/local/share/ca-certificates/schoolctl-{i}.crt", pem, then="update-ca-certificates")
            for i, pem in enumerate(pems)]


def _admins(site: Site) -> tuple[list[Step], list[Directory], list[File]]:
    steps, dirs, files = [], [], []
    names = [checked_user(admin.name) for admin in site.school.admins]
    for name, admin in zip(names, site.school.admins, strict=True):
        q = shlex.quote(name)
        steps.append(Step(f"technician account {name}", check=f"id -u {q}",
                          apply=f"useradd --create-home --shell /bin/bash --groups sudo {q}"))
        dirs.append(Directory(f"/home/{name}/.ssh", "0700", name, name))
        keys = [one_line(key, f"an SSH key of {name}") for key in admin.ssh_keys]
        files.append(File(f"/home/{name}/.ssh/authorized_keys", "\n".join(keys) + "\n", "0600", name, name))
    files.append(File("/etc/sudoers.d/schoolctl-admins",
                      "# Managed by schoolctl: technicians log in by key only, so sudo asks no password.\n"
                      + "".join(f"{name} ALL=(ALL:ALL) NOPASSWD: ALL\n" for name in names),
                      "0440", check="visudo -cq"))
    return steps, dirs, files


def layer(site: Site) -> Layer:
    school = site.school
    days = integer(school.privacy.log_retention_days, "privacy.log_retention_days")
    tz = checked_timezone(school.fleet.timezone)
    zone = shlex.quote(f"/usr/share/zoneinfo/{tz}")
    admin_steps, admin_dirs, admin_files = _admins(site)
    source_files, source_steps = _sources(site)
    ledger_files, ledger_steps = _ledger()
    files = [
        File("/etc/ssh/sshd_config.d/50-schoolctl.conf", render("base/sshd.conf.j2"), check="sshd -t",
             reload=("ssh",)),
        File("/etc/systemd/journald.conf.d/50-schoolctl.conf", render("base/journald.conf.j2", days=days),
             restart=("systemd-journald",)),
        File("/etc/logrotate.conf", render("base/logrotate.conf.j2", days=days)),
        File("/etc/apt/apt.conf.d/52schoolctl-unattended-upgrades",
             render("base/unattended-upgrades.conf.j2", codename=CODENAME)),
        *ledger_files,
        File("/etc/timezone", f"{tz}\n"),
        *admin_files,
    ]
    if school.fleet.ntp and not site.lab:
        # NTP= is a space-separated list in a systemd-style file (no quoting): one word per server
        servers = " ".join(bare(n, "ntp server") for n in school.fleet.ntp)
        files.append(File("/etc/systemd/timesyncd.conf.d/50-schoolctl.conf", f"[Time]\nNTP={servers}\n",
                          restart=("systemd-timesyncd",)))
    return Layer(
        name="base", round=SYSTEM,
        pre_files=[*_apt_proxy(site), *_cas(site), *source_files],
        pre_steps=[*source_steps, *admin_steps,
                   Step("apt timers not masked", check="! systemctl list-unit-files apt-daily.timer "
                        "apt-daily-upgrade.timer | grep -q masked",
                        apply="systemctl unmask apt-daily.timer apt-daily-upgrade.timer")],
        packages=PACKAGES,
        directories=[Directory("/etc/systemd/journald.conf.d"), Directory("/etc/systemd/timesyncd.conf.d"),
                     Directory("/var/lib/schoolctl", "0700"), *admin_dirs],
        files=files,
        services=[Service("ssh"), Service("systemd-timesyncd"), Service("unattended-upgrades"),
                  Service("apt-daily.timer"), Service("apt-daily-upgrade.timer"),
                  Service("logrotate.timer")],
        steps=[Step(f"timezone {tz}", check=f'[ "$(readlink /etc/localtime)" = {zone} ]',
                    apply=f"ln -sf {zone} /etc/localtime"), *ledger_steps],
    )
