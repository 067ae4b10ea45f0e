"""Hostile input files are refused at once, in bounded time and memory: YAML alias bombs, huge or deeply
nested documents, FIFOs and devices as a school file or a roster, huge rosters; names that a spreadsheet
would run as formulas reach the secretary's CSV inert; `schoolctl new` quotes what it writes."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
import yaml

from schoolctl.cli.users import directory as directory_mod
from schoolctl.cli.users import roster as roster_mod
from schoolctl.cli.users.directory import Directory, Plan, diff, inert_cell, passwords_csv
from schoolctl.cli.users.roster import MAX_ROSTER_BYTES, MAX_ROWS, Person, parse_roster, read_roster
from schoolctl.config import yamlfile
from schoolctl.config.loader import FLEET_MAX_BYTES, SCHOOL_MAX_BYTES
from schoolctl.config.yamlfile import MAX_DEPTH, MAX_NODES, read_yaml
from schoolctl.errors import RosterError

from .conftest import Run, run_cli, summary

HEADER = "given_name,family_name,role,group,email\n"
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@contextmanager
def fifo_watch(fifo: Path) -> Iterator[list[bool]]:
    """Unblock whoever opens `fifo` for reading (the bug: a read that would wait forever) by opening
    and closing its other end, so that a regression fails instead of hanging. Yields a flag list:
    `[True]` when somebody did open it for reading."""
    opened: list[bool] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.wait(0.02):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:   # ENXIO: nobody reads it
                continue
            os.close(fd)
            opened.append(True)
            return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        stop.set()
        thread.join(5)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    assert took < seconds, f"took {took:.1f}s"


def validate(*ids: str) -> Run:
    return run_cli("--schools-dir", "schools", "validate", *ids)


def problem_lines(run: Run) -> list[str]:
    assert run.code == 2, run.stdout + run.stderr
    assert run.lines[-1] == summary(len(run.lines) - 1)
    return run.lines[:-1]


# --- 1. alias bombs --------------------------------------------------------------------------------

def test_billion_laughs_is_refused_at_the_first_alias_past_the_budget(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text(BOMB, encoding="utf-8")
    with within(10):
        doc, problems = read_yaml(p, "x.yaml")
    if doc is not None:   # (never let pytest print the document: a billion values)
        pytest.fail("the bomb was read")
    # values so far: 1 (root) + 11 (a) + 92 (b) + 821 (c) + 7382 (d) + 2 (e and its list) = 8309; then *d (7381)
    assert [str(x) for x in problems] == [
        f"x.yaml:5:8: the alias *d would expand the document past {MAX_NODES} values (it stands for 7381) "
        "(YAML aliases may repeat a few values, not multiply the file; write the values out)"]


def test_an_alias_bomb_as_a_school_file(schools: Path) -> None:
    # six levels (531441 values) still finish without the limit, slowly; nine never do
    (schools / "demo.yaml").write_text("\n".join(BOMB.splitlines()[:6]) + "\nid: demo\n", encoding="utf-8")
    with within(10):
        lines = problem_lines(validate())
    assert lines == [f"schools/demo.yaml:5:8: the alias *d would expand the document past {MAX_NODES} values (it "
                     "stands for 7381) (YAML aliases may repeat a few values, not multiply the file; write the "
                     "values out)"]


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("a: 1\nb: &b [1, {c: *b}]\n", encoding="utf-8")
    _, problems = read_yaml(p, "x.yaml")
    assert [str(x) for x in problems] == [
        "x.yaml:2:15: the alias *b stands for a value that contains the alias itself (an alias may only repeat "
        "a value that is complete before it)"]


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("a: &a {x: 1, y: [1, 2]}\nb: *a\nc:\n  <<: *a\n  z: 3\n", encoding="utf-8")
    doc, problems = read_yaml(p, "x.yaml")
    assert problems == []
    assert yamlfile.plain(doc) == {"a": {"x": 1, "y": [1, 2]}, "b": {"x": 1, "y": [1, 2]},
                                   "c": {"x": 1, "y": [1, 2], "z": 3}}


# --- 2. size, depth, number of values ---------------------------------------------------------------

def test_a_huge_school_file_is_refused_before_it_is_read(schools: Path) -> None:
    p = schools / "demo.yaml"
    with p.open("r+b") as f:
        f.truncate(50 * 1024 * 1024)           # sparse: 50 MB that cost nothing to make
    with within(10):
        lines = problem_lines(validate())
    assert lines == [f"schools/demo.yaml:1:1: the file is too large: {50 * 1024 * 1024} bytes, more than the "
                     f"{SCHOOL_MAX_BYTES} bytes ({SCHOOL_MAX_BYTES // 2**20} MiB) a school file may have (a config "
                     "file is a few hundred lines; is this the right file?)"]


def test_a_huge_fleet_file_is_refused_before_it_is_read(schools: Path) -> None:
    p = schools / "fleet.yaml"
    with p.open("r+b") as f:
        f.truncate(FLEET_MAX_BYTES + 1)
    with within(10):
        lines = problem_lines(validate())
    assert lines == [f"schools/fleet.yaml:1:1: the file is too large: {FLEET_MAX_BYTES + 1} bytes, more than the "
                     f"{FLEET_MAX_BYTES} bytes ({FLEET_MAX_BYTES // 2**20} MiB) the fleet file may have (a config "
                     "file is a few hundred lines; is this the right file?)"]


def test_a_school_file_of_exactly_the_limit_is_read(schools: Path) -> None:
    p = schools / "demo.yaml"
    text = p.read_text(encoding="utf-8").rstrip("\n")
    pad = SCHOOL_MAX_BYTES - len(text.encode()) - 1
    p.write_text(text + " " * pad + "\n", encoding="utf-8")
    assert p.stat().st_size == SCHOOL_MAX_BYTES
    with within(15):
        run = validate()
    assert (run.code, run.stderr) == (0, "")


def test_a_file_that_grows_after_the_check_is_cut_at_the_limit(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "x.yaml"
    p.write_bytes(b"a: 1\n" + b"#" * 100)
    monkeypatch.setattr(yamlfile, "_check_stat", lambda st, path, limit: None)   # as if it had 10 bytes then
    doc, problems = read_yaml(p, "x.yaml", max_bytes=50)
    assert doc is None
    assert [str(x) for x in problems] == [
        "x.yaml:1:1: the file is too large: more than the 50 bytes a config file may have "
        "(a config file is a few hundred lines; is this the right file?)"]


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500])
def test_deep_nesting_is_refused(tmp_path: Path, levels: int) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("a: " + "[" * levels + "]" * levels + "\n", encoding="utf-8")
    with within(10):
        _, problems = read_yaml(p, "x.yaml")
    # the root mapping is level 1, so the 50th '[' is level 51
    assert [str(x) for x in problems] == [
        f"x.yaml:1:{3 + MAX_DEPTH}: the document nests deeper than {MAX_DEPTH} levels "
        "(a config file needs fewer than ten; check the indentation and the brackets)"]


def test_nesting_through_an_alias_counts(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    half = MAX_DEPTH // 2 + 1
    p.write_text(f"a: &a {'[' * half}{']' * half}\nb: {'[' * half}*a{']' * half}\n", encoding="utf-8")
    _, problems = read_yaml(p, "x.yaml")
    assert [str(x) for x in problems] == [
        f"x.yaml:2:{4 + half}: the document nests deeper than {MAX_DEPTH} levels through the alias *a "
        "(a config file needs fewer than ten; check the indentation and the brackets)"]


def test_nesting_to_the_limit_is_read(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    n = MAX_DEPTH - 1
    p.write_text("a: " + "[" * n + "]" * n + "\n", encoding="utf-8")
    _, problems = read_yaml(p, "x.yaml")
    assert problems == []


def test_too_many_values_are_refused(schools: Path) -> None:
    # one item per line: root (1), key x (2), the list (3), items from 4: value number MAX_NODES + 1 is
    # item MAX_NODES - 3 (from 0), on line MAX_NODES - 1
    (schools / "demo.yaml").write_text("x:\n" + "- 0\n" * (MAX_NODES + 1000), encoding="utf-8")
    with within(12):
        lines = problem_lines(validate())
    assert lines == [f"schools/demo.yaml:{MAX_NODES - 1}:3: the document has more than {MAX_NODES} values (keys, "
                     "values and list items) (a config file has a few hundred; is this the right file?)"]


def test_many_keys_are_refused_quickly(schools: Path) -> None:
    """200000 keys took 115 s: a file of them is over the size limit (tested above), and fewer keys
    under it are refused by their number as soon as they pass it."""
    n = MAX_NODES // 2 + 1   # root + n keys + n values: the value of the key before the last is one too many
    (schools / "demo.yaml").write_text("".join(f"k{i}: 1\n" for i in range(n)), encoding="utf-8")
    with within(10):
        lines = problem_lines(validate())
    col = len(f"k{n - 2}: ") + 1
    assert lines == [f"schools/demo.yaml:{n - 1}:{col}: the document has more than {MAX_NODES} values (keys, values "
                     "and list items) (a config file has a few hundred; is this the right file?)"]


# --- 3. FIFOs, devices, directories -----------------------------------------------------------------

def test_a_fifo_as_a_school_file_is_refused_without_opening_it(schools: Path) -> None:
    fifo = schools / "pipe.yaml"
    os.mkfifo(fifo)
    with fifo_watch(fifo) as opened, within(10):
        lines = problem_lines(validate())
    assert lines == ["schools/pipe.yaml:1:1: cannot read the file: it is a named pipe (FIFO), not a regular file "
                     "(a config file must be a plain file; replace it with one)"]
    assert not opened


def test_a_device_as_a_school_file_is_refused(schools: Path) -> None:
    (schools / "null.yaml").symlink_to("/dev/null")
    lines = problem_lines(validate())
    assert lines == ["schools/null.yaml:1:1: cannot read the file: it is a character device, not a regular file "
                     "(a config file must be a plain file; replace it with one)"]


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: the path is a regular file when checked, a FIFO when opened. It is opened without
    waiting for a writer, and what was opened is checked again."""
    fifo = tmp_path / "x.yaml"
    os.mkfifo(fifo)
    monkeypatch.setattr(yamlfile, "_check_path", lambda path, limit: None)
    with fifo_watch(fifo), within(10):
        _, problems = read_yaml(fifo, "x.yaml")
    assert [str(x) for x in problems] == [
        "x.yaml:1:1: cannot read the file: it is a named pipe (FIFO), not a regular file "
        "(a config file must be a plain file; replace it with one)"]


