"""The backup store is untrusted input: whoever can write to a target rewrites archive and manifest
together (so checksums match) and tries to turn a restore, a retention run or the Backups page
against the host.  Every case must be refused with a clear message, and nothing outside the
restore destination or the target may change (file-tree snapshots before and after)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pendulum
import pytest
import yaml

from metabackup import pipeline
from metabackup.catalog import Catalog
from metabackup.overview import task_overview
from metabackup.inplace import restore_in_place
from metabackup.restore import RestoreError, plan_restore, restore_source
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path below ``root`` with its type, mode, owner, size, content digest and link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            link = os.readlink(path) if os.path.islink(path) else None
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, digest, link)
    return out


@pytest.fixture()
def world(tmp_path):
    """A files source, a precious directory outside everything, one committed full set."""
    src = tmp_path / "etc" / "oms"
    (src / "conf.d").mkdir(parents=True)
    (src / "server.xml").write_text("<server/>\n")
    (src / "conf.d" / "a.properties").write_text("a=1\n")
    other = tmp_path / "etc" / "other-service"
    other.mkdir()
    (other / "live.conf").write_text("live\n")
    precious = tmp_path / "outside"
    precious.mkdir()
    (precious / "precious").write_text("do not touch\n")
    os.chmod(precious / "precious", 0o640)
    spec_path = tmp_path / "store.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "store", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "policy": "full_then_incremental", "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "files", "paths": [str(src)],
                            "target": {"type": "LocalDir", "max_backups": 2}}}}))
    spec = load_spec(spec_path)
    run = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.preflight(spec, ["OMS"])
    pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(run)
    pipeline.record(spec, ["OMS"], T0.isoformat())
    folder = Path(spec.sources[0].target.path) / run.task_dir
    return {"spec": spec, "run": run, "src": src, "other": other, "precious": precious, "folder": folder,
            "tmp": tmp_path, "stem": run.name.stem}


def read_members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(archive, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]


def forge(world, members: list[tuple[tarfile.TarInfo, bytes | None]], **manifest_changes) -> None:
    """Rewrite the set's archive from ``members`` and its manifest to match (size, SHA-256), as an
    attacker with write access to the target would."""
    folder, stem = world["folder"], world["stem"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    blob = buf.getvalue()
    (folder / f"{stem}.tar.gz").write_bytes(blob)
    manifest = json.loads((folder / f"{stem}.manifest.json").read_text())
    manifest["archive"].update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    for info, data in members:  # the index digest and count the manifest records, re-signed as well
        if info.name == ".metabackup-index.json":
            manifest["position"].update(file_index_sha256=hashlib.sha256(data).hexdigest(),
                                        entries=len(json.loads(data)["index"]))
    for key, value in manifest_changes.items():
        manifest[key] = value
    (folder / f"{stem}.manifest.json").write_text(json.dumps(manifest))


def with_index(world, mutate) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members = read_members(world["folder"] / f"{world['stem']}.tar.gz")
    out = []
    for info, data in members:
        if info.name == ".metabackup-index.json":
            document = json.loads(data)
            mutate(document["index"])
            data = json.dumps(document).encode()
            info.size = len(data)
        out.append((info, data))
    return out


def assert_refused_untouched(world, action, match: str) -> None:
    before = snapshot(world["tmp"] / "etc"), snapshot(world["precious"])
    with pytest.raises((RestoreError, ValueError), match=match):
        action()
    assert (snapshot(world["tmp"] / "etc"), snapshot(world["precious"])) == before


def restore_to(world, name="restored"):
    dest = world["tmp"] / "restores" / name
    return lambda: restore_source(world["spec"], "OMS", dest), dest


def test_an_index_that_does_not_match_the_manifest_is_refused(world):
    """Archive rewritten and re-signed, but the manifest's record of the index left as it was."""
    member = str(world["src"]).lstrip("/") + "/server.xml"
    forge(world, with_index(world, lambda index: index[member].update(mode=0o6777)))
    manifest_path = world["folder"] / f"{world['stem']}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["position"]["file_index_sha256"] = hashlib.sha256(b"the original index").hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    action, dest = restore_to(world)
    assert_refused_untouched(world, action, "does not match the SHA-256 its manifest recorded")
    assert not dest.exists()


