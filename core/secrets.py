"""Per-school secrets: generated on first use, stored ansible-vault encrypted (ansible-core's
VaultLib), never printed. Every value handed out is registered with the redactor, so any text
that leaves the program (terminal, logs, reports, exceptions) can be scrubbed of it."""

from __future__ import annotations

import logging
import os
import re
import secrets as _random
import tempfile
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from schoolctl.errors import SecretError

if TYPE_CHECKING:  # PyYAML is imported on first use: every verb imports this module, few read a vault
    import yaml

MASK = "********"
log = logging.getLogger(__name__)
SCOPE_KEY = "_scope"  # reserved name in every vault: the school (or 'fleet') the file belongs to
_SCOPE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
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


def _env_path(var: str, default: str, what: str) -> Path:
    """The path in `var`, or `default` when it is unset. Set but empty (or blank) is an error, never
    the current folder: an empty variable is a mistake, and the vault would be started afresh there."""
    value = os.environ.get(var)
    if value is None:
        return Path(default)
    if not value.strip():
        raise SecretError(f"{var} is set but empty",
                          f"unset it to use ./{default}, or set it to {what}")
    return Path(value)


def default_key_file() -> Path:
    return _env_path("SCHOOLCTL_VAULT_KEY_FILE", ".schoolctl/vault.key", "the path of the vault key file")


def default_secrets_dir() -> Path:
    return _env_path("SCHOOLCTL_SECRETS_DIR", "secrets", "the folder of the vault files ('.' for the current folder)")


