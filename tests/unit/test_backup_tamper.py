"""An archive deleted through a school's append-only key, proven from the repository itself
(cli/backup/tamper.py), with the real `borg` of this machine: a local repokey-blake2 repository,
written to the way a school does (`borg serve --append-only --restrict-to-repository`, its SSH
forced command, run here by BORG_RSH), then checked as the backup host checks it, through a local
runner instead of the SSH session. SCHOOLCTL_TEST_BORG names another borg to test with (e.g. a
1.4 build while Debian 12 ships 1.2)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schoolctl.cli.backup import host, tamper
from schoolctl.config.loader import load
from schoolctl.deploy import backup
from schoolctl.deploy.site import Site
from schoolctl.errors import BackupError
from schoolctl.secrets import Secret

BORG = os.environ.get("SCHOOLCTL_TEST_BORG") or shutil.which("borg")
pytestmark = pytest.mark.skipif(BORG is None, reason="borgbackup not installed (make prereqs)")
SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
PASSPHRASE = "correct horse battery staple"


class Repository:
    """A borg repository in `root`: the school's append-only access and the backup host's full one."""

    def __init__(self, root: Path) -> None:
        self.root, self.path = root, root / "demo"
        self.bin = root / "bin"
        self.bin.mkdir()
        (self.bin / "borg").symlink_to(BORG)  # type: ignore[arg-type]
        serve = root / "forced-command"  # what the school's authorized_keys line runs on the backup host
        serve.write_text(f"#!/bin/sh\nexec borg serve --append-only --restrict-to-repository {self.path}\n")
        serve.chmod(0o755)
        self.env = {"PATH": f"{self.bin}:{os.environ['PATH']}", "HOME": str(root), "LANG": "C.UTF-8",
                    "BORG_PASSPHRASE": PASSPHRASE, "BORG_HOSTNAME_IS_UNIQUE": "yes",
                    "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "YES"}
        self.school_env = {**self.env, "BORG_BASE_DIR": str(root / "school"), "BORG_RSH": str(serve)}
        self.admin_env = {**self.env, "BORG_BASE_DIR": str(root / "admin")}
        self.data = root / "data"
        self.data.mkdir()
        self.admin("init", "--encryption=repokey-blake2", str(self.path))

    def _borg(self, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["borg", *args], env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._borg(self.admin_env, *args, check=check)

    def school(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._borg(self.school_env, *args, check=check)

    @property
    def url(self) -> str:
        return f"ssh://borg@backup-host{self.path}"

    def create(self, name: str, *more: str) -> None:
        (self.data / "file").write_bytes(os.urandom(2048) + name.encode())
        self.school("create", *more, f"{self.url}::{name}", str(self.data))

    def delete(self, name: str) -> None:
        self.school("delete", f"{self.url}::{name}")

    def archives(self) -> dict[str, str]:
        listed = json.loads(self.admin("list", "--json", str(self.path)).stdout)["archives"]
        return {a["id"]: a["name"] for a in listed}

    def files(self) -> dict[str, tuple[int, str]]:
        """Every file of the repository: size and sha256."""
        return {str(f.relative_to(self.path)): (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
                for f in sorted(self.path.rglob("*")) if f.is_file()}

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        """The backup host's shell, here (the SSH session's `run`)."""
        proc = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, text=True,
                              env={k: v for k, v in self.env.items() if k != "BORG_PASSPHRASE"}, timeout=timeout)
        return proc.returncode == 0, proc.stdout, proc.stderr

    @property
    def scratch(self) -> Path:
        return Path(tamper.scratch_path(str(self.path), "demo"))

    def history(self, since: int = 0, passphrase: str = PASSPHRASE) -> tamper.History:
        return tamper.history(lambda cmd, stdin: self.run(cmd, stdin), str(self.path), str(self.scratch),
                              str(self.root / "ledger" / "demo.lock"), since, passphrase)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(tmp_path)


def _by_name(archives: dict[str, str]) -> set[str]:
    return set(archives.values())


def test_an_archive_the_controller_never_listed_and_the_school_deleted_is_named(repo: Repository) -> None:
    for name in ("demo-1", "demo-2", "demo-3"):  # the nightly timer's: no ledger knows them
        repo.create(name)
    clean = repo.history()
    assert clean.listed == tamper.transactions(repo.path)[:-1]  # all but the newest state
    assert _by_name(clean.archives) == {"demo-1", "demo-2"}
    assert tamper.deleted(clean.archives, repo.archives(), {}) == {}  # a clean history names nothing
    repo.delete("demo-2")
    before = repo.files()
    present = repo.archives()
    assert _by_name(present) == {"demo-1", "demo-3"}
    found = repo.history()
    assert _by_name(tamper.deleted(found.archives, present, {})) == {"demo-2"}
    assert not tamper.deleted({}, present, {})  # the controller's ledger alone knows of nothing
    assert not repo.scratch.exists()
    assert repo.files() == before  # the real repository: the same files, sizes and bytes
    # the newest state is left for the next check, which has nothing more to list
    assert found.lines == len(tamper.transactions(repo.path)) - 1
    assert repo.history(found.lines).listed == []


def test_checkpoints_borg_removes_itself_are_not_reported(repo: Repository) -> None:
    # a slow stdin with a checkpoint every second: borg commits `demo-1.checkpoint` (each one a
    # transaction), then replaces it by the archive
    feed = subprocess.Popen(["sh", "-c", "for i in 1 2 3; do head -c 3000000 /dev/urandom; sleep 1.1; done"],
                            stdout=subprocess.PIPE)
    proc = subprocess.run(["borg", "create", "--checkpoint-interval", "1", f"{repo.url}::demo-1", "-"],
                          stdin=feed.stdout, env=repo.school_env, capture_output=True, text=True, timeout=300)
    feed.wait()
    assert proc.returncode == 0, proc.stderr
    repo.create("demo-2")
    assert len(tamper.transactions(repo.path)) >= 3, "no checkpoint was committed"
    found = repo.history()
    assert tamper.deleted(found.archives, repo.archives(), {}) == {}
    assert tamper.deleted({"a" * 64: "demo-1.checkpoint", "b" * 64: "demo-1.checkpoint.1"}, {}, {}) == {}


def test_compacted_states_are_not_listed(repo: Repository) -> None:
    repo.create("demo-1")
    repo.create("demo-2")
    repo.delete("demo-1")
    repo.admin("compact", str(repo.path))  # full access made the deletion permanent: nothing to bring back
    repo.create("demo-3")
    repo.create("demo-4")
    found = repo.history()
    assert len(found.compacted) == 3 and len(found.listed) == 1
    assert tamper.deleted(found.archives, repo.archives(), {}) == {}


def test_a_failed_check_leaves_no_copy_and_a_stale_one_is_removed_first(repo: Repository) -> None:
    repo.create("demo-1")
    repo.create("demo-2")
    repo.scratch.mkdir()
    (repo.scratch / "left-by-a-killed-run").write_text("x")
    with pytest.raises(tamper.CheckFailed, match=r"(?i)passphrase"):
        repo.history(passphrase="not the passphrase")
    assert not repo.scratch.exists()


# --- `schoolctl backup prune` on the backup host, here -----------------------------------------

class Session:
    def __init__(self, repo: Repository, fail: str = "") -> None:
        self.repo, self.fail = repo, fail

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        if self.fail and self.fail in command:
            return False, "", f"{self.fail} failed"
        return self.repo.run(command, stdin, timeout)


@pytest.fixture
def site(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The demo school, its repository `repo`, its backup host this machine (borg as the current user)."""
    school = load(SCHOOLS).schools["demo"]
    s = Site(school=school, secret=lambda name, length=32: Secret(f"{name}-secret"))
    monkeypatch.setattr(backup, "LEDGER", str(repo.root / "ledger"))
    monkeypatch.setattr(backup, "repository_path", lambda site: str(repo.path))
    monkeypatch.setattr(backup, "admin_borg", lambda site, args: (
        f"env BORG_PASSPHRASE_FD=0 BORG_BASE_DIR={repo.root / 'admin'} BORG_REPO={repo.path} borg {args}"))
    monkeypatch.setattr(host, "passphrase", lambda school_id, store, required=True: PASSPHRASE)
    monkeypatch.setattr(host, "session", lambda site: Session(repo))
    (repo.root / "ledger").mkdir(mode=0o700)
    return s


