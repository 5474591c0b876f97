"""Key-encryption keys: where a spec says they come from, and how they are fetched at run time.

A key is 32 random bytes written as base64 (44 characters) or hex (64); ``python -m metabackup keys
generate`` prints one.  It is named by a ``key_id`` and comes from, in this order:

1. a key file given on the command line (``--key-file``, for a restore without Airflow): used for
   any set whose recorded key fingerprint it matches;
2. the ``key_command`` configured for that key id: an argv run without a shell, with the child
   environment allow-list; the key is its standard output;
3. the Airflow connection ``key_id``: its password (so a secrets backend such as Vault or AWS
   Secrets Manager holding the connection works with nothing of ours).

Key material lives only in memory: never in ``repr``, logs, XCom, argv or manifests.  Each set's
manifest records the key id and the key's *fingerprint* (:func:`metabackup.encryption.fingerprint`),
so a wrong key is named as such before any archive is read.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from metabackup.encryption import KEY_SIZE, KeyUnavailable, WrongKey, fingerprint
from metabackup.fields import Argv, ConnId, ProblemRow, SpecModel
from metabackup.fsutil import child_env

KEY_COMMAND_TIMEOUT = 60
MAX_KEY_TEXT = 4096


KeyCommand = Annotated[Argv, Field(description="argv of a program that prints the key (run without a shell)")]


class KeyConfig(SpecModel):
    """How to get one key-encryption key (``encryption:`` of a target, or of the whole spec);
    ``enabled: false`` on a target stores its sets unencrypted."""

    enabled: bool = True
    key_id: ConnId | None = Field(None, description="the key's name: the Airflow connection whose password holds "
                                                    "it, unless key_command is given")
    key_command: KeyCommand | None = None

    @model_validator(mode="after")
    def _key_named(self) -> KeyConfig:
        if self.enabled and self.key_id is None:
            raise ProblemRow("key_id", "is required: the Airflow connection (or key_command's name) of the key; "
                                       "or set enabled: false to store these sets unencrypted")
        if not self.enabled and (self.key_id is not None or self.key_command is not None):
            raise ProblemRow("enabled", "is false, so key_id and key_command have no use here; remove them")
        return self


class SpecEncryption(KeyConfig):
    """The spec's ``encryption:``: the key every off-cluster location uses unless it names its own,
    and (``on_cluster: true``) the on-cluster targets (LocalDir, LocalHDFS) too."""

    on_cluster: bool = Field(False, description="encrypt sets on LocalDir and LocalHDFS targets too")


def generate_key() -> str:
    """A new key-encryption key as base64 text."""
    return base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()


def parse_key(text: str | bytes, origin: str) -> bytes:
    """32 key bytes from base64 or hex text; the message names ``origin`` (never the text)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            text = ""
    text = text.strip()
    key = None
    if len(text) == 2 * KEY_SIZE:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != KEY_SIZE:
        raise KeyUnavailable(f"{origin} does not hold a key: expected {KEY_SIZE} random bytes as base64 "
                             f"({4 * ((KEY_SIZE + 2) // 3)} characters) or hex ({2 * KEY_SIZE}); make one with "
                             "`python -m metabackup keys generate`")
    return key


def read_key_file(path: str | Path) -> bytes:
    """A key from a file that only its owner can read (as ssh insists for private keys)."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KeyUnavailable(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyUnavailable(f"key file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                                 f"run chmod 600 {path}")
        with open(path, "rb") as handle:
            text = handle.read(MAX_KEY_TEXT)
    except OSError as exc:
        raise KeyUnavailable(f"cannot read key file {path}: {exc.strerror or exc}") from None
    return parse_key(text, f"key file {path}")


# Key files given to this process (the CLI's --key-file): a restore on a machine without Airflow.
_key_files: list[bytes] = []


def use_key_files(paths: list[str | Path]) -> None:
    """Make keys read from ``paths`` available to every :class:`KeyRing` of this process."""
    _key_files[:] = [read_key_file(path) for path in paths]


class KeyRing:
    """The keys of one operation (a backup step, a restore, a verification, a rotation): fetched once
    each, on first use, and kept in memory until the ring is dropped."""

    def __init__(self, configs: list[KeyConfig] | None = None, key_files: list[bytes] | None = None):
        self._configs: dict[str, KeyConfig] = {}
        for config in configs or []:
            self._configs.setdefault(config.key_id, config)
        self._files = list(_key_files if key_files is None else key_files)
        self._keys: dict[str, bytes] = {}

    @classmethod
    def for_spec(cls, spec) -> KeyRing:
        """Every key the spec configures (its own ``encryption`` and each target's and copy's)."""
        configs = [spec.encryption] if spec.encryption is not None and spec.encryption.enabled else []
        for source in spec.sources:
            for _, location in source.locations():
                if location.encryption is not None and location.encryption.enabled:
                    configs.append(location.encryption)
        return cls(configs)

    def key(self, key_id: str, expected_fingerprint: str | None = None, needed_for: str = "") -> bytes:
        """The key named ``key_id``; with ``expected_fingerprint`` (a manifest's), only that key:
        :class:`WrongKey` names the key id and both fingerprints otherwise."""
        for key in self._files:
            if expected_fingerprint and fingerprint(key) == expected_fingerprint:
                return key
        if key_id not in self._keys:
            self._keys[key_id] = self._fetch(key_id, needed_for)
        key = self._keys[key_id]
        if expected_fingerprint and fingerprint(key) != expected_fingerprint:
            files = f" (nor does any of the {len(self._files)} key files given)" if self._files else ""
            raise WrongKey(f"key {key_id!r} is not the key {needed_for or 'this set'} was encrypted with: its fingerprint "
                           f"is {fingerprint(key)}, the manifest records {expected_fingerprint}{files}")
        return key

    def _fetch(self, key_id: str, needed_for: str) -> bytes:
        config = self._configs.get(key_id)
        why = f" (needed for {needed_for})" if needed_for else ""
        if self._files and config is None:
            raise KeyUnavailable(f"key {key_id!r}{why}: no key file given matches it, and no key_command is "
                                 "configured for it")
        if config is not None and config.key_command:
            return self._run(config, why)
        from metabackup.connections import ConnectionNotFound, get_connection

        try:
            password = get_connection(key_id).password
        except ConnectionNotFound as exc:
            raise KeyUnavailable(f"key {key_id!r}{why} is not available: {exc}. Define the connection (its password "
                                 "holds the key) or give the key with --key-file") from None
        except ImportError:
            raise KeyUnavailable(f"key {key_id!r}{why}: Airflow is not installed here to look up its connection; "
                                 "give the key with --key-file") from None
        return parse_key(password, f"the password of Airflow connection {key_id!r}")

    @staticmethod
    def _run(config: KeyConfig, why: str) -> bytes:
        program = config.key_command[0]
        try:
            done = subprocess.run(list(config.key_command), stdin=subprocess.DEVNULL, capture_output=True,
                                  env=child_env(), timeout=KEY_COMMAND_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KeyUnavailable(f"key {config.key_id!r}{why}: key_command {program} could not run: {exc}") from None
        if done.returncode != 0:  # its output is not shown: it may hold part of a key
            raise KeyUnavailable(f"key {config.key_id!r}{why}: key_command {program} exited with {done.returncode} "
                                 f"({len(done.stderr)} bytes on stderr, not shown)")
        return parse_key(done.stdout[:MAX_KEY_TEXT], f"the output of key_command {program} (key {config.key_id!r})")

