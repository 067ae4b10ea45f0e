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

CONNECT_TIMEOUT = 15  # seconds for pyinfra's SSH connect and handshake (deploy, roster import)
BANNER_TIMEOUT = 10   # seconds, within those, for the server's first words (its SSH banner)
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
    if not retries:
        return data
    # paramiko's own defaults (banner 15 s, handshake `timeout`, auth 30 s) race each other: a server
    # that accepts and never speaks then fails as "No existing session"; the banner's deadline comes first
    timeouts = {"timeout": CONNECT_TIMEOUT, "banner_timeout": min(BANNER_TIMEOUT, CONNECT_TIMEOUT),
                "auth_timeout": CONNECT_TIMEOUT}
    return {**data, **RETRIES, "ssh_paramiko_connect_kwargs": timeouts}


class Session:
    """One pyinfra SSH connection to a server for ad-hoc commands, run as root (sudo when the SSH
    user is not root); stdin may carry data (e.g. an LDIF). Use as a context manager."""

    def __init__(self, server: Server, name: str):
        self.server, self.name = server, name
        self.state: Any = None
        self.host: Any = None
        self.sudo = False

    def __enter__(self) -> Session:
        from pyinfra.api import BaseStateCallback, Config, Inventory, State
        from pyinfra.api.connect import connect_all
        from pyinfra.api.exceptions import PyinfraError

        data = pyinfra_data(self.server, retries=True)
        inventory = Inventory(([(self.name, data)], {}))
        self.state = State(inventory=inventory, config=Config(CONNECT_TIMEOUT=CONNECT_TIMEOUT))
        errors: list[Exception] = []

        class Errors(BaseStateCallback):
            def host_connect_error(self, state: Any, host: Any, error: Exception) -> None:  # type: ignore[override]
                errors.append(error)

        self.state.add_callback_handler(Errors())
        with contextlib.suppress(PyinfraError):
            connect_all(self.state)
        self.host = inventory.get_host(self.name)
        if not self.state.activated_hosts or self.host in self.state.failed_hosts:
            raise ServerError(connect_failure(data, errors[-1] if errors else None, f"{self.name}'s server"))
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


# --- when SSH opens no session: the real cause, in one line ----------------------------------------

# what OpenSSH (the audit) or paramiko through pyinfra (deploy, roster import) says when no session
# opens, the cause in plain words, and what to do about it; the first entry whose words occur wins
SSH_REASONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("Connection refused",), "connection refused",
     "nothing listens on that port: is sshd running, and is ssh_port right?"),
    (("banner exchange", "Error reading SSH protocol banner"), "timed out waiting for the SSH banner",
     "something accepts connections on that port but no SSH server answers: is sshd hung, or is ssh_port "
     "another service's?"),
    (("No existing session", "Negotiation failed"), "the SSH handshake did not finish in time",
     "the server answers too slowly or not in SSH: see its sshd log"),
    (("timed out",), "connection timed out", "the server does not answer: is it up, and is its address right?"),
    (("Host key verification failed", "SSH host key error", "not found in known_hosts"), "host key mismatch",
     "the server's host key is not the one known for it: make sure it is the right server, then remove its "
     "old key (ssh-keygen -R ADDRESS)"),
    (("Permission denied", "Authentication error", "Authentication failed"), "authentication failed",
     "the server refused schoolctl's key for that user: check ssh_user and the authorized keys"),
    (("Could not resolve hostname", "Name or service not known"), "the name does not resolve",
     "check the address"),
    (("No route to host",), "no route to host", "check the address and the network"),
    (("Network is unreachable",), "network unreachable", "check the address and the network"),
    (("Connection closed", "EOF error"), "connection closed during the handshake",
     "the server closed it: see its sshd log"),
    (("Connection reset",), "connection reset during the handshake", "the server reset it: see its sshd log"),
)


def ssh_reason(text: str, quote: bool = True) -> str:
    """Why SSH opened no session, in one line, from what OpenSSH printed or what paramiko raised
    (through pyinfra): with `quote`, the line that says it in ssh's own words (the audit), else the
    cause in plain words (paramiko's are obscure: `SSH error (No existing session)`), then what to
    do. An unknown cause: the text's last line; "" for no text."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("@")]
    for words, cause, hint in SSH_REASONS:
        hit = next((line for line in lines if any(w.lower() in line.lower() for w in words)), None)
        if hit is not None:
            return f"{hit[:300] if quote else cause} ({hint})"
    return lines[-1][:300] if lines else ""


def testinfra_failure(error: BaseException) -> str | None:
    """ssh's reason (ssh_reason) when testinfra's ssh could not run a command at all: testinfra raises
    RuntimeError with the CommandResult when ssh exits 255. None for any other failure."""
    from testinfra.backend.base import CommandResult

    res = error.args[0] if isinstance(error, RuntimeError) and error.args else None
    if not isinstance(res, CommandResult):
        return None
    return ssh_reason(res.stderr) or f"ssh exited {res.rc} without a message"


def _said(error: BaseException | None) -> str:
    """The words of an error and of those it was raised from, one per line: pyinfra's ConnectError
    says `Could not connect ([Errno None] Unable to connect to port 22 on 10.0.0.5)`, the socket
    errors paramiko gathered under it (NoValidConnectionsError.errors) say `Connection refused`."""
    lines: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        lines.append(str(error))
        gathered = getattr(error, "errors", None)
        if isinstance(gathered, dict):
            lines += [str(e) for e in gathered.values()]
        error = error.__cause__ or error.__context__
    return "\n".join(lines)


def connect_failure(data: dict[str, Any], error: BaseException | None, name: str = "") -> str:
    """The one line for a pyinfra SSH connection (`data`: pyinfra_data) that failed with `error`
    (pyinfra's ConnectError, None when it gave none); `name` says whose server it is."""
    where = f"{data.get('ssh_hostname')} port {data.get('ssh_port') or 22}"
    where = f"{name} ({where})" if name else where
    return f"cannot connect to {where} over SSH: {ssh_reason(_said(error), quote=False) or 'no answer'}"

