"""Print a school's plan: what would change, with file diffs; secrets never shown."""

from __future__ import annotations

import difflib

from schoolctl.cli.output import out, say
from schoolctl.secrets import redact


def show_plan(result) -> None:
    if result.status == "failed":
        say(f"{result.school}: cannot plan: {result.error}")
        return
    if not result.changes:
        say(f"{result.school}: no changes")
        return
    say(f"{result.school}: {len(result.changes)} change(s)")
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
