"""The backup steps of one source in one run, as plain functions the Airflow operators call.

    preflight -> decide -> snapshot -> archive -> upload -> verify (commits) -> retention -> record

Steps hand each other files through a per-set *work directory* under the spec's ``staging_dir``
(``<staging_dir>/<task dir>/<set stem>/``), whose name derives from the run, so a retried step
finds what the previous step left.  With several Airflow workers the staging directory must be
shared storage, or the spec's ``queue`` pins the DAG's tasks to one worker (see README).

Every step is idempotent: a retry redoes its own work from the previous step's output, never
leaves a partial file that looks complete, and never duplicates a set.  A set becomes visible
(enters the catalog) only when ``verify`` writes its manifest after checking the uploaded archive.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import socket
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pendulum
from pydantic import ValidationError

from metabackup import fsutil
from metabackup.archive import write_tar
from metabackup.catalog import Catalog
from metabackup.encryption import new_data_key
from metabackup.errors import BackupError
from metabackup.keys import KeyConfig, KeyRing
from metabackup.locks import SourceLock
from metabackup.manifest import HOST, ArchiveInfo, Manifest, tool_versions
from metabackup.naming import SetName, split_archive_name
from metabackup.policy import Decision, decide as decide_type
from metabackup.progress import Progress
from metabackup.retention import plan_retention
from metabackup.sealed import open_plain, sealing_info
from metabackup.sources import SourceEngine
from metabackup.spec import Source, TaskSpec
from metabackup.targets import BackupTarget, TargetError

log = logging.getLogger(__name__)

SPACE_MARGIN = 1.2  # need this much more free space than the last full backup took


class PreflightError(BackupError):
    """The run cannot start: a target or the staging area is unusable; the message says which
    (``problems``: one line each)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


class OutOfSpace(BackupError):
    """A disk filled up while a set was written; the message names where, and how much was needed."""


class RunIncomplete(BackupError):
    """A run ended without committing a set for every selected source (a step failed before)."""


@dataclass
class SetRun:
    """One source of one run: everything the steps derive from (spec, source, execution time)."""

    spec: TaskSpec
    source: Source
    executed: pendulum.DateTime
    holder: str | None = None  # who holds the source's lease for this run (default: the backup run itself)
    host: str | None = None  # the name of the host doing the work, as the scheduler knows it (default: its FQDN)

    @classmethod
    def of(cls, spec: TaskSpec, source_name: str, executed: str | pendulum.DateTime, holder: str | None = None,
           host: str | None = None) -> SetRun:
        moment = pendulum.parse(executed) if isinstance(executed, str) else pendulum.instance(executed)
        return cls(spec=spec, source=spec.source(source_name), executed=moment, holder=holder, host=host)

    @property
    def lock(self) -> SourceLock:
        return SourceLock(self.spec.staging_dir, self.task_dir, self.source.name)

    @property
    def lock_holder(self) -> str:
        return self.holder or backup_holder(self.spec, self.executed)

    def hold(self) -> None:
        """Take (or renew) this run's lease on the source, waiting for any other holder."""
        self.lock.acquire(self.lock_holder)

    @property
    def task_dir(self) -> str:
        return self.spec.task_dir

    @property
    def name(self) -> SetName:
        return SetName.build(self.spec.cluster_version, self.source.name, self.executed, self.spec.timezone)

    @property
    def workdir(self) -> Path:
        return Path(self.spec.staging_dir) / self.task_dir / self.name.stem

    @cached_property
    def target(self) -> BackupTarget:
        return self.source.target.open()

    @property
    def kind(self) -> SourceEngine:
        return self.source.plugin.engine(self.source, task=self.spec.name)

    def catalog(self) -> Catalog:
        return Catalog.read(self.target, self.spec.name, self.task_dir, self.source.name, self.spec.timezone)

    def _path(self, name: str) -> Path:
        """A file an earlier step of this run left in the work directory; missing is an error."""
        path = self.workdir / name
        if not path.exists():
            raise BackupError(f"{path} is missing: the previous step of this run did not finish here (with "
                               "several workers, give the source a queue, see README Deployment, or share staging_dir)")
        return path

    def _read(self, name: str) -> dict[str, Any]:
        return json.loads(self._path(name).read_text())

    def _write(self, name: str, data: dict[str, Any]) -> None:
        with fsutil.atomic_writer(self.workdir / name) as handle:
            handle.write(json.dumps(data, indent=2, sort_keys=True).encode())

    def decision(self) -> Decision:
        """The decision ``decide`` wrote for this run; a decision.json this version cannot read
        (corrupt, or written by something else) is refused rather than half-understood."""
        path = self._path("decision.json")
        try:
            return Decision.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
            raise BackupError(f"{path} is not a decision this version wrote ({problems}); retry the run from its "
                              "decide step, which writes it afresh") from None

    def _write_decision(self, decision: Decision) -> None:
        with fsutil.atomic_writer(self.workdir / "decision.json") as handle:
            handle.write(decision.model_dump_json(indent=2).encode())

    @cached_property
    def keys(self) -> KeyRing:
        return KeyRing.for_spec(self.spec)

    @property
    def encryption(self) -> KeyConfig | None:
        """The key that encrypts this source's sets at its primary target (None: stored unencrypted)."""
        return self.spec.encryption_for(self.source.target)

    @property
    def staged_archive(self) -> Path:
        return self.workdir / self.name.archive_name(encrypted=self.encryption is not None,
                                                     compression=self.spec.compression)


