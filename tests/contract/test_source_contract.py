"""The source contract: every source kind, against its real server, passes the same steps.

    full -> change -> incremental -> change -> incremental      (preflight, run_set, record each)
    restore each of the three points into a fresh destination == the state captured at that point
    one archive byte corrupted at the target -> every set depending on it is refused before its
        destination is created (the sets before it still verify)
    the latest set is listed restorable; the catalog has no orphans and no invalid manifests
    a re-run of the latest set's run commits nothing new and changes nothing at the target

Every kind runs it on two storages: ``plain`` (a LocalDir target, sets stored as ``.tar.gz``) and
``encrypted`` (the spec's ``encryption`` with ``on_cluster: true``, and one S3 copy on the s3proxy):
there every archive, at the primary and at the copy, is stored sealed (``.tar.gz.enc``, no gzip
header, the manifest naming the key), and the latest set restored from the copy alone is the
state captured then.

Kinds come from ``kinds.KINDS`` (one adapter each); a new kind is one more line there.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

from .kinds import KINDS, Kind
from metabackup import pipeline
from metabackup.catalog import Catalog
from metabackup.keys import generate_key
from metabackup.overview import source_overview
from metabackup.restore import plan_restore, restore_source, verify_chain
from metabackup.sources import RestoreError
from metabackup.spec import TaskSpec, load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
POINTS = (0, 1, 2)  # the full, then two incrementals
STORAGES = ("plain", "encrypted")
GZIP_MAGIC = b"\x1f\x8b"
COPY = "copy 1"  # the encrypted storage's S3 copy, as Source.locations() names it


@dataclass
class Point:
    stem: str
    type: str
    parent: str | None
    reason: str
    state: Any


@dataclass
class Storage:
    """Where a chain's sets go: ``plain`` (LocalDir only) or ``encrypted`` (LocalDir and an S3 copy,
    every set sealed under ``key_id``)."""

    id: str
    key_id: str | None = None
    s3: Any = None  # the encrypted storage's raw boto3 client of the s3proxy (never the target's)
    bucket: str | None = None
    prefix: str = "backups/meta"
    spec_fields: dict[str, Any] = field(default_factory=dict)  # top-level spec fields
    source_fields: dict[str, Any] = field(default_factory=dict)  # source block fields besides target

    @property
    def encrypted(self) -> bool:
        return self.key_id is not None

    def s3_names(self, task_dir: str) -> list[str]:
        prefix = f"{self.prefix}/{task_dir}/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"][len(prefix):] for page in pages for item in page.get("Contents", []))

    def s3_read(self, task_dir: str, name: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{task_dir}/{name}")["Body"].read()


@dataclass
class Chain:
    kind: Kind
    storage: Storage
    spec: TaskSpec
    workdir: Path
    points: list[Point]

    def run(self) -> pipeline.SetRun:
        return pipeline.SetRun.of(self.spec, self.kind.source, T0)

    def catalog(self):
        return self.run().catalog()

    def location_catalog(self, label: str) -> Catalog:
        target = self.spec.source(self.kind.source).location(label).open()
        return Catalog.read(target, self.spec.name, self.spec.task_dir, self.kind.source, self.spec.timezone)

    def primary_dir(self) -> Path:
        return Path(self.spec.source(self.kind.source).target.path) / self.spec.task_dir


def make_storage(storage_id: str, kind: Kind, servers) -> Storage:
    if storage_id == "plain":
        return Storage("plain")
    proxy = servers.s3proxy()  # the Airflow connection s3_contract
    storage = Storage("encrypted", key_id=f"contract_key_{kind.id}", s3=proxy.client(),
                      bucket=proxy.create_bucket(f"contract-{kind.id}-{secrets.token_hex(4)}"))
    storage.spec_fields = {"encryption": {"key_id": storage.key_id, "on_cluster": True}}
    storage.source_fields = {"copies": [{"type": "S3", "conn_id": "s3_contract", "bucket": storage.bucket,
                                         "prefix": storage.prefix, "max_backups": 5}]}
    return storage


def make_spec(kind: Kind, workdir: Path, storage: Storage | None = None) -> TaskSpec:
    storage = storage or Storage("plain")
    name = f"contract_{kind.id}" if storage.id == "plain" else f"contract_{kind.id}_{storage.id}"
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0",
        "type": "manual", "policy": "full_then_incremental", "data_path": str(workdir / "data"),
        **storage.spec_fields,
        "sources": {kind.source: {**kind.block(), "target": {"type": "LocalDir", "max_backups": 5},
                                  **storage.source_fields}}}))
    return load_spec(path)


def take_set(spec: TaskSpec, source: str, when: pendulum.DateTime) -> dict[str, Any]:
    """One set as the DAG takes it: preflight, the source's steps (run_set), record."""
    pipeline.preflight(spec, [source], when)
    outcome = pipeline.run_set(pipeline.SetRun.of(spec, source, when))
    pipeline.record(spec, [source], when.to_iso8601_string())
    return outcome


