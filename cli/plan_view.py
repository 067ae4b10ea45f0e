"""Print a school's plan: what would change, with file diffs; secrets never shown."""

from __future__ import annotations

import difflib

from schoolctl.cli.output import out, say
from schoolctl.secrets import redact


def release_notes(reviewed) -> list[str]:
    """One line per unsafe release a school is configured to run (schoolctl.releases.reviewed):
    `! <finding>`, or `= <finding>; accepted until ... by ...: ...` for a risk the fleet accepts."""
    from schoolctl.releases import accepted_text

    return [f"  ! {f.message}" if a is None else f"  = {f.message}; {accepted_text(a)} ({f.control})"
            for f, a in reviewed]


def releases_json(reviewed) -> list[dict]:
    """The same findings for `plan --json`: each finding's fields and `accepted` (or null)."""
    from schoolctl.releases import accepted_as_json

    return [{**f.as_json(), "accepted": accepted_as_json(a)} for f, a in reviewed]


def show_plan(result, reviewed=()) -> None:
    """A school's plan; `reviewed`: its release findings (schoolctl.releases.reviewed), said first."""
    notes = release_notes(reviewed)
    if result.status == "failed":
        say(f"{result.school}: cannot plan: {result.error}")
        for line in notes:
            say(line)
        return
    if not result.changes:
        say(f"{result.school}: no changes")
        for line in notes:
            say(line)
        return
    say(f"{result.school}: {len(result.changes)} change(s)")
    for line in notes:
        say(line)
    for c in result.changes:
        say(f"  ~ {c['kind']}: {c['what']}" + (f" ({c['detail']})" if c["detail"] else ""))
        diff = c.get("diff")
        if diff:
            out.print(redact(diff), markup=False, highlight=False)


def file_diff(path: str, old: str | None, new: str, secret: bool) -> str:
    """A unified diff of a managed file, or a note for secret files."""
    if secret:
        return "    (contains secrets: content not shown)"
    lines = difflib.unified_diff((old or "").splitlines(), new.splitlines(), f"{path} (server)", f"{path} (wanted)",
                                 lineterm="", n=2)
    return "\n".join("    " + line for line in lines)
