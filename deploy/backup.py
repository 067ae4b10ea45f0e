"""Nightly BorgBackup archives of the school to the city's backup host (`backup:` in fleet.yaml).

- On the school server: Debian's borgbackup, the static program /usr/local/sbin/schoolctl-backup
  (templates/backup/schoolctl-backup.py: dumps, slapcat, borg create, restore) reading its settings
  from /etc/schoolctl/backup/config.json, and schoolctl-backup.timer (daily at `backup.at`, a
  randomized delay, Persistent; the service is idle-priority and never part of a deploy). The last
  result is /var/lib/schoolctl/backup/last.json (and last-success.json): the audit reads them.
- Keys: the school's own SSH key (ed25519, derived from the vault secret `backup_ssh_seed`), the
  repository passphrase (`backup_passphrase`) and the repository key as borg exported it
  (`backup_repo_key`, stored by the controller after init) all live in the school's vault; the two
  the server needs reach it as root-only files. The backup host's own SSH host key is pinned in the
  school's known_hosts, taken over the controller's authenticated SSH connection to it.
- On the backup host (administered by the controller, never by the school): a `borg` account whose
  authorized_keys let each school's key run only `borg serve --append-only --restrict-to-repository
  <path>/<id>`; the repository is created there by the controller (repokey-blake2); pruning runs
  there too, from the controller (cli/backup/host.py), with the passphrase on stdin.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex

import schoolctl
from schoolctl.deploy import database, identity, moodle, nextcloud, upgrade
from schoolctl.deploy.php import FPM, PHP_VERSION
from schoolctl.deploy.render import render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, Directory, File, Layer, Service
from schoolctl.resources import templates

SCRIPT = "/usr/local/sbin/schoolctl-backup"
CONF_DIR = "/etc/schoolctl/backup"
CONFIG = f"{CONF_DIR}/config.json"
KNOWN_HOSTS = f"{CONF_DIR}/known_hosts"
SSH_KEY = "/etc/schoolctl/secrets/backup-ssh-key"
PASSPHRASE = "/etc/schoolctl/secrets/backup-passphrase"
STATE = "/var/lib/schoolctl/backup"
BORG_BASE = "/var/cache/schoolctl-borg"
UNIT = "schoolctl-backup"
LEDGER = "/var/lib/schoolctl-backup/ledger"   # on the backup host: the archives the controller has seen
KEY_COMMENT = "schoolctl-backup:"
ARCHIVE = r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]-\d{4}-\d\d-\d\dT\d{6}Z$"

# what stays out of an archive: caches, sessions, temporary files and previews (rebuilt by the apps)
EXCLUDES = [
    *(f"{moodle.DATAROOT}/{d}" for d in ("cache", "localcache", "temp", "sessions", "lock")),
    f"sh:{nextcloud.DATA}/appdata_*/preview",
    f"sh:{nextcloud.DATA}/*/cache",
    f"sh:{nextcloud.DATA}/*/uploads",
]


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def ssh_key(site: Site) -> tuple[str, str]:
    """The school's backup SSH key: (private key in OpenSSH's format, public key line). Derived from
    the vault secret `backup_ssh_seed`, so a restored or rebuilt server pushes with the same key; the
    file is written byte for byte the same each time (OpenSSH's random check value is derived too),
    so a deploy leaves it unchanged."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = hashlib.sha256(site.secret("backup_ssh_seed", 43).reveal().encode()).digest()
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kind = b"ssh-ed25519"
    blob = _string(kind) + _string(pub)
    check = hashlib.sha256(b"check" + seed).digest()[:4]
    private = check + check + blob + _string(seed + pub) + _string(f"{KEY_COMMENT}{site.id}".encode())
    private += bytes(range(1, 1 + (-len(private) % 8)))
    body = (b"openssh-key-v1\0" + _string(b"none") + _string(b"none") + _string(b"") + (1).to_bytes(4, "big")
            + _string(blob) + _string(private))
    text = base64.b64encode(body).decode()
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "".join(text[i:i + 70] + "\n" for i in range(0, len(text), 70))
    pem += "-----END OPENSSH PRIVATE KEY-----\n"
    public = f"ssh-ed25519 {base64.b64encode(blob).decode()} {KEY_COMMENT}{site.id}"
    return pem, public


def repository_path(site: Site) -> str:
    b = site.school.backup
    assert b is not None
    return f"{b.path}/{site.id}"


def repository(site: Site) -> str:
    """borg's URL of the school's repository, as the school server reaches it."""
    b = site.school.backup
    assert b is not None
    return f"ssh://{b.user}@{site.backup_address}:{site.backup_port}{repository_path(site)}"


def authorized_line(site: Site) -> str:
    """The school's line in the backup account's authorized_keys: borg serve, append-only, its own repository."""
    _, public = ssh_key(site)
    return (f'command="borg serve --append-only --restrict-to-repository {repository_path(site)}",restrict '
            f"{public}")


def enrolled_marker(site: Site) -> str:
    """What the controller remembers of an enrollment: when it changes, the backup host is enrolled again."""
    return hashlib.sha256(f"{site.backup_address}:{site.backup_port}\n{authorized_line(site)}".encode()).hexdigest()


def enroll_command(site: Site) -> str:
    """Shell for the backup host (root): borgbackup, the `borg` account, the school's authorized_keys
    line (replacing an older one of the same school), the ledger folder; prints the host's ed25519
    public key last. Idempotent."""
    b = site.school.backup
    assert b is not None
    q = shlex.quote
    user, home = q(b.user), q(b.path)
    keys = q(f"{b.path}/.ssh/authorized_keys")
    tag = q(f" {KEY_COMMENT}{site.id}")
    return "\n".join([
        "set -eu",
        "command -v borg >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq borgbackup >/dev/null; }",
        f"id -u {user} >/dev/null 2>&1 || useradd --system --home-dir {home} --no-create-home --shell /bin/sh {user}",
        f"install -d -o {user} -g {user} -m 0700 {home} {q(b.path + '/.ssh')}",
        f"install -d -o root -g root -m 0700 {q(LEDGER)}",
        f"[ -e {keys} ] || install -o {user} -g {user} -m 0600 /dev/null {keys}",
        f"line={q(authorized_line(site))}",
        f'if ! grep -qxF "$line" {keys}; then',
        f"  {{ grep -vF -e {tag} {keys} || true; printf '%s\\n' \"$line\"; }} > {keys}.new",
        f"  chown {user}:{user} {keys}.new && chmod 0600 {keys}.new && mv {keys}.new {keys}",
        "fi",
        "cat /etc/ssh/ssh_host_ed25519_key.pub",
    ])


def admin_borg(site: Site, args: str) -> str:
    """Shell for the backup host (root): borg as the backup account on the school's repository,
    locally (full access, not through borg serve), the passphrase read from stdin (fd 0)."""
    b = site.school.backup
    assert b is not None
    q = shlex.quote
    env = (f"BORG_PASSPHRASE_FD=0 BORG_BASE_DIR={q(b.path + '/.borg-admin')} BORG_HOSTNAME_IS_UNIQUE=yes "
           f"BORG_REPO={q(repository_path(site))} LANG=C.UTF-8")
    return f"runuser -u {q(b.user)} -- env {env} borg {args}"


def init_command(site: Site) -> str:
    """Shell for the backup host: the school's repository (repokey-blake2) unless it exists; then
    its key, as `borg key export` writes it (the controller keeps it in the vault)."""
    return (f"set -eu\n[ -e {shlex.quote(repository_path(site) + '/config')} ] || "
            f"{admin_borg(site, '--lock-wait 60 init --encryption=repokey-blake2')} >/dev/null\n"
            f"{admin_borg(site, 'key export')} </dev/null")


def config(site: Site) -> dict:
    """The settings of schoolctl-backup on the server (config.json)."""
    school = site.school
    dbs = database.databases(site)
    queries = {}
    if school.has("moodle"):
        queries |= {"moodle_courses": ("moodle", "SELECT count(*) FROM mdl_course WHERE format <> 'site'"),
                    "moodle_files": ("moodle", "SELECT count(*) FROM mdl_files WHERE filename <> '.'"),
                    "moodle_users": ("moodle", "SELECT count(*) FROM mdl_user WHERE deleted = 0")}
    if school.has("nextcloud"):
        queries["nextcloud_files"] = (
            "nextcloud", "SELECT count(*) FROM oc_filecache f JOIN oc_storages s ON s.numeric_id = f.storage "
            "JOIN oc_mimetypes m ON m.id = f.mimetype WHERE s.id LIKE 'home::%' AND f.path LIKE 'files/%' "
            "AND m.mimetype <> 'httpd/unix-directory'")
    if school.has("etherpad"):
        queries["pads"] = ("etherpad", "SELECT count(*) FROM store WHERE key ~ '^pad:[^:]+$'")
    data_paths = [p for s, p in (("moodle", moodle.DATAROOT), ("nextcloud", nextcloud.DATA)) if school.has(s)]
    configs = {"moodle-config.php": moodle.CONFIG} if school.has("moodle") else {}
    restore_configs, owners = {}, {}
    if school.has("nextcloud"):
        configs["nextcloud-config.php"] = f"{nextcloud.CURRENT}/config/config.php"
        restore_configs["nextcloud-config.php"] = f"{nextcloud.CURRENT}/config/config.php"
        owners["nextcloud-config.php"] = f"{nextcloud.USER}:{nextcloud.USER}"
    apps = [u for s, u in (("etherpad", "etherpad"), ("nextcloud", "nextcloud-cron.timer"),
                           ("moodle", "moodle-cron.timer")) if school.has(s)]
    php = [FPM] if school.has("moodle") or school.has("nextcloud") else []
    return {
        "school": site.id, "schoolctl_version": schoolctl.__version__, "repository": repository(site),
        "ssh_key": SSH_KEY, "known_hosts": KNOWN_HOSTS, "passphrase_file": PASSPHRASE,
        "state": STATE, "borg_base": BORG_BASE,
        "maintenance_lock": upgrade.MAINTENANCE_LOCK,  # the one path, shared with the apps' upgrades
        "current": {s: f"/srv/{s}/current" for s in ("moodle", "nextcloud", "etherpad") if school.has(s)},
        "databases": dbs, "count_queries": queries,
        "ldap_base": identity.ldap_settings(site).base_dn, "ldap_db": "/var/lib/ldap",
        "paths": [*data_paths, "/etc/schoolctl", "/etc/letsencrypt", "/etc/etherpad"],
        "data_paths": data_paths, "excludes": EXCLUDES,
        "configs": configs, "restore_configs": restore_configs, "config_owners": owners,
        "nextcloud": ({"user": nextcloud.USER, "php": f"/usr/bin/php{PHP_VERSION}", "current": nextcloud.CURRENT}
                      if school.has("nextcloud") else None),
        "stop_units": [*apps, *php], "start_units": [*php, *apps],
    }


def repo_key_b64(text: str) -> str:
    """`borg key export` output as one line for the vault."""
    return base64.b64encode(text.encode()).decode()


def layer(site: Site) -> Layer | None:
    b = site.school.backup
    if b is None or not site.backup_address:
        return None
    private, _ = ssh_key(site)
    known = f"[{site.backup_address}]:{site.backup_port} {site.backup_host_key}\n" if site.backup_host_key else ""
    timer = render("backup/schoolctl-backup.timer.j2", at=b.at, delay=b.randomized_delay_minutes)
    return Layer(
        name="backup", round=APPS,
        packages=["borgbackup", "openssh-client"],
        directories=[Directory(CONF_DIR, "0700"), Directory(STATE, "0700"), Directory(BORG_BASE, "0700")],
        files=[
            File(SCRIPT, (templates() / "backup" / "schoolctl-backup.py").read_text(), "0755"),
            File(CONFIG, json.dumps(config(site), indent=1, sort_keys=True) + "\n", "0600"),
            File(KNOWN_HOSTS, known, "0644"),
            File(SSH_KEY, private, "0600", secret=True),
            File(PASSPHRASE, site.secret("backup_passphrase", 48).reveal() + "\n", "0600", secret=True),
            File(f"/etc/systemd/system/{UNIT}.service", render("backup/schoolctl-backup.service.j2", script=SCRIPT),
                 then="systemctl daemon-reload"),
            File(f"/etc/systemd/system/{UNIT}.timer", timer, then="systemctl daemon-reload",
                 restart=(f"{UNIT}.timer",)),
        ],
        services=[Service(f"{UNIT}.timer")],
    )
