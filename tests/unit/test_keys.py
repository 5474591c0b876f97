"""Key-encryption keys (metabackup.keys): parsing, key files, the KeyRing's sources (key files,
key_command, Airflow connections) and the spec's ``encryption`` settings."""

from __future__ import annotations

import base64
import copy
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from metabackup import keys as keys_module
from metabackup.encryption import KeyUnavailable, WrongKey, fingerprint
from metabackup.keys import KeyConfig, KeyRing, generate_key, parse_key, read_key_file, use_key_files
from metabackup.spec import SpecError, load_spec

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()
KEY_HEX = KEY.hex()
OTHER = bytes(range(50, 82))
OTHER_B64 = base64.b64encode(OTHER).decode()


@pytest.fixture(autouse=True)
def no_key_files():
    """No test leaves key files behind for the process's other KeyRings."""
    yield
    keys_module._key_files.clear()


# ---------------------------------------------------------------------------------------------
# parse_key
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [KEY_B64, KEY_HEX, KEY_HEX.upper(), f"  {KEY_B64}\n", f"\t{KEY_HEX}\r\n",
                                  KEY_B64.encode(), f"{KEY_HEX}\n".encode()],
                         ids=["base64", "hex", "HEX", "base64-spaces", "hex-crlf", "base64-bytes", "hex-bytes"])
def test_parse_key_accepts_base64_and_hex(text):
    assert len(KEY_B64) == 44 and len(KEY_HEX) == 64
    assert parse_key(text, "the test") == KEY


SECRET_LOOKING = [
    KEY_B64[:-1],                                   # 43 characters (padding cut)
    KEY_B64 + "A",                                  # 45
    base64.b64encode(KEY[:31]).decode(),            # a 31-byte key
    base64.b64encode(KEY + b"!").decode(),          # a 33-byte key
    KEY_HEX[:-2],                                   # 62 hex digits
    KEY_HEX + "ab",                                 # 66 hex digits
    KEY_HEX[:-1] + "g",                             # 64 characters, not hex, not base64 of 32 bytes
    "correct-horse-battery-staple-passphrase",      # a password, not a key
    KEY_B64[:20] + " " + KEY_B64[20:],              # a space inside
    base64.urlsafe_b64encode(b"\xff" * 32).decode(),  # URL-safe alphabet
    "",
    "   \n",
]


@pytest.mark.parametrize("text", SECRET_LOOKING, ids=[f"case{i}" for i in range(len(SECRET_LOOKING))])
def test_parse_key_refuses_other_text_without_repeating_it(text):
    with pytest.raises(KeyUnavailable) as info:
        parse_key(text, "the password of Airflow connection 'k'")
    message = str(info.value)
    assert message.startswith("the password of Airflow connection 'k' does not hold a key")
    assert "44 characters" in message and "hex (64)" in message and "keys generate" in message
    if text.strip():
        assert text.strip() not in message
        assert text.strip()[:12] not in message


def test_parse_key_refuses_non_ascii_bytes():
    with pytest.raises(KeyUnavailable, match="key file x does not hold a key"):
        parse_key("é".encode() * 22, "key file x")


def test_generate_key():
    first, second = generate_key(), generate_key()
    assert len(first) == 44 and first != second
    assert len(parse_key(first, "generated")) == 32


# ---------------------------------------------------------------------------------------------
# read_key_file
# ---------------------------------------------------------------------------------------------
def key_file(tmp_path: Path, text: str = KEY_B64 + "\n", mode: int = 0o600, name: str = "backup.key") -> Path:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_read_key_file_accepts_0600(tmp_path):
    assert read_key_file(key_file(tmp_path)) == KEY
    assert read_key_file(str(key_file(tmp_path, KEY_HEX, 0o400, "hex.key"))) == KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_read_key_file_refuses_a_file_others_can_read(tmp_path, mode):
    path = key_file(tmp_path, mode=mode)
    with pytest.raises(KeyUnavailable) as info:
        read_key_file(path)
    message = str(info.value)
    assert f"chmod 600 {path}" in message and f"mode {mode:o}" in message and "readable by others" in message
    assert KEY_B64 not in message


