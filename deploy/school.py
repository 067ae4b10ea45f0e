"""A whole school server: every layer's desired state, merged into rounds and applied by a few
coarse operations per round (see deploy/state.py and deploy/ops.py)."""

from __future__ import annotations

import importlib
import os

from pyinfra.api import deploy

from schoolctl.config.model import RELEASE_SERVICES, SERVICE_HOSTS
from schoolctl.deploy import jitsi_source, ops
from schoolctl.deploy.obtain import unobtainable
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import LAST, Layer, Round, merge
from schoolctl.deploy.web import answering_step

# The layers, in the order they stand on each other. Each module has `layer(site) -> Layer | None`.
LAYERS = ("base", "firewall", "identity", "database", "php", "web", "moodle", "nextcloud", "etherpad", "jitsi",
          "backup")


def selected_layers() -> tuple[str, ...]:
    """LAYERS, or only those named in $SCHOOLCTL_LAYERS (comma separated; kept in LAYERS order).

    For development and tests: a partial deploy of a real school leaves the rest as it was (and
    whatever the missing layers would have set up, missing); that is the caller's own risk."""
    wanted = [n.strip() for n in os.environ.get("SCHOOLCTL_LAYERS", "").split(",") if n.strip()]
    unknown = [n for n in wanted if n not in LAYERS]
    if unknown:
        raise ValueError(f"SCHOOLCTL_LAYERS names unknown layer(s) {', '.join(unknown)}; "
                         f"the layers are {', '.join(LAYERS)}")
    return tuple(n for n in LAYERS if n in wanted) if wanted else LAYERS


def school_layers(site: Site) -> list[Layer]:
    """Every selected layer's desired state. An app whose release cannot be obtained is left out,
    with its line in `site.skipped` (deploy/obtain.py); the rest of the school is still deployed."""
    names = selected_layers()
    unavailable = set()
    for name in names:  # first, so that the landing page (web) never lists an app left out
        if name in RELEASE_SERVICES and site.school.has(name):
            why = unobtainable(site, name)
            if why:
                site.skipped.append(why)
                unavailable.add(name)
    site.left_out.update(unavailable, (s for s in SERVICE_HOSTS if s not in names))  # or not deployed by this run
    if "jitsi" in names and site.school.has("jitsi") and not jitsi_source.source(site, site.fqdn("jitsi")).full:
        site.left_out.add("jitsi")  # its Debian side only (deploy/jitsi.py: NOTE): no video calls to offer
    found = []
    for name in names:
        if name in unavailable:
            continue
        layer = importlib.import_module(f"schoolctl.deploy.{name}").layer(site)
        if layer is not None:
            found.append(layer)
    return found


def school_rounds(site: Site) -> list[Round]:
    """Render every layer locally (templates, secrets) and merge them; raises on contradictions. With
    the web layer, a last round checks that every service the landing page lists answers (not in a
    restore's first deploy: the apps answer once their data is back)."""
    rounds = merge(school_layers(site))
    if "web" in selected_layers() and not site.restoring:
        rounds.append(Round(LAST, steps=[answering_step(site)]))
    return rounds


@deploy("school")
def school_deploy(rounds: list[Round]) -> None:
    """Apply the rounds in order; within a round: pre-files, pre-steps, packages, files, services, steps."""
    for r in rounds:
        tag = f"round {r.number}"
        if r.pre_files:
            ops.paths(files=r.pre_files, directories=[], name=f"{tag}: package sources")
        if r.pre_steps:
            ops.steps(items=r.pre_steps, name=f"{tag}: preparation")
        if r.packages:
            ops.packages(names=r.packages, name=f"{tag}: packages")
        if r.files or r.directories:
            ops.paths(files=r.files, directories=r.directories, name=f"{tag}: files")
        if r.services:
            ops.services(units=r.services, name=f"{tag}: services")
        if r.steps:
            ops.steps(items=r.steps, name=f"{tag}: steps")
