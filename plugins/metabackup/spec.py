"""Backup task specs: one YAML file per task, mirroring the cluster manager's "create backup task" form.

``load_spec(path)`` returns a validated, immutable :class:`TaskSpec` or raises :class:`SpecError`
listing every problem found, each naming the file, the field and the reason.  See
``include/backup_tasks/default.yaml`` for an annotated example and README for the field table.

The task-level fields are models here; each source's options are its kind's model
(:data:`metabackup.sources.KINDS`) and each target's settings its type's model
(:data:`metabackup.targets.TYPES`).  A file is read in two passes: the task fields, then each
source against its kind and target type; then the rules that span fields (backups never inside a
backed-up directory, ``full_every_n`` within retention).  ``python -m metabackup schema`` prints the
JSON Schema of the whole file.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pendulum
from pydantic import AfterValidator, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from metabackup.errors import SpecClash, SpecError
from metabackup.fields import (
    AbsolutePath,
    AwareTime,
    ProblemRow,
    SpecModel,
    TextList,
    between,
    inside,
    key_text,
    matching,
    path_under,
    problems,
    short,
    short_text,
)
from metabackup.keys import KeyConfig, SpecEncryption
from metabackup.service import ServiceControl
from metabackup.spec_yaml import load_yaml_with_texts
from metabackup.targets.base import TargetConfig

__all__ = ["SOURCE_NAMES", "Policy", "Schedule", "Source", "SpecClash", "SpecError", "TaskSpec", "check_no_name_clash",
           "check_task_limit", "dag_file_name", "max_tasks", "load_spec", "load_spec_dir", "name_clash_error", "same_name_files"]

SOURCE_NAMES = ("OMS", "LdapServer", "DBService", "NameNode")
TaskType = Literal["periodic", "manual"]
Period = Literal["hour", "day"]
PolicyType = Literal["full_then_incremental", "full_always", "full_every_n"]
DEFAULT_DATA_PATH = "/srv/BigData"

_NAME = r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}"
_QUEUE = r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}"
QueueName = matching(_QUEUE, "is not a valid queue name (letters, digits, _ . : -, at most 128)",
                     "a Celery queue: the workers listening on it do the work")
PoolName = matching(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}", "is not a valid Airflow pool name (letters, digits, _ . -)",
                    "the Airflow pool every task of the task's DAGs draws a slot from")
DEFAULT_POOL = "metabackup"
#: a worker's own staging directory: overrides every spec's staging_dir on that host
STAGING_ENV = "METABACKUP_STAGING_DIR"
#: how many task specs a spec folder may hold (the cluster manager's limit is 100)
MAX_TASKS_ENV = "METABACKUP_MAX_TASKS"
DEFAULT_MAX_TASKS = 100


def _timezone(value: str) -> str:
    try:
        pendulum.timezone(value)
    except Exception:
        raise ValueError(f"unknown IANA timezone {short(value)}") from None
    return value


TaskName = matching(_NAME, "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit",
                    "the task's name: also its file's name")
# 3.10 unquoted would be the float 3.1: strict types refuse it
ClusterVersion = matching(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,31}", "must be letters, digits, '.' or '-' (no '_', it separates "
                          "name parts)", "the cluster's version, e.g. \"3.5.0\" (quoted)")
TimezoneName = Annotated[str, AfterValidator(_timezone), Field(description="an IANA timezone, e.g. Asia/Shanghai")]


class Schedule(SpecModel):
    """When a periodic task runs: from ``start``, every ``every`` hours or days."""

    start: AwareTime
    period: Period
    every: int = 1

    @model_validator(mode="after")
    def _every_in_range(self) -> Schedule:
        limit = 24 * 31 if self.period == "hour" else 366
        if not 1 <= self.every <= limit:
            raise ProblemRow("every", f"must be between 1 and {limit}, got {self.every}")
        return self

    @property
    def interval(self) -> pendulum.Duration:
        return pendulum.duration(hours=self.every) if self.period == "hour" else pendulum.duration(days=self.every)


class Policy(SpecModel):
    """Full or incremental: ``full_then_incremental`` (default), ``full_always``, or ``full_every_n`` with ``n``."""

    type: PolicyType = "full_then_incremental"
    n: int | None = Field(None, description="full_every_n only: a full every n runs (at least 2)")

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _n_fits_type(self) -> Policy:
        if self.type == "full_every_n":
            if self.n is None:
                raise ProblemRow("n", "is required")
            if self.n < 2:
                raise ProblemRow("n", f"must be at least 2 (n=1 is full_always), got {self.n}")
        elif self.n is not None:
            raise ProblemRow("n", f"only applies to full_every_n, not {self.type}")
        return self


class Source(SpecModel):
    """One source of a task: its name, its kind with that kind's options, its target, and the
    off-site ``copies`` each committed set is replicated to (each a target with its own catalog)."""

    name: str
    kind: str
    options: SerializeAsAny[SpecModel]
    target: SerializeAsAny[TargetConfig]
    copies: tuple[SerializeAsAny[TargetConfig], ...] = ()
    #: how to stop, start and check the source's service, and its live directories (in-place restore)
    service: ServiceControl | None = None
    #: the Celery queue of this source's tasks (None: the spec's ``queue``)
    queue: str | None = None

    def live_dirs(self) -> list[tuple[str, str]]:
        """The live directories an in-place restore of this source replaces, as ``(field, path)``."""
        return self.plugin.live_dirs(self.options, self.service)

    def locations(self) -> list[tuple[str, TargetConfig]]:
        """Every place this source's sets can be read from, in the order a restore tries them:
        ``primary``, a LocalDir's standby ``mirror``, then ``copy 1``, ``copy 2``..."""
        found = [("primary", self.target)]
        mirror = self.target.mirror_location()
        if mirror is not None:
            found.append(("mirror", mirror))
        return found + [(f"copy {i}", copy) for i, copy in enumerate(self.copies, 1)]

    def location(self, label: str) -> TargetConfig:
        """The target of one location (``primary``, ``mirror``, ``copy N``)."""
        for name, config in self.locations():
            if name == label:
                return config
        raise KeyError(f"source {self.name} has no location {label!r}; it has "
                       f"{', '.join(name for name, _ in self.locations())}")

    @property
    def plugin(self) -> Any:
        """The :class:`~metabackup.sources.SourceKind` of this source."""
        from metabackup.sources import source_kind

        return source_kind(self.kind)


