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

import logging
import time

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
            self.log.info("%s", self.line())

    def done(self, always: bool = True) -> None:
        elapsed = self._clock() - self._started
        if always or elapsed >= self.every:
            self.log.info("%s: done, %s in %.1f s (%s)", self.what, self._amount(self.count), elapsed,
                          self._rate(self.count, elapsed))
