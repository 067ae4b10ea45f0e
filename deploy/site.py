"""What a layer needs to know to describe one school server: the school's effective config, its
secrets, and the city services it reaches (the lab's, for a lab host)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from schoolctl.config.model import SERVICE_HOSTS
from schoolctl.deploy.render import hostname, plain_name

if TYPE_CHECKING:
    from schoolctl.config.model import EffectiveSchool
    from schoolctl.secrets import Secret


class SecretSource(Protocol):
    def __call__(self, name: str, length: int = 32) -> Secret: ...




@dataclass(frozen=True)
class Endpoint:
    """An outbound destination the firewall allows: host or address, port, protocol."""

    host: str
    port: int
    proto: str = "tcp"


@dataclass
class Site:
    """One school server as the deploy sees it."""

    school: EffectiveSchool
    secret: SecretSource
    proxy: str | None = None              # http proxy for apt, npm, downloads
    apt_proxy: str | None = None          # apt's own proxy (may be a caching one)
    mirror: str | None = None             # artifact mirror (folder on the controller, or URL)
    acme_directory: str = ""
    acme_ca_pem: str | None = None        # CA that signs the ACME directory's HTTPS (lab: pebble's)
    trusted_ca_pems: list[str] = field(default_factory=list)  # extra CAs the server must trust
    outbound: list[Endpoint] = field(default_factory=list)    # the egress allow-list
    lab: bool = False
    fleet_secret: SecretSource | None = None  # the city's own secrets (e.g. the BBB pool's), scope "fleet"
    upstream_apt: bool = True  # False: upstream apt repositories (Jitsi, BBB) are out of reach (the lab)
    # the Debian archive's URIs when they are not the fleet's `debian:` (the lab: the build machine's own)
    debian_mirror: str | None = None
    debian_security: str | None = None
    skipped: list[str] = field(default_factory=list)  # apps left out: their release cannot be obtained (one line each)
    left_out: set[str] = field(default_factory=set)   # those apps' names: not on the landing page
    mirror_note: str = ""      # why the configured mirror is not used (e.g. its folder does not exist)
    backup_address: str = ""   # the backup host as the school server reaches it (a lab host's address)
    backup_port: int = 22      # its SSH port (a lab backup host: the bridge's relay)
    backup_host_key: str = ""  # its ed25519 host key ("ssh-ed25519 AAAA..."), read by the controller
    notes: list[str] = field(default_factory=list)  # what the deploy should say besides its changes
    # the first deploy of a restore: the apps' code and configuration without their installers (the
    # archive brings their databases and files; the restore's second deploy converges the rest)
    restoring: bool = False

    @property
    def id(self) -> str:
        """The school's id: a plain name (it becomes paths and words of commands on the server)."""
        return plain_name(self.school.id, "school id")

    def fqdn(self, service: str | None = None) -> str:
        """The school's domain, or the name of one of its web services (moodle.<domain>, ...): always
        a host name (it goes into file paths, nginx, Lua, HOCON and commands), else ValueError."""
        domain = hostname(self.school.domain, "the school's domain")
        return domain if service is None else f"{SERVICE_HOSTS[service]}.{domain}"

    def offered(self) -> list[str]:
        """The web services the landing page lists: the school's, less those left out of this deploy."""
        return [s for s in SERVICE_HOSTS if self.school.has(s) and s not in self.left_out]

    @property
    def names(self) -> list[str]:
        """Every name the school's certificate must cover: the domain and each enabled web service."""
        return [self.fqdn(), *(self.fqdn(s) for s in SERVICE_HOSTS if self.school.has(s))]
