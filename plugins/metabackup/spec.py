"""Backup task specs: one YAML file per task, mirroring the cluster manager's "create backup task" form.

``load_spec(path)`` returns a validated, immutable :class:`TaskSpec` or raises :class:`SpecError`
listing every problem found, each naming the file, the field and the reason.  See
``include/backup_tasks/default.yaml`` for an annotated example and README for the field table.
"""

from __future__ import annotations

import datetime
import json
import os
import posixpath
import re
import reprlib
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import yaml

from metabackup.errors import MetabackupError

SOURCE_NAMES = ("OMS", "LdapServer", "DBService", "NameNode")
TASK_TYPES = ("periodic", "manual")
PERIODS = ("hour", "day")
POLICIES = ("full_then_incremental", "full_always", "full_every_n")
TARGET_TYPES = ("LocalDir", "LocalHDFS")
MAX_BACKUPS_RANGE = (1, 100)
DEFAULT_DATA_PATH = "/srv/BigData"
DEFAULT_NAMESERVICE = "hacluster"
DEFAULT_MAX_BACKUPS = 7

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")
_NAMESERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,63}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
# HDFS locations a backup must never be written to (published in README).  The trees are owned by
# a service that cleans or rewrites them (HBase, YARN log aggregation, the MapReduce history server,
# tmp sweepers): nothing below them either.  The shared parents are refused only themselves, since
# /user/<name>/... and /apps/<name>/... are ordinary places of one's own.
HDFS_SYSTEM_TREES = ("/tmp", "/system", "/hbase", "/mr-history", "/app-logs")
HDFS_SYSTEM_DIRS = ("/", "/user", "/apps", *HDFS_SYSTEM_TREES)


class SpecError(MetabackupError, ValueError):
    """A spec (or a set of specs) is invalid.  ``problems`` holds ``(file, field, reason)`` rows."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{file}: {fld}: {reason}" for file, fld, reason in problems]
        super().__init__("invalid backup task spec\n  " + "\n  ".join(lines))


class SpecClash(SpecError):
    """A problem across spec files (a task name used by several files), which no single file's DAG can see."""


@dataclass(frozen=True)
class Schedule:
    start: pendulum.DateTime
    period: str  # hour | day
    every: int

    @property
    def interval(self) -> pendulum.Duration:
        return pendulum.duration(hours=self.every) if self.period == "hour" else pendulum.duration(days=self.every)


@dataclass(frozen=True)
class Policy:
    type: str
    n: int | None = None  # full_every_n only


@dataclass(frozen=True)
class Target:
    type: str  # LocalDir | LocalHDFS
    path: str
    max_backups: int
    mirror: str | None = None  # LocalDir only: standby copy
    nameservice: str | None = None  # LocalHDFS only
    conn_id: str | None = None  # LocalHDFS only: the NameService's WebHDFS connection

    @property
    def webhdfs_conn_id(self) -> str:
        """LocalHDFS: the Airflow connection of the NameService (``webhdfs_<nameservice>`` by default)."""
        return self.conn_id or f"webhdfs_{self.nameservice}"


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    options: dict[str, Any]
    target: Target


def dag_file_name(task_name: str) -> str:
    """The DAG file of a task: ``backup_<name>.py`` (its backup and restore DAGs)."""
    return f"backup_{task_name}.py"


@dataclass(frozen=True)
class TaskSpec:
    path: str
    name: str
    created: pendulum.DateTime
    cluster_version: str
    timezone: str
    type: str
    schedule: Schedule | None
    policy: Policy
    data_path: str
    staging_dir: str
    sources: tuple[Source, ...]
    queue: str | None = None
    retries: int = 2
    retry_delay: int = 60  # seconds before the first retry; doubles up to 30 minutes
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

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
        raise KeyError(f"task {_short(self.name)} has no source {_short(name)}; it has {[s.name for s in self.sources]}")


