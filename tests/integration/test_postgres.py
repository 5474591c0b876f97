"""The postgres source kind against real PostgreSQL 15: fallbacks, outages, corrupt chains."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import pendulum
import psycopg
import pytest
import yaml

from conftest import PG_CAPTURE, seeded_postgres
from harness import postgres as pg
from metabackup import pipeline
from metabackup.manifest import Manifest
from metabackup.restore import restore_source
from metabackup.sources import RestoreError
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


@pytest.fixture()
def cluster(monkeypatch):
    with seeded_postgres(monkeypatch, rows=1000) as instance:
        yield instance


def make_spec(tmp_path: Path, conn_id: str = "pg_src"):
    path = tmp_path / "pgt.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pgt", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"DBService": {"kind": "postgres", "conn_id": conn_id, "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return load_spec(path)


def run_steps(spec, hour: int, steps=("snapshot", "archive", "upload", "verify", "retention"), force_full=False) -> dict:
    run = pipeline.SetRun.of(spec, "DBService", T0.add(hours=hour))
    pipeline.preflight(spec, ["DBService"])
    decision = pipeline.decide(run, force_full=force_full)
    for step in steps:
        getattr(pipeline, step)(run)
    return {**decision.model_dump(), "stem": run.name.stem}


def write(instance, sql: str) -> None:
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        conn.execute(sql)


def manifests(tmp_path: Path) -> list[dict]:
    folder = tmp_path / "data" / "LocalBackup" / "pgt_20261124000000"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.manifest.json"))]


def test_lost_slot_makes_the_next_run_full_with_the_reason(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "SELECT pg_drop_replication_slot('metabackup_pgt_dbservice')")
    second = run_steps(spec, 1)
    assert second["type"] == "full"
    assert "replication slot metabackup_pgt_dbservice no longer exists" in second["reason"]
    assert "no longer exists" in manifests(tmp_path)[-1]["reason"]
    write(cluster, "INSERT INTO t VALUES (5000, 'x')")
    assert run_steps(spec, 2)["type"] == "incremental", "the new full recreated the slot"


def wal_since(instance, lsn: str) -> int:
    """WAL written since a set's end LSN, as the size rule counts it (not the padding of its last segment)."""
    from metabackup.sources.postgres import parse_lsn, wal_written_since

    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        current = str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])
    return wal_written_since(parse_lsn(lsn), parse_lsn(current), 16 << 20)


def write_wal_beyond(instance, lsn: str, size: int) -> int:
    """Insert rows until more than ``size`` bytes of WAL were written since ``lsn``; the WAL since."""
    write(instance, "CREATE TABLE IF NOT EXISTS big (id bigint, v text)")
    while (written := wal_since(instance, lsn)) <= size:
        write(instance, "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 50000) g")
    return written


def counted(manifest: dict) -> int:
    """The chain's full as the size rule counts it: uncompressed, at most 4x its archive."""
    from metabackup.sources.postgres import counted_full_bytes, full_database_bytes, full_stored_bytes

    parsed = Manifest.from_json(json.dumps(manifest))
    return counted_full_bytes(full_database_bytes(parsed), full_stored_bytes(parsed))


