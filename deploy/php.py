"""PHP 8.4-FPM (Debian) with one pool per PHP app, each as its own system user, and Redis on a unix
socket for the apps' caches, sessions and file locks. Only what the enabled apps need."""

from __future__ import annotations

import shlex

from schoolctl.config.model import PHP_SERVICES
from schoolctl.deploy.render import integer, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import SYSTEM, File, Layer, Service, Step

PHP_VERSION = "8.4"
# the unit with its suffix: ops.unit_name() would take the dot in "8.4" for one
FPM_PACKAGE = f"php{PHP_VERSION}-fpm"
FPM = f"{FPM_PACKAGE}.service"
REDIS_SOCKET = "/run/redis/redis-server.sock"
ETC = f"/etc/php/{PHP_VERSION}"

# Debian packages of the PHP extensions each app needs (sodium, opcache's loader and the rest of
# the core ship in php8.4-common/-opcache). PECL extensions are named php-<ext> in Debian.
EXTENSIONS = {
    "moodle": ["intl", "xml", "mbstring", "curl", "zip", "gd", "soap", "pgsql", "opcache", "readline"],
    "nextcloud": ["intl", "xml", "mbstring", "curl", "zip", "gd", "pgsql", "opcache", "readline", "bcmath", "gmp",
                  "ldap", "php-apcu", "php-redis"],
}

# Pool settings that differ per app (Moodle's installer refuses max_input_vars < 5000).
POOLS = {
    "moodle": {"memory_limit": "256M", "max_execution_time": 300, "max_children": 20,
               "admin_values": [("max_input_vars", "5000")]},
    "nextcloud": {"memory_limit": "512M", "max_execution_time": 3600, "max_children": 20,
                  "admin_values": [("max_input_vars", "5000"), ("output_buffering", "0")]},
}
NEXTCLOUD_UPLOAD_MB = 2048


def pool_socket(service: str) -> str:
    """The FPM socket nginx passes `service`'s PHP requests to."""
    return f"/run/php/php{PHP_VERSION}-fpm-{service}.sock"


def service_user(service: str) -> str:
    """The system user `service`'s PHP code runs as (its pool, its cron, its CLI)."""
    return service


def php_cli(service: str, args: str) -> str:
    """A shell command running PHP's CLI as `service`'s user; `args` is shell text, already quoted."""
    return f"runuser -u {service_user(service)} -- /usr/bin/php{PHP_VERSION} {args}"


def php_services(site: Site) -> list[str]:
    return [s for s in PHP_SERVICES if site.school.has(s)]


def packages(services: list[str]) -> list[str]:
    """The Debian packages for PHP-FPM, the CLI and the enabled apps' extensions, and Redis."""
    exts = list(dict.fromkeys(e for s in services for e in EXTENSIONS[s]))
    names = [FPM_PACKAGE, f"php{PHP_VERSION}-cli"]
    names += [e if e.startswith("php-") else f"php{PHP_VERSION}-{e}" for e in exts]
    return [*names, "redis-server"]


def _upload_mb(site: Site, service: str) -> int:
    if service == "moodle":
        return integer(site.school.services.moodle.max_upload_mb, "moodle.max_upload_mb")  # type: ignore[union-attr]
    return NEXTCLOUD_UPLOAD_MB


def _user_steps(service: str) -> tuple[Step, Step]:
    user = shlex.quote(service_user(service))
    create = Step(f"system user {service}", check=f"id -u {user}",
                  apply=(f"useradd --system --user-group --home-dir /var/lib/{service} "
                         f"--shell /usr/sbin/nologin {user}"))
    # the group redis exists once redis-server is installed: join it then, and restart FPM so the
    # pool's workers get the new group
    redis = Step(f"{service} may use Redis", check=f"id -nG {user} | tr ' ' '\\n' | grep -qx redis",
                 apply=f"usermod -a -G redis {user}\nsystemctl try-restart {FPM}")
    return create, redis


def layer(site: Site) -> Layer | None:
    services = php_services(site)
    if not services:
        return None
    files = [File(f"{ETC}/fpm/pool.d/www.conf", "", absent=True, restart=(FPM,))]
    for s in services:
        p = POOLS[s]
        conf = render("php/pool.conf.j2", service=s, user=service_user(s), socket=pool_socket(s),
                      upload_mb=_upload_mb(site, s), **p)
        files.append(File(f"{ETC}/fpm/pool.d/{s}.conf", conf, check=f"php-fpm{PHP_VERSION} -t", restart=(FPM,)))
    apcu = "nextcloud" in services
    for sapi in ("fpm", "cli"):
        files.append(File(f"{ETC}/{sapi}/conf.d/90-schoolctl.ini",
                          render("php/php.ini.j2", version=PHP_VERSION, sapi=sapi, apcu=apcu),
                          restart=(FPM,) if sapi == "fpm" else ()))
    files.append(File("/etc/redis/redis.conf", render("php/redis.conf.j2", socket=REDIS_SOCKET), "0640",
                      "redis", "redis", restart=("redis-server",)))
    user_steps = [_user_steps(s) for s in services]
    return Layer(
        name="php", round=SYSTEM,
        pre_steps=[create for create, _ in user_steps],
        packages=packages(services),
        files=files,
        services=[Service(FPM), Service("redis-server")],
        steps=[redis for _, redis in user_steps],
    )
