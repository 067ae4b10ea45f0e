"""The base of every school server: package access, trusted CAs, technicians' accounts, SSH
without passwords, unattended security upgrades, time, journald and logrotate retention."""

from __future__ import annotations

import re
import shlex

from schoolctl.deploy.render import bare, integer, one_line, proxy_url, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM, Directory, File, Layer, Service, Step

PACKAGES = ["openssh-server", "sudo", "ca-certificates", "curl", "unattended-upgrades", "logrotate",
            "tzdata", "systemd-timesyncd", "python3"]
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def checked_user(name: str) -> str:
    """`name` when it is a plain login name (safe in a path, a sudoers line and a shell word)."""
    if not isinstance(name, str) or not _USER.fullmatch(name):
        raise ValueError(f"technician name {name!r} is not a login name (lowercase letters, digits, _ and -)")
    return name


def checked_timezone(tz: str) -> str:
    """`tz` when it is one line naming a file under /usr/share/zoneinfo: relative, no empty or `..`
    component, none starting with `-`. (Quoting, not this check, keeps it one shell word.)"""
    one_line(tz, "timezone")
    parts = tz.split("/")
    if not tz or any(p in ("", ".", "..") or p.startswith("-") for p in parts):
        raise ValueError(f"timezone {tz!r} does not name a zone under /usr/share/zoneinfo")
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
    files = [
        File("/etc/ssh/sshd_config.d/50-schoolctl.conf", render("base/sshd.conf.j2"), check="sshd -t",
             reload=("ssh",)),
        File("/etc/systemd/journald.conf.d/50-schoolctl.conf", render("base/journald.conf.j2", days=days),
             restart=("systemd-journald",)),
        File("/etc/logrotate.conf", render("base/logrotate.conf.j2", days=days)),
        File("/etc/apt/apt.conf.d/52schoolctl-unattended-upgrades", render("base/unattended-upgrades.conf.j2")),
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
        pre_files=[*_apt_proxy(site), *_cas(site)],
        pre_steps=[*admin_steps,
                   Step("apt timers not masked", check="! systemctl list-unit-files apt-daily.timer "
                        "apt-daily-upgrade.timer | grep -q masked",
                        apply="systemctl unmask apt-daily.timer apt-daily-upgrade.timer")],
        packages=PACKAGES,
        directories=[Directory("/etc/systemd/journald.conf.d"), Directory("/etc/systemd/timesyncd.conf.d"),
                     *admin_dirs],
        files=files,
        services=[Service("ssh"), Service("systemd-timesyncd"), Service("unattended-upgrades"),
                  Service("apt-daily.timer"), Service("apt-daily-upgrade.timer"),
                  Service("logrotate.timer")],
        steps=[Step(f"timezone {tz}", check=f'[ "$(readlink /etc/localtime)" = {zone} ]',
                    apply=f"ln -sf {zone} /etc/localtime")],
    )
