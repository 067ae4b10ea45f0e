"""The result cache of `validate` and `list` (schoolctl.config.result_cache): a hit prints, byte for
byte, what the recorded run printed, with its exit status, without importing typer or pydantic;
and any change that could change the result (a file read, a folder listed, the code, a setting,
the terminal, the day) is a miss that validates afresh.

The commands run as the user runs them, `schoolctl` in a child process, on a private copy of
schoolctl laid out as a wheel installs it (first on PYTHONPATH): the code's fingerprint changes
only when a test touches the copy, not when someone edits the checkout meanwhile. A miss is told
from a hit by poisoning: the entry's recorded output is replaced by a marker, which a hit prints
and a miss does not."""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schoolctl.cli.main import app, cached_verb
from schoolctl.config import result_cache

from .conftest import REPO, edit, run_cli

SCHOOLCTL = Path(sys.executable).with_name("schoolctl")
POISON = "POISON: the recorded output\n"
FOLDERS = {"core": "", "cli": "cli", "audit": "audit", "deploy": "deploy", "inventories": "inventories",
           "templates": "templates"}


@dataclass(frozen=True)
class Out:
    code: int
    stdout: bytes
    stderr: bytes


@pytest.fixture(scope="session")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """schoolctl's code copied as one schoolctl/ folder (as in a wheel), compiled: a folder for PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    for folder, sub in FOLDERS.items():
        shutil.copytree(REPO / folder, site / "schoolctl" / sub, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    assert compileall.compile_dir(site, quiet=1)
    return site


@dataclass
class Cache:
    """The cache folder, the work folder (schools/ inside) and the environment of the runs."""

    folder: Path
    work: Path
    code: Path
    env: dict[str, str]

    def run(self, *args: str, merged: bool = False, **env: str | None) -> Out:
        """`schoolctl ARGS` in a child, with `env` changed (None: unset); `merged`: stderr into stdout."""
        full = {**self.env, **env}
        proc = subprocess.run([str(SCHOOLCTL), *args], cwd=self.work, capture_output=not merged, timeout=120,
                              stdout=subprocess.PIPE if merged else None,
                              stderr=subprocess.STDOUT if merged else None,
                              env={k: v for k, v in full.items() if v is not None}, check=False)
        return Out(proc.returncode, proc.stdout, proc.stderr or b"")

    def fresh(self, *args: str, **env: str | None) -> Out:
        """The same run without the cache: what a miss must print."""
        return self.run(*args, **{**env, "SCHOOLCTL_CACHE_DIR": "off"})

    def entries(self) -> dict[str, tuple[int, int]]:
        """Each entry's (inode, mtime_ns): a stored entry is a new file (os.replace)."""
        if not self.folder.is_dir():
            return {}
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in self.folder.glob("*.json")}

    def rewrite(self, change: Callable[[dict], None]) -> None:
        """Change every entry in place (its mode stays 0600)."""
        for path in self.folder.glob("*.json"):
            entry = json.loads(path.read_text(encoding="utf-8"))
            change(entry)
            path.write_text(json.dumps(entry), encoding="utf-8")

    def poison(self) -> None:
        self.rewrite(lambda e: e.update(output=[[1, POISON]]))


@pytest.fixture
def cache(schools: Path, tmp_path: Path, code: Path) -> Cache:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "LINES", "PYTHONPATH")}
    env.update(SCHOOLCTL_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(code), COLUMNS="120")
    return Cache(tmp_path / "cache", schools.parent, code, env)


