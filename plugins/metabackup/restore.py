"""Restore a backup set: resolve its chain from the catalog, verify every member, then rebuild."""

from __future__ import annotations

import logging
import os
import posixpath
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import pendulum

from metabackup.catalog import Catalog
from metabackup.encryption import EncryptionError
from metabackup.keys import KeyRing
from metabackup.locks import lock_for
from metabackup.manifest import Manifest
from metabackup.sealed import check_decrypts, open_plain
from metabackup.sources import RestoreError, RestoreRequest
from metabackup.spec import Source, TaskSpec
from metabackup.targets import BackupTarget, TargetError

log = logging.getLogger(__name__)


def resolve_chain(catalog: Catalog, set_stem: str | None) -> list[Manifest]:
    if set_stem is None:
        latest = catalog.latest_restorable()
        if latest is None:
            raise RestoreError("the catalog holds no restorable backup set")
        set_stem = latest.set
    if catalog.get(set_stem) is None:
        known = ", ".join(m.set for m in catalog.sets) or "none"
        raise RestoreError(f"no committed backup set {set_stem!r} (known: {known})")
    chain = catalog.chain(set_stem)
    if chain is None:
        raise RestoreError(f"backup set {set_stem} cannot be restored: a set of its chain is missing")
    return chain


def verify_chain(target: BackupTarget, chain: list[Manifest], keys: KeyRing | None = None) -> None:
    """Re-read every archive of the chain; refuse the whole chain if any member is missing or corrupt.
    An encrypted member is also decrypted to nowhere with ``keys``: every chunk's tag and the
    plaintext's checksum are checked before a restore writes anything."""
    for manifest in chain:
        try:
            target.verify(manifest.task_dir, manifest.archive.name, manifest.archive.sha256, manifest.archive.size)
            if manifest.encryption is not None:
                check_decrypts(target, manifest.task_dir, manifest, keys or KeyRing())
        except (TargetError, OSError, EncryptionError) as exc:
            raise RestoreError(f"refusing to restore: chain member {manifest.set} failed verification: {exc}") from exc
        log.info("verified %s (%d bytes%s)", manifest.set, manifest.archive.size,
                 f", decrypted with key {manifest.encryption.key_id}" if manifest.encryption else "")


def set_for_point_in_time(catalog: Catalog, moment: pendulum.DateTime) -> str:
    """The set whose chain reaches ``moment``: the earliest set of the chain covering it whose WAL
    holds every commit up to it, or the chain's last set when the next full's bridge WAL carries
    the chain to the moment (then :func:`pitr_bridge` names that full).  A refusal names the real
    boundary: before the oldest kept full, in a WAL gap between two sets, or after the newest."""
    coverage = catalog.pitr_coverage()
    chains = coverage["chains"]
    if not chains:
        raise RestoreError(f"no backup set reaches {moment.isoformat()}: the catalog holds no restorable set")

    def at(text: str) -> pendulum.DateTime:
        return pendulum.parse(text).in_timezone("UTC")

    for chain in chains:
        if at(chain["start"]) <= moment <= at(chain["end"]):
            for entry in chain["sets"][1:]:
                if at(entry["until"]) >= moment:
                    return entry["set"]
            return chain["last"]  # through the next full's bridge WAL (or the lone full itself)
    if moment < at(chains[0]["start"]):
        raise RestoreError(f"{moment.isoformat()} is before the oldest kept full {chains[0]['full']}, which starts "
                           f"(is consistent) at {chains[0]['start']}; no chain reaches it")
    for gap in coverage["gaps"]:
        if at(gap["after_end"]) < moment < at(gap["before_start"]):
            raise RestoreError(f"{moment.isoformat()} lies in a WAL gap between set {gap['after']} (ends "
                               f"{gap['after_end']}) and set {gap['before']} (starts {gap['before_start']}): "
                               f"{gap['reason']}")
    newest = chains[-1]
    raise RestoreError(f"no backup set reaches {moment.isoformat()} yet; the newest, {newest['last']}, reaches "
                       f"{newest['end']}")


def pitr_bridge(catalog: Catalog, chain: list[Manifest], moment: pendulum.DateTime | str) -> Manifest | None:
    """The full whose bridge WAL a restore of ``chain`` to ``moment`` needs (the moment is after
    the chain's own WAL), or None.  Verify it with the chain (``verify_chain(target, chain +
    [bridge])``) and hand it to the destination (``RestoreRequest.point_in_time`` and ``.bridge``)."""
    if isinstance(moment, str):
        moment = pendulum.parse(moment.replace(" ", "T", 1) if re.match(r"^\d{4}-\d\d-\d\d ", moment) else moment)
    moment = moment.in_timezone("UTC")
    last = chain[-1]
    if catalog.chain(last.set) is None or [m.set for m in catalog.chain(last.set)] != [m.set for m in chain]:
        return None
    for entry in catalog.pitr_coverage()["chains"]:
        if entry["last"] != last.set or not entry["bridge"]:
            continue
        if pendulum.parse(entry["sets"][-1]["until"]).in_timezone("UTC") < moment:
            return catalog.get(entry["bridge"])
    return None