def dag_file_name(task_name: str) -> str:
    """The DAG file of a task: ``backup_<name>.py`` (its backup and restore DAGs)."""
    return f"backup_{task_name}.py"


class TaskSpec(SpecModel):
    """A backup task: the cluster manager's "create backup task" form as a YAML file."""

    path: str = Field("", exclude=True, description="the spec file (set by load_spec)")
    name: TaskName
    timezone: TimezoneName = "UTC"
    created: AwareTime
    cluster_version: ClusterVersion
    type: TaskType
    schedule: Schedule | None = None
    policy: Policy = Field(default_factory=Policy)
    data_path: AbsolutePath = Field(DEFAULT_DATA_PATH, validate_default=True)
    staging_dir: str = Field("LocalBackup/.staging", validate_default=True,
                             description="absolute, or relative to data_path (default <data_path>/LocalBackup/.staging)")
    sources: tuple[Source, ...] = Field((), exclude=True)
    queue: QueueName | None = Field(
        None, description="the Celery queue of the preflight and record tasks, and of every source without a queue "
                          "of its own")
    pool: PoolName = Field(DEFAULT_POOL, description="the Airflow pool every backup and restore task draws a slot "
                                                     "from (created with 1 slot when missing)")
    encryption: SpecEncryption | None = Field(
        None, description="the key that encrypts every off-cluster location's sets (and, with on_cluster, all)")
    compression: Literal["gzip", "zstd"] = Field(
        "gzip", description="how archives are compressed: gzip (<set>.tar.gz, the default) or zstd (<set>.tar.zst)")
    retries: between(0, 10) = 2
    retry_delay: between(1, 3600) = Field(60, description="seconds before the first retry; doubles up to 30 minutes")
    description: str = ""
    tags: TextList = Field((), description="DAG tags")

    @field_validator("staging_dir")
    @classmethod
    def _staging_under_data_path(cls, value: str, info: ValidationInfo) -> str:
        override = os.environ.get(STAGING_ENV)
        if override:  # this worker's own staging area (README, Deployment)
            if not override.startswith("/") or ".." in override.split("/"):
                raise ValueError(f"${STAGING_ENV} must be an absolute path without '..', got {short(override)}")
            return posixpath.normpath(override)
        return path_under(value, info.data.get("data_path") or DEFAULT_DATA_PATH)

    @model_validator(mode="after")
    def _schedule_fits_type(self) -> TaskSpec:
        if self.type == "periodic" and self.schedule is None:
            raise ProblemRow("schedule", "is required for a periodic task (start, period, every)")
        if self.type == "manual" and self.schedule is not None:
            raise ProblemRow("schedule", "a manual task has no schedule; remove it or set type: periodic")
        if self.created > pendulum.now("UTC").add(minutes=5):
            # Airflow starts no task of a run dated before the DAG's start date (the creation time)
            raise ProblemRow("created", f"{self.created.isoformat()} is in the future: a task is created before it "
                                        "runs, and manual runs would do nothing until then")
        return self

    def encryption_for(self, location: TargetConfig) -> KeyConfig | None:
        """The key that encrypts sets at ``location`` (a source's target or copy), or None: the
        location's own ``encryption`` (``enabled: false``: none), else the spec's when the location is
        off-cluster or the spec's ``on_cluster`` is set."""
        own = location.encryption
        if own is not None:
            return own if own.enabled else None
        if self.encryption is not None and self.encryption.enabled and (location.off_cluster or self.encryption.on_cluster):
            return KeyConfig(key_id=self.encryption.key_id, key_command=self.encryption.key_command)
        return None

    def unencrypted_off_cluster(self) -> list[str]:
        """Each off-cluster location whose sets are stored unencrypted (``source location uri``)."""
        return [f"{source.name} {label} {config.uri(self.task_dir)}" for source in self.sources
                for label, config in source.locations()
                if config.off_cluster and self.encryption_for(config) is None]

    @property
    def dag_id(self) -> str:
        return f"backup_{self.name}"

    @property
    def restore_dag_id(self) -> str:
        return f"restore_{self.name}"

    @property
    def dag_file_name(self) -> str:
        """The task's two-line DAG file in the DAGs folder (it builds both DAGs)."""
        return dag_file_name(self.name)

    @property
    def task_dir(self) -> str:
        """``<task name>_<creation time>``: the task's directory at every target and in staging."""
        from metabackup.naming import task_dir_name

        return task_dir_name(self.name, self.created, self.timezone)

    def source(self, name: str) -> Source:
        for src in self.sources:
            if src.name == name:
                return src
        raise KeyError(f"task {short(self.name)} has no source {short(name)}; it has {[s.name for s in self.sources]}")


