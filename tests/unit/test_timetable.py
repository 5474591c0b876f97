"""The periodic schedule: first run at the start time, then every period; no catch-up storm."""

from __future__ import annotations

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from metabackup.airflow.timetable import PeriodicFromStartTimetable

NO_CATCHUP = TimeRestriction(earliest=pendulum.datetime(2026, 1, 1, tz="UTC"), latest=None, catchup=False)


def test_daily_runs_keep_their_wall_clock_hour_across_dst():
    tt = PeriodicFromStartTimetable(pendulum.datetime(2026, 3, 7, 1, tz="America/New_York"), "day", 1, "America/New_York")
    local = [tt.slot(k).in_timezone("America/New_York") for k in range(3)]
    assert [t.hour for t in local] == [1, 1, 1]
    # DST starts on 8 March 2026 at 02:00: the day from the 8th to the 9th is 23 hours long
    assert (tt.slot(1) - tt.slot(0)).in_hours() == 24 and (tt.slot(2) - tt.slot(1)).in_hours() == 23


def test_hourly_runs_count_absolute_hours():
    start = pendulum.datetime(2026, 11, 25, 2, tz="Asia/Shanghai")
    tt = PeriodicFromStartTimetable(start, "hour", 6, "Asia/Shanghai")
    assert [tt.slot(k) for k in range(3)] == [start, start.add(hours=6), start.add(hours=12)]
    assert tt.next_slot_after(start.add(hours=1)) == start.add(hours=6)
    assert tt.next_slot_after(start.add(hours=6)) == start.add(hours=12)
    assert tt.last_slot_at_or_before(start.subtract(seconds=1)) is None


def test_first_run_is_the_start_time_even_when_the_task_was_created_long_before():
    start = pendulum.now("UTC").add(days=3).replace(microsecond=0)
    tt = PeriodicFromStartTimetable(start, "day", 2, "UTC")
    info = tt.next_dagrun_info(last_automated_data_interval=None, restriction=NO_CATCHUP)
    assert info.run_after == start


def test_no_catch_up_storm_after_downtime():
    start = pendulum.now("UTC").subtract(days=10).replace(microsecond=0)
    tt = PeriodicFromStartTimetable(start, "hour", 1, "UTC")
    last_run = DataInterval.exact(start.add(hours=2))  # then the scheduler was down for days
    info = tt.next_dagrun_info(last_automated_data_interval=last_run, restriction=NO_CATCHUP)
    now = pendulum.now("UTC")
    assert now.subtract(hours=1) < info.run_after <= now, "only the most recent missed slot runs"
    following = tt.next_dagrun_info(last_automated_data_interval=DataInterval.exact(info.run_after), restriction=NO_CATCHUP)
    assert following.run_after == info.run_after.add(hours=1)


def test_serialization_round_trip_and_bad_arguments():
    tt = PeriodicFromStartTimetable(pendulum.datetime(2026, 11, 25, 1, tz="UTC"), "day", 3, "Europe/Berlin")
    again = PeriodicFromStartTimetable.deserialize(tt.serialize())
    assert [again.slot(k) for k in range(4)] == [tt.slot(k) for k in range(4)]
    assert tt.summary == "every 3 days from 2026-11-25T02:00:00+01:00"
    with pytest.raises(ValueError):
        PeriodicFromStartTimetable(pendulum.now("UTC"), "week", 1, "UTC")