def _same_name(path: Path, old: str, new: str) -> None:
    """Replace `old` by `new` (as long) in the file and keep its mtime: only its content tells."""
    assert len(old.encode()) == len(new.encode())
    before = path.stat()
    edit(path, old, new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


# --- a hit is the run ----------------------------------------------------------------------------

COMMANDS = [("validate",), ("--schools-dir", "schools", "validate", "demo"), ("list",), ("list", "--json"),
            ("list", "--limit", "district=sant-marti")]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_hit_prints_the_same_bytes_and_exit_status(cache: Cache, args: tuple[str, ...]) -> None:
    fresh = cache.fresh(*args)
    assert fresh.code == 0 and fresh.stdout, fresh.stderr
    assert cache.run(*args) == fresh  # the miss, recorded
    stored = cache.entries()
    assert len(stored) == 1
    assert cache.run(*args) == fresh  # the hit
    assert cache.entries() == stored  # not stored again: it was a hit
    cache.poison()
    assert cache.run(*args).stdout == POISON.encode()  # (the hit replays the entry)


def test_a_hit_from_the_checkout_itself(cache: Cache) -> None:
    """The same with schoolctl as installed here (editable: one folder per package)."""
    checkout = {**cache.env, "PYTHONPATH": None}
    before = result_cache.code_fingerprint()
    fresh = cache.fresh("validate", "demo", **checkout)
    assert cache.run("validate", "demo", **checkout) == fresh
    stored = cache.entries()
    assert cache.run("validate", "demo", **checkout) == fresh
    if result_cache.code_fingerprint() == before:  # (unless someone edited the checkout meanwhile)
        assert cache.entries() == stored


def test_warnings_and_the_result_come_in_the_order_they_were_printed(cache: Cache, schools: Path) -> None:
    """`validate 2>&1`: the warnings (stderr) before the summary (stdout), on a hit as on the run."""
    edit(schools / "fleet.yaml", "until: 2027-03-31", "until: 2025-03-31", count=3)
    fresh = cache.fresh("validate")
    assert fresh.code == 0 and b"expired on 2025-03-31" in fresh.stderr and fresh.stdout.startswith(b"ok: ")
    merged = cache.run("validate", merged=True, SCHOOLCTL_CACHE_DIR="off").stdout
    assert merged.index(b"expired on") < merged.index(b"ok: ")
    assert cache.run("validate", merged=True).stdout == merged
    assert cache.run("validate", merged=True).stdout == merged  # the hit
    [entry] = [json.loads(p.read_text()) for p in cache.folder.glob("*.json")]
    assert [fd for fd, _ in entry["output"]] == [2, 1]


PROBE = """
import json, os, sys
sys.argv = ["schoolctl", *json.loads(sys.argv[1])]
from schoolctl.cli.main import main
try:
    main()
except SystemExit:
    pass
with open(os.environ["PROBE_REPORT"], "w") as f:
    json.dump(sorted(sys.modules), f)
"""
HEAVY = ("typer", "click", "pydantic", "pydantic_core", "yaml", "rich", "schoolctl.config.model",
         "schoolctl.config.loader", "schoolctl.releases")


@pytest.mark.parametrize("args", [("validate", "demo"), ("list", "--json")], ids=" ".join)
def test_a_hit_imports_neither_typer_nor_pydantic_nor_the_model(cache: Cache, tmp_path: Path,
                                                                 args: tuple[str, ...]) -> None:
    report = tmp_path / "modules.json"

    def modules() -> set[str]:
        proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cache.work, timeout=120,
                              env={**cache.env, "PROBE_REPORT": str(report)}, capture_output=True, check=False)
        assert proc.returncode == 0 and proc.stdout, proc.stderr
        return set(json.loads(report.read_text()))

    assert "pydantic" in modules()  # the miss validates
    loaded = modules()
    assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")]


# --- what makes a miss ---------------------------------------------------------------------------

def _new_school(cache: Cache, schools: Path) -> None:
    assert cache.fresh("new", "escola-nova").code == 0 and (schools / "escola-nova.yaml").exists()


def _touch_code(cache: Cache, schools: Path) -> None:
    path = cache.code / "schoolctl" / "config" / "selection.py"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


