"""Archives deleted from a school's repository by somebody else than schoolctl, proven from the
repository itself (README.md, Backups: an archive deleted from a school).

A school reaches its repository only through `borg serve --append-only`: a `borg delete` through its
key is a new transaction, and the deleted archive's data stays in the segment files until somebody
with full access compacts (`schoolctl backup prune` does, right after it prunes). Every append-only
transaction adds a line `transaction N, UTC time ...` to `<repo>/transactions`, N being the number
of the segment that holds its commit; the repository as it was after transaction N is its segments
up to N (borg's "append-only mode" notes: roll back by removing the later segments and the index,
hints and integrity files; borg rebuilds the index). Segments are never rewritten in place, so a
copy of hard links is a cheap view of any such past state.

`history` runs this very file on the backup host (root, over the controller's SSH session, the
passphrase on stdin): for each transaction logged since the last check it lists the archives of a
hard-linked copy rolled back to that transaction, in `<repo>/../.schoolctl-rollback-<id>` (root
only, removed afterwards, also when the check fails; a stale one from a killed run is removed
first). The copy is built forward, one transaction after the other, so borg replays the whole
repository's segment headers once and then only the segments each transaction added. borg runs on
the copy with a private BORG_BASE_DIR, BORG_SECURITY_DIR and BORG_CACHE_DIR, so the security data
the backup host keeps for the real repository (its manifest timestamp: borg's own rollback
protection) is never touched; the real repository's files are only read.

A transaction whose commit segment is gone was compacted away (a compaction removes every segment
left with a commit only): nothing deleted before it can be brought back any more, and it is not
listed. `deleted` then names what existed (in any rolled-back state, or in the controller's ledger)
and is gone now, but neither a checkpoint (borg removes those itself) nor pruned by schoolctl.

This module imports only the standard library: the backup host runs it with its own python3 (the
interpreter of Debian's borgbackup).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

Runner = Callable[[str, str], tuple[bool, str, str]]  # (shell command, stdin) -> (ok, stdout, stderr)

TRANSACTION = re.compile(r"^transaction (\d+),")
CHECKPOINT = re.compile(r"\.checkpoint(\.\d+)?$")
PRUNED = re.compile(r"^Pruning archive\b.*\[([0-9a-f]{64})\]\s*$", re.MULTILINE)
SCRATCH_PREFIX = ".schoolctl-rollback-"


@dataclass
class History:
    """What the rolled-back states of a repository held."""

    lines: int  # how many of the transactions logged in <repo>/transactions are checked (the next check skips them)
    archives: dict[str, str] = field(default_factory=dict)   # id: name, in any state listed
    last_seen: dict[str, int] = field(default_factory=dict)  # id: the last transaction whose state held it
    listed: list[int] = field(default_factory=list)          # transactions whose state was listed
    compacted: list[int] = field(default_factory=list)       # transactions compacted away (not listed)
    seconds: float = 0.0


class CheckFailed(Exception):
    """The history could not be read (the message says why)."""


def scratch_path(repository: str, school: str) -> str:
    return str(Path(repository).parent / f"{SCRATCH_PREFIX}{school}")


def command(repository: str, scratch: str, lock: str, since: int) -> str:
    """Shell that runs this module's host side (`main`) with python3; the passphrase goes on stdin."""
    source = Path(__file__).read_text()
    options = {"repository": repository, "scratch": scratch, "lock": lock, "since": since}
    return f"python3 -c {shlex.quote(source)} {shlex.quote(json.dumps(options))}"


def history(run: Runner, repository: str, scratch: str, lock: str, since: int, passphrase: str) -> History:
    """The archives of every state of `repository` after the first `since` transactions logged in
    its transactions file (0: all of them), read on the host `run` reaches. CheckFailed otherwise."""
    ok, out, err = run(command(repository, scratch, lock, since), passphrase + "\n")
    try:
        answer = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except ValueError:
        answer = {}
    if not ok or "error" in answer or "lines" not in answer:
        raise CheckFailed(str(answer.get("error") or (err or out).strip()[-300:] or "no answer"))
    return History(lines=answer["lines"], archives=answer["archives"], last_seen=answer["last_seen"],
                   listed=answer["listed"], compacted=answer["compacted"], seconds=answer["seconds"])


def deleted(seen: dict[str, str], present: dict[str, str], pruned: dict[str, str]) -> dict[str, str]:
    """The archives (id: name) that were `seen` but are not `present` any more, minus those schoolctl
    `pruned` and borg's own checkpoints."""
    return {i: n for i, n in seen.items()
            if i not in present and i not in pruned and not CHECKPOINT.search(n)}


def pruned_ids(prune_output: str) -> set[str]:
    """The ids of the archives `borg prune --list` says it pruned ("Pruning archive (1/2): NAME TIME [ID]")."""
    return set(PRUNED.findall(prune_output))


