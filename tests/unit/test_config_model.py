"""The config model: privacy floors (`is_laxer` against an independent table, and the loader refusing
exactly the laxer overrides), defaults and merging, and the helpers behind the error messages."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schoolctl.config.loader import PATTERNS, load
from schoolctl.config.model import (
    Artifact,
    Fleet,
    Privacy,
    PrivacyOverride,
    School,
    Server,
    Services,
    is_laxer,
)
from schoolctl.config.problems import Problem
from schoolctl.config.yamlfile import locate, read_yaml
from schoolctl.errors import ConfigError

from .conftest import SHIPPED

# Written from the privacy policy, not from the model: which value of each setting protects more.
# "lower" = the smaller number is stricter; a list = strictest first; True/False = the strict value.
STRICTER: dict[str, Any] = {
    "log_retention_days": "lower",
    "access_log": ["off", "anonymised", "full"],
    "outbound": ["deny", "allow"],
    "recordings": False,
    "recording_retention_days": "lower",
    "guests": False,
    "lobby": True,
    "learning_dashboard_retention_days": "lower",
    "leaver_grace_days": "lower",
    "require_login": True,
    "search_indexing": False,
    "data_retention_days": "lower",
}


def oracle_laxer(field: str, value: Any, floor: Any) -> bool:
    rule = STRICTER[field]
    if rule == "lower":
        return value > floor
    if isinstance(rule, bool):
        return value != rule and floor == rule
    return rule.index(value) > rule.index(floor)


def values_of(field: str) -> st.SearchStrategy[Any]:
    """Valid values of a privacy field, within its model bounds."""
    info = Privacy.model_fields[field]
    rule = STRICTER[field]
    if rule == "lower":
        bounds = {type(m).__name__: m for m in info.metadata}
        lo = bounds["Ge"].ge
        hi = bounds["Le"].le
        return st.integers(lo, hi)
    if isinstance(rule, bool):
        return st.booleans()
    return st.sampled_from(rule)


def privacy_dicts(min_size: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    return st.sets(st.sampled_from(sorted(STRICTER)), min_size=min_size).flatmap(
        lambda names: st.fixed_dictionaries({n: values_of(n) for n in sorted(names)}))


# --- privacy: metadata and is_laxer ------------------------------------------------------------

def test_every_privacy_field_says_which_way_is_stricter() -> None:
    assert set(Privacy.model_fields) == set(STRICTER)
    for name, info in Privacy.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict), name
        rule = STRICTER[name]
        if rule == "lower":
            assert extra["stricter"] == "lower", name
        elif isinstance(rule, bool):
            assert extra["stricter"] == str(rule).lower(), name
        else:
            assert (extra["stricter"], extra["order"]) == ("order", rule), name


def test_fleet_defaults_are_the_strict_end_where_it_matters() -> None:
    p = Privacy()
    assert (p.outbound, p.recordings, p.guests, p.lobby, p.require_login, p.search_indexing) == \
        ("deny", False, False, True, True, False)


@given(st.sampled_from(sorted(STRICTER)).flatmap(lambda f: st.tuples(st.just(f), values_of(f), values_of(f))))
def test_is_laxer_agrees_with_the_policy(case: tuple[str, Any, Any]) -> None:
    field, value, floor = case
    assert is_laxer(field, value, floor) == oracle_laxer(field, value, floor)
    assert not is_laxer(field, floor, floor)
    assert not (is_laxer(field, value, floor) and is_laxer(field, floor, value))
    if value != floor:
        assert is_laxer(field, value, floor) or is_laxer(field, floor, value)


@pytest.fixture
def floor_dir(tmp_path: Path) -> Path:
    """A schools folder with the shipped fleet file and one school, `s1`, without privacy settings."""
    d = tmp_path / "floors"
    d.mkdir()
    shutil.copy(SHIPPED / "fleet.yaml", d / "fleet.yaml")
    return d


def _write_school(d: Path, privacy: dict[str, Any]) -> None:
    doc = {"id": "s1", "name": "S1", "district": "D", "server": "10.0.0.1", "services": {"moodle": {}},
           "contacts": {"dpo": {"name": "DPO", "email": "dpo@example.org"}}, "privacy": privacy}
    (d / "s1.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


def _write_fleet_privacy(d: Path, floors: dict[str, Any]) -> None:
    doc = yaml.safe_load((SHIPPED / "fleet.yaml").read_text(encoding="utf-8"))
    doc["privacy"] = floors
    (d / "fleet.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(floors=privacy_dicts(), override=privacy_dicts(min_size=1))
def test_loader_refuses_exactly_the_laxer_overrides(floor_dir: Path, floors: dict[str, Any],
                                                    override: dict[str, Any]) -> None:
    _write_fleet_privacy(floor_dir, floors)
    _write_school(floor_dir, override)
    effective_floors = Privacy(**floors)
    laxer = {f for f, v in override.items() if oracle_laxer(f, v, getattr(effective_floors, f))}
    try:
        config = load(floor_dir)
    except ConfigError as e:
        refused = {p.message.split(":")[0].removeprefix("privacy.") for p in e.problems}
        assert refused == laxer, [str(p) for p in e.problems]
        for p in e.problems:
            where = "schoolctl's built-in default" if p.message.split(":")[0][8:] not in floors else "fleet.yaml:"
            assert where in p.message
        return
    assert not laxer
    merged = config.schools["s1"].privacy
    assert merged == Privacy(**{**floors, **override})


def test_privacy_override_mirrors_privacy() -> None:
    assert set(PrivacyOverride.model_fields) == set(Privacy.model_fields)
    assert all(v is None for v in PrivacyOverride().model_dump().values())
    with pytest.raises(ValidationError):
        PrivacyOverride(log_retention_days=0)
    with pytest.raises(ValidationError):
        PrivacyOverride(access_log="partial")
    with pytest.raises(ValidationError):
        PrivacyOverride(no_such_setting=1)


# --- the model's parts -------------------------------------------------------------------------

def test_services_on_and_off() -> None:
    s = Services.model_validate({"moodle": True, "nextcloud": False, "jitsi": {}, "etherpad": None})
    assert s.enabled() == ["moodle", "jitsi"]
    assert s.moodle is not None and s.moodle.max_upload_mb == 100
    assert s.nextcloud is None


def test_server_from_a_string_or_a_mapping() -> None:
    school = _school(server="lab:demo")
    assert school.server == Server(address="lab:demo")
    assert school.server.lab_name == "demo"
    assert Server(address="10.0.0.1").lab_name is None
    with pytest.raises(ValidationError, match="expected a host name"):
        Server(address="bad host!")


def test_artifact_urls() -> None:
    a = Artifact(version="4.5.8", url="https://x.example/stable{branch}/{file}", file="moodle-{version}.tgz")
    assert a.url_for("4.5.8") == "https://x.example/stable405/moodle-4.5.8.tgz"
    assert a.url_for("5.0.6") == "https://x.example/stable500/moodle-5.0.6.tgz"


def _school(**changes: Any) -> School:
    doc: dict[str, Any] = {"id": "s1", "name": "S1", "district": "D", "server": "10.0.0.1",
                           "services": {"moodle": {}}, "contacts": {"dpo": {"name": "DPO", "email": "d@example.org"}}}
    return School.model_validate({**doc, **changes})


def test_the_effective_school_merges_the_fleet() -> None:
    config = load(SHIPPED)
    fleet = config.fleet
    demo = config.schools["demo"]
    assert demo.domain == f"demo.{fleet.domain}"
    assert demo.privacy.log_retention_days == 7
    assert demo.privacy.model_dump(exclude={"log_retention_days"}) == \
        fleet.privacy.model_dump(exclude={"log_retention_days"})
    assert demo.versions["moodle"] == "5.0.6"
    assert demo.languages == fleet.languages
    assert demo.ldap_base == f"dc=demo,{fleet.identity.base_dn}"
    pins = config.schools["escola-pins"]
    assert pins.languages == ["ca", "es"]
    assert pins.versions == {n: getattr(fleet.artifacts, n).version for n in ("moodle", "nextcloud", "etherpad")}
    mar = config.schools["institut-mar"]
    assert mar.domain == "institutmar.escoles.bcn.example"
    assert [a.name for a in mar.admins] == [*(a.name for a in fleet.admins), "marta"]
    assert mar.has("bigbluebutton") and not pins.has("jitsi")


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Privacy().lobby = False  # type: ignore[misc]


def test_every_pattern_has_a_human_description() -> None:
    """A pattern error shows a description from loader.PATTERNS; a raw regular expression is no help."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(School.model_json_schema())
    walk(Fleet.model_json_schema())
    assert sorted(found - set(PATTERNS)) == []


