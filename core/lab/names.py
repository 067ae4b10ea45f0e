"""Lab host names: short, DNS-safe, and usable in namespace and file names."""

from __future__ import annotations

import re

from schoolctl.errors import LabError

MAX_NAME = 20
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid lab host name, else raise LabError (usage)."""
    if not name or len(name) > MAX_NAME or not _NAME.match(name) or name.endswith("-") or "--" in name:
        raise LabError(
            f"invalid lab host name {name!r}",
            f"use 1-{MAX_NAME} lowercase letters, digits and single dashes, starting with a letter "
            "and not ending with a dash (e.g. `demo`, `school-a`)",
            usage=True,
        )
    return name
