"""Run the audit's controls for many schools at once over SSH.

Per school: one persistent SSH connection (ControlMaster), ONE prefetch command collecting the
common evidence (audit.catalogue.CachedHost), then every control in order. Schools run in
parallel threads (gevent greenlets under `schoolctl`). An unreachable school or a failing
prefetch becomes a school-level error row, never a crash. A failing control the fleet accepts
(`accept:`, until its date) is reported `accepted`, with its evidence (catalogue.waived).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from schoolctl.audit.catalogue import (
    ACCEPTED,
    ERROR,
    FAIL,
    NA,
    PASS,
    STATUSES,
    CachedHost,
    Context,
    ControlResult,
    Expect,
    load_all,
    order_key,
    prefetch_commands,
    run_control,
    waived,
)
from schoolctl.config.model import SERVICE_HOSTS, Acceptance, EffectiveSchool
from schoolctl.connect import testinfra_failure, testinfra_host
from schoolctl.deploy.firewall import FirewallError, addresses
from schoolctl.secrets import redact

Progress = Callable[[str, str], None]
NOT_CHECKED = "not checked: the school could not be audited (its error says why)"


@dataclass
class SchoolAudit:
    """The audit of one school: its controls' results, or a school-level error."""

    school: str
    name: str = ""
    controls: list[ControlResult] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    prefetched: int = 0
    extra_commands: int = 0
    unused: list[Acceptance] = field(default_factory=list)  # accepted risks of this school whose control passed

    @property
    def status(self) -> str:
        """fail, error, accepted (nothing fails but an accepted risk), pass, or n/a."""
        if self.error:
            return ERROR
        statuses = {c.status for c in self.controls}
        for s in (FAIL, ERROR, ACCEPTED, PASS):
            if s in statuses:
                return s
        return NA

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.controls) for s in STATUSES}


# --- what the school's config expects ------------------------------------------------------------

def expectations(school: EffectiveSchool, outbound: list[Any] | None = None) -> Expect:
    """Names, inbound ports and the egress allow-list the school's config calls for. `outbound`
    (deploy.site.Endpoint list) defaults to the deploy's own view: cli.sites.build_site(...).outbound
    (for a lab school: the lab's proxy, apt cache, ACME and mirror)."""
    note = ""
    upstream_apt = True
    if outbound is None:
        from schoolctl.deploy.sites import build_site
        from schoolctl.secrets import SecretStore

        site = build_site(school, SecretStore(), readonly=True)
        outbound, upstream_apt = site.outbound, site.upstream_apt
    allow: list[tuple[str, str, int]] = []
    for ep in outbound:
        try:
            addrs = addresses(ep.host)
        except FirewallError:
            addrs = []
        if not addrs:
            note += f" ({ep.host} does not resolve here)"
        allow += [(ep.proto, a, ep.port) for a in addrs]
    # every school serves its landing page (and ACME challenges) through nginx
    inbound = [("tcp", school.server.ssh_port), ("tcp", 80), ("tcp", 443)]
    web = [s for s in SERVICE_HOSTS if school.has(s)]
    if school.services.jitsi:
        j = school.services.jitsi
        inbound += [("udp", j.jvb_port), ("udp", j.turn_port), ("tcp", j.turn_port)]
    names = [school.domain, *(f"{SERVICE_HOSTS[s]}.{school.domain}" for s in web)]
    pages, pages_note = names, ""
    if school.services.jitsi and (school.fleet.apt_repos.jitsi is None or not upstream_apt):
        meet = f"{SERVICE_HOSTS['jitsi']}.{school.domain}"
        pages = [n for n in names if n != meet]
        pages_note = (f"{meet}: not fetched, Jitsi's web client is not deployed here (its upstream repository "
                      "is off for this server: only prosody, coturn and the site's config are)")
    return Expect(names=tuple(names), pages=tuple(pages), outbound=tuple(dict.fromkeys(allow)),
                  inbound=tuple(dict.fromkeys(inbound)), outbound_note=note, pages_note=pages_note,
                  trust=tuple(trust_roots(school)))


def bbb_expectations(school: EffectiveSchool, expect: Expect) -> Expect:
    """The school's own BigBlueButton host: its name (certificate, pages), its ports (deploy/firewall.py:
    bbb_inbound), the school server's egress allow-list and trust."""
    from schoolctl.deploy.bigbluebutton import TURN_PORT, bbb_host
    from schoolctl.deploy.firewall import bbb_inbound
    from schoolctl.deploy.site import Site

    bbb = school.services.bigbluebutton
    assert bbb is not None and bbb.server is not None
    name = bbb_host(Site(school=school, secret=lambda *a, **k: None))
    inbound = [(r.proto, (r.port, r.last) if r.last else r.port) for r in bbb_inbound(bbb.server.ssh_port, TURN_PORT)]
    return Expect(names=(name,), pages=(name,), trust=expect.trust, outbound=expect.outbound,
                  inbound=tuple(inbound), outbound_note=expect.outbound_note)


