"""Build the deploy's view of a school (deploy.site.Site): secrets from the vault, and the city
services it reaches: the fleet's for a real school, the lab's for a `lab:NAME` school."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from gevent.lock import RLock

from schoolctl.config.model import EffectiveSchool
from schoolctl.deploy.site import Endpoint, Site
from schoolctl.errors import SecretError
from schoolctl.secrets import Secret, SecretStore, generate

BUILD_MACHINE_CAS = Path("/usr/local/share/ca-certificates")


def mirror_setting(school: EffectiveSchool) -> str | None:
    return os.environ.get("SCHOOLCTL_MIRROR") or school.fleet.mirror


def _endpoint(url: str, default_port: int) -> Endpoint:
    u = urlparse(url)
    return Endpoint(u.hostname or "", u.port or default_port)


def _secrets(store: SecretStore, school_id: str, readonly: bool):
    """A secret getter: generates and stores on first use, or (plan) returns a throwaway value."""
    cache: dict[str, Secret] = {}

    def get(name: str, length: int = 32) -> Secret:
        if name not in cache:
            if readonly:
                cache[name] = store.load(school_id).get(name) or Secret(generate(length))
            else:
                cache[name] = store.get(school_id, name, length)
        return cache[name]

    return get


def _city_secrets(store: SecretStore):
    """The city's own secrets (e.g. the BBB pool's shared secret): set by an operator, never generated."""

    def get(name: str, length: int = 32) -> Secret:
        value = store.load("fleet").get(name)
        if value is None:
            raise SecretError(f"the city secret '{name}' is not in the vault; set it with "
                              f"`schoolctl secrets set fleet {name}` (the value is read from standard input)")
        return value

    return get


def build_site(school: EffectiveSchool, store: SecretStore, readonly: bool = False) -> Site:
    """The Site for `school`. For a lab school, starts the lab's city services (proxy, ACME,
    mirror) and maps the school's domain to its lab host."""
    fleet = school.fleet
    mirror, note = mirror_setting(school), ""
    if mirror and urlparse(mirror).scheme not in ("http", "https") and not Path(mirror).is_dir():
        mirror, note = None, f"the mirror folder {mirror} does not exist"
    site = Site(school=school, secret=_secrets(store, school.id, readonly), fleet_secret=_city_secrets(store),
                proxy=fleet.proxy, apt_proxy=fleet.proxy, mirror=mirror, mirror_note=note,
                acme_directory=fleet.tls.acme_directory)
    out: list[Endpoint] = []
    # without a city proxy, apt reaches the Debian archive itself
    archives = (fleet.debian.mirror, fleet.debian.security) if fleet.debian and not fleet.proxy else ()
    for url, port in ((fleet.proxy, 3128), (fleet.tls.acme_directory, 443),
                      *((a, 443 if a.startswith("https:") else 80) for a in archives)):
        if url:
            out.append(_endpoint(url, port))
    if site.mirror and urlparse(site.mirror).scheme in ("http", "https"):
        out.append(_endpoint(site.mirror, 443 if site.mirror.startswith("https") else 80))
    out += [Endpoint(d, 53, "udp") for d in fleet.dns] + [Endpoint(d, 53, "tcp") for d in fleet.dns]
    out += [Endpoint(n, 123, "udp") for n in fleet.ntp]
    site.outbound = out
    if school.server.lab_name:
        _lab(site, school)
    if school.backup is not None:
        _backup_host(site, store, readonly)
    return site


def _backup_host(site: Site, store: SecretStore, readonly: bool) -> None:
    """The backup host's address (a lab host's, when it runs), its host key as last read by the
    controller (the vault), and the firewall's way out to it."""
    from schoolctl.connect import address
    from schoolctl.errors import LabError, ServerError

    b = site.school.backup
    assert b is not None
    site.backup_port = b.host.ssh_port
    try:
        site.backup_address = address(b.host)
        if b.host.lab_name:  # lab hosts reach each other only through a relay on the bridge
            from schoolctl.lab import Lab

            site.backup_address, site.backup_port = Lab().relay(b.host.lab_name)
    except (ServerError, LabError) as e:  # a lab backup host that is not running: the backup layer waits
        site.backup_address = ""
        site.notes.append(f"backups not set up: backup host {b.host.address}: {e.message}")
        return
    site.backup_host_key = store.load(site.school.id).get("backup_host_key", Secret("")).reveal()
    site.outbound.append(Endpoint(site.backup_address, site.backup_port))


_lab_lock = RLock()  # the lab's own lock is a process-wide flock: one greenlet at a time goes in


def _lab(site: Site, school: EffectiveSchool) -> None:
    with _lab_lock:
        _lab_services(site, school)


def _lab_services(site: Site, school: EffectiveSchool) -> None:
    from schoolctl.lab import Lab
    from schoolctl.lab.debian import archive as build_machine_archive

    lab = Lab()
    folder = os.environ.get("SCHOOLCTL_MIRROR")
    served = bool(folder and Path(folder).is_dir())
    city = lab.services(acme=True, mirror=Path(folder) if served else None)
    address = lab.host(school.server.lab_name).address
    site.lab = True
    site.upstream_apt = False  # the lab reaches Debian's and npm's registries only
    # Debian through apt-cacher-ng, which forwards to the host in the URI: the build machine's own archive
    site.debian_mirror, site.debian_security = build_machine_archive()
    for name in site.names:
        lab.register_domain(name, address)
    site.proxy, site.apt_proxy = city.proxy_url, city.apt_proxy_url
    site.acme_directory = city.acme_directory
    site.acme_ca_pem = Path(city.acme_ca_file).read_text()
    site.trusted_ca_pems = [p.read_text() for p in sorted(BUILD_MACHINE_CAS.glob("*.crt"))]
    if served and city.mirror_url:  # the lab's mirror daemon serves SCHOOLCTL_MIRROR (another folder: restarted)
        site.mirror = city.mirror_url
    site.outbound = [_endpoint(city.proxy_url, 8888), _endpoint(city.apt_proxy_url, 3142),
                     _endpoint(city.acme_directory, 14000)]
    if served and city.mirror_url:
        site.outbound.append(_endpoint(city.mirror_url, 80))
