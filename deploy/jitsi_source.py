"""Where Jitsi's own parts (jicofo, jitsi-videobridge2, jitsi-meet-web, jitsi-meet-prosody) come from:
the one place where the Jitsi layer's two sources differ.

- `apt`: Jitsi's pinned apt repository (fleet `apt_repos.jitsi`, key fingerprint checked before apt
  trusts it), for a real school that reaches it. Debconf answers keep the packages from prompting
  or making certificates; their maintainer scripts make the users, /etc/jitsi/*/config and units.
- `mirror`: the tarballs a city builds itself (../shared/tools/build-jitsi-lab.sh, laid out as the
  .debs install) in the mirror's `jitsi/` folder, each listed in its SHA256SUMS: for the lab and
  any city without the apt repository. Each is fetched, checked against SHA256SUMS and unpacked
  into / as dpkg would (files of the previous version that the new one lacks are removed), and
  the layer does what the maintainer scripts do: group jitsi, users jvb and jicofo,
  /etc/jitsi/{videobridge,jicofo}/config, a systemd unit for jicofo (upstream ships only an init
  script), `sysctl --system`, Debian 13's OpenJDK 21.
- neither: only the Debian side (prosody, coturn, nginx site, web config), with a note.

Everything else (jvb.conf, jicofo.conf, prosody, nginx, config.js) is the same for both.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlparse

from schoolctl.deploy import artifacts
from schoolctl.deploy.apt_repo import apt_conf_dir, apt_repo
from schoolctl.deploy.render import one_line, render
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Directory, File, Step
from schoolctl.errors import ArtifactError

PACKAGES = ("jitsi-videobridge2", "jicofo", "jitsi-meet-web", "jitsi-meet-prosody")
MIRROR_DIR = "jitsi"
STATE = "/var/lib/schoolctl/jitsi"
# what the mirror source needs from Debian 13: the build script's RUNTIME section, and the Lua libraries
# jitsi-meet-prosody's .deb depends on (its plugins load cjson, luaossl, basexx, inspect, sec)
RUNTIME_PACKAGES = ["openjdk-21-jre-headless", "libssl3t64", "procps", "uuid-runtime",
                    "openssl", "lua-sec", "lua-basexx", "lua-luaossl", "lua-cjson", "lua-inspect"]
JICOFO_UNIT = "/usr/lib/systemd/system/jicofo.service"
_TARBALL = re.compile(r"^jitsi/(?P<package>[a-z0-9-]+?)-(?P<version>\d[A-Za-z0-9.+~-]*)\.tar\.gz$")
# the file of each package whose presence says the package is installed
MAIN_FILE = {"jitsi-videobridge2": "/usr/share/jitsi-videobridge/jitsi-videobridge.jar",
             "jicofo": "/usr/share/jicofo/jicofo.jar",
             "jitsi-meet-web": "/usr/share/jitsi-meet/libs/app.bundle.min.js",
             "jitsi-meet-prosody": "/usr/share/jitsi-meet/prosody-plugins/mod_client_proxy.lua"}


@dataclass(frozen=True)
class Tarball:
    """One package's tarball in the mirror (`jitsi/<package>-<version>.tar.gz`)."""

    package: str
    version: str
    name: str          # its path in the mirror, as SHA256SUMS lists it
    sha256: str
    source: str        # a file on the controller (uploaded) or the mirror's URL
    upload: bool


@dataclass
class Source:
    """What one source adds to the Jitsi layer."""

    kind: str                         # "apt", "mirror" or "none"
    packages: list[str] = field(default_factory=list)
    pre_files: list[File] = field(default_factory=list)
    pre_steps: list[Step] = field(default_factory=list)
    directories: list[Directory] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        """jicofo and the videobridge are installed (by either source)."""
        return self.kind != "none"


