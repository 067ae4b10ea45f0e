"""An audit of a school whose server cannot be reached says ssh's real reason once per school, in
every report, and never testinfra's CommandResult repr; the evidence script command itself."""

from __future__ import annotations

import json
import socket
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import testinfra

from schoolctl.audit.catalogue import CachedHost, ssh_failure
from tests.unit.conftest import edit, run_cli

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def closed(schools: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """escola-pins on a loopback port where nothing listens; every name the audit resolves stays on
    loopback (nothing here looks up or reaches another host)."""
    edit(schools / "escola-pins.yaml", "server: 10.20.42.10",
         f"server:\n  address: 127.0.0.1\n  ssh_port: {_closed_port()}")
    edit(schools / "fleet.yaml", "https://acme-v02.api.letsencrypt.org/directory", "https://127.0.0.1:14000/dir")
    edit(schools / "fleet.yaml", "ntp: [time.bcn.example]", "ntp: [127.0.0.1]")
    edit(schools / "fleet.yaml", "http://debian.bcn.example/debian ", "http://127.0.0.1/debian ")
    edit(schools / "fleet.yaml", "http://debian.bcn.example/debian-security ", "http://127.0.0.1/debian-security ")
    edit(schools / "escola-pins.yaml", "  etherpad: {}\n", "")
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise OSError(f"{host}: not loopback (blocked by the test)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    monkeypatch.setenv("HOME", str(schools.parent))  # ssh's known_hosts of the test, not the machine's
    monkeypatch.setenv("SCHOOLCTL_JOURNAL", str(schools.parent / "journal.jsonl"))
    return schools


def _audit(fmt: str, out: Path | None = None):
    args = ["--schools-dir", "schools", "audit", "escola-pins", "--format", fmt]
    return run_cli(*args, *(["--output", str(out)] if out else []))


def test_the_table_says_connection_refused_once(closed: Path) -> None:
    run = _audit("table")
    assert run.code == 1
    both = run.stdout + run.stderr
    assert both.count("Connection refused") == 1, both
    assert "CommandResult(" not in both and "Traceback" not in both
    words = " ".join(w for w in both.split() if w.strip("│┃"))
    assert "ssh: connect to host 127.0.0.1 port" in words and "is sshd running" in words, words


@pytest.mark.parametrize("fmt", ["json", "junit", "html"])
def test_each_report_carries_the_reason_once(closed: Path, tmp_path: Path, fmt: str) -> None:
    report = tmp_path / f"audit.{fmt}"
    run = _audit(fmt, report)
    assert run.code == 1, run.stderr
    text = report.read_text(encoding="utf-8")
    assert text.count("Connection refused") == 1, text[:3000]
    assert "CommandResult(" not in text + run.stdout + run.stderr
    if fmt == "json":
        [school] = json.loads(text)["schools"]
        assert school["status"] == "error" and school["error"].startswith("cannot audit over SSH: ")
        assert {c["observed"] for c in school["controls"] if c["status"] == "error"} == {
            "not checked: the school could not be audited (its error says why)"}
    if fmt == "junit":
        [suite] = ET.fromstring(text).findall("testsuite")
        [prop] = suite.iter("property")
        assert "Connection refused" in prop.get("value")


def test_ssh_failure_reads_sshs_own_reason() -> None:
    backend = testinfra.get_host("local://").backend

    def err(stderr: str) -> RuntimeError:  # what testinfra's ssh backend raises when ssh exits 255
        return RuntimeError(backend.result(255, b"ssh ...", b"", stderr.encode()))

    changed = ("@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@\n"
               "Host key for 10.0.0.5 has changed and you have requested strict checking.\n"
               "Host key verification failed.\n")
    assert ssh_failure(err(changed)).startswith("cannot audit over SSH: Host key verification failed. (the server's")
    assert "Permission denied (publickey)" in ssh_failure(err("root@10.0.0.5: Permission denied (publickey).\n"))
    assert "Connection timed out during banner exchange" in ssh_failure(
        err("Connection timed out during banner exchange\nConnection to 10.0.0.5 port 22 timed out\n"))
    assert ssh_failure(RuntimeError("something else")) is None
    assert ssh_failure(ValueError("x")) is None


def test_the_evidence_script_command_names_no_file_and_runs_twice_at_once(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The script travels to python3 on stdin (no file on the server: two audits never collide,
    nothing is left behind); run here through a real local shell, two at the same time."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    seen: list[str] = []
    local = testinfra.get_host("local://")

    class Recording(type(local.backend)):  # type: ignore[misc]
        def run(self, command, *args, **kwargs):
            seen.append(command)
            return super().run(command, *args, **kwargs)

    backend = Recording()
    results: dict[int, dict[str, str]] = {}

    def one(n: int) -> None:
        cached = CachedHost(SimpleNamespace(backend=backend))
        cached.prefetch([f"echo school-{n}", "printf '%s' \"$0\"", "exit 3"])
        results[n] = {c: (r.rc, r.stdout) for c, r in cached.cache.items()}

    threads = [threading.Thread(target=one, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in (1, 2):
        assert results[n][f"echo school-{n}"] == (0, f"school-{n}\n")
        assert results[n]["exit 3"] == (3, "")
    assert len(seen) == 2 and all("| python3 - " in c and "/tmp" not in c and "mktemp" not in c for c in seen)
    assert list(tmp_path.iterdir()) == []
