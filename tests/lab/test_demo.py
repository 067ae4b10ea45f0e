"""`make demo` on a fresh lab state, as a newcomer runs it, in its two offline cases:

(b) no internet, but a test mirror: every app comes from the mirror, both deploys succeed (the
    second `unchanged`) and the audit is green, with the demo fleet's accepted risks saying why;
(c) neither internet nor a mirror: everything that needs no download is deployed, each app that
    cannot be obtained is named on one line (the file, where schoolctl looked, how to provide
    it), and the demo ends non-zero with a summary naming the apps left out.

Each runs the real Makefile target with its own vault, secrets, schools folder (a copy of
schools/ whose demo names its own lab host) and lab host. Upstream URLs point at a closed loopback
port, so no test ever sends traffic beyond the lab.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .support import MIRROR, booted, skip_reason

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
CLOSED = "http://127.0.0.1:9/{file}"


def _demo_copy(work: Path, host: str) -> Path:
    schools = work / "schools"
    shutil.copytree(ROOT / "schools", schools)
    demo = yaml.safe_load((schools / "demo.yaml").read_text())
    demo["server"] = f"lab:{host}"
    (schools / "demo.yaml").write_text(yaml.safe_dump(demo, allow_unicode=True))
    fleet = yaml.safe_load((schools / "fleet.yaml").read_text())
    fleet.update(dns=[], ntp=[])
    fleet["backup"]["host"] = f"lab:{host}-bk"  # its own backup host (make demo boots DEMO_BACKUP_LAB)
    for spec in fleet["artifacts"].values():
        if spec and "url" in spec:  # the downloads (language packs come from a mirror only)
            spec["url"], spec["urls"] = CLOSED, {}
    (schools / "fleet.yaml").write_text(yaml.safe_dump(fleet, allow_unicode=True))
    return schools


def _make_demo(work: Path, host: str, mirror: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHOOLCTL_SCHOOLS_DIR": str(_demo_copy(work, host)), "SCHOOLCTL_MIRROR": mirror,
           "SCHOOLCTL_VAULT_KEY_FILE": str(work / "vault.key"), "SCHOOLCTL_SECRETS_DIR": str(work / "secrets"),
           "DEMO_LAB": host, "DEMO_BACKUP_LAB": f"{host}-bk"}
    env.pop("SCHOOLCTL_LAYERS", None)
    try:
        return subprocess.run(["make", "-C", str(ROOT), "demo"], env=env, capture_output=True, text=True,
                              timeout=3000)
    finally:
        from schoolctl.lab import Lab

        Lab().down([f"{host}-bk", "drill-demo"])


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    """What a failed `make demo` said that matters: its stdout (the deploys' summaries, the audit's
    table with the failing controls) and the lines of stderr that are not per-control progress."""
    said = [line for line in proc.stderr.splitlines() if not _PROGRESS.match(line)]
    return proc.stdout[-6000:] + "\n--- stderr, without the progress lines:\n" + "\n".join(said)[-4000:]


_PROGRESS = re.compile(r"\s+[0-9.]+s \S+: [A-Z0-9-]+$")


@pytest.fixture
def fresh(request: pytest.FixtureRequest) -> Iterator[str]:
    host = request.param
    with booted(host, fresh=True):
        yield host


@pytest.mark.parametrize("fresh", ["demo-c"], indirect=True)
def test_demo_with_neither_internet_nor_mirror_deploys_the_rest_and_names_what_is_missing(fresh, tmp_path) -> None:
    if (reason := skip_reason()):
        pytest.skip(reason)
    proc = _make_demo(tmp_path, fresh, str(tmp_path / "no-mirror"))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    for app, file in (("moodle", "moodle-"), ("nextcloud", "nextcloud-"), ("etherpad", "etherpad-")):
        lines = [line for line in text.splitlines() if f"demo: skipped {app}: {file}" in line]
        assert len(lines) == 2, (app, text[-4000:])  # once per deploy, one line each
        assert "does not exist" in lines[0] and "SCHOOLCTL_MIRROR" in lines[0], lines[0]
    assert "not deployed, no release to be had: demo moodle, demo nextcloud, demo etherpad" in text, text[-3000:]
    assert "unchanged" in text  # the second deploy converged on what could be deployed
    assert "Traceback" not in text


@pytest.mark.parametrize("fresh", ["demo-b"], indirect=True)
def test_demo_from_the_test_mirror_is_green_and_truthful(fresh, tmp_path) -> None:
    if (reason := skip_reason(("moodle-5.0.6.tgz", "nextcloud-34.0.1.tar.bz2", "etherpad-3.3.1.tar.gz",
                               "node-v24.22.3-linux-x64.tar.xz"))):
        pytest.skip(reason)
    proc = _make_demo(tmp_path, fresh, MIRROR)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, _why(proc)
    assert "skipped" not in text and "unchanged" in text
    assert "accepted" in text  # the lab's Etherpad 3.3.1 is below 3.3.3: accepted, with its reason
    assert "demo: demo-" in text and "new on the backup host" in text  # the first archive
    assert "demo: drill passed for demo-" in text  # and the restore drill
    assert (tmp_path / "schools").is_dir()
