"""The vault fails safe: a hand-edited file with a mistake is refused without echoing its text, a
vault file is bound to its school (one from before that marker is used with a warning naming the
fix, `secrets adopt`, which marks it), a deploy writes no secret before its server answered, an empty
SCHOOLCTL_* path is an error (never the current folder), and `secrets set` takes one printable line."""

from __future__ import annotations

import json
import socket
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schoolctl.cli.main import app
from schoolctl.config.loader import default_schools_dir, load
from schoolctl.errors import SchoolctlError, SecretError
from schoolctl.secrets import SecretStore, generate

from .conftest import SHIPPED, Run, edit, run_cli

SECRET = "Sekrit" + generate(20)  # never registered with the redactor: only not echoing it keeps it out


@pytest.fixture
def store() -> SecretStore:
    """A store on the temporary key and folder the autouse fixture points the environment at."""
    s = SecretStore()
    assert s.init_key()
    return s


def _write(store: SecretStore, scope: str, text: str | bytes) -> Path:
    """A hand-edited vault file: `text` encrypted with the key."""
    path = store.directory / f"{scope}.vault"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(store._lib().encrypt(text if isinstance(text, bytes) else text.encode()))
    return path


def _plain(store: SecretStore, scope: str) -> str:
    return store._lib().decrypt((store.directory / f"{scope}.vault").read_bytes()).decode()


def _everything(err: BaseException) -> str:
    """All an error can show: its text, its CLI lines, and its traceback with any chained error."""
    lines = err.lines() if isinstance(err, SchoolctlError) else []
    return "\n".join([str(err), *lines, *traceback.format_exception(err)])


def _cli(*args: str, stdin: str = "") -> Run:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return Run(result.exit_code, result.stdout, result.stderr, result)


