"""The S3 target's settings: bucket-name rules, the key prefix, its URI, and a spec that names it
parses without boto3 (the target imports it only when it first talks to the endpoint)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metabackup.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]


def spec_file(tmp_path: Path, **target) -> Path:
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s3", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "files", "paths": [str(tmp_path / "conf")],
                            "target": {"type": "S3", "conn_id": "s3_backup", "bucket": "meta-backups", **target}}}}))
    return path


@pytest.mark.parametrize(("prefix", "uri"), [
    ("", "s3://meta-backups/s3_20261124000000"),
    ("hadoop/prod", "s3://meta-backups/hadoop/prod/s3_20261124000000"),
    ("hadoop//prod/", "s3://meta-backups/hadoop/prod/s3_20261124000000"),
])
def test_the_uri_names_bucket_prefix_and_task_directory(tmp_path, prefix, uri):
    spec = load_spec(spec_file(tmp_path, prefix=prefix))
    target = spec.source("OMS").target
    assert target.uri(spec.task_dir) == uri
    assert target.profile == "s3" and target.local_dirs() == []


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("bucket", "Meta", "not a valid bucket name: 3 to 63 lowercase"),
    ("bucket", "ab", "not a valid bucket name: 3 to 63 lowercase"),
    ("bucket", "a" * 64, "not a valid bucket name: 3 to 63 lowercase"),
    ("bucket", "-meta", "not a valid bucket name: 3 to 63 lowercase"),
    ("bucket", "meta_backups", "not a valid bucket name: 3 to 63 lowercase"),
    ("bucket", "meta..backups", "no '..', '.-' or '-.'"),
    ("bucket", "meta-.backups", "no '..', '.-' or '-.'"),
    ("bucket", "10.1.2.3", "formatted as an IP address"),
    ("bucket", "xn--meta", "a prefix or suffix S3 reserves"),
    ("bucket", "meta-s3alias", "a prefix or suffix S3 reserves"),
    ("prefix", "/hadoop", "must not begin with '/'"),
    ("prefix", "hadoop/../other", "must not contain a '.' or '..' part"),
    ("prefix", "./hadoop", "must not contain a '.' or '..' part"),
    ("prefix", "had\noop", "must not contain control characters"),
    ("profile", "gcs", "must be one of s3, obs"),
    ("conn_id", "no spaces", "is not a valid Airflow connection id"),
])
def test_bad_settings_are_refused_with_field_and_reason(tmp_path, field, value, reason):
    with pytest.raises(SpecError) as refused:
        load_spec(spec_file(tmp_path, **{field: value}))
    assert f"sources.OMS.target.{field}: " in str(refused.value) and reason in str(refused.value), str(refused.value)


def test_conn_id_and_bucket_are_required(tmp_path):
    path = spec_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    del raw["sources"]["OMS"]["target"]["conn_id"], raw["sources"]["OMS"]["target"]["bucket"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as refused:
        load_spec(path)
    assert "sources.OMS.target.conn_id" in str(refused.value) and "sources.OMS.target.bucket" in str(refused.value)


def test_a_spec_with_an_s3_target_parses_and_opens_without_importing_boto3(tmp_path):
    path = spec_file(tmp_path, prefix="hadoop", profile="obs")
    code = ("import sys; from metabackup.spec import load_spec; "
            f"spec = load_spec({str(path)!r}); spec.source('OMS').target.open(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "plugins"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
