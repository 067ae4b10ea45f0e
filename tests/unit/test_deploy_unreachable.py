"""`plan` of a school whose server does not answer says the real cause in one line per school
(a listener that never speaks: the SSH banner timed out; a closed port: connection refused), with
no paramiko traceback on the terminal; the wording is schoolctl.connect's, shared with the audit."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from schoolctl import connect
from schoolctl.cli import logs
from schoolctl.config.model import Server
from schoolctl.errors import ServerError
from tests.unit.conftest import edit, run_cli

# the real CLI (gevent, logging set up as `schoolctl` does) with short SSH deadlines: the test stays bounded
PROGRAM = """
import sys
from schoolctl import connect
connect.CONNECT_TIMEOUT, connect.BANNER_TIMEOUT = 3, 2
from schoolctl.cli.main import main
sys.argv[0] = "schoolctl"
main()
"""


@pytest.fixture
def silent() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_loopback(schools: Path, school: str, port: int) -> None:
    edit(schools / f"{school}.yaml", "server: 10.20.42.10", f"server:\n  address: 127.0.0.1\n  ssh_port: {port}")


@pytest.fixture
def fleet(schools: Path, silent: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, int, int]:
    """escola-pins on the silent port, escola-roure (its copy) on a closed one; the fleet's city
    services on loopback, so a plan resolves no other name."""
    closed = _closed_port()
    pins = (schools / "escola-pins.yaml").read_text(encoding="utf-8")
    (schools / "escola-roure.yaml").write_text(pins.replace("id: escola-pins", "id: escola-roure"), encoding="utf-8")
    _on_loopback(schools, "escola-pins", silent)
    _on_loopback(schools, "escola-roure", closed)
    for old, new in (("https://acme-v02.api.letsencrypt.org/directory", "https://127.0.0.1:14000/dir"),
                     ("ntp: [time.bcn.example]", "ntp: [127.0.0.1]"),
                     ("http://debian.bcn.example/debian ", "http://127.0.0.1/debian "),
                     ("http://debian.bcn.example/debian-security ", "http://127.0.0.1/debian-security ")):
        edit(schools / "fleet.yaml", old, new)
    monkeypatch.setenv("HOME", str(schools.parent))  # no SSH key or known_hosts of the machine's
    return schools, silent, closed


def _schoolctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, "--schools-dir", "schools", *args],
                          capture_output=True, text=True, timeout=60)


def test_plan_says_the_real_cause_once_per_school(fleet: tuple[Path, int, int]) -> None:
    _, silent, closed = fleet
    start = time.monotonic()
    run = _schoolctl("plan", "escola-pins", "escola-roure")
    seconds = time.monotonic() - start
    both = run.stdout + run.stderr
    assert run.returncode == 1, both
    assert "Traceback" not in both and "paramiko" not in both, both
    banner = (f"escola-pins: cannot plan: cannot connect to 127.0.0.1 port {silent} over SSH: timed out waiting "
              "for the SSH banner (something accepts connections on that port but no SSH server answers")
    refused = (f"escola-roure: cannot plan: cannot connect to 127.0.0.1 port {closed} over SSH: connection "
               "refused (nothing listens on that port: is sshd running, and is ssh_port right?)")
    lines = run.stdout.splitlines()
    assert [line for line in lines if line.startswith("escola-pins:")] == [next(
        line for line in lines if line.startswith(banner))], run.stdout
    assert [line for line in lines if line.startswith("escola-roure:")] == [refused], run.stdout
    assert both.count("SSH banner") == 1 and len(re.findall("refused", both, re.I)) == 1, both
    assert seconds < 15, f"{seconds:.1f}s"


def test_a_session_says_the_real_cause() -> None:
    """The roster import, rollback and backup verbs connect through Session: the same line."""
    port = _closed_port()
    server = Server(address="127.0.0.1", ssh_port=port)
    with pytest.raises(ServerError) as raised, connect.Session(server, "escola-pins"):
        pass
    assert raised.value.message == (f"cannot connect to escola-pins's server (127.0.0.1 port {port}) over SSH: "
                                     "connection refused (nothing listens on that port: is sshd running, and is "
                                     "ssh_port right?)")


@pytest.mark.parametrize(("error", "cause"), [
    ("SSH error (No existing session)", "the SSH handshake did not finish in time"),
    ("SSH error (Error reading SSH protocol banner)", "timed out waiting for the SSH banner"),
    ("SSH host key error (Host key for 10.0.0.5 does not match.)", "host key mismatch"),
    ("Authentication error (username=root)", "authentication failed"),
    ("Could not connect (timed out)", "connection timed out"),
])
def test_pyinfras_errors_in_plain_words(error: str, cause: str) -> None:
    from pyinfra.api.exceptions import ConnectError

    line = connect.connect_failure({"ssh_hostname": "10.0.0.5", "ssh_port": 22}, ConnectError(error))
    assert line.startswith(f"cannot connect to 10.0.0.5 port 22 over SSH: {cause} ("), line


def test_the_refusal_under_paramikos_gathered_errors() -> None:
    """pyinfra says `Could not connect ([Errno None] Unable to connect to port 22 on 10.0.0.5)`; the
    refusal is in the errors paramiko gathered under it, which pyinfra raised its error from."""
    from pyinfra.api.exceptions import ConnectError

    error = ConnectError("Could not connect ([Errno None] Unable to connect to port 22 on 10.0.0.5)")
    error.__context__ = paramiko.ssh_exception.NoValidConnectionsError(
        {("10.0.0.5", 22): ConnectionRefusedError(111, "Connection refused")})
    line = connect.connect_failure({"ssh_hostname": "10.0.0.5", "ssh_port": 22}, error)
    assert line.startswith("cannot connect to 10.0.0.5 port 22 over SSH: connection refused ("), line


def test_paramiko_is_heard_only_from_v() -> None:
    names = ["", *logs.LIBRARIES, *logs.HUSHED]
    levels = {n: logging.getLogger(n).level for n in names}
    paramiko_log = logging.getLogger("paramiko.transport")
    try:
        logs.setup()
        assert not paramiko_log.isEnabledFor(logging.ERROR)
        logs.setup(1)
        assert paramiko_log.isEnabledFor(logging.ERROR)
        logs.setup(debug=True)
        assert paramiko_log.isEnabledFor(logging.DEBUG)
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        logs._state["verbosity"] = 0


def test_deploy_says_a_one_line_error_once(schools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summary table holds a one-line error; only an error of several lines is repeated whole below it."""
    import schoolctl.cli.runner as runner
    from schoolctl.cli.runner import Result

    line = "cannot connect to 127.0.0.1 port 2222 over SSH: connection refused (nothing listens on that port)"
    monkeypatch.setattr(runner, "run", lambda schools, plan, progress, **_: [
        Result("escola-pins", "failed", error=line), Result("institut-mar", "failed", error="step x failed:\nlog")])
    run = run_cli("--schools-dir", "schools", "deploy", "--yes", "escola-pins", "institut-mar")
    assert run.code == 1
    both = " ".join((run.stdout + run.stderr).replace("│", " ").split())
    assert both.count("connection refused") == 1, both
    assert "institut-mar failed: step x failed:" in both
