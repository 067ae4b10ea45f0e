"""`schoolctl users letters`: credential letters rendered from a real passwords file (written by the
import's own code, with a stand-in for the school server's directory), read back with pdftotext; no
password reaches stdout, stderr or the log; the PDF is 0600 and never overwritten without --force."""

from __future__ import annotations

import logging
import shutil
import stat
import subprocess
from datetime import date
from pathlib import Path

import pytest

from tests.unit.conftest import run_cli

pytestmark = pytest.mark.skipif(not shutil.which("pdftotext"), reason="pdftotext missing (apt-get install "
                                                                      "poppler-utils; Makefile LAB_PACKAGES)")
ROSTER = ("given_name,family_name,role,group,email\n"
          "Núria,Pérez i Castellà,student,3A,\n"
          "Jordi,Ço Ferrer,student,3A,\n"
          "Wei,Zhang 张,student,4B,\n"
          "Marta,Puig Soler,teacher,,marta@escola.example\n")


class EmptyDirectory:
    """The school server as the import sees it: an empty directory that accepts the change set."""

    def __init__(self) -> None:
        self.ldif = ""

    def __enter__(self) -> EmptyDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        if command.startswith("ldapmodify"):
            self.ldif = stdin or ""
        return True, "", ""


@pytest.fixture
def imported(schools: Path, tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    """The demo school's roster imported: (its passwords file, the people with their passwords)."""
    from schoolctl.cli.users.importer import import_roster
    from schoolctl.cli.users.letters import read_passwords
    from schoolctl.cli.users.roster import parse_roster
    from schoolctl.config.loader import load
    from schoolctl.secrets import SecretStore

    assert run_cli("secrets", "init").code == 0
    school = load(schools).select(["demo"])[0]
    people, _ = parse_roster(ROSTER.encode(), "roster.csv")
    store = SecretStore()
    server = EmptyDirectory()
    result = import_roster(school, people, dry_run=False, store=store, today=date(2026, 9, 1), server=server)
    assert result.passwords_file and result.passwords_file.is_file()
    accounts = read_passwords(store, result.passwords_file)
    assert len(accounts) == 4 and all(f"uid={a.uid}," in server.ldif for a in accounts)
    return result.passwords_file, [{"uid": a.uid, "name": a.name, "group": a.group, "password": a.password}
                                   for a in accounts]


def _text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_letters_for_every_class_read_back(imported, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vault, people = imported
    out = tmp_path / "letters.pdf"
    with caplog.at_level(logging.DEBUG):
        run = run_cli("users", "letters", "demo", "--output", str(out), env={"SCHOOLCTL_LOG": "DEBUG"})
    assert run.code == 0, run.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    said = run.stdout + run.stderr + caplog.text
    assert "4 letter(s) for 3 class(es) (3A, 4B, -)" in run.stdout and vault.name in run.stdout
    text = _text(out)
    for p in people:
        assert p["password"] not in said                       # never on the terminal or in the log
        assert p["password"] in text and p["uid"] in text
        assert p["name"] in text or p["uid"] == "wei.zhang"
    assert "Escola Demo" in text and "https://demo.escoles.bcn.example/" in text
    assert "El teu compte de l'escola" in text and "Contrasenya inicial" in text   # the school's first: ca
    # a letter the font lacks (DejaVu has no Chinese): the letter is made, the secretary told whose
    assert "Wei Zhang" in text and "Pérez i Castellà" in text and "Ço Ferrer" in text
    assert "the letter of wei.zhang lacks '张'" in run.stderr
    # grouped by class: 3A's list, its letters (family-name order), then 4B, then those without a class
    pages = text.split("\f")
    assert "Llista del grup (sense contrasenyes): 3A (2 cartes)" in pages[0]
    assert pages[0].index("Ço Ferrer, Jordi") < pages[0].index("Pérez i Castellà, Núria")
    assert not any(p["password"] in pages[0] for p in people)  # the class list holds no password
    order = [next(p["name"] for p in people if p["password"] in page) for page in pages
             if any(p["password"] in page for p in people)]
    assert order == ["Jordi Ço Ferrer", "Núria Pérez i Castellà", "Wei Zhang 张", "Marta Puig Soler"]
    assert run.stderr.count("lacks") == 1


def test_one_class_in_spanish(imported, tmp_path: Path) -> None:
    _, people = imported
    out = tmp_path / "3a.pdf"
    run = run_cli("users", "letters", "demo", "--group", "3A", "--lang", "es", "-o", str(out))
    assert run.code == 0, run.stderr
    text = _text(out)
    assert "Tu cuenta de la escuela" in text and "Contraseña inicial" in text
    assert [p["uid"] for p in people if p["password"] in text] == [p["uid"] for p in people if p["group"] == "3A"]


def test_refuses_to_overwrite_without_force(imported, tmp_path: Path) -> None:
    out = tmp_path / "letters.pdf"
    out.write_text("the secretary's earlier file")
    run = run_cli("users", "letters", "demo", "-o", str(out))
    assert run.code == 2 and "exists already" in run.stderr and "--force" in run.stderr
    assert out.read_text() == "the secretary's earlier file"
    assert run_cli("users", "letters", "demo", "-o", str(out), "--force").code == 0
    assert out.read_bytes().startswith(b"%PDF") and stat.S_IMODE(out.stat().st_mode) == 0o600


def test_bad_input_is_refused_with_the_fix(imported, tmp_path: Path) -> None:
    vault, _ = imported
    out = tmp_path / "x.pdf"
    run = run_cli("users", "letters", "demo", "--group", "9Z", "-o", str(out))
    assert run.code == 2 and "no one of class 9Z" in run.stderr and "3A, 4B" in run.stderr
    bogus = tmp_path / "bogus.vault"
    bogus.write_text("not a vault")
    run = run_cli("users", "letters", "demo", "--passwords", str(bogus), "-o", str(out))
    assert run.code == 2 and "cannot decrypt" in run.stderr and str(bogus) in run.stderr
    vault.unlink()
    run = run_cli("users", "letters", "demo", "-o", str(out))
    assert run.code == 2 and "no initial-passwords file of demo" in run.stderr and "users import" in run.stderr
    assert not out.exists()


def test_cut_out_slips_four_to_a_page(imported, tmp_path: Path) -> None:
    _, people = imported
    out = tmp_path / "slips.pdf"
    run = run_cli("users", "letters", "demo", "--layout", "slips", "-o", str(out))
    assert run.code == 0, run.stderr
    assert "slips layout" in run.stdout and not any(p["password"] in run.stdout + run.stderr for p in people)
    pages = _text(out).split("\f")
    # per class: its list, then its slips on one page (3A's two together), first-login steps on each
    with_passwords = [[p["uid"] for p in people if p["password"] in page] for page in pages]
    assert [sorted(uids) for uids in with_passwords if uids] == [["jordi.co", "nuria.perez"], ["wei.zhang"],
                                                                ["marta.puig"]]
    three_a = next(page for page in pages if "jordi.co" in page and "Contrasenya inicial" in page)
    assert three_a.count("Contrasenya inicial") == 2 and three_a.count("Moodle") >= 2