def _bad_char(text: str) -> int | None:
    """The index of the first newline, control or invisible formatting character in `text`, or None."""
    return next((i for i, c in enumerate(text) if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)


def _check_name(name: str) -> None:
    if name == SCOPE_KEY:
        raise SecretError(f"'{SCOPE_KEY}' is reserved (it names the school a vault file belongs to)")
    if not name or _bad_char(name) is not None:
        raise SecretError(f"invalid secret name {name!r}", "a name is one line of printable text, e.g. bbb_pool")


def check_value(value: str) -> None:
    """Refuse a secret that is not one line of printable text (it goes into config files and shell
    words); the error never shows the value."""
    at = _bad_char(value)
    if at is not None:
        raise SecretError(f"the value has a newline or another control character (character {at + 1})",
                          "a secret is one line of printable text; nothing was stored")


# yaml's own words in its messages: token names such as '<block end>' and single syntax characters;
# anything else it quotes (an alias, a character) is text of the file and never shown
_YAML_WORD = re.compile(r"'(<[a-z ]+>|[^\w\s]|\\[a-z0])'")


def _yaml_problem(e: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """The line and a description of a YAML error, without the text of the file (yaml's own message
    quotes the offending line)."""
    import yaml

    if isinstance(e, yaml.reader.ReaderError):
        return text[:e.position].count("\n") + 1, "a control character YAML does not allow"
    if not isinstance(e, yaml.MarkedYAMLError):
        return None, "not valid YAML"
    mark = e.problem_mark or e.context_mark
    words = ", ".join(w for w in (e.context, e.problem) if w) or "not valid YAML"
    words = re.sub(r"'[^']*'|\"[^\"]*\"", lambda m: m[0] if _YAML_WORD.fullmatch(m[0]) else "(text not shown)", words)
    return (mark.line + 1 if mark else None), f"not valid YAML ({words})"


def _is_string(node: yaml.Node) -> bool:
    import yaml

    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str"


def _mapping(plain: bytes) -> tuple[dict[str, str], tuple[int | None, str] | None]:
    """(the `name: value` strings of a decrypted vault, None), or ({}, (line, what is wrong))."""
    import yaml

    try:
        text = plain.decode("utf-8")
    except UnicodeDecodeError as e:
        return {}, (plain[:e.start].count(b"\n") + 1, "not UTF-8 text")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes with their lines; no constructor runs
    except yaml.YAMLError as e:
        return {}, _yaml_problem(e, text)
    if root is None:
        return {}, None
    if not isinstance(root, yaml.MappingNode):
        return {}, (root.start_mark.line + 1, "not a mapping of name: value")
    values: dict[str, str] = {}
    first: dict[str, int] = {}
    for key, value in root.value:
        line = key.start_mark.line + 1
        if not _is_string(key):
            return {}, (line, "a name that is not a plain string (expected name: value)")
        if key.value in first:
            return {}, (line, f"a name given twice (first on line {first[key.value]})")
        if not _is_string(value):
            return {}, (value.start_mark.line + 1, "a value that is not a string (a list, a mapping, a number, "
                                                   "a tag or nothing; quote it: name: 'value')")
        first[key.value] = line
        values[key.value] = value.value
    return values, None


def _parse(plain: bytes, where: Path, key_file: Path) -> dict[str, str]:
    """The `name: value` mapping of a decrypted vault. A hand-edited file with a mistake is refused
    with its line and what is wrong, never with its text (that is where the secrets are)."""
    values, problem = _mapping(plain)
    if problem is not None:  # raised outside any `except`: no yaml error (which quotes the text) is chained
        line, what = problem
        raise SecretError(f"cannot read the vault {where}{f', line {line}' if line else ''}: {what}",
                          f"fix it with `ansible-vault edit --vault-password-file {key_file} {where}` "
                          "(the file must be lines of name: value)")
    return values


def generate(length: int = 32) -> str:
    """A random secret of letters and digits (safe in config files, URLs and shell words)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(_random.choice(alphabet) for _ in range(length))


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically, readable by the owner only; a folder that cannot be made or written is a
    SecretError (exit 2) naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder", str(path))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise SecretError(f"cannot write {path}: {e.strerror or e}",
                          "check the path (SCHOOLCTL_VAULT_KEY_FILE, SCHOOLCTL_SECRETS_DIR): its folder must be "
                          "one you can write to") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_warned: set[Path] = set()  # vault files from before the marker already warned about in this process


def _warn_unmarked(path: Path, scope: str) -> None:
    """Say (on stderr, through logging: once per file and process) that `path` carries no school
    marker, so its file name alone makes it `scope`'s, and how to mark it."""
    if path in _warned:
        return
    _warned.add(path)
    log.warning("the vault %s carries no school marker (`%s`): it is taken for %s's by its file name "
                "alone, as a vault renamed from another school would be; if it is %s's, mark it with `schoolctl "
                "secrets adopt %s` (if it was another school's, put it back under that school's name)",
                path, SCOPE_KEY, scope, scope, scope)


class SecretStore:
    """The vault: one encrypted YAML file per school (`<dir>/<school>.vault`)."""

    def __init__(self, directory: Path | None = None, key_file: Path | None = None):
        self.directory = Path(directory or default_secrets_dir())
        self.key_file = Path(key_file or default_key_file())
        self._vault = None  # ansible's VaultLib, imported on first use (it takes most of a second)

    def init_key(self) -> bool:
        """Create the vault key if there is none. Returns True when it was created."""
        if self.key_file.exists():
            if not self.key_file.is_file():
                raise SecretError(f"the vault key {self.key_file} is not a file",
                                  "move it aside, or set SCHOOLCTL_VAULT_KEY_FILE to the key file's path")
            return False
        _write_private(self.key_file, generate(64).encode())
        return True

    def check_key(self) -> None:
        """Raise SecretError unless the vault key can be read (before any secret is generated)."""
        self._lib()

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

    def path(self, scope: str) -> Path:
        """The vault file of `scope` (a school id or 'fleet'); SecretError for any other name."""
        return self._path(scope)

    def _path(self, scope: str) -> Path:
        if not _SCOPE.match(scope):
            raise SecretError(f"invalid vault name {scope!r}", "use a school id (lowercase letters, digits, '-') "
                              "or 'fleet'")
        return self.directory / f"{scope}.vault"

    def load(self, scope: str) -> dict[str, Secret]:
        """Every secret of a school (or of the fleet, scope 'fleet').

        A vault file names its school (`_scope: ID`, written on every save) and is refused when
        loaded as another one's: a vault renamed or copied from another school is never used. A
        file from before that marker (no `_scope`) is accepted as the school's it is named after,
        with a warning on stderr (once per file) naming the fix, `schoolctl secrets adopt ID`
        (`adopt`); it also gets the marker on its next save."""
        data, marked = self._read(scope)
        if not marked and data:
            _warn_unmarked(self._path(scope), scope)
        return {k: Secret(v) for k, v in data.items()}

    def adopt(self, scope: str) -> bool:
        """Mark the vault of `scope` as its own (`_scope: ID`): True when it was written, False when it
        already was. SecretError when there is no vault, or it is marked for another school (the
        same refusal as `load`); nothing else in the file changes."""
        data, marked = self._read(scope)
        path = self._path(scope)
        if not path.exists():
            raise SecretError(f"there is no vault for '{scope}' ({path})",
                              "adopt marks an existing vault; a new one is written (and marked) by the first "
                              f"deploy of {scope}, or by `schoolctl secrets set {scope} NAME`")
        if marked:
            return False
        self._save(scope, {k: Secret(v) for k, v in data.items()})
        _warned.discard(path)
        return True

    def _read(self, scope: str) -> tuple[dict[str, str], bool]:
        """The vault's values without the marker, and whether it carries the marker (then `scope`'s:
        a vault marked for another school is refused). ({}, False) when there is no vault."""
        path = self._path(scope)
        if not path.exists():
            return {}, False
        from ansible.parsing.vault import AnsibleVaultError

        if not path.is_file():
            raise SecretError(f"the vault {path} is not a file", f"move it aside; a vault is the file {scope}.vault")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SecretError(f"cannot read the vault {path}: {e.strerror or e}") from None
        try:
            plain = self._lib().decrypt(data)
        except AnsibleVaultError:
            raise SecretError(f"cannot decrypt {path}: wrong vault key ({self.key_file})?") from None
        data = _parse(plain, path, self.key_file)
        owner = data.pop(SCOPE_KEY, None)
        if owner is not None and owner != scope:
            other = f"'{owner}'" if _SCOPE.match(owner) else "another school"
            raise SecretError(f"the vault {path} belongs to {other}, not to '{scope}'",
                              f"a vault file renamed or copied from another school is not used: put it back "
                              f"as {owner if _SCOPE.match(owner) else 'its school'}.vault; if it really is "
                              f"{scope}'s (a renamed school), change its line `{SCOPE_KEY}: ...` to "
                              f"`{SCOPE_KEY}: {scope}` with `ansible-vault edit --vault-password-file "
                              f"{self.key_file} {path}`")
        return data, owner is not None

    def get(self, scope: str, name: str, length: int = 32) -> Secret:
        """The secret `name` of `scope`, generated and stored on first use."""
        _check_name(name)
        values = self.load(scope)
        if name not in values:
            values[name] = Secret(generate(length))
            self._save(scope, values)
        return values[name]

    def ensure(self, scope: str, names: dict[str, int]) -> dict[str, Secret]:
        """All the named secrets (name -> length), generating the missing ones in one write."""
        for name in names:
            _check_name(name)
        values = self.load(scope)
        missing = {n: ln for n, ln in names.items() if n not in values}
        for name, length in missing.items():
            values[name] = Secret(generate(length))
        if missing:
            self._save(scope, values)
        return {n: values[n] for n in names}

    def put(self, scope: str, name: str, value: str) -> None:
        """Store a given secret (one line of printable text; see check_value)."""
        _check_name(name)
        check_value(value)
        values = self.load(scope)
        values[name] = Secret(value)
        self._save(scope, values)

    def add(self, scope: str, new: dict[str, Secret]) -> None:
        """Store secrets generated earlier in this run (a DeferredStore holds them until the server
        answered), in one write. A name stored meanwhile with another value is an error: the run
        has already used its own."""
        for name in new:
            _check_name(name)
        values = self.load(scope)
        clash = sorted(n for n, v in new.items() if n in values and values[n] != v)
        if clash:
            raise SecretError(f"{', '.join(clash)} of {scope} changed in the vault {self._path(scope)} during this run",
                              "another deploy of the same school ran at the same time; run this one again")
        values.update(new)
        self._save(scope, values)

    def write_encrypted(self, path: Path, text: str) -> None:
        """`text` encrypted with the vault key into a private file (e.g. a roster's initial passwords)."""
        _write_private(path, self._lib().encrypt(text.encode()))

    def _save(self, scope: str, values: dict[str, Secret]) -> None:
        """Write the vault of `scope`, marked as its own (`_scope: ID`, see load)."""
        data = {SCOPE_KEY: scope, **{k: v.reveal() for k, v in sorted(values.items()) if k != SCOPE_KEY}}
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
        _write_private(self._path(scope), self._lib().encrypt(text.encode()))


class DeferredStore:
    """A SecretStore whose newly generated secrets stay in memory until `flush()`. The deploy runner
    builds a school's Site on one and flushes it once the school's server answered: a deploy that
    cannot reach its server leaves the vault as it was. Each secret is generated once and reused for
    the whole run; after the flush, new ones are written at once."""

    def __init__(self, store: SecretStore):
        self.store = store
        self._values: dict[str, dict[str, Secret]] = {}  # per scope: the vault's values (read once) and the new
        self._new: dict[str, dict[str, Secret]] = {}
        self._given: dict[str, dict[str, Secret]] = {}  # values set with put(), kept until flush()
        self._flushed = False

    def load(self, scope: str) -> dict[str, Secret]:
        if self._flushed:
            return self.store.load(scope)
        if scope not in self._values:
            self._values[scope] = self.store.load(scope)
        return dict(self._values[scope])

    def get(self, scope: str, name: str, length: int = 32) -> Secret:
        return self.ensure(scope, {name: length})[name]

    def ensure(self, scope: str, names: dict[str, int]) -> dict[str, Secret]:
        if self._flushed:
            return self.store.ensure(scope, names)
        for name in names:
            _check_name(name)
        self.load(scope)
        values = self._values[scope]
        missing = {n: ln for n, ln in names.items() if n not in values}
        if missing and not self._new:
            self.store.check_key()  # a missing vault key shows now, not after connecting
        for name, length in missing.items():
            values[name] = self._new.setdefault(scope, {})[name] = Secret(generate(length))
        return {n: values[n] for n in names}

    def put(self, scope: str, name: str, value: str) -> None:
        """Set a value (e.g. a fact learnt from a backup host): kept in memory until flush()."""
        if self._flushed:
            return self.store.put(scope, name, value)
        _check_name(name)
        check_value(value)
        self.load(scope)
        self._values[scope][name] = self._given.setdefault(scope, {})[name] = Secret(value)

    def flush(self) -> None:
        """Write the secrets generated so far (one write per vault); from now on new ones are written at once."""
        for scope, new in self._new.items():
            self.store.add(scope, new)
        for scope, given in self._given.items():
            for name, value in given.items():
                self.store.put(scope, name, value.reveal())
        self._new.clear()
        self._given.clear()
        self._flushed = True
