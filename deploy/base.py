"""The base of every school server: package access, trusted CAs, technicians' accounts, SSH
without passwords, unattended security upgrades, time, journald and logrotate retention."""

from __future__ import annotations

import shlex

from schoolctl.deploy.render import render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM, Directory, File, Layer, Service, Step

PACKAGES = ["openssh-server", "sudo", "ca-certificates", "curl", "unattended-upgrades", "logrotate",
            "tzdata", "systemd-timesyncd", "python3"]


def _apt_proxy(site: Site) -> list[File]:
    if not site.apt_proxy:
        return []
    lines = [f'Acquire::http::Proxy "{site.apt_proxy}";']
    if site.proxy:
        lines.append(f'Acquire::https::Proxy "{site.proxy}";')
    return [File("/etc/apt/apt.conf.d/80schoolctl-proxy", "// Managed by schoolctl\n" + "\n".join(lines) + "\n")]


def _cas(site: Site) -> list[File]:
    pems = list(site.trusted_ca_pems) + ([site.acme_ca_pem] if site.acme_ca_pem else [])
    return [File(f"/usr/local/share/ca-certificates/schoolctl-{i}.crt", pem, then="update-ca-certificates")
            for i, pem in enumerate(pems)]


def _admins(site: Site) -> tuple[list[Step], list[Directory], list[File]]:
    steps, dirs, files = [], [], []
    for admin in site.school.admins:
        name = admin.name
        steps.append(Step(f"technician account {name}", check=f"id -u {name}",
                          apply=f"useradd --create-home --shell /bin/bash --groups sudo {name}"))
        dirs.append(Directory(f"/home/{name}/.ssh", "0700", name, name))
        files.append(File(f"/home/{name}/.ssh/authorized_keys", "\n".join(admin.ssh_keys) + "\n", "0600", name, name))
    files.append(File("/etc/sudoers.d/schoolctl-admins",
                      "# Managed by schoolctl: technicians log in by key only, so sudo asks no password.\n"
                      + "".join(f"{a.name} ALL=(ALL:ALL) NOPASSWD: ALL\n" for a in site.school.admins),
                      "0440", check="visudo -cq"))
    return steps, dirs, files


def layer(site: Site) -> Layer:
    school = site.school
    days = school.privacy.log_retention_days
    tz = school.fleet.timezone
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
        files.append(File("/etc/systemd/timesyncd.conf.d/50-schoolctl.conf",
                          "[Time]\nNTP=" + " ".join(school.fleet.ntp) + "\n", restart=("systemd-timesyncd",)))
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
        steps=[Step(f"timezone {tz}", check=f'[ "$(readlink /etc/localtime)" = "/usr/share/zoneinfo/{tz}" ]',
                    apply=f"ln -sf /usr/share/zoneinfo/{shlex.quote(tz)} /etc/localtime")],
    )