def plan_bridge(plan: RestorePlan) -> Manifest | None:
    """:func:`pitr_bridge` for a restore plan (None unless it restores to a point in time)."""
    if not plan.point_in_time:
        return None
    return pitr_bridge(plan.catalog, plan.chain, plan.point_in_time)


@dataclass
class RestorePlan:
    """What a restore will read: the chain of one source's set at its target."""

    spec: TaskSpec
    source: Source
    target: BackupTarget
    task_dir: str
    catalog: Catalog
    chain: list[Manifest]
    point_in_time: str | None = None  # PostgreSQL recovery target (timestamptz text, UTC)
    bridge: Manifest | None = None  # the later full whose bridge WAL carries the chain to the point in time
    location: str = "primary"  # which of the source's locations (Source.locations) it reads
    keys: KeyRing = field(default_factory=KeyRing)  # for encrypted sets

    def open_archive(self, stem: str) -> BinaryIO:
        """The set's ``.tar.gz`` (decrypted, every chunk authenticated, when it is encrypted)."""
        return open_plain(self.target, self.task_dir, self.catalog.get(stem), self.keys)

    @property
    def reads(self) -> list[Manifest]:
        """Every set whose archive the restore reads (and so verifies first): the chain, then the bridge."""
        return self.chain + ([self.bridge] if self.bridge else [])

    def describe(self) -> dict[str, Any]:
        return {"task": self.spec.name, "source": self.source.name, "kind": self.source.kind,
                "location": self.location, "target": self.target.uri, "task_dir": self.task_dir, "set": self.chain[-1].set,
                "chain": [m.set for m in self.chain], "bytes": sum(m.archive.size for m in self.reads),
                "bridge": self.bridge.set if self.bridge else None,
                "point_in_time": self.point_in_time, "cluster_version": self.chain[-1].cluster_version}


def plan_restore(spec: TaskSpec, source_name: str, set_stem: str | None = None,
                 point_in_time: str | None = None, location: str | None = "primary") -> RestorePlan:
    """Resolve the chain to restore: a set (default: the latest restorable) or, for PostgreSQL
    kinds, the chain of the first set that reaches ``point_in_time``; read at ``location`` (one of
    ``Source.locations()``: primary, mirror, copy N), or with None at the first location where it
    resolves."""
    if location is None:
        return _first_location(spec, source_name, lambda label: plan_restore(
            spec, source_name, set_stem, point_in_time, label))[0]
    source = spec.source(source_name)
    try:
        target = source.location(location).open()
    except KeyError as exc:
        raise RestoreError(str(exc.args[0])) from None
    task_dir = spec.task_dir
    catalog = Catalog.read(target, spec.name, task_dir, source_name, spec.timezone)
    if set_stem in ("", "latest"):
        set_stem = None
    target_time = None
    if point_in_time:
        if not source.plugin.point_in_time:
            raise RestoreError(f"source kind {source.kind} restores to backup sets only, not to a point in time")
        try:
            moment = pendulum.parse(point_in_time)
        except Exception as exc:
            raise RestoreError(f"point in time {point_in_time!r} is not an ISO-8601 time: {exc}") from None
        if moment.tzinfo is None or "T" not in point_in_time or not re.search(r"(Z|[+-]\d\d:?\d\d)$", point_in_time):
            raise RestoreError(f"point in time {point_in_time!r} needs a date, a time and a UTC offset")
        set_stem = set_stem or set_for_point_in_time(catalog, moment)
        target_time = moment.in_timezone("UTC").format("YYYY-MM-DD HH:mm:ss.SSSSSS") + "+00"
    chain = resolve_chain(catalog, set_stem)
    plan = RestorePlan(spec, source, target, task_dir, catalog, chain, target_time, location=location,
                       keys=KeyRing.for_spec(spec))
    plan.bridge = plan_bridge(plan)
    return plan


def _first_location(spec: TaskSpec, source_name: str, attempt: Any) -> tuple[Any, list[str]]:
    """``attempt(label)`` at each of the source's locations in order until one succeeds: its result
    and what failed before (each a line naming the location and why); all failed -> RestoreError."""
    failed = []
    for label, config in spec.source(source_name).locations():
        try:
            result = attempt(label)
        except (RestoreError, TargetError, OSError) as exc:
            failed.append(f"{label} ({config.uri(spec.task_dir)}): {exc}")
            log.warning("%s: cannot restore from %s: %s", source_name, label, exc)
            continue
        if failed:
            log.warning("%s: restoring from %s, after: %s", source_name, label, "; ".join(failed))
        return result, failed
    raise RestoreError(f"{source_name}: no location holds a restorable, intact chain:\n  " + "\n  ".join(failed))


