"""A whole school server: every layer's desired state, merged into rounds and applied by a few
coarse operations per round (see deploy/state.py and deploy/ops.py)."""

from __future__ import annotations

import importlib

from pyinfra.api import deploy

from . import ops
from .site import Site
from .state import Layer, Round, merge

# The layers, in the order they stand on each other. Each module has `layer(site) -> Layer | None`.
LAYERS = ("base", "firewall", "identity", "database", "php", "web", "moodle", "nextcloud", "etherpad", "jitsi")


def school_layers(site: Site) -> list[Layer]:
    found = []
    for name in LAYERS:
        layer = importlib.import_module(f"deploy.{name}").layer(site)
        if layer is not None:
            found.append(layer)
    return found


def school_rounds(site: Site) -> list[Round]:
    """Render every layer locally (templates, secrets) and merge them; raises on contradictions."""
    return merge(school_layers(site))


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
