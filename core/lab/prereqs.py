"""What the build machine needs for the lab, and the `apt-get install` line for what is missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from schoolctl.errors import LabError

# command -> Debian package providing it (Debian 12/13).
CORE_COMMANDS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "bridge": "iproute2",
    "mount": "mount",
    "umount": "mount",
    "chroot": "coreutils",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nft": "nftables",
    "apt-cacher-ng": "apt-cacher-ng",
}
SERVICE_COMMANDS = {
    "tinyproxy": "tinyproxy",
    "apt-cacher-ng": "apt-cacher-ng",
    "pebble": "pebble",
    "pebble-challtestsrv": "pebble",
    "openssl": "openssl",
}
CORE_FILES = {
    "/usr/share/debootstrap/scripts/trixie": "debootstrap",
    "/usr/share/keyrings/debian-archive-keyring.gpg": "debian-archive-keyring",
}
ALL_PACKAGES = sorted(set(CORE_COMMANDS.values()) | set(SERVICE_COMMANDS.values()) | set(CORE_FILES.values()))
MIN_FREE_BYTES = 1 << 30
SBIN_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Check:
    """One prerequisite: what, whether it holds, and the package that provides it."""

    what: str
    ok: bool
    package: str = ""
    detail: str = ""


def which(cmd: str) -> str | None:
    """``shutil.which`` that also looks in the sbin dirs (a non-login root shell may lack them)."""
    path = os.environ.get("PATH", "") + ":" + ":".join(SBIN_PATH)
    return shutil.which(cmd, path=path)


def apt_line(packages: list[str]) -> str:
    return "apt-get update && apt-get install -y " + " ".join(sorted(set(packages)))


def checks(services: bool = True) -> list[Check]:
    """All prerequisite checks (root, commands, files, kernel overlayfs)."""
    out = [Check("running as root", os.geteuid() == 0, detail="the lab needs root (namespaces, mounts)")]
    commands = dict(CORE_COMMANDS)
    if services:
        commands.update(SERVICE_COMMANDS)
    for cmd, pkg in commands.items():
        out.append(Check(f"command {cmd}", which(cmd) is not None, pkg))
    for file, pkg in CORE_FILES.items():
        out.append(Check(f"file {file}", Path(file).exists(), pkg))
    try:
        fs = Path("/proc/filesystems").read_text()
    except OSError:
        fs = ""
    out.append(
        Check(
            "kernel overlayfs",
            "overlay" in fs or Path("/sys/module/overlay").exists(),
            detail="`modprobe overlay`",
        )
    )
    return out


def missing_packages(results: list[Check]) -> list[str]:
    return sorted({c.package for c in results if not c.ok and c.package})


def require(services: bool = False) -> None:
    """Raise LabError (usage) naming what is missing: root first, then packages."""
    results = checks(services)
    if not results[0].ok:
        raise LabError("the lab needs root", "run it as root (e.g. `sudo schoolctl lab ...`)", usage=True)
    pkgs = missing_packages(results)
    if pkgs:
        raise LabError(f"missing Debian packages: {', '.join(pkgs)}", apt_line(pkgs), usage=True)
    other = [c for c in results if not c.ok]
    if other:
        raise LabError("; ".join(f"{c.what}: {c.detail}" for c in other), usage=True)


def require_disk(path: Path, need: int = MIN_FREE_BYTES) -> None:
    """Raise LabError when the filesystem holding ``path`` has less than ``need`` bytes free."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise LabError(
            f"not enough disk space in {probe}: {free >> 20} MiB free, the base image needs about {need >> 20} MiB",
            "free some space or point SCHOOLCTL_LAB_DIR at a larger filesystem",
            usage=True,
        )
