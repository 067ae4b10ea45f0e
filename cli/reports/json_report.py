"""The audit as JSON, schema `schoolctl-audit/1` (stable: fields are only ever added). A control's
`status` is pass, fail, accepted, error or n/a; an accepted one carries `"accepted": {"reason", "by",
"until"}` (null otherwise) and keeps its evidence; `counts` has a key for each status."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import schoolctl
from schoolctl.releases import accepted_as_json
from schoolctl.secrets import redact

SCHEMA = "schoolctl-audit/1"


def as_data(audits: list[Any], generated: dt.datetime | None = None) -> dict[str, Any]:
    generated = generated or dt.datetime.now(dt.UTC)
    return {
        "schema": SCHEMA,
        "schoolctl_version": schoolctl.__version__,
        "generated": generated.isoformat(timespec="seconds"),
        "schools": [
            {"school": a.school, "name": a.name, "status": a.status, "error": redact(a.error) if a.error else None,
             "seconds": round(a.seconds, 2), "counts": a.counts(),
             "controls": [c.as_json() for c in a.controls],
             # accepted risks of this school whose control passes: the waiver can go
             "unused_acceptances": [{"control": u.control, **(accepted_as_json(u) or {})}
                                    for u in getattr(a, "unused", [])]}
            for a in audits
        ],
    }


def render(audits: list[Any], generated: dt.datetime | None = None) -> str:
    return redact(json.dumps(as_data(audits, generated), indent=2, ensure_ascii=False)) + "\n"