def test_a_directory_keeps_its_message(schools: Path) -> None:
    (schools / "x.yaml").mkdir()
    assert problem_lines(validate()) == ["schools/x.yaml:1:1: cannot read the file: Is a directory "
                                         "(check that it exists and is readable)"]


# --- 4. rosters --------------------------------------------------------------------------------------

def test_a_fifo_as_a_roster_is_refused_without_opening_it(schools: Path) -> None:
    fifo = schools.parent / "roster.csv"
    os.mkfifo(fifo)
    with fifo_watch(fifo) as opened, within(10):
        run = run_cli("--schools-dir", "schools", "users", "import", "demo", "roster.csv", "--dry-run")
    assert run.code == 2
    assert run.lines == ["roster.csv:1: cannot read the roster: it is a named pipe (FIFO), not a regular file; "
                         "export the roster to a CSV file and name that file", "1 problem found; nothing was "
                         "imported."]
    assert not opened


def test_a_device_as_a_roster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RosterError) as e:
        read_roster(Path("/dev/null"))
    assert e.value.problems == ["/dev/null:1: cannot read the roster: it is a character device, not a regular "
                                "file; export the roster to a CSV file and name that file"]


def test_a_huge_roster_is_refused_before_it_is_read(tmp_path: Path) -> None:
    p = tmp_path / "big.csv"
    with p.open("wb") as f:
        f.truncate(64 * 2**20)
    with within(10), pytest.raises(RosterError) as e:
        read_roster(p)
    assert e.value.problems == [f"{p}:1: the roster is too large: {64 * 2**20} bytes, more than the "
                                f"{MAX_ROSTER_BYTES} bytes ({MAX_ROSTER_BYTES // 2**20} MiB) a roster may have; it "
                                "has one line per person"]


