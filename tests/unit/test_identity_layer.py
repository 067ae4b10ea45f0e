"""The identity layer (slapd) as data: TLS only, certificate checked, ACLs, no secret in the open."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from schoolctl.config.loader import load
from schoolctl.deploy import identity
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Layer, merge
from schoolctl.secrets import Secret

SECRETS = {"ldap_admin": "Adm1nSecretValue-xyz", "ldap_apps": "AppsSecretValue-abc123",
           "ldap_moodle": "MoodleBind-0987xyz"}


@pytest.fixture
def site(schools: Path) -> Site:
    school = load(schools).schools["demo"]
    return Site(school=school, secret=lambda name, length=32: Secret(SECRETS[name]))


@pytest.fixture
def layer(site: Site) -> Layer:
    result = identity.layer(site)
    assert result is not None
    return result


def files(layer: Layer) -> dict[str, str]:
    return {f.path: f.data.decode() for f in layer.files}


def test_settings_for_the_apps(site: Site) -> None:
    s = identity.ldap_settings(site)
    base = "dc=demo,dc=escoles,dc=bcn,dc=example"
    assert (s.uri, s.base_dn, s.people_dn, s.groups_dn, s.bind_dn) == (
        "ldaps://127.0.0.1:636", base, f"ou=people,{base}", f"ou=groups,{base}", f"cn=apps,{base}")
    assert s.ca_file == "/etc/ldap/tls/ca.crt" and s.uid_attr == "uid"
    assert s.bind_password.reveal() == SECRETS["ldap_apps"] and str(s.bind_password) != SECRETS["ldap_apps"]
    assert s.teachers_dn == f"cn=teachers,ou=groups,{base}" and s.class_group("1 A") == "class-1-a"


def test_tls_only_and_certificate_checked(layer: Layer) -> None:
    f = files(layer)
    assert 'SLAPD_SERVICES="ldapi:/// ldaps://127.0.0.1:636/"' in f["/etc/default/slapd"]
    services = next(line for line in f["/etc/default/slapd"].splitlines() if line.startswith("SLAPD_SERVICES="))
    assert "ldap://" not in services
    conf = f["/etc/ldap/ldap.conf"]
    assert "TLS_REQCERT demand" in conf and "TLS_CACERT /etc/ldap/tls/ca.crt" in conf
    assert "URI ldaps://127.0.0.1:636" in conf
    cert = f[identity.CERT_SCRIPT]
    assert "subjectAltName=IP:127.0.0.1,DNS:localhost" in cert and "extendedKeyUsage=serverAuth" in cert


def test_acls_hide_passwords_and_suspended_people(layer: Layer) -> None:
    config = files(layer)["/etc/schoolctl/identity/slapd-config.ldif"]
    base = "dc=demo,dc=escoles,dc=bcn,dc=example"
    assert "olcAccess: {3}to attrs=userPassword by self =xw by anonymous auth by * none" in config
    assert f'olcAccess: {{1}}to dn.subtree="ou=suspended,{base}" by * none' in config
    assert f'to dn.subtree="ou=people,{base}" by dn.exact="cn=apps,{base}" read' in config
    assert "olcDisallows: bind_anon" in config and "olcRequires: authc" in config
    assert "olcAccess: {7}to * by * none" in config


def test_moodle_may_set_but_never_read_a_persons_password(layer: Layer) -> None:
    """cn=moodle writes (=w, no read, no auth) userPassword in ou=people only, before the general rule;
    ppolicy hashes what it writes in cleartext; its account is added once, its password replaced."""
    f = files(layer)
    config = f["/etc/schoolctl/identity/slapd-config.ldif"]
    base = "dc=demo,dc=escoles,dc=bcn,dc=example"
    assert (f'olcAccess: {{2}}to dn.subtree="ou=people,{base}" attrs=userPassword by self =xw by '
            f'dn.exact="cn=moodle,{base}" =w by anonymous auth by * none') in config
    assert config.index("{2}to dn.subtree") < config.index("{3}to attrs=userPassword")
    assert "olcModuleLoad: {4}ppolicy" in config and "olcPPolicyHashCleartext: TRUE" in config
    assert "olcPPolicyDefault" not in config   # no policy: no lockout, no expiry
    account = f["/etc/schoolctl/identity/moodle-account.ldif"]
    assert account.startswith(f"dn: cn=moodle,{base}\n") and "userPassword: {SSHA512}" in account
    assert SECRETS["ldap_moodle"] not in account
    step = next(s for s in layer.steps if "cn=moodle" in s.name)
    assert "ldapadd" in step.apply and "ldapmodify" in step.apply and "moodle-password.ldif" in step.check


def test_no_secret_in_clear_and_hashes_are_stable(site: Site, layer: Layer) -> None:
    for f in layer.files:
        text = f.data.decode()
        if f.path == identity.APPS_PASSWORD_FILE:
            assert text == SECRETS["ldap_apps"] and f.mode == "0600" and f.secret
            continue
        assert SECRETS["ldap_admin"] not in text and SECRETS["ldap_apps"] not in text, f.path
        if "userPassword" in text or "olcRootPW" in text:
            assert f.secret and f.mode == "0600", f.path
    for step in [*layer.steps, *layer.pre_steps]:
        assert all(v not in step.check + step.apply for v in SECRETS.values())
    again = identity.layer(site)
    assert again is not None and files(again) == files(layer)   # a no-op deploy stays a no-op


def test_root_password_hash_verifies(layer: Layer) -> None:
    config = files(layer)["/etc/schoolctl/identity/slapd-config.ldif"]
    value = next(line.split(": ", 1)[1] for line in config.splitlines() if line.startswith("olcRootPW:"))
    raw = base64.b64decode(value.removeprefix("{SSHA512}"))
    digest, salt = raw[:64], raw[64:]
    assert hashlib.sha512(SECRETS["ldap_admin"].encode() + salt).digest() == digest and len(salt) == 16


def test_merges_with_the_base_layers(site: Site, layer: Layer) -> None:
    from schoolctl.deploy import base

    merge([base.layer(site), layer])


@pytest.mark.parametrize(("value", "line"), [
    ("1A", "x: 1A"),
    ("Núria", "x:: TsO6cmlh"),
    (" lead", "x:: IGxlYWQ="),
    (":colon", "x:: OmNvbG9u"),
    ("", "x:"),
])
def test_ldif_lines(value: str, line: str) -> None:
    assert identity.ldif_line("x", value) == line
