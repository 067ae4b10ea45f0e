"""Where the lab keeps its state and which subnet it uses (both overridable by environment)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/schoolctl/lab")
DEFAULT_SUBNET = "10.213.0.0/24"
BRIDGE = "sclab0"
NETNS_PREFIX = "sclab-"
VETH_PREFIX = "sclv"
FIRST_HOST_INDEX = 10

APT_PROXY_PORT = 3142
PROXY_PORT = 8888
ACME_PORT = 14000
ACME_MGMT = "127.0.0.1:15000"
DNS_PORT = 8053
DNS_MGMT = "127.0.0.1:8055"
MIRROR_PORT = 8081
RELAY_BASE_PORT = 22000  # + the last octet of a lab host: the bridge's relay to its SSH (a lab backup host)


def state_dir_from_env() -> Path:
    """``SCHOOLCTL_LAB_DIR`` or /var/lib/schoolctl/lab."""
    return Path(os.environ.get("SCHOOLCTL_LAB_DIR") or DEFAULT_STATE_DIR)


def subnet_from_env() -> ipaddress.IPv4Network:
    """``SCHOOLCTL_LAB_SUBNET`` (an IPv4 CIDR, /16 to /26) or 10.213.0.0/24."""
    from schoolctl.errors import LabError

    text = os.environ.get("SCHOOLCTL_LAB_SUBNET") or DEFAULT_SUBNET
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise LabError(f"SCHOOLCTL_LAB_SUBNET={text!r} is not an IPv4 network: {exc}", usage=True) from exc
    if not 16 <= net.prefixlen <= 26:
        raise LabError(f"SCHOOLCTL_LAB_SUBNET={text!r}: use a prefix from /16 to /26", usage=True)
    if not net.is_private or net.is_loopback:
        raise LabError(f"SCHOOLCTL_LAB_SUBNET={text!r} must be a private range", usage=True)
    return net


@dataclass(frozen=True)
class Paths:
    """The lab's state dir layout."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    def host(self, name: str) -> Path:
        return self.hosts / name

    @property
    def addresses(self) -> Path:
        return self.root / "addresses.json"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    @property
    def services(self) -> Path:
        return self.root / "services"

    @property
    def apt_cache(self) -> Path:
        return self.root / "cache" / "apt-cacher-ng"
