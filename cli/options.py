"""Options every verb that works on schools spells the same way (`--limit`, `--parallel`, `--all`,
`--yes`, `--json`), as typed Annotated aliases for any command module to reuse."""

from __future__ import annotations

from typing import Annotated

import typer

PARALLEL_DEFAULT = 20

Ids = Annotated[list[str] | None, typer.Argument(help="School ids.", show_default=False)]
All = Annotated[bool, typer.Option("--all", help="Every school of the fleet.")]
Limit = Annotated[list[str] | None, typer.Option(
    "--limit", "-l", metavar="SELECTION", show_default=False,
    help="Only these schools: ids, globs (esc-*), district=NAME (accents and case ignored), service=NAME; "
         "comma-separated or repeated, !TERM leaves out. Without ids or --all: from the whole fleet.")]
Parallel = Annotated[int, typer.Option("--parallel", min=1, metavar="N",
                                       help="At most N schools at once.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
