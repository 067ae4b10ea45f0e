"""The JSON Schema of a school file and of the fleet file, for editors (`schoolctl schema`).

It is generated from the one data model (config/model.py): the field descriptions are the
reference, the syntax patterns the fields declare are in it (a school's `server` address among
them), and so are the shorthands the model's before-validators accept (`server: lab:demo`,
`moodle: true`), each declared next to its validator as `json_schema_input_type`. Every file the
loader accepts is valid under it; the loader still checks more, with better messages."""

from __future__ import annotations

from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
IDS = {False: "urn:schoolctl:schema:school-file:1", True: "urn:schoolctl:schema:fleet-file:1"}
TITLES = {False: "schoolctl school file", True: "schoolctl fleet file"}


def editor_schema(fleet: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12, with `$id`) of the fleet file or of a school file."""
    from schoolctl.config.model import Fleet, School

    doc = (Fleet if fleet else School).model_json_schema()
    return {"$schema": DIALECT, "$id": IDS[fleet], **doc, "title": TITLES[fleet]}