def test_read_key_file_missing(tmp_path):
    with pytest.raises(KeyUnavailable, match="cannot read key file .*missing.key"):
        read_key_file(tmp_path / "missing.key")


def test_read_key_file_not_a_regular_file(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    with pytest.raises(KeyUnavailable, match="is not a regular file"):
        read_key_file(folder)


def test_read_key_file_garbage_is_not_shown(tmp_path):
    path = key_file(tmp_path, "my-database-password-123\n")
    with pytest.raises(KeyUnavailable) as info:
        read_key_file(path)
    assert f"key file {path} does not hold a key" in str(info.value)
    assert "my-database-password" not in str(info.value)


def test_use_key_files_feeds_every_keyring(tmp_path):
    use_key_files([key_file(tmp_path)])
    assert KeyRing().key("whatever", fingerprint(KEY)) == KEY
    use_key_files([])
    assert keys_module._key_files == []


def test_use_key_files_refuses_an_open_file(tmp_path):
    with pytest.raises(KeyUnavailable, match="chmod 600"):
        use_key_files([key_file(tmp_path, mode=0o644)])


# ---------------------------------------------------------------------------------------------
# KeyRing: key_command
# ---------------------------------------------------------------------------------------------
def script(tmp_path: Path, body: str, name: str = "get-key") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o700)
    return path


def command_config(key_id: str, *argv) -> KeyConfig:
    return KeyConfig.model_validate({"key_id": key_id, "key_command": [str(part) for part in argv]})


def test_key_command_prints_the_key(tmp_path):
    program = script(tmp_path, f"echo '{KEY_B64}'\n")
    ring = KeyRing([command_config("backup_key", program)], key_files=[])
    assert ring.key("backup_key") == KEY
    assert ring.key("backup_key", fingerprint(KEY), needed_for="set s") == KEY


def test_key_command_gets_its_arguments_without_a_shell(tmp_path):
    program = tmp_path / "get_key.py"
    program.write_text("import sys\n"
                       f"keys = {{'prod': {KEY_HEX!r}, 'test': {OTHER_B64!r}}}\n"
                       "assert sys.argv[2] == '$HOME; rm -rf /'\n"
                       "print(keys[sys.argv[1]])\n")
    ring = KeyRing([command_config("prod_key", sys.executable, program, "prod", "$HOME; rm -rf /"),
                    command_config("test_key", sys.executable, program, "test", "$HOME; rm -rf /")], key_files=[])
    assert ring.key("prod_key") == KEY and ring.key("test_key") == OTHER


def test_key_command_runs_once_per_ring(tmp_path):
    calls = tmp_path / "calls"
    program = script(tmp_path, f"echo x >> '{calls}'\necho '{KEY_B64}'\n")
    ring = KeyRing([command_config("backup_key", program)], key_files=[])
    for _ in range(3):
        assert ring.key("backup_key") == KEY
    assert calls.read_text() == "x\n"
    KeyRing([command_config("backup_key", program)], key_files=[]).key("backup_key")
    assert calls.read_text() == "x\nx\n"


def test_key_command_sees_only_the_allowed_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SOMETHING", "postgres://u:secret@db/x")
    program = script(tmp_path, f'[ -z "$AIRFLOW_CONN_SOMETHING" ] || exit 9\necho \'{KEY_B64}\'\n')
    assert KeyRing([command_config("backup_key", program)], key_files=[]).key("backup_key") == KEY


def test_key_command_failing_does_not_show_its_output(tmp_path):
    program = script(tmp_path, f"echo '{KEY_B64}' >&2\necho '{KEY_HEX}'\nexit 3\n")
    ring = KeyRing([command_config("backup_key", program)], key_files=[])
    with pytest.raises(KeyUnavailable) as info:
        ring.key("backup_key", needed_for="set 3.5.0_OMS_20261124010000")
    message = str(info.value)
    assert "exited with 3" in message and "'backup_key'" in message and str(program) in message
    assert "(needed for set 3.5.0_OMS_20261124010000)" in message and "not shown" in message
    assert KEY_B64 not in message and KEY_HEX not in message and KEY_B64[:10] not in message