def trust_roots(school: EffectiveSchool) -> list[str]:
    """CA certificates a school's chain may end at besides the controller's store: the city CA
    (tls.mode internal) and, for a lab school, the lab ACME server's current root."""
    roots = []
    tls = school.fleet.tls
    if tls.mode == "internal" and tls.ca_file and Path(tls.ca_file).is_file():
        roots.append(Path(tls.ca_file).read_text())
    if school.server.lab_name:
        from schoolctl.lab import Lab

        # when the lab ACME server is not running, the chain check says so
        with tempfile.TemporaryDirectory() as d, contextlib.suppress(Exception):
            roots.append(Lab().fetch_acme_root(Path(d) / "root.pem").read_text())
    return roots


# --- connections ---------------------------------------------------------------------------------

def connect(school: EffectiveSchool) -> Any:
    """A testinfra host for the school's server (schoolctl.connect)."""
    return testinfra_host(school.server)


# --- the audit -------------------------------------------------------------------------------------

def audit_school(school: EffectiveSchool, expect: Expect | None = None, host: Any = None,
                 only: list[str] | None = None, progress: Progress | None = None,
                 today: date | None = None) -> SchoolAudit:
    """Audit one school. `today` (default: today in the fleet's time zone) is the day the support
    table's dates and the accepted risks' `until` are read on."""
    from schoolctl.releases import acceptance
    from schoolctl.releases import today as fleet_today

    start = time.monotonic()
    result = SchoolAudit(school.id, school.name)
    note = progress or (lambda s, w: None)
    on = today or fleet_today(school.fleet)
    try:
        controls = load_all()
        ids = only or sorted(controls, key=order_key)
        note(school.id, "expectations")
        expect = expect or expectations(school)
        note(school.id, "connecting")
        cached = CachedHost(host or connect(school))
        applicable = [i for i in ids if controls[i].applicable(school)]
        if applicable:
            cmds = prefetch_commands(school, expect)
            note(school.id, f"collecting evidence ({len(cmds)} commands)")
            cached.prefetch(cmds)
            result.prefetched = len(cmds)
        ctx = Context(cached, school, expect, on)
        bbb_ctx = None
        for cid in ids:
            note(school.id, cid)
            control = controls[cid]
            if control.service == "bigbluebutton" and control.applicable(school):
                bbb = school.services.bigbluebutton
                if bbb is not None and bbb.pool:
                    result.controls.append(ControlResult(control, NA, "the school uses the city's BigBlueButton "
                                                         "pool, audited as the city's own service", ""))
                    continue
                if bbb_ctx is None:  # BigBlueButton runs on its own host: its controls read that host
                    # (a host handed in by the caller, e.g. a test or the testinfra suite, is used as is)
                    bbb_ctx = Context(cached if host is not None else CachedHost(testinfra_host(bbb.server)),
                                      school, bbb_expectations(school, expect), on)
                result.controls.append(waived(run_control(control, bbb_ctx), school, on))
                continue
            result.controls.append(waived(run_control(control, ctx), school, on))
        result.extra_commands = len(cached.misses)
        passed = {r.control.id for r in result.controls if r.status == PASS}
        result.unused = [a for cid in sorted(passed) if (a := acceptance(school.fleet, cid, school.id, on))]
    except Exception as e:  # unreachable host, lab down, broken evidence script: the school's one error
        msg = str(e).strip().splitlines()
        why = testinfra_failure(e)  # ssh's own reason, worded as the deploy's (schoolctl.connect)
        result.error = redact(f"cannot audit over SSH: {why}" if why else
                              f"{type(e).__name__}: {msg[-1] if msg else ''}"[:500])
        # the reason is said once, as the school's error; its controls only say they were not checked
        result.controls = [ControlResult(c, ERROR, NOT_CHECKED, "") if c.applicable(school) else
                           ControlResult(c, NA, f"{school.id} does not run {c.service}", "")
                           for c in (load_all()[i] for i in (only or sorted(load_all(), key=order_key)))]
    result.seconds = time.monotonic() - start
    note(school.id, f"done: {result.status} in {result.seconds:.1f}s")  # the error itself: in the report
    return result


def audit_all(schools: list[EffectiveSchool], progress: Progress | None = None, parallel: int = 20,
              only: list[str] | None = None) -> list[SchoolAudit]:
    """Audit every school concurrently, at most `parallel` at once; results in the order given."""
    load_all()
    if not schools:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(schools)))) as ex:
        return list(ex.map(lambda s: audit_school(s, only=only, progress=progress), schools))
