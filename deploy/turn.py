"""coturn, a host's own STUN/TURN server, shared by deploy/jitsi.py (on the school server) and
deploy/bigbluebutton.py (on the BBB host).

Credentials are time-limited, derived from a shared secret (the TURN REST scheme); each layer names
its own secret (`secret_name`). Relays never reach private, loopback or reserved networks
(DENIED_PEERS), except the host's own address when it is given (`allowed`: media behind NAT).
The config is templates/turn/turnserver.conf.j2, written to TURN_CONF.
"""

from __future__ import annotations

from schoolctl.deploy.render import integer, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import File

TURN_CONF = "/etc/turnserver.conf"
# Relays must not reach internal networks (coturn's security guidance; jitsi-meet-turnserver's list).
DENIED_PEERS = [
    "0.0.0.0-0.255.255.255", "10.0.0.0-10.255.255.255", "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255", "192.0.2.0-192.0.2.255", "192.88.99.0-192.88.99.255",
    "192.168.0.0-192.168.255.255", "198.18.0.0-198.19.255.255", "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255", "224.0.0.0-255.255.255.255",
    "::1", "::ffff:0.0.0.0-::ffff:255.255.255.255", "64:ff9b::-64:ff9b::ffff:ffff",
    "100::-100::ffff:ffff:ffff:ffff", "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
]


def coturn_file(site: Site, realm: str, port: int, allowed: list[str] | None = None, *,
                secret_name: str) -> File:
    """coturn's config: the shared secret inside, so root:turnserver 0640 and hidden from plans."""
    conf = render("turn/turnserver.conf.j2", realm=realm, port=integer(port, "the TURN port"),
                  secret=site.secret(secret_name), denied=DENIED_PEERS, allowed=allowed or [])
    return File(TURN_CONF, conf, "0640", "root", "turnserver", secret=True, restart=("coturn",))
