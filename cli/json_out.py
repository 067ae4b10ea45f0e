"""Every `--json` output of schoolctl, in one envelope: `{"schema": "schoolctl-<verb>/1",
"schoolctl_version": ..., **payload}`, written as plain JSON on stdout (never through rich, which
would read `:school:` in a school's name as an emoji or `[b]` as markup), scrubbed of secrets.
Each output's JSON Schema is docs/schemas/<verb>.schema.json."""

from __future__ import annotations

import json
import sys
from typing import Any

import schoolctl
from schoolctl.secrets import redact

VERSION = 1


def schema_name(verb: str) -> str:
    """`schoolctl-<verb>/1` (`users import` -> `schoolctl-users-import/1`)."""
    return f"schoolctl-{verb.replace(' ', '-')}/{VERSION}"


def envelope(verb: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with the schema name and the tool's version in front."""
    return {"schema": schema_name(verb), "schoolctl_version": schoolctl.__version__, **payload}


def emit(verb: str, payload: dict[str, Any]) -> None:
    """Write the verb's output to stdout as one JSON document (redacted, no markup, no emoji)."""
    sys.stdout.write(redact(json.dumps(envelope(verb, payload), indent=2, ensure_ascii=False)) + "\n")
    sys.stdout.flush()
