"""A real Jitsi Meet call in the lab, through the school's own videobridge, with nothing leaving the school.

Lab host t-jit-1 gets the layers base, firewall, identity, web and jitsi, with Jitsi's own parts from
the mirror's `jitsi/` tarballs (bench/jitsi_mirror.py puts a build of
../shared/tools/build-jitsi-lab.sh there). Two headless Debian Chromium (fake camera and microphone,
driven by Playwright, every name but the school's own mapped to nowhere) play a teacher, who logs
in with her directory account and opens a room, and a pupil who joins. With peer-to-peer off, the
videobridge's /colibri/stats shows the conference with two endpoints sending audio and video, and bitrate in and
out; every request both browsers made went to the school's own origin. Without a login nobody
opens a room. Then the audit's Jitsi stack controls pass, and each fails when broken.

Needs root, the lab and the mirror's Jitsi tarballs (skipped with the reason otherwise)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.lab.support import MIRROR, SchoolEnv, booted, skip_reason

pytestmark = pytest.mark.lab

HOST = "t-jit-1"
SID = "t-jit-meet"
LAYERS = "base,firewall,identity,web,jitsi"
PACKAGES = ("jitsi-videobridge2", "jicofo", "jitsi-meet-web", "jitsi-meet-prosody")
CHROMIUM = "/usr/bin/chromium"
# the flags known to keep Debian's Chromium from reaching anything on its own (polyglot.md)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-proxy-server",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def _mirror_jitsi() -> str | None:
    """Why the mirror cannot give Jitsi's own parts, or None."""
    sums = Path(MIRROR) / "SHA256SUMS"
    listed = sums.read_text() if sums.is_file() else ""
    missing = [p for p in PACKAGES if not re.search(rf"  jitsi/{re.escape(p)}-\d\S*\.tar\.gz$", listed, re.M)]
    if missing:
        return (f"the mirror {MIRROR} has no Jitsi tarballs for {', '.join(missing)} (build them with "
                "../shared/tools/build-jitsi-lab.sh, then bench/jitsi_mirror.py --from OUT_DIR)")
    return None


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (the dev extra) is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    return sync_playwright


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchoolEnv]:
    reason = skip_reason() or _mirror_jitsi()
    if reason:
        pytest.skip(reason)
    with booted(HOST, fresh=True) as lab:
        e = SchoolEnv(lab, tmp_path_factory.mktemp("video"), HOST, SID, LAYERS, {"jitsi": {}},
                      privacy={"guests": False, "recordings": False})
        first = e.deploy("first deploy")
        assert first["status"] == "changed", first
        assert not any("jicofo, jitsi-videobridge2 and jitsi-meet-web must come" in c for c in first["changes"])
        second = e.deploy("no-op deploy")
        assert second["status"] == "unchanged", second["changes"]
        e.import_roster([["Marta", "Puig Soler", "teacher", "1A", "marta@escola.example"],
                         ["Joan", "Vidal Roca", "student", "1A", ""]])
        yield e


def stats(env: SchoolEnv) -> dict[str, Any]:
    """The videobridge's /colibri/stats (its REST API, on the lab host's loopback only)."""
    return json.loads(env.ok("curl -fsS --noproxy '*' --max-time 10 http://127.0.0.1:8080/colibri/stats"))