def test_a_huge_roster_is_refused_by_the_parser_too() -> None:
    data = (HEADER + "Marta,Puig,teacher,,\n").encode() + b" " * MAX_ROSTER_BYTES
    with within(10), pytest.raises(RosterError) as e:
        parse_roster(data, "r.csv")
    assert e.value.problems == [f"r.csv:1: the roster is too large: {len(data)} bytes, more than the "
                                f"{MAX_ROSTER_BYTES} bytes ({MAX_ROSTER_BYTES // 2**20} MiB) a roster may have; "
                                "it has one line per person"]


def test_too_many_rows_are_refused_before_any_is_checked() -> None:
    rows = "".join(f"P{i},Q{i},student,1A,\n" for i in range(MAX_ROWS + 1))
    with within(10), pytest.raises(RosterError) as e:
        parse_roster((HEADER + rows).encode(), "r.csv")
    assert e.value.problems == [f"r.csv:{MAX_ROWS + 2}: more than {MAX_ROWS} rows; a roster has one row per person "
                                "of one school (is this the right file?)"]


def test_a_roster_of_the_largest_size_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roster_mod, "MAX_ROWS", 50)
    rows = "".join(f"P{i},Q{i},student,1A,\n" for i in range(50))
    assert len(parse_roster((HEADER + rows).encode(), "r.csv")[0]) == 50
    with pytest.raises(RosterError) as e:
        parse_roster((HEADER + rows + "P,Q,student,1A,\n").encode(), "r.csv")
    assert e.value.problems == ["r.csv:52: more than 50 rows; a roster has one row per person of one school (is "
                                "this the right file?)"]