def test_a_large_update_after_a_small_full_makes_the_next_run_full_with_the_reason(tmp_path, cluster):
    """The size rule: the WAL since the parent (read before anything is copied) against
    max_incremental_fraction (default 0.5) of the chain's full (uncompressed, at most 4x its archive)."""
    spec = make_spec(tmp_path)
    first = run_steps(spec, 0)
    full1 = manifests(tmp_path)[-1]
    assert 0 < full1["content"]["base_bytes"] <= full1["content"]["bytes"]
    assert counted(full1) <= full1["content"]["base_bytes"]
    written = write_wal_beyond(cluster, full1["position"]["end_lsn"], int(counted(full1) * 0.6))

    second = run_steps(spec, 1)
    assert second["type"] == "full" and second["parent"] is None
    assert f"cannot continue the chain of {first['stem']}: an incremental would outgrow a full" in second["reason"]
    assert f"of the chain's full {first['stem']}" in second["reason"] and "max_incremental_fraction 0.5" in second["reason"]
    full2 = manifests(tmp_path)[-1]
    assert full2["set"] == second["stem"] and full2["reason"] == second["reason"]
    # the full keeps no bridge of that WAL either (it would not be smaller than the full): a recorded gap
    assert "bridge" not in full2["position"]
    assert "max_incremental_fraction 0.5" in full2["position"]["bridge_gap"]["reason"]
    assert full2["content"]["base_bytes"] == full2["content"]["bytes"]
    assert full2["archive"]["size"] < written, "the full is smaller than the WAL the incremental would have held"

    write(cluster, "UPDATE t SET v = 'small' WHERE id < 10")
    third = run_steps(spec, 2)
    assert third["type"] == "incremental" and third["parent"] == second["stem"], "the rule does not stick"
    assert isinstance(manifests(tmp_path)[-1]["position"]["wal_generated"], int)

    # segment switches (archive_timeout, another tool's backup) move the LSN by whole segments of
    # padding: the server's WAL statistics leave it out
    end = manifests(tmp_path)[-1]["position"]["end_lsn"]
    for n in range(4):
        write(cluster, f"INSERT INTO t VALUES ({20000 + n}, 'switch')")
        write(cluster, "SELECT pg_switch_wal()")
    assert wal_since(cluster, end) > 3 * (16 << 20) > counted(full2) * 0.5
    padded = run_steps(spec, 3)
    assert padded["type"] == "incremental", padded["reason"]

    # on an incremental parent, the chain's full is read from the catalog
    write_wal_beyond(cluster, manifests(tmp_path)[-1]["position"]["end_lsn"], int(counted(full2) * 0.6))
    fourth = run_steps(spec, 4)
    assert fourth["type"] == "full" and f"cannot continue the chain of {padded['stem']}" in fourth["reason"]
    assert f"of the chain's full {second['stem']}" in fourth["reason"]


def test_a_rebuilt_server_makes_the_next_run_full(tmp_path, cluster, monkeypatch):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    rebuilt = pg.prepare()
    pg.start(rebuilt)
    try:
        monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps(rebuilt.connection()))
        second = run_steps(spec, 1)
        assert second["type"] == "full" and "system identifier changed" in second["reason"]
    finally:
        rebuilt.stop("immediate")
        shutil.rmtree(rebuilt.directory, ignore_errors=True)


def test_server_down_fails_clearly_and_the_retry_after_restart_commits_one_set(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t VALUES (7000, 'y')")
    run = pipeline.SetRun.of(spec, "DBService", T0.add(hours=1))
    decision = pipeline.decide(run)
    assert decision.type == "incremental"
    cluster.stop("immediate")
    with pytest.raises(RuntimeError, match=r"PostgreSQL connection 'pg_src' \(127.0.0.1:\d+\)"):
        pipeline.snapshot(run)
    pg.start(cluster)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(run)  # Airflow's retry of the failed task and the ones after it
    found = manifests(tmp_path)
    assert [m["type"] for m in found] == ["full", "incremental"]
    assert len(list((tmp_path / "data" / "LocalBackup" / "pgt_20261124000000").glob("*.tar.gz"))) == 2


def test_missing_replication_attribute_fails_preflight_naming_the_role(tmp_path, cluster):
    write(cluster, "ALTER ROLE metabackup NOREPLICATION")
    with pytest.raises(pipeline.PreflightError, match="role 'metabackup' lacks the REPLICATION attribute"):
        pipeline.preflight(make_spec(tmp_path), ["DBService"])


def test_restore_refuses_a_corrupt_wal_archive_before_starting_anything(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "UPDATE t SET v = 'changed' WHERE id < 10")
    inc = run_steps(spec, 1)["stem"]
    archive = tmp_path / "data" / "LocalBackup" / "pgt_20261124000000" / f"{inc}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0x10
    archive.write_bytes(bytes(data))
    dest = tmp_path / "never"
    with pytest.raises(RestoreError, match=f"chain member {inc} failed verification"):
        restore_source(spec, "DBService", str(dest / "data"), inc)
    assert not dest.exists()


def test_password_never_reaches_logs_or_manifests(tmp_path, cluster, our_logs):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t VALUES (8000, 'z')")
    run_steps(spec, 1)
    password = cluster.backup_password
    text = "\n".join(our_logs)
    assert "running" in text and "pg_receivewal" in text, "the run's log was captured"
    assert password not in text
    folder = tmp_path / "data" / "LocalBackup" / "pgt_20261124000000"
    assert all(password not in p.read_text() for p in folder.glob("*.manifest.json"))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())