@pytest.fixture(scope="module", params=[(kind, storage) for storage in STORAGES for kind in KINDS],
                ids=lambda param: f"{param[0].id}-{param[1]}")
def chain(request, servers, tmp_path_factory):
    kind_class, storage_id = request.param
    kind = kind_class()
    workdir = tmp_path_factory.mktemp(f"contract-{kind.id}-{storage_id}")
    storage = make_storage(storage_id, kind, servers)
    key_var = f"AIRFLOW_CONN_{storage.key_id.upper()}" if storage.encrypted else None
    saved = os.environ.get(key_var) if key_var else None
    if key_var:  # the key: the password of the Airflow connection key_id
        os.environ[key_var] = json.dumps({"conn_type": "generic", "password": generate_key()})
    kind.start(servers, workdir)
    try:
        spec = make_spec(kind, workdir, storage)
        points = []
        for n in POINTS:
            if n:
                kind.change(n)
            outcome = take_set(spec, kind.source, T0.add(hours=n))
            points.append(Point(outcome["event"]["set"], outcome["type"], outcome["parent"], outcome["reason"],
                                kind.state()))
        yield Chain(kind, storage, spec, workdir, points)
    finally:
        kind.stop()
        if key_var:
            if saved is None:
                os.environ.pop(key_var, None)
            else:
                os.environ[key_var] = saved


def attempt_restore(chain: Chain, stem: str, folder: Path) -> tuple[Any, Any]:
    """Restore ``stem`` into a fresh destination: (the destination, the restore's result)."""
    dest = chain.kind.destination(folder)
    return dest, restore_source(chain.spec, chain.kind.source, dest, stem)


# ---------------------------------------------------------------------------------------------
def test_contract_full_then_two_incrementals(chain):
    points = chain.points
    assert [p.type for p in points] == ["full", "incremental", "incremental"], [p.reason for p in points]
    assert [p.parent for p in points] == [None, points[0].stem, points[1].stem]
    assert [m.set for m in chain.catalog().sets] == [p.stem for p in points]
    assert points[0].state != points[1].state != points[2].state, "each change(n) is visible in state()"


@pytest.mark.parametrize("point", POINTS, ids=["full", "incremental1", "incremental2"])
def test_contract_restore_each_point(chain, point, tmp_path):
    expected = chain.points[point]
    dest, result = attempt_restore(chain, expected.stem, tmp_path)
    try:
        assert result["set"] == expected.stem
        assert result["chain"] == [p.stem for p in chain.points[:point + 1]]
        restored = chain.kind.restored_state(result, dest)
        assert restored == expected.state, f"{chain.kind.id}: restore of {expected.stem} differs from the source then"
    finally:
        chain.kind.release(dest)


@pytest.mark.parametrize("corrupt", POINTS, ids=["full", "incremental1", "incremental2"])
def test_contract_corrupt_archive_refuses_every_dependent_set(chain, corrupt, tmp_path):
    run = chain.run()
    target, task_dir = run.target, run.task_dir
    bad = chain.catalog().get(chain.points[corrupt].stem)
    with target.open_read(task_dir, bad.archive.name) as handle:
        original = handle.read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    target.put_bytes(bytes(damaged), task_dir, bad.archive.name)  # one byte flipped, at the target
    try:
        for point in POINTS:
            stem = chain.points[point].stem
            plan = plan_restore(chain.spec, chain.kind.source, stem)
            if point < corrupt:  # does not depend on the damaged set
                verify_chain(plan.target, plan.reads, plan.keys)
                continue
            dest = chain.kind.destination(tmp_path / f"refused-{point}")
            try:  # read at the primary: with a copy, the default would restore the intact chain there
                with pytest.raises(RestoreError, match=f"chain member {bad.set} failed verification"):
                    restore_source(chain.spec, chain.kind.source, dest, stem, location="primary")
                assert chain.kind.untouched(dest), f"the refused restore of {stem} created its destination"
            finally:
                chain.kind.release(dest)
    finally:
        target.put_bytes(original, task_dir, bad.archive.name)
    target.verify(task_dir, bad.archive.name, bad.archive.sha256, bad.archive.size)