def test_key_command_printing_garbage(tmp_path):
    program = script(tmp_path, "echo 'here is your key: hunter2'\n")
    with pytest.raises(KeyUnavailable) as info:
        KeyRing([command_config("backup_key", program)], key_files=[]).key("backup_key")
    assert "the output of key_command" in str(info.value) and "'backup_key'" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_key_command_that_cannot_run(tmp_path):
    missing = tmp_path / "no-such-program"
    with pytest.raises(KeyUnavailable, match=f"key_command {missing} could not run"):
        KeyRing([command_config("backup_key", missing)], key_files=[]).key("backup_key")


@pytest.mark.parametrize("argv,message", [([], "must name a program"), (["/bin/echo", "a\0b"], "NUL")])
def test_key_command_must_be_an_argv(argv, message):
    with pytest.raises(ValueError, match=message):
        KeyConfig.model_validate({"key_id": "k", "key_command": argv})


# ---------------------------------------------------------------------------------------------
# KeyRing: Airflow connections
# ---------------------------------------------------------------------------------------------
def set_connection(monkeypatch, conn_id: str, password: str) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "generic", "password": password}))


@pytest.mark.parametrize("text", [KEY_B64, KEY_HEX], ids=["base64", "hex"])
def test_key_from_an_airflow_connection(monkeypatch, text):
    set_connection(monkeypatch, "backup_key", text)
    assert KeyRing(key_files=[]).key("backup_key") == KEY
    assert KeyRing([KeyConfig(key_id="backup_key")], key_files=[]).key("backup_key", fingerprint(KEY)) == KEY