def test_incrementals_with_and_without_new_writes_restore(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t VALUES (9000, 'one')")
    run_steps(spec, 1)
    quiet = run_steps(spec, 2)  # nothing written since the parent
    assert quiet["type"] == "incremental"
    folder = Path(tempfile.mkdtemp(prefix="metabackup-pg-restore-"))
    folder.chmod(0o755)
    try:
        from metabackup.sources.postgres import PostgresDestination

        result = restore_source(spec, "DBService", PostgresDestination(data_dir=str(folder / "data"), keep_running=True),
                                quiet["stem"])
        with psycopg.connect(f"host=127.0.0.1 port={result['port']} user=postgres "
                             f"password={cluster.superuser_password} dbname=postgres") as conn:
            assert conn.execute("SELECT v FROM t WHERE id = 9000").fetchone() == ("one",)
        pg.stop_data_dir(folder / "data", "immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_oms_backs_up_database_and_configuration_together_and_restores_both(tmp_path, cluster):
    from metabackup.sources.files import iter_tree
    from metabackup.sources.oms import OmsDestination
    from metabackup.sources.postgres import PostgresDestination

    conf = tmp_path / "om-server" / "conf"
    conf.mkdir(parents=True)
    (conf / "oms.properties").write_text("port=1\n")
    path = tmp_path / "oms.yaml"
    path.write_text(yaml.safe_dump({
        "name": "oms", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "oms", "database": {"conn_id": "pg_src"}, "paths": [str(conf)],
                            "target": {"type": "LocalDir", "max_backups": 5}}}}))
    spec = load_spec(path)
    stems = []
    for hour in range(2):
        run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=hour))
        pipeline.preflight(spec, ["OMS"])
        assert pipeline.decide(run).type == ("full" if hour == 0 else "incremental")
        for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
            step(run)
        stems.append(run.name.stem)
        if hour == 0:
            write(cluster, "INSERT INTO t VALUES (4242, 'manager change')")
            (conf / "oms.properties").write_text("port=2\n")
            (conf / "new.xml").write_text("<new/>")
    expected_tree = dict(iter_tree(conf))
    manifest = json.loads((tmp_path / "data" / "LocalBackup" / "oms_20261124000000" / f"{stems[1]}.manifest.json").read_text())
    assert set(manifest["position"]) == {"postgres", "files"} and manifest["position"]["postgres"]["method"] == "wal"
    folder = Path(tempfile.mkdtemp(prefix="metabackup-oms-restore-"))
    folder.chmod(0o755)
    try:
        dest = OmsDestination(PostgresDestination(data_dir=str(folder / "database"), keep_running=True), str(folder / "files"))
        result = restore_source(spec, "OMS", dest, stems[1])
        with psycopg.connect(f"host=127.0.0.1 port={result['postgres']['port']} user=postgres "
                             f"password={cluster.superuser_password} dbname=postgres") as conn:
            assert conn.execute("SELECT v FROM t WHERE id = 4242").fetchone() == ("manager change",)
        pg.stop_data_dir(folder / "database", "immediate")
        assert dict(iter_tree(folder / "files" / str(conf).lstrip("/"))) == expected_tree
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_preflight_warns_when_the_slot_holds_back_too_much_wal(tmp_path, cluster, our_logs):
    path = tmp_path / "pgt.yaml"
    make_spec(tmp_path)
    spec_dict = yaml.safe_load(path.read_text())
    spec_dict["sources"]["DBService"]["slot_warn_mb"] = 1
    path.write_text(yaml.safe_dump(spec_dict))
    spec = load_spec(path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t SELECT g, repeat('w', 500) FROM generate_series(2000, 12000) g")  # several MB of WAL
    our_logs.clear()
    pipeline.preflight(spec, ["DBService"])
    text = "\n".join(our_logs)
    assert "replication slot metabackup_pgt_dbservice holds back" in text and "max_slot_wal_keep_size" in text


def test_a_new_timeline_after_failover_makes_the_next_run_full(tmp_path, cluster, monkeypatch):
    """The 'failed-over' server is our own restore of the full: same system identifier, promoted
    onto timeline 2 (as a promoted standby would be)."""
    from metabackup.sources.postgres import PostgresDestination

    spec = make_spec(tmp_path)
    full = run_steps(spec, 0)["stem"]
    folder = Path(tempfile.mkdtemp(prefix="metabackup-pg-failover-"))
    folder.chmod(0o755)
    try:
        promoted = restore_source(spec, "DBService", PostgresDestination(data_dir=str(folder / "data"), keep_running=True), full)
        monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps({**cluster.connection(), "port": promoted["port"]}))
        with psycopg.connect(f"host=127.0.0.1 port={promoted['port']} user=postgres password={cluster.superuser_password} "
                             "dbname=postgres", autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the new timeline reaches pg_control
        second = run_steps(spec, 1)
        assert second["type"] == "full" and "the timeline changed from 1 to 2" in second["reason"]
    finally:
        pg.stop_data_dir(folder / "data", "immediate")
        shutil.rmtree(folder, ignore_errors=True)




def capture(port: int, password: str) -> dict:
    """Per-table content checksums: what a restore must reproduce."""
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres password={password} dbname=postgres",
                         autocommit=True) as conn:
        return dict(conn.execute(PG_CAPTURE).fetchall())


