"""Connections to servers, in one place, for the deploy runner, the roster import and the audit:
the address to reach (a `lab:NAME` server is that lab host's), pyinfra's connection data, a pyinfra
SSH session for ad-hoc root commands, and a testinfra host for the audit. Timeouts, retries and
host-key policy are set here and nowhere else."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from schoolctl.config.model import Server
from schoolctl.errors import LabError, ServerError

CONNECT_TIMEOUT = 15  # seconds for pyinfra's SSH connect (deploy, roster import)
AUDIT_TIMEOUT = 5     # seconds for the audit's SSH connect (a fleet audit must not wait on one host)
RETRIES = {"ssh_connect_retries": 1, "ssh_strict_host_key_checking": "accept-new"}
_CONTROL_DIR = Path(tempfile.gettempdir()) / "schoolctl-audit-ssh"
_reached: set[str] = set()  # the servers (addresses as configured) this process opened a connection to


def reached(server: Server) -> bool:
    """Whether this process connected to the server (a Session, or the audit's testinfra host)."""
    return server.address in _reached


def address(server: Server) -> str:
    """The address to connect to: the server's own, or the lab host's for `lab:NAME`."""
    if not server.lab_name:
        return server.address
    from schoolctl.lab import Lab

    try:
        host = Lab().host(server.lab_name)
    except LabError as e:
        raise ServerError(str(e)) from None
    if host.state != "running":
        raise ServerError(f"lab host {server.lab_name} is {host.state}",
                          f"run `schoolctl lab up {server.lab_name}`")
    return host.address


def no_delay(host: Any) -> None:
    """Switch Nagle's algorithm off on a connected pyinfra host's SSH socket. Each command is a few
    small packets each way; with Nagle on and the peer's delayed ACK, most commands wait ~40 ms for
    nothing (measured on the lab: `true` 50 ms -> 9 ms). OpenSSH's own client does the same for
    interactive sessions. Anything but paramiko's SSH connector is left as it is."""
    import socket

    client = getattr(getattr(host, "connector", None), "client", None)
    transport = client.get_transport() if client is not None else None
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def pyinfra_data(server: Server, strict: bool = True, retries: bool = False) -> dict[str, Any]:
    """pyinfra's host data for a server (a school's, or its BigBlueButton host). `strict=False`
    falls back to the configured address when a lab host is not running (inventory exports)."""
    try:
        host = address(server)
    except ServerError:
        if strict:
            raise
        host = server.address
    data: dict[str, Any] = {"ssh_hostname": host, "ssh_user": server.ssh_user, "ssh_port": server.ssh_port}
    if server.lab_name and host != server.address:
        from schoolctl.lab import Lab

        paths = Lab().paths
        data.update(ssh_key=str(paths.ssh_key), ssh_known_hosts_file=str(paths.known_hosts), ssh_user="root")
    return {**data, **RETRIES} if retries else data


class Session:
    """One pyinfra SSH connection to a server for ad-hoc commands, run as root (sudo when the SSH
    user is not root); stdin may carry data (e.g. an LDIF). Use as a context manager."""

    def __init__(self, server: Server, name: str):
        self.server, self.name = server, name
        self.state: Any = None
        self.host: Any = None
        self.sudo = False

    def __enter__(self) -> Session:
        from pyinfra.api import Config, Inventory, State
        from pyinfra.api.connect import connect_all
        from pyinfra.api.exceptions import PyinfraError

        data = pyinfra_data(self.server, retries=True)
        inventory = Inventory(([(self.name, data)], {}))
        self.state = State(inventory=inventory, config=Config(CONNECT_TIMEOUT=CONNECT_TIMEOUT))
        with contextlib.suppress(PyinfraError):
            connect_all(self.state)
        self.host = inventory.get_host(self.name)
        if not self.state.activated_hosts or self.host in self.state.failed_hosts:
            raise ServerError(f"cannot connect to {self.name}'s server ({data['ssh_hostname']}) over SSH")
        no_delay(self.host)
        _reached.add(self.server.address)
        self.sudo = data.get("ssh_user", "root") != "root"
        return self

    def __exit__(self, *exc: object) -> None:
        from pyinfra.api.connect import disconnect_all

        if self.state is not None:
            disconnect_all(self.state)

    def run(self, command: str, stdin: str | None = None, timeout: int = 600) -> tuple[bool, str, str]:
        """(ok, stdout, stderr) of one shell command."""
        from pyinfra.api import StringCommand

        extra: dict[str, Any] = {"_timeout": timeout}
        if self.sudo:
            extra["_sudo"] = True
        if stdin is not None:
            extra["_stdin"] = stdin
        ok, output = self.host.run_shell_command(StringCommand(command), **extra)
        return ok, output.stdout, output.stderr


def ssh_argv(server: Server) -> list[str]:
    """OpenSSH's command line to run one command as root on a server, sharing the audit's
    connection when it is still open (the lab's ssh_config, or the audit's ControlPath); the
    command is appended by the caller. Raises ServerError when a lab host is not running."""
    if server.lab_name:
        from schoolctl.lab import Lab

        address(server)  # raises ServerError when the lab host is not running
        return ["ssh", "-F", str(Lab().ssh_config_path), server.lab_name]
    data = pyinfra_data(server)
    target = f"{data['ssh_user']}@{data['ssh_hostname']}:{data['ssh_port']}"
    _CONTROL_DIR.mkdir(mode=0o700, exist_ok=True)
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o",
            f"ConnectTimeout={AUDIT_TIMEOUT}", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
            "-o", f"ControlPath={_CONTROL_DIR / hashlib.sha256(target.encode()).hexdigest()[:16]}",
            "-p", str(data["ssh_port"]), f"{data['ssh_user']}@{data['ssh_hostname']}"]
    return [*argv, "sudo", "-n"] if data["ssh_user"] != "root" else argv


def testinfra_host(server: Server) -> Any:
    """A testinfra host over ssh with a persistent connection (the lab's ssh_config for lab hosts)."""
    import testinfra

    _reached.add(server.address)
    if server.lab_name:
        from schoolctl.lab import Lab

        address(server)  # raises ServerError when the lab host is not running
        return testinfra.get_host(f"ssh://{server.lab_name}", ssh_config=str(Lab().ssh_config_path),
                                  timeout=AUDIT_TIMEOUT)
    data = pyinfra_data(server)
    target = f"{data['ssh_user']}@{data['ssh_hostname']}:{data['ssh_port']}"
    _CONTROL_DIR.mkdir(mode=0o700, exist_ok=True)
    return testinfra.get_host(
        f"ssh://{target}",
        # a ControlPath without ssh's %-tokens: testinfra %-formats the ssh command line itself
        controlpath=str(_CONTROL_DIR / hashlib.sha256(target.encode()).hexdigest()[:16]),
        timeout=AUDIT_TIMEOUT, ssh_extra_args="-o BatchMode=yes -o StrictHostKeyChecking=accept-new")
