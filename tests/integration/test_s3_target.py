"""The S3 target against a real s3proxy: refused credentials, the obs profile's requests, a backup
and restore through the core, and an object damaged behind the target's back."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pendulum
import pytest
import yaml

from conftest import backup_once
from metabackup import pipeline
from metabackup.restore import restore_source
from metabackup.sources import RestoreError
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec
from metabackup.targets import TargetError
from metabackup.verification import VerificationFailed, verify_sets

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
PREFIX = "hadoop/meta"
CHECKSUM_HEADERS = ("x-amz-checksum-crc32", "x-amz-trailer", "x-amz-sdk-checksum-algorithm")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    from harness import s3proxy

    instance = s3proxy.start(s3proxy.prepare(tmp_path_factory.mktemp("s3proxy") / "s3"))
    yield instance
    instance.stop()


@pytest.fixture()
def bucket(proxy, monkeypatch) -> str:
    """A new bucket; the Airflow connection ``s3_backup`` reaches it with the right secret."""
    monkeypatch.setenv("AIRFLOW_CONN_S3_BACKUP", proxy.connection_uri())
    return proxy.create_bucket(f"it-{secrets.token_hex(4)}")


def make_spec(tmp_path: Path, bucket: str, name: str = "s3rt", **target):
    src = tmp_path / "conf"
    if not src.exists():
        (src / "sub").mkdir(parents=True)
        (src / "server.xml").write_text("<server port='1'/>\n")
        (src / "sub" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "policy": "full_then_incremental", "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "files", "paths": [str(src)],
                            "target": {"type": "S3", "conn_id": "s3_backup", "bucket": bucket, "prefix": PREFIX,
                                       "max_backups": 3, **target}}}}))
    return load_spec(path)


def test_a_wrong_secret_fails_preflight_naming_connection_endpoint_and_bucket(tmp_path, proxy, bucket, monkeypatch):
    wrong = "wrong-" + secrets.token_hex(12)
    monkeypatch.setenv("AIRFLOW_CONN_S3_BACKUP", proxy.connection_uri(credential=wrong))
    spec = make_spec(tmp_path, bucket)
    with pytest.raises(pipeline.PreflightError) as failure:
        pipeline.preflight(spec, ["OMS"])
    message = str(failure.value)
    for part in (f"s3://{bucket}/{PREFIX}", "connection 's3_backup'", proxy.endpoint, f"bucket {bucket}",
                 "secret key (password)"):
        assert part in message, f"{part!r} not in {message}"
    assert wrong not in message and proxy.credential not in message


def test_a_missing_bucket_fails_preflight_saying_so(tmp_path, proxy, bucket):
    spec = make_spec(tmp_path, "no-such-bucket-here")
    with pytest.raises(pipeline.PreflightError, match=r"bucket no-such-bucket-here does not exist at http://127\.0\.0\.1:\d+"):
        pipeline.preflight(spec, ["OMS"])


def _sent_headers(target) -> list[tuple[str, set[str]]]:
    """Record every request the target's client sends: (operation, lower-case header names)."""
    sent: list[tuple[str, set[str]]] = []
    target.client.meta.events.register(
        "before-send.s3", lambda request, **_: sent.append((request.method, {k.lower() for k in request.headers})))
    return sent


@pytest.mark.parametrize("profile", ["obs", "s3"])
def test_a_whole_round_of_requests_in_each_profile(tmp_path, proxy, bucket, profile):
    """put (multipart and single), list, read, verify, delete, partial sweep; the obs profile sends
    no flexible-checksum headers (the request form OBS accepts), the s3 profile boto3's defaults."""
    import hashlib

    spec = make_spec(tmp_path, bucket, profile=profile)
    target = spec.source("OMS").target.open()
    sent = _sent_headers(target)
    big = tmp_path / "big.bin"
    data = os.urandom(40 * 1024 * 1024 + 5)  # three parts
    big.write_bytes(data)
    target.ensure_writable("t_1")
    target.put_file(big, "t_1", "a.tar.gz")
    target.put_bytes(b'{"set": "a"}', "t_1", "a.manifest.json")
    assert target.list_names("t_1") == ["a.manifest.json", "a.tar.gz"]
    with target.open_read("t_1", "a.tar.gz") as handle:
        assert handle.read() == data
    target.verify("t_1", "a.tar.gz", hashlib.sha256(data).hexdigest(), len(data))
    assert target.remove_partials("t_1") == []
    target.delete("t_1", "a.manifest.json")
    target.delete("t_1", "a.tar.gz")
    target.delete("t_1", "a.tar.gz")
    assert target.list_names("t_1") == []
    uploads = [headers for method, headers in sent if method == "PUT"]
    assert len(uploads) >= 5  # probe, three parts, manifest
    with_checksums = [h & set(CHECKSUM_HEADERS) for h in uploads if h & set(CHECKSUM_HEADERS)]
    if profile == "obs":
        assert with_checksums == [], "the obs profile sent flexible-checksum headers"
    else:
        assert with_checksums, "boto3's default flexible checksums were expected in the s3 profile"


def test_backup_to_s3_and_restore_from_it(tmp_path, bucket):
    spec = make_spec(tmp_path, bucket)
    src = tmp_path / "conf"
    full = backup_once(spec, "OMS", T0)
    (src / "server.xml").write_text("<server port='2'/>\n")
    inc = backup_once(spec, "OMS", T0.add(hours=1))
    assert (full["type"], inc["type"]) == ("full", "incremental")
    target = spec.source("OMS").target.open()
    names = target.list_names(spec.task_dir)
    assert names == sorted(f"{s}{suffix}" for s in (full["stem"], inc["stem"]) for suffix in (".manifest.json", ".tar.gz"))
    dest = tmp_path / "restored"
    result = restore_source(spec, "OMS", dest)
    assert result["chain"] == [full["stem"], inc["stem"]]
    assert dict(iter_tree(dest / str(src).lstrip("/"))) == dict(iter_tree(src))
    assert verify_sets(spec, "OMS")["failed"] == []


def test_an_object_damaged_on_the_server_is_caught_by_verification_and_refused_by_restore(tmp_path, proxy, bucket):
    spec = make_spec(tmp_path, bucket)
    made = backup_once(spec, "OMS", T0)
    archive = made["manifest"].archive
    stored = proxy.object_path(bucket, f"{PREFIX}/{spec.task_dir}/{archive.name}")
    data = bytearray(stored.read_bytes())
    assert len(data) == archive.size
    data[len(data) // 2] ^= 0x01  # same size, one bit flipped, behind the target's back
    stored.write_bytes(bytes(data))
    with pytest.raises(VerificationFailed, match=made["stem"]):
        verify_sets(spec, "OMS")
    dest = tmp_path / "restored"
    with pytest.raises(RestoreError, match=f"chain member {made['stem']} failed verification"):
        restore_source(spec, "OMS", dest)
    assert not dest.exists()


def test_an_unreachable_endpoint_is_a_target_error_naming_it(tmp_path, proxy, bucket, monkeypatch):
    from harness import free_port

    conn = proxy.connection()
    conn["extra"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_S3_BACKUP", json.dumps(conn))
    target = make_spec(tmp_path, bucket).source("OMS").target.open()
    with pytest.raises(TargetError, match=rf"s3://{bucket}/{PREFIX}: checking the bucket {bucket} failed .*"
                                          rf"endpoint {conn['extra']['endpoint_url']}"):
        target.ensure_writable("t_1")
