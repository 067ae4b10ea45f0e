"""nftables: inbound only what the school's services need; outbound denied but for the allow-list
(city proxy, mirror, ACME, DNS, NTP) when the privacy policy says so. Apps ignore their own
"offline" switches, so this is the real guarantee that no data leaves the server."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from schoolctl.deploy.render import integer, render
from schoolctl.deploy.site import Endpoint, Site
from schoolctl.deploy.state import SYSTEM, Directory, File, Layer, Service, Step
from schoolctl.errors import RenderError

STAMP = "/var/lib/schoolctl/nftables.loaded"


@dataclass(frozen=True)
class Rule:
    proto: str
    port: int
    why: str
    address: str = ""
    family: str = "ip"
    last: int = 0   # a port range port..last (BigBlueButton's media)

    def __post_init__(self) -> None:
        integer(self.port, f"the port of {self.why}")
        integer(self.last, f"the last port of {self.why}")

    @property
    def ports(self) -> str:
        """nft's port expression: `443` or `16384-32768`."""
        return f"{self.port}-{self.last}" if self.last else str(self.port)


def inbound(site: Site) -> list[Rule]:
    """The ports the school's enabled services need, and nothing else."""
    school = site.school
    # every school serves its landing page (and ACME challenges) through nginx
    rules = [Rule("tcp", school.server.ssh_port, "ssh (technicians, deploys)"),
             Rule("tcp", 80, "http (ACME challenges, redirect to https)"), Rule("tcp", 443, "https")]
    if school.services.jitsi:
        j = school.services.jitsi
        rules += [Rule("udp", j.jvb_port, "jitsi videobridge media"),
                  Rule("udp", j.turn_port, "coturn (STUN/TURN)"), Rule("tcp", j.turn_port, "coturn (TURN over TCP)")]
    return rules


# BigBlueButton's media (FreeSWITCH and the WebRTC SFU), as bbb-install's firewall opens it
BBB_MEDIA = (16384, 32768)


def bbb_inbound(ssh_port: int, turn_port: int) -> list[Rule]:
    """The BigBlueButton host's own ports: SSH, HTTP (ACME), HTTPS, its media range and its coturn."""
    return [Rule("tcp", ssh_port, "ssh (technicians, deploys)"),
            Rule("tcp", 80, "http (ACME challenges, redirect to https)"), Rule("tcp", 443, "https"),
            Rule("udp", BBB_MEDIA[0], "bigbluebutton media (FreeSWITCH, WebRTC SFU)", last=BBB_MEDIA[1]),
            Rule("udp", turn_port, "coturn (STUN/TURN)"), Rule("tcp", turn_port, "coturn (TURN over TCP)")]


class FirewallError(RenderError):
    """An allow-list entry cannot be turned into an address (a name that does not resolve on the
    controller): bad input or set-up, found before any connection (exit 2)."""


def _reason(e: OSError) -> str:
    """What the resolver said, in words ("Name or service not known"), without its errno."""
    return e.strerror or (str(e.args[-1]) if e.args else "") or type(e).__name__


def addresses(host: str, origin: str = "") -> list[str]:
    """The addresses of an allow-list entry (itself when it is one); FirewallError when it does not
    resolve. `origin` says where the entry comes from (e.g. "fleet.yaml `ntp`"), for the message."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except OSError as e:
        raise FirewallError(f"cannot resolve {host} ({origin or 'an entry of the outbound allow-list'}): "
                            f"{_reason(e)}",
                            f"correct the name{' there' if origin else ''}, or make it resolve on this machine (the "
                            "firewall allows the addresses it resolves to when the deploy renders)") from None
    return sorted({str(i[4][0]) for i in infos})


def origin(site: Site, host: str) -> str:
    """Where the allow-list entry `host` comes from: the fleet file's keys that name it."""
    fleet = site.school.fleet
    named = [("proxy", fleet.proxy), ("tls.acme_directory", fleet.tls.acme_directory),
             ("mirror (or SCHOOLCTL_MIRROR)", site.mirror)]
    if fleet.debian:
        named += [("debian.mirror", fleet.debian.mirror), ("debian.security", fleet.debian.security)]
    keys = [key for key, url in named if url and urlparse(url).hostname == host]
    keys += ["ntp"] if host in fleet.ntp else []
    keys += ["backup.host"] if fleet.backup and host in (fleet.backup.host.address, site.backup_address) else []
    if not keys:
        return ""
    folder = Path(site.school.source).parent
    fleet_file = next((n for n in ("fleet.yaml", "fleet.yml") if (folder / n).is_file()), "fleet.yaml")
    return f"{folder / fleet_file}: {', '.join(f'`{k}`' for k in keys)}"


def allow(site: Site) -> list[Rule]:
    rules = []
    for ep in dict.fromkeys(site.outbound):
        assert isinstance(ep, Endpoint)
        for addr in addresses(ep.host, origin(site, ep.host)):
            family = "ip6" if ":" in addr else "ip"
            rules.append(Rule(ep.proto, ep.port, f"allow-list: {ep.host}", addr, family))
    return rules


def layer(site: Site, rules: list[Rule] | None = None) -> Layer:
    """The school server's firewall, or with `rules` another host's of the school (its BigBlueButton
    host) with the same egress policy and allow-list."""
    outbound = site.school.privacy.outbound
    conf = render("firewall/nftables.conf.j2", inbound=inbound(site) if rules is None else rules,
                  allow=allow(site), outbound=outbound)
    # the live ruleset must be the configured one: a rule removed by hand shows in `plan`
    loaded = "nft -s list ruleset | sha256sum | cut -c1-64"  # -s: no counters, only rules
    return Layer(
        name="firewall", round=SYSTEM, packages=["nftables"],
        directories=[Directory("/var/lib/schoolctl", "0700")],
        files=[File("/etc/nftables.conf", conf, "0755", check="nft -c -f /etc/nftables.conf")],
        services=[Service("nftables")],
        steps=[Step("live firewall ruleset matches /etc/nftables.conf",
                    check=f'[ "$({loaded})" = "$(cat {STAMP} 2>/dev/null)" ] && '
                          f'[ {STAMP} -nt /etc/nftables.conf ]',
                    apply=f"nft -f /etc/nftables.conf && {loaded} > {STAMP}")],
    )
