"""What every command shares: where the schools are, loading them (and the `--limit` selection), the vault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from schoolctl.config.loader import Config
    from schoolctl.config.model import EffectiveSchool


def load(schools_dir: Path, only: list[str] | None = None) -> Config:
    """schoolctl.config.loader.load, imported on first use (the model is pydantic: `--help` starts fast)."""
    from schoolctl.config.loader import load as load_fleet

    return load_fleet(schools_dir, only)


@dataclass
class Context:
    schools_dir: Path

    def config(self, only: list[str] | None = None) -> Config:
        """The validated fleet; raises ConfigError with every problem (exit 2)."""
        return load(self.schools_dir, only)

    def chosen(self, ids: list[str] | None, limit: list[str] | None, all_: bool = False,
               default_all: bool = False) -> tuple[Config, list[EffectiveSchool]]:
        """The fleet and the schools a verb works on: `ids` (or every school with `all_`, a
        `--limit`, or `default_all`), narrowed by `--limit` (schoolctl.config.selection). Only the
        files of the schools named are checked when ids alone say which (exit 2 on any problem)."""
        from schoolctl.cli.output import fail
        from schoolctl.config import selection

        found = selection.terms(limit)
        if ids and all_:
            fail(f"--all and the school ids {' '.join(ids)} ask for two selections; give one (--limit narrows "
                 "either)")
        if not ids and not all_ and not found and not default_all:
            fail("name the schools to work on, pass --all, or choose with --limit (e.g. --limit district=NAME)")
        only = ids or (selection.plain_ids(found) if not all_ else None)
        config = self.config(only)
        base = config.select(ids) if ids else list(config.schools.values())
        return config, selection.select(base, found, config.schools.values() if ids else None)


def get(ctx: typer.Context) -> Context:
    return ctx.find_root().obj


def lab_problems(schools: list[EffectiveSchool]) -> list[str]:
    """One line for each `lab:NAME` server whose lab host is not on this machine or not running."""
    from schoolctl.errors import SchoolctlError

    labs = [s for s in schools if s.server.lab_name]
    if not labs:
        return []
    from schoolctl.lab import Lab

    here = Lab()
    problems = []
    for s in labs:
        name = s.server.lab_name
        try:
            state = here.host(name).state
        except SchoolctlError:
            state = None
        if state != "running":
            what = f"lab host {name} is {state}" if state else f"no lab host {name} on this machine"
            problems.append(f"{s.source}: server lab:{name}: {what} (run `schoolctl lab up {name}` first)")
    return problems


def preflight(schools: list[EffectiveSchool]) -> None:
    """What a verb that connects needs on this machine, checked before any connection, every problem
    at once (PreflightError, exit 2, nothing changed): each `lab:NAME` server's lab host exists and
    runs (an absent one would otherwise have the lab's city services started for nothing)."""
    from schoolctl.errors import PreflightError

    problems = lab_problems(schools)
    if problems:
        raise PreflightError(problems)