def host_name(given: str | None = None) -> str | None:
    """The host name a manifest records: ``given`` (the worker's name, as Airflow records it), else
    this machine's FQDN; None if neither is a plain host name."""
    name = given or socket.getfqdn()
    return name if HOST.fullmatch(name) else None


def backup_holder(spec: TaskSpec, executed: pendulum.DateTime) -> str:
    """The lease holder name of a backup run: the task and the run's execution time."""
    return f"backup {spec.name} run {pendulum.instance(executed).in_timezone('UTC').to_iso8601_string()}"


def estimate_bytes(catalog: Catalog) -> tuple[int, str]:
    """Room a new set may need: the largest full kept plus what the incrementals since the newest
    full added (how much a full taken now could have grown), with a margin; and the reasoning."""
    fulls = [m for m in catalog.sets if m.is_full]
    if not fulls:
        return 0, "no full backup yet"
    largest = max(m.archive.size for m in fulls)
    newest = fulls[-1]
    growth = sum(m.archive.size for m in catalog.sets if not m.is_full and m.executed_at > newest.executed_at)
    return int((largest + growth) * SPACE_MARGIN), (f"largest full {largest} + incremental growth {growth} since "
                                                     f"{newest.set}, x{SPACE_MARGIN}")


def sweep_stale_workdirs(spec: TaskSpec, source: str, keep: str | None = None) -> list[str]:
    """Remove work directories of earlier runs of ``source`` left in the staging area (a run that
    failed before ``record``), unless another holder has the source's lease right now."""
    task_dir = spec.task_dir
    lock = SourceLock(spec.staging_dir, task_dir, source)
    folder = Path(spec.staging_dir) / task_dir
    if not folder.is_dir() or lock.holder() is not None:
        return []
    removed = []
    for entry in folder.iterdir():
        parsed = SetName.parse(entry.name)
        if parsed and parsed.source == source and entry.name != keep and entry.is_dir() and not entry.is_symlink():
            fsutil.remove_tree(entry)
            removed.append(entry.name)
    return removed


