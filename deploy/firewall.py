"""nftables: inbound only what the school's services need; outbound denied but for the allow-list
(city proxy, mirror, ACME, DNS, NTP) when the privacy policy says so. Apps ignore their own
"offline" switches, so this is the real guarantee that no data leaves the server."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from schoolctl.deploy.render import integer, render
from schoolctl.deploy.site import Endpoint, Site
from schoolctl.deploy.state import SYSTEM, Directory, File, Layer, Service, Step

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


class FirewallError(ValueError):
    """An allow-list entry cannot be turned into an address."""


def addresses(host: str) -> list[str]:
    """The addresses of an allow-list entry (itself when it is one); FirewallError when it does not resolve."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except OSError as e:
        raise FirewallError(f"cannot resolve {host} for the outbound allow-list: {e}") from None
    return sorted({str(i[4][0]) for i in infos})


def allow(site: Site) -> list[Rule]:
    rules = []
    for ep in dict.fromkeys(site.outbound):
        assert isinstance(ep, Endpoint)
        for addr in addresses(ep.host):
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
