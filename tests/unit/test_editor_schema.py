"""`schoolctl schema`: every file the loader accepts is valid under the exported JSON Schema (the
shipped schools, the fleet file, the `new` starter, the shorthands), and what the loader refuses
for its syntax (a hostile address, a service that is neither on/off nor options) the schema refuses too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from schoolctl.config import model
from tests.unit.conftest import SHIPPED, edit, run_cli

SCHOOL_FILES = sorted(p.name for p in SHIPPED.glob("*.yaml") if p.name != "fleet.yaml")


def _validator(*args: str) -> jsonschema.Draft202012Validator:
    run = run_cli("schema", *args)
    assert run.code == 0, run.stderr
    schema = json.loads(run.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _doc(path: Path) -> Any:
    """The YAML file as an editor's YAML language server sees it (dates as strings)."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8")), default=str))


def _errors(validator: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_schemas_have_an_id_and_the_dialect() -> None:
    for args, name in (((), "school-file"), (("--fleet",), "fleet-file")):
        schema = _validator(*args).schema
        assert schema["$id"] == f"urn:schoolctl:schema:{name}:1"
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_three_shipped_schools_are_there() -> None:
    assert SCHOOL_FILES == ["demo.yaml", "escola-pins.yaml", "institut-mar.yaml"]


@pytest.mark.parametrize("name", SCHOOL_FILES)
def test_every_shipped_school_file_is_valid(name: str) -> None:
    assert _errors(_validator(), _doc(SHIPPED / name)) == []


def test_the_fleet_file_is_valid() -> None:
    assert _errors(_validator("--fleet"), _doc(SHIPPED / "fleet.yaml")) == []


def test_the_new_starter_is_valid(schools: Path) -> None:
    run = run_cli("--schools-dir", "schools", "new", "escola-nova", "--name", "Escola :school: Nova")
    assert run.code == 0, run.stderr
    doc = _doc(schools / "escola-nova.yaml")
    assert doc["server"] == "lab:escola-nova"  # the string shorthand
    assert _errors(_validator(), doc) == []


def test_the_starter_fleet_of_an_empty_folder_is_valid(tmp_path: Path) -> None:
    assert run_cli("--schools-dir", str(tmp_path / "s"), "new", "escola-nova").code == 0
    assert _errors(_validator("--fleet"), _doc(tmp_path / "s" / "fleet.yaml")) == []


def test_shorthands_the_loader_accepts_are_valid_too(schools: Path) -> None:
    pins = schools / "escola-pins.yaml"
    edit(pins, "  moodle: {}\n", "  moodle: true\n  jitsi: false\n")
    edit(pins, "server: 10.20.42.10\n", "server: {address: 10.20.42.10, ssh_user: admin, ssh_port: 2222}\n")
    assert run_cli("--schools-dir", "schools", "validate", "escola-pins").code == 0  # the loader takes them
    assert _errors(_validator(), _doc(pins)) == []


def test_every_before_validator_of_the_model_declares_what_it_accepts() -> None:
    """A before-validator widens what a field accepts: each must say so for the schema
    (json_schema_input_type), or an editor would flag a file the loader accepts."""
    models = [v for v in vars(model).values()
              if isinstance(v, type) and issubclass(v, BaseModel) and v.__module__ == model.__name__]
    found = []
    for m in models:
        for name, dec in m.__pydantic_decorators__.field_validators.items():
            if dec.info.mode == "before":
                found.append((m.__name__, name, dec.info.json_schema_input_type))
    assert {(m, n) for m, n, _ in found} >= {("School", "_srv"), ("Services", "_on_jitsi"), ("BigBlueButton", "_srv")}
    assert [(m, n) for m, n, t in found if t is Any or t is PydanticUndefined] == []


@pytest.mark.parametrize("address", ["bad host;rm -rf /", "$(reboot)", "10.0.0.1 -oProxyCommand=x", "-oFoo"])
def test_a_bad_address_fails_the_schema_in_both_forms(schools: Path, address: str) -> None:
    validator = _validator()
    doc = _doc(schools / "escola-pins.yaml")
    for server in (address, {"address": address}):
        errors = _errors(validator, {**doc, "server": server})
        assert errors and all(e.startswith("server") for e in errors), errors
    # and the loader refuses it as well
    edit(schools / "escola-pins.yaml", "server: 10.20.42.10\n", f"server: {json.dumps(address)}\n")
    assert run_cli("--schools-dir", "schools", "validate", "escola-pins").code == 2


@pytest.mark.parametrize("value", ["yes please", 1, ["x"], {"max_upload_mb": 0}, {"nope": 1}])
def test_a_bad_service_value_fails_the_schema(schools: Path, value: Any) -> None:
    doc = _doc(schools / "escola-pins.yaml")
    errors = _errors(_validator(), {**doc, "services": {**doc["services"], "moodle": value}})
    assert errors and all(e.startswith("services/moodle") for e in errors), errors
