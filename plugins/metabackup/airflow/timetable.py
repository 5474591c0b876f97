"""The console's periodic schedule: first run at the start time, then every N hours or days.

Hours are absolute (every 6 hours is 6 hours, whatever the clock does); days follow the wall
clock of the spec's timezone, so a 01:00 daily backup stays at 01:00 across DST changes.
Without catch-up (always, for backups), a scheduler that was down runs only the most recent
missed slot, never a storm of old ones.

The DAG's start_date is the task's creation time (so a manual "Start" or "Back up now" works
at any time); this timetable alone keeps scheduled runs from starting before the start time.
Registered by the ``metabackup`` plugin (plugins/metabackup_plugin.py) so the scheduler can
deserialize it.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable, TimeRestriction
from pendulum import DateTime


class PeriodicFromStartTimetable(Timetable):
    periodic = True
    can_be_scheduled = True

    def __init__(self, start: DateTime, period: str, every: int, timezone: str):
        if period not in ("hour", "day") or every < 1:
            raise ValueError(f"bad period {period!r} / every {every!r}")
        self.anchor = pendulum.instance(start).in_timezone(timezone)
        self.period, self.every, self.timezone = period, every, timezone

    # -- slots -----------------------------------------------------------------------------
    def slot(self, k: int) -> DateTime:
        if self.period == "hour":
            return self.anchor.add(hours=k * self.every).in_timezone("UTC")
        return self.anchor.add(days=k * self.every).in_timezone("UTC")

    def _approx_seconds(self) -> int:
        return self.every * (3600 if self.period == "hour" else 86400)

    def last_slot_at_or_before(self, moment: DateTime) -> DateTime | None:
        if moment < self.anchor:
            return None
        k = int((moment - self.anchor).total_seconds() // self._approx_seconds())
        while k > 0 and self.slot(k) > moment:
            k -= 1
        while self.slot(k + 1) <= moment:
            k += 1
        return self.slot(k)

    def first_slot_at_or_after(self, moment: DateTime) -> DateTime:
        if moment <= self.anchor:
            return self.slot(0)
        prev = self.last_slot_at_or_before(moment)
        return prev if prev == moment else self.next_slot_after(prev)

    def next_slot_after(self, moment: DateTime) -> DateTime:
        prev = self.last_slot_at_or_before(moment)
        if prev is None:
            return self.slot(0)
        k = round((prev - self.anchor).total_seconds() / self._approx_seconds())
        while self.slot(k) <= moment:
            k += 1
        return self.slot(k)

    # -- Timetable protocol ----------------------------------------------------------------
    @property
    def summary(self) -> str:
        unit = "hour" if self.period == "hour" else "day"
        return f"every {self.every} {unit}{'s' if self.every > 1 else ''} from {self.anchor.to_iso8601_string()}"

    @property
    def description(self) -> str:
        return f"Runs at {self.anchor.to_iso8601_string()} and then {self.summary.split(' from ')[0]} ({self.timezone})"

    def serialize(self) -> dict[str, Any]:
        return {"start": self.anchor.to_iso8601_string(), "period": self.period, "every": self.every,
                "timezone": self.timezone}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> PeriodicFromStartTimetable:
        return cls(pendulum.parse(data["start"]), data["period"], data["every"], data["timezone"])

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(run_after)

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            candidate = self.next_slot_after(pendulum.instance(last_automated_data_interval.end))
        else:
            candidate = self.slot(0)
        if restriction.earliest is not None:
            candidate = max(candidate, self.first_slot_at_or_after(pendulum.instance(restriction.earliest)))
        if not restriction.catchup:
            latest_due = self.last_slot_at_or_before(pendulum.now("UTC"))
            if latest_due is not None and latest_due > candidate:
                candidate = latest_due
        if restriction.latest is not None and candidate > restriction.latest:
            return None
        return DagRunInfo.exact(candidate)
