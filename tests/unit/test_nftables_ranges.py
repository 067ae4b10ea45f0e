"""audit/nftables.py on port ranges (the BigBlueButton host's media range), with rules shaped as
`nft -j list ruleset` prints them: a range is allowed only as the very range expected."""

from __future__ import annotations

from typing import Any

import pytest

from schoolctl.audit import nftables


def ruleset(*accepts: Any) -> list[dict[str, Any]]:
    chain = {"family": "inet", "table": "schoolctl", "name": "input", "handle": 1, "type": "filter",
             "hook": "input", "prio": 0, "policy": "drop"}
    rules = [{"rule": {"family": "inet", "table": "schoolctl", "chain": "input", "handle": i + 2, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": right}},
        {"accept": None}]}} for i, (proto, right) in enumerate(accepts)]
    return [{"chain": chain}, *rules]


EXPECTED = {("tcp", "*", 443), ("udp", "*", (16384, 32768))}


@pytest.mark.parametrize(("right", "ok", "shown"), [
    ({"range": [16384, 32768]}, True, "udp 16384-32768"),
    ({"range": [1024, 65535]}, False, "NOT ALLOWED: udp 1024-65535"),    # wider than the media range
    ({"set": [{"range": [16384, 32768]}, 5060]}, False, "NOT ALLOWED: udp 5060"),
    ({"prefix": {"addr": "10.0.0.0", "len": 8}}, False, "a broad accept rule"),
])
def test_a_port_range_is_allowed_only_as_expected(right: Any, ok: bool, shown: str) -> None:
    passed, observed = nftables.evaluate(ruleset(("tcp", 443), ("udp", right)), "input", EXPECTED, set())
    assert passed is ok and shown in observed, observed