def wait_for(what: str, probe: Any, timeout: float = 120, every: float = 2) -> Any:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Browser:
    """One headless Chromium whose only reachable name is the school's Jitsi host; every request it
    makes (HTTP and WebSocket) is recorded."""

    def __init__(self, pw: Any, env: SchoolEnv) -> None:
        self.meet = f"meet.{env.school.domain}"
        address = env.lab.host(env.host).address
        self.profile = tempfile.TemporaryDirectory()
        self.requests: list[str] = []
        self.context = pw.chromium.launch_persistent_context(
            self.profile.name, executable_path=CHROMIUM, headless=True, ignore_https_errors=True,
            args=[*FLAGS, f"--host-resolver-rules=MAP {self.meet} {address}, MAP * ~NOTFOUND"],
            env={"PATH": "/usr/bin:/bin", "HOME": self.profile.name})
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))

    def open(self, room: str) -> None:
        self.page.goto(f"https://{self.meet}/{room}", wait_until="domcontentloaded", timeout=60_000)

    def joined(self) -> bool:
        """In the conference (jitsi-meet's own APP.conference.isJoined())."""
        return bool(self.page.evaluate("() => !!(window.APP && APP.conference && APP.conference.isJoined())"))

    def join(self, uid: str | None, password: str, timeout: float = 120) -> bool:
        """Click "Join meeting" on the pre-join screen and answer the login dialog (once) with the
        account; True once in the conference, False when still not in after `timeout`."""
        join, user = self.page.get_by_test_id("prejoin.joinMeeting"), self.page.locator("#login-dialog-username")
        risks = self.page.locator("input[type=checkbox]").first   # the pre-join screen's only checkbox
        answered, end = 0, time.monotonic() + timeout
        while time.monotonic() < end:
            if self.joined():
                print(f"\n{uid or 'nobody'} in the conference after answering the login {answered} time(s)")
                return True
            if user.is_visible():
                # answered again only when the dialog came back empty (as a person would retype), at most 3 times
                if answered < 3 and uid is not None and not user.input_value():
                    user.fill(uid)
                    self.page.locator("#login-dialog-password").fill(password)
                    self.page.locator("#modal-dialog-ok-button").click()
                    answered += 1
            elif risks.count() and not risks.is_checked():
                # config.js warns of guessable room names: a teacher reads it and ticks the box
                risks.check(timeout=5_000, force=True)
            elif join.is_visible() and join.get_attribute("aria-disabled") != "true":
                join.click(timeout=5_000)
            time.sleep(1)
        self.page.screenshot(path=f"{self.profile.name}.png")   # what the person saw, for the failure message
        print(f"\nnot in the conference after {timeout:.0f} s: {self.profile.name}.png")
        return False

    def camera_on(self) -> None:
        """Unmute the camera through jitsi-meet's own API (what its camera button calls); the "v"
        shortcut needs the keyboard focus, which a headless page need not have."""
        self.page.evaluate("() => APP.conference.muteVideo(false)")

    def foreign(self) -> list[str]:
        """Requests to anything but https/wss://meet.<domain> (data: and blob: are the page's own)."""
        return sorted({u for u in self.requests if urlsplit(u).scheme not in ("data", "blob")
                       and not (urlsplit(u).scheme in ("https", "wss") and urlsplit(u).hostname == self.meet
                                and urlsplit(u).port in (None, 443))})

    def close(self) -> None:
        self.context.close()
        self.profile.cleanup()


def test_teacher_opens_a_room_a_pupil_joins_media_through_the_school_videobridge(env: SchoolEnv) -> None:
    teacher = next(p for p in env.people if p["role"] == "teacher")
    pupil = next(p for p in env.people if p["role"] == "student")
    before = stats(env)
    assert before["conferences"] == 0
    with _playwright()() as pw:
        a, b = Browser(pw, env), Browser(pw, env)
        try:
            start = time.monotonic()
            a.open("classe-1a")
            assert a.join(teacher["uid"], teacher["password"]), "the teacher is not in her room"
            # (jicofo asks the videobridge for a conference once a second participant is there)
            b.open("classe-1a")
            assert b.join(pupil["uid"], pupil["password"]), "the pupil is not in the room"
            for who in (a, b):   # cameras start off (config.js): each turns hers on
                who.camera_on()

            def flowing() -> dict[str, Any] | None:
                s = stats(env)
                ok = (s["conferences"] == 1 and s["endpoints"] == 2 and s["p2p_conferences"] == 0
                      and s["bit_rate_download"] > 0 and s["bit_rate_upload"] > 0
                      and s["endpoints_sending_audio"] == 2 and s["endpoints_sending_video"] == 2)
                return s if ok else None
            s = wait_for("two endpoints sending audio and video through the videobridge", flowing, timeout=180)
            print(f"\nteacher's page to media through JVB: {time.monotonic() - start:.1f} s; stats: "
                  f"{ {k: s[k] for k in ('endpoints', 'bit_rate_download', 'bit_rate_upload')} }")
            # the bridge channel is the colibri websocket (SCTP is off): the only address jvb.conf
            # advertises is wss://meet.<domain>:443/colibri-ws/, the only name these browsers can reach.
            # (Chromium reports no websocket event for it to playwright, so the videobridge counts it.)
            ws, sctp = "total_colibri_web_socket_messages_received", "total_data_channel_messages_received"

            def over_websocket() -> dict[str, Any] | None:
                t = stats(env)
                return t if t[ws] > before[ws] and t["num_eps_no_msg_transport_after_delay"] == 0 else None
            channel = wait_for("the bridge channel over the colibri websocket", over_websocket, timeout=60)
            assert channel[sctp] == before[sctp], channel
            for who in (a, b):
                assert any(u.startswith(f"wss://{who.meet}/xmpp-websocket") for u in who.requests)
                assert who.foreign() == [], who.foreign()
        finally:
            a.close()
            b.close()
    wait_for("the conference ends when both leave", lambda: stats(env)["conferences"] == 0, timeout=90)


