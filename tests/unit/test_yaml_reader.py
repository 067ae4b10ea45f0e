"""The YAML reader of the config files (schoolctl.config.yamlfile): YAML 1.2's core schema read by
libyaml, every value with where it stands, and plain refusals naming the line for what a config
file never needs (tags, lists as keys, repeated keys, control characters)."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import pytest

from schoolctl.config.yamlfile import locate, plain, read_yaml


def read(tmp_path: Path, text: str) -> tuple[object, list[str]]:
    p = tmp_path / "x.yaml"
    p.write_text(text, encoding="utf-8")
    doc, problems = read_yaml(p, "x.yaml")
    return (plain(doc) if not problems else None), [str(x) for x in problems]


@pytest.mark.parametrize(("text", "value"), [
    ("yes", "yes"), ("on", "on"), ("No", "No"),            # words in YAML 1.2 (Norway's code stays 'NO')
    ("true", True), ("FALSE", False), ("~", None), ("", None), ("null", None),
    ("0755", 755), ("0o17", 15), ("0x1F", 31), ("0b101", 5), ("1_000", 1000), ("-12", -12), ("+3", 3),
    ("1.5", 1.5), (".5", 0.5), ("1e3", 1000.0), ("-.inf", -math.inf),
    ("5.0.6", "5.0.6"), ("1:20", "1:20"), ("'5'", "5"), ('!!str 5', "5"), ('!!int "5"', 5),
    ("2026-12-31", datetime.date(2026, 12, 31)), ("<<", "<<"),
])
def test_scalars_are_read_as_yaml_1_2_says(tmp_path: Path, text: str, value: object) -> None:
    doc, problems = read(tmp_path, f"k: {text}\n")
    assert problems == [] and doc == {"k": value} and type(doc["k"]) is type(value)  # type: ignore[index]


def test_nan_is_a_float(tmp_path: Path) -> None:
    doc, _ = read(tmp_path, "k: .nan\n")
    assert math.isnan(doc["k"])  # type: ignore[index]


@pytest.mark.parametrize(("text", "problem"), [
    ("a: 1\nb: !!binary aGVsbG8=\n", "x.yaml:2:4: the YAML tag tag:yaml.org,2002:binary is not used here"),
    ("a: !custom x\n", "x.yaml:1:4: the YAML tag !custom is not used here"),
    ("a: !!python/object:os.system {}\n", "x.yaml:1:4: the YAML tag tag:yaml.org,2002:python/object:os.system"),
    ("a: !!int ten\n", "x.yaml:1:4: 'ten' is not a valid number (quote the value to keep it as text)"),
    ("until: 2027-02-30\n", "x.yaml:1:8: '2027-02-30' is not a valid date (YYYY-MM-DD) (write the date as"),
    ("? [a, b]\n: 1\n", "x.yaml:1:3: a key must be a single value, not a list or a mapping"),
    ("a: 1\nb:\n  c: 2\n  c: 3\n", "x.yaml:4:3: duplicate key 'c'"),
    ("a: 1\n<<: 5\n", "x.yaml:2:1: a merge key (<<) takes a mapping or a list of mappings"),
    ("a: 1\nb: x\x01\n", "x.yaml:2:5: the file contains a character YAML does not allow (#x0001)"),
])
def test_what_a_config_file_never_needs_is_refused_at_its_line(tmp_path: Path, text: str, problem: str) -> None:
    _, problems = read(tmp_path, text)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_an_anchor_set_again_means_the_new_value(tmp_path: Path) -> None:
    doc, problems = read(tmp_path, "a: &x 1\nb: *x\nc: &x 2\nd: *x\n")
    assert problems == [] and doc == {"a": 1, "b": 1, "c": 2, "d": 2}


def test_merges_keep_the_explicit_keys_and_the_first_source(tmp_path: Path) -> None:
    doc, problems = read(tmp_path, "p: &p {x: 1, y: 1}\nq: &q {y: 2, z: 2}\nr:\n  <<: [*p, *q]\n  x: 0\n")
    assert problems == [] and doc["r"] == {"x": 0, "y": 1, "z": 2}  # type: ignore[index]


def test_every_key_and_value_knows_its_line(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("id: demo\nservices:\n  moodle:\n    version: '5.0'\nlanguages: [ca, es]\n", encoding="utf-8")
    doc, _ = read_yaml(p, "x.yaml")
    assert locate(doc, ("id",)) == (1, 5) and locate(doc, ("id",), on_key=True) == (1, 1)
    assert locate(doc, ("services", "moodle", "version")) == (4, 14)
    assert locate(doc, ("services", "moodle")) == (3, 3)          # a mapping: where its key is
    assert locate(doc, ("languages", 1)) == (5, 17)
    assert locate(doc, ("services", "nextcloud", "version")) == (2, 1)   # not there: the nearest enclosing
