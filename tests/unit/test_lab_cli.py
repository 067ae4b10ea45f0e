"""The lab CLI's input errors and read-only commands (no root, no hosts needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schoolctl.cli.main import app
from schoolctl.errors import LabError
from schoolctl.lab import Lab


@pytest.fixture(autouse=True)
def empty_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCHOOLCTL_LAB_DIR", str(tmp_path / "lab"))
    return tmp_path / "lab"


def test_bad_name_exits_2_without_traceback() -> None:
    result = CliRunner().invoke(app, ["lab", "up", "Bad_Name"])
    assert result.exit_code == 2
    assert "invalid lab host name" in result.output
    assert "Traceback" not in result.output


def test_status_of_an_empty_lab() -> None:
    result = CliRunner().invoke(app, ["lab", "status", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["hosts"] == []
    assert "no lab hosts" in CliRunner().invoke(app, ["lab", "status"]).output


def test_ssh_to_an_unknown_host_says_how_to_make_it() -> None:
    result = CliRunner().invoke(app, ["lab", "ssh", "nosuch", "--", "true"])
    assert result.exit_code == 2
    assert "no lab host nosuch; run `schoolctl lab up nosuch`" in result.output


def test_bad_subnet_env_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOOLCTL_LAB_SUBNET", "8.8.8.0/24")
    result = CliRunner().invoke(app, ["lab", "status"])
    assert result.exit_code == 2 and "private range" in result.output


def test_host_lookup_error(empty_state: Path) -> None:
    lab = Lab()
    assert lab.state_dir == empty_state
    assert lab.status() == []
    with pytest.raises(LabError, match="no lab host demo"):
        lab.host("demo")


def test_register_domain_only_for_lab_addresses() -> None:
    lab = Lab()
    with pytest.raises(LabError, match="not a lab address"):
        lab.register_domain("school.example.test", "192.0.2.10")
    with pytest.raises(LabError, match="invalid domain"):
        lab.register_domain("not a domain", "10.213.0.10")


def test_doctor_prints_a_report() -> None:
    result = CliRunner().invoke(app, ["lab", "doctor"])
    assert result.exit_code in (0, 2)
    assert "debootstrap" in result.output and "lab subnet" in result.output


def test_down_carries_on_past_a_failing_host_and_says_which(empty_state: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab()
    for name in ("t-a", "t-b", "t-c"):
        (empty_state / "hosts" / name).mkdir(parents=True)
        (empty_state / "hosts" / name / "host.json").write_text("{}")
    tried: list[str] = []

    def remove(name: str) -> bool:
        tried.append(name)
        if name == "t-b":
            raise OSError(24, "Too many open files")
        (empty_state / "hosts" / name / "host.json").unlink()
        return True

    monkeypatch.setattr(lab, "_remove_host", remove)
    monkeypatch.setattr(lab, "_write_ssh_config", lambda: None)
    with pytest.raises(LabError) as err:
        lab.down(["t-a", "t-b", "t-c"])
    assert tried == ["t-a", "t-b", "t-c"]
    assert "could not remove 1 lab host(s): t-b: [Errno 24] Too many open files" in err.value.message
    assert "removed: t-a, t-c" in err.value.hint and "lab down` again" in err.value.hint


def test_remove_dir_says_what_it_could_not_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schoolctl.lab import hosts

    hd = hosts.HostDir(tmp_path / "t-x")
    (hd.path / "upper" / "srv").mkdir(parents=True)
    (hd.path / "upper" / "srv" / "kept").write_text("x")
    monkeypatch.setattr(hosts, "mounted", lambda path: False)
    monkeypatch.setattr(hosts.time, "sleep", lambda s: None)
    import os

    def refuse(path, *args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(LabError) as err:
        hosts.remove_dir(hd, attempts=2)
    monkeypatch.undo()
    assert "could not delete" in err.value.message and "Too many open files" in err.value.message
    assert "lab down t-x` again" in err.value.hint
    hosts.remove_dir(hd)
    assert not hd.path.exists()
