"""The ecosystem's own entries, tried as a newcomer would: the built wheel in a fresh venv outside
the checkout (new, validate, plan of a school with all five services against a lab host, the HTML
report, the packaged testinfra suite), and plain pyinfra deploying a school with schoolctl's
inventory and deploy file."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support import MIRROR, ROOT, SchoolEnv, booted, skip_reason

HOST = "t-pkg"
pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with booted(HOST, fresh=True) as lab:
        yield lab


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with nothing but the built wheel (and its dependencies)."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(work)],
                   check=True, cwd=work, capture_output=True, timeout=600)
    wheel = next(work.glob("schoolctl-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=work, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv


def _run(venv: Path, cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHOOLCTL_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(SCHOOLCTL_VAULT_KEY_FILE=str(cwd / "vault.key"), SCHOOLCTL_SECRETS_DIR=str(cwd / "secrets"),
               SCHOOLCTL_MIRROR=MIRROR, PATH=f"{venv / 'bin'}:{env['PATH']}")
    return subprocess.run(list(args), cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=900)


def test_the_wheel_works_outside_any_checkout(installed: Path, lab: Any, tmp_path: Path) -> None:
    empty = tmp_path / "city"
    empty.mkdir()
    py = str(installed / "bin" / "python")
    where = _run(installed, empty, py, "-c", "import schoolctl, schoolctl.templates as t; print(schoolctl.__file__, "
                 "t.__file__)")
    assert where.returncode == 0 and str(ROOT) not in where.stdout and "site-packages" in where.stdout, where
    top = _run(installed, empty, py, "-c", "import importlib.metadata as m; d = m.distribution('schoolctl'); "
               "print(sorted({f.parts[0] for f in d.files if f.suffix == '.py'}))")
    assert top.stdout.strip() == "['schoolctl']", top.stdout
    lic = _run(installed, empty, py, "-c", "import importlib.metadata as m; print(m.metadata('schoolctl')"
               "['License-Expression']); print([f.name for f in m.distribution('schoolctl').files if 'LICENSE' in "
               "f.name])")
    assert "AGPL-3.0-or-later" in lic.stdout and "LICENSE" in lic.stdout, lic

    new = _run(installed, empty, "schoolctl", "new", "escola-nova")
    assert new.returncode == 0, new.stderr
    assert (empty / "schools" / "fleet.yaml").is_file() and (empty / "schools" / "escola-nova.yaml").is_file()
    school = yaml.safe_load((empty / "schools" / "escola-nova.yaml").read_text())
    school["server"] = f"lab:{HOST}"
    school["services"].update(jitsi={}, bigbluebutton={"pool": True})   # all five services
    (empty / "schools" / "escola-nova.yaml").write_text(yaml.safe_dump(school))
    fleet = yaml.safe_load((empty / "schools" / "fleet.yaml").read_text())
    fleet.update(dns=[], ntp=[], bbb_pool={"url": "https://bbb.escoles.bcn.example/bigbluebutton/"})
    (empty / "schools" / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    assert _run(installed, empty, "schoolctl", "validate").returncode == 0
    assert _run(installed, empty, "schoolctl", "secrets", "init").returncode == 0
    pool = _run(installed, empty, "schoolctl", "secrets", "set", "fleet", "bbb_pool", stdin=secrets.token_hex(16))
    assert pool.returncode == 0, pool.stderr

    plan = _run(installed, empty, "schoolctl", "plan", "escola-nova", "--json")
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    changes = json.loads(plan.stdout)["schools"][0]["changes"]
    paths = {c.get("what", "") for c in changes}
    for wanted in ("/etc/ssh/sshd_config.d/50-schoolctl.conf", "/etc/nginx/nginx.conf"):
        assert any(wanted in p for p in paths), (wanted, sorted(paths)[:40])
    text = " ".join(sorted(paths))
    for service in ("moodle", "nextcloud", "etherpad", "jitsi", "prosody"):   # every service's layer rendered
        assert service in text, service

    report = empty / "audit.html"
    audit = _run(installed, empty, "schoolctl", "audit", "escola-nova", "--format", "html", "--output", str(report))
    assert audit.returncode in (0, 1), audit.stderr            # a planned-only host fails controls: that is fine
    html = report.read_text()
    assert "HOST-EGRESS-DENY" in html and "<style>" in html

    suite = _run(installed, empty, "pytest", "--pyargs", "schoolctl.audit", "--collect-only", "-q",
                 f"--hosts=ssh://{HOST}", "--school", "escola-nova", "--schools-dir", str(empty / "schools"))
    assert suite.returncode == 0, suite.stdout[-2000:] + suite.stderr[-2000:]
    collected = [line for line in suite.stdout.splitlines() if "test_control[" in line]
    assert len(collected) >= 80 and any("HOST-SSH" in c for c in collected), suite.stdout[-2000:]


def test_plain_pyinfra_deploys_a_school(lab: Any, tmp_path: Path) -> None:
    """`pyinfra INVENTORY deploy/pyinfra_school.py` applies the same desired state as `schoolctl
    deploy`: afterwards schoolctl's own deploy finds nothing to change."""
    env = SchoolEnv(lab, tmp_path, HOST, "t-pyinfra", "base", {})
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    deploy_file = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec("
                                  "'schoolctl.deploy.pyinfra_school').origin)"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    for inventory in ("inventories/fleet.py", "schoolctl.inventories.fleet.hosts"):
        proc = subprocess.run([pyinfra, "-y", "--limit", env.sid, inventory, deploy_file], cwd=ROOT, env=env.env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"[{env.sid}]" in proc.stdout + proc.stderr
    after = env.deploy("schoolctl deploy after pyinfra")
    assert after["status"] == "unchanged", after["changes"]