def verified_plan(spec: TaskSpec, source_name: str, set_stem: str | None = None, point_in_time: str | None = None,
                  location: str | None = None) -> RestorePlan:
    """A plan whose every archive was re-read and matched its manifest.  With ``location`` None, the
    source's locations are tried in order (primary, mirror, copies): a chain missing or corrupt at
    one is read from the next, and the plan says which (``plan.location``)."""
    def attempt(label: str) -> RestorePlan:
        plan = plan_restore(spec, source_name, set_stem, point_in_time, label)
        verify_chain(plan.target, plan.reads, plan.keys)
        return plan

    if location is not None:
        return attempt(location)
    return _first_location(spec, source_name, attempt)[0]


def check_cluster_version(plan: RestorePlan, allow_mismatch: bool = False) -> str | None:
    """Refuse a set taken at another cluster version than the task's current one, unless allowed
    (as the cluster manager's console does).  Returns a warning when a mismatch is allowed."""
    taken, current = plan.chain[-1].cluster_version, plan.spec.cluster_version
    if taken == current:
        return None
    message = f"{plan.chain[-1].set} was taken at cluster version {taken}; the cluster is at {current}"
    if not allow_mismatch:
        raise RestoreError(f"refusing to restore: {message}. Restoring metadata across versions can break the "
                           "cluster; set allow_version_mismatch to restore anyway")
    log.warning("restoring anyway (allow_version_mismatch): %s", message)
    return message


# A destination directory is typed by a user (trigger form, CLI): allow-listed characters only,
# so it can reach no shell or configuration file as anything but a plain path.
_DESTINATION_CHARS = re.compile(r"^[A-Za-z0-9._/@+=,:\-]+$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")


def live_paths(spec: TaskSpec) -> list[str]:
    """Every directory the spec backs up, and every place it writes backups or staging to."""
    paths = []
    for source in spec.sources:
        paths += [path for _, path in source.plugin.backed_up_dirs(source.options)]
        paths += [path for _, path, _ in source.target.local_dirs()]
    return paths + [spec.staging_dir]


def check_destination(spec: TaskSpec, destination: str) -> Path:
    """A restore destination directory: absolute, normalised, allow-listed characters, no symbolic
    link in any existing component, and neither inside nor around a backed-up directory, a LocalDir
    target or the staging area.  Raises :class:`RestoreError` naming the rule and the remedy."""
    text = destination or ""
    if not text.startswith("/"):
        raise RestoreError(f"destination {text!r} must be an absolute directory such as /srv/restore/oms")
    if not _DESTINATION_CHARS.match(text):
        bad = sorted({c for c in text if not _DESTINATION_CHARS.match(c)})
        raise RestoreError(f"destination {text!r} contains {''.join(bad)!r}; use only letters, digits and . _ / @ + = , : -")
    norm = posixpath.normpath(text)
    if norm != text.rstrip("/") or text.startswith("//") or norm == "/":
        raise RestoreError(f"destination {text!r} must be a normalised directory below / (no '.', '..' or '//')")
    probe = "/"
    for part in norm.strip("/").split("/"):
        probe = posixpath.join(probe, part)
        if os.path.islink(probe):
            raise RestoreError(f"destination {norm!r} has a symbolic link in its path ({probe}); give the real path")
        if not os.path.lexists(probe):
            break
    for live in live_paths(spec):
        if norm == live or norm.startswith(live.rstrip("/") + "/"):
            raise RestoreError(f"destination {norm!r} lies inside {live!r}, which task {spec.name} backs up or "
                               "writes to; restore into a new directory elsewhere (or use in_place for files)")
        if live.startswith(norm + "/"):
            raise RestoreError(f"destination {norm!r} contains {live!r}, which task {spec.name} backs up or writes to; "
                               "restore into a new directory elsewhere")
    return Path(norm)


def destination_for(plan: RestorePlan, destination: str, keep_running: bool = False, port: int = 0) -> Any:
    """:func:`parse_destination` for a restore plan (its point in time and bridge included)."""
    return parse_destination(plan.spec, plan.source, destination, keep_running, port, plan.point_in_time, plan.bridge)


