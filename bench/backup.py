"""Backup benchmark on lab hosts: a school (Moodle, Nextcloud) with a few hundred MB of real data
(files uploaded over WebDAV by a roster user, partly compressible), then the first archive, an
archive of the unchanged school, a restore onto a new host and the restore drill, with their
times and sizes. Prints figures; needs root and the test mirror.

    .venv/bin/python bench/backup.py [--mib 300] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))

from support import SchoolEnv  # noqa: E402

from schoolctl.lab import Lab  # noqa: E402

SCHOOL, BACKUP, NEW, SID = "bench-b1", "bench-bk", "bench-b2", "benchbk"
LAYERS = "base,firewall,identity,database,php,web,moodle,nextcloud,backup"


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def timed(label: str, e: SchoolEnv, *args: str) -> tuple[float, dict]:
    start = time.monotonic()
    proc = e.cli(*args, "--json", timeout=7200)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    found = json.loads(proc.stdout)
    return took, found.get("schools", found)


def upload(e: SchoolEnv, uid: str, password: str, name: str, data: Path) -> None:
    fqdn, address = f"cloud.{e.school.domain}", e.lab.host(e.host).address
    proc = subprocess.run(["curl", "-sS", "--noproxy", "*", "-k", "--resolve", f"{fqdn}:443:{address}", "-K", "-",
                           "-o", "/dev/null", "-w", "%{http_code}", "-T", str(data),
                           f"https://{fqdn}/remote.php/dav/files/{uid}/{name}"],
                          capture_output=True, text=True, input=f'user = "{uid}:{password}"\n', timeout=600)
    if proc.stdout not in ("201", "204"):
        raise SystemExit(f"upload failed: {proc.stdout} {proc.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=300, help="data uploaded to Nextcloud (MiB)")
    ap.add_argument("--keep", action="store_true", help="leave the lab hosts up")
    args = ap.parse_args()
    lab = Lab()
    lab.down([SCHOOL, BACKUP, NEW, "drill-benchbk"])
    lab.up([SCHOOL, BACKUP], timeout=240)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            e = SchoolEnv(lab, Path(tmp), SCHOOL, SID, LAYERS,
                          {"moodle": {"version": "5.0.6"}, "nextcloud": {"version": "34.0.1"}})
            fleet = yaml.safe_load((e.schools / "fleet.yaml").read_text())
            fleet["backup"]["host"] = f"lab:{BACKUP}"
            for waiver in fleet["accept"]:
                waiver["school"] = SID
            (e.schools / "fleet.yaml").write_text(yaml.safe_dump(fleet))
            e.deploy("first deploy")
            pupil = next(p for p in e.import_roster([["Pau", "Vidal", "student", "3A", ""]]) if p["role"] == "student")
            chunk = Path(tmp) / "chunk.bin"
            for i in range(max(1, args.mib // 50)):  # half random, half text: a school's mix of photos and documents
                with chunk.open("wb") as f:
                    f.write(os.urandom(25 * 1048576))
                    f.write((f"lesson {i} " * 2_600_000)[:25 * 1048576].encode())
                upload(e, pupil["uid"], pupil["password"], f"work-{i}.bin", chunk)
            first_s, [first] = timed("first backup", e, "backup", SID)
            again_s, [again] = timed("unchanged backup", e, "backup", SID)
            restore_s, restored = timed("restore", e, "restore", SID, "--to", f"lab:{NEW}", "--yes")
            verify_s, [drill] = timed("verify", e, "backup", "verify", SID)
        print(f"data: {args.mib} MiB uploaded over WebDAV (half random, half text)")
        print(f"first backup:     {first_s:6.1f} s  archive {mib(first['original_size'])}, "
              f"{mib(first['deduplicated_size'])} stored (compressed, deduplicated)")
        print(f"unchanged backup: {again_s:6.1f} s  adds {mib(again['deduplicated_size'])} "
              f"({again['deduplicated_size'] / max(first['deduplicated_size'], 1):.2%} of the first)")
        print(f"restore:          {restore_s:6.1f} s  onto a fresh host (the config deployed, the data put back, "
              f"converged; counts {'equal' if not restored['differ'] else restored['differ']})")
        print(f"verify (drill):   {verify_s:6.1f} s  scratch host, restore, logins, counts, audit, teardown")
        print(f"drill result: {drill['status']}, counts {drill['counts']}")
    finally:
        if not args.keep:
            lab.down([SCHOOL, BACKUP, NEW, "drill-benchbk"])


if __name__ == "__main__":
    main()
