"""Recovery point status: how old each source's newest restorable set is, against its task's period.

A periodic task that runs every *P* should always hold a restorable set younger than *P* plus the
time a run takes.  So a source is

* ``ok`` while its newest restorable set is at most ``LATE_FACTOR`` x *P* old,
* ``late`` past that (a scheduled run is overdue or failed),
* ``stale`` past ``STALE_FACTOR`` x *P* (at least one whole period is missing),
* ``pending`` when it holds no restorable set and the task's first run is not that overdue yet
  (before ``start`` + ``STALE_FACTOR`` x *P*; after it, a source with no set is ``stale``),
* ``manual`` for a manual task: it has no period, so no recovery point objective.

The thresholds are shown with the status (``late_after``/``stale_after``, in seconds).
"""

from __future__ import annotations

from typing import Any

import pendulum

LATE_FACTOR = 1.25
STALE_FACTOR = 2.0
STATES = ("ok", "late", "stale", "pending", "manual")


def thresholds(spec) -> tuple[float, float] | None:
    """``(late_after, stale_after)`` in seconds for a periodic task, None for a manual one."""
    if spec.schedule is None:
        return None
    period = spec.schedule.interval.total_seconds()
    return period * LATE_FACTOR, period * STALE_FACTOR


def status(spec, newest_executed_at: str | None, now: pendulum.DateTime | None = None) -> dict[str, Any]:
    """The recovery point status of one source whose newest restorable set was taken at
    ``newest_executed_at`` (ISO-8601, or None when it has none)."""
    now = now or pendulum.now("UTC")
    limits = thresholds(spec)
    age = None if newest_executed_at is None else max(0.0, (now - pendulum.parse(newest_executed_at)).total_seconds())
    row: dict[str, Any] = {"newest": newest_executed_at, "age_seconds": age,
                           "late_after_seconds": limits[0] if limits else None,
                           "stale_after_seconds": limits[1] if limits else None}
    if limits is None:
        return {**row, "state": "manual", "text": "manual task: no period, no recovery point objective"}
    late, stale = limits
    if age is None:
        due = spec.schedule.start.add(seconds=stale)
        if now < due:
            return {**row, "state": "pending", "text": f"no restorable set yet; stale after {due.in_timezone('UTC').to_iso8601_string()}"}
        return {**row, "state": "stale", "text": f"no restorable set, and the first run was due by {spec.schedule.start.to_iso8601_string()}"}
    state = "ok" if age <= late else "late" if age <= stale else "stale"
    return {**row, "state": state,
            "text": f"newest restorable set {duration_text(age)} old (late after {duration_text(late)}, "
                    f"stale after {duration_text(stale)})"}


def unreadable(spec, reason: str, now: pendulum.DateTime | None = None) -> dict[str, Any]:
    """The status of a source whose target cannot be read: ``stale`` (no restorable set can be
    shown to exist; ``manual`` for a manual task), with the reason."""
    return {**status(spec, None, now), "state": "stale" if spec.schedule else "manual",
            "text": f"cannot read its target: {reason}"}


def newest_restorable(catalog) -> str | None:
    """``executed_at`` of the newest set whose whole chain is present, or None."""
    latest = catalog.latest_restorable()
    return latest.executed_at if latest is not None else None


def task_status(spec, now: pendulum.DateTime | None = None) -> dict[str, dict[str, Any]]:
    """Every source's status, reading each primary target's catalog.  A target that cannot be read
    is ``stale`` with the reason: no restorable set can be shown to exist."""
    from metabackup.catalog import Catalog

    now = now or pendulum.now("UTC")
    result = {}
    for source in spec.sources:
        try:
            catalog = Catalog.read(source.target.open(), spec.name, spec.task_dir, source.name, spec.timezone)
        except Exception as exc:  # one unreachable target must not hide the others
            result[source.name] = unreadable(spec, f"{type(exc).__name__}: {exc}", now)
            continue
        result[source.name] = status(spec, newest_restorable(catalog), now)
    return result


def duration_text(seconds: float) -> str:
    """``3 d 4 h``, ``5 h 12 min``, ``7 min``, ``40 s``: the two largest units."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