def check_source(spec: TaskSpec, name: str, executed: str | pendulum.DateTime | None = None,
                 keys: KeyRing | None = None, check_staging: bool = True) -> dict[str, Any]:
    """The preflight of one source, on the host that does its work: the source can be read, its
    target is writable with room for a new set, the staging area has room; stale partial files and
    work directories of failed runs are cleared.  All its problems are reported together
    (:class:`PreflightError`).  ``check_staging``: whether the staging area must have room for this
    source's set (the CLI's preflight checks room for all its sources at once instead)."""
    problems = []
    keys = keys or KeyRing.for_spec(spec)
    source = spec.source(name)
    task_dir = spec.task_dir
    need = 0
    report: dict[str, Any] = {}
    try:
        current = SetRun.of(spec, name, executed).name.stem if executed else None
        swept = sweep_stale_workdirs(spec, name, keep=current)
        if swept:
            log.info("%s: removed work directories of earlier runs from the staging area: %s", name, swept)
        source.plugin.engine(source, task=spec.name).check()
        target = source.target.open()
        target.ensure_writable(task_dir)
        removed = target.remove_partials(task_dir)
        if removed:
            log.info("%s: removed %d partial files left by an interrupted run: %s", name, len(removed), removed)
        need, why = estimate_bytes(Catalog.read(target, spec.name, task_dir, name, spec.timezone))
        free = target.free_bytes()
        encryption = spec.encryption_for(source.target)
        if encryption is not None:  # the key must be at hand now, not after the snapshot
            keys.key(encryption.key_id, needed_for=f"the sets of {name} at {target.uri}")
        report = {"target": target.uri, "free_bytes": free, "estimate_bytes": need,
                  "encrypted": encryption is not None,
                  "unencrypted_off_cluster": [w for w in spec.unencrypted_off_cluster() if w.startswith(name + " ")],
                  "copies": _check_copies(spec, source, need, keys)}
        log.info("%s -> %s: %s bytes free, about %d needed (%s)", name, target.uri, free, need, why)
        if free is not None and free < need:
            problems.append(f"{name}: {target.uri} has {free} bytes free, a full backup needs about {need}")
    except Exception as exc:  # every check of the source is reported together
        problems.append(f"{name}: {exc}")
    if check_staging:
        problems += _staging_problems(spec, need)
    if problems:
        raise PreflightError(f"preflight failed for task {spec.name}:\n  " + "\n  ".join(problems), problems)
    return report


def _staging_problems(spec: TaskSpec, need: int) -> list[str]:
    try:
        staging = fsutil.ensure_private_dir(spec.staging_dir)
        staging_free = shutil.disk_usage(staging).free
        if staging_free < need:
            return [f"staging {staging} has {staging_free} bytes free, this run needs about {need}"]
    except OSError as exc:
        return [f"staging directory {spec.staging_dir}: {exc}"]
    return []


def warn_unencrypted_off_cluster(spec: TaskSpec) -> list[str]:
    """Log (and return) each off-cluster location whose sets would be stored unencrypted."""
    unencrypted = spec.unencrypted_off_cluster()
    for where in unencrypted:
        log.warning("UNENCRYPTED OFF-CLUSTER: %s stores its sets unencrypted outside the cluster; set the spec's "
                    "encryption: {key_id: ...} (see README, Encryption)", where)
    return unencrypted


def preflight(spec: TaskSpec, source_names: list[str], executed: str | pendulum.DateTime | None = None) -> dict[str, Any]:
    """Every source's :func:`check_source` in this process (the CLI's backup: one host does all),
    and room in the staging area for all of them.  All problems are reported together."""
    problems, report = [], {}
    keys = KeyRing.for_spec(spec)
    warn_unencrypted_off_cluster(spec)
    for name in source_names:
        try:
            report[name] = check_source(spec, name, executed, keys, check_staging=False)
        except PreflightError as exc:
            problems += exc.problems
    problems += _staging_problems(spec, sum(r["estimate_bytes"] for r in report.values()))
    if problems:
        raise PreflightError(f"preflight failed for task {spec.name}:\n  " + "\n  ".join(problems), problems)
    return report


def _check_copies(spec: TaskSpec, source: Source, need: int, keys: KeyRing) -> list[str]:
    """Each off-site copy reachable, writable and with room: a problem is a warning here (the set is
    still taken at the primary; its replicate task fails, and the next run copies what is missing)."""
    warnings = []
    for number, config in enumerate(source.copies, 1):
        try:
            target = config.open()
            target.ensure_writable(spec.task_dir)
            free = target.free_bytes()
            if free is not None and free < need:
                warnings.append(f"copy {number} {target.uri} has {free} bytes free, a full backup needs about {need}")
            encryption = spec.encryption_for(config)
            if encryption is not None:
                keys.key(encryption.key_id, needed_for=f"the sets of {source.name} at copy {number}")
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            warnings.append(f"copy {number} {config.uri(spec.task_dir)}: {exc}")
    for warning in warnings:
        log.warning("%s: %s", source.name, warning)
    return warnings