def mirror_tarballs(site: Site) -> dict[str, Tarball]:
    """The Jitsi packages the mirror's SHA256SUMS lists under `jitsi/`. More than one version of a
    package is refused: the mirror step (bench/jitsi_mirror.py) keeps one build there."""
    if not site.mirror:
        return {}
    text, where = artifacts._sums_text(site.mirror)
    artifacts.parse_sums(text, where)  # the same refusals as for every release
    found: dict[str, Tarball] = {}
    local = urlparse(site.mirror).scheme not in ("http", "https")
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        m = _TARBALL.fullmatch(parts[1].removeprefix("*")) if len(parts) == 2 else None
        if not m or m["package"] not in PACKAGES:
            continue
        name, package = m.group(0), m["package"]
        if package in found:
            raise ArtifactError(f"{where} line {number}: a second {package} ({found[package].version} and "
                                f"{m['version']}); keep one Jitsi build in the mirror's jitsi/ folder")
        digest = artifacts.checked_sha256(parts[0], f"{where} line {number}")
        version = artifacts.checked_name(m["version"], f"{package} version")
        source = (str(artifacts._mirror_path(site.mirror, name)) if local
                  else urljoin(site.mirror.rstrip("/") + "/", name))
        found[package] = Tarball(package, version, name, digest, source, local)
    return found


def source(site: Site, meet: str) -> Source:
    """The source of the school's Jitsi packages: the pinned apt repository when the server reaches
    it, else the mirror's tarballs when it has all four, else none."""
    repo = site.school.fleet.apt_repos.jitsi
    if repo is not None and site.upstream_apt:
        files, steps = apt_repo(site, "jitsi", repo)
        return Source("apt", packages=list(PACKAGES), pre_files=files, pre_steps=[*steps, _preseed(meet)],
                      directories=[apt_conf_dir()])
    tarballs = mirror_tarballs(site)
    if set(tarballs) != set(PACKAGES):
        return Source("none")
    return Source("mirror", packages=list(RUNTIME_PACKAGES),
                  pre_steps=[_users(), *(install_step(site, tarballs[p]) for p in PACKAGES)],
                  directories=[Directory("/etc/jitsi/videobridge", "0750", "jvb", "jitsi"),
                               Directory("/etc/jitsi/jicofo", "0750", "jicofo", "jitsi"),
                               Directory("/var/log/jitsi", "0770", "jvb", "jitsi")],
                  files=_maintainer_files(),
                  versions={p: t.version for p, t in tarballs.items()})


# --- the mirror source: what dpkg and the maintainer scripts would do -------------------------------

def _users() -> Step:
    """Group jitsi and the system users jvb and jicofo, homes as upstream's postinsts make them."""
    return Step("Jitsi's group jitsi and users jvb, jicofo (as upstream's postinsts)",
                check="getent group jitsi && [ \"$(id -gn jvb)\" = jitsi ] && [ \"$(id -gn jicofo)\" = jitsi ]",
                apply="getent group jitsi >/dev/null || groupadd --system jitsi\n"
                      "for u in jvb:/usr/share/jitsi-videobridge jicofo:/usr/share/jicofo; do\n"
                      "  name=${u%%:*}; home=${u#*:}\n"
                      "  getent passwd $name >/dev/null || useradd -r -g jitsi --shell /bin/bash --create-home "
                      "-d $home $name\n"
                      "  usermod -g jitsi $name\n"
                      "done")


