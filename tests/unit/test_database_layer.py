"""The database layer rendered for example schools: PostgreSQL on loopback, one database per app."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from schoolctl.config.loader import load
from schoolctl.deploy import database
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM
from schoolctl.secrets import Secret

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
PG_HBA = "/etc/postgresql/17/main/pg_hba.conf"
CONF = "/etc/postgresql/17/main/conf.d/50-schoolctl.conf"


def make_site(school_id: str, services: dict[str, Any] | None = None,
              privacy: dict[str, Any] | None = None) -> tuple[Site, dict[str, Secret]]:
    school = load(SCHOOLS).select([school_id])[0]
    update: dict[str, Any] = {}
    if services is not None:
        update["services"] = school.services.model_copy(update=services)
    if privacy:
        update["privacy"] = school.privacy.model_copy(update=privacy)
    school = school.model_copy(update=update)
    handed: dict[str, Secret] = {}

    def secret(name: str, length: int = 32) -> Secret:
        return handed.setdefault(name, Secret(f"Pw{name.replace('_', '')}{len(handed):02d}Q" * 2))

    return Site(school=school, secret=secret), handed


def files(site: Site) -> dict[str, Any]:
    return {f.path: f for f in database.layer(site).files}


def test_layer_shape():
    site, _ = make_site("demo")
    layer = database.layer(site)
    assert layer.round == SYSTEM
    assert layer.packages == ["postgresql-17"]
    assert [s.name for s in layer.services] == ["postgresql@17-main"]
    fs = files(site)
    assert fs[CONF].restart == ("postgresql@17-main",) and fs[PG_HBA].reload == ("postgresql@17-main",)
    assert (fs[PG_HBA].owner, fs[PG_HBA].mode) == ("postgres", "0640")


def test_listens_on_localhost_with_scram():
    site, _ = make_site("demo")
    conf = files(site)[CONF].data.decode()
    assert "listen_addresses = 'localhost'\n" in conf
    assert "password_encryption = scram-sha-256\n" in conf
    assert "log_line_prefix = '%m [%p] %q%u@%d '\n" in conf


def test_full_access_logs_add_client_address():
    site, _ = make_site("demo", privacy={"access_log": "full"})
    assert "log_line_prefix = '%m [%p] %q%u@%d %h '\n" in files(site)[CONF].data.decode()


def test_pg_hba_exact():
    site, _ = make_site("escola-pins")
    hba = files(site)[PG_HBA].data.decode()
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rules == [
        ["local", "all", "postgres", "peer"],
        ["host", "moodle", "moodle", "127.0.0.1/32", "scram-sha-256"],
        ["host", "moodle", "moodle", "::1/128", "scram-sha-256"],
        ["host", "nextcloud", "nextcloud", "127.0.0.1/32", "scram-sha-256"],
        ["host", "nextcloud", "nextcloud", "::1/128", "scram-sha-256"],
        ["host", "etherpad", "etherpad", "127.0.0.1/32", "scram-sha-256"],
        ["host", "etherpad", "etherpad", "::1/128", "scram-sha-256"],
    ]


def test_databases_only_for_enabled_services():
    site, _ = make_site("demo", services={"nextcloud": None, "etherpad": None})
    layer = database.layer(site)
    assert [s.name for s in layer.steps] == ["database and role moodle"]
    assert "nextcloud" not in files(site)[PG_HBA].data.decode()
    assert [p for p in files(site) if "/secrets/" in p] == ["/etc/schoolctl/secrets/db_moodle"]
    off, _ = make_site("demo", services={"moodle": None, "nextcloud": None, "etherpad": None})
    assert database.layer(off) is None


def test_credentials():
    site, handed = make_site("demo")
    c = database.credentials(site, "nextcloud")
    assert (c.name, c.user, c.host, c.port) == ("nextcloud", "nextcloud", "127.0.0.1", 5432)
    assert c.password is handed["db_nextcloud"] and str(c.password) == "********"
    with pytest.raises(ValueError):
        database.credentials(site, "jitsi")


def test_secrets_only_in_secret_files_and_never_on_a_command_line():
    site, handed = make_site("demo")
    layer = database.layer(site)
    for f in layer.files:
        values = [s.reveal().encode() for s in handed.values()]
        if f.secret:
            assert f.mode == "0600" and f.owner == "root" and f.path.startswith("/etc/schoolctl/secrets/")
            assert f.data in values
        else:
            assert not any(v in f.data for v in values), f.path
    for step in layer.steps:
        for s in handed.values():
            assert s.reveal() not in step.check and s.reveal() not in step.apply


def test_role_step_reads_the_password_from_the_root_only_file():
    site, _ = make_site("demo")
    step = database.layer(site).steps[0]
    assert "cat /etc/schoolctl/secrets/db_moodle;" in step.apply
    assert "PASSWORD :'pw'" in step.apply
    assert step.apply.rstrip().endswith("sha256sum < /etc/schoolctl/secrets/db_moodle > "
                                        "/etc/schoolctl/secrets/db_moodle.applied")
    assert "/etc/schoolctl/secrets/db_moodle.applied" in step.check
    assert "rolname = 'moodle'" in step.check


def test_role_step_stdin_is_what_psql_expects(tmp_path):
    """Run the step's producer half with a stand-in psql that prints its stdin: psql gets a
    `\\set pw <value>` line followed by the SQL."""
    site, handed = make_site("demo")
    step = database.layer(site).steps[0]
    secret = tmp_path / "db_moodle"
    secret.write_text(handed["db_moodle"].reveal())
    producer = step.apply.split(" | runuser", 1)[0].replace("/etc/schoolctl/secrets/db_moodle", str(secret))
    out = subprocess.run(["sh", "-ec", f"{producer} | cat"], capture_output=True, text=True, check=True).stdout
    first, rest = out.split("\n", 1)
    assert first == f"\\set pw {handed['db_moodle'].reveal()}"
    assert rest.startswith("SET log_statement = 'none';\n")
    assert "CREATE DATABASE moodle OWNER moodle ENCODING ''UTF8''" in rest


def test_logrotate_retention():
    site, _ = make_site("escola-pins")
    rot = files(site)["/etc/logrotate.d/postgresql-common"].data.decode()
    assert "\tdaily\n" in rot and "\trotate 7\n" in rot and "\tmaxage 7\n" in rot