def server_now(instance) -> pendulum.DateTime:
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        return pendulum.instance(conn.execute("SELECT clock_timestamp()").fetchone()[0]).in_timezone("UTC")


def restore_at(spec, moment: pendulum.DateTime, password: str) -> tuple[dict, dict]:
    """A point-in-time restore as the CLI runs one (restore_source: the plan with the bridge full
    it may need, both verified, then the restore); the content, then the server stopped."""
    from metabackup.sources.postgres import PostgresDestination

    folder = Path(tempfile.mkdtemp(prefix="metabackup-pg-pitr-"))
    folder.chmod(0o755)
    try:
        result = restore_source(spec, "DBService", PostgresDestination(data_dir=str(folder / "data"), keep_running=True),
                                point_in_time=moment.to_iso8601_string())
        try:
            return capture(result["port"], password), {**result, "plan_chain": result["chain"]}
        finally:
            pg.stop_data_dir(folder / "data", "immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_point_in_time_between_an_incremental_and_the_next_full_restores_through_the_bridge(tmp_path, cluster):
    spec = make_spec(tmp_path)
    full1 = run_steps(spec, 0)["stem"]
    write(cluster, "INSERT INTO t VALUES (10001, 'before the incremental')")
    inc = run_steps(spec, 1)
    assert inc["type"] == "incremental"
    write(cluster, "UPDATE t SET v = 'changed after the incremental' WHERE id <= 50")
    time.sleep(0.2)
    early = server_now(cluster)  # later commits in the bridge WAL: recovery stops at the first one after it
    expected_early = capture(cluster.port, cluster.superuser_password)
    time.sleep(0.2)
    write(cluster, "CREATE TABLE gap_table AS SELECT g AS id FROM generate_series(1, 10) g")
    write(cluster, "DELETE FROM t WHERE id BETWEEN 60 AND 70")
    moment = server_now(cluster)  # every row committed by now; nothing committed after it before the full
    expected = capture(cluster.port, cluster.superuser_password)
    assert expected != expected_early
    time.sleep(1.1)
    full2 = run_steps(spec, 2, force_full=True)  # as a periodic full would be
    assert full2["type"] == "full"
    write(cluster, "INSERT INTO t VALUES (10002, 'after the second full')")

    found = {m["set"]: m for m in manifests(tmp_path)}
    bridge = found[full2["stem"]]["position"]["bridge"]
    assert bridge["from_set"] == inc["stem"] and bridge["start_lsn"] == found[inc["stem"]]["position"]["end_lsn"]
    assert bridge["end_lsn"] == found[full2["stem"]]["position"]["end_lsn"] and bridge["segments"]
    archive = tmp_path / "data" / "LocalBackup" / "pgt_20261124000000" / f"{full2['stem']}.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert all(f"pg/bridge/{s}" in names for s in bridge["segments"])
    assert run_steps(spec, 3)["type"] == "incremental", "the slot moved on to the new full's end"

    from metabackup.catalog import Catalog
    from metabackup.restore import set_for_point_in_time

    catalog = Catalog.of(Manifest.from_json(p.read_bytes()) for p in
                         (tmp_path / "data" / "LocalBackup" / "pgt_20261124000000").glob("*.manifest.json"))
    coverage = catalog.pitr_coverage()
    assert [c["full"] for c in coverage["chains"]] == [full1, full2["stem"]]
    assert coverage["chains"][0]["bridge"] == full2["stem"]
    assert coverage["gaps"] == [], "the bridge and the incremental after the full leave no gap"
    assert set_for_point_in_time(catalog, moment) == inc["stem"]

    restored, result = restore_at(spec, moment, cluster.superuser_password)
    assert result["plan_chain"] == [full1, inc["stem"]] and result["bridge"] == full2["stem"]
    assert restored == expected, "exactly the rows committed by the point in time"
    assert result["target"] == "end of the WAL", "no commit after the moment: replayed the whole bridge"
    restored, result = restore_at(spec, early, cluster.superuser_password)
    assert result["bridge"] == full2["stem"] and "recovery_target_time" in result["target"]
    assert restored == expected_early, "stopped inside the bridge WAL, at the moment"


def test_a_lost_slot_gap_is_named_by_the_refusal(tmp_path, cluster):
    from metabackup.catalog import Catalog
    from metabackup.restore import set_for_point_in_time

    spec = make_spec(tmp_path)
    first = run_steps(spec, 0)["stem"]
    write(cluster, "SELECT pg_drop_replication_slot('metabackup_pgt_dbservice')")
    second = run_steps(spec, 1)["stem"]
    catalog = Catalog.of(Manifest.from_json(p.read_bytes()) for p in
                         (tmp_path / "data" / "LocalBackup" / "pgt_20261124000000").glob("*.manifest.json"))
    coverage = catalog.pitr_coverage()
    [gap] = coverage["gaps"]
    assert (gap["after"], gap["before"]) == (first, second) and "the slot was lost" in gap["reason"]
    middle = pendulum.parse(gap["after_end"]) + (pendulum.parse(gap["before_start"]) - pendulum.parse(gap["after_end"])) / 2
    with pytest.raises(RestoreError, match=rf"lies in a WAL gap between set {first} \(ends .*\) and set {second} "
                                           r"\(starts .*\): replication slot .* the slot was lost"):
        set_for_point_in_time(catalog, middle)
    with pytest.raises(RestoreError, match=f"before the oldest kept full {first}"):
        set_for_point_in_time(catalog, pendulum.parse(coverage["chains"][0]["start"]).subtract(hours=1))
    with pytest.raises(RestoreError, match=f"no backup set reaches .* yet; the newest, {second}"):
        set_for_point_in_time(catalog, pendulum.now("UTC").add(hours=1))
    # the CLI list and the Backups page show the gap too
    from conftest import cli_list_json
    from metabackup.airflow.ui import render_page
    from metabackup.overview import task_overview

    listed = [r["pitr_gap"] for r in cli_list_json(spec.path) if r.get("pitr_gap")]
    assert [(g["after"], g["before"]) for g in listed] == [(first, second)]
    html = render_page({"tasks": [task_overview(spec)], "spec_errors": []})
    assert f"between {first} and {second}" in html and "the slot was lost" in html


def test_postgresql_programs_get_the_allow_listed_environment_only(tmp_path, cluster, monkeypatch):
    """Every PostgreSQL program this source starts (backup and restore) sees the allow-listed
    environment plus its PG* settings: no AIRFLOW_CONN_* (which holds the password), no other secret."""
    from metabackup.sources.postgres import PostgresDestination

    folder = Path(tempfile.mkdtemp(prefix="metabackup-pg-env-"))
    folder.chmod(0o755)
    wrappers, records = folder / "bin", folder / "records"
    wrappers.mkdir()
    records.mkdir()
    wrappers.chmod(0o755)
    records.chmod(0o777)
    real = Path("/usr/lib/postgresql/15/bin")
    for program in ("pg_basebackup", "pg_receivewal", "pg_waldump", "pg_ctl", "pg_verifybackup"):
        script = wrappers / program
        script.write_text(f'#!/bin/sh\nenv > "{records}/{program}.$$"\nexec "{real / program}" "$@"\n')
        script.chmod(0o755)
    monkeypatch.setenv("AIRFLOW_VAR_SECRET_TOKEN", "s3cr3t-variable")
    monkeypatch.setenv("SOME_API_KEY", "s3cr3t-key")
    path = tmp_path / "pgt.yaml"
    make_spec(tmp_path)
    spec_dict = yaml.safe_load(path.read_text())
    spec_dict["sources"]["DBService"]["bin_dir"] = str(wrappers)
    path.write_text(yaml.safe_dump(spec_dict))
    spec = load_spec(path)
    try:
        run_steps(spec, 0)
        write(cluster, "INSERT INTO t VALUES (11000, 'env')")
        inc = run_steps(spec, 1)["stem"]
        restore_source(spec, "DBService", PostgresDestination(data_dir=str(folder / "data"), bin_dir=str(wrappers)), inc)
        seen = {}
        for record in records.iterdir():
            seen.setdefault(record.name.split(".")[0], []).append(record.read_text())
        assert set(seen) == {"pg_basebackup", "pg_receivewal", "pg_waldump", "pg_ctl", "pg_verifybackup"}
        for program, envs in seen.items():
            for text in envs:
                names = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line}
                assert not any(n.startswith(("AIRFLOW_", "SOME_API")) for n in names), (program, names)
                assert cluster.backup_password not in text and "s3cr3t" not in text, program
        assert all("PGPASSFILE=" in text for program in ("pg_basebackup", "pg_receivewal") for text in seen[program])
    finally:
        pg.stop_data_dir(folder / "data", "immediate")
        shutil.rmtree(folder, ignore_errors=True)