def test_index_link_with_entries_below_it_is_refused(world):
    precious = str(world["precious"])
    member = str(world["src"]).lstrip("/")

    def mutate(index):
        index[f"{member}/escape"] = {**index[f"{member}/conf.d"], "type": "l", "target": precious}
        index[f"{member}/escape/precious"] = {**index[f"{member}/server.xml"]}

    forge(world, with_index(world, mutate))
    action, dest = restore_to(world)
    assert_refused_untouched(world, action, "below the symbolic link")
    assert not dest.exists()


def test_index_link_then_metadata_never_follows_it(world):
    """A link whose name an entry's metadata would be applied through: chmod/chown never follow it."""
    precious = world["precious"] / "precious"
    member = str(world["src"]).lstrip("/")

    def mutate(index):
        index[f"{member}/hook"] = {"type": "l", "mode": 0o4777, "uid": 0, "gid": 0, "user": "", "group": "",
                                   "mtime_ns": 0, "size": 0, "target": str(precious)}

    forge(world, with_index(world, mutate))
    action, dest = restore_to(world)
    before = snapshot(world["precious"])
    action()  # a link to anywhere is a legitimate entry; what matters is that nothing follows it
    assert os.readlink(dest / member / "hook") == str(precious)
    assert snapshot(world["precious"]) == before
    assert oct(os.stat(precious).st_mode & 0o7777) == oct(0o640)


@pytest.mark.parametrize("change,match", [
    (lambda e: e.update(type="p"), "entry type"),
    (lambda e: e.update(mode=0o1004777), "not a permission mode"),
    (lambda e: e.update(size="big"), "size is not a whole number"),
    (lambda e: e.update(sha256="../../x"), "SHA-256"),
    (lambda e: e.update(set="../../../outside/x"), "SHA-256 and the set"),
])
def test_index_entries_are_allow_listed(world, change, match):
    member = str(world["src"]).lstrip("/") + "/server.xml"
    forge(world, with_index(world, lambda index: change(index[member])))
    action, dest = restore_to(world)
    assert_refused_untouched(world, action, match)
    assert not dest.exists()


@pytest.mark.parametrize("name", ["../../escape", "/etc/escape", "a/./b", "a//b"])
def test_index_member_names_stay_inside(world, name):
    member = str(world["src"]).lstrip("/") + "/server.xml"
    forge(world, with_index(world, lambda index: index.__setitem__(name, index[member])))
    action, dest = restore_to(world)
    assert_refused_untouched(world, action, "unsafe archive member name")
    assert not dest.exists()


def test_archive_member_of_another_type_than_the_index_says_is_refused(world):
    member = str(world["src"]).lstrip("/") + "/server.xml"
    members = []
    for info, data in read_members(world["folder"] / f"{world['stem']}.tar.gz"):
        if info.name == member:
            info = tarfile.TarInfo(member)
            info.type, info.linkname = tarfile.SYMTYPE, str(world["precious"] / "precious")
            data = None
        members.append((info, data))
    forge(world, members)
    action, dest = restore_to(world)
    assert_refused_untouched(world, action, "not a regular file")
    assert not dest.exists()


def test_a_manifest_cannot_choose_the_restore_kind(world):
    """``kind: postgres`` on a files set once made the restore extract with a trusting filter."""
    forge(world, read_members(world["folder"] / f"{world['stem']}.tar.gz"), kind="postgres")
    catalog = Catalog.read(world["spec"].sources[0].target.open(), "store", world["run"].task_dir, "OMS", "UTC")
    assert catalog.sets == () and "position" in catalog.invalid[0].reason  # a files position is no postgres one
    action, dest = restore_to(world)
    assert_refused_untouched(world, action, "no restorable backup set")


def test_a_manifest_cannot_choose_the_directories_an_in_place_restore_replaces(world):
    manifest_path = world["folder"] / f"{world['stem']}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["position"]["paths"] = [str(world["other"])]
    manifest_path.write_text(json.dumps(manifest))
    before = snapshot(world["other"])
    plan = plan_restore(world["spec"], "OMS")
    result = restore_in_place(plan, "20261124040000")
    assert [s["live"] for s in result["in_place"]] == [str(world["src"])]
    assert snapshot(world["other"]) == before
    assert not any(p.name.startswith("other-service.pre-restore") for p in world["other"].parent.iterdir())


