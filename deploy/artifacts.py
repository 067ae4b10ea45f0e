"""The one way an application release reaches a school server: pinned version, checked sha256,
upstream URL by default, the mirror (SCHOOLCTL_MIRROR / fleet `mirror`) when set.

A mirror is a folder or URL of files named as upstream names them, plus a SHA256SUMS file. A file
there replaces the download of the same name; it must match SHA256SUMS and, where the fleet pins
that version, the fleet's pin too. An upstream download needs a fleet pin. The release is
unpacked into /srv/<app>/releases/<version> (one folder per version, so an upgrade can roll back)
and marked with its sha256; `current` points at the version in use.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests

from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Step
from schoolctl.errors import ArtifactError

SRV = "/srv"
SUMS = "SHA256SUMS"
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def checked_name(name: str, what: str) -> str:
    """`name` when it is a plain file name (letters, digits, `._+-`, no leading dot or dash, no
    `..`): one path component, one shell word. ArtifactError otherwise."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name) or ".." in name:
        raise ArtifactError(f"{what} {name!r} is not a plain file name (letters, digits and . _ + -, no '..'); "
                            "refusing it")
    return name


def checked_sha256(digest: str, what: str) -> str:
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
        raise ArtifactError(f"{what}: {digest!r} is not a sha256 (64 hexadecimal digits)")
    return digest.lower()


@dataclass(frozen=True)
class Release:
    app: str
    version: str
    file: str
    sha256: str
    source: str            # URL the server downloads from, or a local file the controller uploads
    upload: bool = False   # True: `source` is a file on the controller (a folder mirror)

    def __post_init__(self) -> None:
        # each becomes a path component on the server and a word of the fetch step's commands
        checked_name(self.app, "application")
        checked_name(self.version, f"{self.app} version")
        checked_name(self.file, f"{self.app} file name")
        checked_sha256(self.sha256, f"{self.app} {self.version} sha256")

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


def parse_sums(text: str, source: str = SUMS) -> dict[str, str]:
    """A SHA256SUMS file (sha256sum format) as file name -> sha256. An entry naming a path that
    climbs (`..`), is absolute or holds a backslash (sha256sum's escaped names) is refused, not
    parsed; entries in sub-folders are skipped (a release is only ever looked up by a plain name)."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or len(parts[0].lstrip("\\")) != 64:
            continue
        digest, name = parts[0], parts[1].removeprefix("*")
        if "\\" in line or name.startswith("/") or ".." in name.split("/") or _CONTROL.search(name):
            raise ArtifactError(f"{source} line {number}: the entry {name!r} is not a plain file name "
                                "(a '..', absolute path or backslash); refusing this SHA256SUMS",
                                "a mirror lists the files of its own folder (and sub-folders) by their names: "
                                "fix or remove that line")
        digest = checked_sha256(digest, f"{source} line {number}")
        if "/" in name or not _PLAIN.fullmatch(name):
            continue
        if sums.get(name, digest) != digest:
            raise ArtifactError(f"{source} line {number}: {name} is listed twice with different checksums")
        sums[name] = digest
    return sums


_SETTING = "SCHOOLCTL_MIRROR, or fleet.yaml `mirror`"


def _failure(e: requests.RequestException) -> str:
    """Why an HTTP request failed, in words (no exception reprs, no errno)."""
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code}"
    if isinstance(e, requests.Timeout):
        return "no answer in time"
    if isinstance(e, requests.ConnectionError):
        return "no connection (the host does not resolve, refuses, or cannot be reached)"
    return type(e).__name__


@cache
def mirror_sums(mirror: str) -> dict[str, str]:
    """The mirror's SHA256SUMS (a folder on the controller, or a URL)."""
    return parse_sums(*_sums_text(mirror))


