"""A cache of compiled DAG plans, so that parsing an unchanged spec neither validates it again nor
imports the spec models and the plug-ins that validate it.

Airflow's DAG processor parses every DAG file in a fresh process, over and over.  Validating a spec
needs the pydantic models of the task, of each source kind and target type it names, and the YAML
reader: several times the cost of building the DAGs themselves.  What the DAG factory needs from a
valid spec is small and plain (:func:`metabackup.airflow.dag_factory.dag_plan`: ids, texts, the
schedule, each source's asset URIs and locations), so after a spec has been validated once, its plan
is kept here as JSON, and the next parse of the same bytes by the same code builds the DAGs from it.

A plan is found again only for

* the same spec file (its path as given and resolved) with the same bytes (read as the spec
  reader reads it: a regular file, within its size cap), and
* the same code: the path, size and modification time of every module of the ``metabackup``
  package and of the ``__init__`` of pydantic, pydantic-core, pendulum and PyYAML (a reinstall
  changes it), and Python's version.

Only specs that validated are cached; any other case (a missing or odd file, a spec beside another
whose name differs only in case, a folder with more specs than ``$METABACKUP_MAX_TASKS``, no cache
directory) takes the full path, which raises exactly
what it always did.  The DAGs built from a cached plan are those built from the validated spec: the
factory always builds from a plan, and a plan is stored only when it reads back equal.

``METABACKUP_PARSE_CACHE``: the directory (default ``$AIRFLOW_HOME/cache/metabackup-dag-plans``),
or ``off`` to validate every spec at every parse.  The directory is created with mode 0700 and used
only when it belongs to this user and no one else can write to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

CACHE_ENV = "METABACKUP_PARSE_CACHE"
FORMAT = 1
#: as metabackup.spec_yaml.MAX_SPEC_BYTES (not imported: it pulls in PyYAML and the field types);
#: a larger file is never cached, and the spec reader refuses it
MAX_SPEC_BYTES = 64 * 1024
#: entries kept when the directory is tidied (a spec edited often leaves one entry per version)
KEEP_ENTRIES = 256
TIDY_ABOVE = 1024
#: as metabackup.spec.MAX_TASKS_ENV / DEFAULT_MAX_TASKS (not imported, as above)
MAX_TASKS_ENV = "METABACKUP_MAX_TASKS"
DEFAULT_MAX_TASKS = 100
#: the libraries that read and validate a spec: a plan is kept for one installation of each
LIBRARIES = ("pydantic", "pydantic_core", "pendulum", "yaml")

_code_key: str | None = None
_directory: tuple[str, Path | None] | None = None


def cache_dir() -> Path | None:
    """The cache directory, created if need be; None when the cache is off or cannot be trusted."""
    global _directory
    configured = os.environ.get(CACHE_ENV, "")
    if _directory is not None and _directory[0] == configured + "\0" + os.environ.get("AIRFLOW_HOME", ""):
        return _directory[1]
    found: Path | None
    if configured.strip().lower() in ("off", "0", "false", "no", "none"):
        found = None
    else:
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        found = Path(configured) if configured else Path(home) / "cache" / "metabackup-dag-plans"
        try:
            found.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(found)
            if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
                    or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
                found = None
        except OSError:
            found = None
    _directory = (configured + "\0" + os.environ.get("AIRFLOW_HOME", ""), found)
    return found


def code_key() -> str:
    """What the plans depend on besides the spec: our modules (path, size, mtime) and the versions of
    the libraries that read and validate a spec."""
    global _code_key
    if _code_key is None:
        from importlib.util import find_spec

        root = Path(__file__).resolve().parents[1]  # the metabackup package
        digest = hashlib.sha256(f"{FORMAT}|{sys.version}|{root}".encode())
        for library in LIBRARIES:  # found, not imported: a cached plan needs none of them
            found = find_spec(library)
            origin = found.origin if found is not None else None
            info = os.stat(origin) if origin else None
            digest.update(f"|{library}:{origin}:{info.st_size if info else ''}:{info.st_mtime_ns if info else ''}"
                          .encode())
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    info = os.stat(os.path.join(folder, name))
                    digest.update(f"|{os.path.relpath(os.path.join(folder, name), root)}:{info.st_size}:"
                                  f"{info.st_mtime_ns}".encode())
        _code_key = digest.hexdigest()
    return _code_key


def read_spec_bytes(spec_path: Path) -> bytes | None:
    """The spec's bytes as the spec reader would read them, or None for anything it would refuse or
    that is not a plain readable file (the full path then reports it)."""
    try:
        fd = os.open(spec_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError:
        return None
    return data if len(data) <= MAX_SPEC_BYTES else None


def entry_key(spec_path: Path, data: bytes) -> str:
    """The path as given (it is the operators' ``spec_path``) and resolved, the bytes, the code."""
    digest = hashlib.sha256(code_key().encode())
    digest.update(b"\0" + str(spec_path).encode() + b"\0" + str(spec_path.resolve()).encode() + b"\0")
    digest.update(data)
    return digest.hexdigest()


def _needs_full_path(spec_path: Path) -> bool:
    """Another spec beside this one whose name differs at most in case (as
    :func:`metabackup.spec.same_name_files`), or more specs in the folder than
    ``$METABACKUP_MAX_TASKS`` allows (as :func:`metabackup.spec.check_task_limit`; any odd value too):
    then the full path raises the clash or the limit.  One directory listing."""
    key = spec_path.stem.lower()
    try:
        paths = list(spec_path.parent.glob("*.y*ml"))
    except OSError:
        return True
    if any(p.stem.lower() == key and p.name != spec_path.name for p in paths):
        return True
    limit = os.environ.get(MAX_TASKS_ENV, "")
    if limit and not limit.isdigit():
        return True
    return len(paths) > (int(limit) if limit else DEFAULT_MAX_TASKS)


def lookup(spec_path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(plan, key)``: the cached plan of this spec's current bytes (or None), and the key to store
    its plan under after validating it (None: do not store)."""
    directory = cache_dir()
    if directory is None or _needs_full_path(spec_path):
        return None, None
    data = read_spec_bytes(spec_path)
    if data is None:
        return None, None
    key = entry_key(spec_path, data)
    try:
        with open(directory / f"{key}.json", encoding="utf-8") as handle:
            entry = json.load(handle)
    except (OSError, ValueError):
        return None, key
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("plan"), dict):
        return None, key
    return entry["plan"], key


def store(spec_path: Path, key: str, plan: dict[str, Any]) -> bool:
    """Keep ``plan`` under ``key`` if the spec still holds the bytes the key was made from (best
    effort: a cache that cannot be written is only slower)."""
    directory = cache_dir()
    data = read_spec_bytes(spec_path)
    if directory is None or data is None or entry_key(spec_path, data) != key:
        return False
    final = directory / f"{key}.json"
    partial = directory / f".{key}.{os.getpid()}.partial"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "spec": str(spec_path), "plan": plan}, handle, separators=(",", ":"))
        os.replace(partial, final)
    except OSError:
        try:
            os.unlink(partial)
        except OSError:
            pass
        return False
    _tidy(directory)
    return True


def _tidy(directory: Path) -> None:
    """Above :data:`TIDY_ABOVE` entries, keep the :data:`KEEP_ENTRIES` newest."""
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".json")]
        if len(entries) <= TIDY_ABOVE:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns, reverse=True)
        for entry in entries[KEEP_ENTRIES:]:
            os.unlink(entry.path)
    except OSError:
        pass
