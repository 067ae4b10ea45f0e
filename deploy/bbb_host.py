"""The BigBlueButton host of a school (its own Ubuntu 24.04 server): what runs there, as rounds.

The runner deploys it with a second pyinfra State, next to the school server's, using the same
coarse operations (`deploy.school.school_deploy(rounds)`):

    rounds = bbb_rounds(site)          # [] when the school has no own BBB host
    if rounds:  inventory = Inventory(([(f"{sid}-bbb", connection(bbb_server))], {}))  ...

Layers: the OS check first (round -1: nothing is touched on another OS), the base layer
(technicians, SSH, unattended upgrades, retention of system logs, apt proxy, CAs), the firewall (the
school server's egress policy and allow-list; inbound SSH, HTTP, HTTPS, the media range and coturn),
then BBB and its TLS (the school server's certificate modes and TLS settings, BBB's nginx site).
"""

from __future__ import annotations

from schoolctl.config.model import Server
from schoolctl.deploy import base, bigbluebutton, firewall
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Layer, Round, merge


def bbb_server(site: Site) -> Server | None:
    """The school's own BBB host, or None (no BigBlueButton, or the city pool)."""
    bbb = site.school.services.bigbluebutton
    return bbb.server if bbb is not None and not bbb.pool else None


def bbb_layers(site: Site) -> list[Layer]:
    if bbb_server(site) is None:
        return []
    layer = bigbluebutton.layer(site)
    assert layer is not None
    server = bbb_server(site)
    assert server is not None
    rules = firewall.bbb_inbound(server.ssh_port, bigbluebutton.TURN_PORT)
    return [bigbluebutton.preflight(), base.layer(site), firewall.layer(site, rules), layer,
            bigbluebutton.tls_layer(site)]


def bbb_rounds(site: Site) -> list[Round]:
    """Every layer of the BBB host merged into rounds (empty when there is no own BBB host)."""
    return merge(bbb_layers(site))
