"""Render templates/ with Jinja2, strictly: an undefined variable is an error, not an empty string."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from schoolctl.resources import templates

TEMPLATES = templates()


@cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["reveal"] = lambda s: s.reveal()
    return env


def render(name: str, **context: Any) -> str:
    """Render templates/<name> with `context`."""
    return _env().get_template(name).render(**context)
