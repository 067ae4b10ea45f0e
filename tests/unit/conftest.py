"""Shared fixtures of the unit tests: a private copy of schools/, the real CLI, a temporary vault."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import Result
from typer.testing import CliRunner

from schoolctl.cli.main import app

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "schools"


@dataclass
class Run:
    """The outcome of one CLI run: exit code, stdout, stderr lines, and the raw result."""

    code: int
    stdout: str
    stderr: str
    result: Result

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


def run_cli(*args: str, env: dict[str, str] | None = None) -> Run:
    """Run `schoolctl ARGS` in-process (click's runner keeps stdout and stderr apart)."""
    result = CliRunner().invoke(app, list(args), env=env)
    return Run(result.exit_code, result.stdout, result.stderr, result)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the real lab state or vault, nor a SCHOOLCTL_* setting of the caller; no run
    reuses another's result (the result cache is off: tests/unit/test_result_cache.py turns it on)."""
    for var in ("SCHOOLCTL_SCHOOLS_DIR", "SCHOOLCTL_LOG", "SCHOOLCTL_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SCHOOLCTL_CACHE_DIR", "off")
    monkeypatch.setenv("SCHOOLCTL_LAB_DIR", str(tmp_path / "lab-state"))
    monkeypatch.setenv("SCHOOLCTL_VAULT_KEY_FILE", str(tmp_path / "vault" / "vault.key"))
    monkeypatch.setenv("SCHOOLCTL_SECRETS_DIR", str(tmp_path / "vault" / "secrets"))
    monkeypatch.setenv("SCHOOLCTL_JOURNAL", str(tmp_path / "journal.jsonl"))


@pytest.fixture
def schools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid copy of the shipped schools/ as `./schools` of a fresh working directory, so the
    CLI prints paths exactly as `schools/<file>`."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(SHIPPED, work / "schools")
    monkeypatch.chdir(work)
    return work / "schools"


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace `old` by `new` in a file, insisting that `old` is there exactly `count` times."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def line_of(path: Path, pattern: str) -> int:
    """The line number (from 1) of the one line of `path` matching the regex `pattern`."""
    hits = [i for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if re.search(pattern, text)]
    assert len(hits) == 1, f"{pattern!r} matches lines {hits} of {path.name}"
    return hits[0]


@pytest.fixture
def validate(schools: Path) -> Callable[..., Run]:
    """`schoolctl --schools-dir schools validate [IDS]`."""

    def _run(*ids: str) -> Run:
        return run_cli("--schools-dir", "schools", "validate", *ids)

    return _run


def at(path: Path, pattern: str, token: str | None = None) -> str:
    """`line:column` of `token` (default: the first non-blank character) on the line matching `pattern`."""
    line = line_of(path, pattern)
    text = path.read_text(encoding="utf-8").splitlines()[line - 1]
    col = text.index(token) if token is not None else len(text) - len(text.lstrip())
    return f"{line}:{col + 1}"


def summary(n: int) -> str:
    """The last line `schoolctl` prints after `n` config problems."""
    return f"{n} problem{'s' if n != 1 else ''} found; nothing was changed."


def city_ca(folder: Path, kind: str = "ec", days: int = 3650, stem: str = "ca") -> tuple[Path, Path]:
    """A self-signed city CA (`kind` ec or rsa, valid `days`): FOLDER/STEM.pem and its key FOLDER/STEM.key."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "City CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(7).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    pem, private = folder / f"{stem}.pem", folder / f"{stem}.key"
    pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pem, private


class FakeSession:
    """connect.Session answering commands with canned output, in order; each command and its stdin
    is recorded."""

    answers: ClassVar[list[tuple[bool, str, str]]] = []
    commands: ClassVar[list[str]] = []
    stdins: ClassVar[list[str | None]] = []

    def __init__(self, server: object, name: str) -> None:
        pass

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        FakeSession.commands.append(command)
        FakeSession.stdins.append(stdin)
        return FakeSession.answers.pop(0)
