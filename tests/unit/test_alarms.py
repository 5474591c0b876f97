"""The alarm state transitions (metabackup.alarms): raised once, not repeated while active,
cleared once, each (task, source) on its own."""

from __future__ import annotations

import json

from metabackup import alarms
from metabackup.alarms import CLEARED, RAISED, after_backup_run, after_rpo_watch, source_outcome

RUN = {"dag_id": "backup_nightly", "run_id": "scheduled__2026-11-29T01:00:00+00:00"}
FAILED = {"event": None, "problem": None, "failed_step": "OMS.upload", "error": "target full: 0 bytes free",
          "host": "worker-3.example.com", "log_url": "http://airflow/dags/backup_nightly/runs/r/tasks/OMS.upload"}
COMMITTED = {"event": {"set": "3.1.0_OMS_20261129020000", "type": "full"}, "problem": None,
             "failed_step": None, "error": None, "host": None}


def failed(**changes) -> dict:
    return source_outcome({**FAILED, **changes})


def committed() -> dict:
    return source_outcome(COMMITTED)


def test_a_scheduled_run_that_commits_nothing_raises_the_alarm_once_with_its_fields():
    state, notes = after_backup_run({}, "nightly", True, {"OMS": failed()}, RUN, now="2026-11-29T01:05:00Z")
    [note] = notes
    assert note == {"alarm": "ALM-12034", "title": "Periodic backup failure", "status": RAISED, "task": "nightly",
                    "source": "OMS", **RUN, "host": "worker-3.example.com", "step": "OMS.upload",
                    "error": "target full: 0 bytes free", "log_url": FAILED["log_url"],
                    "raised_at": "2026-11-29T01:05:00Z"}
    assert set(state) == {"OMS"} and state["OMS"]["alarm"] == "ALM-12034"
    json.dumps(state)  # the state is stored as a JSON Variable


def test_no_repeat_while_active_neither_for_a_retry_nor_for_the_next_failed_run():
    state, _ = after_backup_run({}, "nightly", True, {"OMS": failed()}, RUN)
    again, notes = after_backup_run(state, "nightly", True, {"OMS": failed()}, RUN)  # record retried
    assert notes == [] and again == state
    later, notes = after_backup_run(again, "nightly", True, {"OMS": failed(failed_step="OMS.check")},
                                    {**RUN, "run_id": "scheduled__2026-11-29T02:00:00+00:00"})
    assert notes == [] and later == state


def test_a_manual_run_that_fails_raises_nothing():
    state, notes = after_backup_run({}, "nightly", False, {"OMS": failed()}, RUN)
    assert (state, notes) == ({}, [])


def test_a_later_run_of_any_type_that_commits_clears_once_and_forgets():
    state, _ = after_backup_run({}, "nightly", True, {"OMS": failed()}, RUN, now="t1")
    for scheduled in (True, False):
        cleared, notes = after_backup_run(state, "nightly", scheduled, {"OMS": committed()},
                                          {**RUN, "run_id": "manual__x"}, now="t2")
        [note] = notes
        assert note["status"] == CLEARED and note["alarm"] == "ALM-12034" and note["source"] == "OMS"
        assert note["set"] == "3.1.0_OMS_20261129020000" and note["raised_at"] == "t1"
        assert note["raised_by_run"] == RUN["run_id"] and note["run_id"] == "manual__x"
        assert cleared == {}
        assert after_backup_run(cleared, "nightly", scheduled, {"OMS": committed()}, RUN) == ({}, [])
    # and a new failure after the clear is a new alarm
    _, notes = after_backup_run({}, "nightly", True, {"OMS": failed()}, RUN)
    assert [n["status"] for n in notes] == [RAISED]


def test_a_success_without_an_active_alarm_sends_nothing():
    assert after_backup_run({}, "nightly", True, {"OMS": committed()}, RUN) == ({}, [])


def test_sources_are_independent():
    state, notes = after_backup_run({}, "nightly", True, {"OMS": failed(), "LdapServer": committed()}, RUN)
    assert [n["source"] for n in notes] == ["OMS"] and set(state) == {"OMS"}
    state, notes = after_backup_run(state, "nightly", True, {"OMS": failed(), "LdapServer": failed()}, RUN)
    assert [(n["source"], n["status"]) for n in notes] == [("LdapServer", RAISED)]
    # a run of only LdapServer (the sources param) leaves OMS's alarm alone
    state, notes = after_backup_run(state, "nightly", False, {"LdapServer": committed()}, RUN)
    assert [(n["source"], n["status"]) for n in notes] == [("LdapServer", CLEARED)] and set(state) == {"OMS"}


