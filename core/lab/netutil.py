"""Small network helpers that only ever talk to loopback or the lab's own addresses."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import time
import urllib.request
from pathlib import Path

from schoolctl.errors import LabError

_ALLOWED = [ipaddress.ip_network("127.0.0.0/8")]


def allow_network(net: ipaddress.IPv4Network) -> None:
    """Add the lab subnet to the addresses these helpers may talk to."""
    if net not in _ALLOWED:
        _ALLOWED.append(net)


def _guard(host: str) -> None:
    addr = ipaddress.ip_address(host)
    if not any(addr in net for net in _ALLOWED):
        raise LabError(f"refusing to send lab traffic to {host}: not loopback nor a lab address")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connect to ``host:port`` succeeds (loopback or lab addresses only)."""
    _guard(host)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 15.0) -> bool:
    """Wait (bounded) until ``host:port`` accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.1)
    return False


def _opener(cafile: Path | None = None) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never via a proxy
    if cafile is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(cafile))))
    return urllib.request.build_opener(*handlers)


def http(url: str, *, data: object | None = None, cafile: Path | None = None, timeout: float = 10) -> bytes:
    """GET (or POST JSON when ``data`` is given) ``url`` on loopback or a lab address."""
    host = urllib.request.urlparse(url).hostname or ""
    _guard(host)
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with _opener(cafile).open(req, timeout=timeout) as resp:
            return resp.read()
    except OSError as exc:
        raise LabError(f"request to {url} failed: {exc}") from exc
