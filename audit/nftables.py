"""What an nftables ruleset allows: an interpreter of `nft -j list ruleset` (its parsed JSON).

No host and no controls here: `evaluate(rules, hook, allowed, inbound)` says whether every IP family
meets a default-drop chain on `hook` whose accept rules stay within `allowed`, with the evidence."""

from __future__ import annotations

from typing import Any


def _values(right: Any) -> list[Any] | None:
    """A match's right side as a list of single values, a range as a (first, last) tuple; None when
    it is a prefix or a map."""
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    items = right if isinstance(right, list) else [right]
    items = [tuple(i["range"]) if isinstance(i, dict) and list(i) == ["range"] else i for i in items]
    return None if any(isinstance(i, dict) for i in items) else items


def _port(value: Any) -> int | tuple[int, int]:
    """A port, or a port range as (first, last): allowed only when the expected ports name that range."""
    return (int(value[0]), int(value[1])) if isinstance(value, tuple) else int(value)


def port_text(port: int | tuple[int, int]) -> str:
    return f"{port[0]}-{port[1]}" if isinstance(port, tuple) else str(port)


def _rule_scope(expr: list[dict[str, Any]], hook: str) -> str | list[tuple[str, str, Any]] | None:
    """What one accepting rule lets through. 'lo', 'ct', 'icmp' for the harmless ones; a list of
    (proto, address, port) (address '*' on input) when it is narrow; None when it is broad."""
    proto: list[str] = []
    addrs: list[str] | None = None
    ports: list[Any] | None = None
    sports: list[tuple[str, Any]] = []
    for e in expr:
        m = e.get("match")
        if not m:
            continue
        left, op, vals = m["left"], m["op"], _values(m["right"])
        if op not in ("==", "in"):
            continue  # a negated match narrows nothing we can rely on
        meta, ct, payload = left.get("meta", {}), left.get("ct", {}), left.get("payload", {})
        if meta.get("key") in ("iif", "oif", "iifname", "oifname") and vals == ["lo"]:
            return "lo"
        if ct.get("key") == "state" and vals and set(vals) <= {"established", "related"}:
            return "ct"
        if meta.get("key") == "l4proto" and vals and set(vals) <= {"icmp", "ipv6-icmp"}:
            return "icmp"
        if meta.get("key") == "l4proto" and vals:
            proto = [str(v) for v in vals]
        field = payload.get("field")
        if field == "daddr" and payload.get("protocol") in ("ip", "ip6"):
            addrs = None if vals is None else [str(v) for v in vals]
            if vals is None:
                return None
        if field == "dport":
            if vals is None:
                return None
            proto = [payload.get("protocol", "tcp")]
            ports = [_port(v) for v in vals]
        if field == "sport" and vals is not None:
            sports = [(payload.get("protocol", "tcp"), _port(v)) for v in vals]
    if hook == "output" and sports and ports is None and addrs is None:
        return [("reply", p, port) for p, port in sports]
    if ports is None or (hook == "output" and addrs is None):
        return None
    return [(p, a, port) for p in proto for a in (addrs or ["*"]) for port in ports]


def _chains(rules: list[dict[str, Any]], hook: str) -> list[dict[str, Any]]:
    """Base chains on `hook`, each with its rules (jumped-to chains' rules inlined) and whether it
    drops by default (policy drop, or an unconditional drop/reject before the end)."""
    chains = {(c["family"], c["table"], c["name"]): dict(c, rules=[])
              for x in rules if (c := x.get("chain"))}
    for x in rules:
        if (r := x.get("rule")) and (key := (r["family"], r["table"], r["chain"])) in chains:
            chains[key]["rules"].append(r["expr"])

    def flatten(key: tuple[str, str, str], depth: int = 0) -> tuple[list[list[dict[str, Any]]], bool]:
        out, closed = [], False
        for expr in chains[key]["rules"]:
            verdicts = [k for e in expr for k in e if k in ("accept", "drop", "reject", "jump", "goto")]
            if any("match" in e for e in expr) is False and verdicts and verdicts[-1] in ("drop", "reject"):
                closed = True
                break
            target = next((e.get("jump") or e.get("goto") for e in expr if "jump" in e or "goto" in e), None)
            if target and depth < 5 and (sub := (key[0], key[1], target["target"])) in chains:
                out += flatten(sub, depth + 1)[0]
            elif "accept" in verdicts:
                out.append(expr)
        return out, closed

    found = []
    for key, c in chains.items():
        if c.get("hook") != hook:
            continue
        accepts, closed = flatten(key)
        found.append({"family": c["family"], "table": c["table"], "name": c["name"],
                      "drop": c.get("policy") == "drop" or closed, "accepts": accepts})
    return found


def _families(family: str) -> set[str]:
    return {"inet": {"ipv4", "ipv6"}, "ip": {"ipv4"}, "ip6": {"ipv6"}}.get(family, set())


def evaluate(rules: list[dict[str, Any]], hook: str, allowed: set[tuple[str, str, int]],
             inbound: set[tuple[str, int]]) -> tuple[bool, str]:
    """Whether every IP family meets a default-drop `hook` chain whose accepts stay within `allowed`;
    and the evidence. On output, a rule accepting packets FROM the port of one of the school's own
    inbound services (`inbound`: its replies, `tcp sport 443 accept`) is allowed and shown as such."""
    chains = _chains(rules, hook)
    covered: set[str] = set()
    notes = []
    for c in chains:
        extra: list[str] = []
        opened: list[str] = []
        replies: list[str] = []
        for expr in c["accepts"]:
            scope = _rule_scope(expr, hook)
            if scope is None:
                extra.append("a broad accept rule (no exact address and port)")
            elif isinstance(scope, list) and scope and scope[0][0] == "reply":
                for _, p, port in scope:
                    replies.append(f"{p} {port_text(port)}")
                    if (p, port) not in inbound:
                        extra.append(f"anything from {p} port {port_text(port)} (not a service of the school)")
            elif isinstance(scope, list):
                for p, a, port in scope:
                    item = f"{p} {port_text(port)}" if hook == "input" else f"{p} {a}:{port_text(port)}"
                    opened.append(item)
                    if (p, a, port) not in allowed:
                        extra.append(item)
        name = f"{c['family']} {c['table']} {c['name']}"
        policy = "drop" if c["drop"] else "accept"
        notes.append(f"{name}: policy {policy}; accepts {', '.join(opened) or 'nothing'} (+ lo, established, icmp"
                     + (f", replies from the school's own {', '.join(replies)}" if replies else "") + ")"
                     + (f"; NOT ALLOWED: {', '.join(dict.fromkeys(extra))}" if extra else ""))
        if c["drop"] and not extra:
            covered |= _families(c["family"])
    if not chains:
        notes.append(f"no nftables chain on the {hook} hook")
    return covered >= {"ipv4", "ipv6"}, "; ".join(notes)
