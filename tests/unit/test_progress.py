"""Progress lines: at most one per interval, with amount, total, percentage, rate and ETA."""

from __future__ import annotations

import logging

from metabackup.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_most_every_interval_with_rate_and_eta(caplog):
    clock = Clock()
    log = logging.getLogger("metabackup.test.progress")
    meter = Progress(log, "OMS: archive", total=100 << 20, every=10, clock=clock)
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(30):  # 30 MiB over 15 s: one line at 10 s
            clock.now += 0.5
            meter.add(1 << 20)
        clock.now += 0.5
        meter.done()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "OMS: archive: 20.0 MiB of 100.0 MiB (20 %), 2.0 MiB/s, ETA 40 s"
    assert lines[1] == "OMS: archive: done, 30.0 MiB in 15.5 s (1.9 MiB/s)"
    assert len(lines) == 2


def test_entries_without_a_total(caplog):
    clock = Clock()
    log = logging.getLogger("metabackup.test.progress")
    meter = Progress(log, "LdapServer: export", unit="entries", every=5, clock=clock)
    with caplog.at_level(logging.INFO, logger=log.name):
        clock.now = 6
        meter.add(1200)
        meter.done(always=False)
    assert [r.getMessage() for r in caplog.records] == ["LdapServer: export: 1200 entries, 200 entries/s",
                                                        "LdapServer: export: done, 1200 entries in 6.0 s (200 entries/s)"]
