"""What every command shares: where the schools are, loading them, the vault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from .config.loader import Config, load
from .config.problems import ConfigError
from .output import config_errors


@dataclass
class Context:
    schools_dir: Path

    def config(self, only: list[str] | None = None) -> Config:
        """The validated fleet; on any problem print them all and exit 2."""
        try:
            return load(self.schools_dir, only)
        except ConfigError as e:
            config_errors(e)


def get(ctx: typer.Context) -> Context:
    return ctx.find_root().obj
