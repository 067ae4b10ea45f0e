"""The vault: a 0600 key, values generated once and stable, encrypted at rest; and a secret never
reaching stdout, logs or exceptions."""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from schoolctl.errors import SecretError
from schoolctl.secrets import MASK, RedactingFilter, Secret, SecretStore, generate, redact

from .conftest import REPO, run_cli


@pytest.fixture
def store() -> SecretStore:
    """A store on the temporary key and folder the autouse fixture points the environment at."""
    s = SecretStore()
    assert s.init_key()
    return s


def test_secrets_init_creates_a_private_key() -> None:
    key = Path(os.environ["SCHOOLCTL_VAULT_KEY_FILE"])
    run = run_cli("secrets", "init")
    assert run.code == 0
    assert run.stdout == f"created the vault key {key} (keep it out of git; back it up safely)\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) & 0o077 == 0
    value = key.read_bytes()
    assert len(value.strip()) == 64
    again = run_cli("secrets", "init")
    assert again.code == 0 and "already exists; left as it is" in again.stdout
    assert key.read_bytes() == value


def test_values_are_generated_once_and_stable(store: SecretStore) -> None:
    first = store.get("demo", "moodle_db")
    assert len(first.reveal()) == 32
    assert SecretStore().get("demo", "moodle_db") == first
    both = SecretStore().ensure("demo", {"moodle_db": 32, "ldap_admin": 24})
    assert both["moodle_db"] == first and len(both["ldap_admin"].reveal()) == 24
    assert SecretStore().load("demo") == both
    assert SecretStore().get("escola-pins", "moodle_db") != first  # per school
    store.put("fleet", "bbb_pool", "given-by-the-city")
    assert SecretStore().get("fleet", "bbb_pool").reveal() == "given-by-the-city"


def test_cli_lists_names_never_values(store: SecretStore) -> None:
    value = store.get("demo", "moodle_db").reveal()
    run = run_cli("secrets", "list", "demo")
    assert (run.code, run.stdout) == (0, "moodle_db\n")
    assert value not in run.stdout + run.stderr
    assert run_cli("secrets", "list", "escola-pins").stdout == "no secrets stored for escola-pins yet\n"


def test_the_vault_file_is_encrypted(store: SecretStore) -> None:
    value = store.get("demo", "moodle_db").reveal()
    path = store.directory / "demo.vault"
    raw = path.read_bytes()
    assert raw.startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    assert value.encode() not in raw and b"moodle_db" not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_wrong_key_is_a_clear_error(store: SecretStore, tmp_path: Path) -> None:
    value = store.get("demo", "moodle_db").reveal()
    other = tmp_path / "other.key"
    other.write_text(generate(64))
    with pytest.raises(SecretError, match=r"cannot decrypt .*demo\.vault: wrong vault key") as err:
        SecretStore(key_file=other).load("demo")
    assert value not in str(err.value) and err.value.__cause__ is None


def test_missing_or_empty_key(tmp_path: Path) -> None:
    (tmp_path / "vault" / "secrets").mkdir(parents=True)
    (tmp_path / "vault" / "secrets" / "demo.vault").write_bytes(b"$ANSIBLE_VAULT;1.1;AES256\n00\n")
    with pytest.raises(SecretError, match=r"no vault key at .*; run `schoolctl secrets init`"):
        SecretStore().load("demo")
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        SecretStore(key_file=empty).load("demo")


@pytest.mark.parametrize("scope", ["../etc", "Demo", "", "a/b"])
def test_vault_names_cannot_escape_the_folder(store: SecretStore, scope: str) -> None:
    with pytest.raises(SecretError, match="invalid vault name"):
        store.get(scope, "x")


def test_a_secret_never_shows_itself() -> None:
    s = Secret("hunter2-" + generate(16))
    value = s.reveal()
    for text in (str(s), repr(s), f"{s}", f"{s!r}", "%s" % s, format(s, ""), str([s]), str({"k": s})):  # noqa: UP031
        assert value not in text and MASK in text
    assert Secret(value) == s and hash(Secret(value)) == hash(s)


def test_redact_scrubs_every_known_value() -> None:
    a = Secret("alpha-" + generate(12)).reveal()
    b = Secret(a + "-longer").reveal()  # the longer one first, so no tail of it is left behind
    text = f"a={a} b={b} again {a}"
    assert redact(text) == f"a={MASK} b={MASK} again {MASK}"
    assert redact("nothing secret here") == "nothing secret here"


def _logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log, buf


def test_the_filter_masks_log_records() -> None:
    value = Secret("logged-" + generate(16)).reveal()
    log, buf = _logger("schoolctl.test.records")
    log.info("password is %s", value)
    log.warning(f"inline {value}")
    log.error("as an object: %r", Secret(value))
    text = buf.getvalue()
    assert value not in text
    assert text.count(MASK) == 3 and "password is ********" in text


def test_the_filter_masks_logged_exceptions() -> None:
    value = Secret("traced-" + generate(16)).reveal()
    log, buf = _logger("schoolctl.test.exceptions")
    try:
        raise RuntimeError(f"cannot connect with {value}")
    except RuntimeError:
        log.exception("deploy failed")
    text = buf.getvalue()
    assert "deploy failed" in text and "RuntimeError" in text
    assert value not in text


SCRIPT = textwrap.dedent("""
    import sys
    import schoolctl.cli.context
    from schoolctl.cli.main import main
    from schoolctl.secrets import SecretStore

    value = SecretStore().get("demo", "moodle_db").reveal()
    print("VALUE=" + value, file=open(sys.argv[1], "w"))

    def broken_load(*args, **kwargs):
        raise RuntimeError(f"could not use {value} for the database")

    schoolctl.cli.context.load = broken_load  # the real `validate` command, failing inside with a secret
    sys.argv = ["schoolctl", "--schools-dir", sys.argv[2], "validate"]
    main()
""")


@pytest.mark.parametrize("log_level", ["", "DEBUG"])
def test_an_internal_error_prints_the_secret_masked(store: SecretStore, tmp_path: Path, log_level: str) -> None:
    """The console entry point (in a child process: it monkey-patches with gevent) turns an unexpected
    exception into one masked line and exit 1; with SCHOOLCTL_LOG=DEBUG the traceback is masked too."""
    out = tmp_path / "value.txt"
    env = {**os.environ, "SCHOOLCTL_LOG": log_level}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(REPO / "schools")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    value = out.read_text().strip().removeprefix("VALUE=")
    assert len(value) == 32
    assert proc.returncode == 1, proc.stderr
    assert "internal error: RuntimeError: could not use ******** for the database" in proc.stderr
    assert value not in proc.stdout and value not in proc.stderr