def _sums_text(mirror: str) -> tuple[str, str]:
    """The text of the mirror's SHA256SUMS and where it was read."""
    if urlparse(mirror).scheme in ("http", "https"):
        try:
            resp = requests.get(urljoin(mirror.rstrip("/") + "/", SUMS), timeout=15)
            resp.raise_for_status()
        except requests.RequestException as e:
            raise ArtifactError(f"cannot read SHA256SUMS from the mirror {mirror}: {_failure(e)}",
                                f"check that {urljoin(mirror.rstrip('/') + '/', SUMS)} answers from this machine, "
                                f"or unset the mirror ({_SETTING})") from None
        return resp.text, f"{mirror} {SUMS}"
    sums = Path(mirror) / SUMS
    if sums.is_symlink():
        raise ArtifactError(f"{sums} is a symlink; a mirror folder's files must be the files themselves "
                            "(symlinks are not followed)", f"put the file itself there: cp --remove-destination "
                            f"\"$(readlink -f {sums})\" {sums}")
    if not sums.is_file():
        raise ArtifactError(f"the mirror folder {mirror} has no SHA256SUMS file",
                            f"list the folder's files with `sha256sum FILE... > SHA256SUMS` there, or unset the "
                            f"mirror ({_SETTING})")
    try:  # O_NOFOLLOW: a symlink swapped in since the check is refused too
        fd = os.open(sums, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise ArtifactError(f"cannot read {sums}: {e.strerror} (symlinks are not followed)",
                            "make it a readable file of the mirror folder") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        return f.read(), str(sums)


def mirror_file(mirror: str, name: str) -> Path:
    """The file `name` of a mirror folder, refused when it is a symlink or anything but a regular file
    (nothing outside the mirror folder is ever uploaded). A file listed but absent is returned as is:
    the upload then says it is missing."""
    folder = Path(mirror)
    path = folder / checked_name(name, "mirror file")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(st.st_mode):
        raise ArtifactError(f"{name} in the mirror folder {mirror} is a symlink; refusing to follow it "
                            "(put the file itself in the mirror)")
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"{name} in the mirror folder {mirror} is not a regular file; refusing it")
    if path.resolve().parent != folder.resolve():
        raise ArtifactError(f"{name} resolves outside the mirror folder {mirror}; refusing it")
    return path


def _upstream_url(url: str, app: str) -> str:
    if urlparse(url).scheme not in ("http", "https") or _SPACE.search(url):
        raise ArtifactError(f"{app}: the download URL {url!r} is not a plain http(s) URL; refusing it")
    return url


def release(site: Site, app: str) -> Release:
    """Where the school's version of `app` comes from, and the sha256 it must have. `app` is one of
    the fleet's artifacts: a school's app (its version from `school.versions`) or a helper such as
    `node` (the fleet's `artifacts.node.version`; ArtifactError when the fleet sets none)."""
    school = site.school
    spec = getattr(school.fleet.artifacts, app, None)
    if spec is None:  # an optional artifact (node) the fleet does not set
        raise ArtifactError(f"fleet.yaml sets no artifacts.{app}, and this school needs it"
                            + (" (Etherpad 3.x needs Node.js >= 24; Debian 13's is 20)" if app == "node" else ""),
                            f"add artifacts.{app} (version, url, file, sha256) to fleet.yaml")
    # a school's app has its version (`versions`); a helper artifact (node) the fleet's default
    version = checked_name(school.versions.get(app) or spec.version, f"{app} version")
    name = checked_name(spec.file_name(version), f"{app} {version}: the file name")
    pin = spec.sha256.get(version)
    if pin:
        pin = checked_sha256(pin, f"artifacts.{app}.sha256.{version}")
    if site.mirror:
        sums = mirror_sums(site.mirror)
        if name in sums:
            if pin and pin != sums[name]:
                raise ArtifactError(f"{name}: the mirror's SHA256SUMS says {sums[name]}, the fleet pins {pin}; "
                                    "the mirror holds a different file than upstream's")
            local = urlparse(site.mirror).scheme not in ("http", "https")
            source = str(mirror_file(site.mirror, name)) if local else urljoin(site.mirror.rstrip("/") + "/", name)
            return Release(app, version, name, sums[name], source, upload=local)
    if not pin:
        raise ArtifactError(f"{app} {version} has no sha256 pin in fleet.yaml (artifacts.{app}.sha256) and the "
                            f"mirror has no {name}; add upstream's checksum, or serve the file from a mirror")
    return Release(app, version, name, pin, _upstream_url(spec.url_for(version), app))