# ---------------------------------------------------------------------------------------------
# Reading a spec file
# ---------------------------------------------------------------------------------------------
def load_spec(path: str | Path) -> TaskSpec:
    """Read and validate one task spec; raise :class:`SpecError` naming file, field and reason."""
    path = Path(path)
    raw, texts = load_yaml_with_texts(path)
    if not isinstance(raw, dict):
        raise SpecError([(str(path), "<file>", f"must be a YAML mapping of task fields, got {type(raw).__name__}")])
    rows: list[tuple[str, str]] = []
    fields = {key: value for key, value in raw.items() if key not in ("sources", "path")}
    if "path" in raw:
        rows.append(("path", f"unknown field (allowed: {', '.join(_top_fields())})"))
    spec = None
    try:
        spec = TaskSpec.model_validate(fields)
    except ValidationError as exc:
        rows += problems(exc, "", texts, TaskSpec, extra_allowed=("sources",))
    name = raw.get("name")
    if isinstance(name, str) and re.fullmatch(_NAME, name) and path.suffix in (".yaml", ".yml") and path.stem != name:
        rows.append(("name", f"{short(name)} must match the file name {short(path.name)} (one task per file, named after it)"))
    data_path = spec.data_path if spec else DEFAULT_DATA_PATH
    sources = _sources(raw.get("sources"), data_path, texts, rows)
    if spec is not None:
        rows += _backups_outside_sources(spec, sources)
        rows += _every_n_fits_retention(spec.policy, sources)
    if rows:
        raise SpecError([(str(path), fld, reason) for fld, reason in rows])
    return spec.model_copy(update={"path": str(path), "sources": tuple(sources)})


