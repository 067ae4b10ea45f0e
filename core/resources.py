"""The package's data files (templates, the report's files, the Moodle plugin), found with
importlib.resources so that an installed wheel works outside any checkout."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path


@cache
def templates() -> Path:
    """The folder of `schoolctl.templates` (wheels install unzipped, so it is a real folder)."""
    root = files("schoolctl.templates")
    path = Path(str(root))
    if not path.is_dir():
        raise RuntimeError(f"schoolctl's templates are not a folder on disk ({root}): install the wheel unzipped")
    return path
