"""Apps whose release cannot be obtained are left out of a deploy with one line each (what is
missing, where schoolctl looked, how to provide it); the rest of the school is still rendered."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolctl.config.loader import load
from schoolctl.deploy import obtain
from schoolctl.deploy.school import school_layers
from schoolctl.deploy.site import Site
from schoolctl.secrets import Secret

SCHOOLS = Path(__file__).resolve().parents[2] / "schools"


def secret(name: str, length: int = 32) -> Secret:
    return Secret(f"S3CRET-{name}-xyzzy")


def site(mirror: str | None = None, lab: bool = False, **versions: str) -> Site:
    school = load(SCHOOLS).select(["demo"])[0]
    if versions:
        school = school.model_copy(update={"versions": {**school.versions, **versions}})
    return Site(school=school, secret=secret, mirror=mirror, lab=lab)


def test_no_mirror_and_no_pin_leaves_the_app_out_with_the_file_and_the_fix() -> None:
    s = site(etherpad="3.3.1")
    why = obtain.unobtainable(s, "etherpad")
    assert why is not None
    assert why.startswith("etherpad: etherpad-3.3.1.tar.gz: no mirror is set")
    assert "artifacts.etherpad.sha256" in why and "SCHOOLCTL_MIRROR" in why


def test_etherpad_3_needs_node_too(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("a" * 64 + "  etherpad-3.3.1.tar.gz\n")
    why = obtain.unobtainable(site(str(tmp_path), etherpad="3.3.1"), "etherpad")
    assert why is not None and "node-v24.22.3-linux-x64.tar.xz" in why and "artifacts.node.sha256" in why
    assert obtain.needed(site(etherpad="2.5.3"), "etherpad") == [("etherpad", "2.5.3")]


def test_a_file_in_the_mirror_is_obtainable(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("a" * 64 + "  etherpad-3.3.1.tar.gz\n" + "b" * 64
                                         + "  node-v24.22.3-linux-x64.tar.xz\n")
    assert obtain.unobtainable(site(str(tmp_path), etherpad="3.3.1"), "etherpad") is None


def test_a_pinned_upstream_release_is_obtainable_for_a_real_server_without_asking() -> None:
    # moodle 5.3 is pinned in the shipped fleet: a real server downloads it itself
    assert obtain.unobtainable(site(moodle="5.3"), "moodle") is None


class _Upstream(http.server.BaseHTTPRequestHandler):
    status = 404

    def do_HEAD(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _pinned_to(s: Site, url: str) -> Site:
    fleet = s.school.fleet
    moodle = fleet.artifacts.moodle.model_copy(update={"url": url + "/{file}"})
    fleet = fleet.model_copy(update={"artifacts": fleet.artifacts.model_copy(update={"moodle": moodle})})
    s.school = s.school.model_copy(update={"fleet": fleet, "versions": {**s.school.versions, "moodle": "5.3"}})
    return s


def test_a_lab_host_asks_upstream_and_leaves_the_app_out_when_it_does_not_answer(upstream: str) -> None:
    _Upstream.status = 404
    why = obtain.unobtainable(_pinned_to(site(lab=True), upstream), "moodle")
    assert why is not None and "did not answer (HTTP 404)" in why and "moodle-5.3.tgz" in why
    _Upstream.status = 200
    assert obtain.unobtainable(_pinned_to(site(lab=True), upstream), "moodle") is None


def test_school_layers_skip_only_the_unobtainable_apps(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("a" * 64 + "  nextcloud-34.0.1.tar.bz2\n")
    s = site(str(tmp_path), moodle="5.0.6", nextcloud="34.0.1", etherpad="3.3.1")
    names = [layer.name for layer in school_layers(s)]
    assert "nextcloud" in names and "base" in names and "web" in names
    assert "moodle" not in names and "etherpad" not in names
    assert [line.split(":")[0] for line in s.skipped] == ["moodle", "etherpad"]