def _top_fields() -> list[str]:
    return sorted(name for name, info in TaskSpec.model_fields.items() if not info.exclude) + ["sources"]


def _sources(raw: Any, data_path: str, texts: dict[str, str], rows: list[tuple[str, str]]) -> list[Source]:
    from metabackup.sources import KINDS, source_kind
    from metabackup.targets import TYPES

    if raw is None:
        rows.append(("sources", f"is required: a mapping of source name ({', '.join(SOURCE_NAMES)}) to its settings"))
        return []
    if not isinstance(raw, dict) or not raw:
        rows.append(("sources", f"must be a non-empty mapping of source name to settings; got {short(raw)}"))
        return []
    context = {"data_path": data_path}
    out = []
    for name, body in raw.items():
        where = f"sources.{key_text(name)}"
        if name not in SOURCE_NAMES:
            rows.append((where, f"unknown source {short(name)} (allowed: {', '.join(SOURCE_NAMES)})"))
            continue
        if not isinstance(body, dict):
            rows.append((where, f"must be a mapping with kind, its options and target; got {short(body)}"))
            continue
        kind = _choice(body, "kind", where, KINDS.names(), rows, texts, "unknown kind")
        options = None
        if kind is not None:
            model = source_kind(kind).Options
            try:
                options = model.model_validate({k: v for k, v in body.items() if k not in _SOURCE_FIELDS},
                                               context=context)
            except ValidationError as exc:
                rows += problems(exc, where, texts, model, extra_allowed=_SOURCE_FIELDS)
        target = None
        target_raw = body.get("target")
        if target_raw is None:
            rows.append((f"{where}.target", "is required: where this source's backups are kept "
                                            f"({' or '.join(TYPES.names())})"))
        else:
            target = _target(target_raw, f"{where}.target", context, texts, rows)
        copies_raw = body.get("copies") or []
        if not isinstance(copies_raw, list):
            rows.append((f"{where}.copies", f"must be a list of targets; got {short(copies_raw)}"))
            copies_raw = []
        copies = [_target(raw, f"{where}.copies[{i}]", context, texts, rows) for i, raw in enumerate(copies_raw)]
        queue = body.get("queue")
        if queue is not None and not (isinstance(queue, str) and re.fullmatch(_QUEUE, queue)):
            rows.append((f"{where}.queue", f"{short(queue)} is not a valid queue name (letters, digits, _ . : -, at "
                                           "most 128); it names the Celery queue of this source's tasks"))
            queue = None
            settings_ok = False
        else:
            settings_ok = True
        service = None
        if body.get("service") is not None:
            try:
                service = ServiceControl.model_validate(body["service"])
            except ValidationError as exc:
                rows += problems(exc, f"{where}.service", texts, ServiceControl)
                settings_ok = False
        if options is not None and target is not None and None not in copies and settings_ok:
            plugin = source_kind(kind)
            for fld, config in [("target", target), *((f"copies[{i}]", c) for i, c in enumerate(copies))]:
                if (problem := plugin.target_problem(options, config)) is not None:
                    rows.append((f"{where}.{fld}", problem))
            if service is not None:
                # a field given as "../<name>" is the source's own option, not the service block's
                rows += [(f"{where}.{fld[3:]}" if fld.startswith("../") else f"{where}.service.{fld}", problem)
                         for fld, problem in plugin.service_problems(options, service)]
            out.append(Source(name=name, kind=kind, options=options, target=target, copies=tuple(copies),
                              service=service, queue=queue))
    return out


_SOURCE_FIELDS = ("kind", "target", "copies", "service", "queue")


def _target(raw: Any, where: str, context: dict[str, Any], texts: dict[str, str],
            rows: list[tuple[str, str]]) -> TargetConfig | None:
    """A target's settings (``target``, or an item of ``copies``) by its type's model."""
    from metabackup.targets import TYPES, target_config

    if not isinstance(raw, dict):
        rows.append((where, f"must be a mapping with type, path and max_backups; got {short(raw)}"))
        return None
    type_name = _choice(raw, "type", where, TYPES.names(), rows, texts, None)
    if type_name is None:
        return None
    model = target_config(type_name)
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        rows += problems(exc, where, texts, model)
    return None


