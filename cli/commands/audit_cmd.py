"""`schoolctl audit`: run the privacy and security controls on the schools' servers, in parallel."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from schoolctl.cli.context import get, preflight
from schoolctl.cli.options import PARALLEL_DEFAULT as PARALLEL
from schoolctl.cli.options import All, Limit, Parallel
from schoolctl.cli.output import Board, err, fail, out, say
from schoolctl.secrets import redact

if TYPE_CHECKING:  # rich's table is imported by the verb: `--help`, `validate` and `list` load this module too
    from rich.table import Table

app = typer.Typer()

Ids = Annotated[list[str] | None, typer.Argument(help="School ids.", show_default=False)]
COLOURS = {"pass": "green", "fail": "red", "accepted": "magenta", "error": "yellow", "n/a": "dim"}


def summary_table(audits) -> Table:
    from rich.markup import escape
    from rich.table import Table

    t = Table("school", "status", "pass", "fail", "accepted", "error", "n/a", "time", "failing controls")
    for a in audits:
        c = a.counts()
        bad = [r.control.id for r in a.controls if r.status in ("fail", "error")]
        shown = a.error if a.error else ", ".join(bad)
        t.add_row(a.school, f"[{COLOURS[a.status]}]{a.status}[/]", str(c["pass"]), str(c["fail"]),
                  str(c["accepted"]), str(c["error"]), str(c["n/a"]), f"{a.seconds:.1f}s", escape(shown))
    return t


def accepted_table(audits) -> Table | None:
    """The accepted risks (failing controls the fleet accepts until a date), with reason and date;
    None when there are none."""
    from rich.markup import escape
    from rich.table import Table

    t = Table("school", "accepted control", "until", "by", "reason", "observed")
    for a in audits:
        for r in a.controls:
            if r.status == "accepted":
                w = r.accepted
                t.add_row(a.school, r.control.id, w.until.isoformat(), escape(redact(w.accepted_by)),
                          escape(redact(w.reason)), escape(redact(r.observed)))
    return t if t.row_count else None


def show_table(audits) -> None:
    """The terminal report: the summary, the accepted risks, and waivers that cover a passing control."""
    out.print(summary_table(audits))
    accepted = accepted_table(audits)
    if accepted is not None:
        out.print(accepted)
    for a in audits:
        for u in getattr(a, "unused", []):
            say(f"note: {a.school}: {u.control} passes; the accepted risk for it (until {u.until.isoformat()}, "
                f"by {u.accepted_by}) is not needed any more")


@app.command()
def audit(ctx: typer.Context, ids: Ids = None, all_: All = False, limit: Limit = None,
          parallel: Parallel = PARALLEL,
          fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, junit or html.")] = "table",
          as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
          output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to this file.")] = None,
          lang: Annotated[str | None, typer.Option("--lang", help="HTML report language: ca, es or en "
                                                                  "(default: the fleet's first).")] = None,
          control: Annotated[list[str] | None, typer.Option("--control", "-c", help="Only these control ids.")]
          = None) -> None:
    """Audit the schools' servers against their privacy policy and the security baseline.
    Exit 1 if any control fails (or a school cannot be audited), 2 on bad input; a failing control
    the fleet accepts (`accept:` in fleet.yaml, until its date) is `accepted` and does not fail it."""
    from schoolctl.audit.catalogue import FAILING, load_all
    from schoolctl.audit.runner import audit_all
    from schoolctl.cli.reports import FORMATS, html, json_report, junit

    if as_json:
        if fmt not in ("table", "json"):
            fail(f"--json and --format {fmt} ask for two formats; give one")
        fmt = "json"
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if lang is not None and lang not in html.LANGS:
        fail(f"unknown language {lang!r}: use one of {', '.join(html.LANGS)}")
    controls = load_all()
    unknown = [c for c in control or [] if c not in controls]
    if unknown:
        fail(f"unknown control(s) {', '.join(unknown)}; known: {', '.join(sorted(controls))}")
    if output is not None and fmt == "table":
        fail(f"--output {output}: the table is printed on the terminal; give --format json, junit or html to "
             "write a report file")
    if output is not None:  # a report that cannot be written is bad input: said before any server is asked
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            fail(f"cannot write the report to {output}: {e.strerror} (choose a folder you can write to)")
        if output.is_dir():
            fail(f"--output {output} is a folder; give a file name, e.g. {output / 'audit.html'}")
    config, schools = get(ctx).chosen(ids, limit, all_)
    preflight(schools)  # their lab hosts, before any connection
    err.print(f"auditing {len(schools)} school(s)...", highlight=False)
    with Board([s.id for s in schools]) as board:
        audits = audit_all(schools, progress=board, parallel=parallel, only=control or None)
    from schoolctl.cli.commands.log_cmd import journal

    for a in audits:
        journal("audit", a.school, a.status, detail={"format": fmt, "controls": control or None, "counts": a.counts(),
                                                     "failing": [r.control.id for r in a.controls
                                                                 if r.status in FAILING and not a.error],
                                                     "error": a.error}, seconds=a.seconds)
    if fmt == "table":
        show_table(audits)
    else:
        text = {"json": lambda: json_report.render(audits), "junit": lambda: junit.render(audits),
                "html": lambda: html.render(audits, lang or config.fleet.languages[0],
                                             districts={s.id: s.district for s in schools})}[fmt]()
        if output:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as e:
                fail(f"cannot write the report to {output}: {e.strerror}")
            show_table(audits)
            say(f"{fmt} report written to {output}")
        else:  # as it is: never through rich (markup, emoji codes in a school's name)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if any(a.status in FAILING for a in audits):
        raise typer.Exit(1)