def decide(run: SetRun, force_full: bool = False) -> Decision:
    """Take the source's lease, choose full or incremental and prepare a fresh work directory."""
    run.hold()
    catalog = run.catalog()
    existing = catalog.get(run.name.stem)
    executed_utc = run.executed.in_timezone("UTC").to_iso8601_string()
    if existing is not None and existing.executed_at != executed_utc:
        same_second = run.executed.in_timezone("UTC").replace(microsecond=0) == \
            pendulum.parse(existing.executed_at).in_timezone("UTC").replace(microsecond=0)
        why = ("set names have one-second resolution: trigger the run again a second later" if same_second else
               f"local time repeats in {run.spec.timezone} (a DST fall-back hour); give this task a timezone "
               "without DST (e.g. UTC) to keep hourly backups unique")
        raise BackupError(
            f"set name {run.name.stem} is already taken by the run of {existing.executed_at}, and this run is at "
            f"{executed_utc}: {why}. Refusing to skip or overwrite")
    if existing is not None:
        decision = Decision(type=existing.type, parent=existing.parent, committed=True,
                            reason=f"set {existing.set} is already committed at {run.target.uri}; nothing to redo")
    else:
        kind = run.kind
        decision = decide_type(
            policy=run.spec.policy, catalog=catalog, supports_incremental=run.source.plugin.supports_incremental,
            cluster_version=run.spec.cluster_version, max_backups=run.source.target.max_backups, force_full=force_full,
        )
        parent = catalog.get(decision.parent) if decision.parent else None
        if parent is not None and parent.kind != run.source.kind:
            decision = Decision.full(f"the source kind changed from {parent.kind} to {run.source.kind}")
        elif parent is not None and (blocker := kind.incremental_blocker(parent)):
            decision = Decision.full(f"the source cannot continue the chain of {decision.parent}: {blocker}")
    decision = decision.model_copy(update={"set": run.name.stem})
    fsutil.remove_tree(run.workdir)
    fsutil.ensure_private_dir(run.workdir)
    run._write_decision(decision)
    log.info("%s: %s backup (%s)", run.source.name, decision.type, decision.reason)
    return decision


def snapshot(run: SetRun) -> dict[str, Any]:
    run.hold()
    decision = run.decision()
    if decision.committed:
        log.info("%s", decision.reason)
        return {"skipped": True}
    for stale in run.workdir.iterdir():  # a retried snapshot starts clean
        if stale.name != "decision.json":
            fsutil.remove_tree(stale) if stale.is_dir() else stale.unlink()
    started = pendulum.now("UTC")
    parent, open_parent = None, None
    if decision.parent:
        parent = run.catalog().get(decision.parent)
        if parent is None:
            raise BackupError(f"parent set {decision.parent} vanished from {run.target.uri} since the decision; retry the run")
        open_parent = lambda: open_plain(run.target, run.task_dir, parent, run.keys)  # noqa: E731
    summary = run.kind.snapshot(run.workdir, decision, parent, open_parent)
    run._write("snapshot.json", {"started_at": started.to_iso8601_string(), "summary": summary})
    return summary


