"""City-side services on the host side of the lab bridge: package proxies, ACME, artifact mirror.

Each runs as a background daemon with its pid file and log under ``STATE/services`` and
listens only on the bridge address (management ports on loopback).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from schoolctl.errors import LabError
from schoolctl.lab import config as c
from schoolctl.lab.netutil import http, port_open, wait_port
from schoolctl.lab.run import daemon_pid, run, spawn_daemon, stop_daemon


@dataclass(frozen=True)
class CityServices:
    """Addresses of the city-side services, as lab hosts reach them."""

    bridge: str
    apt_proxy_url: str
    proxy_url: str
    acme_directory: str | None = None
    acme_ca_file: Path | None = None
    dns: str | None = None
    mirror_url: str | None = None
    mirror_dir: Path | None = None


@dataclass(frozen=True)
class Daemon:
    name: str
    exe: str
    host: str
    port: int


def _upstream_proxy() -> tuple[str, int] | None:
    """The build machine's own outbound HTTP proxy, if its environment names one."""
    for key in ("http_proxy", "HTTP_PROXY"):
        url = os.environ.get(key)
        if url:
            parts = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
            if parts.hostname and parts.port:
                return parts.hostname, parts.port
    return None


def _unprivileged_user() -> list[str]:
    """tinyproxy drops root for ``nobody`` when the machine has that user and a matching group."""
    for group in ("nogroup", "nobody"):
        try:
            pwd.getpwnam("nobody")
            grp.getgrnam(group)
        except KeyError:
            continue
        return ["User nobody", f"Group {group}"]
    return []