def fetch_step(site: Site, rel: Release, owner: str = "root") -> Step:
    """A guarded step that downloads (or receives), verifies and unpacks a release. Every value is one
    shell word (shlex.quote), whatever it holds."""
    q = shlex.quote
    marker = q(f"{rel.path}/.schoolctl-sha256")
    raw_tmp = f"{rel.home}/.download-{rel.file}"
    tmp, path, unpack = q(raw_tmp), q(rel.path), q(f"{rel.path}.unpack")
    if rel.upload:
        get = ""  # the steps operation uploads rel.source to tmp first
    else:
        proxy = f"--proxy {q(site.proxy)} " if site.proxy and not _is_mirror(site, rel) else ""
        get = f"curl --fail --silent --show-error --location --retry 2 {proxy}-o {tmp} {q(rel.source)}\n"
    apply = (
        f"install -d -m 0755 {q(rel.home + '/releases')}\n"
        f"{get}"
        f"echo {q(f'{rel.sha256}  {raw_tmp}')} | sha256sum --check --quiet || "
        f"{{ echo {q(f'{rel.file}: checksum mismatch, refusing it')} >&2; rm -f {tmp}; exit 1; }}\n"
        f"rm -rf {unpack} && install -d {unpack}\n"
        f"tar -xf {tmp} -C {unpack} --strip-components=1 --no-same-owner\n"
        f"chown -R {q(f'{owner}:{owner}')} {unpack} && rm -rf {path} && mv {unpack} {path}\n"
        f"echo {q(rel.sha256)} > {marker} && rm -f {tmp}"
    )
    return Step(f"{rel.app} {rel.version} release (sha256 {rel.sha256[:12]}…)",
                check=f"grep -qx {q(rel.sha256)} {marker}", apply=apply,
                upload=(rel.source, raw_tmp) if rel.upload else None)


def _is_mirror(site: Site, rel: Release) -> bool:
    return bool(site.mirror) and rel.source.startswith(site.mirror.rstrip("/"))


# --- Moodle's language packs: `langpack/<branch>/<lang>.zip`, from the mirror only ----------------

_LANGPACK = re.compile(r"^langpack/(\d+)\.(\d+)/(ca|es|en)\.zip$")


@dataclass(frozen=True)
class Langpack:
    """One Moodle language pack: the language, the Moodle branch its strings are for, its sha256 and
    where it comes from (a file on the controller, uploaded, or the mirror's URL)."""

    lang: str
    branch: tuple[int, int]
    sha256: str
    source: str
    upload: bool

    @property
    def name(self) -> str:
        """Its name in the mirror, as download.moodle.org names it."""
        return f"langpack/{self.branch_text}/{self.lang}.zip"

    @property
    def branch_text(self) -> str:
        return f"{self.branch[0]}.{self.branch[1]}"


@cache
def langpack_sums(mirror: str) -> dict[tuple[str, tuple[int, int]], str]:
    """(lang, branch) -> sha256 of every `langpack/<branch>/<lang>.zip` the mirror's SHA256SUMS lists."""
    text, source = _sums_text(mirror)
    parse_sums(text, source)  # the same refusals (climbing, absolute, escaped names) as for releases
    found: dict[tuple[str, tuple[int, int]], str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            continue
        m = _LANGPACK.fullmatch(parts[1].removeprefix("*"))
        if m:
            key = (m[3], (int(m[1]), int(m[2])))
            found[key] = checked_sha256(parts[0], f"{source} line {number}")
    return found


def _mirror_path(mirror: str, name: str) -> Path:
    """A nested file of a mirror folder (`langpack/4.5/ca.zip`), refused when any part is a symlink or
    the file is not a regular file."""
    folder = Path(mirror)
    path = folder
    for part in name.split("/"):
        path = path / checked_name(part, "mirror file")
        if path.is_symlink():
            raise ArtifactError(f"{name} in the mirror folder {mirror}: {path} is a symlink; refusing to follow it")
    if path.exists() and not path.is_file():
        raise ArtifactError(f"{name} in the mirror folder {mirror} is not a regular file; refusing it")
    return path


def langpack(site: Site, lang: str, version: str) -> Langpack | None:
    """The language pack for `lang` on Moodle `version`: the mirror's pack of the release's own branch,
    else of the newest older branch (strings added since then show in English), else None. A pack the
    fleet pins (`artifacts.langpacks.sha256`) must match the pin."""
    if not site.mirror:
        return None
    release = tuple(int(x) for x in version.split(".")[:2])
    packs = {branch: digest for (code, branch), digest in langpack_sums(site.mirror).items()
             if code == lang and branch <= release}
    if not packs:
        return None
    branch = max(packs)
    digest = packs[branch]
    pack = Langpack(lang, branch, digest, "", False)
    pin = site.school.fleet.artifacts.langpacks.sha256.get(f"{pack.branch_text}/{lang}")
    if pin and pin != digest:
        raise ArtifactError(f"{pack.name}: the mirror's SHA256SUMS says {digest}, the fleet pins {pin} "
                            f"(artifacts.langpacks.sha256); the mirror holds a different file")
    local = urlparse(site.mirror).scheme not in ("http", "https")
    source = (str(_mirror_path(site.mirror, pack.name)) if local
              else urljoin(site.mirror.rstrip("/") + "/", pack.name))
    return Langpack(lang, branch, digest, source, local)