def archive(run: SetRun) -> dict[str, Any]:
    run.hold()
    decision = run.decision()
    if decision.committed:
        return {"skipped": True}
    snap = run._read("snapshot.json")
    kind = run.kind
    encryption = run.encryption
    data_key = new_data_key() if encryption is not None else None
    if encryption is not None:  # the key must be at hand before any work: fail early, naming it
        run.keys.key(encryption.key_id, needed_for=f"set {run.name.stem}")
    for stale in run.workdir.glob(run.name.stem + ".tar.*"):  # a retry after the spec's encryption or compression changed
        stale.unlink()
    summary = snap.get("summary") or {}
    meter = Progress(log, f"{run.source.name}: archive", total=summary.get("bytes_to_archive"))
    try:
        with write_tar(run.staged_archive, seal=(data_key, run.name.stem) if data_key else None,
                       compression=run.spec.compression, progress=meter) as (tar, written):
            result = kind.write_archive(run.workdir, tar, run.name.stem)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        catalog = run.catalog()
        need, why = estimate_bytes(catalog)
        free = shutil.disk_usage(run.workdir).free
        raise OutOfSpace(f"{run.source.name}: the staging area is full: no space left writing {run.staged_archive} "
                         f"({free} bytes free now; a set needs about {need}: {why}). Free space under "
                         f"{run.spec.staging_dir} or point staging_dir elsewhere; the partial archive was removed") from None
    catalog_parent = run.catalog().get(decision.parent) if decision.parent else None
    manifest = Manifest(
        set=run.name.stem, task=run.spec.name, task_dir=run.task_dir, source=run.source.name, kind=run.source.kind,
        type=decision.type, parent=decision.parent,
        chain_root=catalog_parent.chain_root if catalog_parent else run.name.stem,
        cluster_version=run.spec.cluster_version,
        executed_at=run.executed.in_timezone("UTC").to_iso8601_string(),  # as decide() compares it
        started_at=snap["started_at"], finished_at=pendulum.now("UTC").to_iso8601_string(),
        archive=ArchiveInfo(name=run.staged_archive.name, size=written.size, sha256=written.sha256),
        content=result.content, position=result.position, reason=decision.reason,
        tools=tool_versions(**kind.tool_versions()),
        encryption=(sealing_info(run.keys, encryption, data_key, run.name.stem, written.plaintext)
                    if encryption is not None else None),
        host=host_name(run.host),
    )
    with fsutil.atomic_writer(run.workdir / "manifest.json") as handle:
        handle.write(manifest.to_json())
    meter.done()
    log.info("%s: archived %s (%d bytes from a %d-byte tar, sha256 %s)%s", run.source.name, manifest.archive.name,
             written.size, written.tar_bytes, written.sha256, f", encrypted with key {encryption.key_id} (fingerprint "
                             f"{manifest.encryption.key_fingerprint})" if encryption else "")
    return {"archive": manifest.archive.name, "size": written.size, "sha256": written.sha256}


def _staged_manifest(run: SetRun) -> Manifest:
    return Manifest.from_json((run.workdir / "manifest.json").read_bytes(), origin=str(run.workdir / "manifest.json"))


def upload(run: SetRun) -> dict[str, Any]:
    run.hold()
    if run.decision().committed:
        return {"skipped": True}
    manifest = _staged_manifest(run)
    name = manifest.archive.name
    run.target.ensure_writable(run.task_dir)
    run.target.remove_partials(run.task_dir, name)
    if run.target.exists(run.task_dir, name):
        try:
            run.target.verify(run.task_dir, name, manifest.archive.sha256, manifest.archive.size)
            log.info("%s is already at %s with the right checksum (a retry); not uploading again", name, run.target.uri)
            return {"uploaded": False, "archive": name}
        except TargetError as exc:
            log.info("replacing an uncommitted copy of %s: %s", name, exc)
    meter = Progress(log, f"{run.source.name}: upload", total=manifest.archive.size)
    try:
        run.target.put_file_reporting(run.workdir / name, run.task_dir, name, meter.add)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        run.target.remove_partials(run.task_dir, name)
        raise OutOfSpace(f"{run.source.name}: target {run.target.uri}/{run.task_dir} is full: no space left storing "
                         f"{name} ({manifest.archive.size} bytes needed, {run.target.free_bytes()} free now). Free space "
                         "there or lower max_backups; the partial file was removed") from None
    meter.done()
    log.info("uploaded %s to %s/%s", name, run.target.uri, run.task_dir)
    return {"uploaded": True, "archive": name}