def parse_destination(spec: TaskSpec, source: Source, destination: str, keep_running: bool = False, port: int = 0,
                      point_in_time: str | None = None, bridge: Manifest | None = None) -> Any:
    """The kind's destination object from the text a user gives (a directory or a connection id),
    checked by :func:`check_destination`; the kind comes from the spec, never from a manifest."""
    kind = source.plugin
    destination = (destination or "").strip()
    if not destination:
        raise RestoreError(f"a destination is required: {destination_hint(source)}")
    if kind.restores_into == "connection":
        if not _CONN_ID.match(destination):
            raise RestoreError(f"destination {destination!r} is not an Airflow connection id (letters, digits, _ . -)")
        where: Any = destination
    else:
        where = check_destination(spec, destination)
    return kind.destination(where, RestoreRequest(keep_running=keep_running, port=port, point_in_time=point_in_time,
                                                  bridge=bridge))


def destination_hint(source: Source) -> str:
    if source.plugin.restores_into == "connection":
        return f"the Airflow connection of an empty directory server ({source.name} is {source.kind})"
    return f"a new directory ({source.name} is {source.kind})"


def execute_plan(plan: RestorePlan, dest: Any) -> dict[str, Any]:
    """Restore the verified chain with the spec's kind (a manifest never chooses how it is restored)."""
    foreign = [m.set for m in plan.chain if m.kind != plan.source.kind]
    if foreign:
        raise RestoreError(f"refusing to restore: {', '.join(foreign)} recorded kind "
                           f"{plan.chain[0].kind if plan.chain[0].kind != plan.source.kind else plan.chain[-1].kind}, "
                           f"but source {plan.source.name} is of kind {plan.source.kind} in the spec")
    log.info("restoring %s from chain %s", plan.chain[-1].set, " -> ".join(m.set for m in plan.chain))
    result = plan.source.plugin.restore(plan.chain, plan.open_archive, dest)
    return {"set": plan.chain[-1].set, "chain": [m.set for m in plan.chain], **result}


def reading_from(spec: TaskSpec, source_name: str, directory: str | Path) -> TaskSpec:
    """The spec with ``source_name`` read from ``directory`` alone: a copy of the task's directory
    (``<task>_<created>``, e.g. fetched from an object store) or the folder that holds it.  For a
    restore on a machine that has only the files (and, for encrypted sets, the key: ``--key-file``)."""
    from metabackup.targets.localdir import LocalDirConfig

    folder = Path(directory).resolve()
    root = folder.parent if folder.name == spec.task_dir else folder
    if not (root / spec.task_dir).is_dir():
        raise RestoreError(f"{directory} is not task {spec.name}'s directory {spec.task_dir} and does not hold it; "
                           "give the folder that holds the sets' files (<set>.manifest.json beside each archive)")
    source = spec.source(source_name)
    here = LocalDirConfig.model_validate({"type": "LocalDir", "path": str(root)})
    moved = source.model_copy(update={"target": here, "copies": ()})
    return spec.model_copy(update={"sources": tuple(moved if s.name == source_name else s for s in spec.sources)})


def restore_source(spec: TaskSpec, source_name: str, dest: Any, set_stem: str | None = None,
                   point_in_time: str | None = None, holder: str | None = None,
                   location: str | None = None) -> dict[str, Any]:
    """Restore ``source_name`` at a set (default: the latest) or at a point in time (PostgreSQL
    kinds: the chain of the first set that reaches it, replayed up to that moment), holding the
    source's lease so no backup's retention removes the chain meanwhile.  The chain is read from
    ``location`` (primary, mirror, copy N) or, by default, from the first location where it is
    intact; the result names it."""
    holder = holder or f"restore by {socket.gethostname()} pid {os.getpid()}"
    with lock_for(spec, source_name).held(holder):
        plan = verified_plan(spec, source_name, set_stem, point_in_time, location)
        request = RestoreRequest(point_in_time=plan.point_in_time, bridge=plan.bridge)
        if isinstance(dest, (str, Path)) and plan.source.plugin.restores_into == "directory":
            dest = plan.source.plugin.destination(Path(dest), request)
        elif plan.point_in_time:  # a destination object built before the plan knew its moment
            dest = replace(dest, target_time=plan.point_in_time, bridge=plan.bridge)
        return {**execute_plan(plan, dest), "location": plan.location, "read_from": plan.target.uri}


# ---------------------------------------------------------------------------------------------
# In place (see metabackup.inplace) and validation
# ---------------------------------------------------------------------------------------------
def in_place_kinds() -> list[str]:
    from metabackup.sources import KINDS, source_kind

    return [name for name in KINDS.names() if source_kind(name).in_place]


def validate_restore(plan: RestorePlan, destination: Any, in_place: bool = False) -> dict[str, Any]:
    """Check the restored state against what the set's manifest recorded; raise if it differs.
    ``destination`` is the text a user gave (parsed as for the restore) or the destination object."""
    if isinstance(destination, str) and not in_place:
        destination = destination_for(plan, destination)
    checks = plan.source.plugin.validate_restored(plan.chain, plan.source, destination, in_place)
    log.info("validated the restore of %s: %s", plan.chain[-1].set, checks)
    return checks
