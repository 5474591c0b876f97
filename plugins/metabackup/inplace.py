"""In-place restore: put a verified chain back into service over the source's live directories.

The order, after the restore DAG's safety backup of the current state:

1. **preflight** - the kind restores in place, the spec says how to control its service and which
   live directories it replaces, each is a real directory, its owner exists, there is room beside
   it for the restored copy, and the service's status answers (running or stopped);
2. **rebuild** the set beside the live data (``<dir>.restored-<stamp>``, on the same file system;
   the kind gives it to the service's ``owner``) while the service still runs;
3. **stop** the service, **swap** every directory (the live one is kept as
   ``<dir>.pre-restore-<stamp>``; nothing is deleted), **start** it, **validate** the data it now
   serves against the set;
4. **report**, with the downtime (stop to validated start).

If anything fails after the stop, everything is put back: the service is stopped, each restored
directory is moved aside (``<dir>.failed-restore-<stamp>``) and the previous one swapped back, the
service started and checked against what preflight saw, and the run fails naming the step.  If the
rollback fails too, the ``alarm`` callback gets the equivalent of the cluster manager's ALM-12035
("Unknown data status after recovery task failure") with the exact state of every directory.  At
every moment each live path holds either the old or the new data, or (between two renames of one
swap) neither for an instant, as the journal ``<parent>/.metabackup-in-place-<stamp>.json`` records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabackup.errors import RestoreError
from metabackup.fsutil import fsync_dir, write_private
from metabackup.service import Service
from metabackup.sources import RestoreRequest

log = logging.getLogger(__name__)

ALARM_ID = "ALM-12035"
ALARM_TITLE = "Unknown data status after recovery task failure"
ROOM_MARGIN = 64 << 20  # free space kept beyond the restored copy's estimate


@dataclass
class Swap:
    """One live directory and its neighbours during an in-place restore."""

    field: str  # the spec field naming it, for messages
    live: str
    staged: str  # <live>.restored-<stamp>: the rebuilt copy, waiting beside it
    previous: str  # <live>.pre-restore-<stamp>: the data it held before
    failed: str  # <live>.failed-restore-<stamp>: the restored copy, moved aside by a rollback
    existed: bool = True  # the live directory existed before the restore
    state: str = "staged"  # staged -> swapped (-> rolled back)

    def holds(self) -> dict[str, Any]:
        """What each path of this swap holds now (for the report, the journal and the alarm)."""
        def there(path: str) -> bool:
            return os.path.lexists(path)

        if self.state == "swapped":
            live = "the restored set" if there(self.live) else "NOTHING"
        elif self.state == "rolled back":
            live = "the previous data" if there(self.live) else "NOTHING"
        else:
            live = ("the previous data" if there(self.live) else "nothing") if self.existed else (
                "the restored set" if there(self.live) else "nothing")
        return {"live": self.live, "live_holds": live, "state": self.state,
                "previous": self.previous if there(self.previous) else None,
                "restored_waiting": self.staged if there(self.staged) else None,
                "failed_restore": self.failed if there(self.failed) else None}


def _du(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def live_dirs(source: Any) -> list[tuple[str, str]]:
    dirs = source.live_dirs()
    if not dirs:
        raise RestoreError(f"in-place restore of {source.name} ({source.kind}) needs its live directories: set "
                           f"sources.{source.name}.service.data_dirs ({source.plugin.live_dirs_hint})")
    return dirs


def preflight(plan: Any) -> dict[str, Any]:
    """Check that an in-place restore of ``plan`` can start (nothing is changed): raise a
    RestoreError naming the field and the remedy, or return what was found (service state, live
    directories, room)."""
    source, kind = plan.source, plan.source.plugin
    if not kind.in_place:
        raise RestoreError(f"source kind {source.kind} cannot be restored in place; restore {source.name} into a new "
                           "destination")
    if kind.needs_service and source.service is None:
        raise RestoreError(f"in-place restore of {source.name} ({source.kind}) needs sources.{source.name}.service in "
                           "the spec: systemd: <unit> (or stop, start and status argv lists), data_dirs and owner")
    owner = source.service.owner if source.service else None
    if owner is not None:
        try:
            pwd.getpwnam(owner)
        except KeyError:
            raise RestoreError(f"sources.{source.name}.service.owner: {owner!r} is no user on {socket.gethostname()}; "
                               "run the restore on the host that holds the data (the source's queue)") from None
    dirs = live_dirs(source)
    need_by_device: dict[int, list[Any]] = {}
    chain_bytes = sum(m.archive.size for m in plan.reads)
    for fld, path in dirs:
        live = Path(path)
        if live.is_symlink():
            raise RestoreError(f"{fld} {path} is a symbolic link; name the real directory")
        if live.exists() and not live.is_dir():
            raise RestoreError(f"{fld} {path} is not a directory")
        if not live.parent.is_dir():
            raise RestoreError(f"{fld} {path}: its parent {live.parent} does not exist on {socket.gethostname()}; run "
                               "the restore on the host that holds the data (the source's queue)")
        need = max(_du(live) if live.exists() else 0, 3 * chain_bytes)
        device = os.stat(live.parent).st_dev
        entry = need_by_device.setdefault(device, [str(live.parent), 0])
        entry[1] += need
    room = []
    for parent, need in need_by_device.values():
        free = shutil.disk_usage(parent).free
        room.append({"where": parent, "free": free, "need": need + ROOM_MARGIN})
        if free < need + ROOM_MARGIN:
            raise RestoreError(f"not enough room beside the live data in {parent}: {free >> 20} MiB free, the restored "
                               f"copy needs about {(need + ROOM_MARGIN) >> 20} MiB (the size of the live data, or 3x "
                               "the chain's archives, plus 64 MiB); free space there first")
    state = Service(source.service, source.name).state() if source.service else "none"
    identity = kind.live_identity(source) if state == "running" else {}
    found = {"service": state, "live_dirs": [path for _, path in dirs], "room": room, "identity": identity}
    log.info("in-place preflight of %s: service %s, live %s", source.name, state, ", ".join(found["live_dirs"]))
    return found


class _Journal:
    """The restore's state, rewritten (0600, atomically) after every change."""

    def __init__(self, path: Path, head: dict[str, Any]):
        self.path, self.head = path, head

    def write(self, swaps: list[Swap], step: str, **extra: Any) -> None:
        data = {**self.head, "step": step, "directories": [s.holds() for s in swaps], **extra}
        with contextlib.suppress(OSError):
            write_private(self.path, json.dumps(data, indent=2, default=str))


