"""The control model, the registry and the parsers the controls use (no hosts)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from schoolctl.audit import host as h
from schoolctl.audit import web as w
from schoolctl.audit.catalogue import (
    LEGAL,
    CachedHost,
    Context,
    Expect,
    Outcome,
    applies_to_service,
    control,
    load_all,
    run_control,
)
from schoolctl.audit.firewall import NFT
from schoolctl.audit.ssh import SSHD


def test_registry_has_the_controls_with_complete_metadata() -> None:
    controls = load_all()
    assert len(controls) >= 25
    for cid, c in controls.items():
        assert cid == c.id and cid == cid.upper()
        assert c.title and c.why and c.legal and all(a in LEGAL for a in c.legal)
        assert c.severity in ("high", "medium", "low")
        if c.service in ("host", "web", "database"):
            assert cid.startswith(("HOST-", "WEB-", "DB-"))
            assert set(c.titles) == {"ca", "es"}, f"{cid} needs ca/es titles"
    for wanted in ("HOST-SSH-NO-PASSWORD", "HOST-EGRESS-DENY", "WEB-HSTS", "WEB-CSP", "DB-LOCAL-ONLY"):
        assert wanted in controls


def test_a_duplicate_id_or_unknown_legal_basis_is_refused() -> None:
    with pytest.raises(ValueError):
        control("X-1", "host", "t", "w", ["99"], "high")
    with pytest.raises(ValueError):
        control("HOST-SSH-NO-PASSWORD", "host", "t", "w", ["32"], "high")(lambda ctx: Outcome("pass"))


def _school(*services: str, **privacy):
    p = SimpleNamespace(**{"log_retention_days": 7, "access_log": "anonymised", "outbound": "deny", **privacy})
    return SimpleNamespace(id="s", has=lambda s: s in services, privacy=p, domain="s.example", admins=[],
                           server=SimpleNamespace(lab_name=None), fleet=SimpleNamespace(ntp=[]))


def test_applicability() -> None:
    assert applies_to_service("host", _school()) and applies_to_service("web", _school())
    assert not applies_to_service("database", _school("jitsi"))
    assert applies_to_service("database", _school("etherpad"))
    assert not applies_to_service("moodle", _school("nextcloud"))


def test_a_control_of_a_service_the_school_does_not_run_is_na_and_a_crash_is_an_error() -> None:
    db = load_all()["DB-LOCAL-ONLY"]
    assert run_control(db, Context(None, _school(), Expect())).status == "n/a"
    broken = run_control(db, Context(SimpleNamespace(run=lambda c: 1 / 0), _school("moodle"), Expect()))
    assert broken.status == "error" and "ZeroDivisionError" in broken.observed


class FakeBackend:
    """A testinfra-like backend answering from a dict; counts the commands it really ran."""

    def __init__(self, answers: dict[str, tuple[int, str]]):
        self.answers, self.ran, self.encoding = answers, [], "utf-8"
        self.sudo = False

    def run(self, command: str, *args):
        self.ran.append(command)
        if "| python3 - " in command:
            assert "/tmp" not in command  # the evidence script travels on stdin, never as a file
            cmds = json.loads(bytes.fromhex(command.split("| python3 - ")[-1]).decode())
            out = {c: [self.answers[c][0], self.answers[c][1], ""] for c in cmds}
            return self.result(0, command.encode(), json.dumps(out).encode(), b"")
        rc, out = self.answers[command]
        return self.result(rc, command.encode(), out.encode(), b"")

    def result(self, rc, cmd, out, err):
        from testinfra.backend.base import CommandResult

        return CommandResult(backend=self, exit_status=rc, command=cmd, _stdout=out, _stderr=err)

    def encode(self, s: str) -> bytes:
        return s.encode()

    def decode(self, data: bytes) -> str:
        return data.decode()


SSHD_OK = "passwordauthentication no\nkbdinteractiveauthentication no\npermitrootlogin without-password\n" \
          "authenticationmethods publickey\npubkeyauthentication yes\npermitemptypasswords no\nmaxauthtries 3\n" \
          "allowtcpforwarding no\nallowagentforwarding no\nx11forwarding no\npermittunnel no\n"


def test_cached_host_serves_prefetched_commands_in_one_round_trip() -> None:
    backend = FakeBackend({SSHD: (0, SSHD_OK), "uname": (0, "Linux")})
    cached = CachedHost(SimpleNamespace(backend=backend))
    cached.prefetch([SSHD])
    assert len(backend.ran) == 1
    ctx = Context(cached, _school(), Expect())
    for cid in ("HOST-SSH-NO-PASSWORD", "HOST-SSH-KEY-ONLY", "HOST-SSH-MAX-AUTH-TRIES", "HOST-SSH-NO-FORWARDING"):
        assert run_control(load_all()[cid], ctx).status == "pass", cid
    assert len(backend.ran) == 1 and cached.misses == []
    assert cached.run("uname").stdout == "Linux" and cached.misses == ["uname"]


@pytest.mark.parametrize(("line", "cid"), [("passwordauthentication yes", "HOST-SSH-NO-PASSWORD"),
                                           ("permitrootlogin yes", "HOST-SSH-ROOT-NO-PASSWORD"),
                                           ("authenticationmethods any", "HOST-SSH-KEY-ONLY"),
                                           ("maxauthtries 6", "HOST-SSH-MAX-AUTH-TRIES")])
def test_sshd_controls_fail_on_the_bad_value(line: str, cid: str) -> None:
    key = line.split()[0]
    text = "\n".join(x for x in SSHD_OK.splitlines() if not x.startswith(key + " ")) + "\n" + line
    backend = FakeBackend({SSHD: (0, text)})
    result = run_control(load_all()[cid], Context(CachedHost(SimpleNamespace(backend=backend)), _school(), Expect()))
    assert result.status == "fail" and line in result.observed


def _rule(chain: str, *expr: dict) -> dict:
    return {"rule": {"family": "inet", "table": "t", "chain": chain, "expr": list(expr)}}


def _m(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def ruleset(output_policy: str = "drop", extra: list[dict] | None = None) -> str:
    items = [{"chain": {"family": "inet", "table": "t", "name": n, "hook": n, "policy": p}}
             for n, p in (("input", "drop"), ("output", output_policy))]
    items += [
        _rule("input", _m({"meta": {"key": "iif"}}, "lo"), {"accept": None}),
        _rule("input", _m({"payload": {"protocol": "tcp", "field": "dport"}}, 22), {"accept": None}),
        _rule("output", _m({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}),
        _rule("output", _m({"payload": {"protocol": "ip", "field": "daddr"}}, "10.0.0.1"),
              _m({"payload": {"protocol": "tcp", "field": "dport"}}, 3142), {"accept": None}),
        *(extra or []),
    ]
    return json.dumps({"nftables": items})


def _fw(text: str, cid: str, **privacy) -> Outcome:
    backend = FakeBackend({NFT: (0, text)})
    ctx = Context(CachedHost(SimpleNamespace(backend=backend)), _school(**privacy) if privacy else _school(),
                  Expect(outbound=(("tcp", "10.0.0.1", 3142),), inbound=(("tcp", 22),)))
    return run_control(load_all()[cid], ctx)


def test_firewall_controls_read_the_live_ruleset() -> None:
    assert _fw(ruleset(), "HOST-EGRESS-DENY").status == "pass"
    assert _fw(ruleset(), "HOST-FIREWALL-INBOUND").status == "pass"
    open_out = _fw(ruleset("accept"), "HOST-EGRESS-DENY")
    assert open_out.status == "fail" and "policy accept" in open_out.observed
    extra = _fw(ruleset(extra=[_rule("output", _m({"payload": {"protocol": "tcp", "field": "dport"}}, 443),
                                     {"accept": None})]), "HOST-EGRESS-DENY")
    assert extra.status == "fail" and "broad" in extra.observed
    other = _fw(ruleset(extra=[_rule("output", _m({"payload": {"protocol": "ip", "field": "daddr"}}, "10.0.0.9"),
                                     _m({"payload": {"protocol": "tcp", "field": "dport"}}, 80), {"accept": None})]),
                "HOST-EGRESS-DENY")
    assert other.status == "fail" and "tcp 10.0.0.9:80" in other.observed
    port = _fw(ruleset(extra=[_rule("input", _m({"payload": {"protocol": "tcp", "field": "dport"}}, 8080),
                                    {"accept": None})]), "HOST-FIREWALL-INBOUND")
    assert port.status == "fail" and "tcp 8080" in port.observed
    allowed = _fw(ruleset("accept"), "HOST-EGRESS-DENY", outbound="allow")
    assert allowed.status == "pass" and "privacy.outbound: allow" in allowed.observed


def test_replies_of_the_schools_own_services_are_allowed_out_but_no_other_source_port() -> None:
    def sport(port: int) -> dict:
        return _rule("output", _m({"payload": {"protocol": "tcp", "field": "sport"}}, port), {"accept": None})

    ok = _fw(ruleset(extra=[sport(22)]), "HOST-EGRESS-DENY")
    assert ok.status == "pass" and "replies from the school's own tcp 22" in ok.observed
    bad = _fw(ruleset(extra=[sport(5555)]), "HOST-EGRESS-DENY")
    assert bad.status == "fail" and "tcp port 5555" in bad.observed


def test_an_unconditional_reject_closes_a_chain_with_accept_policy() -> None:
    closed = ruleset("accept", extra=[_rule("output", {"counter": {}}, {"reject": {"type": "icmpx"}})])
    assert _fw(closed, "HOST-EGRESS-DENY").status == "pass"


def test_timespans() -> None:
    assert h.timespan_seconds("7day") == 7 * 86400
    assert h.timespan_seconds("1w 2d") == 9 * 86400
    assert h.timespan_seconds("3600") == 3600
    with pytest.raises(ValueError):
        h.timespan_seconds("soon!")


def test_logrotate_stanzas_inherit_the_global_defaults_before_include() -> None:
    text = ("@@file /etc/logrotate.conf\ndaily\nrotate 7\nmaxage 7\ninclude /etc/logrotate.d\n"
            "@@file /etc/logrotate.d/apt\n/var/log/apt/term.log {\n  monthly\n  rotate 12\n}\n"
            "@@file /etc/logrotate.d/nginx\n/var/log/nginx/*.log {\n daily\n rotate 14\n maxage 30\n}\n")
    stanzas = {p: d for p, d, _ in h.logrotate_stanzas(text)}
    assert stanzas == {"/var/log/apt/term.log": 7, "/var/log/nginx/*.log": 14}


def test_csp_sources_that_are_not_the_schools() -> None:
    names = ("s.example", "moodle.s.example")
    assert w.csp_foreign("default-src 'self'; img-src 'self' data: blob:; style-src 'sha256-x='; "
                         "connect-src wss://moodle.s.example; upgrade-insecure-requests", names, "s.example") == []
    bad = w.csp_foreign("default-src 'self' https://cdn.example.net; font-src *; script-src https:", names,
                        "s.example")
    assert bad == ["default-src https://cdn.example.net", "font-src *", "script-src https:"]


def test_foreign_assets_in_a_page() -> None:
    html = """<html><head><link rel=stylesheet href="/a.css"><link rel=preconnect href="https://fonts.example">
    <style>@import "https://cdn.example/x.css"; body{background:url('https://img.example/b.png')}</style></head>
    <body><img src="https://s.example/logo.png" srcset="https://cdn.example/a.png 2x, /b.png 1x">
    <a href="https://moodle.org/docs">docs</a><a href="mailto:x@y">m</a><div style="background:url(//t.example/p)">
    </div></body></html>"""
    loaded, links = w.foreign_urls(html, ("s.example",))
    assert set(loaded) == {"https://fonts.example", "https://cdn.example/x.css", "https://img.example/b.png",
                           "https://cdn.example/a.png", "//t.example/p"}
    assert links == ["https://moodle.org/docs"]


def test_page_parsing() -> None:
    p = w.Page("HTTP/2 200 \r\nserver: nginx\r\nReferrer-Policy: no-referrer\r\n\r\n<html></html>", 0)
    assert p.status == 200 and p.headers["referrer-policy"] == "no-referrer" and p.body == "<html></html>"
    assert repr(w.Page("", 35)) == "no answer (curl exit 35)"
