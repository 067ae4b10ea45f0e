"""The deploy machinery without a host: desired-state merging, the coarse facts' parsing, change
detection, and a whole plan through pyinfra's @fake connector."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy

from schoolctl.config.loader import load
from schoolctl.deploy import ops
from schoolctl.deploy.school import school_deploy
from schoolctl.deploy.site import Site
from schoolctl.deploy.state import APPS, SYSTEM, DesiredStateError, Directory, File, Layer, Service, Step, merge
from schoolctl.secrets import Secret

ROOT = Path(__file__).resolve().parents[2]


def test_merge_orders_rounds_and_dedups() -> None:
    a = Layer("a", SYSTEM, packages=["nginx", "curl"], files=[File("/etc/a", "1")], services=[Service("nginx")])
    b = Layer("b", APPS, packages=["php"], steps=[Step("s", "true", "true")])
    c = Layer("c", SYSTEM, packages=["curl", "jq"], services=[Service("nginx")])
    rounds = merge([b, a, c])
    assert [r.number for r in rounds] == [SYSTEM, APPS]
    assert rounds[0].packages == ["nginx", "curl", "jq"]
    assert rounds[0].services == [Service("nginx")]
    assert [s.name for s in rounds[1].steps] == ["s"]


def test_merge_refuses_two_layers_wanting_different_content() -> None:
    with pytest.raises(DesiredStateError, match="/etc/x is wanted by both a and b"):
        merge([Layer("a", files=[File("/etc/x", "1")]), Layer("b", files=[File("/etc/x", "2")])])


def test_path_states_parses_stat_and_sha() -> None:
    out = ["regular file|644|root|root|/etc/a", "directory|755|root|adm|/var/x", "--sha--",
           f"{'a' * 64}  /etc/a"]
    states = ops.PathStates().process(out)
    assert states["/etc/a"] == {"type": "regular file", "mode": 0o644, "owner": "root", "group": "root",
                                "sha256": "a" * 64}
    assert states["/var/x"]["type"] == "directory" and "sha256" not in states["/var/x"]


def test_file_changes_detects_content_mode_and_absence() -> None:
    same = File("/etc/same", "x\n")
    digest = hashlib.sha256(b"x\n").hexdigest()
    states = {
        "/etc/same": {"type": "regular file", "mode": 0o644, "owner": "root", "group": "root", "sha256": digest},
        "/etc/mode": {"type": "regular file", "mode": 0o600, "owner": "root", "group": "root", "sha256": digest},
        "/etc/old": {"type": "regular file", "mode": 0o644, "owner": "root", "group": "root", "sha256": "0" * 64},
        "/etc/gone": {"type": "regular file", "mode": 0o644, "owner": "root", "group": "root", "sha256": digest},
        "/srv/d": {"type": "directory", "mode": 0o755, "owner": "root", "group": "root"},
    }
    files = [same, File("/etc/mode", "x\n"), File("/etc/old", "new"), File("/etc/new", "n"),
             File("/etc/gone", "", absent=True), File("/etc/never", "", absent=True)]
    dirs, write, perms = ops.file_changes(files, [Directory("/srv/d"), Directory("/srv/e", "0700")], states)
    assert [d.path for d in dirs] == ["/srv/e"]
    assert [f.path for f in write] == ["/etc/old", "/etc/new", "/etc/gone"]
    assert [f.path for f in perms] == ["/etc/mode"]


def test_tar_carries_owner_mode_and_content() -> None:
    data = ops._tar([File("/etc/x/y.conf", "hello", "0640", "root", "adm")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        [info] = tar.getmembers()
        assert (info.name, info.mode, info.uname, info.gname) == ("etc/x/y.conf", 0o640, "root", "adm")
        assert tar.extractfile(info).read() == b"hello"


def test_package_unit_and_step_facts() -> None:
    pk = ops.PackageStates().process(["nginx|ii ", "curl|rc ", "!interrupted 123"])
    assert pk == {"installed": {"nginx"}, "interrupted": True}
    units = ops.UnitStates().process(["Id=ssh.service", "UnitFileState=enabled", "ActiveState=active", "",
                                      "Id=x.timer", "UnitFileState=disabled", "ActiveState=inactive"])
    assert units["ssh.service"]["ActiveState"] == "active" and units["x.timer"]["UnitFileState"] == "disabled"
    assert ops.StepChecks().process(["0:ok", "1:todo"]) == [True, False]
    assert "if ( test -e /x )" in ops.StepChecks().command(checks=("test -e /x",))


def _site(school_id: str, tmp: Path | None = None) -> Site:
    school = load(ROOT / "schools").schools[school_id]
    mirror = None
    if tmp is not None:  # Etherpad has no upstream checksum to pin: a mirror folder lists its file
        (tmp / "SHA256SUMS").write_text(f"{'e' * 64}  etherpad-lite-2.5.3.tar.gz\n")
        mirror = str(tmp)
    return Site(school=school, secret=lambda name, length=32: Secret("s3cr3t-" + name), outbound=[], mirror=mirror)


def test_a_whole_plan_through_the_fake_connector(tmp_path: Path) -> None:
    """Every operation plans its changes against an empty host; no command carries a secret."""
    from schoolctl.deploy.school import school_rounds

    site = _site("escola-pins", tmp_path)
    rounds = school_rounds(site)
    inventory = Inventory(([("@fake/escola-pins", {"fake_delay": 0, "fake_delay_jitter": 0})], {}))
    state = State(inventory=inventory, config=Config(), check_for_changes=True)
    connect_all(state)
    host = inventory.get_host("@fake/escola-pins")
    ops.reset_changes(host.name)
    add_deploy(state, school_deploy, rounds)
    found = ops.changes(host.name)
    kinds = {c["kind"] for c in found}
    assert {"packages", "file", "directory", "service", "step"} <= kinds
    paths = {c["what"] for c in found if c["kind"] == "file"}
    assert {"/etc/nftables.conf", "/etc/ssh/sshd_config.d/50-schoolctl.conf", "/etc/logrotate.conf"} <= paths
    executed = " ".join(str(c) for c in host.connector.executed_commands)
    assert "s3cr3t" not in executed


@pytest.mark.parametrize(("name", "unit"), [("nginx", "nginx.service"), ("php8.4-fpm", "php8.4-fpm.service"),
                                           ("certbot.timer", "certbot.timer"), ("ssh.service", "ssh.service")])
def test_unit_names(name: str, unit: str) -> None:
    assert ops.unit_name(name) == unit


def test_firewall_lets_replies_of_inbound_services_out() -> None:
    """Loading the ruleset must not cut the SSH session it is loaded over (its first reply counts as new)."""
    from schoolctl.deploy import firewall

    conf = firewall.layer(_site("escola-pins")).files[0].data.decode()
    output = conf[conf.index("chain output"):]
    assert "tcp sport 22 tcp flags & (syn | ack) != syn accept" in output and "policy drop" in output
    assert "tcp sport 443 tcp flags & (syn | ack) != syn accept" in output
    assert "udp sport" not in output  # UDP has no replies-only test; conntrack covers media


def test_a_school_with_its_own_bbb_host_plans_both_hosts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The runner plans the school server and the BigBlueButton host, each in its own State."""
    from schoolctl.cli import runner
    from schoolctl.deploy.bbb_host import bbb_rounds
    from schoolctl.deploy.school import school_rounds

    site = _site("institut-mar", tmp_path)
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    monkeypatch.setattr(runner, "build_site", lambda school, store, readonly: site)
    monkeypatch.setattr(runner, "_targets", lambda school, s: [
        ("@fake/institut-mar", "fake", fake, school_rounds(s)),
        ("@fake/institut-mar-bbb", "fake", fake, bbb_rounds(s))])
    result = runner.run_school(site.school, store=None, plan=True, progress=lambda *a: None)
    assert result.status == "planned", result.error
    bbb = [c["what"] for c in result.changes if c["what"].startswith("@fake/institut-mar-bbb: ")]
    assert any("/etc/bigbluebutton/bbb-web.properties" in w for w in bbb)
    assert "@fake/institut-mar: /etc/nftables.conf" in [c["what"] for c in result.changes]
