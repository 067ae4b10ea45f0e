"""Put a Jitsi build (../shared/tools/build-jitsi-lab.sh) into the artifact mirror, idempotently.

    .venv/bin/python bench/jitsi_mirror.py --from OUT_DIR [--mirror DIR]
    .venv/bin/python bench/jitsi_mirror.py --build SCRIPT COPIES_DIR OUT_DIR [--mirror DIR]

`--build` first runs the build script (a path the user gives: it is not part of this repository)
with COPIES_DIR and OUT_DIR. Then every file the build's SHA256SUMS lists is checked against it and
copied into the mirror's `jitsi/` folder (default /var/lib/schoolctl/mirror, or SCHOOLCTL_MIRROR);
files of an earlier build there are removed, so the folder holds one build (the Jitsi layer
refuses two versions of a package). The mirror's SHA256SUMS gets one `jitsi/<file>` line per file,
its other lines kept as they are. Run twice, the second run changes nothing and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FOLDER = "jitsi"


def fail(message: str) -> None:
    """Bad input: the message on stderr, exit 2 (nothing in the mirror changed yet)."""
    print(message, file=sys.stderr)
    sys.exit(2)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sums(path: Path) -> list[tuple[str, str]]:
    """(sha256, name) of a sha256sum file; a malformed line or a name that climbs is an error."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        name = name.removeprefix("*")
        if len(digest) != 64 or not name or "/" in name or name.startswith("."):
            fail(f"{path}:{number}: not a 'sha256  file' line of a plain file name")
        out.append((digest, name))
    return out


def merge(build: Path, mirror: Path) -> bool:
    """Copy the build into mirror/jitsi and list it in mirror/SHA256SUMS; True when anything changed."""
    wanted = read_sums(build / "SHA256SUMS")
    if not any(n.endswith(".tar.gz") for _, n in wanted):
        fail(f"{build}/SHA256SUMS lists no tarball: not a build-jitsi-lab.sh output")
    for digest, name in wanted:
        if sha256(build / name) != digest:
            fail(f"{build / name}: does not match {build}/SHA256SUMS; refusing the build")
    folder = mirror / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    changed = False
    names = {n for _, n in wanted}
    for old in sorted(folder.iterdir()):
        if old.name not in names:
            old.unlink()
            changed = True
            print(f"removed {FOLDER}/{old.name} (an earlier build)")
    for digest, name in wanted:
        dest = folder / name
        if dest.is_file() and sha256(dest) == digest:
            continue
        shutil.copyfile(build / name, dest.with_suffix(dest.suffix + ".part"))
        os.replace(dest.with_suffix(dest.suffix + ".part"), dest)
        changed = True
        print(f"added {FOLDER}/{name}")
    sums = mirror / "SHA256SUMS"
    old_lines = sums.read_text().splitlines() if sums.is_file() else []
    kept = [x for x in old_lines if not x.split("  ", 1)[-1].removeprefix("*").startswith(f"{FOLDER}/")]
    lines = sorted([*kept, *(f"{d}  {FOLDER}/{n}" for d, n in wanted)], key=lambda x: x.split("  ", 1)[-1])
    if lines != old_lines:
        with tempfile.NamedTemporaryFile("w", dir=mirror, delete=False) as tmp:
            tmp.write("\n".join(lines) + "\n")
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, sums)
        changed = True
        print(f"{sums}: {len(wanted)} {FOLDER}/ lines")
    return changed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--from", dest="out", type=Path, help="an OUT_DIR the build script already filled")
    g.add_argument("--build", nargs=3, metavar=("SCRIPT", "COPIES_DIR", "OUT_DIR"),
                   help="run the build script first")
    p.add_argument("--mirror", type=Path,
                   default=Path(os.environ.get("SCHOOLCTL_MIRROR") or "/var/lib/schoolctl/mirror"))
    a = p.parse_args()
    if a.build:
        script, copies, out = a.build
        subprocess.run([script, copies, out], check=True)
        a.out = Path(out)
    if not (a.out / "SHA256SUMS").is_file():
        fail(f"{a.out}: no SHA256SUMS (run the build script first)")
    print("changed" if merge(a.out, a.mirror) else "unchanged")


if __name__ == "__main__":
    main()