def _choice(raw: dict[str, Any], key: str, where: str, names: list[str], rows: list[tuple[str, str]],
            texts: dict[str, str], unknown: str | None) -> str | None:
    """The plug-in name at ``raw[key]``: a registered kind or target type."""
    fld = f"{where}.{key}"
    value = raw.get(key)
    if value is None:
        rows.append((fld, "is required"))
    elif not isinstance(value, str):
        rows.append((fld, f"must be a string, got {type(value).__name__} {short(value)}"))
    elif value not in names:
        rows.append((fld, f"{unknown} {short(value)} (available: {', '.join(names)})" if unknown
                          else f"must be one of {', '.join(names)}; got {short(value)}"))
    else:
        return value
    return None


def _backups_outside_sources(spec: TaskSpec, sources: list[Source]) -> list[tuple[str, str]]:
    """Where backups are written (LocalDir paths and mirrors, staging) and what is backed up
    (files/oms paths) must not overlap: a backup inside a source would be backed up again by every
    run, and a source inside a backup directory would include (and be pruned by) retention."""
    staging_note = "" if "staging_dir" in spec.model_fields_set else " (the default, <data_path>/LocalBackup/.staging)"
    backup_dirs = [("staging_dir", spec.staging_dir, staging_note)]
    source_dirs = []
    for source in sources:
        where = f"sources.{key_text(source.name)}"
        backup_dirs += [(f"{where}.target.{fld}", path, note) for fld, path, note in source.target.local_dirs()]
        for i, copy in enumerate(source.copies):
            backup_dirs += [(f"{where}.copies[{i}].{fld}", path, note) for fld, path, note in copy.local_dirs()]
        source_dirs += [(f"{where}.{fld}", path) for fld, path in source.plugin.backed_up_dirs(source.options)]
        if source.service is not None:
            source_dirs += [(f"{where}.service.data_dirs[{i}]", path) for i, path in enumerate(source.service.data_dirs)
                            if (f"{where}.service.data_dirs[{i}]", path) not in source_dirs]
    rows = []
    for b_fld, b_dir, b_note in backup_dirs:
        for s_fld, s_dir in source_dirs:
            if inside(b_dir, s_dir):
                where = "is" if b_dir == s_dir else "lies inside"
                rows.append((b_fld, f"{short(b_dir)}{b_note} {where} the source directory {short(s_dir)} ({s_fld}): every "
                                    "run would back up the backups; choose a directory outside every source path"))
            elif inside(s_dir, b_dir):
                rows.append((s_fld, f"{short(s_dir)} lies inside {b_fld} {short(b_dir)}{b_note}: the source would "
                                    "hold the backups and the staging files; back up a directory outside it"))
    return rows


def _every_n_fits_retention(policy: Policy, sources: list[Source]) -> list[tuple[str, str]]:
    """``full_every_n`` promises a full every n runs; a chain can never be longer than its target's
    ``max_backups`` (the decision starts a full first), so a larger n would silently act as a smaller one."""
    if policy.type != "full_every_n" or policy.n is None:
        return []
    rows = []
    for source in sources:
        keep = source.target.max_backups
        if policy.n > keep:
            given = "max_backups" in source.target.model_fields_set
            rows.append((f"sources.{key_text(source.name)}.target.max_backups",
                         f"is {keep}{'' if given else ' (the default)'}, below policy.n = {policy.n} (full_every_n): "
                         f"a chain holds at most max_backups sets, so a full would come every {keep} runs, not every "
                         f"{policy.n}; raise max_backups to at least {policy.n} (or lower policy.n to {keep})"))
    return rows


def same_name_files(path: str | Path) -> list[Path]:
    """The other spec files beside ``path`` whose name differs from it at most in case (``Nightly.yaml``
    beside ``nightly.yaml``, or ``nightly.yml``): one directory listing, cheap enough for DAG parsing."""
    path = Path(path)
    key = path.stem.lower()
    try:
        return sorted(p for p in path.parent.glob("*.y*ml") if p.stem.lower() == key and p.name != path.name)
    except OSError:
        return []


