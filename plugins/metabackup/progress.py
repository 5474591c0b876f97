"""Progress lines for long steps: what is done, of how much, how fast, and when it will end.

    meter = Progress(log, "OMS: archive", unit="bytes", total=expected)
    for block in ...:
        meter.add(len(block))          # logs at most every ``every`` seconds
    meter.done()                        # one closing line with the totals and the mean rate

A line reads ``OMS: archive: 1.2 GiB of 3.0 GiB (40 %), 210.5 MiB/s, ETA 9 s`` (entries are counted
as ``12000 of 100000 entries``).  Nothing is logged for a step that ends before the first interval,
except the closing line when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

DEFAULT_EVERY = 10.0


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    def __init__(self, log: logging.Logger, what: str, unit: str = "bytes", total: int | None = None,
                 every: float = DEFAULT_EVERY, clock=time.monotonic):
        self.log, self.what, self.unit, self.total, self.every, self._clock = log, what, unit, total, every, clock
        self.count = 0
        self._started = self._last = clock()

    def _amount(self, n: float) -> str:
        return _bytes(n) if self.unit == "bytes" else f"{n:.0f} {self.unit}"

    def _rate(self, n: float, seconds: float) -> str:
        per = n / seconds if seconds > 0 else 0.0
        return f"{_bytes(per)}/s" if self.unit == "bytes" else f"{per:.0f} {self.unit}/s"

    def line(self) -> str:
        elapsed = self._clock() - self._started
        text = f"{self.what}: {self._amount(self.count)}"
        if self.total:
            text += f" of {self._amount(self.total)} ({100 * self.count / self.total:.0f} %)"
        text += f", {self._rate(self.count, elapsed)}"
        if self.total and self.count and elapsed > 0 and self.count < self.total:
            text += f", ETA {(self.total - self.count) * elapsed / self.count:.0f} s"
        return text

    def add(self, n: int) -> None:
        self.count += n
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            line = self.line()
            self.log.info("%s", line)
            _report(line)

    def done(self, always: bool = True) -> None:
        elapsed = self._clock() - self._started
        if always or elapsed >= self.every:
            line = (f"{self.what}: done, {self._amount(self.count)} in {elapsed:.1f} s "
                    f"({self._rate(self.count, elapsed)})")
            self.log.info("%s", line)
            _report(line)


# Where else a progress line goes (besides the log): the Airflow operators register a reporter that
# pushes it as the running task's ``progress`` XCom, which the Backups page shows.
_reporters: list[Callable[[str], None]] = []


@contextlib.contextmanager
def reporting_to(reporter: Callable[[str], None]):
    """Within the block, also hand every progress line to ``reporter`` (whose failures are logged
    and otherwise ignored: progress is a hint, never a reason for a step to fail)."""
    _reporters.append(reporter)
    try:
        yield
    finally:
        _reporters.remove(reporter)


def _report(line: str) -> None:
    for reporter in list(_reporters):
        try:
            reporter(line)
        except Exception as exc:  # noqa: BLE001 - see reporting_to
            logging.getLogger(__name__).warning("could not report progress: %s", exc)