def test_tasks_have_their_own_variables():
    assert alarms.backup_variable("nightly") != alarms.backup_variable("weekly")
    assert alarms.backup_variable("nightly") != alarms.RPO_VARIABLE


def test_a_finish_that_did_not_report_is_a_failure_without_a_step():
    outcome = source_outcome(None)
    assert outcome["committed"] is False and outcome["step"] is None
    assert "did not report" in outcome["error"]
    _, [note] = after_backup_run({}, "nightly", True, {"OMS": outcome}, RUN)
    assert note["status"] == RAISED and "did not report" in note["error"]


def test_the_catalog_problem_is_the_error_when_no_step_failed_and_errors_are_clipped():
    assert source_outcome({"event": None, "problem": "OMS: cannot read the catalog"})["error"] == \
        "OMS: cannot read the catalog"
    long = source_outcome({**FAILED, "error": "x" * 5000})["error"]
    assert len(long) == alarms.ERROR_LIMIT and long.endswith("...")


def test_a_garbled_state_counts_as_empty():
    for garbage in (None, "not json", [1, 2], 42):
        state, notes = after_backup_run(garbage, "nightly", True, {"OMS": failed()}, RUN)
        assert [n["status"] for n in notes] == [RAISED] and set(state) == {"OMS"}
        state, notes = after_rpo_watch(garbage, {"nightly": {"OMS": rpo("stale")}})
        assert [n["status"] for n in notes] == [RAISED]


# ---------------------------------------------------------------------------------------------
# the RPO alarm
# ---------------------------------------------------------------------------------------------
def rpo(state: str) -> dict:
    return {"state": state, "text": f"newest restorable set ... ({state})", "newest": "2026-11-28T22:00:00Z",
            "age_seconds": 10800.0, "late_after_seconds": 4500.0, "stale_after_seconds": 7200.0}


def test_turning_stale_raises_once_with_the_status():
    state, [note] = after_rpo_watch({}, {"nightly": {"OMS": rpo("stale")}}, now="t1")
    assert note == {"alarm": "METABACKUP-RPO-STALE", "title": "Recovery point objective missed", "status": RAISED,
                    "task": "nightly", "source": "OMS", "state": "stale", "text": rpo("stale")["text"],
                    "newest": "2026-11-28T22:00:00Z", "age_seconds": 10800.0, "stale_after_seconds": 7200.0,
                    "raised_at": "t1"}
    again, notes = after_rpo_watch(state, {"nightly": {"OMS": rpo("stale")}}, now="t2")
    assert notes == [] and again == state
    json.dumps(state)


def test_stale_to_ok_clears_once():
    state, _ = after_rpo_watch({}, {"nightly": {"OMS": rpo("stale")}}, now="t1")
    cleared, [note] = after_rpo_watch(state, {"nightly": {"OMS": rpo("ok")}}, now="t2")
    assert note["status"] == CLEARED and note["state"] == "ok" and note["raised_at"] == "t1"
    assert note["cleared_at"] == "t2" and cleared == {}
    assert after_rpo_watch(cleared, {"nightly": {"OMS": rpo("ok")}}) == ({}, [])


def test_leaving_stale_for_any_other_state_clears():
    for other in ("late", "pending", "manual"):
        state, _ = after_rpo_watch({}, {"nightly": {"OMS": rpo("stale")}})
        _, [note] = after_rpo_watch(state, {"nightly": {"OMS": rpo(other)}})
        assert note["status"] == CLEARED and note["state"] == other


def test_never_stale_never_alarms():
    state: dict = {}
    for current in ("pending", "ok", "late", "ok", "manual", "late"):
        state, notes = after_rpo_watch(state, {"nightly": {"OMS": rpo(current)}})
        assert notes == [] and state == {}


def test_rpo_tasks_and_sources_are_independent_and_unobserved_ones_keep_their_state():
    state, notes = after_rpo_watch({}, {"nightly": {"OMS": rpo("stale"), "DBService": rpo("ok")},
                                        "weekly": {"OMS": rpo("stale")}})
    assert sorted((n["task"], n["source"]) for n in notes) == [("nightly", "OMS"), ("weekly", "OMS")]
    # weekly's spec failed to load this time: not observed, its alarm stays active
    state, notes = after_rpo_watch(state, {"nightly": {"OMS": rpo("ok"), "DBService": rpo("stale")}})
    assert sorted((n["source"], n["status"]) for n in notes) == [("DBService", RAISED), ("OMS", CLEARED)]
    assert set(state) == {"nightly", "weekly"} and set(state["nightly"]) == {"DBService"}
    state, notes = after_rpo_watch(state, {"weekly": {"OMS": rpo("stale")}})
    assert notes == []
