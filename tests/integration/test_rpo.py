"""Recovery point status from real sets: ok, late, stale, pending and manual, with the thresholds."""

from __future__ import annotations

import pendulum
import pytest
from conftest import files_spec, write_spec

from metabackup import rpo
from metabackup.pipeline import backup

NOW = pendulum.now("UTC").replace(microsecond=0)


def hourly(name, tmp_path, start):
    (tmp_path / "oms").mkdir(exist_ok=True)
    (tmp_path / "oms" / "a.conf").write_text("x\n")
    return write_spec(tmp_path, files_spec(
        name, tmp_path, {"OMS": {"kind": "files", "paths": [str(tmp_path / "oms")],
                                 "target": {"type": "LocalDir", "max_backups": 5}}},
        type="periodic", schedule={"start": start.to_iso8601_string(), "period": "hour"}))


@pytest.mark.parametrize("age_minutes, state", [(30, "ok"), (74, "ok"), (76, "late"), (119, "late"), (121, "stale")])
def test_the_newest_restorable_set_s_age_against_the_period(tmp_path, age_minutes, state):
    spec = hourly("rpo", tmp_path, NOW.subtract(days=2))
    backup(spec, executed=NOW.subtract(minutes=age_minutes + 300))  # an older set does not count
    backup(spec, executed=NOW.subtract(minutes=age_minutes))
    (oms,) = rpo.task_status(spec, NOW).values()
    assert oms["state"] == state, oms
    assert (oms["late_after_seconds"], oms["stale_after_seconds"]) == (4500, 7200)
    assert oms["age_seconds"] == age_minutes * 60
    assert "late after 1 h 15 min, stale after 2 h" in oms["text"]


def test_no_set_is_pending_until_the_first_run_is_overdue_then_stale(tmp_path):
    assert rpo.task_status(hourly("fresh", tmp_path, NOW.subtract(minutes=10)), NOW)["OMS"]["state"] == "pending"
    old = rpo.task_status(hourly("old", tmp_path, NOW.subtract(hours=3)), NOW)["OMS"]
    assert old["state"] == "stale" and old["newest"] is None, old


def test_a_broken_chain_is_not_a_recovery_point(tmp_path):
    spec = hourly("broken", tmp_path, NOW.subtract(days=2))
    backup(spec, executed=NOW.subtract(hours=5))
    backup(spec, executed=NOW.subtract(minutes=10))  # an incremental on the full
    full = sorted((tmp_path / "data" / "LocalBackup").rglob("*OMS*.manifest.json"))[0]
    full.unlink()
    assert rpo.task_status(spec, NOW)["OMS"]["state"] == "stale"


def test_a_manual_task_has_no_objective(tmp_path):
    (tmp_path / "oms").mkdir()
    spec = write_spec(tmp_path, files_spec("man", tmp_path, {"OMS": {"kind": "files", "paths": [str(tmp_path / "oms")],
                                                                     "target": {"type": "LocalDir"}}}))
    assert rpo.task_status(spec, NOW)["OMS"]["state"] == "manual"


def test_an_unreadable_target_is_stale_with_the_reason(tmp_path, monkeypatch):
    spec = hourly("gone", tmp_path, NOW.subtract(days=2))
    backup(spec, executed=NOW.subtract(minutes=5))
    from metabackup.catalog import Catalog

    def fail(*args, **kwargs):
        raise OSError("target offline")

    monkeypatch.setattr(Catalog, "read", classmethod(lambda cls, *a, **k: fail()))
    status = rpo.task_status(spec, NOW)["OMS"]
    assert status["state"] == "stale" and "target offline" in status["text"]
