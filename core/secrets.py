"""Per-school secrets: generated on first use, stored ansible-vault encrypted (ansible-core's
VaultLib), never printed. Every value handed out is registered with the redactor, so any text
that leaves the program (terminal, logs, reports, exceptions) can be scrubbed of it."""

from __future__ import annotations

import logging
import os
import re
import secrets as _random
import tempfile
from pathlib import Path

import yaml

from schoolctl.errors import SecretError

MASK = "********"
_known: set[str] = set()


class Secret:
    """A secret value that never shows itself: str() and repr() are masked; use .reveal()."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        if len(value) >= 6:
            _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact(text: str) -> str:
    """`text` with every secret this process has seen replaced by a mask."""
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def default_key_file() -> Path:
    return Path(os.environ.get("SCHOOLCTL_VAULT_KEY_FILE", ".schoolctl/vault.key"))


def default_secrets_dir() -> Path:
    return Path(os.environ.get("SCHOOLCTL_SECRETS_DIR", "secrets"))


def generate(length: int = 32) -> str:
    """A random secret of letters and digits (safe in config files, URLs and shell words)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(_random.choice(alphabet) for _ in range(length))


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SecretStore:
    """The vault: one encrypted YAML file per school (`<dir>/<school>.vault`)."""

    def __init__(self, directory: Path | None = None, key_file: Path | None = None):
        self.directory = Path(directory or default_secrets_dir())
        self.key_file = Path(key_file or default_key_file())
        self._vault = None  # ansible's VaultLib, imported on first use (it takes most of a second)

    def init_key(self) -> bool:
        """Create the vault key if there is none. Returns True when it was created."""
        if self.key_file.exists():
            return False
        _write_private(self.key_file, generate(64).encode())
        return True

    def _lib(self):
        if self._vault is None:
            from ansible.parsing.vault import VaultLib, VaultSecret

            try:
                key = self.key_file.read_bytes().strip()
            except FileNotFoundError:
                raise SecretError(f"no vault key at {self.key_file}; run `schoolctl secrets init` "
                                  "(or set SCHOOLCTL_VAULT_KEY_FILE)") from None
            except OSError as e:
                raise SecretError(f"cannot read the vault key {self.key_file}: {e.strerror}") from None
            if not key:
                raise SecretError(f"the vault key {self.key_file} is empty")
            self._vault = VaultLib([("default", VaultSecret(key))])
        return self._vault

    def _path(self, scope: str) -> Path:
        if not re.match(r"^[a-z0-9][a-z0-9_-]*$", scope):
            raise SecretError(f"invalid vault name {scope!r}")
        return self.directory / f"{scope}.vault"

    def load(self, scope: str) -> dict[str, Secret]:
        """Every secret of a school (or of the fleet, scope 'fleet')."""
        path = self._path(scope)
        if not path.exists():
            return {}
        from ansible.parsing.vault import AnsibleVaultError

        try:
            plain = self._lib().decrypt(path.read_bytes())
        except AnsibleVaultError:
            raise SecretError(f"cannot decrypt {path}: wrong vault key ({self.key_file})?") from None
        data = yaml.safe_load(plain) or {}
        return {k: Secret(str(v)) for k, v in data.items()}

    def get(self, scope: str, name: str, length: int = 32) -> Secret:
        """The secret `name` of `scope`, generated and stored on first use."""
        values = self.load(scope)
        if name not in values:
            values[name] = Secret(generate(length))
            self._save(scope, values)
        return values[name]

    def ensure(self, scope: str, names: dict[str, int]) -> dict[str, Secret]:
        """All the named secrets (name -> length), generating the missing ones in one write."""
        values = self.load(scope)
        missing = {n: ln for n, ln in names.items() if n not in values}
        for name, length in missing.items():
            values[name] = Secret(generate(length))
        if missing:
            self._save(scope, values)
        return {n: values[n] for n in names}

    def put(self, scope: str, name: str, value: str) -> None:
        values = self.load(scope)
        values[name] = Secret(value)
        self._save(scope, values)

    def write_encrypted(self, path: Path, text: str) -> None:
        """`text` encrypted with the vault key into a private file (e.g. a roster's initial passwords)."""
        _write_private(path, self._lib().encrypt(text.encode()))

    def _save(self, scope: str, values: dict[str, Secret]) -> None:
        text = yaml.safe_dump({k: v.reveal() for k, v in sorted(values.items())})
        _write_private(self._path(scope), self._lib().encrypt(text.encode()))
