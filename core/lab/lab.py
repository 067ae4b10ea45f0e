"""The lab: Debian 13 school servers booted with systemd-nspawn, each in its own network namespace."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab import hosts, image, network, prereqs, sshconf
from schoolctl.lab.addresses import (
    allocate,
    bridge_address,
    host_address,
    load_assignments,
    save_assignments,
    veth_name,
)
from schoolctl.lab.config import Paths, state_dir_from_env, subnet_from_env
from schoolctl.lab.names import validate_name
from schoolctl.lab.netutil import allow_network, port_open
from schoolctl.lab.services import CityServices, Services

log = logging.getLogger(__name__)
READY_STATES = ("running", "degraded")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")


@dataclass
class LabHost:
    """A lab host as seen from outside: how to reach it and whether it runs."""

    name: str
    address: str
    state: str  # "running" | "stopped"
    pid: int | None = None
    ssh_user: str = "root"
    ssh_key: Path | None = None
    proxy_url: str = ""  # HTTP(S) proxy for npm/pip/curl inside the host (also in /etc/environment)
    apt_proxy_url: str = ""  # apt's proxy, already set in /etc/apt/apt.conf.d


class Lab:
    """Create, list and remove lab hosts and the city-side services they use."""

    def __init__(self, state_dir: Path | str | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir else state_dir_from_env()
        self.paths = Paths(self.state_dir)
        self.subnet = subnet_from_env()
        self.bridge = str(bridge_address(self.subnet))
        allow_network(self.subnet)
        self._services = Services(self.paths.services, self.bridge, str(self.subnet), self.paths.apt_cache)

    # -- public API ----------------------------------------------------------------------
    @property
    def ssh_config_path(self) -> Path:
        return self.paths.ssh_config

    def up(self, names: Iterable[str], timeout: float = 90.0) -> list[LabHost]:
        """Boot the named hosts (a running one is left alone); wait until each is up over SSH."""
        wanted = list(dict.fromkeys(validate_name(n) for n in ([names] if isinstance(names, str) else names)))
        if not wanted:
            raise LabError("no host name given", "e.g. `schoolctl lab up demo`", usage=True)
        prereqs.require(services=False)
        with self._locked():
            network.ensure_bridge(self.subnet)
            base = self._ensure_image()
            key = sshconf.ensure_key(self.paths.ssh_key)
            plans = [(n, rec) for n in wanted if (rec := self._plan_host(n, base)) is not None]
            for change in hosts.raise_kernel_limits():
                log.info("raised kernel limit for many lab hosts: %s", change)
            # Preparing a root (host keys, mount, veth) is mostly waiting on subprocesses: overlap it.
            with ThreadPoolExecutor(max_workers=4) as pool:
                keys = list(pool.map(lambda plan: self._launch_host(*plan, key), plans))
            for (name, rec), pubkeys in zip(plans, keys, strict=True):
                sshconf.set_known_host(self.paths.known_hosts, name, rec.address, pubkeys)
            self._write_ssh_config()
        # Waiting needs no lock: other lab users may go on meanwhile.
        self._wait_ready([n for n, _ in plans], timeout)
        return [self.host(n) for n in wanted]

    def ensure_image(self) -> Path:
        """Build the base image if it is missing or its recipe changed (1-2 min); return its path."""
        prereqs.require(services=False)
        with self._locked():
            network.ensure_bridge(self.subnet)
            return self._ensure_image()

    def down(self, names: Iterable[str] | None = None) -> list[str]:
        """Stop and remove the named hosts (all when None); return the names removed.

        Leaves no namespace, veth, mount or process behind. When no host is left, the city
        services and the bridge go too. Idempotent.
        """
        if os.geteuid() != 0:
            prereqs.require(services=False)
        with self._locked():
            if isinstance(names, str):
                names = [names]
            targets = self._names() if names is None else [validate_name(n) for n in names]
            removed: list[str] = []
            failed: list[str] = []
            for name in targets:   # one host's failure never keeps the others
                try:
                    if self._remove_host(name):
                        removed.append(name)
                except (OSError, subprocess.SubprocessError, LabError) as exc:
                    failed.append(f"{name}: {exc}")
            self._write_ssh_config()
            if not self._names():
                self._services.stop_all()
                network.remove_bridge()
                image.remove_unused(self.paths.images, keep=set())
        if failed:
            raise LabError(f"could not remove {len(failed)} lab host(s): " + "; ".join(failed),
                           "run `schoolctl lab down` again (it carries on from what is left); "
                           f"removed: {', '.join(removed) or 'none'}")
        return removed

    def status(self) -> list[LabHost]:
        """Every lab host the state dir knows, running or not."""
        return [h for n in self._names() if (h := self._lab_host(n)) is not None]

    def host(self, name: str) -> LabHost:
        """The lab host ``name``; LabError when there is none."""
        h = self._lab_host(validate_name(name))
        if h is None:
            raise LabError(f"no lab host {name}; run `schoolctl lab up {name}`", usage=True)
        return h

    def services(self, acme: bool = True, mirror: Path | str | None = None) -> CityServices:
        """Start the city services (package proxies; ACME; mirror of ``mirror`` or $SCHOOLCTL_MIRROR)."""
        prereqs.require(services=True)
        folder = mirror or os.environ.get("SCHOOLCTL_MIRROR") or None
        if folder and not mirror and not Path(folder).is_dir():
            folder = None  # $SCHOOLCTL_MIRROR names no folder (yet): no mirror; a deploy names what that leaves out
        with self._locked():
            network.ensure_bridge(self.subnet)
            self._services.start_apt_cache()
            self._services.start_proxy()
            if acme:
                self._services.start_acme()
            if folder:
                self._services.start_mirror(Path(folder))
        return self._services.info()

    def services_info(self) -> CityServices:
        """Addresses of the services, without starting anything (None for what is not running)."""
        return self._services.info()

    def services_running(self) -> list[str]:
        """Names of the lab's service daemons that run now."""
        return self._services.running_names()

    def services_down(self) -> None:
        """Stop the city services; the bridge goes too when no host is left."""
        with self._locked():
            self._services.stop_all()
            if not self._names():
                network.remove_bridge()

    def relay(self, name: str) -> tuple[str, int]:
        """(bridge address, port) where lab hosts reach lab host `name`'s SSH (they cannot reach each
        other directly): a relay on the bridge, started when missing."""
        h = self.host(name)
        if h.state != "running":
            raise LabError(f"lab host {name} is {h.state}", f"run `schoolctl lab up {name}`")
        with self._locked():
            return self.bridge, self._services.start_relay(h.address)

    def register_domain(self, domain: str, address: str) -> None:
        """Make the lab's mock DNS (used by pebble) resolve ``domain`` to the lab ``address``."""
        domain = domain.lower().rstrip(".")
        if not _DOMAIN.match(domain):
            raise LabError(f"invalid domain name {domain!r}", usage=True)
        import ipaddress

        if ipaddress.ip_address(address) not in self.subnet:
            raise LabError(f"{address} is not a lab address (lab subnet {self.subnet})", usage=True)
        self._services.register_domain(domain, address)

    def fetch_acme_root(self, dest: Path | str) -> Path:
        """Save pebble's current issuing root certificate to ``dest`` (it changes at each start)."""
        return self._services.fetch_acme_root(Path(dest))

    def run(
        self,
        name: str,
        command: str,
        timeout: float = 600.0,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell ``command`` on host ``name`` over the lab's SSH config (``input`` on stdin)."""
        self.host(name)
        try:
            proc = subprocess.run(
                ["ssh", "-F", str(self.ssh_config_path), name, command],
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input if input is not None else "",
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"`{command}` on {name} timed out after {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip())[-3000:]
            raise LabError(f"`{command}` on {name} failed ({proc.returncode}):\n{detail}")
        return proc

    # -- internals -----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.paths.lock, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _names(self) -> list[str]:
        d = self.paths.hosts
        return sorted(p.name for p in d.iterdir() if (p / "host.json").exists()) if d.is_dir() else []

    def _lab_host(self, name: str) -> LabHost | None:
        hd = hosts.HostDir(self.paths.host(name))
        rec = hd.load()
        if rec is None:
            return None
        pid = hd.pid()
        return LabHost(
            name=name,
            address=rec.address,
            state="running" if pid else "stopped",
            pid=pid,
            ssh_key=self.paths.ssh_key,
            proxy_url=self._services.proxy_url,
            apt_proxy_url=self._services.apt_proxy_url,
        )

    def _ensure_image(self) -> Path:
        base = image.image_dir(self.paths.images)
        if not image.is_complete(base):
            prereqs.require_disk(self.paths.images)
            self._services.start_apt_cache()
            image.build(base, http_proxy=self._services.apt_proxy_url)
        return base

    def _plan_host(self, name: str, base: Path) -> hosts.HostRecord | None:
        """The record of host ``name`` to boot (new or stopped); None when it already runs."""
        hd = hosts.HostDir(self.paths.host(name))
        rec = hd.load()
        if rec is not None and hd.pid():
            return None
        if rec is None:
            if network.netns_path(name).exists():
                raise LabError(
                    f"the name {name} is already used by something that is not a lab host: "
                    f"network namespace {network.netns_name(name)} exists",
                    f"pick another name, or remove it with `ip netns del {network.netns_name(name)}`",
                    usage=True,
                )
            if hd.path.exists():   # leftovers of a host removed only in part: never boot on them
                hosts.unmount_root(hd)
                hosts.remove_dir(hd)
            rec = self._new_record(name, base)
        if not image.is_complete(Path(rec.image)):
            raise LabError(
                f"the base image of {name} is gone ({rec.image})", f"`schoolctl lab down {name}` and up again"
            )
        hd.save(rec)
        return rec

    def _launch_host(self, name: str, rec: hosts.HostRecord, key: Path) -> list[str]:
        """Mount, personalise, wire and boot one host; return its public host keys."""
        hd = hosts.HostDir(self.paths.host(name))
        hosts.mount_root(hd, Path(rec.image))
        pubkeys = hosts.prepare_root(
            hd.root, name, Path(f"{key}.pub").read_text(), self._host_env(), self._apt_conf(), self.bridge
        )
        network.create_host_net(name, rec.veth, rec.address, self.subnet)
        hosts.boot(hd, name)
        log.debug("started %s (%s)", name, rec.address)
        return pubkeys

    def _new_record(self, name: str, base: Path) -> hosts.HostRecord:
        assignments = load_assignments(self.paths.addresses)
        live = self._names()
        owned = {veth_name(i) for n, i in assignments.items() if n in live}
        taken = [int(v[4:]) for v in network.lab_links() if v[4:].isdigit() and v not in owned]
        index = allocate(name, assignments, self.subnet, live=live, taken=taken)
        save_assignments(self.paths.addresses, assignments)
        return hosts.HostRecord(name, index, str(host_address(self.subnet, index)), veth_name(index), str(base))

    def _host_env(self) -> dict[str, str]:
        proxy = self._services.proxy_url
        no_proxy = f"localhost,127.0.0.1,::1,{self.bridge}"
        return {
            "http_proxy": proxy,
            "https_proxy": proxy,
            "HTTP_PROXY": proxy,
            "HTTPS_PROXY": proxy,
            "no_proxy": no_proxy,
            "NO_PROXY": no_proxy,
        }

    def _apt_conf(self) -> str:
        return (
            "// schoolctl lab: packages come through the city-side proxies\n"
            f'Acquire::http::Proxy "{self._services.apt_proxy_url}";\n'
            f'Acquire::https::Proxy "{self._services.proxy_url}";\n'
        )

    def _write_ssh_config(self) -> None:
        entries = []
        for n in self._names():
            rec = hosts.HostDir(self.paths.host(n)).load()
            if rec:
                entries.append(sshconf.SshEntry(n, rec.address))
        sshconf.write_config(self.paths.ssh_config, entries, self.paths.ssh_key, self.paths.known_hosts)

    def _wait_ready(self, names: list[str], timeout: float) -> None:
        """Wait (bounded) until ``systemctl is-system-running`` says running/degraded on each host."""
        deadline = time.monotonic() + timeout
        pending = {n: hosts.HostDir(self.paths.host(n)) for n in names}
        last: dict[str, str] = {}
        while pending:
            for name, hd in list(pending.items()):
                rec = hd.load()
                if hd.pid() is None:
                    raise LabError(f"lab host {name} stopped while booting; last console lines:\n{hd.console_tail()}")
                if rec and port_open(rec.address, 22):
                    try:
                        proc = subprocess.run(
                            [
                                "ssh",
                                "-F",
                                str(self.ssh_config_path),
                                "-o",
                                "ConnectTimeout=3",
                                name,
                                "systemctl is-system-running",
                            ],
                            capture_output=True,
                            text=True,
                            timeout=15,
                            stdin=subprocess.DEVNULL,
                        )
                        answer = (proc.stdout.strip() or proc.stderr.strip())[-200:]
                        if answer != last.get(name):
                            log.debug("%s: %s", name, answer)
                        last[name] = answer
                    except subprocess.TimeoutExpired:
                        last[name] = "ssh timed out"
                    if last[name] in READY_STATES:
                        log.debug("%s is up: %s", name, last[name])
                        del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                name, hd = next(iter(pending.items()))
                raise LabError(
                    f"lab host {name} did not come up within {timeout:.0f}s "
                    f"(last answer: {last.get(name, 'no ssh yet')}); "
                    f"last console lines:\n{hd.console_tail()}",
                    f"look at {hd.console_log}; `schoolctl lab down {name}` removes it",
                )
            time.sleep(0.3)

    def _remove_host(self, name: str) -> bool:
        hd = hosts.HostDir(self.paths.host(name))
        rec = hd.load()
        if rec is None and not hd.path.exists():
            return False
        hosts.stop(hd)
        subprocess.run(
            ["ssh", "-F", str(self.ssh_config_path), "-O", "exit", name],
            capture_output=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        hosts.unmount_root(hd)
        if rec is not None:
            network.remove_host_net(name, rec.veth, rec.address)
            self._services.stop_relay(rec.address)
            sshconf.set_known_host(self.paths.known_hosts, name, rec.address, [])
        elif network.netns_path(name).exists():
            network.remove_host_net(name, "")
        hosts.remove_dir(hd)
        return True