def _move(src: str, dst: str) -> None:
    """Rename (or, across file systems, move) ``src`` to ``dst``, which must not exist."""
    if os.path.lexists(dst):
        raise RestoreError(f"{dst} already exists; move it away and retry")
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV
            raise
        shutil.move(src, dst)
    fsync_dir(Path(dst).parent)


def restore_in_place(plan: Any, stamp: str, alarm: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Restore ``plan``'s verified chain over the source's live directories (see the module's
    docstring); return the report, or raise a RestoreError naming the failed step (after a rollback,
    or after raising the alarm when the rollback failed too)."""
    source, kind = plan.source, plan.source.plugin
    found = preflight(plan)
    dirs = live_dirs(source)
    neighbours = {path: (f"{path}.restored-{stamp}", f"{path}.pre-restore-{stamp}", f"{path}.failed-restore-{stamp}")
                  for _, path in dirs}
    for neighbour in [n for trio in neighbours.values() for n in trio]:
        if os.path.lexists(neighbour):
            raise RestoreError(f"{neighbour} exists (left by an earlier restore at the same second?); move it away "
                               "and retry")
    parent = Path(dirs[0][1]).parent
    journal = _Journal(parent / f".metabackup-in-place-{stamp}.json",
                       {"task": plan.spec.name, "source": source.name, "set": plan.chain[-1].set,
                        "host": socket.gethostname(), "stamp": stamp})
    # ---- rebuild beside the live data, the service still running ----
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=f".metabackup-restore-{stamp}-", dir=parent))
    os.chmod(scratch, 0o711)  # the service's user must reach what is rebuilt inside
    request = RestoreRequest(point_in_time=plan.point_in_time, bridge=plan.bridge)
    swaps: list[Swap] = []
    try:
        rebuilt = kind.rebuild_beside(plan.chain, plan.open_archive, source, scratch, request)
        for fld, path in dirs:
            built = rebuilt.dirs.get(path)
            if built is None:
                if kind.needs_service:
                    raise RestoreError(f"the rebuild of {plan.chain[-1].set} produced nothing for {fld} {path}")
                log.info("%s: %s is not in %s; left alone", source.name, path, plan.chain[-1].set)
                continue
            swap = Swap(fld, path, *neighbours[path], existed=os.path.lexists(path))
            _move(str(built), swap.staged)
            swaps.append(swap)
        if not swaps:
            raise RestoreError(f"{plan.chain[-1].set} holds none of {', '.join(p for _, p in dirs)}")
    except BaseException:
        for swap in swaps:
            shutil.rmtree(swap.staged, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rebuild_s = time.monotonic() - began
    log.info("%s: rebuilt %s beside the live data in %.1f s: %s", source.name, plan.chain[-1].set, rebuild_s,
             ", ".join(s.staged for s in swaps))
    journal.write(swaps, "rebuilt")

    # ---- from the stop on, any failure rolls back ----
    service = Service(source.service, source.name) if source.service else None
    was_running = found["service"] == "running"
    step = "stop"
    stopped_at = time.monotonic()
    timings: dict[str, float] = {"rebuild_s": round(rebuild_s, 3)}
    try:
        if service is not None and was_running:
            timings["stop_s"] = round(service.stop().seconds, 3)
        journal.write(swaps, "stopped")
        step = "swap"
        for swap in swaps:
            if swap.existed:
                _move(swap.live, swap.previous)
            _move(swap.staged, swap.live)
            swap.state = "swapped"
            journal.write(swaps, "swapping")
            log.info("%s: %s now holds %s (previous data kept at %s)", source.name, swap.live, plan.chain[-1].set,
                     swap.previous if swap.existed else "-")
        step = "start"
        if service is not None:
            timings["start_s"] = round(service.start().seconds, 3)
        step = "validate"
        validation = kind.validate_in_place(plan.chain, source, rebuilt.facts)
    except BaseException as exc:
        downtime = time.monotonic() - stopped_at
        _roll_back(plan, swaps, service, was_running, found, step, exc, journal, alarm, downtime)
        raise  # not reached: _roll_back always raises
    downtime = time.monotonic() - stopped_at
    journal.write(swaps, "done", downtime_s=round(downtime, 3))
    log.info("%s: in place and validated; the service was down %.1f s", source.name, downtime)
    return {"set": plan.chain[-1].set, "chain": [m.set for m in plan.chain], "in_place": [s.holds() for s in swaps],
            "service_before": found["service"], "downtime_s": round(downtime, 3), **timings, "validation": validation,
            "rebuilt": rebuilt.facts, "journal": str(journal.path)}


def _roll_back(plan: Any, swaps: list[Swap], service: Service | None, was_running: bool, found: dict[str, Any],
               step: str, cause: BaseException, journal: _Journal, alarm: Callable[[dict[str, Any]], None] | None,
               downtime: float) -> None:
    source, kind = plan.source, plan.source.plugin
    log.error("%s: in-place restore failed at step %s: %s; rolling back", source.name, step, cause)
    rollback_step = "stop"
    try:
        if service is not None and service.state() == "running":
            service.stop()
        rollback_step = "swap back"
        for swap in reversed(swaps):
            if swap.state != "swapped":
                continue
            if os.path.lexists(swap.live):
                _move(swap.live, swap.failed)
            if swap.existed:
                _move(swap.previous, swap.live)
            swap.state = "rolled back"
            journal.write(swaps, "rolling back")
        rollback_step = "start"
        if service is not None and was_running:
            service.start()
            rollback_step = "check the previous data"
            now = kind.live_identity(source)
            if now != found["identity"]:
                raise RestoreError(f"after the rollback the service reports {now}, not {found['identity']} as before")
    except BaseException as failure:
        directories = [s.holds() for s in swaps]
        payload = {"alarm": ALARM_ID, "title": ALARM_TITLE, "severity": "critical", "task": plan.spec.name,
                   "source": source.name, "kind": source.kind, "set": plan.chain[-1].set, "host": socket.gethostname(),
                   "failed_step": step, "error": str(cause), "rollback_step": rollback_step,
                   "rollback_error": str(failure), "directories": directories, "journal": str(journal.path)}
        journal.write(swaps, "ROLLBACK FAILED", alarm=payload)
        log.critical("%s %s: %s", ALARM_ID, ALARM_TITLE, json.dumps(payload, default=str))
        if alarm is not None:
            try:
                alarm(payload)
            except Exception as exc:  # the log line above and the journal still hold everything
                log.error("could not raise the alarm: %s", exc)
        states = "; ".join(f"{d['live']} holds {d['live_holds']}" + (f", previous at {d['previous']}" if d["previous"]
                           else "") + (f", restored at {d['failed_restore'] or d['restored_waiting']}"
                                       if d["failed_restore"] or d["restored_waiting"] else "") for d in directories)
        raise RestoreError(f"{ALARM_ID} {ALARM_TITLE}: the in-place restore of {source.name} failed at {step} ({cause}) "
                           f"and its rollback failed at {rollback_step} ({failure}). Directories: {states}. "
                           f"Journal: {journal.path}") from failure
    journal.write(swaps, "rolled back", error=str(cause), failed_step=step)
    kept = ", ".join(s.failed for s in swaps if os.path.lexists(s.failed)) or "nothing"
    raise RestoreError(f"in-place restore of {source.name} failed at step {step}: {cause}. Rolled back: the previous "
                       f"data is back in {', '.join(s.live for s in swaps)}"
                       + (" and the service runs and answers as before" if service is not None and was_running else "")
                       + f" (the service was down {downtime:.1f} s); the restored copy was moved aside to {kept}") from cause



def safety_backup_needed(plan: Any, found: dict[str, Any]) -> str | None:
    """Why the safety backup is skipped (the service is stopped and says so, and this kind reads its
    data through the running service), or None when it must be taken."""
    if found["service"] == "stopped" and plan.source.plugin.needs_service:
        return (f"the service of {plan.source.name} is not running (its status command says so), so no safety backup "
                "of its current state can be taken; the previous data is still kept beside the restored copy as "
                "<dir>.pre-restore-<time>")
    return None


def restore_source_in_place(spec: Any, source_name: str, set_stem: str | None = None, point_in_time: str | None = None,
                            location: str | None = None, allow_version_mismatch: bool = False,
                            alarm: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The whole in-place restore outside Airflow (the CLI's ``restore --in-place``): under the
    source's lease, verify the chain, check the version, preflight, take the safety backup, then
    :func:`restore_in_place`."""
    import pendulum

    from metabackup import pipeline
    from metabackup.locks import lock_for
    from metabackup.restore import check_cluster_version, verified_plan

    holder = f"in-place restore by {socket.gethostname()} pid {os.getpid()}"
    with lock_for(spec, source_name).held(holder):
        plan = verified_plan(spec, source_name, set_stem, point_in_time, location)
        warning = check_cluster_version(plan, allow_version_mismatch)
        found = preflight(plan)
        skipped = safety_backup_needed(plan, found)
        if skipped:
            log.warning("no safety backup: %s", skipped)
            safety = {"skipped": skipped}
        else:
            safety = pipeline.safety_backup(spec, source_name, pendulum.now("UTC").isoformat(), holder=holder)
        stamp = pendulum.now("UTC").format("YYYYMMDDHHmmss")
        result = restore_in_place(plan, stamp, alarm)
    return {**result, "safety_backup": safety, "location": plan.location, "version_warning": warning}