def test_missing_connection_names_the_key(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_KEY", raising=False)
    with pytest.raises(KeyUnavailable) as info:
        KeyRing(key_files=[]).key("no_such_key", needed_for="set 3.5.0_OMS_20261124010000")
    message = str(info.value)
    assert "key 'no_such_key'" in message and "is not available" in message
    assert "needed for set 3.5.0_OMS_20261124010000" in message and "--key-file" in message


def test_a_connection_password_that_is_not_a_key(monkeypatch):
    set_connection(monkeypatch, "backup_key", "s3cr3t-Password!")
    with pytest.raises(KeyUnavailable) as info:
        KeyRing(key_files=[]).key("backup_key")
    assert "the password of Airflow connection 'backup_key' does not hold a key" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_key_command_wins_over_the_connection(tmp_path, monkeypatch):
    set_connection(monkeypatch, "backup_key", OTHER_B64)
    program = script(tmp_path, f"echo '{KEY_B64}'\n")
    assert KeyRing([command_config("backup_key", program)], key_files=[]).key("backup_key") == KEY
    assert KeyRing(key_files=[]).key("backup_key") == OTHER


# ---------------------------------------------------------------------------------------------
# KeyRing: fingerprints and key files
# ---------------------------------------------------------------------------------------------
def test_expected_fingerprint_mismatch(monkeypatch):
    set_connection(monkeypatch, "backup_key", OTHER_B64)
    with pytest.raises(WrongKey) as info:
        KeyRing(key_files=[]).key("backup_key", fingerprint(KEY), needed_for="set 3.5.0_OMS_20261124010000")
    message = str(info.value)
    assert "key 'backup_key'" in message and "set 3.5.0_OMS_20261124010000 was encrypted with" in message
    assert fingerprint(OTHER) in message and fingerprint(KEY) in message
    assert OTHER_B64 not in message and "key files" not in message


def test_expected_fingerprint_mismatch_with_key_files(tmp_path):
    program = script(tmp_path, f"echo '{OTHER_B64}'\n")
    third = bytes(range(150, 182))
    ring = KeyRing([command_config("backup_key", program)], key_files=[third])
    with pytest.raises(WrongKey) as info:
        ring.key("backup_key", fingerprint(KEY))
    message = str(info.value)
    assert fingerprint(OTHER) in message and fingerprint(KEY) in message
    assert "nor does any of the 1 key files given" in message and "this set" in message


def test_key_files_are_matched_by_fingerprint(tmp_path):
    """A matching key file is used without asking the key_command (which would fail here)."""
    failing = command_config("backup_key", tmp_path / "no-such-program")
    ring = KeyRing([failing], key_files=[OTHER, KEY])
    assert ring.key("backup_key", fingerprint(KEY)) == KEY
    assert ring.key("old_key", fingerprint(OTHER)) == OTHER


def test_key_files_and_no_match(tmp_path):
    ring = KeyRing(key_files=[OTHER])
    with pytest.raises(KeyUnavailable, match="key 'backup_key' .*no key file given matches it"):
        ring.key("backup_key", fingerprint(KEY), needed_for="set s")
    with pytest.raises(KeyUnavailable, match="no key file given matches it"):
        ring.key("backup_key")  # without a fingerprint a key file is not guessed


def test_key_files_fall_back_to_a_configured_command(tmp_path):
    program = script(tmp_path, f"echo '{KEY_B64}'\n")
    ring = KeyRing([command_config("backup_key", program)], key_files=[OTHER])
    assert ring.key("backup_key", fingerprint(KEY)) == KEY


def test_keyring_holds_no_key_material_in_its_repr(tmp_path):
    program = script(tmp_path, f"echo '{KEY_B64}'\n")
    ring = KeyRing([command_config("backup_key", program)], key_files=[])
    ring.key("backup_key")
    assert KEY_B64 not in repr(ring) and KEY_HEX not in repr(ring)


# ---------------------------------------------------------------------------------------------
# The spec's encryption settings
# ---------------------------------------------------------------------------------------------
SFTP = {"type": "SFTP", "conn_id": "off_sftp", "path": "/backup/metadata", "max_backups": 7}
BASE = {
    "name": "nightly",
    "created": "2026-11-24T10:00:00+08:00",
    "cluster_version": "3.5.0",
    "timezone": "Asia/Shanghai",
    "type": "periodic",
    "schedule": {"start": "2026-11-25T01:00:00+08:00", "period": "day", "every": 1},
    "policy": {"type": "full_every_n", "n": 7},
    "data_path": "/srv/BigData",
    "sources": {"OMS": {"kind": "files", "paths": ["/srv/BigData/om-server/conf"],
                        "target": {"type": "LocalDir", "max_backups": 7},
                        "copies": [SFTP]}},
}
OMS = BASE["sources"]["OMS"]


def spec_with(tmp_path: Path, encryption=None, target_encryption=None, copy_encryption=None):
    spec = copy.deepcopy(BASE)
    if encryption is not None:
        spec["encryption"] = encryption
    if target_encryption is not None:
        spec["sources"]["OMS"]["target"]["encryption"] = target_encryption
    if copy_encryption is not None:
        spec["sources"]["OMS"]["copies"][0]["encryption"] = copy_encryption
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_spec(path)


def refused(tmp_path: Path, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        spec_with(tmp_path, **kwargs)
    return [(field, reason) for _, field, reason in info.value.problems]


def locations(spec):
    (source,) = spec.sources
    return dict(source.locations())


def test_encryption_disabled_with_a_key_id_is_refused(tmp_path):
    rows = refused(tmp_path, encryption={"enabled": False, "key_id": "x"})
    assert [field for field, _ in rows] == ["encryption.enabled"]
    assert "key_id and key_command have no use here" in rows[0][1]


def test_encryption_without_a_key_id_is_refused(tmp_path):
    rows = refused(tmp_path, encryption={})
    assert [field for field, _ in rows] == ["encryption.key_id"]
    assert "is required" in rows[0][1] and "enabled: false" in rows[0][1]


def test_copy_encryption_disabled_with_a_key_command_is_refused(tmp_path):
    rows = refused(tmp_path, copy_encryption={"enabled": False, "key_command": ["/bin/true"]})
    assert len(rows) == 1 and rows[0][0].endswith("encryption.enabled") and "copies" in rows[0][0]


def test_unknown_encryption_field_is_refused(tmp_path):
    rows = refused(tmp_path, encryption={"key_id": "k", "algorithm": "rot13"})
    assert any(field == "encryption.algorithm" for field, _ in rows)


def test_no_encryption_anywhere(tmp_path):
    spec = spec_with(tmp_path)
    where = locations(spec)
    assert spec.encryption is None
    assert spec.encryption_for(where["primary"]) is None and spec.encryption_for(where["copy 1"]) is None
    assert spec.unencrypted_off_cluster() == [f"OMS copy 1 sftp://off_sftp/backup/metadata/{spec.task_dir}"]


def test_the_spec_key_encrypts_off_cluster_copies_only(tmp_path):
    spec = spec_with(tmp_path, encryption={"key_id": "backup_key", "key_command": ["/usr/local/bin/get-key", "prod"]})
    where = locations(spec)
    assert spec.encryption_for(where["primary"]) is None  # LocalDir: on the cluster
    sftp = spec.encryption_for(where["copy 1"])
    assert isinstance(sftp, KeyConfig) and sftp.enabled
    assert (sftp.key_id, tuple(sftp.key_command)) == ("backup_key", ("/usr/local/bin/get-key", "prod"))
    assert spec.unencrypted_off_cluster() == []


def test_on_cluster_encrypts_the_local_target_too(tmp_path):
    spec = spec_with(tmp_path, encryption={"key_id": "backup_key", "on_cluster": True})
    where = locations(spec)
    assert spec.encryption_for(where["primary"]).key_id == "backup_key"
    assert spec.encryption_for(where["copy 1"]).key_id == "backup_key"


def test_a_copy_opts_out(tmp_path):
    spec = spec_with(tmp_path, encryption={"key_id": "backup_key"}, copy_encryption={"enabled": False})
    assert spec.encryption_for(locations(spec)["copy 1"]) is None
    assert spec.unencrypted_off_cluster() == [f"OMS copy 1 sftp://off_sftp/backup/metadata/{spec.task_dir}"]


def test_a_copy_with_its_own_key(tmp_path):
    spec = spec_with(tmp_path, encryption={"key_id": "backup_key"}, copy_encryption={"key_id": "offsite_key"})
    assert spec.encryption_for(locations(spec)["copy 1"]).key_id == "offsite_key"
    assert spec.unencrypted_off_cluster() == []


def test_a_local_target_with_its_own_key(tmp_path):
    spec = spec_with(tmp_path, target_encryption={"key_id": "local_key"})
    where = locations(spec)
    assert spec.encryption_for(where["primary"]).key_id == "local_key"
    assert spec.encryption_for(where["copy 1"]) is None


def test_spec_encryption_disabled(tmp_path):
    spec = spec_with(tmp_path, encryption={"enabled": False})
    assert spec.encryption is not None and not spec.encryption.enabled
    assert spec.encryption_for(locations(spec)["copy 1"]) is None
    assert len(spec.unencrypted_off_cluster()) == 1


def test_keyring_for_spec_runs_the_configured_command(tmp_path):
    program = script(tmp_path, f"echo '{KEY_B64}'\n")
    other = script(tmp_path, f"echo '{OTHER_B64}'\n", name="get-offsite-key")
    spec = spec_with(tmp_path, encryption={"key_id": "backup_key", "key_command": [str(program)]},
                     copy_encryption={"key_id": "offsite_key", "key_command": [str(other)]})
    ring = KeyRing.for_spec(spec)
    assert ring.key("backup_key") == KEY and ring.key("offsite_key") == OTHER
    assert stat.S_IMODE(program.stat().st_mode) == 0o700
