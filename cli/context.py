"""What every command shares: where the schools are, loading them, the vault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from schoolctl.config.loader import Config, load


@dataclass
class Context:
    schools_dir: Path

    def config(self, only: list[str] | None = None) -> Config:
        """The validated fleet; raises ConfigError with every problem (exit 2)."""
        return load(self.schools_dir, only)


def get(ctx: typer.Context) -> Context:
    return ctx.find_root().obj