def _dead_port() -> int:
    """A loopback port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture
def unreachable(schools: Path, monkeypatch: pytest.MonkeyPatch):
    """The schools copy with escola-pins' server on a loopback port where nothing listens, and the
    city's names the firewall resolves on loopback too: nothing here looks up or reaches another host."""
    edit(schools / "escola-pins.yaml", "server: 10.20.42.10",
         f"server:\n  address: 127.0.0.1\n  ssh_port: {_dead_port()}")
    edit(schools / "fleet.yaml", "https://acme-v02.api.letsencrypt.org/directory", "https://127.0.0.1:14000/dir")
    edit(schools / "fleet.yaml", "ntp: [time.bcn.example]", "ntp: [127.0.0.1]")
    edit(schools / "fleet.yaml", "http://debian.bcn.example/debian ", "http://127.0.0.1/debian ")
    edit(schools / "fleet.yaml", "http://debian.bcn.example/debian-security ", "http://127.0.0.1/debian-security ")
    edit(schools / "escola-pins.yaml", "  etherpad: {}\n", "")  # no pinned release to render it with
    elsewhere: list[str] = []
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in LOOPBACK:
            elsewhere.append(str(host))
            raise OSError(f"{host}: not loopback (blocked by the test)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    yield schools
    assert elsewhere == []


# 1. a hand-edited vault with a mistake: the file, the line and what is wrong; never its text

TYPOS = [
    (f"moodle_db: {generate(12)}\nldap_admin: {SECRET}: oops\n", 2, "mapping values are not allowed here"),
    (f"moodle_db: *{SECRET}\n", 1, "found undefined alias"),
    (f'moodle_db: "{SECRET}\\q"\n', 1, "found unknown escape character"),
    (f"moodle_db: {SECRET}\n\tldap_admin: x\n", 2, "cannot start any token"),
    (f"moodle_db: [{SECRET}\n", 2, "expected ',' or ']'"),
    (f"moodle_db: '{SECRET}\n", 2, "found unexpected end of stream"),
    (f"moodle_db: x\n---\nldap_admin: {SECRET}\n", 2, "expected a single document"),
    (f"moodle_db: &{SECRET} x\nldap_admin: &{SECRET} y\n", 2, "found duplicate anchor"),
    (f"moodle_db: {SECRET}\x01\n", 1, "a control character"),
    (b"moodle_db: " + SECRET.encode() + b"\xff\n", 1, "not UTF-8 text"),
]


@pytest.mark.parametrize(("text", "line", "what"), TYPOS, ids=[f"typo{i}" for i in range(len(TYPOS))])
def test_a_yaml_mistake_names_file_and_line_never_the_text(store: SecretStore, text: str | bytes, line: int,
                                                           what: str) -> None:
    path = _write(store, "demo", text)
    with pytest.raises(SecretError) as err:
        SecretStore().load("demo")
    assert err.value.message.startswith(f"cannot read the vault {path}, line {line}: ")
    assert what in err.value.message
    assert "ansible-vault edit" in err.value.hint and err.value.exit_code == 2
    assert SECRET not in _everything(err.value)
    assert err.value.__cause__ is None and err.value.__context__ is None


CONTENT = [
    (f"- {SECRET}\n- x\n", 1, "not a mapping of name: value"),
    (f"{SECRET}\n", 1, "not a mapping of name: value"),
    ("moodle_db: 12345678\n", 1, "a value that is not a string"),  # was read as the number, str()'d
    ("moodle_db: yes\n", 1, "a value that is not a string"),       # was "True"
    ("moodle_db:\n", 1, "a value that is not a string"),           # was "None"
    (f"moodle_db:\n  nested: {SECRET}\n", 2, "a value that is not a string"),
    (f"moodle_db: [{SECRET}]\n", 1, "a value that is not a string"),
    (f"moodle_db: !{SECRET} x\n", 1, "a value that is not a string"),
    (f"moodle_db: x\nmoodle_db: {SECRET}\n", 2, "a name given twice (first on line 1)"),
    (f"? [{SECRET}]\n: x\n", 1, "a name that is not a plain string"),
    (f"_scope: [demo]\nmoodle_db: {SECRET}\n", 1, "a value that is not a string"),
]


@pytest.mark.parametrize(("text", "line", "what"), CONTENT, ids=[f"content{i}" for i in range(len(CONTENT))])
def test_content_that_is_not_names_and_strings_is_refused(store: SecretStore, text: str, line: int,
                                                          what: str) -> None:
    path = _write(store, "demo", text)
    with pytest.raises(SecretError) as err:
        SecretStore().load("demo")
    assert err.value.message.startswith(f"cannot read the vault {path}, line {line}: ")
    assert what in err.value.message
    assert SECRET not in _everything(err.value)


def test_quoted_and_tagged_strings_still_load(store: SecretStore) -> None:
    _write(store, "demo", "# a comment\nmoodle_db: '12345678'\nldap_admin: !!str 0777\nbbb_pool: \"a b\"\n")
    values = SecretStore().load("demo")
    assert {k: v.reveal() for k, v in values.items()} == {"moodle_db": "12345678", "ldap_admin": "0777",
                                                          "bbb_pool": "a b"}
    _write(store, "demo", "")
    assert SecretStore().load("demo") == {}


def test_plan_deploy_and_list_never_print_a_broken_vault(store: SecretStore, unreachable: Path) -> None:
    path = _write(store, "escola-pins", f"moodle_db: {generate(12)}\nldap_admin: {SECRET}: oops\n")
    before = path.read_bytes()
    for args in (("plan", "--json", "escola-pins"), ("deploy", "--yes", "--json", "escola-pins")):
        run = run_cli(*args)
        assert run.code == 2, run.stderr   # bad set-up (the vault), found before the server was touched
        assert SECRET not in run.stdout + run.stderr
        [result] = json.loads(run.stdout)["schools"]
        assert result["status"] == "failed"
        assert result["error"].startswith(
            f"cannot read the vault {path}, line 2: not valid YAML")
    listed = run_cli("secrets", "list", "escola-pins")
    assert listed.code == 2 and SECRET not in listed.stdout + listed.stderr
    assert listed.lines[0] == (f"error: cannot read the vault {path}, line 2: not valid YAML "
                               "(mapping values are not allowed here)")
    assert path.read_bytes() == before


# 2. a vault file belongs to its school

def test_a_vault_names_its_school_and_is_refused_as_another(store: SecretStore) -> None:
    value = store.get("demo", "moodle_db")
    assert _plain(store, "demo").startswith("_scope: demo\n")
    assert SecretStore().load("demo") == {"moodle_db": value}  # the marker is not a secret
    moved = store.directory / "escola-pins.vault"
    (store.directory / "demo.vault").rename(moved)
    raw = moved.read_bytes()
    for use in (lambda s: s.load("escola-pins"), lambda s: s.get("escola-pins", "moodle_db"),
                lambda s: s.put("escola-pins", "bbb_pool", "given-by-the-city")):
        with pytest.raises(SecretError) as err:
            use(SecretStore())
        assert err.value.message == f"the vault {moved} belongs to 'demo', not to 'escola-pins'"
        assert "put it back as demo.vault" in err.value.hint and "_scope: escola-pins" in err.value.hint
        assert value.reveal() not in _everything(err.value)
    assert moved.read_bytes() == raw
    run = run_cli("secrets", "list", "escola-pins")
    assert run.code == 2 and run.lines[0] == f"error: the vault {moved} belongs to 'demo', not to 'escola-pins'"


def _unmarked_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "schoolctl.secrets" and "no school marker" in
            r.getMessage()]


