"""Can the releases an app needs be obtained? Decided on the controller before a deploy, so an app
whose release is neither in the mirror nor downloadable is left out with one line saying what was
missing, where schoolctl looked and how to provide it, while everything else is still deployed.

- In the mirror (listed in its SHA256SUMS): obtainable (artifacts.release then checks the pins).
- A mirror that is set but broken (its SHA256SUMS missing, unreadable, a symlink, or with an entry
  that is no plain file name) is bad set-up, not a missing release: the ArtifactError propagates
  and the school stops before anything connects to its server (exit 2), with no app left out.
- Not in the mirror and the fleet has no sha256 pin for that version: not obtainable (an upstream
  download is never made unpinned).
- Pinned upstream: a real server downloads it itself (a failure there fails that step, with the
  URL); a lab host downloads through the build machine's own proxy, so the controller asks
  upstream once (HEAD, 10 s) and leaves the app out when upstream does not answer.
"""

from __future__ import annotations

from urllib.parse import urlparse

import requests

from schoolctl.deploy import artifacts
from schoolctl.deploy.etherpad import major  # the layer's own rule: 3.x runs on the fleet's Node.js
from schoolctl.deploy.site import Site

PROBE_TIMEOUT = 10


def needed(site: Site, app: str) -> list[tuple[str, str]]:
    """The (artifact, version) pairs the app's layer downloads: its own release, and Node.js for
    Etherpad 3 or later (Debian's Node.js is too old for it)."""
    version = site.school.versions.get(app)
    if version is None:
        return []
    found = [(app, version)]
    node = site.school.fleet.artifacts.node
    if app == "etherpad" and major(version) >= 3 and node is not None:
        found.append(("node", node.version))
    return found


def _looked(site: Site, file: str) -> str:
    """Where schoolctl looked for `file`, as the start of a sentence."""
    if site.mirror:
        return f"{file} is not in the mirror {site.mirror}"
    if site.mirror_note:
        return f"{file}: {site.mirror_note}"
    return f"{file}: no mirror is set (fleet `mirror` or SCHOOLCTL_MIRROR)"


def _reachable(url: str, proxy: str | None) -> str | None:
    """None when upstream answers a HEAD for `url` (through `proxy`), else why not."""
    proxies = {"http": proxy, "https": proxy} if proxy else None
    try:
        resp = requests.head(url, timeout=PROBE_TIMEOUT, allow_redirects=True, proxies=proxies)
    except requests.RequestException as e:
        return f"{type(e).__name__}"
    return None if resp.status_code < 400 else f"HTTP {resp.status_code}"


def unobtainable(site: Site, app: str) -> str | None:
    """One line saying why `app` cannot be deployed for lack of a release, or None. ArtifactError
    when the mirror itself cannot be used (artifacts.mirror_sums)."""
    fleet = site.school.fleet
    for name, version in needed(site, app):
        spec = getattr(fleet.artifacts, name)
        file = spec.file_name(version)
        if site.mirror and file in artifacts.mirror_sums(site.mirror):  # a broken mirror: ArtifactError
            continue
        pin = spec.sha256.get(version)
        if not pin:
            return (f"{app}: {_looked(site, file)} and fleet.yaml pins no sha256 for {name} {version} "
                    f"(artifacts.{name}.sha256), so it is not downloaded from upstream; put the file in a mirror "
                    f"folder with a SHA256SUMS line (SCHOOLCTL_MIRROR=DIR), or add upstream's checksum to fleet.yaml")
        if site.lab:
            url = spec.url_for(version)
            if urlparse(url).scheme not in ("http", "https"):
                return f"{app}: the download URL of {file} is not http(s)"
            why = _reachable(url, site.proxy)
            if why:
                return (f"{app}: {_looked(site, file)} and upstream {url} did not answer ({why}); "
                        "put the file in a mirror folder with a SHA256SUMS line (SCHOOLCTL_MIRROR=DIR), "
                        "e.g. the test mirror of ../shared/tools/build-test-mirror.sh")
    return None
