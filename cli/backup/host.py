"""The city's backup host, administered from the controller over SSH (root): each school enrolled
(its key restricted to `borg serve --append-only` on its own repository), its repository created
(repokey-blake2, the key exported into the school's vault) and pruned to the retention policy,
locally on the backup host, with the passphrase on stdin (never stored there)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from schoolctl.connect import Session
from schoolctl.deploy import backup
from schoolctl.deploy.site import Site
from schoolctl.errors import BackupError, ServerError
from schoolctl.secrets import SecretStore


@dataclass
class Enrolment:
    """What the controller learnt from the backup host for one school."""

    host_key: str
    changed: bool


NO_PASSPHRASE = ("was it ever deployed with `backup:` in fleet.yaml? its vault holds the passphrase that "
                 "opens its archives; deploy the school first")


def passphrase(school_id: str, store: SecretStore, required: bool = True) -> str | None:
    """The school's repository passphrase from its vault (BackupError, exit 2, when it has none and
    it is `required`; None otherwise)."""
    found = store.load(school_id).get("backup_passphrase")
    if found is None:
        if required:
            raise BackupError(f"{school_id} has no backup passphrase in its vault", NO_PASSPHRASE, usage=True)
        return None
    return found.reveal()


def session(site: Site) -> Session:
    b = site.school.backup
    assert b is not None
    return Session(b.host, f"{site.id}-backup-host")


def enrol(site: Site, store: SecretStore) -> Enrolment:
    """Make sure the backup host accepts the school's key for its repository only; remember the
    host's key in the vault. Skipped (no connection) when the vault says it was done for this very
    line and address; ServerError when the backup host cannot be reached."""
    vault = store.load(site.id)
    marker = backup.enrolled_marker(site)
    known = vault.get("backup_host_key")
    if known is not None and vault.get("backup_enrolled") is not None \
            and vault["backup_enrolled"].reveal() == marker:
        site.backup_host_key = known.reveal()
        return Enrolment(known.reveal(), changed=False)
    with session(site) as s:
        ok, out, err = s.run(backup.enroll_command(site), timeout=600)
    key = out.strip().splitlines()[-1] if ok and out.strip() else ""
    if not ok or not key.startswith("ssh-ed25519 "):
        raise ServerError(f"the backup host {site.school.backup.host.address} refused the enrolment of "  # type: ignore[union-attr]
                          f"{site.id}: {(err or out).strip()[-300:]}")
    key = " ".join(key.split()[:2])
    store.put(site.id, "backup_host_key", key)
    store.put(site.id, "backup_enrolled", marker)
    site.backup_host_key = key
    return Enrolment(key, changed=True)


def ensure_repository(site: Site, store: SecretStore) -> bool:
    """The school's repository exists on the backup host and its key is in the vault (True when
    this call created or exported it). Needs the school's passphrase in the vault already."""
    vault = store.load(site.id)
    if vault.get("backup_repo_key") is not None:
        return False
    secret = passphrase(site.id, store)
    with session(site) as s:
        ok, out, err = s.run(backup.init_command(site), stdin=f"{secret}\n", timeout=300)
    if not ok or "BORG_KEY" not in out:
        raise BackupError(f"cannot create the repository of {site.id} on the backup host: "
                          f"{(err or out).strip()[-300:]}")
    with session(site) as s:  # an existing repository must open with this vault's passphrase
        opened, _, why = s.run(backup.admin_borg(site, "--lock-wait 60 info"), stdin=f"{secret}\n")
    if not opened:
        raise BackupError(f"the repository {backup.repository_path(site)} on the backup host does not open with "
                          f"{site.id}'s passphrase: {why.strip()[-200:]}",
                          "it was made with another vault (a lost or replaced one?): restore that vault, or move "
                          "the repository aside on the backup host so a new one is made")
    store.put(site.id, "backup_repo_key", backup.repo_key_b64(out.strip() + "\n"))
    return True


def ledger_path(site: Site) -> str:
    return f"{backup.LEDGER}/{site.id}.json"


def _ledger(site: Site, session: Session) -> dict[str, str]:
    """The archives (id: name) the controller has seen in the school's repository."""
    _, text, _ = session.run(f"cat {shlex.quote(ledger_path(site))} 2>/dev/null || echo '{{}}'")
    return json.loads(text or "{}").get("archives", {})


def archives(site: Site, session: Session, passphrase: str) -> list[dict]:
    """The repository's archives as the backup host sees them (full access, not through borg serve)."""
    ok, out, err = session.run(backup.admin_borg(site, "--lock-wait 120 list --json"), stdin=passphrase + "\n")
    if not ok:
        raise BackupError(f"cannot list the repository of {site.id} on the backup host: {err.strip()[-300:]}")
    return json.loads(out)["archives"]


def prune(site: Site, store: SecretStore) -> dict:
    """Thin the school's archives to its retention, on the backup host. Refused when archives the
    controller saw before are gone and it did not prune them (a deletion through the school's
    append-only key: nothing is compacted, so they can still be brought back; README, Backups)."""
    b = site.school.backup
    assert b is not None
    secret = passphrase(site.id, store)
    r = b.retention
    with session(site) as s:
        now = archives(site, s, secret)
        seen = _ledger(site, s)
        present = {a["id"]: a["name"] for a in now}
        vanished = {i: n for i, n in seen.items() if i not in present}
        if vanished:
            raise BackupError(
                f"archives of {site.id} vanished from the backup host without a prune by schoolctl: "
                f"{', '.join(sorted(vanished.values()))}; nothing was pruned or compacted",
                "someone deleted them through the school's key (append-only: the data is still in the repository); "
                "roll the repository back as README.md 'Backups: an archive deleted from a school' says")
        args = (f"--lock-wait 120 prune --list --glob-archives {shlex.quote(site.id + '-*')} "
                f"--keep-daily {r.daily} --keep-weekly {r.weekly} --keep-monthly {r.monthly}")
        ok, out, err = s.run(backup.admin_borg(site, args) + " 2>&1", stdin=secret + "\n", timeout=1800)
        if not ok:
            raise BackupError(f"prune of {site.id} failed on the backup host: {(err or out).strip()[-300:]}")
        ok, _, err = s.run(backup.admin_borg(site, "--lock-wait 120 compact"), stdin=secret + "\n", timeout=3600)
        if not ok:
            raise BackupError(f"compact of {site.id} failed on the backup host: {err.strip()[-300:]}")
        kept = archives(site, s, secret)
        record = json.dumps({"archives": {a["id"]: a["name"] for a in kept}})
        s.run(f"umask 077 && cat > {shlex.quote(ledger_path(site))}", stdin=record)
    pruned = sorted(set(present.values()) - {a["name"] for a in kept})
    return {"school": site.id, "kept": len(kept), "pruned": pruned}


def remember(site: Site, store: SecretStore) -> None:
    """Add the repository's archives as they are now to the ledger (after an archive was taken)."""
    secret = passphrase(site.id, store, required=False)
    if secret is None:
        return
    with session(site) as s:
        now = archives(site, s, secret)
        seen = _ledger(site, s)
        seen.update({a["id"]: a["name"] for a in now})
        s.run(f"umask 077 && cat > {shlex.quote(ledger_path(site))}", stdin=json.dumps({"archives": seen}))