CHANGES: dict[str, tuple[tuple[str, ...], Callable[[Cache, Path], None], bool]] = {
    # name: (command, the change, whether the output changes)
    "a school file, one letter": (("list",), lambda c, s: _same_name(s / "demo.yaml", "Escola Demo", "Escola Dema"),
                                  True),
    "the fleet file, one letter": (("list", "--json"), lambda c, s: _same_name(
        s / "fleet.yaml", "domain: escoles.bcn.example", "domain: escoles.bcn.exampla"), True),
    "a new school file": (("validate",), _new_school, True),
    "a school file removed": (("list",), lambda c, s: (s / "escola-pins.yaml").unlink(), True),
    "a code file touched": (("validate", "demo"), _touch_code, False),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_a_change_is_a_miss_with_the_new_result(cache: Cache, schools: Path, name: str) -> None:
    args, change, shows = CHANGES[name]
    before = cache.fresh(*args)
    assert cache.run(*args) == before
    cache.poison()
    change(cache, schools)
    after = cache.fresh(*args) if shows else before
    assert after != before or not shows
    assert cache.run(*args) == after  # a miss: not the poisoned entry
    assert cache.run(*args) == after  # and recorded again


SETTINGS = [{"SCHOOLCTL_JOURNAL": "other-journal.jsonl"}, {"SCHOOLCTL_SCHOOLS_DIR": "schools"},
            {"TZ": "Pacific/Kiritimati"}, {"COLUMNS": "80"}]  # NO_COLOR, the terminal: on a terminal below


def test_a_setting_that_changes_is_a_miss(cache: Cache) -> None:
    """Each of these settings is part of the key (none changes what `validate` prints here)."""
    fresh = cache.fresh("validate")
    assert cache.run("validate") == fresh
    cache.poison()
    for setting in SETTINGS:
        assert cache.run("validate", **setting) == fresh, setting
    assert cache.run("validate").stdout == POISON.encode()  # the settings before: the (poisoned) entry


def _yesterday(zone: str) -> Callable[[dict], None]:
    def change(entry: dict) -> None:
        for day in entry["days"]:
            if day[0] == zone:
                day[1] = (date.fromisoformat(day[1]) - timedelta(days=1)).isoformat()
                day[2], day[3] = day[2] - 86400, day[3] - 86400
    return change


@pytest.mark.parametrize("zone", ["Europe/Madrid", ""], ids=["the fleet's time zone", "the local time zone"])
def test_an_entry_of_another_day_is_a_miss(cache: Cache, zone: str) -> None:
    """validate judges support dates and `accept:` entries by the day in the fleet's time zone
    (fleet.yaml `timezone: Europe/Madrid`): an entry of yesterday is not reused today."""
    fresh = cache.fresh("validate", "demo")
    assert cache.run("validate", "demo") == fresh
    [entry] = [json.loads(p.read_text()) for p in cache.folder.glob("*.json")]
    assert {d[0] for d in entry["days"]} == {"Europe/Madrid", ""}
    cache.poison()
    cache.rewrite(_yesterday(zone))
    assert cache.run("validate", "demo") == fresh


def test_an_invalid_edit_after_a_success_is_the_error(cache: Cache, schools: Path) -> None:
    assert cache.run("validate").code == 0
    edit(schools / "demo.yaml", "district: Ciutat Vella", "district: 5")
    fresh = cache.fresh("validate")
    assert fresh.code == 2 and b"schools/demo.yaml:" in fresh.stderr
    stored = cache.entries()
    assert cache.run("validate") == fresh
    assert cache.run("validate") == fresh
    assert cache.entries() == stored  # a failure is never recorded


# --- the entries -------------------------------------------------------------------------------

DAMAGES: dict[str, Callable[[Path], object]] = {
    "not JSON": lambda p: p.write_text("{not json"),
    "incomplete": lambda p: p.write_text('{"format": 1}'),
    "not an object": lambda p: p.write_text("[]"),
    "mode 0644": lambda p: p.chmod(0o644),  # readable by others: not trusted (nor written by schoolctl)
}


def test_a_damaged_entry_is_a_miss(cache: Cache) -> None:
    fresh = cache.fresh("list")
    assert cache.run("list") == fresh
    [path] = cache.folder.glob("*.json")
    for name, damage in DAMAGES.items():
        cache.poison()
        damage(path)
        assert cache.run("list") == fresh, name
        assert json.loads(path.read_text())["output"] == [[1, fresh.stdout.decode()]], name  # stored again
        assert path.stat().st_mode & 0o777 == 0o600


def test_entries_are_private(cache: Cache) -> None:
    assert cache.run("list").code == 0
    assert cache.folder.stat().st_mode & 0o777 == 0o700
    assert [p.stat().st_mode & 0o777 for p in cache.folder.iterdir()] == [0o600]  # no temporary file left


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_a_cache_that_cannot_be_written_changes_nothing(cache: Cache, tmp_path: Path, where: str) -> None:
    if where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
    else:
        (tmp_path / "file").write_text("")
        folder = tmp_path / "file" / "cache"
    fresh = cache.fresh("validate", "demo")
    for _ in range(2):
        assert cache.run("validate", "demo", SCHOOLCTL_CACHE_DIR=str(folder)) == fresh
    assert not folder.exists() or not list(folder.iterdir())


def test_the_default_folder_and_off(cache: Cache, tmp_path: Path) -> None:
    """$XDG_CACHE_HOME/schoolctl, else ~/.cache/schoolctl; SCHOOLCTL_CACHE_DIR=off writes nothing."""
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    fresh = cache.fresh("list")
    assert cache.run("list", SCHOOLCTL_CACHE_DIR=None, XDG_CACHE_HOME=str(xdg), HOME=str(home)) == fresh
    assert len(list((xdg / "schoolctl").glob("list-*.json"))) == 1 and not list(home.iterdir())
    assert cache.run("list", SCHOOLCTL_CACHE_DIR=None, XDG_CACHE_HOME=None, HOME=str(home)) == fresh
    assert len(list((home / ".cache" / "schoolctl").glob("list-*.json"))) == 1
    shutil.rmtree(xdg)
    shutil.rmtree(home / ".cache")
    for _ in range(2):
        assert cache.run("list", SCHOOLCTL_CACHE_DIR="off", XDG_CACHE_HOME=str(xdg), HOME=str(home)) == fresh
    assert not xdg.exists() and not list(home.iterdir()) and not (cache.work / "off").exists()


def test_an_empty_cache_setting_is_refused(cache: Cache) -> None:
    run = cache.run("validate", SCHOOLCTL_CACHE_DIR="")
    assert run.code == 2 and b"SCHOOLCTL_CACHE_DIR is set but empty" in run.stderr
    assert run_cli("--schools-dir", "schools", "validate", env={"SCHOOLCTL_CACHE_DIR": " "}).code == 2


def test_a_run_that_reads_the_secrets_is_not_recorded(cache: Cache, schools: Path) -> None:
    """validate and list open nothing of the vault; were they to (here the secrets folder is the
    schools folder, the vault key the fleet file), the run would not be recorded."""
    fresh = cache.fresh("validate")
    for setting in ({"SCHOOLCTL_SECRETS_DIR": str(schools)}, {"SCHOOLCTL_VAULT_KEY_FILE": "schools/fleet.yaml"}):
        assert cache.run("validate", **setting) == fresh
        assert cache.entries() == {}
    assert cache.run("validate") == fresh and len(cache.entries()) == 1
    text = next(cache.folder.glob("*.json")).read_text()
    assert os.environ["SCHOOLCTL_SECRETS_DIR"] not in text and os.environ["SCHOOLCTL_VAULT_KEY_FILE"] not in text


def test_a_hit_into_a_closed_pipe_ends_quietly_with_exit_1(cache: Cache) -> None:
    assert cache.run("list").code == 0
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([str(SCHOOLCTL), "list"], stdout=write, stderr=subprocess.PIPE, env=cache.env,
                          cwd=cache.work, timeout=60, check=False)
    os.close(write)
    assert proc.returncode == 1 and proc.stderr == b""


# --- on a terminal -----------------------------------------------------------------------------

def _on_terminal(cache: Cache, columns: int, *args: str, **env: str) -> Out:
    """`schoolctl ARGS` with stdin and stdout on a pseudo-terminal `columns` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full = {**{k: v for k, v in cache.env.items() if k not in ("COLUMNS", "LINES")}, "TERM": "xterm-256color", **env}
    proc = subprocess.Popen([str(SCHOOLCTL), *args], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                            cwd=cache.work, env=full)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    return Out(proc.wait(timeout=60), b"".join(chunks), stderr)


def test_on_a_terminal_the_table_is_for_its_width(cache: Cache) -> None:
    wide = _on_terminal(cache, 160, "list", SCHOOLCTL_CACHE_DIR="off")
    narrow = _on_terminal(cache, 90, "list", SCHOOLCTL_CACHE_DIR="off")
    assert wide.code == narrow.code == 0 and wide.stdout != narrow.stdout and b"\x1b[" in wide.stdout
    assert _on_terminal(cache, 160, "list") == wide
    assert _on_terminal(cache, 160, "list") == wide  # the hit
    cache.poison()
    assert _on_terminal(cache, 90, "list") == narrow
    assert _on_terminal(cache, 160, "list", NO_COLOR="1") == _on_terminal(cache, 160, "list", NO_COLOR="1",
                                                                           SCHOOLCTL_CACHE_DIR="off")
    assert cache.run("list").stdout != POISON.encode()  # piped: another entry


# --- the pieces --------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "env", "verb"), [
    (["validate"], {}, "validate"), (["--schools-dir", "x", "list", "--json"], {}, "list"),
    (["validate", "--help"], {}, None), (["-v", "list"], {}, None), (["--debug", "validate"], {}, None),
    (["list", "-h"], {}, None), (["validate"], {"SCHOOLCTL_LOG": "debug"}, None),
    (["validate"], {"SCHOOLCTL_LOG": "ERROR"}, "validate"), (["plan", "demo"], {}, None), (["new", "x"], {}, None),
    (["--version"], {}, None), ([], {}, None)])
def test_which_command_lines_are_cached(monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str],
                                        verb: str | None) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cached_verb(argv) == verb


def test_the_code_is_every_package_of_schoolctl() -> None:
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    import importlib.util

    roots = [folder for _, folder in result_cache.package_roots()]
    for name in packages:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        folder = os.path.abspath(spec.submodule_search_locations[0])
        assert any(folder == r or folder.startswith(r + os.sep) for r in roots), name


def test_the_fingerprint_is_of_every_py_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "pkg"
    (folder / "sub" / "__pycache__").mkdir(parents=True)
    (folder / "a.py").write_text("A = 1\n")
    (folder / "sub" / "b.py").write_text("B = 1\n")
    monkeypatch.setattr(result_cache, "package_roots", lambda: [("schoolctl", str(folder))])
    prints = [result_cache.code_fingerprint()]
    (folder / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"")
    (folder / "notes.txt").write_text("")
    assert result_cache.code_fingerprint() == prints[0]  # bytecode and data are not code
    for change in (lambda: (folder / "a.py").write_text("A = 2\n"),
                   lambda: os.utime(folder / "sub" / "b.py", ns=(0, 10**18)),
                   lambda: (folder / "sub" / "c.py").write_text(""),
                   lambda: (folder / "a.py").unlink()):
        change()
        prints.append(result_cache.code_fingerprint())
    assert len(set(prints)) == len(prints)


class _Recorded:
    """Record `action` in this process as a run of `list` would be, and return its entry (or None)."""

    def __init__(self, action: Callable[[], None]) -> None:
        recorder = result_cache._Recorder()
        recorder.start()
        try:
            action()
        finally:
            recorder.stop()
        self.recorder = recorder
        self.entry = recorder.entry("key", "code", "list", ["list"])


def test_the_recorder_notes_what_was_read_listed_and_looked_at(tmp_path: Path) -> None:
    (tmp_path / "read.yaml").write_text("a: 1\n")

    def action() -> None:
        (tmp_path / "read.yaml").read_text()
        os.listdir(tmp_path)
        (tmp_path / "absent").exists()
        with contextlib.suppress(FileNotFoundError):
            os.listdir(tmp_path / "no-folder")
        result_cache.note_day("Europe/Madrid", date(2026, 3, 29))  # 23 hours long (summer time)
        print("printed")

    entry = _Recorded(action).entry
    assert entry is not None
    assert str(tmp_path / "read.yaml") in [f[0] for f in entry["files"]]  # (and the time zone's file, if read)
    assert [tmp_path.as_posix(), ["read.yaml"]] in entry["folders"]
    assert [str(tmp_path / "absent"), True, "missing"] in entry["looked"]
    assert [str(tmp_path / "no-folder"), True, "missing"] in entry["looked"]
    zone, day, first, end = entry["days"][0]
    assert (zone, day, end - first) == ("Europe/Madrid", "2026-03-29", 23 * 3600)
    assert datetime.fromtimestamp(first, ZoneInfo(zone)).isoformat() == "2026-03-29T00:00:00+01:00"
    assert entry["output"] == [[1, "printed\n"]]


@pytest.mark.parametrize("action", [
    lambda p: (p / "written.txt").write_text("x"),
    lambda p: open("/dev/zero", "rb").close(),
    lambda p: sys.stdout.buffer,
    lambda p: (p / "grows.yaml").open("a").close(),
    lambda p: result_cache.note_day("Nowhere/Atlantis", date.today()),
], ids=["writes a file", "reads a device", "writes bytes", "appends", "an unknown time zone"])
def test_a_run_with_side_effects_is_not_recorded(tmp_path: Path, action: Callable[[Path], object]) -> None:
    (tmp_path / "grows.yaml").write_text("")
    assert _Recorded(lambda: action(tmp_path)).entry is None


def test_a_file_that_changes_while_the_run_reads_it_is_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "school.yaml"
    path.write_text("a: 1\n")

    def action() -> None:
        path.read_text()
        os.utime(path, ns=(0, 10**18))  # as an editor saving it meanwhile

    assert _Recorded(action).entry is None


def test_the_help_says_results_are_cached() -> None:
    from typer.testing import CliRunner

    text = " ".join(CliRunner().invoke(app, ["validate", "--help"]).stdout.split())
    assert "cached by content" in text and "SCHOOLCTL_CACHE_DIR=off" in text
