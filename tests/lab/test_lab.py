"""The lab for real: two Debian 13 hosts, isolated, with packages, ACME and the mirror; then nothing left.

Needs root; slow on a cold machine (the base image is built once, about 1-2 minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schoolctl.cli.commands.lab_cmd import lab_app
from schoolctl.errors import LabError
from schoolctl.lab import Lab, LabHost, network
from schoolctl.lab.hosts import lab_mounts

pytestmark = pytest.mark.lab

A, B = "t-a", "t-b"
DOMAIN = "t-a.schoolctl.test"


@pytest.fixture(scope="module")
def mirror_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mirror")
    (d / "moodle-test.tgz.sha256").write_text("0123abcd  moodle-test.tgz\n")
    return d


@pytest.fixture(scope="module")
def pair(lab: Lab, lab_hosts, mirror_dir: Path) -> Iterator[dict[str, LabHost]]:
    hosts = lab_hosts(A, B)
    before = lab.services_info().mirror_dir  # another lab user's mirror: give it back afterwards
    lab.services(acme=True, mirror=mirror_dir)
    yield {h.name: h for h in hosts}
    if before and before.is_dir() and lab.services_info().mirror_url:
        lab.services(acme=False, mirror=before)


def sh(lab: Lab, name: str, command: str, timeout: float = 600, **kw) -> str:
    return lab.run(name, command, timeout=timeout, check=True, **kw).stdout


def test_both_hosts_answer_over_ssh(lab: Lab, pair: dict[str, LabHost]) -> None:
    for name, host in pair.items():
        assert host.state == "running" and host.pid
        assert sh(lab, name, "hostname").strip() == name
        assert "trixie" in sh(lab, name, "cat /etc/os-release")
        assert sh(lab, name, "systemctl is-system-running").strip() in ("running", "degraded")
    # plain ssh with the generated config works too (that is what testinfra/pyinfra use)
    out = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config_path), pair[B].address, "hostname"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == B


def test_testinfra_reaches_a_host_with_the_ssh_config(lab: Lab, pair: dict[str, LabHost]) -> None:
    testinfra = pytest.importorskip("testinfra")
    host = testinfra.get_host(f"ssh://{A}", ssh_config=str(lab.ssh_config_path))
    assert host.file("/etc/os-release").contains("trixie")
    assert host.service("ssh").is_running


def test_each_host_has_its_own_host_key_and_machine_id(lab: Lab, pair: dict[str, LabHost]) -> None:
    keys = {n: sh(lab, n, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] for n in pair}
    ids = {n: sh(lab, n, "cat /etc/machine-id").strip() for n in pair}
    assert keys[A] != keys[B]
    assert ids[A] != ids[B]


def test_hosts_are_isolated_but_reach_the_host_side(lab: Lab, pair: dict[str, LabHost]) -> None:
    bridge = lab.bridge
    for me, other in ((A, B), (B, A)):
        target = pair[other].address
        probe = f"timeout 4 bash -c 'echo > /dev/tcp/{target}/22' && echo REACHED || echo BLOCKED"
        assert sh(lab, me, probe).strip() == "BLOCKED", f"{me} can reach {other}"
        assert "0 received" in lab.run(me, f"ping -c1 -W2 {target}").stdout
        # ... while the host side (apt-cacher-ng on the bridge) answers
        assert sh(lab, me, f"timeout 4 bash -c 'echo > /dev/tcp/{bridge}/3142' && echo OK").strip() == "OK"


def test_install_a_debian_package_through_the_proxies(lab: Lab, pair: dict[str, LabHost]) -> None:
    for name in pair:
        out = sh(
            lab,
            name,
            "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello "
            ">/dev/null && hello",
            timeout=900,
        )
        assert out.strip() == "Hello, world!"
    # HTTPS through tinyproxy and the TLS-inspecting egress (the CA bundle is trusted inside).
    # The mirror's host name comes from the image's own apt sources, never from this repo.
    https = (
        "h=$(sed -n 's,^deb http://\\([^/]*\\)/.*,\\1,p' /etc/apt/sources.list | head -1); "
        'curl -sS -o /dev/null -w "%{http_code}" "https://$h/debian/dists/trixie/Release"'
    )
    assert sh(lab, A, https) == "200"


def test_pebble_issues_a_certificate_over_http01(lab: Lab, pair: dict[str, LabHost], tmp_path: Path) -> None:
    svc = lab.services(acme=True)
    assert svc.acme_directory and svc.acme_ca_file and svc.acme_ca_file.exists()
    lab.register_domain(DOMAIN, pair[A].address)
    sh(lab, A, "cat > /root/lab-acme-ca.pem", input=svc.acme_ca_file.read_text())
    sh(
        lab,
        A,
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends certbot >/dev/null",
        timeout=900,
    )
    sh(
        lab,
        A,
        "REQUESTS_CA_BUNDLE=/root/lab-acme-ca.pem certbot certonly --standalone --non-interactive "
        f"--agree-tos --register-unsafely-without-email --server {svc.acme_directory} -d {DOMAIN}",
        timeout=300,
    )
    live = f"/etc/letsencrypt/live/{DOMAIN}"
    (tmp_path / "cert.pem").write_text(sh(lab, A, f"cat {live}/cert.pem"))
    (tmp_path / "chain.pem").write_text(sh(lab, A, f"cat {live}/chain.pem"))
    root = lab.fetch_acme_root(tmp_path / "pebble-root.pem")
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(root),
            "-untrusted",
            str(tmp_path / "chain.pem"),
            str(tmp_path / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "cert.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert DOMAIN in text


def test_the_mirror_serves_a_file(lab: Lab, pair: dict[str, LabHost], mirror_dir: Path) -> None:
    svc = lab.services(acme=False, mirror=mirror_dir)
    assert svc.mirror_url == f"http://{lab.bridge}:8081/"
    got = sh(lab, B, f"curl -sS {svc.mirror_url}moodle-test.tgz.sha256")
    assert got == (mirror_dir / "moodle-test.tgz.sha256").read_text()


def test_up_leaves_a_running_host_alone(lab: Lab, lab_hosts, pair: dict[str, LabHost]) -> None:
    (again,) = lab_hosts(A)
    assert again.pid == pair[A].pid and again.address == pair[A].address


def test_cli_status_json_and_ssh(lab: Lab, pair: dict[str, LabHost]) -> None:
    result = CliRunner().invoke(lab_app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["hosts"]}
    assert rows[A] == {"name": A, "address": pair[A].address, "state": "running"}
    proc = subprocess.run(
        [sys.executable, "-m", "schoolctl.cli", "lab", "ssh", A, "--", "test", "-f", "/etc/debian_version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_boot_timeout_reports_the_console(lab: Lab, lab_hosts, pair: dict[str, LabHost]) -> None:
    with pytest.raises(LabError) as info:
        lab_hosts("t-slow", timeout=0.01)
    assert "did not come up" in str(info.value) and "console" in str(info.value)
    lab.down(["t-slow"])


def test_a_name_taken_by_something_else_is_refused(lab: Lab) -> None:
    ns = network.netns_name("t-clash")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with pytest.raises(LabError, match="not a lab host"):
            lab.up(["t-clash"])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert not (lab.paths.host("t-clash") / "host.json").exists()


def test_down_leaves_nothing_behind(lab: Lab, pair: dict[str, LabHost]) -> None:
    veths = {}
    for name in pair:
        veths[name] = json.loads((lab.paths.host(name) / "host.json").read_text())["veth"]
    lab.down([A, B])
    lab.down([A, B])  # idempotent
    for name in pair:
        assert network.netns_name(name) not in network.lab_netns()
        assert veths[name] not in network.lab_links()
        assert veths[name] not in network.bridge_ports()
        assert not lab.paths.host(name).exists()
        assert not [m for m in lab_mounts(lab.state_dir) if f"/hosts/{name}/" in m + "/"]
        assert not _live_processes(f"--machine={name}")
    with pytest.raises(LabError, match="no lab host"):
        lab.host(A)
    if not lab.status():  # nobody else's host is up: the bridge and the daemons are gone too
        assert "sclab0" not in network.lab_links()
        assert not lab_mounts(lab.state_dir)
        assert not lab.services_running()
        assert not _live_processes("systemd-nspawn", state_dir=str(lab.state_dir))


def _live_processes(needle: str, state_dir: str | None = None) -> list[int]:
    """Live (not zombie) processes whose command line contains ``needle`` (and ``state_dir``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in args and (state_dir is None or state_dir in args):
            found.append(int(proc.name))
    return found