def test_uids_for_many_people_of_one_name_are_chosen_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """`marta.puig`, `marta.puig2`, ... was a scan from 2 for every person: 20000 took 158 s."""
    lookups = [0]

    class Counted:
        def __init__(self, taken: set[str]) -> None:
            self.taken = taken

        def __contains__(self, uid: object) -> bool:
            lookups[0] += 1
            return uid in self.taken

    real = directory_mod.make_uid
    monkeypatch.setattr(directory_mod, "make_uid", lambda g, f, taken, *rest: real(g, f, Counted(taken), *rest))
    n = 1000
    plan = diff([Person("Marta", f"Puig {i}", "student", "1A") for i in range(n)], Directory("dc=s"),
                date(2026, 9, 1), 30)
    uids = [uid for uid, _ in plan.add]
    assert uids[:3] == ["marta.puig", "marta.puig2", "marta.puig3"] and uids[-1] == f"marta.puig{n}"
    assert len(set(uids)) == n
    assert lookups[0] < 3 * n          # it was n * n / 2


def test_make_uid_still_fills_from_what_is_taken() -> None:
    assert roster_mod.make_uid("Marta", "Puig", {"marta.puig", "marta.puig3"}) == "marta.puig2"


FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "＝1+1", "＋1", "－1", "＠A1"]
ORDINARY = ["Núria", "D'Angelo", "Pérez-Gil", "Marta Puig", "O'Brien-Smith", "Ångström"]


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_formulas_reach_the_passwords_csv_inert() -> None:
    plan = Plan("dc=s", add=[(f"u{i}", Person(f, "Puig", "student", "1A", f"{f[0]}a@escola.example"))
                             for i, f in enumerate(FORMULAS)])
    rows = _cells(passwords_csv(plan, {uid: "Secret234" for uid, _ in plan.add}))
    assert rows[0] == ["uid", "given_name", "family_name", "role", "group", "email", "initial_password"]
    assert [(r[1], r[5]) for r in rows[1:]] == [(f"'{f}", f"'{f[0]}a@escola.example") for f in FORMULAS]
    assert all(r[6] == "Secret234" for r in rows[1:])
    # a carriage return cannot come from a roster (control characters are refused) nor survive a CSV
    # written with "\n" line ends, but the cell is made inert all the same
    assert [inert_cell(c) for c in ["\r=1", "\n=1", "=1", "'=1", "a=1", "", "Núria"]] == [
        "'\r=1", "'\n=1", "'=1", "'=1", "a=1", "", "Núria"]


def test_a_formula_from_the_roster_is_inert_and_ordinary_names_unchanged() -> None:
    roster = HEADER + '"=HYPERLINK(""http://x"",""click"")",Puig,teacher,,=1@escola.example\n' + "".join(
        f"{n},{n},student,1A,\n" for n in ORDINARY)
    found, _ = parse_roster(roster.encode(), "r.csv")
    plan = diff(found, Directory("dc=s"), date(2026, 9, 1), 30)
    rows = _cells(passwords_csv(plan, {uid: "Secret234" for uid, _ in plan.add}))
    assert rows[1][1:3] + rows[1][5:6] == ["'=HYPERLINK(\"http://x\",\"click\")", "Puig", "'=1@escola.example"]
    assert [r[1:3] for r in rows[2:]] == [[n, n] for n in ORDINARY]


# --- 5. `schoolctl new` quotes what it writes --------------------------------------------------------

@pytest.mark.parametrize(("name", "district"), [
    ("Escola: #1 d'Horta", "Sant Martí: #2"),
    ('Escola "La Llum" \\ 3', "- Gràcia"),
    ("null", "123"),
    ("{a: 1} [b] &c *d !e %f @g |h >i", "yes"),
    ("Institut " + "Molt " * 30 + "Llarg", "Ciutat Vella"),
])
def test_new_quotes_name_and_district(schools: Path, name: str, district: str) -> None:
    env = {"SCHOOLCTL_SCHOOLS_DIR": str(schools)}
    run = run_cli("new", "escola-horta", "--name", name, "--district", district, env=env)
    assert (run.code, run.stderr) == (0, "")
    doc = yaml.safe_load((schools / "escola-horta.yaml").read_text(encoding="utf-8"))
    assert (doc["id"], doc["name"], doc["district"]) == ("escola-horta", name, district)
    assert run_cli("validate", "escola-horta", env=env).code == 0
    listed = {r["id"]: r for r in json.loads(run_cli("list", "--json", env=env).stdout)["schools"]}
    assert (listed["escola-horta"]["name"], listed["escola-horta"]["district"]) == (name, district)