def _ledger(repo: Repository) -> dict[str, Any]:
    return json.loads((repo.root / "ledger" / "demo.json").read_text())


STAMPS = [f"demo-2026-12-0{d}T0230{s:02d}Z" for d, s in ((1, 0), (2, 0), (2, 1), (2, 2))]


def _create(repo: Repository, name: str) -> None:
    """An archive as the timer names it, dated by its name (borg prune goes by the archive's time)."""
    stamp = name.removeprefix("demo-")
    repo.create(name, "--timestamp", f"{stamp[:10]}T{stamp[11:13]}:{stamp[13:15]}:{stamp[15:17]}")


def test_prune_refuses_an_unlisted_archive_the_school_deleted_and_never_what_it_pruned(
        site: Site, repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STAMPS:
        _create(repo, name)
    # pruned (one a day), not compacted: the ledger remembers what schoolctl itself deleted
    monkeypatch.setattr(host, "session", lambda site: Session(repo, fail="120 compact"))
    with pytest.raises(BackupError, match="compact of demo failed"):
        host.prune(site, None)  # type: ignore[arg-type]
    assert set(_ledger(repo)["pruned"].values()) == set(STAMPS[1:3])
    _create(repo, "demo-2026-12-03T023000Z")  # so the states that still hold them are listed
    monkeypatch.setattr(host, "session", lambda site: Session(repo))
    assert host.prune(site, None) == {"school": "demo", "kept": 3, "pruned": []}  # type: ignore[arg-type]
    mark = _ledger(repo)
    assert mark["pruned"] == {} and set(mark["archives"].values()) == {STAMPS[0], STAMPS[3],
                                                                       "demo-2026-12-03T023000Z"}
    assert not repo.scratch.exists()
    # the nightly timer's archive, never listed by the controller, deleted through the school's key
    _create(repo, "demo-2026-12-04T023000Z")
    repo.delete("demo-2026-12-04T023000Z")
    _create(repo, "demo-2026-12-05T023000Z")
    before = repo.files()
    with pytest.raises(BackupError) as e:
        host.prune(site, None)  # type: ignore[arg-type]
    assert "vanished" in str(e.value) and "demo-2026-12-04T023000Z" in str(e.value), e.value
    assert "(there until transaction " in str(e.value) and "nothing was pruned or compacted" in str(e.value)
    assert repo.files() == before and not repo.scratch.exists()
    assert _ledger(repo) == mark
