"""One lease per task and source: whoever changes or reads a source's chain holds it.

A backup run holds it from ``decide`` to ``retention`` (then ``record`` lets go of anything its
run still holds, whatever happened), a restore from ``resolve`` to ``report``, a verification for
each of its steps, the CLI for its command.  The steps of one holder run as separate Airflow tasks,
possibly retried, so the lease is not a process lock: it is a small JSON file naming its holder,

    <staging_dir>/<task dir>/.lock-<source>.json

read and written under an ``flock`` on ``.lock-<source>.flock`` beside it.  Taking it is
re-entrant for the same holder (a retried task, the safety backup inside a restore); anyone else
waits, logging who holds it, and gives up after ``wait`` seconds with a message that says so.  A
lease not renewed for ``stale_after`` seconds (default 12 h; every step renews it) is taken over,
and ``python -m metabackup unlock`` breaks one by hand.  The staging area is on the host (or the
shared storage) every worker of the task uses, see README *Deployment*, so every holder sees it.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pendulum

from metabackup import fsutil
from metabackup.errors import MetabackupError

log = logging.getLogger(__name__)

DEFAULT_WAIT = float(os.environ.get("METABACKUP_LOCK_WAIT_SECONDS", 1800))
DEFAULT_STALE_AFTER = float(os.environ.get("METABACKUP_LOCK_STALE_SECONDS", 12 * 3600))
POLL = 2.0
REPORT_EVERY = 30.0


class LockBusy(MetabackupError):
    """Another holder kept the source's lease for longer than this one would wait."""


#: the wait of every :meth:`SourceLock.acquire` without its own ``wait`` in this context
_wait_override: contextvars.ContextVar[float | None] = contextvars.ContextVar("metabackup_lease_wait", default=None)


@contextlib.contextmanager
def waiting_at_most(seconds: float) -> Iterator[None]:
    """Within the block, a busy lease is waited for at most ``seconds`` (then :class:`LockBusy`):
    an Airflow task that holds a pool slot gives the slot up and tries again later instead of
    waiting for a holder that may need that very slot to finish."""
    token = _wait_override.set(seconds)
    try:
        yield
    finally:
        _wait_override.reset(token)


@dataclass(frozen=True)
class SourceLock:
    staging_dir: str
    task_dir: str
    source: str

    @property
    def folder(self) -> Path:
        return Path(self.staging_dir) / self.task_dir

    @property
    def lease_path(self) -> Path:
        return self.folder / f".lock-{self.source}.json"

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        fsutil.ensure_private_dir(self.folder)
        fd = os.open(self.folder / f".lock-{self.source}.flock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.lease_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("lease %s is unreadable (%s); treating it as free", self.lease_path, exc)
            return None
        return data if isinstance(data, dict) and isinstance(data.get("holder"), str) else None

    def holder(self) -> dict[str, Any] | None:
        with self._guard():
            return self._read()

    def _stale(self, lease: dict[str, Any], stale_after: float) -> bool:
        return time.time() - float(lease.get("renewed", 0)) > stale_after

    def try_acquire(self, holder: str, stale_after: float | None = None) -> dict[str, Any] | None:
        """Take or renew the lease for ``holder``; return the other holder's lease if it is busy."""
        stale_after = DEFAULT_STALE_AFTER if stale_after is None else stale_after
        with self._guard():
            lease = self._read()
            if lease and lease["holder"] != holder and not self._stale(lease, stale_after):
                return lease
            if lease and lease["holder"] != holder:
                log.warning("taking over the lease of %s on %s: not renewed since %s (stale after %ds)",
                            lease["holder"], self.source, lease.get("renewed_at"), stale_after)
            now = pendulum.now("UTC")
            fresh = {"holder": holder, "host": socket.gethostname(), "pid": os.getpid(),
                     "since": lease["since"] if lease and lease["holder"] == holder else now.to_iso8601_string(),
                     "renewed": time.time(), "renewed_at": now.to_iso8601_string()}
            fsutil.write_private(self.lease_path, json.dumps(fresh))
            return None

    def acquire(self, holder: str, wait: float | None = None, stale_after: float | None = None) -> None:
        """Take the lease (re-entrant for ``holder``), waiting up to ``wait`` seconds for another."""
        if wait is None:
            override = _wait_override.get()
            wait = DEFAULT_WAIT if override is None else override
        deadline, reported = time.monotonic() + wait, 0.0
        while True:
            busy = self.try_acquire(holder, stale_after)
            if busy is None:
                return
            if time.monotonic() >= deadline:
                raise LockBusy(f"{self.source} of {self.task_dir} is locked by {busy['holder']} (host {busy.get('host')}, "
                               f"since {busy.get('since')}); waited {wait:.0f}s. It is released when that run ends; "
                               f"if it died, `python -m metabackup unlock --spec <spec> --source {self.source}` frees it")
            if time.monotonic() - reported >= REPORT_EVERY:
                log.info("waiting for %s of %s: locked by %s (host %s, since %s)", self.source, self.task_dir,
                         busy["holder"], busy.get("host"), busy.get("since"))
                reported = time.monotonic()
            time.sleep(POLL)

    def release(self, holder: str | None = None) -> bool:
        """Let go of the lease if ``holder`` holds it (any holder when None); True if one was removed."""
        with self._guard():
            lease = self._read()
            if lease is None or (holder is not None and lease["holder"] != holder):
                return False
            self.lease_path.unlink(missing_ok=True)
            return True

    @contextlib.contextmanager
    def held(self, holder: str, wait: float | None = None) -> Iterator[None]:
        """Hold the lease for a block, releasing it afterwards unless it was already held by ``holder``."""
        before = self.holder()
        self.acquire(holder, wait)
        try:
            yield
        finally:
            if not (before and before.get("holder") == holder):
                self.release(holder)


def lock_for(spec, source: str) -> SourceLock:
    return SourceLock(spec.staging_dir, spec.task_dir, source)
