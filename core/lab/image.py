"""The base image: a Debian 13 root built once with debootstrap and shared (read-only) by all hosts."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab.prereqs import require_disk
from schoolctl.lab.run import run

SUITE = "trixie"
RECIPE_VERSION = 1
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "ca-certificates",
    "iproute2",
    "iputils-ping",
    "netbase",
    "procps",
    "curl",
)
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
STAMP_FILE = ".schoolctl-lab-base"
# Timers that would grab the dpkg lock at random moments in a throwaway host.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer")


def local_cas() -> list[Path]:
    """The build machine's extra CA certificates (trusted inside the image too)."""
    return sorted(LOCAL_CA_DIR.glob("**/*.crt")) if LOCAL_CA_DIR.is_dir() else []


def stamp() -> str:
    """Changes whenever the recipe or the CAs to trust change: then the image is rebuilt."""
    h = hashlib.sha256(f"{RECIPE_VERSION}|{SUITE}|{','.join(PACKAGES)}".encode())
    for ca in local_cas():
        h.update(ca.name.encode() + b"\0" + ca.read_bytes())
    return h.hexdigest()[:12]


def image_dir(images: Path) -> Path:
    return images / f"base-{stamp()}"


def is_complete(path: Path) -> bool:
    return (path / STAMP_FILE).is_file()


def build(dest: Path, http_proxy: str | None = None, timeout: float = 1800) -> float:
    """Build the base image into ``dest`` (atomically via a temporary dir); return seconds taken.

    ``http_proxy`` (e.g. the lab's apt-cacher-ng) routes debootstrap's downloads through a cache.
    The Debian mirror is debootstrap's own default: no host name is written here.
    """
    require_disk(dest.parent)
    start = time.monotonic()
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    env = dict(os.environ)
    for key in ("http_proxy", "HTTP_PROXY"):
        env.pop(key, None)
    if http_proxy:
        env["http_proxy"] = http_proxy
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp)]
    proc = run(argv, check=False, timeout=timeout, env=env)
    if proc.returncode != 0:
        log = tmp / "debootstrap" / "debootstrap.log"
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        detail = "\n".join(tail) or (proc.stderr or proc.stdout).strip()[-2000:]
        raise LabError(
            f"debootstrap {SUITE} failed ({proc.returncode}):\n{detail}",
            f"the partial image is kept in {tmp} for a look",
        )
    _customize(tmp)
    (tmp / STAMP_FILE).write_text(f"{stamp()}\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return time.monotonic() - start


def _customize(root: Path) -> None:
    """Trust the build machine's CAs, drop shared identities, quiet the timers."""
    cas = local_cas()
    if cas:
        target = root / "usr/local/share/ca-certificates/schoolctl-lab"
        target.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copy2(ca, target / ca.name)
        run(["chroot", str(root), "update-ca-certificates"], timeout=120)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for rel in ("etc/hostname", "etc/resolv.conf"):
        (root / rel).unlink(missing_ok=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    for unit in MASKED_UNITS:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def remove_unused(images: Path, keep: set[Path]) -> None:
    """Delete base images no host uses any more (the current one stays)."""
    if not images.is_dir():
        return
    for path in images.iterdir():
        if path.name.startswith("base-") and path not in keep and path != image_dir(images):
            shutil.rmtree(path, ignore_errors=True)