def verify(run: SetRun) -> dict[str, Any]:
    """Check the uploaded archive (and its standby copy) against the manifest, then commit it."""
    run.hold()
    decision = run.decision()
    if decision.committed:
        manifest = run.catalog().get(decision.set)
    else:
        manifest = _staged_manifest(run)
        if manifest.parent is not None and run.catalog().chain(manifest.parent) is None:
            raise BackupError(f"{run.source.name}: the parent {manifest.parent} of {manifest.set} is no longer restorable "
                               f"at {run.target.uri}; not committing an incremental without its chain. Clear the run's "
                               "decide task to take a new set (it will be a full)")
        run.target.verify(run.task_dir, manifest.archive.name, manifest.archive.sha256, manifest.archive.size)
        run.target.put_bytes(manifest.to_json(), run.task_dir, run.name.manifest)
        log.info("verified and committed %s at %s/%s", manifest.set, run.target.uri, run.task_dir)
    return set_event(run.target, manifest)


def set_event(target: BackupTarget, manifest: Manifest) -> dict[str, Any]:
    """The metadata an asset event or a report carries about one committed set."""
    return {
        "set": manifest.set, "type": manifest.type, "parent": manifest.parent, "source": manifest.source,
        "size": manifest.archive.size, "sha256": manifest.archive.sha256,
        "location": f"{target.uri}/{manifest.task_dir}/{manifest.archive.name}", "executed_at": manifest.executed_at,
    }


def retention(run: SetRun) -> dict[str, Any]:
    run.hold()
    result = _retention(run)
    run.lock.release(run.lock_holder)
    return result


def _retention(run: SetRun) -> dict[str, Any]:
    return prune(run, run.target, run.catalog(), run.source.target.max_backups)


def prune(run: SetRun, target: BackupTarget, catalog: Catalog, max_backups: int) -> dict[str, Any]:
    """Chain-safe retention of one location of the run's source (the primary or a copy): keep the
    newest ``max_backups`` restorable sets and their ancestors, uncommit (manifest first) and delete
    the rest, and remove archives older than this run that no run committed."""
    plan = plan_retention(catalog, max_backups)
    for orphan in plan.orphans:
        log.warning("%s has a broken chain (a parent is missing); it cannot be restored and is left untouched", orphan.set)
    for doomed in sorted(plan.delete, key=lambda m: m.executed_at, reverse=True):  # children before parents
        target.delete(run.task_dir, SetName.parse(doomed.set).manifest)  # uncommit first
        target.delete(run.task_dir, doomed.archive.name)
        log.info("retention: deleted %s (%s) at %s", doomed.set, doomed.type, target.uri)
    committed = {m.archive.name for m in catalog.sets}
    newest = catalog.sets[-1].executed_at if catalog.sets else None
    strays = []
    for name in target.list_names(run.task_dir):
        split = split_archive_name(name)
        parsed = SetName.parse(split[0]) if split else None
        if parsed and parsed.source == run.source.name and name not in committed and parsed.stamp < run.name.stamp:
            target.delete(run.task_dir, name)  # an archive whose run never committed it
            strays.append(name)
    if strays:
        log.info("retention: removed uncommitted archives of failed runs at %s: %s", target.uri, strays)
    log.info("retention keeps %d sets of %s at %s (max_backups %d), newest %s", len(plan.keep), run.source.name,
             target.uri, max_backups, newest)
    return {"kept": [m.set for m in plan.keep], "deleted": [m.set for m in plan.delete], "orphans": [m.set for m in plan.orphans]}


def finish_source(spec: TaskSpec, name: str, executed: str, holder: str | None = None) -> dict[str, Any]:
    """The end of one source's part of a run, on the host that did its work, whatever happened
    before: read what the run committed from the catalog, free the run's work directory and the
    source's lease.  ``{"event": <the committed set> or None, "problem": <why the catalog could not
    be read> or None}``."""
    run = SetRun.of(spec, name, executed, holder=holder)
    event, problem = None, None
    try:
        committed = run.catalog().get(run.name.stem)
        if committed is not None and committed.executed_at != run.executed.in_timezone("UTC").to_iso8601_string():
            problem = f"{name}: the set {committed.set} is the run of {committed.executed_at}'s, not this run's"
        elif committed is not None:
            event = set_event(run.target, committed)
    except Exception as exc:  # a target that cannot be read must not keep the staging space or the lease
        problem = f"{name}: cannot read the catalog at its target: {exc}"
    fsutil.remove_tree(run.workdir)
    if run.lock.release(run.lock_holder):
        log.info("%s: released the lease this run held", name)
    return {"event": event, "problem": problem}