@pytest.mark.parametrize("name", ["../../../outside/precious", "/etc/hostname", "x/../../y.tar.gz"])
def test_retention_never_deletes_outside_the_target(world, name):
    """An archive name pointing elsewhere once made the next run's retention delete that file."""
    manifest_path = world["folder"] / f"{world['stem']}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["archive"]["name"] = name
    manifest_path.write_text(json.dumps(manifest))
    spec = world["spec"]
    before = snapshot(world["precious"])
    catalog = Catalog.read(spec.sources[0].target.open(), "store", world["run"].task_dir, "OMS")
    assert catalog.sets == () and "archive.name" in catalog.invalid[0].reason
    for hour in (1, 2, 3):  # max_backups 2: retention deletes old sets, never the invalid one's "archive"
        run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=hour))
        pipeline.decide(run)
        for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
            step(run)
    assert snapshot(world["precious"]) == before
    assert manifest_path.exists()  # an invalid set is reported, never deleted


@pytest.mark.parametrize("field,value", [
    ("task", "another"), ("task_dir", "another_20261124000000"), ("source", "DBService"),
    ("set", "3.1.0_OMS_20991231000000"), ("type", "snapshot"), ("parent", "../x"), ("executed_at", "yesterday"),
    ("executed_at", "2099-01-01T00:00:00Z"), ("executed_at", "2026-11-24T03:00:00"), ("set", "3.1.0_OMS_20261124030000\n"),
    ("cluster_version", "3.1.0\nevil"),
])
def test_manifest_fields_are_allow_listed(world, field, value):
    manifest_path = world["folder"] / f"{world['stem']}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[field] = value
    manifest_path.write_text(json.dumps(manifest))
    catalog = Catalog.read(world["spec"].sources[0].target.open(), "store", world["run"].task_dir, "OMS", "UTC")
    assert catalog.sets == ()
    assert len(catalog.invalid) == 1 and field in catalog.invalid[0].reason or "belong" in catalog.invalid[0].reason
    action, _dest = restore_to(world)
    assert_refused_untouched(world, action, "no restorable backup set")


def test_one_malformed_manifest_does_not_break_the_page_or_the_list(world):
    """``"size": "big"`` once made the Backups page answer 500 for every user."""
    from metabackup.airflow.ui import render_page

    manifest_path = world["folder"] / f"{world['stem']}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["archive"]["size"] = "big"
    manifest_path.write_text(json.dumps(manifest))
    spec = world["spec"]
    run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))  # a good set beside the bad one
    pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(run)
    row = task_overview(spec)["sources"][0]
    assert [s["set"] for s in row["sets"]] == [run.name.stem]
    assert row["invalid"][0]["name"] == manifest_path.name and "archive.size" in row["invalid"][0]["reason"]
    html = render_page({"tasks": [task_overview(spec)], "spec_errors": []})
    assert manifest_path.name in html and "invalid" in html.lower()


def test_a_symlinked_archive_at_the_target_is_not_read(world):
    archive = world["folder"] / f"{world['stem']}.tar.gz"
    archive.unlink()
    archive.symlink_to("/etc/hostname")
    action, dest = restore_to(world)
    assert_refused_untouched(world, action, "symbolic link")
    assert not dest.exists()


@pytest.mark.parametrize("record", ['{"sets": "x"}', '[1, 2]', '{"sets": {"x": 5}, "test_restore": "ok"}', "{"])
def test_a_malformed_verification_record_does_not_break_the_page_or_the_list(world, record):
    from metabackup.airflow.ui import render_page

    (world["folder"] / ".metabackup-verification-OMS.json").write_text(record)
    row = task_overview(world["spec"])["sources"][0]
    assert row["error"] is None and [s["verification"] for s in row["sets"]] == [None]
    assert world["stem"] in render_page({"tasks": [task_overview(world["spec"])], "spec_errors": []})
