"""`schoolctl plan` and `schoolctl deploy`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from schoolctl.cli.context import get
from schoolctl.cli.output import err, out, say
from schoolctl.cli.plan_view import releases_json, show_plan
from schoolctl.secrets import redact

app = typer.Typer()

Ids = Annotated[list[str] | None, typer.Argument(help="School ids.", show_default=False)]
All = Annotated[bool, typer.Option("--all", help="Every school of the fleet.")]


def _schools(ctx: typer.Context, ids: list[str] | None, all_: bool):
    from schoolctl.cli.output import fail

    if not ids and not all_:
        fail("name the schools to work on, or pass --all")
    return get(ctx).config(ids).select(ids)


class _Board:
    """Live per-school progress on the terminal (stderr), plain lines when not a terminal."""

    def __init__(self, ids: list[str]):
        self.state = dict.fromkeys(ids, "waiting")
        self.live = Live(self._table(), console=err, transient=True, auto_refresh=err.is_terminal)

    def _table(self) -> Table:
        t = Table("school", "now", box=None)
        for sid, what in self.state.items():
            t.add_row(sid, what)
        return t

    def __call__(self, school: str, what: str) -> None:
        self.state[school] = what
        if err.is_terminal:
            self.live.update(self._table())


def _summary(results) -> None:
    t = Table("school", "result", "changes", "time", "error")
    for r in results:
        colour = {"failed": "red", "changed": "yellow", "unchanged": "green"}.get(r.status, "")
        t.add_row(r.school, f"[{colour}]{r.status_text}[/]" if colour else r.status_text, str(len(r.changes)),
                  f"{r.seconds:.1f}s", redact(r.error.splitlines()[0] if r.error else ""))
    out.print(t)
    for r in results:
        if r.error:
            err.print(f"[red]{r.school} failed[/]:", redact(r.error), markup=True, highlight=False)
    _skipped(results)


def _skipped(results) -> None:
    """One line per app left out for want of its release, and the summary naming them."""
    left = [(r.school, line) for r in results for line in r.skipped]
    for school, line in left:
        err.print(f"[yellow]{school}: skipped[/] {redact(line)}", markup=True, highlight=False)
    if left:
        apps = ", ".join(f"{school} {line.split(':', 1)[0]}" for school, line in left)
        err.print(f"[yellow]not deployed, no release to be had:[/] {apps}", markup=True, highlight=False)


@app.command()
def plan(ctx: typer.Context, ids: Ids = None, all_: All = False,
         as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show, per school, what a deploy would change (operations and file diffs, no secrets), and
    the releases it is configured to run that are past upstream's security support or have a
    known vulnerability (fleet.yaml `support:`; `accept:` marks the accepted ones)."""
    from schoolctl.cli.runner import run
    from schoolctl.releases import reviewed, today

    schools = _schools(ctx, ids, all_)
    found = {s.id: reviewed(s, today(s.fleet)) for s in schools}
    board = _Board([s.id for s in schools])
    with board.live:
        results = run(schools, plan=True, progress=board)
    if as_json:
        say(json.dumps([{**r.as_json(), "releases": releases_json(found.get(r.school, []))} for r in results],
                       indent=2))
    else:
        for r in results:
            show_plan(r, found.get(r.school, []))
        _skipped(results)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


@app.command()
def deploy(ctx: typer.Context, ids: Ids = None, all_: All = False,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Apply the configuration to the schools' servers, concurrently; exit 1 if any school failed."""
    from schoolctl.cli.runner import run

    schools = _schools(ctx, ids, all_)
    if not yes and not typer.confirm(f"Deploy {', '.join(s.id for s in schools)}?", err=True):
        raise typer.Exit(1)
    board = _Board([s.id for s in schools])
    with board.live:
        results = run(schools, plan=False, progress=board)
    if as_json:
        say(json.dumps([r.as_json() for r in results], indent=2))
    else:
        _summary(results)
    if any(r.status == "failed" or r.skipped for r in results):
        raise typer.Exit(1)
