"""The BigBlueButton host of a school (its own Ubuntu 24.04 server): what runs there, as rounds.

The runner deploys it with a second pyinfra State, next to the school server's, using the same
coarse operations (`deploy.school.school_deploy(rounds)`):

    rounds = bbb_rounds(site)          # [] when the school has no own BBB host
    if rounds:  inventory = Inventory(([(f"{sid}-bbb", connection(bbb_server))], {}))  ...

Layers: the OS check first (round -1: nothing is touched on another OS), the base layer
(technicians, SSH, unattended upgrades, retention of system logs, apt proxy, CAs), then BBB.
"""

from __future__ import annotations

from schoolctl.config.model import Server
from schoolctl.deploy import base, bigbluebutton
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
    return [bigbluebutton.preflight(), base.layer(site), layer]


def bbb_rounds(site: Site) -> list[Round]:
    """Every layer of the BBB host merged into rounds (empty when there is no own BBB host)."""
    return merge(bbb_layers(site))
