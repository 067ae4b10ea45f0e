"""The generated ssh_config, known_hosts handling and small host-file helpers (no root needed)."""

from __future__ import annotations

from pathlib import Path

from schoolctl.lab.hosts import HostDir
from schoolctl.lab.sshconf import SshEntry, control_dir_for, render_config, set_known_host, write_config

KEY = Path("/state/ssh/id_ed25519")
KNOWN = Path("/state/ssh/known_hosts")


def _blocks(text: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("Host "):
            current = line.split()[1]
            blocks[current] = [line]
        elif current and line.strip():
            blocks[current].append(line.strip())
    return blocks


def test_one_host_block_per_host_with_connection_reuse() -> None:
    text = render_config([SshEntry("t-b", "10.213.0.12"), SshEntry("demo", "10.213.0.10")], KEY, KNOWN, KNOWN.parent)
    blocks = _blocks(text)
    assert list(blocks) == ["demo", "t-b"]
    demo = blocks["demo"]
    assert demo[0] == "Host demo 10.213.0.10"
    for want in (
        "HostName 10.213.0.10",
        "User root",
        f"IdentityFile {KEY}",
        f"UserKnownHostsFile {KNOWN}",
        "StrictHostKeyChecking accept-new",
        "ControlMaster auto",
        "ControlPath /state/ssh/cm-%C",
        "ControlPersist 60s",
    ):
        assert want in demo


def test_control_sockets_stay_short(tmp_path: Path) -> None:
    assert control_dir_for(Path("/var/lib/schoolctl/lab/ssh")) == Path("/var/lib/schoolctl/lab/ssh")
    deep = Path("/var/tmp") / ("x" * 80) / "ssh"
    short = control_dir_for(deep)
    assert len(str(short / ("cm-" + "0" * 40))) < 108
    assert short == control_dir_for(deep)
    cfg = tmp_path / "ssh_config"
    write_config(cfg, [SshEntry("demo", "10.213.0.10")], KEY, tmp_path / "ssh" / "known_hosts")
    assert f"ControlPath {tmp_path / 'ssh'}/cm-%C" in cfg.read_text() or "ControlPath /tmp/" in cfg.read_text()


def test_empty_config_is_valid() -> None:
    assert "Host " not in render_config([], KEY, KNOWN, KNOWN.parent)


def test_known_hosts_entries_are_replaced_per_host(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    set_known_host(kh, "demo", "10.213.0.10", ["ssh-ed25519 AAAAold root@x\n"])
    set_known_host(kh, "t-a", "10.213.0.11", ["ssh-ed25519 AAAAta root@x\n"])
    set_known_host(kh, "demo", "10.213.0.10", ["ssh-ed25519 AAAAnew root@x\n", "ecdsa-sha2-nistp256 BBBB c\n"])
    lines = kh.read_text().splitlines()
    assert "demo,10.213.0.10 ssh-ed25519 AAAAnew" in lines
    assert "demo,10.213.0.10 ecdsa-sha2-nistp256 BBBB" in lines
    assert "t-a,10.213.0.11 ssh-ed25519 AAAAta" in lines
    assert not any("AAAAold" in ln for ln in lines)
    set_known_host(kh, "demo", "10.213.0.10", [])
    assert kh.read_text().splitlines() == ["t-a,10.213.0.11 ssh-ed25519 AAAAta"]


def test_console_tail_strips_colours(tmp_path: Path) -> None:
    hd = HostDir(tmp_path)
    assert hd.console_tail() == "(no console log)"
    hd.console_log.write_text("".join(f"[\x1b[0;32m  OK  \x1b[0m] line {i}\r\n" for i in range(30)))
    tail = hd.console_tail(20).splitlines()
    assert len(tail) == 20 and tail[-1] == "[  OK  ] line 29"