def test_without_a_login_nobody_opens_a_room(env: SchoolEnv) -> None:
    with _playwright()() as pw:
        c = Browser(pw, env)
        try:
            c.open("sense-compte")
            assert not c.join(None, "", timeout=20)                               # never in without an account
            assert c.page.locator("#login-dialog-username").is_visible()        # asked for one instead
            c.page.locator("#login-dialog-username").fill("nobody.here")
            c.page.locator("#login-dialog-password").fill("not-a-password")
            c.page.locator("#modal-dialog-ok-button").click()
            time.sleep(10)
            assert not c.joined() and c.page.locator("#login-dialog-username").is_visible()   # refused
            assert stats(env)["conferences"] == 0
            assert c.foreign() == [], c.foreign()
        finally:
            c.close()


def test_stack_controls_pass_then_fail_when_broken(env: SchoolEnv) -> None:
    from schoolctl.audit.catalogue import load_all
    from schoolctl.audit.runner import audit_school, connect, expectations

    os.environ.update({k: env.env[k] for k in ("SCHOOLCTL_VAULT_KEY_FILE", "SCHOOLCTL_SECRETS_DIR")})
    ids = sorted(c for c in load_all() if c.startswith("JITSI-"))

    def audit() -> dict[str, tuple[str, str]]:
        school = env.school
        result = audit_school(school, expect=expectations(school, outbound=[]), host=connect(school), only=ids)
        assert result.error is None, result.error
        return {r.control.id: (r.status, r.observed) for r in result.controls}

    stack = ("JITSI-STACK-RUNNING", "JITSI-CONFIG-NO-THIRD-PARTY", "JITSI-NO-RECORDING")
    good = audit()
    assert {c: good[c] for c in good if good[c][0] != "pass"} == {}
    jvb, config = "/etc/jitsi/videobridge/jvb.conf", f"/etc/jitsi/meet/meet.{env.school.domain}-config.js"
    env.ok(f"cp {jvb} /root/jvb.bak && cp {config} /root/config.bak && systemctl stop jicofo && "
           f"sed -i 's#addresses = \\[ \\]#addresses = [ \"stun.l.google.com:19302\" ]#' {jvb} && "
           f"sed -i 's/recordingService: {{ enabled: false/recordingService: {{ enabled: true/' {config}")
    try:
        bad = audit()
    finally:
        env.ok(f"cp /root/jvb.bak {jvb} && cp /root/config.bak {config} && systemctl start jicofo")
    assert {c: bad[c][0] for c in stack} == {c: "fail" for c in stack}, bad
    assert "jicofo inactive" in bad["JITSI-STACK-RUNNING"][1]
    assert "stun.l.google.com" in bad["JITSI-CONFIG-NO-THIRD-PARTY"][1]
    assert "recordingService.enabled: true" in bad["JITSI-NO-RECORDING"][1]
    # restored by hand: the deploy restarts what was stopped and otherwise changes nothing
    again = env.deploy("after the audit")
    assert all(c.endswith("runs with its current configuration") or "jicofo" in c for c in again["changes"]), again
