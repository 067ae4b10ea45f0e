"""One lab host on disk and as a process: its record, overlay root, first-boot files, nspawn."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab.network import netns_path
from schoolctl.lab.run import daemon_pid, read_pid, run, spawn_daemon, stop_pid

NSPAWN = "systemd-nspawn"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class HostRecord:
    """What the lab persists about a host (hosts/NAME/host.json)."""

    name: str
    index: int
    address: str
    veth: str
    image: str


class HostDir:
    """The files of one lab host under the state dir."""

    def __init__(self, path: Path) -> None:
        self.path = path

    record_file = property(lambda self: self.path / "host.json")
    upper = property(lambda self: self.path / "upper")
    work = property(lambda self: self.path / "work")
    root = property(lambda self: self.path / "root")
    console_log = property(lambda self: self.path / "console.log")
    pid_file = property(lambda self: self.path / "nspawn.pid")

    def load(self) -> HostRecord | None:
        try:
            return HostRecord(**json.loads(self.record_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, record: HostRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1) + "\n")
        tmp.replace(self.record_file)

    def pid(self) -> int | None:
        """The live nspawn pid of this host (its command line names this root), or None."""
        pid = daemon_pid(self.pid_file, NSPAWN)
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid else []
        except OSError:
            return None
        return pid if str(self.root).encode() in args else None

    def console_tail(self, lines: int = 20) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        text = _ANSI.sub("", text).replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])


def mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def lab_mounts(under: Path) -> list[str]:
    """Mount points below ``under`` (to show nothing is left behind)."""
    prefix = str(under).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def mount_root(hd: HostDir, image: Path) -> None:
    """Mount the host's overlay root (lower = base image) unless it is mounted already."""
    if mounted(hd.root):
        return
    for d in (hd.upper, hd.work, hd.root):
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={image},upperdir={hd.upper},workdir={hd.work}"
    run(["mount", "-t", "overlay", "overlay", "-o", opts, str(hd.root)])


def unmount_root(hd: HostDir) -> None:
    """Unmount the overlay root (lazily as a last resort); idempotent."""
    for _ in range(10):
        if not mounted(hd.root):
            return
        if run(["umount", str(hd.root)], check=False).returncode == 0:
            continue
        time.sleep(0.5)
    if mounted(hd.root):
        run(["umount", "-l", str(hd.root)])


def prepare_root(
    root: Path, name: str, authorized_key: str, env: dict[str, str], apt_conf: str, nameserver: str
) -> list[str]:
    """Write the per-host files into the mounted root; return the host's public host keys."""
    etc = root / "etc"
    (etc / "hostname").write_text(f"{name}\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    mid = etc / "machine-id"
    if not mid.exists() or not mid.read_text().strip():
        mid.write_text(uuid.uuid4().hex + "\n")
    resolv = etc / "resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    resolv.write_text(f"# lab host: no DNS beyond the lab; packages go through the proxy\nnameserver {nameserver}\n")
    if not list((etc / "ssh").glob("ssh_host_*_key")):
        run(["ssh-keygen", "-A", "-f", str(root)])
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(authorized_key.strip() + "\n")
    os.chmod(auth, 0o600)
    (etc / "apt/apt.conf.d/01schoolctl-lab-proxy").write_text(apt_conf)
    _set_environment(etc / "environment", env)
    return [p.read_text() for p in sorted((etc / "ssh").glob("ssh_host_*_key.pub"))]


def _set_environment(path: Path, env: dict[str, str]) -> None:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.split("=", 1)[0] not in env]
    except OSError:
        lines = []
    lines += [f'{k}="{v}"' for k, v in env.items()]
    path.write_text("\n".join(lines) + "\n")


# Every systemd inside a host takes ~8 inotify instances from root's shared quota (default 128):
# without more, the 16th or so host dies at boot with "Too many open files".
KERNEL_MINIMUMS = {
    "fs/inotify/max_user_instances": 8192,
    "fs/inotify/max_user_watches": 524288,
}


def raise_kernel_limits() -> list[str]:
    """Raise the per-user inotify limits to what many hosts need; return what was changed."""
    changed = []
    for key, minimum in KERNEL_MINIMUMS.items():
        path = Path("/proc/sys") / key
        try:
            if int(path.read_text()) < minimum:
                path.write_text(f"{minimum}\n")
                changed.append(f"{key.replace('/', '.')}={minimum}")
        except (OSError, ValueError):
            continue
    return changed


def boot(hd: HostDir, name: str) -> int:
    """Start systemd-nspawn for the host in its namespace; return nspawn's own pid."""
    hd.console_log.write_text("")
    argv = [
        NSPAWN,
        "-D",
        str(hd.root),
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path={netns_path(name)}",
        "--console=read-only",
        f"--machine={name}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        # a school server manages its own firewall (nftables) in its namespace
        "--capability=CAP_NET_ADMIN",
    ]
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    return spawn_daemon(argv, hd.console_log, hd.pid_file, env=env)


def stop(hd: HostDir, timeout: float = 20.0) -> None:
    """SIGTERM nspawn (clean shutdown in ~3 s), SIGKILL when it hangs; forget the pid."""
    pid = read_pid(hd.pid_file)
    stop_pid(pid if hd.pid() else None, NSPAWN, timeout)
    hd.pid_file.unlink(missing_ok=True)


def remove_dir(hd: HostDir, attempts: int = 5) -> None:
    """Delete the host's folder (record, overlay upper dir, logs). A last process of the stopped host
    may still be writing, so this retries; what stays after that is an error naming it, never a
    silently half-deleted folder (a later `up` of the same name would boot on its leftovers)."""
    if mounted(hd.root):
        raise LabError(f"{hd.root} is still mounted; not deleting it")
    errors: list[str] = []
    for attempt in range(attempts):
        errors.clear()
        shutil.rmtree(hd.path, onerror=lambda _f, path, info: errors.append(f"{path}: {info[1]}"))
        if not hd.path.exists():
            return
        time.sleep(0.5 * (attempt + 1))
    raise LabError(f"could not delete {hd.path}: {errors[0] if errors else 'it keeps reappearing'}"
                   + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                   f"stop what still uses it, then `schoolctl lab down {hd.path.name}` again")
