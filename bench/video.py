"""Jitsi Meet in the lab: the time from "join" to media flowing through the school's videobridge, and
the videobridge's CPU during a 2-person call.

    sudo .venv/bin/python bench/video.py [--seconds 30] [--keep]

Boots lab host t-jit-bench, deploys a school with Jitsi from the mirror's `jitsi/` tarballs (as
tests/lab/test_video.py), imports a teacher and a pupil, and drives two headless Chromium (fake
camera and microphone; cameras on as soon as both are in). "join" is the pupil's click on "Join
meeting" once the teacher's room is open (the pupil's login included); "media flowing" is the first
/colibri/stats sample showing two endpoints sending audio with bitrate in and out. Then the JVB
process's CPU (utime+stime from /proc, both cameras on) over --seconds, as % of one core. Talks only to the lab host.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lab.support import SchoolEnv, booted, skip_reason
from tests.lab.test_video import Browser, _mirror_jitsi, stats, wait_for

HOST = "t-jit-bench"


def jvb_cpu_ticks(env: SchoolEnv) -> tuple[int, int]:
    """(utime+stime of the videobridge's java process, clock ticks per second), on the lab host."""
    out = env.ok("pid=$(systemctl show -p MainPID --value jitsi-videobridge2); "
                 "echo $(cut -d' ' -f14,15 /proc/$pid/stat) $(getconf CLK_TCK)").split()
    return int(out[0]) + int(out[1]), int(out[2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30, help="how long to sample the videobridge's CPU")
    p.add_argument("--keep", action="store_true", help="leave the lab host running")
    a = p.parse_args()
    reason = skip_reason() or _mirror_jitsi()
    if reason:
        sys.exit(f"cannot run: {reason}")
    from playwright.sync_api import sync_playwright

    if a.keep:
        os.environ["SCHOOLCTL_KEEP_LAB"] = "1"
    with booted(HOST, fresh=True) as lab, tempfile.TemporaryDirectory() as work:
        env = SchoolEnv(lab, Path(work), HOST, "t-jit-bench", "base,firewall,identity,web,jitsi", {"jitsi": {}},
                        privacy={"guests": False})
        env.deploy("first deploy")
        teacher, pupil = env.import_roster([["Marta", "Puig Soler", "teacher", "1A", ""],
                                            ["Joan", "Vidal Roca", "student", "1A", ""]])
        with sync_playwright() as pw:
            t, s = Browser(pw, env), Browser(pw, env)
            try:
                t.open("bench")
                assert t.join(teacher["uid"], teacher["password"])
                start = time.monotonic()
                s.open("bench")
                assert s.join(pupil["uid"], pupil["password"])
                for b in (t, s):   # cameras start off (config.js): each turns hers on
                    b.camera_on()
                wait_for("audio and video through the videobridge", lambda: (
                    (x := stats(env))["endpoints_sending_audio"] == 2 and x["endpoints_sending_video"] == 2
                    and x["bit_rate_download"] > 0 and x["bit_rate_upload"] > 0), timeout=180, every=0.5)
                flowing = time.monotonic() - start
                time.sleep(5)
                c0, hz = jvb_cpu_ticks(env)
                w0 = time.monotonic()
                time.sleep(a.seconds)
                c1, _ = jvb_cpu_ticks(env)
                wall = time.monotonic() - w0
                last = stats(env)
            finally:
                t.close()
                s.close()
    print(f"join -> media flowing through JVB: {flowing:.1f} s")
    print(f"JVB CPU, 2-person call, {wall:.0f} s: {100 * (c1 - c0) / hz / wall:.1f} % of one core "
          f"(bitrate in {last['bit_rate_download']} kbit/s, out {last['bit_rate_upload']} kbit/s, "
          f"{last['endpoints_sending_video']} sending video)")
    for label, seconds in env.timings.items():
        print(f"{label}: {seconds} s")


if __name__ == "__main__":
    main()