def _pg_set(stem: str, type_: str, parent: str | None, root: str, position: dict) -> Manifest:
    from metabackup.manifest import ArchiveInfo

    stamp = "2026-11-24T03:00:00+00:00"
    return Manifest(set=stem, task="pgt", task_dir="pgt_20261124000000", source="DBService", kind="postgres", type=type_,
                    parent=parent, chain_root=root, cluster_version="3.1.0", executed_at=f"2026-11-24T0{stem[-1]}:00:00+00:00",
                    started_at=stamp, finished_at=stamp, archive=ArchiveInfo(f"{stem}.tar.gz", 1, "0" * 64), content={},
                    position={"timeline": 1, "system_identifier": "7", "server_version": 150000, **position}, reason="")


def test_coverage_has_no_hole_while_the_next_full_was_taken():
    """Times only (no server): a moment during the second full's base backup is reached by the
    first chain plus the bridge when a bridge commit follows it, else by the second chain."""
    from metabackup.catalog import Catalog
    from metabackup.restore import pitr_bridge, set_for_point_in_time

    a, a1, b, b1 = "s_1", "s_2", "s_3", "s_4"
    catalog = Catalog.of([
        _pg_set(a, "full", None, a, {"start_lsn": "0/2000028", "end_lsn": "0/2000100", "consistent_at": "2026-11-28T10:00:00+00:00"}),
        _pg_set(a1, "incremental", a, a, {"start_lsn": "0/2000100", "end_lsn": "0/3000000", "wal_end_time": "2026-11-28T11:00:00+00:00",
                                          "last_commit_time": "2026-11-28T10:59:00+00:00", "last_record_lsn": "0/2FFFF00"}),
        _pg_set(b, "full", None, b, {"start_lsn": "0/5000028", "end_lsn": "0/5000100", "consistent_at": "2026-11-28T12:10:00+00:00",
                                     "bridge": {"from_set": a1, "start_lsn": "0/3000000", "end_lsn": "0/5000100",
                                                "covered_until": "2026-11-28T12:00:00+00:00",
                                                "last_commit_time": "2026-11-28T12:05:00+00:00", "segments": []}}),
        _pg_set(b1, "incremental", b, b, {"start_lsn": "0/5000100", "end_lsn": "0/6000000", "wal_end_time": "2026-11-28T13:00:00+00:00",
                                          "last_commit_time": None, "last_record_lsn": "0/5FFFF00"}),
    ])
    coverage = catalog.pitr_coverage()
    assert coverage["gaps"] == []
    assert coverage["chains"][0]["end"] == "2026-11-28T12:05:00+00:00" and coverage["chains"][1]["start"] == "2026-11-28T12:05:00+00:00"
    at = pendulum.parse
    assert set_for_point_in_time(catalog, at("2026-11-28T10:30:00Z")) == a1
    assert set_for_point_in_time(catalog, at("2026-11-28T11:30:00Z")) == a1  # after a1: through b's bridge
    assert pitr_bridge(catalog, catalog.chain(a1), at("2026-11-28T11:30:00Z")).set == b
    assert set_for_point_in_time(catalog, at("2026-11-28T12:03:00Z")) == a1  # during b's base backup, a bridge commit follows
    assert set_for_point_in_time(catalog, at("2026-11-28T12:07:00Z")) == b1  # during it, no bridge commit follows
    assert pitr_bridge(catalog, catalog.chain(b1), at("2026-11-28T12:07:00Z")) is None
    assert pitr_bridge(catalog, catalog.chain(a1), at("2026-11-28T10:30:00Z")) is None
    with pytest.raises(RestoreError, match="before the oldest kept full s_1"):
        set_for_point_in_time(catalog, at("2026-11-28T09:00:00Z"))
    with pytest.raises(RestoreError, match="no backup set reaches .* yet; the newest, s_4, reaches 2026-11-28T13:00:00"):
        set_for_point_in_time(catalog, at("2026-11-28T14:00:00Z"))
