"""The city's backup host, administered from the controller over SSH (root): each school enrolled
(its key restricted to `borg serve --append-only` on its own repository), its repository created
(repokey-blake2, the key exported into the school's vault) and pruned to the retention policy,
locally on the backup host, with the passphrase on stdin (never stored there)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from schoolctl.cli.backup import tamper
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


def _ledger(site: Site, session: Session) -> dict:
    """The ledger on the backup host: `archives` (id: name) the controller has seen in the school's
    repository, `pruned` (id: name) those schoolctl pruned and did not compact yet, `transactions`
    the lines of the repository's transactions file the last prune checked (tamper.py)."""
    _, text, _ = session.run(f"cat {shlex.quote(ledger_path(site))} 2>/dev/null || echo '{{}}'")
    found = json.loads(text or "{}")
    return {"archives": found.get("archives", {}), "pruned": found.get("pruned", {}),
            "transactions": int(found.get("transactions", 0))}


def _write_ledger(site: Site, session: Session, ledger: dict) -> None:
    session.run(f"umask 077 && cat > {shlex.quote(ledger_path(site))}", stdin=json.dumps(ledger, sort_keys=True))


def archives(site: Site, session: Session, passphrase: str) -> list[dict]:
    """The repository's archives as the backup host sees them (full access, not through borg serve)."""
    ok, out, err = session.run(backup.admin_borg(site, "--lock-wait 120 list --json"), stdin=passphrase + "\n")
    if not ok:
        raise BackupError(f"cannot list the repository of {site.id} on the backup host: {err.strip()[-300:]}")
    return json.loads(out)["archives"]


def _history(site: Site, session: Session, passphrase: str, since: int) -> tamper.History:
    """The archives of every state of the school's repository after the first `since` transactions
    logged in its transactions file, each read from a hard-linked copy rolled back to it (tamper.py)."""
    repo = backup.repository_path(site)
    try:
        return tamper.history(lambda cmd, stdin: session.run(cmd, stdin=stdin, timeout=3600), repo,
                              tamper.scratch_path(repo, site.id), f"{backup.LEDGER}/{site.id}.lock", since, passphrase)
    except tamper.CheckFailed as e:
        raise BackupError(f"cannot check the history of {site.id}'s repository on the backup host: {e}; "
                          "nothing was pruned or compacted") from None


def _refuse(site: Site, vanished: dict[str, str], last_seen: dict[str, int], done: str) -> BackupError:
    names = sorted(n + (f" (there until transaction {last_seen[i]})" if i in last_seen else "")
                   for i, n in vanished.items())
    return BackupError(
        f"archives of {site.id} vanished from the backup host without a prune by schoolctl: "
        f"{', '.join(names)}; {done}",
        "someone deleted them through the school's key (append-only: the data is still in the repository); "
        "roll the repository back as README.md 'Backups: an archive deleted from a school' says")


def prune(site: Site, store: SecretStore) -> dict:
    """Thin the school's archives to its retention, on the backup host, then compact. Refused before
    anything is compacted when an archive is gone that schoolctl did not prune: one the controller saw
    (the ledger), or one that any state of the repository since the last prune held, each state read
    from a copy rolled back to its transaction (tamper.py): a deletion through the school's
    append-only key, which compacting would make permanent (README, Backups)."""
    b = site.school.backup
    assert b is not None
    secret = passphrase(site.id, store)
    r = b.retention
    with session(site) as s:
        # first the repository as it is: the vault's passphrase opens it (or borg's own words say why)
        before = {a["id"]: a["name"] for a in archives(site, s, secret)}
        ledger = _ledger(site, s)
        found = _history(site, s, secret, ledger["transactions"])
        present = {a["id"]: a["name"] for a in archives(site, s, secret)}  # listed after the history
        vanished = tamper.deleted({**ledger["archives"], **before, **found.archives}, present, ledger["pruned"])
        if vanished:
            raise _refuse(site, vanished, found.last_seen, "nothing was pruned or compacted")
        args = (f"--lock-wait 120 prune --list --glob-archives {shlex.quote(site.id + '-*')} "
                f"--keep-daily {r.daily} --keep-weekly {r.weekly} --keep-monthly {r.monthly}")
        ok, out, err = s.run(backup.admin_borg(site, args) + " 2>&1", stdin=secret + "\n", timeout=1800)
        ours = {i: n for i, n in present.items() if i in tamper.pruned_ids(out)}
        pruned = {**ledger["pruned"], **ours}
        _write_ledger(site, s, {"archives": present, "pruned": pruned, "transactions": found.lines})
        if not ok:
            raise BackupError(f"prune of {site.id} failed on the backup host: {(err or out).strip()[-300:]}")
        # once more, for the newest state the first check left out and whatever the school did
        # meanwhile (usually one short command that lists nothing), then compact
        again = _history(site, s, secret, found.lines)
        after = {a["id"]: a["name"] for a in archives(site, s, secret)}
        vanished = tamper.deleted({**present, **found.archives, **again.archives}, after, pruned)
        if vanished:
            raise _refuse(site, vanished, {**found.last_seen, **again.last_seen},
                          "the prune went ahead, nothing was compacted")
        ok, _, err = s.run(backup.admin_borg(site, "--lock-wait 120 compact"), stdin=secret + "\n", timeout=3600)
        if not ok:
            raise BackupError(f"compact of {site.id} failed on the backup host: {err.strip()[-300:]}")
        kept = archives(site, s, secret)
        # compacted: the states before cannot be listed any more, so what schoolctl pruned is forgotten
        _write_ledger(site, s, {"archives": {a["id"]: a["name"] for a in kept}, "pruned": {},
                                "transactions": again.lines})
    return {"school": site.id, "kept": len(kept), "pruned": sorted(ours.values())}


def remember(site: Site, store: SecretStore) -> None:
    """Add the repository's archives as they are now to the ledger (after an archive was taken)."""
    secret = passphrase(site.id, store, required=False)
    if secret is None:
        return
    with session(site) as s:
        now = archives(site, s, secret)
        ledger = _ledger(site, s)
        ledger["archives"].update({a["id"]: a["name"] for a in now})
        _write_ledger(site, s, ledger)
