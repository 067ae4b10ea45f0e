"""What a rendering holds, for tests that judge it: every shell command and every file's text."""

from __future__ import annotations

from schoolctl.deploy.state import Layer, Round


def commands(layers: list[Layer] | list[Round]) -> list[str]:
    """Every shell command: steps' check and apply, files' check and then."""
    found = []
    for layer in layers:
        for s in [*layer.pre_steps, *layer.steps]:
            found += [s.check, s.apply]
        found += [c for f in [*layer.pre_files, *layer.files] for c in (f.check, f.then) if c]
    return found


def files(layers: list[Layer] | list[Round]) -> dict[str, str]:
    """Every file's path and text (undecodable bytes replaced)."""
    return {f.path: f.data.decode(errors="replace") for layer in layers for f in [*layer.pre_files, *layer.files]}