def summarize(finished: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The run's summary from each selected source's :func:`finish_source` result (None: its finish
    step did not report); raise :class:`RunIncomplete` if a source committed no set."""
    summary = {name: (result or {}).get("event") for name, result in finished.items()}
    problems = [result["problem"] for result in finished.values() if result and result.get("problem")]
    problems += [f"{name}: its finish step did not report (see its log)" for name, result in finished.items()
                 if result is None]
    for name, event in summary.items():
        log.info("%s: %s", name, f"{event['type']} set at {event['location']}" if event else "no set committed")
    missing = [name for name, event in summary.items() if event is None]
    if missing:
        raise RunIncomplete(f"no set was committed for {', '.join(missing)} in this run (see the failed task of each); "
                            "staging space and leases were freed" + ("; " + "; ".join(problems) if problems else ""))
    return summary


def record(spec: TaskSpec, source_names: list[str], executed: str, holder: str | None = None) -> dict[str, Any]:
    """Summarise the run from the catalog, free its staging space and its leases, whatever happened
    before (every source's :func:`finish_source` in this process); raise :class:`RunIncomplete`
    (after cleaning up) if a selected source committed no set."""
    return summarize({name: finish_source(spec, name, executed, holder=holder) for name in source_names})


def run_set(run: SetRun, force_full: bool = False, keep: bool = True) -> dict[str, Any]:
    """One source's whole set in this process, in the order the DAG runs the steps:
    decide -> snapshot -> archive -> upload -> verify (commits) -> replicate to each copy ->
    retention (unless ``keep`` is False, as for a safety backup).  Returns the decision's fields and the committed set's event."""
    from metabackup.replication import replicate

    decision = decide(run, force_full=force_full)
    for step in (snapshot, archive, upload):
        step(run)
    event = verify(run)
    for number in range(1, len(run.source.copies) + 1):
        replicate(run, number, keep=keep)
    if keep:
        retention(run)
    return {**decision.model_dump(mode="json"), "event": event}


def backup(spec: TaskSpec, source_names: list[str] | None = None, executed: pendulum.DateTime | None = None,
           force_full: bool = False) -> dict[str, Any]:
    """A whole backup run without a scheduler (``python -m metabackup backup``): preflight, every
    source's set, then record, which frees staging and leases whatever happened."""
    names = source_names or [s.name for s in spec.sources]
    executed = executed or pendulum.now("UTC").replace(microsecond=0)
    holder = f"backup {spec.name} cli {executed.to_iso8601_string()}"
    preflight(spec, names, executed)
    for name in names:
        try:
            run_set(SetRun.of(spec, name, executed, holder=holder), force_full=force_full)
        except Exception as exc:  # the other sources still get their sets; record reports this one
            log.error("%s: the set failed: %s", name, exc)
    return record(spec, names, executed.to_iso8601_string(), holder=holder)


def safety_backup(spec: TaskSpec, source_name: str, executed: str, holder: str | None = None) -> dict[str, Any]:
    """A full set of the source's current state, taken before it is restored over in place.
    It is an ordinary committed set (restorable like any other); retention is not run.  ``holder``
    is the restore's lease (the safety backup runs inside it)."""
    run = SetRun.of(spec, source_name, executed, holder=holder)
    event = run_set(run, force_full=True, keep=False)["event"]
    fsutil.remove_tree(run.workdir)
    if holder is None:
        run.lock.release(run.lock_holder)
    log.info("%s: safety backup %s taken before the restore", source_name, event["set"])
    return event
