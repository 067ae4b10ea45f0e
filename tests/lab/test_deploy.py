"""Real deploys of the base platform into lab hosts: idempotence, plan after drift, a killed deploy
that converges, and a fleet where one server is down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
SCHOOLCTL = [sys.executable, "-m", "schoolctl.cli"]
DOWN_ADDRESS = "10.213.0.250"  # inside the lab's own subnet, where no host runs


def school(sid: str, server: str) -> dict:
    """A school with no web service: the base, firewall and identity layers (fast to deploy)."""
    return {"id": sid, "name": f"Test {sid}", "district": "Lab", "server": server,
            "services": {}, "contacts": {"dpo": {"name": "DPO", "email": "dpo@example.org"}}}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A schools dir with three lab schools (one on an address where no server runs) and a vault."""
    base = tmp_path_factory.mktemp("fleet")
    schools = base / "schools"
    schools.mkdir()
    data = yaml.safe_load((ROOT / "schools" / "fleet.yaml").read_text())
    # names in the outbound allow-list are resolved on the controller: none resolve on a build machine
    data.update(dns=[], ntp=[])
    data["tls"]["acme_directory"] = "https://10.213.0.1:14000/dir"
    # the down server is a real one: its egress allow-list names the Debian archive (an address here)
    data["debian"] = {"mirror": "http://10.213.0.1:3142/debian", "security": "http://10.213.0.1:3142/debian-security"}
    (schools / "fleet.yaml").write_text(yaml.safe_dump(data))
    for sid, server in (("t-d1", "lab:t-d1"), ("t-d2", "lab:t-d2"), ("t-down", DOWN_ADDRESS)):
        (schools / f"{sid}.yaml").write_text(yaml.safe_dump(school(sid, server)))
    env = dict(os.environ, SCHOOLCTL_SCHOOLS_DIR=str(schools), SCHOOLCTL_VAULT_KEY_FILE=str(base / "vault.key"),
               SCHOOLCTL_SECRETS_DIR=str(base / "secrets"))
    subprocess.run([*SCHOOLCTL, "secrets", "init"], env=env, check=True, cwd=ROOT, capture_output=True)
    return schools, env


def schoolctl(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCHOOLCTL, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def deploy_json(env: dict[str, str], *ids: str) -> tuple[int, list[dict]]:
    proc = schoolctl(env, "deploy", *ids, "--yes", "--json")
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)["schools"]


def test_deploy_then_noop(lab_hosts, fleet) -> None:
    _, env = fleet
    lab_hosts("t-d1")
    code, [first] = deploy_json(env, "t-d1")
    assert code == 0, first["error"]
    assert first["status"] == "changed" and first["changes"]
    code, [second] = deploy_json(env, "t-d1")
    assert code == 0
    assert second == {**second, "status": "unchanged", "changes": []}


def test_plan_shows_exactly_a_manual_change(lab, lab_hosts, fleet) -> None:
    _, env = fleet
    lab_hosts("t-d1")
    assert deploy_json(env, "t-d1")[0] == 0
    lab.run("t-d1", "echo '# edited by hand' >> /etc/logrotate.conf && "
                    "nft delete rule inet schoolctl input handle "
                    "$(nft -a list chain inet schoolctl input | grep 'dport 443' | sed 's/.*handle //')", check=True)
    proc = schoolctl(env, "plan", "t-d1", "--json")
    assert proc.returncode == 0, proc.stderr
    [planned] = json.loads(proc.stdout)["schools"]
    assert [(c["kind"], c["what"]) for c in planned["changes"]] == [
        ("file", "/etc/logrotate.conf"), ("step", "live firewall ruleset matches /etc/nftables.conf")]
    text = schoolctl(env, "plan", "t-d1").stdout
    assert "-# edited by hand" in text  # the diff shows the line the deploy would remove
    assert json.loads(schoolctl(env, "plan", "t-d1", "--json").stdout)["schools"][0]["changes"] == planned["changes"]
    code, [fixed] = deploy_json(env, "t-d1")
    assert code == 0 and len(fixed["changes"]) == 2
    assert "dport 443" in lab.run("t-d1", "nft list chain inet schoolctl input", check=True).stdout


def test_killed_deploy_converges(lab, lab_hosts, fleet) -> None:
    _, env = fleet
    lab_hosts("t-d2")
    proc = subprocess.Popen([*SCHOOLCTL, "deploy", "t-d2", "--yes"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    # kill it while it installs packages (or at the latest after two minutes)
    while time.monotonic() < deadline and proc.poll() is None:
        if "apt-get" in lab.run("t-d2", "ps -eo args", timeout=30).stdout:
            time.sleep(2)
            break
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    code, [again] = deploy_json(env, "t-d2")
    assert code == 0, again["error"]
    code, [third] = deploy_json(env, "t-d2")
    assert (code, third["status"]) == (0, "unchanged")


def test_one_server_down_never_stops_the_others(lab_hosts, fleet) -> None:
    _, env = fleet
    lab_hosts("t-d1", "t-d2")
    proc = schoolctl(env, "deploy", "--all", "--yes")
    assert proc.returncode == 1
    rows = {line.split()[1]: line for line in proc.stdout.splitlines() if line.startswith("│")}
    assert "unchanged" in rows["t-d1"] or "changed" in rows["t-d1"]
    assert "failed" not in rows["t-d1"] and "failed" not in rows["t-d2"]
    assert "failed" in rows["t-down"]
    # the reason, once: a one-line error in the summary table's row (stdout), wrapped by its cell
    table = " ".join(proc.stdout.replace("│", " ").split())
    assert f"cannot connect to {DOWN_ADDRESS} port 22 over SSH" in table, proc.stdout + proc.stderr


@pytest.fixture(autouse=True, scope="module")
def _cleanup_secrets(fleet):
    yield
    shutil.rmtree(fleet[0].parent / "secrets", ignore_errors=True)
