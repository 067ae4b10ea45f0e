"""The PHP layer rendered for example schools: one FPM pool per PHP app, extensions, Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schoolctl.config.loader import load
from schoolctl.deploy import php
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM
from schoolctl.secrets import Secret

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"
POOLS = "/etc/php/8.4/fpm/pool.d"


def make_site(school_id: str, services: dict[str, Any] | None = None) -> Site:
    school = load(SCHOOLS).select([school_id])[0]
    if services is not None:
        school = school.model_copy(update={"services": school.services.model_copy(update=services)})
    return Site(school=school, secret=lambda name, length=32: Secret("never-used-" + name))


def files(site: Site) -> dict[str, Any]:
    return {f.path: f for f in php.layer(site).files}


def pool(site: Site, service: str) -> dict[str, str]:
    lines = files(site)[f"{POOLS}/{service}.conf"].data.decode().splitlines()
    return dict(line.split(" = ", 1) for line in lines if " = " in line and not line.startswith(";"))


def test_helpers():
    assert php.PHP_VERSION == "8.4"
    assert php.pool_socket("moodle") == "/run/php/php8.4-fpm-moodle.sock"
    assert php.service_user("nextcloud") == "nextcloud"
    assert php.php_cli("moodle", "admin/cli/cfg.php --name=x") == \
        "runuser -u moodle -- /usr/bin/php8.4 admin/cli/cfg.php --name=x"
    assert php.REDIS_SOCKET == "/run/redis/redis-server.sock"


def test_pools_only_for_enabled_services_and_www_removed():
    both = files(make_site("demo"))
    assert f"{POOLS}/moodle.conf" in both and f"{POOLS}/nextcloud.conf" in both
    assert both[f"{POOLS}/www.conf"].absent
    only = files(make_site("demo", services={"nextcloud": None}))
    assert [p for p in only if p.startswith(POOLS) and not only[p].absent] == [f"{POOLS}/moodle.conf"]
    assert php.layer(make_site("demo", services={"moodle": None, "nextcloud": None})) is None


def test_moodle_pool():
    site = make_site("institut-mar")  # moodle max_upload_mb: 200
    p = pool(site, "moodle")
    assert p["user"] == "moodle" and p["group"] == "moodle"
    assert p["listen"] == "/run/php/php8.4-fpm-moodle.sock"
    assert (p["listen.owner"], p["listen.group"], p["listen.mode"]) == ("www-data", "www-data", "0660")
    assert p["php_admin_value[max_input_vars]"] == "5000"
    assert p["php_admin_value[upload_max_filesize]"] == "200M" and p["php_admin_value[post_max_size]"] == "200M"
    f = files(site)[f"{POOLS}/moodle.conf"]
    assert f.check == "php-fpm8.4 -t" and f.restart == ("php8.4-fpm.service",)


def test_nextcloud_pool():
    p = pool(make_site("demo"), "nextcloud")
    assert p["user"] == "nextcloud" and p["php_admin_value[memory_limit]"] == "512M"
    assert p["listen"] == "/run/php/php8.4-fpm-nextcloud.sock"


def test_ini_expose_php_off_and_opcache():
    fs = files(make_site("demo"))
    for sapi in ("fpm", "cli"):
        ini = fs[f"/etc/php/8.4/{sapi}/conf.d/90-schoolctl.ini"].data.decode()
        assert "expose_php = Off\n" in ini and "opcache.enable = 1\n" in ini
        assert "apc.enable_cli = 1\n" in ini  # nextcloud is on
    moodle_only = files(make_site("demo", services={"nextcloud": None}))
    assert "apc." not in moodle_only["/etc/php/8.4/cli/conf.d/90-schoolctl.ini"].data.decode()


def test_packages_per_service():
    moodle = php.layer(make_site("demo", services={"nextcloud": None})).packages
    assert moodle == ["php8.4-fpm", "php8.4-cli", "php8.4-intl", "php8.4-xml", "php8.4-mbstring", "php8.4-curl",
                      "php8.4-zip", "php8.4-gd", "php8.4-soap", "php8.4-pgsql", "php8.4-opcache", "php8.4-readline",
                      "redis-server"]
    both = php.layer(make_site("demo")).packages
    assert {"php8.4-bcmath", "php8.4-gmp", "php8.4-ldap", "php-apcu", "php-redis"} <= set(both)
    assert len(both) == len(set(both))


def test_redis_on_unix_socket_only():
    layer = php.layer(make_site("demo"))
    conf = {f.path: f for f in layer.files}["/etc/redis/redis.conf"].data.decode()
    assert "port 0\n" in conf and "unixsocket /run/redis/redis-server.sock\n" in conf
    assert "unixsocketperm 770\n" in conf
    assert {s.name for s in layer.services} == {"php8.4-fpm.service", "redis-server"}


def test_users_before_packages_and_redis_group_after():
    layer = php.layer(make_site("demo"))
    assert layer.round == SYSTEM
    assert [s.name for s in layer.pre_steps] == ["system user moodle", "system user nextcloud"]
    create = layer.pre_steps[0]
    assert create.check == "id -u moodle"
    assert create.apply == ("useradd --system --user-group --home-dir /var/lib/moodle --shell /usr/sbin/nologin "
                            "moodle")
    assert [s.name for s in layer.steps] == ["moodle may use Redis", "nextcloud may use Redis"]
    assert "usermod -a -G redis moodle" in layer.steps[0].apply