def max_tasks() -> int:
    """How many task specs one spec folder may hold: ``$METABACKUP_MAX_TASKS``, default 100."""
    raw = os.environ.get(MAX_TASKS_ENV, "")
    if not raw:
        return DEFAULT_MAX_TASKS
    if not raw.isdigit() or int(raw) < 1:
        raise SpecError([(f"${MAX_TASKS_ENV}", "<environment>", f"must be a whole number of at least 1, got {short(raw)}")])
    return int(raw)


def over_task_limit(paths: list[Path], limit: int | None = None) -> list[Path]:
    """The spec files past the folder's task limit: all files count, the first ``limit`` in name
    order are kept (so adding a spec never moves an older one past the limit unless it sorts before it)."""
    limit = max_tasks() if limit is None else limit
    return sorted(paths)[limit:]


def task_limit_error(path: Path, count: int, limit: int) -> SpecError:
    return SpecError([(str(path), "<file>",
                       f"the spec folder {path.parent} holds {count} task specs and at most {limit} are allowed "
                       f"(${MAX_TASKS_ENV}; the cluster manager allows 100): this file is past the limit in name order "
                       f"and is not loaded. Remove specs no longer used, or raise ${MAX_TASKS_ENV}")])


def check_task_limit(path: str | Path) -> None:
    """Raise :class:`SpecError` when ``path`` is past its folder's task limit (one directory listing)."""
    path = Path(path)
    try:
        paths = list(path.parent.glob("*.y*ml"))
    except OSError:
        return
    limit = max_tasks()
    if len(paths) > limit and path in over_task_limit(paths, limit):
        raise task_limit_error(path, len(paths), limit)


def name_clash_error(paths: list[Path], name: str) -> SpecError:
    """The same task name (ignoring case) in several files: one error row per file, naming them all."""
    files = ", ".join(p.name for p in sorted(paths))
    case = "" if len({p.stem for p in paths}) == 1 else " (they differ only in case, which still names one " \
        "output directory on a case-insensitive file system)"
    return SpecClash([(str(p), "name", f"task name {short(name)} is used by several files ({files}){case}; names "
                                       "must be unique") for p in sorted(paths)])


def check_no_name_clash(path: str | Path) -> None:
    """Raise :class:`SpecError` when another spec file beside ``path`` names the same task, ignoring case."""
    path = Path(path)
    others = same_name_files(path)
    if others:
        error = name_clash_error([path, *others], path.stem)
        mine = [row for row in error.problems if row[0] == str(path)]
        raise SpecError([(file, fld, f"{reason} (the other: {', '.join(str(o) for o in others)})")
                         for file, fld, reason in mine])


def load_spec_dir(directory: str | Path) -> tuple[dict[str, TaskSpec], list[SpecError]]:
    """Load every ``*.yaml`` spec in a directory: valid specs by name, and one error per bad file.

    Cross-file rules (task names unique, case-insensitively, since they name output directories)
    are checked here too; a clash is reported against every file involved, valid or not.  A file
    that cannot even be read is one more error: it never stops the others.
    """
    specs: dict[str, TaskSpec] = {}
    errors: list[SpecError] = []
    seen: dict[str, list[TaskSpec]] = {}
    paths = sorted(Path(directory).glob("*.y*ml"))
    limit = max_tasks()
    past = over_task_limit(paths, limit)
    errors += [task_limit_error(path, len(paths), limit) for path in past]
    paths = [p for p in paths if p not in past]
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem.lower(), []).append(path)
    clashing = {p for group in by_stem.values() if len(group) > 1 for p in group}
    for path in paths:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            errors.append(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others
            errors.append(SpecError([(str(path), "<file>", f"could not be checked ({type(exc).__name__}: "
                                                           f"{short_text(exc)})")]))
            continue
        if path not in clashing:
            seen.setdefault(spec.name.lower(), []).append(spec)
    for group in by_stem.values():
        if len(group) > 1:
            errors.append(name_clash_error(group, group[0].stem))
    for group in seen.values():
        if len(group) > 1:
            files = ", ".join(Path(s.path).name for s in group)
            for s in group:
                errors.append(SpecClash([(s.path, "name", f"task name {short(s.name)} is used by several files ({files}); names must be unique")]))
        else:
            specs[group[0].name] = group[0]
    return specs, errors
