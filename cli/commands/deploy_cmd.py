"""`schoolctl plan` and `schoolctl deploy`."""

from __future__ import annotations

from typing import Annotated

import typer

from schoolctl.cli.context import get, preflight
from schoolctl.cli.options import PARALLEL_DEFAULT as PARALLEL
from schoolctl.cli.options import All, Ids, Json, Limit, Parallel, Yes
from schoolctl.cli.output import Board, confirm, err, out
from schoolctl.secrets import redact

# rich's table and markup, the JSON writer (importlib.metadata) and the plan view (difflib) are imported
# by the verbs that use them: `--help`, `validate` and `list` load this module too

app = typer.Typer()



def _schools(ctx: typer.Context, ids: list[str] | None, all_: bool, limit: list[str] | None):
    """The schools named, or --all, narrowed by --limit (schoolctl.config.selection)."""
    return get(ctx).chosen(ids, limit, all_)[1]


def exit_code(results) -> int:
    """1 when a server failed or an app was left out; 2 when every failure was bad set-up found before
    its server was touched (a vault that does not open, a wrong mirror file), as the README promises."""
    failed = [r for r in results if r.status == "failed"]
    if failed and all(r.exit_code == 2 for r in failed) and not any(r.skipped for r in results):
        return 2
    return 1


def _summary(results) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table("school", "result", "changes", "time", "error")
    for r in results:
        colour = {"failed": "red", "changed": "yellow", "unchanged": "green"}.get(r.status, "")
        t.add_row(r.school, f"[{colour}]{r.status_text}[/]" if colour else r.status_text, str(len(r.changes)),
                  f"{r.seconds:.1f}s", escape(redact(r.error.splitlines()[0] if r.error else "")))
    out.print(t)
    for r in results:
        if r.error and "\n" in r.error.strip():  # the detail under the table's first line; one line is said once
            err.print(f"[red]{escape(r.school)} failed[/]:", escape(redact(r.error)), markup=True, highlight=False)
        for note in r.notes:  # e.g. the backup host: never a failure of the deploy, but said
            err.print(f"[yellow]{escape(r.school)}:[/] {escape(redact(note))}", markup=True, highlight=False)
    _skipped(results)


def _skipped(results) -> None:
    """One line per app left out for want of its release, and the summary naming them."""
    left = [(r.school, line) for r in results for line in r.skipped]
    for school, line in left:
        err.print(f"[yellow]{school}: skipped[/] {redact(line)}", markup=True, highlight=False)
    if left:
        apps = ", ".join(f"{school} {line.split(':', 1)[0]}" for school, line in left)
        err.print(f"[yellow]not deployed, no release to be had:[/] {apps}", markup=True, highlight=False)


def _journal(results, all_: bool) -> None:
    """One journal line per school deployed: result, changed items, the layers when limited."""
    import os

    from schoolctl.cli.commands.log_cmd import journal

    layers = os.environ.get("SCHOOLCTL_LAYERS") or None
    for r in results:
        journal("deploy", r.school, r.status_text, changes=[f"{c.get('kind')}: {c.get('what')}" for c in r.changes],
                detail={"all": all_, "layers": layers, "skipped": [s.split(":", 1)[0] for s in r.skipped],
                        "error": r.error.splitlines()[0][:300] if r.error else None}, seconds=r.seconds)


@app.command()
def plan(ctx: typer.Context, ids: Ids = None, all_: All = False, limit: Limit = None,
         parallel: Parallel = PARALLEL, as_json: Json = False) -> None:
    """Show, per school, what a deploy would change (operations and file diffs, no secrets), and
    the releases it is configured to run that are past upstream's security support or have a
    known vulnerability (fleet.yaml `support:`; `accept:` marks the accepted ones)."""
    from schoolctl.cli.json_out import emit
    from schoolctl.cli.plan_view import releases_json, show_plan
    from schoolctl.cli.runner import run
    from schoolctl.releases import reviewed, today

    schools = _schools(ctx, ids, all_, limit)
    preflight(schools)  # their lab hosts, before any connection
    found = {s.id: reviewed(s, today(s.fleet)) for s in schools}
    with Board([s.id for s in schools]) as board:
        results = run(schools, plan=True, progress=board, parallel=parallel)
    if as_json:
        emit("plan", {"schools": [{**r.as_json(), "releases": releases_json(found.get(r.school, []))}
                                  for r in results]})
    else:
        for r in results:
            show_plan(r, found.get(r.school, []))
        _skipped(results)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(exit_code(results))


DryRun = Annotated[bool, typer.Option("--dry-run", help="Change nothing: show what a deploy would change, "
                                                         "exactly as `plan` (asks nothing).")]


@app.command()
def deploy(ctx: typer.Context, ids: Ids = None, all_: All = False, limit: Limit = None,
           parallel: Parallel = PARALLEL, yes: Yes = False, as_json: Json = False, dry_run: DryRun = False) -> None:
    """Apply the configuration to the schools' servers, concurrently; exit 1 if any school failed.
    `--dry-run` is `plan`."""
    from schoolctl.cli.json_out import emit
    from schoolctl.cli.runner import run

    if dry_run:  # one spelling per concept: `plan` is the dry run, `deploy --dry-run` its alias
        plan(ctx, ids=ids, all_=all_, limit=limit, parallel=parallel, as_json=as_json)
        return
    schools = _schools(ctx, ids, all_, limit)
    confirm(f"Deploy {', '.join(s.id for s in schools)}?", yes, "pass --yes to deploy without asking")
    preflight(schools)  # their lab hosts, before any connection
    with Board([s.id for s in schools]) as board:
        results = run(schools, plan=False, progress=board, parallel=parallel)
    _journal(results, all_)
    if as_json:
        emit("deploy", {"schools": [r.as_json() for r in results]})
    else:
        _summary(results)
    if any(r.status == "failed" or r.skipped for r in results):
        raise typer.Exit(exit_code(results))
