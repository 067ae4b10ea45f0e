"""Firewall controls: inbound traffic only to the school's service ports, outbound only to the
city's allow-list, read from the live ruleset (`nft -j list ruleset`, interpreted by nftables.py)."""

from __future__ import annotations

import json
from typing import Any

from schoolctl.audit import nftables
from schoolctl.audit.catalogue import Context, Outcome, control, evidence, passed, verdict

NFT = evidence("nft -j list ruleset")


def ruleset(ctx: Context) -> list[dict[str, Any]]:
    res = ctx.run(NFT)
    if res.rc != 0:
        raise RuntimeError(f"nft -j list ruleset failed: {res.stderr.strip()[-300:]}")
    return json.loads(res.stdout or '{"nftables": []}')["nftables"]


def firewall(ctx: Context, hook: str, allowed: set[tuple[str, str, int]]) -> tuple[bool, str]:
    """nftables.evaluate on the host's live ruleset, with the school's inbound services (whose replies
    may leave on output)."""
    return nftables.evaluate(ruleset(ctx), hook, allowed, set(ctx.expect.inbound))


@control("HOST-FIREWALL-INBOUND", "host", "Inbound traffic is dropped but for the school's service ports",
         "Every open port is a way in to pupils' data; only the services the school runs may be reachable.",
         ["32", "25"], "high", titles={"ca": "Tallafoc d'entrada: només els ports dels serveis",
                                       "es": "Cortafuegos de entrada: solo los puertos de los servicios"})
def firewall_inbound(ctx: Context) -> Outcome:
    allowed = {(p, "*", port) for p, port in ctx.expect.inbound}
    ok, observed = firewall(ctx, "input", allowed)
    ports = ", ".join(f"{p} {nftables.port_text(port)}" for p, port in ctx.expect.inbound)
    return verdict(ok, f"nft -j list ruleset: {observed}", f"input policy drop; accept only {ports}")


@control("HOST-EGRESS-DENY", "host", "Outbound traffic is dropped but for the city's allow-list",
         "Apps' own 'offline' switches are not a guarantee (some plugins ignore them): only the firewall "
         "can promise that no pupil data leaves the city's servers.",
         ["44", "25", "32"], "high", titles={"ca": "Trànsit de sortida: només la llista permesa",
                                             "es": "Tráfico de salida: solo la lista permitida"})
def egress(ctx: Context) -> Outcome:
    allowed = set(ctx.expect.outbound)
    listed = ", ".join(f"{p} {a}:{port}" for p, a, port in ctx.expect.outbound) or "nothing"
    if ctx.policy.outbound == "allow":
        _, observed = firewall(ctx, "output", allowed)
        return passed(f"{observed}. The school's policy (privacy.outbound: allow) allows outbound traffic",
                      "privacy.outbound: allow, so no egress filter is required")
    ok, observed = firewall(ctx, "output", allowed)
    return verdict(ok, f"nft -j list ruleset: {observed}",
                   f"output policy drop; accept only the allow-list: {listed}{ctx.expect.outbound_note} "
                   "(and replies from the ports of the school's own inbound services)")
