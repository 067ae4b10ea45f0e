"""The one way an application release reaches a school server: pinned version, checked sha256,
upstream URL by default, the mirror (SCHOOLCTL_MIRROR / fleet `mirror`) when set.

A mirror is a folder or URL of files named as upstream names them, plus a SHA256SUMS file. A file
there replaces the download of the same name; it must match SHA256SUMS and, where the fleet pins
that version, the fleet's pin too. An upstream download needs a fleet pin. The release is
unpacked into /srv/<app>/releases/<version> (one folder per version, so an upgrade can roll back)
and marked with its sha256; `current` points at the version in use.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests

from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Step
from schoolctl.errors import ArtifactError

SRV = "/srv"


@dataclass(frozen=True)
class Release:
    app: str
    version: str
    file: str
    sha256: str
    source: str            # URL the server downloads from, or a local file the controller uploads
    upload: bool = False   # True: `source` is a file on the controller (a folder mirror)

    @property
    def home(self) -> str:
        return f"{SRV}/{self.app}"

    @property
    def path(self) -> str:
        """Where this version is unpacked on the server."""
        return f"{self.home}/releases/{self.version}"

    @property
    def current(self) -> str:
        return f"{self.home}/current"


def parse_sums(text: str) -> dict[str, str]:
    """A SHA256SUMS file (sha256sum format) as file name -> sha256."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


@cache
def mirror_sums(mirror: str) -> dict[str, str]:
    """The mirror's SHA256SUMS (a folder on the controller, or a URL)."""
    if urlparse(mirror).scheme in ("http", "https"):
        try:
            resp = requests.get(urljoin(mirror.rstrip("/") + "/", "SHA256SUMS"), timeout=15)
            resp.raise_for_status()
        except requests.RequestException as e:
            raise ArtifactError(f"cannot read SHA256SUMS from the mirror {mirror}: {e}") from None
        return parse_sums(resp.text)
    sums = Path(mirror) / "SHA256SUMS"
    if not sums.is_file():
        raise ArtifactError(f"the mirror folder {mirror} has no SHA256SUMS file")
    return parse_sums(sums.read_text())


def release(site: Site, app: str) -> Release:
    """Where the school's version of `app` comes from, and the sha256 it must have."""
    school = site.school
    spec = getattr(school.fleet.artifacts, app)
    version = school.versions[app]
    name = spec.file_name(version)
    pin = spec.sha256.get(version)
    if site.mirror:
        sums = mirror_sums(site.mirror)
        if name in sums:
            if pin and pin != sums[name]:
                raise ArtifactError(f"{name}: the mirror's SHA256SUMS says {sums[name]}, the fleet pins {pin}; "
                                    "the mirror holds a different file than upstream's")
            local = urlparse(site.mirror).scheme not in ("http", "https")
            source = str(Path(site.mirror) / name) if local else urljoin(site.mirror.rstrip("/") + "/", name)
            return Release(app, version, name, sums[name], source, upload=local)
    if not pin:
        raise ArtifactError(f"{app} {version} has no sha256 pin in fleet.yaml (artifacts.{app}.sha256) and the "
                            f"mirror has no {name}; add upstream's checksum, or serve the file from a mirror")
    return Release(app, version, name, pin, spec.url_for(version))


def fetch_step(site: Site, rel: Release, owner: str = "root") -> Step:
    """A guarded step that downloads (or receives), verifies and unpacks a release."""
    marker = f"{rel.path}/.schoolctl-sha256"
    tmp = f"{rel.home}/.download-{rel.file}"
    if rel.upload:
        get = ""  # the steps operation uploads rel.source to tmp first
    else:
        proxy = f"--proxy {shlex.quote(site.proxy)} " if site.proxy and not _is_mirror(site, rel) else ""
        get = f"curl --fail --silent --show-error --location --retry 2 {proxy}-o {tmp} {shlex.quote(rel.source)}\n"
    apply = (
        f"install -d -m 0755 {rel.home}/releases\n"
        f"{get}"
        f"echo '{rel.sha256}  {tmp}' | sha256sum --check --quiet || "
        f"{{ echo '{rel.file}: checksum mismatch, refusing it' >&2; rm -f {tmp}; exit 1; }}\n"
        f"rm -rf {rel.path}.unpack && install -d {rel.path}.unpack\n"
        f"tar -xf {tmp} -C {rel.path}.unpack --strip-components=1 --no-same-owner\n"
        f"chown -R {owner}:{owner} {rel.path}.unpack && rm -rf {rel.path} && mv {rel.path}.unpack {rel.path}\n"
        f"echo {rel.sha256} > {marker} && rm -f {tmp}"
    )
    return Step(f"{rel.app} {rel.version} release (sha256 {rel.sha256[:12]}…)",
                check=f"grep -qx {rel.sha256} {marker}", apply=apply,
                upload=(rel.source, tmp) if rel.upload else None)


def _is_mirror(site: Site, rel: Release) -> bool:
    return bool(site.mirror) and rel.source.startswith(site.mirror.rstrip("/"))