class Services:
    """Start, query and stop the lab's city-side daemons."""

    def __init__(self, state: Path, bridge: str, subnet: str, apt_cache: Path) -> None:
        self.dir = state
        self.bridge = bridge
        self.subnet = subnet
        self.apt_cache = apt_cache
        self.acme_dir = state / "acme"

    # -- generic daemon plumbing -------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def _log(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def running(self, d: Daemon) -> bool:
        return daemon_pid(self._pid_file(d.name), d.exe) is not None

    def _start(self, d: Daemon, argv: list[str], env: dict[str, str] | None = None) -> None:
        if self.running(d):
            return
        if port_open(d.host, d.port):
            raise LabError(
                f"{d.host}:{d.port} is already taken by something that is not the lab's {d.name}",
                f"see `ss -ltnp 'sport = :{d.port}'`; a system-wide {d.exe} service started by its Debian "
                f"package listens there too: `systemctl disable --now {d.exe}`",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        spawn_daemon(argv, self._log(d.name), self._pid_file(d.name), env=env, cwd=self.dir)
        if not wait_port(d.host, d.port, timeout=20) or not self.running(d):
            tail = "\n".join(self._log(d.name).read_text(errors="replace").splitlines()[-20:])
            stop_daemon(self._pid_file(d.name), d.exe)
            raise LabError(f"{d.name} did not start listening on {d.host}:{d.port}:\n{tail}")

    # -- the daemons -------------------------------------------------------------------
    @property
    def acng(self) -> Daemon:
        return Daemon("apt-cacher-ng", "apt-cacher-ng", self.bridge, c.APT_PROXY_PORT)

    @property
    def tinyproxy(self) -> Daemon:
        return Daemon("tinyproxy", "tinyproxy", self.bridge, c.PROXY_PORT)

    @property
    def dns(self) -> Daemon:
        host, port = c.DNS_MGMT.split(":")
        return Daemon("pebble-challtestsrv", "pebble-challtestsrv", host, int(port))

    @property
    def pebble(self) -> Daemon:
        return Daemon("pebble", "pebble", self.bridge, c.ACME_PORT)

    @property
    def mirror(self) -> Daemon:
        return Daemon("mirror", "http.server", self.bridge, c.MIRROR_PORT)

    def all(self) -> list[Daemon]:
        return [self.mirror, self.pebble, self.dns, self.tinyproxy, self.acng]

    @property
    def apt_proxy_url(self) -> str:
        return f"http://{self.bridge}:{c.APT_PROXY_PORT}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.bridge}:{c.PROXY_PORT}"

    def start_apt_cache(self) -> None:
        """apt-cacher-ng on bridge:3142, caching .debs in the lab's cache dir across runs.

        Its own config dir with no Remap rules: requests go to the host apt asked for (the
        distribution's defaults would send Debian requests to a backend of their choosing).
        """
        self.apt_cache.mkdir(parents=True, exist_ok=True)
        logs = self.dir / "apt-cacher-ng-logs"
        conf_dir = self.dir / "apt-cacher-ng-conf"
        for d in (logs, conf_dir):
            d.mkdir(parents=True, exist_ok=True)
        lines = [
            f"CacheDir: {self.apt_cache}",
            f"LogDir: {logs}",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"BindAddress: {self.bridge}",
            f"Port: {c.APT_PROXY_PORT}",
            f"SocketPath: {self.dir / 'apt-cacher-ng.socket'}",
            "ForeGround: 1",
            "ExThreshold: 30",
            "ReportPage: acng-report.html",
        ]
        up = _upstream_proxy()
        if up:
            lines.append(f"Proxy: http://{up[0]}:{up[1]}")
        (conf_dir / "acng.conf").write_text("\n".join(lines) + "\n")
        self._start(self.acng, ["apt-cacher-ng", "-c", str(conf_dir)])

    def start_proxy(self) -> None:
        """tinyproxy on bridge:8888 for HTTPS (CONNECT), npm and pip; only the lab subnet may use it."""
        conf = self.dir / "tinyproxy.conf"
        lines = [
            f"Port {c.PROXY_PORT}",
            f"Listen {self.bridge}",
            "Timeout 600",
            "MaxClients 100",
            f"Allow {self.subnet}",
            "Allow 127.0.0.1",
            "LogLevel Notice",
            "ConnectPort 443",
            "ConnectPort 563",
            'ViaProxyName "schoolctl-lab"',
        ]
        lines += _unprivileged_user()
        up = _upstream_proxy()
        if up:
            lines.append(f"Upstream http {up[0]}:{up[1]}")
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("\n".join(lines) + "\n")
        self._start(self.tinyproxy, ["tinyproxy", "-d", "-c", str(conf)])

    def start_acme(self) -> None:
        """pebble on bridge:14000 (management 127.0.0.1:15000) with challtestsrv as mock DNS."""
        self.acme_dir.mkdir(parents=True, exist_ok=True)
        _, cert, key = self._acme_certs()
        dns_argv = [
            "pebble-challtestsrv",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-dns01",
            f"{self.bridge}:{c.DNS_PORT}",
            "-management",
            c.DNS_MGMT,
            "-defaultIPv4",
            "",
            "-defaultIPv6",
            "",
        ]
        fresh_dns = not self.running(self.dns)
        self._start(self.dns, dns_argv)
        if fresh_dns:
            for domain, address in self.domains().items():
                self._add_a(domain, address)
        cfg = self.acme_dir / "pebble-config.json"
        cfg.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{self.bridge}:{c.ACME_PORT}",
                        "managementListenAddress": c.ACME_MGMT,
                        "certificate": str(cert),
                        "privateKey": str(key),
                        "httpPort": 80,
                        "tlsPort": 443,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                },
                indent=1,
            )
        )
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self._start(self.pebble, ["pebble", "-config", str(cfg), "-dnsserver", f"{self.bridge}:{c.DNS_PORT}"], env)

    def _acme_certs(self) -> tuple[Path, Path, Path]:
        """A throwaway CA and a server cert for the bridge address and loopback (made once)."""
        d = self.acme_dir
        ca, ca_key, cert, key = d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key"
        if not (ca.exists() and ca_key.exists()):
            run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    str(ca_key),
                    "-out",
                    str(ca),
                    "-days",
                    "3650",
                    "-subj",
                    "/CN=schoolctl lab throwaway ACME CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ]
            )
            cert.unlink(missing_ok=True)
        marker = d / "server.for"
        if not cert.exists() or not marker.exists() or marker.read_text().strip() != self.bridge:
            csr, ext = d / "server.csr", d / "server.ext"
            run(
                [
                    "openssl",
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    str(key),
                    "-out",
                    str(csr),
                    "-subj",
                    f"/CN={self.bridge}",
                ]
            )
            ext.write_text(
                f"subjectAltName=IP:{self.bridge},IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            )
            run(
                [
                    "openssl",
                    "x509",
                    "-req",
                    "-in",
                    str(csr),
                    "-CA",
                    str(ca),
                    "-CAkey",
                    str(ca_key),
                    "-CAcreateserial",
                    "-out",
                    str(cert),
                    "-days",
                    "825",
                    "-extfile",
                    str(ext),
                ]
            )
            marker.write_text(self.bridge + "\n")
        return ca, cert, key

    def start_mirror(self, folder: Path) -> None:
        """python's http.server on bridge:8081 serving ``folder`` (restarted when it changes)."""
        folder = folder.resolve()
        if not folder.is_dir():
            raise LabError(f"mirror folder {folder} does not exist", "pass an existing folder", usage=True)
        marker = self.dir / "mirror.dir"
        if self.running(self.mirror) and marker.exists() and marker.read_text().strip() != str(folder):
            stop_daemon(self._pid_file(self.mirror.name), self.mirror.exe)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{folder}\n")
        argv = [
            sys.executable,
            "-m",
            "http.server",
            str(c.MIRROR_PORT),
            "--bind",
            self.bridge,
            "--directory",
            str(folder),
        ]
        self._start(self.mirror, argv)

    # -- ACME helpers --------------------------------------------------------------------
    def domains(self) -> dict[str, str]:
        try:
            return dict(json.loads((self.acme_dir / "domains.json").read_text()))
        except (OSError, ValueError):
            return {}

    def _add_a(self, domain: str, address: str) -> None:
        # add-a appends: clear first, or each deploy adds the address again until answers overflow
        http(f"http://{c.DNS_MGMT}/clear-a", data={"host": domain})
        http(f"http://{c.DNS_MGMT}/add-a", data={"host": domain, "addresses": [address]})

    def register_domain(self, domain: str, address: str) -> None:
        """Make the mock DNS answer ``domain`` with ``address`` (kept across restarts)."""
        if not self.running(self.dns):
            raise LabError("the lab's mock DNS is not running", "start it with `schoolctl lab services`")
        self._add_a(domain, address)
        domains = self.domains()
        domains[domain] = address
        (self.acme_dir / "domains.json").write_text(json.dumps(domains, indent=1) + "\n")

    def fetch_acme_root(self, dest: Path) -> Path:
        """Save pebble's current issuing root (new at each pebble start) to ``dest``."""
        if not self.running(self.pebble):
            raise LabError("pebble is not running", "start it with `schoolctl lab services`")
        pem = http(f"https://{c.ACME_MGMT}/roots/0", cafile=self.acme_dir / "ca.pem")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(pem)
        return dest

    # -- summary and teardown --------------------------------------------------------------
    def info(self) -> CityServices:
        acme = self.running(self.pebble)
        mirror = self.running(self.mirror) and (self.dir / "mirror.dir").exists()
        return CityServices(
            bridge=self.bridge,
            apt_proxy_url=self.apt_proxy_url,
            proxy_url=self.proxy_url,
            acme_directory=f"https://{self.bridge}:{c.ACME_PORT}/dir" if acme else None,
            acme_ca_file=self.acme_dir / "ca.pem" if acme else None,
            dns=f"{self.bridge}:{c.DNS_PORT}" if self.running(self.dns) else None,
            mirror_url=f"http://{self.bridge}:{c.MIRROR_PORT}/" if mirror else None,
            mirror_dir=Path((self.dir / "mirror.dir").read_text().strip()) if mirror else None,
        )

    def running_names(self) -> list[str]:
        return [d.name for d in self.all() if self.running(d)]

    def stop_all(self) -> None:
        for d in self.all():
            stop_daemon(self._pid_file(d.name), d.exe)
        for pid_file in self.dir.glob("relay-*.pid"):
            stop_daemon(pid_file, "socat")

    def _relay(self, address: str) -> Daemon:
        """The relay to lab address `address`: named for its port, which the address decides, so a host
        that takes over a removed host's address takes over its relay too."""
        listen = c.RELAY_BASE_PORT + int(address.rsplit(".", 1)[1])
        return Daemon(f"relay-{listen}", "socat", self.bridge, listen)

    def start_relay(self, address: str, port: int = 22) -> int:
        """A TCP relay on the bridge to lab address `address`'s `port` (lab hosts cannot reach each
        other: bridge port isolation). For a lab backup host, which the school servers push to. Returns
        the relay's port on the bridge."""
        d = self._relay(address)
        self._start(d, ["socat", f"TCP-LISTEN:{d.port},bind={self.bridge},fork,reuseaddr", f"TCP:{address}:{port}"])
        return d.port

    def stop_relay(self, address: str) -> None:
        """Stop the relay to `address` (its host is gone)."""
        stop_daemon(self._pid_file(self._relay(address).name), "socat")