# ---------------------------------------------------------------------------------------------
# Source kinds register the options they accept; the kind modules validate semantics further.
# ---------------------------------------------------------------------------------------------
def _inside(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or lies below it (both normalised absolute paths)."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def _files_options(v: _Validator, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    paths = v.required(raw, where, "paths", list)
    clean: list[str] = []
    first: dict[str, int] = {}
    for i, p in enumerate(paths or []):
        fld = f"{where}.paths[{i}]"
        if v.string_item(p, fld) is None:
            continue
        norm = v.absolute_local_path(fld, p)
        if not norm:
            continue
        if norm in first:
            same = "" if p == paths[first[norm]] else f" once normalised to {_short(norm)}"
            v.error(fld, f"{_short(p)} is the same directory as paths[{first[norm]}] {_short(paths[first[norm]])}"
                         f"{same}; list each directory once")
            continue
        first[norm] = i
        clean.append(norm)
        v.source_dirs.append((fld, norm))
    if paths is not None and not paths:
        v.error(f"{where}.paths", "must list at least one directory")
    for a in clean:
        for b in clean:
            if a != b and _inside(b, a):
                v.error(f"{where}.paths", f"{_short(b)} lies inside {_short(a)}; list each directory once")
    exclude = v.optional(raw, where, "exclude", list, [])
    for i, pat in enumerate(exclude):
        v.string_item(pat, f"{where}.exclude[{i}]", "a non-empty glob string")
    return {"paths": clean, "exclude": [p for p in exclude if isinstance(p, str)]}


def _ldap_options(v: _Validator, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    conn_id = v.required(raw, where, "conn_id", str)
    if conn_id is not None and not _CONN_ID.match(conn_id):
        v.error(f"{where}.conn_id", f"{_short(conn_id)} is not a valid Airflow connection id")
    bases = v.required(raw, where, "base_dns", list) or []
    if "base_dns" in raw and isinstance(raw["base_dns"], list) and not bases:
        v.error(f"{where}.base_dns", "must list at least one base DN")
    for i, dn in enumerate(bases):
        if not isinstance(dn, str):
            v.string_item(dn, f"{where}.base_dns[{i}]", "a DN string such as dc=hadoop,dc=com")
        elif "=" not in dn:
            v.error(f"{where}.base_dns[{i}]", f"{_short(dn)} is not a DN such as dc=hadoop,dc=com")
    method = v.choice(v.optional(raw, where, "change_method", str, "auto"), f"{where}.change_method",
                      ("auto", "accesslog", "digest"))
    page_size = v.in_range(v.optional(raw, where, "page_size", int, 500), f"{where}.page_size", 1, 10000)
    return {
        "conn_id": conn_id, "base_dns": [b for b in bases if isinstance(b, str)],
        "change_method": method or "auto", "page_size": page_size or 500,
        "include_config": v.optional(raw, where, "include_config", bool, True),
        "accesslog_base": v.optional(raw, where, "accesslog_base", str, "cn=accesslog"),
    }


_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")


def _postgres_options(v: _Validator, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    conn_id = v.required(raw, where, "conn_id", str)
    if conn_id is not None and not _CONN_ID.match(conn_id):
        v.error(f"{where}.conn_id", f"{_short(conn_id)} is not a valid Airflow connection id")
    slot = v.optional(raw, where, "slot", str, None)
    if slot is not None and not _SLOT.match(slot):
        v.error(f"{where}.slot", f"{_short(slot)} must be 1-63 lower-case letters, digits or '_' (a replication slot name)")
    bin_dir = v.optional(raw, where, "bin_dir", str, None)
    if bin_dir is not None:
        bin_dir = v.absolute_local_path(f"{where}.bin_dir", bin_dir)
    warn = v.in_range(v.optional(raw, where, "slot_warn_mb", int, 1024), f"{where}.slot_warn_mb", 1, 10**7)
    return {"conn_id": conn_id, "slot": slot, "bin_dir": bin_dir, "slot_warn_mb": warn or 1024}


def _oms_options(v: _Validator, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The manager: ``database`` (postgres options) plus ``paths``/``exclude`` (files options)."""
    database = v.required(raw, where, "database", dict) or {}
    v.only_known(database, f"{where}.database", {"conn_id", "slot", "bin_dir", "slot_warn_mb"})
    return {"database": _postgres_options(v, f"{where}.database", database),
            "files": _files_options(v, where, {k: val for k, val in raw.items() if k != "database"})}


DEFAULT_NAMENODE_TOOL = "hadoop metabackup.hdfs.NameNodeTool"


def _nameservice_and_connection(v: _Validator, where: str, raw: dict[str, Any]) -> tuple[str, str | None]:
    """``nameservice`` (default hacluster) and an optional WebHDFS ``conn_id``."""
    nameservice = v.optional(raw, where, "nameservice", str, DEFAULT_NAMESERVICE)
    if not _NAMESERVICE.match(nameservice):
        v.error(f"{where}.nameservice", f"{_short(nameservice)} is not a valid NameService name")
    conn_id = v.optional(raw, where, "conn_id", str, None)
    if conn_id is not None and not _CONN_ID.match(conn_id):
        v.error(f"{where}.conn_id", f"{_short(conn_id)} is not a valid Airflow connection id")
    return nameservice, conn_id


def _namenode_options(v: _Validator, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    """HDFS NameNode metadata: the NameService, its WebHDFS connection, and the RPC helper."""
    nameservice, conn_id = _nameservice_and_connection(v, where, raw)
    fs_uri = v.optional(raw, where, "fs_uri", str, f"hdfs://{nameservice}")
    if not re.match(r"^hdfs://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$", fs_uri or ""):
        v.error(f"{where}.fs_uri", f"{_short(fs_uri)} must be hdfs://<nameservice> or hdfs://<host>:<rpc port>")
    tool = v.optional(raw, where, "tool_command", str, DEFAULT_NAMENODE_TOOL)
    if not (tool or "").strip():
        v.error(f"{where}.tool_command", "must be a command line, e.g. 'hadoop metabackup.hdfs.NameNodeTool'")
    else:
        try:  # run as shlex.split(tool_command) + arguments (sources.namenode.NameNodeTool)
            argv = shlex.split(tool, posix=True)
        except ValueError as exc:
            v.error(f"{where}.tool_command", f"{_short(tool)} cannot be split into a command line ({exc}); "
                                             "check its quotes and backslashes")
        else:
            if not argv or not argv[0]:
                v.error(f"{where}.tool_command", f"{_short(tool)} names no program; write a command line, "
                                                 "e.g. 'hadoop metabackup.hdfs.NameNodeTool'")
    timeout = v.in_range(v.optional(raw, where, "timeout", int, 600), f"{where}.timeout", 10, 86400)
    return {"nameservice": nameservice, "conn_id": conn_id or f"webhdfs_{nameservice}", "fs_uri": fs_uri,
            "tool_command": tool, "timeout": timeout or 600}


SOURCE_KIND_OPTIONS = {"files": _files_options, "ldap": _ldap_options, "postgres": _postgres_options,
                       "oms": _oms_options, "namenode": _namenode_options}
_OMS_FIELDS = {"database", "paths", "exclude"}


class _Validator:
    def __init__(self, file: str, texts: dict[str, str] | None = None):
        self.file = file
        self.problems: list[tuple[str, str, str]] = []
        self.texts = texts or {}  # field -> source text of scalars YAML did not read as strings
        # local directories, for the overlap rules: (field, path) of files/oms sources, and of the
        # places backups are written (LocalDir paths and mirrors, the staging directory)
        self.source_dirs: list[tuple[str, str]] = []
        self.backup_dirs: list[tuple[str, str]] = []

    def error(self, fld: str, reason: str) -> None:
        self.problems.append((self.file, fld, reason))

    def _typename(self, kind: type | tuple[type, ...]) -> str:
        names = {str: "a string", int: "an integer", list: "a list", dict: "a mapping", bool: "true or false"}
        kinds = kind if isinstance(kind, tuple) else (kind,)
        return " or ".join(names.get(k, k.__name__) for k in kinds)

    def _typed(self, value: Any, fld: str, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            hint = self.quote_hint(fld, value) if str in kinds else ""
            self.error(fld, f"must be {self._typename(kind)}, got {type(value).__name__} {_short(value)}{hint}")
            return None
        return value

    def quote_hint(self, fld: str, value: Any) -> str:
        """For a name YAML read as a number, boolean or date: how to write it as a string."""
        if isinstance(value, bool):
            read_as = "true or false"
        elif isinstance(value, (int, float)):
            read_as = "a number"
        elif isinstance(value, (datetime.date, datetime.datetime)):
            read_as = "a date"
        else:
            return ""
        text = self.texts.get(fld, str(value))
        if len(text) > 64:
            return f" (YAML reads it as {read_as}): put it in double quotes"
        quoted = json.dumps(text)
        key = fld.rsplit(".", 1)[-1]
        write = quoted if key.endswith("]") else f"{key}: {quoted}"
        return f" (YAML reads {text} as {read_as}); quote it: write {write}"

    def string_item(self, value: Any, fld: str, what: str = "a non-empty string") -> str | None:
        """An element of a list of names (paths, globs, DNs, tags): a non-empty YAML string."""
        if isinstance(value, str) and value:
            return value
        hint = self.quote_hint(fld, value)
        self.error(fld, f"must be {what}, got {type(value).__name__} {_short(value)}{hint}")
        return None

    def required(self, raw: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...]) -> Any:
        fld = f"{where}.{key}" if where else key
        if key not in raw or raw[key] is None:
            self.error(fld, "is required")
            return None
        return self._typed(raw[key], fld, kind)

    def optional(self, raw: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        fld = f"{where}.{key}" if where else key
        if key not in raw or raw[key] is None:
            return default
        value = self._typed(raw[key], fld, kind)
        return default if value is None else value

    def only_known(self, raw: dict[str, Any], where: str, known: set[str]) -> None:
        for key in raw:
            if key not in known:
                fld = f"{where}.{_key_text(key)}" if where else _key_text(key)
                self.error(fld, f"unknown field (allowed: {', '.join(sorted(known))})")

    def choice(self, value: Any, fld: str, choices: tuple[str, ...]) -> Any:
        if value is not None and value not in choices:
            self.error(fld, f"must be one of {', '.join(choices)}; got {_short(value)}")
            return None
        return value

    def aware_time(self, value: Any, fld: str) -> pendulum.DateTime | None:
        if value is None:
            return None
        text = value.isoformat() if hasattr(value, "isoformat") else value
        if not isinstance(text, str):
            self.error(fld, f"must be an ISO-8601 time with a UTC offset, got {_short(value)}")
            return None
        try:
            parsed = pendulum.parse(text, exact=True)
        except Exception as exc:  # pendulum raises several types
            self.error(fld, f"is not an ISO-8601 time ({_short_text(exc)})")
            return None
        if not isinstance(parsed, pendulum.DateTime):
            self.error(fld, f"must be a date and time, got {_short(text)}")
            return None
        if parsed.tzinfo is None or re.search(r"(Z|[+\-]\d\d:?\d\d)$", text.strip()) is None:
            self.error(fld, f"is a naive time {_short(text)}: add a UTC offset such as +08:00 or Z")
            return None
        return parsed

    def in_range(self, value: Any, fld: str, low: int, high: int) -> Any:
        if isinstance(value, int) and not (low <= value <= high):
            self.error(fld, f"must be between {low} and {high}, got {value}")
            return None
        return value

    def absolute_local_path(self, fld: str, value: str) -> str | None:
        if not value.startswith("/"):
            self.error(fld, f"must be an absolute path, got {_short(value)}")
            return None
        if ".." in value.split("/"):
            self.error(fld, f"must not contain '..' (it would escape its root): {_short(value)}")
            return None
        return posixpath.normpath(value)

    def path_under(self, fld: str, value: str, root: str) -> str | None:
        """An absolute path, or one relative to ``root`` that stays inside it."""
        if ".." in value.split("/"):
            self.error(fld, f"must not contain '..' (it would escape its root {_short(root)}): {_short(value)}")
            return None
        return posixpath.normpath(value if value.startswith("/") else posixpath.join(root, value))


# ---------------------------------------------------------------------------------------------
# Reading a spec file.  Specs come from whoever can write the spec folder, and every DAG file parses
# its spec at import time in the scheduler's DAG processor: the reader refuses, fast and with a
# position, what a task spec never needs and an attacker or a slip would use:
#   - files over MAX_SPEC_BYTES (read no further than the cap),
#   - anchors and aliases (an alias "bomb" expands a few lines into billions of nodes),
#   - nesting deeper than MAX_SPEC_DEPTH (the composer recurses),
#   - duplicate mapping keys at any depth (the later value would silently win), and merge keys.
# It composes nodes with libyaml's parser when available and constructs with SafeConstructor.
# ---------------------------------------------------------------------------------------------
MAX_SPEC_BYTES = 64 * 1024
MAX_SPEC_DEPTH = 32

_SHORT = reprlib.Repr()
_SHORT.maxstring = 200
_SHORT.maxother = 200
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def _short(value: Any) -> str:
    """``repr`` cut to a readable length: a value quoted in a message never appears whole if long."""
    return _SHORT.repr(value)


def _short_text(text: str, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 40]}...({len(text)} characters)...{text[-20:]}"


def _key_text(key: Any) -> str:
    """A mapping key as it appears in a field path (``sources.OMS``), shortened if long or not text."""
    return key if isinstance(key, str) and len(key) <= 64 else _short(key)


class _Refused(yaml.YAMLError):
    def __init__(self, mark: Any, reason: str):
        super().__init__(reason)
        self.mark, self.reason = mark, reason


class _StrictComposer(yaml.composer.Composer):
    """A composer that refuses anchors, aliases and deep nesting as soon as the parser meets them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(event.start_mark, f"YAML aliases/anchors are not allowed (found alias *{_short_text(event.anchor, 40)}); "
                                             "write the value out in full")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark, f"YAML aliases/anchors are not allowed (found anchor &{_short_text(event.anchor, 40)}); "
                                             "write the value out in full")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise _Refused(event.start_mark, f"nesting deeper than {MAX_SPEC_DEPTH} levels is not allowed in a task spec")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PySpecLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _StrictComposer,
                    yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """yaml.SafeLoader's parts with the strict composer (used when PyYAML has no libyaml)."""

    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _StrictComposer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


_CParser = getattr(getattr(yaml, "_yaml", None), "CParser", None)
_SpecLoader: type = _PySpecLoader
if _CParser is not None and getattr(yaml, "__with_libyaml__", False):
    class _CSpecLoader(_StrictComposer, _CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """yaml.CSafeLoader's parser (libyaml) feeding the strict composer, then SafeConstructor."""

        def __init__(self, stream: str):
            _CParser.__init__(self, stream)
            _StrictComposer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _SpecLoader = _CSpecLoader

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(loader: Any, node: Any, path: str, problems: list[tuple[str, str]], texts: dict[str, str]) -> None:
    """Duplicate and non-scalar mapping keys at any depth (``problems``: field, reason), and the source
    text of every scalar YAML did not read as a string (``texts``: field -> text, for quoting hints)."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag != _STR_TAG:
            texts[path] = node.value
            try:  # the constructor keeps it for construct_document
                loader.construct_object(node)
            except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of 5000 digits
                problems.append((path or "<file>", f"line {node.start_mark.line + 1}: the value "
                                                   f"{_short_text(node.value, 60)} cannot be read ({_short_text(exc)})"))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_nodes(loader, item, f"{path}[{i}]", problems, texts)
    elif isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                problems.append((path or "<file>", f"YAML merge keys (<<, line {line}) are not allowed; write the fields out"))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append((path or "<file>", f"line {line}: a mapping key must be a plain name, not a "
                                                   f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}"))
                continue
            try:
                key = loader.construct_object(key_node)
            except (ValueError, TypeError, OverflowError) as exc:
                problems.append((path or "<file>", f"line {line}: the key {_short_text(key_node.value, 60)} cannot be "
                                                   f"read ({_short_text(exc)})"))
                continue
            fld = f"{path}.{_key_text(key)}" if path else _key_text(key)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key; the constructor reports it
                seen = None
            if seen is not None:
                problems.append((fld, f"duplicate key {_short(key)} at line {line} (first at line {seen}); the later "
                                      "value would silently replace the earlier one: keep one"))
            else:
                first[key] = line
            _check_nodes(loader, value_node, fld, problems, texts)


def _read_capped(path: Path) -> str:
    """The file's text, reading no more than the cap; a FIFO or device named *.yaml is refused, not read
    (O_NONBLOCK: opening a FIFO without a writer would otherwise hang the DAG processor)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SpecError([(str(path), "<file>", "is not a regular file; a task spec is a plain YAML file")])
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([(str(path), "<file>", f"cannot be read: {exc}")]) from exc
    if len(data) > MAX_SPEC_BYTES:
        size = max(info.st_size, len(data))
        raise SpecError([(str(path), "<file>", f"is {size} bytes, over the {MAX_SPEC_BYTES}-byte "
                                               f"({MAX_SPEC_BYTES // 1024} KiB) limit for a task spec")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([(str(path), "<file>", f"cannot be read: {exc}")]) from exc


def _load_yaml_with_texts(path: Path) -> tuple[Any, dict[str, str]]:
    """The document of ``path`` and the source text of its non-string scalars by field."""
    text = _read_capped(path)
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        problems: list[tuple[str, str]] = []
        texts: dict[str, str] = {}
        _check_nodes(loader, node, "", problems, texts)
        if problems:
            raise SpecError([(str(path), fld, reason) for fld, reason in problems])
        return loader.construct_document(node), texts
    except SpecError:
        raise
    except _Refused as exc:
        where = f"line {exc.mark.line + 1}, column {exc.mark.column + 1}"
        raise SpecError([(str(path), where, exc.reason)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = getattr(exc, "problem", None) or exc
        raise SpecError([(str(path), where, f"is not valid YAML: {_short_text(problem)}")]) from None
    except RecursionError:
        raise SpecError([(str(path), "<file>", "is nested too deeply to read")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor failing outside yaml.YAMLError
        raise SpecError([(str(path), "<file>", f"is not valid YAML: {_short_text(exc)}")]) from None
    finally:
        loader.dispose()


def _load_yaml(path: Path) -> Any:
    return _load_yaml_with_texts(path)[0]


_TOP_FIELDS = {
    "name", "created", "cluster_version", "timezone", "type", "schedule", "policy", "data_path",
    "staging_dir", "sources", "queue", "retries", "retry_delay", "description", "tags",
}


def load_spec(path: str | Path) -> TaskSpec:
    """Read and validate one task spec; raise :class:`SpecError` naming file, field and reason."""
    path = Path(path)
    raw, texts = _load_yaml_with_texts(path)
    v = _Validator(str(path), texts)
    if not isinstance(raw, dict):
        v.error("<file>", f"must be a YAML mapping of task fields, got {type(raw).__name__}")
        raise SpecError(v.problems)
    v.only_known(raw, "", _TOP_FIELDS)

    name = v.required(raw, "", "name", str)
    if name is not None and not _NAME.match(name):
        v.error("name", f"{_short(name)} must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
        name = None
    if name is not None and path.suffix in (".yaml", ".yml") and path.stem != name:
        v.error("name", f"{_short(name)} must match the file name {_short(path.name)} (one task per file, named after it)")

    timezone = v.optional(raw, "", "timezone", str, "UTC")
    try:
        pendulum.timezone(timezone)
    except Exception:
        v.error("timezone", f"unknown IANA timezone {_short(timezone)}")
        timezone = "UTC"

    created = v.aware_time(v.required(raw, "", "created", (str, object)), "created")
    if created is not None and created > pendulum.now("UTC").add(minutes=5):
        # Airflow starts no task of a run dated before the DAG's start date (the creation time)
        v.error("created", f"{created.isoformat()} is in the future: a task is created before it runs, and manual "
                           "runs would do nothing until then")
    version = v.required(raw, "", "cluster_version", str)  # 3.10 unquoted would be the float 3.1
    if version is not None:
        if not _VERSION.match(version):
            v.error("cluster_version", f"{_short(version)} must be letters, digits, '.' or '-' (no '_', it separates name parts)")

    task_type = v.choice(v.required(raw, "", "type", str), "type", TASK_TYPES)
    schedule = None
    if task_type == "periodic":
        schedule = _schedule(v, raw.get("schedule"))
    elif task_type == "manual" and raw.get("schedule") is not None:
        v.error("schedule", "a manual task has no schedule; remove it or set type: periodic")

    policy = _policy(v, raw.get("policy", "full_then_incremental"))

    data_path = v.optional(raw, "", "data_path", str, DEFAULT_DATA_PATH)
    data_path = v.absolute_local_path("data_path", data_path) or DEFAULT_DATA_PATH
    staging_raw = v.optional(raw, "", "staging_dir", str, "LocalBackup/.staging")
    staging_dir = v.path_under("staging_dir", staging_raw, data_path) or ""
    if staging_dir:
        v.backup_dirs.append(("staging_dir", staging_dir, "" if raw.get("staging_dir") is not None
                              else " (the default, <data_path>/LocalBackup/.staging)"))

    queue = v.optional(raw, "", "queue", str, None)
    retries = v.in_range(v.optional(raw, "", "retries", int, 2), "retries", 0, 10)
    retry_delay = v.in_range(v.optional(raw, "", "retry_delay", int, 60), "retry_delay", 1, 3600)
    description = v.optional(raw, "", "description", str, "")
    tags = v.optional(raw, "", "tags", list, [])
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            v.string_item(tag, f"tags[{i}]", "a string")

    sources = _sources(v, raw.get("sources"), data_path)
    _backups_outside_sources(v)
    _every_n_fits_retention(v, policy, sources, raw.get("sources"))

    if v.problems:
        raise SpecError(v.problems)
    return TaskSpec(
        path=str(path), name=name, created=created, cluster_version=version, timezone=timezone,
        type=task_type, schedule=schedule, policy=policy, data_path=data_path, staging_dir=staging_dir,
        sources=tuple(sources), queue=queue, retries=retries if retries is not None else 2,
        retry_delay=retry_delay or 60,
        description=description, tags=tuple(t for t in tags if isinstance(t, str)),
    )


def _every_n_fits_retention(v: _Validator, policy: Policy, sources: list[Source], raw_sources: Any) -> None:
    """``full_every_n`` promises a full every n runs; a chain can never be longer than its target's
    ``max_backups`` (the decision starts a full first), so a larger n would silently act as a smaller one."""
    if policy.type != "full_every_n" or not isinstance(policy.n, int):
        return
    for source in sources:
        keep = source.target.max_backups
        if policy.n > keep:
            fld = f"sources.{_key_text(source.name)}.target.max_backups"
            given = isinstance(raw_sources, dict) and isinstance(raw_sources.get(source.name), dict) and \
                isinstance(raw_sources[source.name].get("target"), dict) and \
                raw_sources[source.name]["target"].get("max_backups") is not None
            v.error(fld, f"is {keep}{'' if given else ' (the default)'}, below policy.n = {policy.n} (full_every_n): "
                         f"a chain holds at most max_backups sets, so a full would come every {keep} runs, not every "
                         f"{policy.n}; raise max_backups to at least {policy.n} (or lower policy.n to {keep})")


def _backups_outside_sources(v: _Validator) -> None:
    """Where backups are written (LocalDir paths and mirrors, staging) and what is backed up
    (files/oms paths) must not overlap: a backup inside a source would be backed up again by every
    run, and a source inside a backup directory would include (and be pruned by) retention."""
    for b_fld, b_dir, b_note in v.backup_dirs:
        for s_fld, s_dir in v.source_dirs:
            if _inside(b_dir, s_dir):
                where = "is" if b_dir == s_dir else "lies inside"
                v.error(b_fld, f"{_short(b_dir)}{b_note} {where} the source directory {_short(s_dir)} ({s_fld}): every "
                               "run would back up the backups; choose a directory outside every source path")
            elif _inside(s_dir, b_dir):
                v.error(s_fld, f"{_short(s_dir)} lies inside {b_fld} {_short(b_dir)}{b_note}: the source would "
                               "hold the backups and the staging files; back up a directory outside it")


def _schedule(v: _Validator, raw: Any) -> Schedule | None:
    if raw is None:
        v.error("schedule", "is required for a periodic task (start, period, every)")
        return None
    if not isinstance(raw, dict):
        v.error("schedule", f"must be a mapping with start, period, every; got {_short(raw)}")
        return None
    v.only_known(raw, "schedule", {"start", "period", "every"})
    start = v.aware_time(v.required(raw, "schedule", "start", (str, object)), "schedule.start")
    period = v.choice(v.required(raw, "schedule", "period", str), "schedule.period", PERIODS)
    every = v.optional(raw, "schedule", "every", int, 1)
    limit = 24 * 31 if period == "hour" else 366
    every = v.in_range(every, "schedule.every", 1, limit)
    if start is None or period is None or every is None:
        return None
    return Schedule(start=start, period=period, every=every)


def _policy(v: _Validator, raw: Any) -> Policy:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        v.error("policy", f"must be a policy name or a mapping with type (and n); got {_short(raw)}")
        return Policy("full_then_incremental")
    v.only_known(raw, "policy", {"type", "n"})
    kind = v.choice(v.required(raw, "policy", "type", str), "policy.type", POLICIES)
    n = raw.get("n")
    if kind == "full_every_n":
        n = v.required(raw, "policy", "n", int)
        if isinstance(n, int) and n < 2:
            v.error("policy.n", f"must be at least 2 (n=1 is full_always), got {n}")
    elif n is not None:
        v.error("policy.n", f"only applies to full_every_n, not {kind}")
        n = None
    return Policy(kind or "full_then_incremental", n)


def _sources(v: _Validator, raw: Any, data_path: str) -> list[Source]:
    if raw is None:
        v.error("sources", f"is required: a mapping of source name ({', '.join(SOURCE_NAMES)}) to its settings")
        return []
    if not isinstance(raw, dict) or not raw:
        v.error("sources", f"must be a non-empty mapping of source name to settings; got {_short(raw)}")
        return []
    out = []
    for name, body in raw.items():
        where = f"sources.{_key_text(name)}"
        if name not in SOURCE_NAMES:
            v.error(where, f"unknown source {_short(name)} (allowed: {', '.join(SOURCE_NAMES)})")
            continue
        if not isinstance(body, dict):
            v.error(where, f"must be a mapping with kind, its options and target; got {_short(body)}")
            continue
        kind = v.required(body, where, "kind", str)
        if kind is not None and kind not in SOURCE_KIND_OPTIONS:
            v.error(f"{where}.kind", f"unknown kind {_short(kind)} (available: {', '.join(sorted(SOURCE_KIND_OPTIONS))})")
            kind = None
        target_raw = body.get("target")
        options_raw = {k: val for k, val in body.items() if k not in ("kind", "target")}
        options = SOURCE_KIND_OPTIONS[kind](v, where, options_raw) if kind else {}
        if kind:
            allowed = {"kind", "target"} | set(options) | (_OMS_FIELDS if kind == "oms" else set())
            v.only_known(body, where, allowed - {"files"} if kind == "oms" else allowed)
        if target_raw is None:
            v.error(f"{where}.target", "is required: where this source's backups are kept (LocalDir or LocalHDFS)")
            continue
        target = _target(v, f"{where}.target", target_raw, data_path)
        if kind and target:
            out.append(Source(name=name, kind=kind, options=options, target=target))
    return out


def _target(v: _Validator, where: str, raw: Any, data_path: str) -> Target | None:
    if not isinstance(raw, dict):
        v.error(where, f"must be a mapping with type, path and max_backups; got {_short(raw)}")
        return None
    kind = v.choice(v.required(raw, where, "type", str), f"{where}.type", TARGET_TYPES)
    max_backups = v.optional(raw, where, "max_backups", int, DEFAULT_MAX_BACKUPS)
    max_backups = v.in_range(max_backups, f"{where}.max_backups", *MAX_BACKUPS_RANGE)
    if kind == "LocalDir":
        v.only_known(raw, where, {"type", "path", "max_backups", "mirror"})
        path = v.path_under(f"{where}.path", v.optional(raw, where, "path", str, "LocalBackup"), data_path)
        if path:
            v.backup_dirs.append((f"{where}.path", path, "" if raw.get("path") is not None
                                  else " (the default, <data_path>/LocalBackup)"))
        mirror = v.optional(raw, where, "mirror", str, None)
        if mirror is not None:
            mirror = v.absolute_local_path(f"{where}.mirror", mirror)
            if mirror and path and (mirror == path or (mirror + "/").startswith(path + "/") or (path + "/").startswith(mirror + "/")):
                v.error(f"{where}.mirror", f"{_short(mirror)} overlaps the primary path {_short(path)}; the standby copy needs its own directory")
            if mirror:
                v.backup_dirs.append((f"{where}.mirror", mirror, ""))
        if path is None or max_backups is None:
            return None
        return Target(type=kind, path=path, max_backups=max_backups, mirror=mirror)
    if kind == "LocalHDFS":
        v.only_known(raw, where, {"type", "path", "max_backups", "nameservice", "conn_id"})
        path = v.required(raw, where, "path", str)
        if path is not None:
            path = hdfs_path_problem_free(v, f"{where}.path", path)
        nameservice, conn_id = _nameservice_and_connection(v, where, raw)
        if path is None or max_backups is None:
            return None
        return Target(type=kind, path=path, max_backups=max_backups, nameservice=nameservice, conn_id=conn_id)
    return None


def hdfs_path_problem_free(v: _Validator, fld: str, path: str) -> str | None:
    """The LocalHDFS destination rules: absolute, normalised, no hidden part, not a system dir."""
    if not path.startswith("/"):
        v.error(fld, f"must be an absolute HDFS path, got {_short(path)}")
        return None
    parts = [p for p in path.split("/") if p]
    if ".." in parts or "." in parts or posixpath.normpath(path) != path.rstrip("/") and path != "/":
        v.error(fld, f"must be normalised (no '.', '..' or '//'): {_short(path)}")
        return None
    hidden = [p for p in parts if p.startswith(".")]
    if hidden:
        v.error(fld, f"must not contain a hidden component such as {_short(hidden[0])} (snapshot, trash and reserved directories are not allowed)")
        return None
    norm = "/" + "/".join(parts)
    if norm in HDFS_SYSTEM_DIRS:
        v.error(fld, f"{_short(norm)} is an HDFS system directory; choose a directory of its own, e.g. /backup/metadata")
        return None
    owner = next((tree for tree in HDFS_SYSTEM_TREES if norm.startswith(tree + "/")), None)
    if owner:
        v.error(fld, f"{_short(norm)} lies inside the HDFS system directory {_short(owner)}, whose service may clean it; "
                     "choose a directory of its own, e.g. /backup/metadata")
        return None
    return norm


def same_name_files(path: str | Path) -> list[Path]:
    """The other spec files beside ``path`` whose name differs from it at most in case (``Nightly.yaml``
    beside ``nightly.yaml``, or ``nightly.yml``): one directory listing, cheap enough for DAG parsing."""
    path = Path(path)
    key = path.stem.lower()
    try:
        return sorted(p for p in path.parent.glob("*.y*ml") if p.stem.lower() == key and p.name != path.name)
    except OSError:
        return []


def name_clash_error(paths: list[Path], name: str) -> SpecError:
    """The same task name (ignoring case) in several files: one error row per file, naming them all."""
    files = ", ".join(p.name for p in sorted(paths))
    case = "" if len({p.stem for p in paths}) == 1 else " (they differ only in case, which still names one " \
        "output directory on a case-insensitive file system)"
    return SpecClash([(str(p), "name", f"task name {_short(name)} is used by several files ({files}){case}; names "
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
                                                           f"{_short_text(exc)})")]))
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
                errors.append(SpecClash([(s.path, "name", f"task name {_short(s.name)} is used by several files ({files}); names must be unique")]))
        else:
            specs[group[0].name] = group[0]
    return specs, errors