def test_a_vault_from_before_the_marker_is_accepted_and_marked_on_its_next_save(
        store: SecretStore, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(store, "demo", "moodle_db: legacy-value-1234\n")
    raw = path.read_bytes()
    assert {k: v.reveal() for k, v in SecretStore().load("demo").items()} == {"moodle_db": "legacy-value-1234"}
    assert run_cli("secrets", "list", "demo").stdout == "moodle_db\n"
    assert path.read_bytes() == raw  # reading never rewrites
    added = SecretStore().get("demo", "ldap_admin")
    assert _plain(store, "demo") == f"_scope: demo\nldap_admin: {added.reveal()}\nmoodle_db: legacy-value-1234\n"
    assert run_cli("secrets", "list", "demo").stdout == "ldap_admin\nmoodle_db\n"
    assert len(_unmarked_warnings(caplog)) == 1  # said once per file, however often it is read


def test_a_vault_without_the_marker_is_used_with_a_warning_naming_the_file_and_the_fix(
        store: SecretStore, caplog: pytest.LogCaptureFixture) -> None:
    path = store.directory / "escola-pins.vault"
    _write(store, "demo", f"moodle_db: {SECRET}\n").rename(path)  # a renamed vault: nothing in it can tell
    assert SecretStore().load("escola-pins")["moodle_db"].reveal() == SECRET  # kept working
    [said] = _unmarked_warnings(caplog)
    assert said.startswith(f"the vault {path} carries no school marker (`_scope`): it is taken for escola-pins's "
                           "by its file name alone")
    assert "mark it with `schoolctl secrets adopt escola-pins`" in said and SECRET not in said
    caplog.clear()
    SecretStore().load("escola-pins")
    assert not _unmarked_warnings(caplog)
    _write(store, "empty", "")  # an empty vault holds nothing to misuse: no warning
    assert SecretStore().load("empty") == {} and not _unmarked_warnings(caplog)


def test_the_warning_reaches_stderr_of_the_real_command(store: SecretStore, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = _write(store, "demo", f"moodle_db: {SECRET}\n")
    proc = subprocess.run([sys.executable, "-m", "schoolctl.cli", "secrets", "list", "demo"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"},
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "moodle_db\n", proc.stderr
    assert f"the vault {path} carries no school marker" in proc.stderr
    assert "`schoolctl secrets adopt demo`" in proc.stderr and SECRET not in proc.stderr + proc.stdout


def test_secrets_adopt_marks_a_vault_without_the_marker_and_nothing_else(
        store: SecretStore, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(store, "demo", f"moodle_db: {SECRET}\nldap_admin: legacy-value-1234\n")
    run = _cli("secrets", "adopt", "demo")
    assert run.code == 0 and run.stdout == f"marked {path} as demo's vault\n", run.stderr
    assert _plain(store, "demo") == f"_scope: demo\nldap_admin: legacy-value-1234\nmoodle_db: {SECRET}\n"
    assert SECRET not in run.stdout + run.stderr and not _unmarked_warnings(caplog)
    raw = path.read_bytes()
    run = _cli("secrets", "adopt", "demo")  # marked already: left as it is
    assert run.code == 0 and run.stdout == f"{path} is already marked as demo's vault; left as it is\n"
    assert path.read_bytes() == raw
    SecretStore().load("demo")
    assert not _unmarked_warnings(caplog)
    moved = store.directory / "escola-pins.vault"  # now bound: renamed, it is refused, and adopt does not take it
    path.rename(moved)
    run = _cli("secrets", "adopt", "escola-pins")
    assert run.code == 2 and run.lines[0] == f"error: the vault {moved} belongs to 'demo', not to 'escola-pins'"
    assert moved.read_bytes() == raw
    run = _cli("secrets", "adopt", "nosuch")
    assert run.code == 2 and run.lines[0] == f"error: there is no vault for 'nosuch' ({store.directory}/nosuch.vault)"
    assert not (store.directory / "nosuch.vault").exists()
    run = _cli("secrets", "adopt", "Bad!")
    assert run.code == 2 and run.lines[0] == "error: invalid vault name 'Bad!'"


def test_the_marker_is_a_reserved_name(store: SecretStore) -> None:
    with pytest.raises(SecretError, match="'_scope' is reserved"):
        store.put("demo", "_scope", "escola-pins")
    with pytest.raises(SecretError, match="'_scope' is reserved"):
        store.get("demo", "_scope")
    run = _cli("secrets", "set", "demo", "_scope", stdin="escola-pins-x\n")
    assert run.code == 2 and run.lines[0] == "error: '_scope' is reserved (it names the school a vault file belongs to)"
    assert not (store.directory / "demo.vault").exists()


# 3. no vault write before the server answered

def test_a_deploy_that_cannot_reach_its_server_writes_no_vault(store: SecretStore, unreachable: Path) -> None:
    run = run_cli("deploy", "--yes", "--json", "escola-pins")
    assert run.code == 1
    [result] = json.loads(run.stdout)["schools"]
    assert result["status"] == "failed" and result["error"].startswith("cannot connect")
    assert not store.directory.exists() or not any(store.directory.iterdir())
    # an existing vault with most secrets still missing is left as it was, too
    store.put("escola-pins", "bbb_pool", "given-by-the-city")
    path = store.directory / "escola-pins.vault"
    raw = path.read_bytes()
    run = run_cli("deploy", "--yes", "--json", "escola-pins")
    assert run.code == 1 and json.loads(run.stdout)["schools"][0]["error"].startswith("cannot connect")
    assert path.read_bytes() == raw
    assert sorted(p.name for p in store.directory.iterdir()) == ["escola-pins.vault"]


def test_the_runner_writes_the_secrets_once_the_server_answered(store: SecretStore, unreachable: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """run_school hands `connected` to each target: the vault is written then, before any operation,
    with the very values the rounds were rendered with."""
    from schoolctl.cli import runner

    school = load(unreachable).select(["escola-pins"])[0]
    path = store.directory / "escola-pins.vault"
    seen: list[tuple[bytes | None, bytes | None]] = []  # the vault when the server answered, and after

    def answered(name, address, conn, rounds, plan, progress, sid, connected, **_):
        before = path.read_bytes() if path.exists() else None  # every round rendered, secrets generated
        connected()
        seen.append((before, path.read_bytes() if path.exists() else None))
        return []

    def quiet(school, what):
        pass

    monkeypatch.setattr(runner, "_run_target", answered)
    result = runner.run_school(school, store, plan=False, progress=quiet)
    assert result.status == "unchanged", result.error
    [(before, after)] = seen
    assert before is None and after is not None
    stored = SecretStore().load("escola-pins")
    assert {"db_moodle", "db_nextcloud", "ldap_admin", "nextcloud_admin"} <= set(stored)
    again = runner.run_school(school, SecretStore(), plan=False, progress=quiet)
    assert again.status == "unchanged", again.error
    assert seen[1] == (after, after)  # nothing new to write: the same values, no write
    assert SecretStore().load("escola-pins") == stored

    path.unlink()
    result = runner.run_school(school, store, plan=True, progress=quiet)
    assert result.status == "planned" and seen[2] == (None, None)  # a plan never writes


def test_deferred_secrets_are_generated_once_and_stored_on_flush(store: SecretStore, schools: Path) -> None:
    from schoolctl.deploy.sites import build_site
    from schoolctl.secrets import DeferredStore

    school = load(schools).select(["escola-pins"])[0]
    path = store.directory / "escola-pins.vault"
    store.put("escola-pins", "moodle_admin", "stored-before-1234")
    pending = DeferredStore(SecretStore())
    site = build_site(school, pending)
    first = site.secret("db_moodle")
    assert site.secret("db_moodle") is first and site.secret("moodle_admin").reveal() == "stored-before-1234"
    assert pending.get("escola-pins", "db_moodle") is first  # one value for the run, whoever asks
    assert set(SecretStore().load("escola-pins")) == {"moodle_admin"}
    pending.flush()
    assert SecretStore().load("escola-pins")["db_moodle"] == first
    later = site.secret("ldap_admin", 24)  # once the server answered: written at once
    assert SecretStore().load("escola-pins")["ldap_admin"] == later and len(later.reveal()) == 24
    raw = path.read_bytes()
    pending.flush()  # nothing new: no write
    assert path.read_bytes() == raw


def test_a_deferred_store_finds_a_missing_key_before_connecting(schools: Path) -> None:
    from schoolctl.deploy.sites import build_site
    from schoolctl.secrets import DeferredStore

    school = load(schools).select(["escola-pins"])[0]
    site = build_site(school, DeferredStore(SecretStore()))
    with pytest.raises(SecretError, match="no vault key at"):
        site.secret("db_moodle")


def test_a_secret_stored_meanwhile_is_not_overwritten(store: SecretStore) -> None:
    from schoolctl.secrets import DeferredStore

    pending = DeferredStore(SecretStore())
    mine = pending.get("escola-pins", "db_moodle")
    theirs = SecretStore().get("escola-pins", "db_moodle")  # another run, at the same time
    with pytest.raises(SecretError, match="db_moodle of escola-pins changed in the vault"):
        pending.flush()
    assert SecretStore().load("escola-pins")["db_moodle"] == theirs != mine


# 4. an empty SCHOOLCTL_* path is an error, not the current folder

@pytest.mark.parametrize("value", ["", "  "])
@pytest.mark.parametrize("var", ["SCHOOLCTL_SECRETS_DIR", "SCHOOLCTL_VAULT_KEY_FILE"])
def test_an_empty_vault_path_is_an_error(var: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SecretStore().init_key()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(var, value)
    with pytest.raises(SecretError) as err:
        SecretStore()
    assert err.value.message == f"{var} is set but empty" and err.value.exit_code == 2
    assert "unset it to use ./" in err.value.hint
    for args, stdin in ((("secrets", "set", "demo", "bbb_pool"), "given-by-the-city\n"),
                        (("secrets", "init"), ""), (("secrets", "list", "demo"), "")):
        run = _cli(*args, stdin=stdin)
        assert (run.code, run.lines[0]) == (2, f"error: {var} is set but empty"), run.stdout + run.stderr
    assert list(cwd.iterdir()) == []


def test_an_empty_secrets_dir_stops_a_deploy_before_anything(store: SecretStore, unreachable: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOOLCTL_SECRETS_DIR", "")
    before = sorted(p.name for p in Path.cwd().iterdir())
    run = run_cli("deploy", "--yes", "escola-pins")
    assert (run.code, run.lines[0]) == (2, "error: SCHOOLCTL_SECRETS_DIR is set but empty")
    assert sorted(p.name for p in Path.cwd().iterdir()) == before


@pytest.mark.parametrize("value", ["", " \t"])
def test_an_empty_schools_dir_is_an_error(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    cwd = tmp_path / "cwd"
    shutil.copytree(SHIPPED, cwd)  # a valid fleet right in the current folder: it must not be used
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SCHOOLCTL_SCHOOLS_DIR", value)
    for call in (default_schools_dir, load):
        with pytest.raises(SchoolctlError) as err:
            call()
        assert err.value.exit_code == 2
        assert err.value.lines() == ["SCHOOLCTL_SCHOOLS_DIR is set but empty: unset it to use ./schools, or set it "
                                     "to the schools folder ('.' for the current folder)",
                                     "1 problem found; nothing was changed."]
    monkeypatch.delenv("SCHOOLCTL_SCHOOLS_DIR")
    assert default_schools_dir() == Path("schools")
    monkeypatch.setenv("SCHOOLCTL_SCHOOLS_DIR", ".")
    assert default_schools_dir() == Path(".")


# `secrets set`: one line of printable text

@pytest.mark.parametrize("stdin", [f"{SECRET}\nsecond-line\n", f"tab\t{SECRET}\n", f"{SECRET}\x1b[31m\n",
                                   f"zero\u200bwidth-{SECRET}\n", f"cr\r{SECRET}\n", f"{SECRET}\u2028x\n",
                                   f"{SECRET}\n\n"],
                         ids=["newline", "tab", "escape", "zero-width", "cr", "line-separator", "blank-line"])
def test_secrets_set_refuses_newlines_and_control_characters(store: SecretStore, stdin: str) -> None:
    run = _cli("secrets", "set", "fleet", "bbb_pool", stdin=stdin)
    assert run.code == 2, run.stdout + run.stderr
    assert run.lines[0].startswith("error: the value has a newline or another control character (character ")
    assert SECRET not in run.stdout + run.stderr
    assert not (store.directory / "fleet.vault").exists()
    with pytest.raises(SecretError, match="control character"):
        store.put("fleet", "bbb_pool", stdin.removesuffix("\n"))


@pytest.mark.parametrize("stdin", ["given-by-the-city\n", "given-by-the-city\r\n", "given-by-the-city"])
def test_secrets_set_takes_one_line(store: SecretStore, stdin: str) -> None:
    run = _cli("secrets", "set", "fleet", "bbb_pool", stdin=stdin)
    assert (run.code, run.stdout) == (0, "stored fleet/bbb_pool in the vault\n")
    assert SecretStore().load("fleet")["bbb_pool"].reveal() == "given-by-the-city"
