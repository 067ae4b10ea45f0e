"""Random documents and bytes as a school file or as the fleet file: `schoolctl validate` answers with
exit 0 or 2 and `path:line:column:` lines, never a traceback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schoolctl.config.model import Fleet, Privacy, School

from .conftest import SHIPPED, run_cli

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PROBLEM = re.compile(r"^\S+:\d+:\d+: .+$")

KEYS = sorted({*School.model_fields, *Fleet.model_fields, *Privacy.model_fields, "moodle", "nextcloud", "etherpad",
               "jitsi", "bigbluebutton", "address", "os", "pool", "cores", "version", "dpo", "email"})
# Line breaks inside keys and values are covered by test_line_breaks_stay_inside_one_problem_line.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
               max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
           | TEXT | st.sampled_from(["lab:x", "ubuntu-24.04", "demo", "5.0.6", "off", "~", "{"]))
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | TEXT | st.integers(0, 3), inner, max_size=5),
    max_leaves=20,
)


def _valid(name: str) -> dict[str, Any]:
    return yaml.safe_load((SHIPPED / name).read_text(encoding="utf-8"))


def _mutate(doc: Any, path: list[int], value: Any) -> Any:
    """`doc` with the node chosen by `path` (indexes into keys/items) replaced by `value`."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc, key=str)[path[0] % len(doc)]
        return {**doc, key: _mutate(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _mutate(doc[i], path[1:], value), *doc[i + 1:]]


@pytest.fixture
def fuzz_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A schools folder with the fleet file and one school (`demo`), as ./schools."""
    d = tmp_path / "schools"
    d.mkdir()
    shutil.copy(SHIPPED / "fleet.yaml", d / "fleet.yaml")
    shutil.copy(SHIPPED / "demo.yaml", d / "demo.yaml")
    monkeypatch.chdir(tmp_path)
    return d


def fresh(d: Path) -> None:
    """Undo the previous example's damage: the shipped fleet file and demo school again."""
    for name in ("fleet.yaml", "demo.yaml"):
        shutil.copy(SHIPPED / name, d / name)


def check() -> None:
    """The CLI answers 0 or 2, with one well-formed `path:line:column: message` line per problem."""
    run = run_cli("--schools-dir", "schools", "validate")
    assert run.code in (0, 2), run.result.exception
    assert isinstance(run.result.exception, (SystemExit, type(None))), repr(run.result.exception)
    assert "Traceback" not in run.stderr
    if run.code == 2:
        lines = run.lines
        assert lines and re.match(r"^\d+ problems? found; nothing was changed\.$", lines[-1]), lines
        assert all(PROBLEM.match(line) for line in lines[:-1]), lines


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@FUZZ
@given(DOCS)
def test_random_document_as_a_school(fuzz_dir: Path, doc: Any) -> None:
    fresh(fuzz_dir)
    (fuzz_dir / "demo.yaml").write_text(_dump(doc), encoding="utf-8")
    check()


@FUZZ
@given(DOCS)
def test_random_document_as_the_fleet(fuzz_dir: Path, doc: Any) -> None:
    fresh(fuzz_dir)
    (fuzz_dir / "fleet.yaml").write_text(_dump(doc), encoding="utf-8")
    check()


@FUZZ
@given(st.lists(st.integers(0, 50), max_size=5), DOCS)
def test_valid_school_with_one_node_replaced(fuzz_dir: Path, path: list[int], value: Any) -> None:
    fresh(fuzz_dir)
    (fuzz_dir / "demo.yaml").write_text(_dump(_mutate(_valid("institut-mar.yaml") | {"id": "demo"}, path, value)),
                                        encoding="utf-8")
    check()


@FUZZ
@given(st.lists(st.integers(0, 50), max_size=5), DOCS)
def test_valid_fleet_with_one_node_replaced(fuzz_dir: Path, path: list[int], value: Any) -> None:
    fresh(fuzz_dir)
    (fuzz_dir / "fleet.yaml").write_text(_dump(_mutate(_valid("fleet.yaml"), path, value)), encoding="utf-8")
    check()


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes(fuzz_dir: Path, data: bytes, as_fleet: bool) -> None:
    fresh(fuzz_dir)
    (fuzz_dir / ("fleet.yaml" if as_fleet else "demo.yaml")).write_bytes(data)
    check()


@FUZZ
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=4), st.booleans())
def test_valid_file_with_bytes_spliced_in(fuzz_dir: Path, at: int, junk: bytes, as_fleet: bool) -> None:
    fresh(fuzz_dir)
    p = fuzz_dir / ("fleet.yaml" if as_fleet else "demo.yaml")
    raw = p.read_bytes()
    at %= len(raw)
    p.write_bytes(raw[:at] + junk + raw[at:])
    check()


@pytest.mark.parametrize("text", [
    "a: &a [*a]\n",                                  # a list that contains itself
    "id: &i {x: *i}\n",                              # a mapping that contains itself
    "? [a, b]\n: 1\n",                               # a list as a key
    "~: 1\n",                                        # null as a key
    "id: !!binary aGVsbG8=\n",                       # a binary scalar
    "id: !custom x\n",                               # an unknown tag
    "<<: {id: demo}\n",                              # a merge key
    "id: 2024-01-01\n",                              # a date
    "\ufeffid: demo\n",                              # a byte order mark
])
def test_odd_yaml(fuzz_dir: Path, text: str) -> None:
    fresh(fuzz_dir)
    (fuzz_dir / "demo.yaml").write_text(text, encoding="utf-8")
    check()


def test_a_problem_on_line_100_is_not_an_emoji(fuzz_dir: Path) -> None:
    """Found by the fuzz test above: rich read ":100:" in "fleet.yaml:100:3" as the emoji code for 💯."""
    fresh(fuzz_dir)
    fleet = fuzz_dir / "fleet.yaml"
    fleet.write_text("#\n" * 99 + "not_a_fleet_key: 1\n" + fleet.read_text(encoding="utf-8"), encoding="utf-8")
    run = run_cli("--schools-dir", "schools", "validate")
    assert run.code == 2 and any(line.startswith("schools/fleet.yaml:100:1: ") for line in run.lines), run.lines
    check()