def test_contract_latest_is_listed_restorable_and_no_orphans(chain):
    catalog = chain.catalog()
    latest = chain.points[-1].stem
    assert catalog.latest_restorable().set == latest
    assert catalog.orphans() == [] and catalog.invalid == ()
    assert [m.set for m in plan_restore(chain.spec, chain.kind.source).chain] == [p.stem for p in chain.points]
    row = source_overview(chain.spec, chain.kind.source, chain.run().task_dir)  # the list / Backups page rows
    assert row["error"] is None and row["invalid"] == []
    assert [(s["set"], s["restorable"], s["chain_length"]) for s in row["sets"]] == [
        (p.stem, True, i + 1) for i, p in reversed(list(enumerate(chain.points)))]


def test_contract_rerun_of_a_committed_set_changes_nothing(chain):
    """A cleared (re-run) DAG run of the latest set: nothing is taken, uploaded or deleted again."""
    run = chain.run()
    before = sorted(run.target.list_names(run.task_dir))
    outcome = take_set(chain.spec, chain.kind.source, T0.add(hours=POINTS[-1]))
    assert outcome["committed"] is True and outcome["event"]["set"] == chain.points[-1].stem
    assert sorted(run.target.list_names(run.task_dir)) == before


def test_contract_sets_are_stored_as_the_storage_says(chain):
    """plain: ``.tar.gz`` with no ``encryption`` in the manifest.  encrypted: at the primary and at the S3
    copy, every archive is ``.tar.gz.enc``, its manifest names the spec's key, and no stored byte
    stream starts as gzip (what is stored is the sealed stream, not the tarball)."""
    stems = [p.stem for p in chain.points]
    task_dir = chain.spec.task_dir
    locations = {"primary": sorted(os.listdir(chain.primary_dir()))}
    if chain.storage.encrypted:
        locations[COPY] = chain.storage.s3_names(task_dir)
    assert [label for label, _ in chain.spec.source(chain.kind.source).locations()] == list(locations)
    suffix = ".tar.gz.enc" if chain.storage.encrypted else ".tar.gz"
    for label, names in locations.items():
        catalog = chain.location_catalog(label)
        assert [m.set for m in catalog.sets] == stems, f"{label}: {names}"
        assert names == sorted(n for s in stems for n in (f"{s}.manifest.json", f"{s}{suffix}")), label
        for manifest in catalog.sets:
            assert manifest.archive.name == f"{manifest.set}{suffix}", label
            if chain.storage.encrypted:
                assert manifest.encryption is not None, f"{label}: {manifest.set} has no encryption block"
                assert manifest.encryption.key_id == chain.storage.key_id, label
            else:
                assert manifest.encryption is None, f"{label}: {manifest.set}"
            if label == "primary":
                raw = (chain.primary_dir() / manifest.archive.name).read_bytes()
            else:
                raw = chain.storage.s3_read(task_dir, manifest.archive.name)
            assert len(raw) == manifest.archive.size, f"{label}: {manifest.set}"
            assert raw.startswith(GZIP_MAGIC) is not chain.storage.encrypted, (
                f"{label}: {manifest.archive.name} starts with {raw[:2]!r}")
            if chain.storage.encrypted:
                assert manifest.archive.sha256 != manifest.encryption.plaintext_sha256, label


def test_contract_restore_latest_from_the_copy(chain, tmp_path):
    """The S3 copy alone restores the latest set (decrypted with the spec's key) to the state then."""
    if not chain.storage.encrypted:
        pytest.skip("the plain storage has no copy")
    expected = chain.points[-1]
    dest = chain.kind.destination(tmp_path)
    try:
        result = restore_source(chain.spec, chain.kind.source, dest, expected.stem, location=COPY)
        assert (result["location"], result["set"]) == (COPY, expected.stem)
        assert result["read_from"].startswith(f"s3://{chain.storage.bucket}/"), result["read_from"]
        assert result["chain"] == [p.stem for p in chain.points]
        restored = chain.kind.restored_state(result, dest)
        assert restored == expected.state, f"{chain.kind.id}: restore of {expected.stem} from {COPY} differs"
    finally:
        chain.kind.release(dest)
