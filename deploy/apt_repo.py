"""Upstream apt repositories pinned by their signing key's fingerprint (fleet `apt_repos`: Jitsi's,
BigBlueButton's, ...), shared by deploy/jitsi.py and deploy/bigbluebutton.py.

`apt_repo(site, name, repo)` stages a repository's deb822 sources and its pin (key URL, fingerprint,
keyring and sources paths) under APT_CONF, and installs the helper script templates/apt/apt-repo.py
as APT_SCRIPT. Its step runs that script: it fetches the key (through the school's proxy), refuses
it unless its fingerprint is the pinned one, and only then installs the keyring and the sources.
A layer using it also lists `apt_conf_dir()` among its directories.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from schoolctl.deploy.render import TEMPLATES, bare, plain_name
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import Directory, File, Step
from schoolctl.errors import RenderError

if TYPE_CHECKING:
    from schoolctl.config.model import AptRepo

APT_SCRIPT = "/usr/local/sbin/schoolctl-apt-repo"
APT_SCRIPT_SOURCE = TEMPLATES / "apt" / "apt-repo.py"   # installed verbatim (not a Jinja2 template)
APT_CONF = "/etc/schoolctl/apt"


def apt_repo(site: Site, name: str, repo: AptRepo) -> tuple[list[File], list[Step]]:
    """The files and the step that add `repo` as /etc/apt/sources.list.d/schoolctl-NAME.sources, signed
    by a keyring that the step fetches and installs only when its fingerprint is the pinned one."""
    plain_name(name, "an apt repository's name")
    keyring = f"/etc/apt/keyrings/schoolctl-{name}.gpg"
    sources = f"/etc/apt/sources.list.d/schoolctl-{name}.sources"
    staged = f"{APT_CONF}/{name}.sources"
    # deb822 has no quoting and these fields are lists of words: each value must be one word
    what = f"apt_repos.{name}"
    lines = ["Types: deb", f"URIs: {bare(repo.url, what + '.url')}", f"Suites: {bare(repo.suite, what + '.suite')}"]
    if repo.components:
        lines.append(f"Components: {' '.join(bare(c, what + '.components') for c in repo.components)}")
    if urlparse(repo.url).scheme not in ("http", "https") or urlparse(repo.key_url).scheme not in ("http", "https"):
        raise RenderError(f"{what}: url and key_url must be http(s) URLs")
    lines.append(f"Signed-By: {keyring}")
    conf = {"key_url": repo.key_url, "fingerprint": repo.fingerprint, "keyring": keyring, "sources": sources,
            "staged": staged}
    files = [
        File(APT_SCRIPT, APT_SCRIPT_SOURCE.read_text(), "0755"),
        File(f"{APT_CONF}/{name}.json", json.dumps(conf, indent=2, sort_keys=True) + "\n"),
        File(staged, "# Managed by schoolctl\n" + "\n".join(lines) + "\n"),
    ]
    proxy = f"https_proxy={shlex.quote(site.proxy)} " if site.proxy else ""
    step = Step(f"apt repository {name} (key {repo.fingerprint[-16:]} pinned)",
                check=f"{APT_SCRIPT} check {name}", apply=f"{proxy}{APT_SCRIPT} install {name}", timeout=300)
    return files, [step]


def apt_conf_dir() -> Directory:
    return Directory(APT_CONF)