def install_step(site: Site, t: Tarball) -> Step:
    """Fetch (or receive) one tarball, check its sha256, unpack it into / as dpkg would: files the
    previous version had and this one lacks are removed; existing folders keep their owner and mode."""
    q = shlex.quote
    raw_tmp = f"/root/.schoolctl-download-{t.package}.tar.gz"  # /root exists before the upload
    tmp, marker, listing = q(raw_tmp), q(f"{STATE}/{t.package}.sha256"), q(f"{STATE}/{t.package}.list")
    # uploaded: the steps operation sends the file to tmp first
    get = "" if t.upload else f"curl --fail --silent --show-error --location --retry 2 -o {tmp} {q(t.source)}\n"
    apply = (
        f"install -d -m 0700 {q(STATE)}\n{get}"
        f"echo {q(f'{t.sha256}  {raw_tmp}')} | sha256sum --check --quiet || "
        f"{{ echo {q(f'{t.name}: checksum mismatch, refusing it')} >&2; rm -f {tmp}; exit 1; }}\n"
        f"tar -tzf {tmp} | sed 's#^\\./##; s#/$##' | LC_ALL=C sort > {listing}.new\n"
        # a member that climbs out of / or is absolute is refused before anything is unpacked
        f"if grep -qE '(^/|(^|/)\\.\\.(/|$))' {listing}.new; then echo {q(f'{t.name}: unsafe member')} >&2; "
        f"exit 1; fi\n"
        f"tar -xzf {tmp} -C / --no-same-owner --no-overwrite-dir\n"
        f"if [ -f {listing} ]; then LC_ALL=C comm -23 {listing} {listing}.new | while read -r p; do "
        "[ -d \"/$p\" ] || rm -f \"/$p\"; done; fi\n"
        f"mv {listing}.new {listing} && echo {q(t.sha256)} > {marker} && rm -f {tmp}\n"
        "systemctl daemon-reload\n"
        + ("sysctl --system >/dev/null 2>&1 || true\n" if t.package == "jitsi-videobridge2" else ""))
    return Step(f"{t.package} {t.version} from the mirror (sha256 {t.sha256[:12]}…)",
                check=f"grep -qx {q(t.sha256)} {marker} && test -s {q(MAIN_FILE[t.package])}",
                apply=apply.rstrip("\n"), upload=(t.source, raw_tmp) if t.upload else None)


def _sys_props(name: str) -> str:
    return (f'JAVA_SYS_PROPS="-Dconfig.file=/etc/jitsi/{name}/{"jvb" if name == "videobridge" else name}.conf '
            f"-Dnet.java.sip.communicator.SC_HOME_DIR_LOCATION=/etc/jitsi "
            f"-Dnet.java.sip.communicator.SC_HOME_DIR_NAME={name} "
            f"-Dnet.java.sip.communicator.SC_LOG_DIR_LOCATION=/var/log/jitsi "
            f'-Djava.util.logging.config.file=/etc/jitsi/{name}/logging.properties"\n')


def _maintainer_files() -> list[File]:
    """The files upstream's postinsts write, and jicofo's systemd unit."""
    head = "# Managed by schoolctl: what upstream's postinst writes (the tarballs run no maintainer scripts)\n"
    return [
        File("/etc/jitsi/videobridge/config", head + _sys_props("videobridge"), "0640", "jvb", "jitsi",
             restart=("jitsi-videobridge2",)),
        File("/etc/jitsi/jicofo/config", head + _sys_props("jicofo"), "0640", "jicofo", "jitsi",
             restart=("jicofo",)),
        File(JICOFO_UNIT, render("jitsi/jicofo.service.j2"), then="systemctl daemon-reload", restart=("jicofo",)),
    ]


def _preseed(meet: str) -> Step:
    """Hostname and "own certificate" answers, so the packages neither prompt nor make certificates.
    `meet` is one line (a newline could add an answer or end the here-document) and one shell word."""
    one_line(meet, "the Jitsi host")
    answers = [
        f"jitsi-videobridge2 jitsi-videobridge/jvb-hostname string {meet}",
        f"jitsi-meet-prosody jitsi-videobridge/jvb-hostname string {meet}",
        f"jicofo jitsi-videobridge/jvb-hostname string {meet}",
        "jitsi-meet-web-config jitsi-meet/cert-choice select I want to use my own certificate",
        "jitsi-meet-web-config jitsi-meet/cert-path-crt string /etc/schoolctl/tls/fullchain.pem",
        "jitsi-meet-web-config jitsi-meet/cert-path-key string /etc/schoolctl/tls/privkey.pem",
        "jitsi-meet-web-config jitsi-meet/jaas-choice boolean false",
    ]
    text = "\n".join(answers)
    hostname = shlex.quote(f"jvb-hostname: {meet}")
    return Step(f"debconf answers for Jitsi Meet ({meet}, own certificate)",
                check=f"debconf-show jitsi-videobridge2 2>/dev/null | grep -qF {hostname} && "
                      "debconf-show jitsi-meet-web-config 2>/dev/null | grep -qF 'I want to use my own certificate'",
                apply=f"debconf-set-selections <<'EOF'\n{text}\nEOF")