# --- problems and YAML positions -----------------------------------------------------------------

def test_problem_text() -> None:
    assert str(Problem("a.yaml", 3, 5, "bad", "fix it")) == "a.yaml:3:5: bad (fix it)"
    assert str(Problem("a.yaml", 3, 5, "bad")) == "a.yaml:3:5: bad"


def test_config_error_sorts_and_deduplicates() -> None:
    b = Problem("b.yaml", 1, 1, "x")
    a2 = Problem("a.yaml", 2, 1, "y")
    a10 = Problem("a.yaml", 10, 1, "z")
    e = ConfigError([b, a10, a2, b])
    assert e.problems == [a2, a10, b]
    assert str(e) == "a.yaml:2:1: y\na.yaml:10:1: z\nb.yaml:1:1: x"


def test_locate(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("a: 1\nb:\n  c: [x, y]\n  d:\n    - e: 2\n", encoding="utf-8")
    doc, problems = read_yaml(p, "x.yaml")
    assert problems == []
    assert locate(doc, ("a",)) == (1, 4)
    assert locate(doc, ("a",), on_key=True) == (1, 1)
    assert locate(doc, ("b", "c", 1)) == (3, 10)
    assert locate(doc, ("b", "d", 0, "e")) == (5, 10)
    assert locate(doc, ("b", "nope")) == (2, 1)
    assert locate(doc, ("zzz",)) == (1, 1)
    assert locate(None, ("a",)) == (1, 1)


@given(st.from_regex(r"[a-z0-9-]{1,24}", fullmatch=True))
def test_lab_addresses_agree_with_the_lab(name: str) -> None:
    """`server: lab:NAME` validates exactly when `schoolctl lab up NAME` accepts NAME."""
    from schoolctl.errors import LabError
    from schoolctl.lab.names import validate_name

    try:
        validate_name(name)
        lab_ok = True
    except LabError:
        lab_ok = False
    try:
        Server(address=f"lab:{name}")
        model_ok = True
    except ValidationError:
        model_ok = False
    assert model_ok == lab_ok


def test_hints_name_a_few_schools_of_a_large_fleet() -> None:
    from schoolctl.config.problems import few

    assert few([]) == "none" and few(["a", "b"]) == "a, b"
    assert few([f"s{i:03}" for i in range(300)]) == "s000, s001, s002, s003, s004, s005, s006, s007 and 292 more"