# --- the backup host's side ----------------------------------------------------------------------

def transactions(repository: Path) -> list[int]:
    """The transaction numbers logged in the repository's transactions file, in its order."""
    try:
        text = (repository / "transactions").read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [int(m.group(1)) for m in map(TRANSACTION.match, text.splitlines()) if m]


def segments(repository: Path) -> dict[int, Path]:
    """The repository's segment files (number: path relative to the repository); empty ones are
    deleted ones to borg."""
    found = {}
    for d in (repository / "data").iterdir():
        if d.is_dir() and d.name.isdigit():
            for f in d.iterdir():
                if f.name.isdigit() and f.is_file() and f.stat().st_size > 0:
                    found[int(f.name)] = f.relative_to(repository)
    return found


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@contextlib.contextmanager
def _scratch(path: Path) -> Iterator[Path]:
    """A fresh root-only folder at `path` (a stale one is removed first), removed afterwards."""
    _remove(path)
    os.mkdir(path, 0o700)
    try:
        yield path
    finally:
        _remove(path)


def _borg_env(home: Path, security: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(home),
            "LANG": "C.UTF-8", "BORG_PASSPHRASE_FD": "0", "BORG_BASE_DIR": str(home),
            "BORG_SECURITY_DIR": str(security), "BORG_CACHE_DIR": str(home / "cache"),
            "BORG_CONFIG_DIR": str(home / "config"), "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no", "BORG_HOSTNAME_IS_UNIQUE": "yes",
            "BORG_DISPLAY_PASSPHRASE": "no"}


def rolled_back(repository: Path, scratch: Path, since: int, passphrase: str) -> dict:
    """The host side of `history`: the archives of `repository` rolled back to each transaction
    logged after the first `since` (all of them when the file holds fewer: it was replaced)."""
    started = time.monotonic()
    logged = transactions(repository)
    todo = sorted(set(logged[since:] if since <= len(logged) else logged))
    present = segments(repository) if todo else {}
    # The newest state (the last line, unless it was compacted) is not listed: what came after it
    # came through full access (schoolctl's prune, which records what it deletes), so the archives
    # the caller lists from the repository after this check are those of that state. The answer's
    # `lines` leaves it out, so the next check lists it, once a newer transaction follows it.
    newest = logged[-1] if todo and logged[-1] in present and logged[-1] == max(
        t for t in logged if t in present) else None
    wanted = [t for t in todo if t in present and t != newest]
    answer: dict = {"lines": len(logged) - (newest is not None), "archives": {}, "last_seen": {}, "listed": [],
                    "compacted": [t for t in todo if t not in present]}
    if wanted:
        with _scratch(scratch):
            copy, home = scratch / "repository", scratch / "borg"
            os.mkdir(copy, 0o700)
            os.mkdir(home, 0o700)
            for name in ("README", "config"):  # copied, not linked: nothing in the copy may alias them
                shutil.copyfile(repository / name, copy / name)
            linked = -1
            for t in wanted:
                for n in sorted(n for n in present if linked < n <= t):
                    target = copy / present[n]
                    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.link(repository / present[n], target)
                linked = t
                proc = subprocess.run(["borg", "--lock-wait", "30", "list", "--json", str(copy)],
                                      input=passphrase + "\n", capture_output=True, text=True,
                                      env=_borg_env(home, home / f"security-{t}"), timeout=3600)
                if proc.returncode != 0:
                    raise CheckFailed(f"the repository rolled back to transaction {t} does not open: "
                                      f"{proc.stderr.strip()[-300:]}")
                for a in json.loads(proc.stdout)["archives"]:
                    answer["archives"][a["id"]] = a["name"]
                    answer["last_seen"][a["id"]] = t
                answer["listed"].append(t)
    answer["seconds"] = round(time.monotonic() - started, 2)
    return answer


def _stop(signum: int, frame: object) -> None:
    raise CheckFailed(f"interrupted by signal {signal.Signals(signum).name}")


def main(argv: list[str]) -> int:
    """`python3 -c <this file> OPTIONS`: OPTIONS as `command` writes them, the passphrase on stdin;
    prints one JSON object (`rolled_back`'s answer, or {"error": ...} and exit 1)."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _stop)
    os.umask(0o077)
    try:
        opts = json.loads(argv[0])
        passphrase = sys.stdin.readline().rstrip("\n")
        Path(opts["lock"]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(opts["lock"], "w") as lock:  # one check of a repository at a time (one scratch folder)
            fcntl.flock(lock, fcntl.LOCK_EX)
            answer = rolled_back(Path(opts["repository"]), Path(opts["scratch"]), int(opts["since"]), passphrase)
    except (CheckFailed, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        print(json.dumps({"error": str(e)[-500:]}))
        return 1
    print(json.dumps(answer, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
