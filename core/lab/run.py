"""Running commands and background daemons for the lab."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from schoolctl.errors import LabError

# A tiny launcher: starts the daemon in its own session and exits at once, so the daemon is
# re-parented to init and outlives us (and never becomes our zombie). Prints the daemon's pid.
_LAUNCHER = """
import json, os, subprocess, sys
spec = json.loads(sys.argv[1])
log = open(spec["log"], "ab", buffering=0)
proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                        env=spec["env"], cwd=spec["cwd"], start_new_session=True)
print(proc.pid)
"""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 120,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; raise LabError with its stderr when it fails."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input if input is not None else "",
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {argv[0]}", "run `schoolctl lab doctor`", usage=True) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"command timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"command failed ({proc.returncode}): {' '.join(argv)}\n{detail}")
    return proc


def spawn_daemon(
    argv: Sequence[str],
    log: Path,
    pid_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached (own session, stdin /dev/null, output to ``log``); write its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": list(argv),
        "log": str(log),
        "env": dict(env if env is not None else os.environ),
        "cwd": str(cwd) if cwd else None,
    }
    proc = run([sys.executable, "-c", _LAUNCHER, json.dumps(spec)], timeout=30)
    pid = int(proc.stdout.strip())
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{pid}\n")
    return pid


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or None when the file is missing or garbled."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None, exe_name: str | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, its argv[0] ends with ``exe_name``."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    if exe_name is None:
        return True
    args = [a.decode(errors="replace") for a in cmdline if a]
    # python daemons show as "python3 -m http.server ...": match any of the first three args.
    return any(Path(a).name == exe_name or a == exe_name for a in args[:3])


def daemon_pid(pid_file: Path, exe_name: str) -> int | None:
    """The live pid recorded in ``pid_file`` (checked against ``exe_name``), else None."""
    pid = read_pid(pid_file)
    return pid if pid_alive(pid, exe_name) else None


def stop_pid(pid: int | None, exe_name: str | None = None, timeout: float = 15.0) -> None:
    """SIGTERM ``pid`` and wait (bounded) for it to go; SIGKILL it when it does not."""
    if not pid_alive(pid, exe_name):
        return
    assert pid is not None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.1)
    raise LabError(f"process {pid} did not stop")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_daemon(pid_file: Path, exe_name: str, timeout: float = 15.0) -> None:
    """Stop the daemon recorded in ``pid_file`` (if it still runs) and remove the pid file."""
    stop_pid(daemon_pid(pid_file, exe_name), exe_name, timeout)
    pid_file.unlink(missing_ok=True)
