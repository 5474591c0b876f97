"""The ``postgres`` source kind: a PostgreSQL cluster (DBService, the OMS database), physically.

Full: ``pg_basebackup`` in tar form with the WAL needed for consistency streamed alongside
(``-X stream``), a fast checkpoint, and a backup manifest with SHA-256 checksums.  A physical
replication slot per task and source keeps the WAL the next set needs.  When the slot still holds
the WAL from the previous set's end, the base backup streams through a temporary slot and the WAL
from the previous set's end to the full's end is then received on the task's slot and kept in the
full as *bridge* WAL (``pg/bridge/``), so the moments between a chain and the next full stay
restorable; otherwise the slot is created afresh and the position records the gap and its reason.

Incremental: the WAL written since the parent: switch WAL, then ``pg_receivewal --endpos`` on the
slot; the segments must cover [parent end LSN, new end LSN] without a gap, and ``pg_waldump``
must read every record of that range.  If the slot is gone or lost its WAL, or the timeline or
system identifier changed (failover, rebuilt server), the decision falls back to a full backup.
So it does when an incremental would outgrow a full: when the WAL written since the parent's end
(``pg_current_wal_lsn()`` against the parent's end LSN, read before anything is copied) is more
than ``max_incremental_fraction`` (default 0.5) of the chain's full: its uncompressed size, counted
as at most 4x its compressed size (:func:`wal_size_blocker`).  A full taken then keeps no bridge WAL larger than that either.

Restore: check everything first (an allow-listed data directory path, as it reaches pg_ctl's
shell), extract the full into a new data directory as untrusted input and check it against the
backup manifest (``pg_verifybackup``), serve the chain's WAL (plus a later full's bridge WAL for a
point in time after the chain) through ``restore_command`` from a private work directory, recover
(a full to its consistency point; an incremental through all of its chain's WAL, checked to reach
the set's last record; or to a point in time), promote, and check the server reached the target.
A failure removes exactly what the restore created.

The password reaches the PostgreSQL programs through a temporary passfile (0600) named in the
child's environment only; never on a command line or in a log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

from pydantic import AfterValidator, Field

from metabackup.archive import open_tar_stream
from metabackup.connections import ConnectionInfo, get_connection
from metabackup.fsutil import FILE_MODE, child_env, chown_tree, ensure_private_dir
from metabackup.manifest import FULL, Manifest, int_field, names_field, need, object_field, text_field, time_field
from metabackup.naming import SetName
from metabackup.fields import AbsolutePath, ConnId, SpecModel, between, matching
from metabackup.sources.base import (
    ArchiveResult, BackupError, Rebuilt, RestoreError, RestoreRequest, SourceEngine, SourceKind,
)

if TYPE_CHECKING:  # the run's decision, only in annotations (the plug-in stays light)
    from metabackup.policy import Decision

log = logging.getLogger(__name__)

MEMBER_DIR = "pg"
WAL_DIR = f"{MEMBER_DIR}/wal"
BRIDGE_DIR = f"{MEMBER_DIR}/bridge"  # a full's WAL from the previous set's end to its own end
DEFAULT_BIN = "/usr/lib/postgresql/{major}/bin"
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")


class PostgresSourceError(BackupError):
    pass


# ---------------------------------------------------------------------------------------------
# LSNs and WAL segment names
# ---------------------------------------------------------------------------------------------
def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _iso(moment) -> str:
    """A server timestamp (timezone-aware datetime) as ISO-8601 UTC."""
    import datetime as _dt

    return moment.astimezone(_dt.timezone.utc).isoformat()


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, segment_size: int) -> str:
    number = lsn // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_xlogid:08X}{number % per_xlogid:08X}"


# ---------------------------------------------------------------------------------------------
# Size: an incremental never outgrows a full
# ---------------------------------------------------------------------------------------------
def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def wal_written_since(end_lsn: int, current_lsn: int, segment_size: int, generated_at_end: int | None = None,
                      generated_now: int | None = None) -> int:
    """The WAL bytes written from a set's end LSN up to ``current_lsn``.  Every set ends with a
    segment switch (an incremental's ``pg_switch_wal()``, a full's end of backup), so the rest of
    its last segment is padding, not WAL: counted only while the server has not passed it.  Later
    switches (``archive_timeout``, another tool's backups) pad segments too, which only the
    server's WAL statistics leave out: given ``pg_stat_wal.wal_bytes`` at the set's end and now
    (PostgreSQL 14+; a reset or a crash sets it back), the smaller of the two counts."""
    boundary = -(-end_lsn // segment_size) * segment_size  # the end rounded up to a segment boundary
    by_lsn = max(0, current_lsn - (boundary if current_lsn >= boundary else end_lsn))
    if generated_at_end is not None and generated_now is not None and generated_now >= generated_at_end:
        return min(by_lsn, generated_now - generated_at_end)
    return by_lsn


def full_database_bytes(full: Manifest) -> int | None:
    """The uncompressed size of a full's database part (base backup, the WAL streamed with it and its
    backup manifest; not its bridge WAL), read from its manifest; None when the manifest does not say.
    ``full`` may be a postgres set, an oms set or an oms set's postgres view."""
    content = full.content if isinstance(full.content, dict) else {}
    if isinstance(content.get("postgres"), dict):  # an oms set: its database part
        content = content["postgres"]
    base = content.get("base_bytes")
    if isinstance(base, int) and not isinstance(base, bool) and base > 0:
        return base
    total = content.get("bytes")  # a set written before base_bytes: every member, bridge WAL included
    if not isinstance(total, int) or isinstance(total, bool):
        return None
    position = _pg_position(full)
    bridge = position.get("bridge") if isinstance(position.get("bridge"), dict) else {}
    size = position.get("segment_size")
    if isinstance(size, int) and isinstance(bridge.get("segments"), list):
        total -= len(bridge["segments"]) * size  # each received segment is a whole segment file
    return total if total > 0 else None


def full_stored_bytes(full: Manifest) -> int | None:
    """The compressed size of a full's database part: its ``.tar.gz`` (decrypted size, when it is
    encrypted) in the proportion of its database part to all its members (bridge WAL counts out)."""
    stored = full.plaintext[1]
    content = full.content if isinstance(full.content, dict) else {}
    if isinstance(content.get("postgres"), dict):
        content = content["postgres"]
    total, base = content.get("bytes"), full_database_bytes(full)
    if isinstance(total, int) and not isinstance(total, bool) and base and total > base:
        stored = stored * base // total
    return stored if stored > 0 else None


#: gzip compresses WAL to about a quarter (the benchmark: about 5x for row updates, 3.8x for
#: page images already compressed by wal_compression), while table data may compress far better
#: (pgbench: 18x); so a full counts as at most this many times its compressed size.
WAL_COMPRESSION_BOUND = 4


def counted_full_bytes(raw: int | None, stored: int | None) -> int | None:
    """What the size rule compares WAL with: the full's uncompressed database size, but at most
    :data:`WAL_COMPRESSION_BOUND` times its compressed size (None: neither is known)."""
    sizes = [size for size in (raw, stored * WAL_COMPRESSION_BOUND if stored else None) if size and size > 0]
    return min(sizes) if sizes else None


def wal_outgrows(wal_bytes: int, counted: int | None, fraction: float) -> bool:
    """More WAL (uncompressed) than ``fraction`` of a full counted as ``counted`` bytes
    (:func:`counted_full_bytes`); never when the full's size is unknown."""
    return counted is not None and counted > 0 and wal_bytes > fraction * counted


def wal_size_blocker(wal_bytes: int, raw: int | None, stored: int | None, fraction: float, full_set: str) -> str | None:
    """The decision's size rule: why an incremental carrying ``wal_bytes`` of WAL (written since its
    parent's end, uncompressed) should be a full instead, the chain's full ``full_set`` being ``raw``
    bytes uncompressed and ``stored`` compressed; or None.

    The WAL is compared with the full's uncompressed size, counted as at most
    :data:`WAL_COMPRESSION_BOUND` times its compressed size: WAL compresses about that well, not better, so
    the incremental's archive stays at about ``fraction`` of the full's or below."""
    counted = counted_full_bytes(raw, stored)
    if not wal_outgrows(wal_bytes, counted, fraction):
        return None
    if raw is not None and counted == raw:
        how = "uncompressed"
    else:
        how = (f"{_mib(raw)} uncompressed, " if raw else "") + \
              f"counted as {WAL_COMPRESSION_BOUND}x its {_mib(stored)} compressed"
    return (f"an incremental would outgrow a full: the {_mib(wal_bytes)} of WAL written since the parent are "
            f"{wal_bytes / counted:.2f} of the chain's full {full_set} ({_mib(counted)}: {how}), more than "
            f"max_incremental_fraction {fraction:g}")


# ---------------------------------------------------------------------------------------------
# Connections: psycopg for SQL, a private passfile for the command-line programs
# ---------------------------------------------------------------------------------------------
def _where(conn: ConnectionInfo) -> str:
    return f"PostgreSQL connection {conn.conn_id!r} ({conn.host}:{conn.port or 5432})"


@contextlib.contextmanager
def sql_session(conn: ConnectionInfo, dbname: str | None = None):
    import psycopg

    try:
        session = psycopg.connect(host=conn.host, port=conn.port or 5432, user=conn.login, password=conn.password,
                                  dbname=dbname or conn.schema or "postgres", autocommit=True,
                                  connect_timeout=int(conn.extra.get("timeout", 30)),
                                  sslmode=conn.extra.get("sslmode", "prefer"))
    except psycopg.OperationalError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresSourceError(f"{_where(conn)}: {message}") from None
    try:
        yield session
    finally:
        session.close()


@contextlib.contextmanager
def passfile_env(conn: ConnectionInfo) -> Iterator[dict[str, str]]:
    """Environment for a PostgreSQL program: connection parameters, and the password in a
    temporary passfile (0600) removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="metabackup-pgpass-"))
    try:
        passfile = folder / "pgpass"

        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{esc(conn.host)}:{conn.port or 5432}:*:{esc(conn.login)}:{esc(conn.password)}\n")
        yield child_env(dict(PGPASSFILE=str(passfile), PGHOST=conn.host, PGPORT=str(conn.port or 5432),
                             PGUSER=conn.login, PGSSLMODE=conn.extra.get("sslmode", "prefer"),
                             PGCONNECT_TIMEOUT=str(conn.extra.get("timeout", 30))))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_logged(args: list[str], env: dict[str, str], what: str) -> None:
    """Run a PostgreSQL program, forwarding its progress lines to the task log."""
    log.info("running %s", " ".join(args))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    last = 0.0
    for raw in proc.stdout:
        for line in raw.replace("\r", "\n").splitlines():
            if not line.strip():
                continue
            tail = (tail + [line])[-20:]
            if time.monotonic() - last > 10 or "error" in line.lower():
                log.info("%s: %s", what, line.strip())
                last = time.monotonic()
    if proc.wait() != 0:
        raise PostgresSourceError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail[-5:]))


_WALDUMP_LSN = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+),")
_WALDUMP_COMMIT = re.compile(r"desc: COMMIT(?:_PREPARED)?(?: \d+:)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def read_wal_range(waldump: str, wal: Path, timeline: int, start: str, end: int,
                   segment_size: int | None = None) -> dict[str, str | None]:
    """Read every record in [start, end) with pg_waldump (CRCs, continuity); return the last
    record's LSN and the last commit's time (UTC ISO-8601, None without a commit).  Streams
    the output: WAL of any size.  With ``segment_size``, a range that holds no record at all
    because it is only the padding after a WAL switch (``start`` is where the switch record
    ended and ``end`` the next segment's start: nothing was written since) reads as no records
    (``last_record_lsn`` None) instead of failing."""
    proc = subprocess.Popen([waldump, "--path", str(wal), "--timeline", str(timeline), "--start", start,
                             "--end", format_lsn(end)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env({"TZ": "UTC"}))
    last = last_commit = None
    for line in proc.stdout:
        match = _WALDUMP_LSN.search(line)
        if match:
            last = match.group(1)
            commit = _WALDUMP_COMMIT.search(line)
            if commit:
                last_commit = commit.group(1).replace(" ", "T") + "+00:00"
    error = proc.stderr.read()
    code = proc.wait()
    padding_only = (segment_size is not None and last is None and end == (parse_lsn(start) // segment_size + 1) * segment_size
                    and f"could not find a valid record after {start}" in error)
    if padding_only:
        return {"last_record_lsn": None, "last_commit_time": None}
    if code != 0 or last is None:
        raise PostgresSourceError(f"WAL between {start} and {format_lsn(end)} does not read back: {error.strip()[-500:]}")
    return {"last_record_lsn": last, "last_commit_time": last_commit}


# ---------------------------------------------------------------------------------------------
# The source kind
# ---------------------------------------------------------------------------------------------
_LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
_WAL_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


DEFAULT_MAX_INCREMENTAL_FRACTION = 0.5


def _fraction(value: float) -> float:
    if not 0 < value <= 1:  # NaN fails both comparisons
        raise ValueError(f"must be more than 0 and at most 1, got {value}")
    return value


Fraction = Annotated[float, AfterValidator(_fraction), Field(
    description="take a full instead of an incremental when the WAL since the parent is more than this fraction "
                "of the chain's full (uncompressed, counted as at most 4x its archive); also caps a full's bridge WAL",
    json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})]


SlotName = matching(r"[a-z0-9_]{1,63}", "must be 1-63 lower-case letters, digits or '_' (a replication slot name)",
                    "the physical replication slot (default metabackup_<task>_<source>)")


class PostgresOptions(SpecModel):
    """``kind: postgres``: a PostgreSQL cluster reached through an Airflow connection."""

    conn_id: ConnId = Field(description="the Airflow connection of a role with REPLICATION")
    slot: SlotName | None = None
    bin_dir: AbsolutePath | None = Field(None, description="the PostgreSQL programs (default the server's major version's)")
    slot_warn_mb: between(1, 10**7) = 1024
    max_incremental_fraction: Fraction = DEFAULT_MAX_INCREMENTAL_FRACTION


class PostgresKind(SourceKind):
    name = "postgres"
    Options = PostgresOptions
    engine_path = "metabackup.sources.postgres:PostgresSource"
    point_in_time = True
    pitr_coverage = True
    in_place = True

    def destination(self, where: Any, request: RestoreRequest) -> PostgresDestination:
        return PostgresDestination(data_dir=str(where), port=request.port, keep_running=request.keep_running,
                                   target_time=request.point_in_time, bridge=request.bridge)

    def check_position(self, pos: dict, at: str) -> None:
        """A set's position, read back from a target: LSNs, timeline, server, WAL and bridge."""
        int_field(pos, f"{at}.timeline", low=1)
        text_field(pos, f"{at}.start_lsn", _LSN, "an LSN such as 0/3000028")
        text_field(pos, f"{at}.end_lsn", _LSN, "an LSN such as 0/3000028")
        text_field(pos, f"{at}.last_record_lsn", _LSN, "an LSN such as 0/3000028", optional=True)
        text_field(pos, f"{at}.system_identifier", re.compile(r"^\d{1,20}$"), "a decimal system identifier")
        int_field(pos, f"{at}.server_version", low=90000)
        int_field(pos, f"{at}.segment_size", low=1)
        int_field(pos, f"{at}.wal_generated", optional=True)
        names_field(pos, f"{at}.segments", _WAL_SEGMENT, "WAL segment names", optional=True)
        for fld in ("consistent_at", "wal_end_time", "last_commit_time"):
            time_field(pos, f"{at}.{fld}", optional=True)
        if pos.get("bridge_gap") is not None:
            text_field(object_field(pos, f"{at}.bridge_gap"), f"{at}.bridge_gap.reason", optional=True)
            time_field(pos["bridge_gap"], f"{at}.bridge_gap.covered_until", optional=True)
        bridge = pos.get("bridge")
        if bridge is not None:
            object_field(pos, f"{at}.bridge")
            text_field(bridge, f"{at}.bridge.start_lsn", _LSN, "an LSN such as 0/3000028")
            text_field(bridge, f"{at}.bridge.end_lsn", _LSN, "an LSN such as 0/3000028")
            text_field(bridge, f"{at}.bridge.last_record_lsn", _LSN, "an LSN such as 0/3000028", optional=True)
            names_field(bridge, f"{at}.bridge.segments", _WAL_SEGMENT, "WAL segment names", optional=True)
            for fld in ("covered_until", "last_commit_time"):
                time_field(bridge, f"{at}.bridge.{fld}", optional=True)
            need(bridge.get("from_set") is None or (isinstance(bridge["from_set"], str) and SetName.parse(bridge["from_set"])),
                 f"{at}.bridge.from_set", bridge.get("from_set"), "a set name")

    def validate_restored(self, chain: list[Manifest], source: Any, dest: Any, in_place: bool) -> dict[str, Any]:
        return validate_data_dir(chain[-1].position, Path(dest.data_dir if isinstance(dest, PostgresDestination) else dest))

    def asset_uris(self, options: PostgresOptions) -> list[str]:
        return [f"x-postgres-cluster://{options.conn_id}"]  # a whole cluster: postgres:// URIs name one table

    # ---- in place ----
    live_dirs_hint = "the server's data directory (PGDATA), exactly one"

    def service_problems(self, options: PostgresOptions, service: Any) -> list[tuple[str, str]]:
        if len(service.data_dirs) != 1:
            return [("data_dirs", f"must name exactly one directory, the server's data directory (PGDATA); got "
                                  f"{len(service.data_dirs)}")]
        return []

    def rebuild_beside(self, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], source: Any,
                       scratch: Path, request: RestoreRequest) -> Rebuilt:
        """Recover the chain (to its end or the point in time) in a new data directory beside the
        live one, stop it, and put back its own settings; the facts identify it once started."""
        return rebuild_data_dir(chain, open_archive, source.options, source.service, source.service.data_dirs[0],
                                scratch, request)

    def validate_in_place(self, chain: list[Manifest], source: Any, facts: dict[str, Any]) -> dict[str, Any]:
        return validate_live_server(source.options.conn_id, facts)

    def live_identity(self, source: Any) -> dict[str, Any]:
        return live_server_identity(source.options.conn_id)


KIND = PostgresKind()


class PostgresSource(SourceEngine):
    @property
    def conn(self) -> ConnectionInfo:
        return get_connection(self.options.conn_id)

    @property
    def slot(self) -> str:
        if self.options.slot:
            return self.options.slot
        return re.sub(r"[^a-z0-9_]", "_", f"metabackup_{self.task}_{self.source.name}".lower())[:63]

    def _bin(self, program: str, server_major: int) -> str:
        folder = self.options.bin_dir or DEFAULT_BIN.format(major=server_major)
        path = Path(folder) / program
        if not path.exists():
            raise PostgresSourceError(f"{program} for PostgreSQL {server_major} not found in {folder}; set bin_dir")
        return str(path)

    def _server(self, session) -> dict[str, Any]:
        row = session.execute(
            "SELECT current_setting('server_version_num')::int, (SELECT system_identifier FROM pg_control_system()),"
            " (SELECT timeline_id FROM pg_control_checkpoint()), pg_size_bytes(current_setting('wal_segment_size')),"
            " (SELECT rolreplication FROM pg_roles WHERE rolname = current_user)").fetchone()
        return {"version_num": row[0], "major": row[0] // 10000, "system_identifier": str(row[1]), "timeline": row[2],
                "segment_size": row[3], "replication": row[4]}

    def tool_versions(self) -> dict[str, str]:
        with sql_session(self.conn) as session:
            return {"postgresql": str(self._server(session)["version_num"])}

    def check(self) -> None:
        conn = self.conn
        with sql_session(conn) as session:
            server = self._server(session)
            if not server["replication"]:
                raise PostgresSourceError(f"{_where(conn)}: role {conn.login!r} lacks the REPLICATION attribute")
            row = session.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots"
                                  " WHERE slot_name = %s", (self.slot,)).fetchone()
            limit = int(self.options.slot_warn_mb) << 20
            if row and row[0] is not None and row[0] > limit:
                log.warning("replication slot %s holds back %d MiB of WAL on %s (warning above %d MiB); "
                            "set max_slot_wal_keep_size on the server to cap it", self.slot, int(row[0]) >> 20,
                            _where(conn), limit >> 20)

    def incremental_blocker(self, parent: Manifest) -> str | None:
        """Why the run must be a full: the server cannot continue the chain of ``parent`` (see
        :meth:`_continuity`), or the WAL since the parent's end would make an incremental outgrow
        the chain's full (:func:`wal_size_blocker`); measured before anything is copied."""
        blocker, wal_bytes = self._continuity(parent)
        if blocker:
            return blocker
        full_set, raw, stored = self._chain_full(parent)
        fraction = self.options.max_incremental_fraction
        blocker = wal_size_blocker(wal_bytes, raw, stored, fraction, full_set)
        counted = counted_full_bytes(raw, stored)
        log.info("%s: %s of WAL since %s; the chain's full %s counts %s (an incremental takes up to %g of it)",
                 self.source.name, _mib(wal_bytes), parent.set, full_set, _mib(counted) if counted else "nothing: "
                 "its size is unknown", fraction)
        return blocker

    @staticmethod
    def _wal_generated(session) -> int | None:
        """``pg_stat_wal.wal_bytes``: the WAL the server generated, records only (PostgreSQL 14+)."""
        try:
            row = session.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()
        except Exception:  # noqa: BLE001 - an older server: the LSNs alone measure the WAL
            return None
        return int(row[0]) if row and row[0] is not None else None

    def _continuity(self, parent: Manifest) -> tuple[str | None, int]:
        """Why the server cannot continue the chain of ``parent`` (rebuilt, a new timeline, the slot
        lost or advanced), or None; and the WAL bytes written since the parent's end LSN."""
        pos = parent.position
        with sql_session(self.conn) as session:
            server = self._server(session)
            slot = session.execute("SELECT restart_lsn, wal_status FROM pg_replication_slots WHERE slot_name = %s"
                                   " AND slot_type = 'physical'", (self.slot,)).fetchone()
            current = parse_lsn(str(session.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))
            generated = self._wal_generated(session) if server["version_num"] >= 140000 else None
        wal_bytes = wal_written_since(parse_lsn(pos["end_lsn"]), current, server["segment_size"],
                                      pos.get("wal_generated"), generated)
        if server["system_identifier"] != pos["system_identifier"]:
            return f"the server's system identifier changed ({pos['system_identifier']} -> {server['system_identifier']}): it was rebuilt", wal_bytes
        if server["timeline"] != pos["timeline"]:
            return f"the timeline changed from {pos['timeline']} to {server['timeline']} (a failover or a recovery)", wal_bytes
        if slot is None:
            return f"replication slot {self.slot} no longer exists", wal_bytes
        if slot[1] == "lost" or slot[0] is None:
            return f"replication slot {self.slot} lost the WAL it held (max_slot_wal_keep_size)", wal_bytes
        if parse_lsn(str(slot[0])) > parse_lsn(pos["end_lsn"]):
            return f"replication slot {self.slot} no longer holds WAL from the parent's end LSN {pos['end_lsn']}", wal_bytes
        return None, wal_bytes

    def _chain_full(self, parent: Manifest) -> tuple[str, int | None, int | None]:
        """The full that starts ``parent``'s chain and its database's uncompressed and compressed
        sizes (None: unknown).  An incremental parent names it (``chain_root``); its manifest is read from the
        target's catalog (the parent's task directory)."""
        from metabackup.catalog import Catalog

        if parent.is_full:
            return parent.set, full_database_bytes(parent), full_stored_bytes(parent)
        try:
            root = Catalog.read(self.source.target.open(), self.task, parent.task_dir, self.source.name).get(parent.chain_root)
        except Exception as exc:  # noqa: BLE001 - the size rule is skipped, the chain itself is sound
            log.warning("%s: the size of the chain's full %s is unknown (the catalog could not be read: %s); "
                        "max_incremental_fraction is not applied", self.source.name, parent.chain_root, exc)
            return parent.chain_root, None, None
        if root is None:
            return parent.chain_root, None, None
        return parent.chain_root, full_database_bytes(root), full_stored_bytes(root)

    def snapshot(self, workdir: Path, decision: Decision, parent: Manifest | None,
                 open_parent: Callable[[], BinaryIO] | None) -> dict[str, Any]:
        conn = self.conn
        with sql_session(conn) as session:
            server = self._server(session)
        if decision.type == FULL:
            position = self._full(conn, server, workdir, self._previous_set(workdir, decision))
        else:
            blocker, _ = self._continuity(parent)  # the size rule was the decision's; a retry keeps it
            if blocker:
                raise PostgresSourceError(f"cannot take an incremental on {parent.set}: {blocker}; the next run will be full")
            position = self._incremental(conn, server, workdir, parent.position)
        position.update(system_identifier=server["system_identifier"], server_version=server["version_num"],
                        slot=self.slot, segment_size=server["segment_size"])
        (workdir / "pg-position.json").write_text(json.dumps(position))
        log.info("%s: %s covers %s .. %s on timeline %s", self.source.name, decision.type,
                 position["start_lsn"], position["end_lsn"], position["timeline"])
        return {k: position[k] for k in ("start_lsn", "end_lsn", "timeline")}

    def _previous_set(self, workdir: Path, decision: Decision) -> tuple[str, dict[str, Any], int | None] | None | str:
        """The newest committed set of this source before this run (name, postgres position, its
        chain's full as the size rule counts it or None), read from the target's catalog;
        None when there is none; a string saying why it is unknown.

        The pipeline stages a set in ``<staging>/<task dir>/<set stem>/`` (an ``oms`` source's
        database part one level below), which names the task directory."""
        from metabackup.catalog import Catalog

        folder = workdir.resolve()
        while folder.name != decision.set and folder != folder.parent:
            folder = folder.parent
        if folder.name != decision.set:
            return "the work directory does not name the task directory"
        try:
            catalog = Catalog.read(self.source.target.open(), self.task, folder.parent.name, self.source.name)
        except Exception as exc:  # noqa: BLE001 - reported in the manifest, the backup itself goes on
            return f"the catalog could not be read: {exc}"
        for manifest in reversed(catalog.restorable()):
            if manifest.set == decision.set:
                continue
            position = manifest.position.get("postgres", manifest.position) if manifest.kind == "oms" else manifest.position
            if manifest.kind in ("postgres", "oms") and isinstance(position, dict) and position.get("end_lsn"):
                root = catalog.get(manifest.chain_root)
                counted = counted_full_bytes(full_database_bytes(root), full_stored_bytes(root)) if root else None
                return manifest.set, position, counted
            return None
        return None

    def _full(self, conn: ConnectionInfo, server: dict[str, Any], workdir: Path,
              previous: tuple[str, dict[str, Any], int | None] | None | str) -> dict[str, Any]:
        """A base backup.  When the slot still holds the WAL from the previous set's end, the WAL
        from there up to this backup's end is kept as *bridge* WAL, so every moment between the
        previous set and this full stays restorable; only then does the slot move on.  A bridge
        would not be smaller than the full it rides with when its WAL is more than
        ``max_incremental_fraction`` of the previous chain's full (the size rule that made this run
        a full, perhaps): it is not kept, and the position records the gap and why."""
        with sql_session(conn) as session:
            slot = session.execute("SELECT restart_lsn, wal_status FROM pg_replication_slots WHERE slot_name = %s"
                                   " AND slot_type = 'physical'", (self.slot,)).fetchone()
            exists = session.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone()
            covered_until, current = session.execute("SELECT clock_timestamp(), pg_current_wal_lsn()").fetchone()
            generated = self._wal_generated(session) if server["version_num"] >= 140000 else None
        bridge_from, gap = None, None
        if isinstance(previous, str):
            gap = {"from_set": None, "reason": f"the previous set is unknown ({previous})"}
        elif previous is not None:
            prev_set, prev, full_bytes = previous
            wal_bytes = wal_written_since(parse_lsn(prev["end_lsn"]), parse_lsn(str(current)), server["segment_size"],
                                          prev.get("wal_generated"), generated)
            fraction = self.options.max_incremental_fraction
            if str(prev.get("system_identifier")) != server["system_identifier"]:
                reason = "the server was rebuilt (its system identifier changed)"
            elif prev.get("timeline") != server["timeline"]:
                reason = f"the timeline changed from {prev.get('timeline')} to {server['timeline']} (a failover)"
            elif slot is None:
                reason = f"replication slot {self.slot} no longer existed: the slot was lost"
            elif slot[1] == "lost" or slot[0] is None:
                reason = f"replication slot {self.slot} lost the WAL it held (max_slot_wal_keep_size): the slot was lost"
            elif parse_lsn(str(slot[0])) > parse_lsn(prev["end_lsn"]):
                reason = f"replication slot {self.slot} no longer held WAL from {prev['end_lsn']} (advanced by another client)"
            elif wal_outgrows(wal_bytes, full_bytes, fraction):
                reason = (f"the {_mib(wal_bytes)} of WAL since {prev_set} are more than max_incremental_fraction "
                          f"{fraction:g} of the previous chain's full ({_mib(full_bytes)} as the size rule counts it): "
                          "not kept as bridge WAL (it would not be smaller than this full)")
            else:
                reason = None
                bridge_from = (prev_set, prev["end_lsn"])
            if reason:
                gap = {"from_set": prev_set, "from_lsn": prev["end_lsn"], "reason": reason}
        base = workdir / "base"
        label = ["-w", "--progress", "--verbose", "--label", f"metabackup {self.task} {self.source.name}"]
        common = ["-D", str(base), "-Ft", "-X", "stream", "-c", "fast", "--manifest-checksums=SHA256", *label]
        with passfile_env(conn) as env:
            if bridge_from:
                # our slot stays where it is (holding the WAL from the previous set's end) while the
                # base backup streams its own WAL through a temporary slot
                run_logged([self._bin("pg_basebackup", server["major"]), *common], env, "pg_basebackup")
            else:
                if exists:
                    with sql_session(conn) as session:
                        session.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))  # a new chain starts here
                run_logged([self._bin("pg_basebackup", server["major"]), *common, "--create-slot", "--slot", self.slot],
                           env, "pg_basebackup")
        with sql_session(conn) as session:
            consistent_at = session.execute("SELECT clock_timestamp()").fetchone()[0]
            generated_at_end = self._wal_generated(session) if server["version_num"] >= 140000 else None
        manifest = json.loads((base / "backup_manifest").read_text())
        ranges = manifest["WAL-Ranges"]
        if len(ranges) != 1:
            raise PostgresSourceError(f"backup spans {len(ranges)} timelines; take the backup again")
        position = {"method": "pg_basebackup", "timeline": ranges[0]["Timeline"], "start_lsn": ranges[0]["Start-LSN"],
                    "end_lsn": ranges[0]["End-LSN"], "consistent_at": _iso(consistent_at)}
        if generated_at_end is not None:  # the size rule's measure of the WAL after this set
            position["wal_generated"] = generated_at_end
        if bridge_from:
            bridge = self._receive(conn, server, workdir / "bridge", bridge_from[1], parse_lsn(position["end_lsn"]),
                                   "bridge WAL")
            position["bridge"] = {"from_set": bridge_from[0], "covered_until": _iso(covered_until), **bridge}
            log.info("%s: kept the WAL from %s (end of %s) to %s as bridge WAL", self.source.name, bridge_from[1],
                     bridge_from[0], position["end_lsn"])
        elif gap:
            position["bridge_gap"] = {**gap, "covered_until": _iso(covered_until)}
            log.warning("%s: no bridge WAL from the previous set to this full: %s", self.source.name, gap["reason"])
        return position

    def _receive(self, conn: ConnectionInfo, server: dict[str, Any], wal: Path, start_lsn: str, end: int,
                 what: str) -> dict[str, Any]:
        """Receive the WAL [start_lsn, end) on the task's slot into ``wal`` (the slot then moves to
        ``end``); check the segments have no gap and every record reads back."""
        ensure_private_dir(wal)
        with passfile_env(conn) as env:
            run_logged([self._bin("pg_receivewal", server["major"]), "-D", str(wal), "--slot", self.slot,
                        "--endpos", format_lsn(end), "--no-loop", "--status-interval=1", "-w", "--verbose"],
                       env, "pg_receivewal")
        for partial in wal.glob("*.partial"):  # the last segment may be incomplete: its records up to endpos are whole
            partial.rename(partial.with_suffix(""))
        size, timeline = server["segment_size"], server["timeline"]
        start = parse_lsn(start_lsn)
        have = sorted(p.name for p in wal.iterdir() if SEGMENT_RE.match(p.name))
        first, last = start // size, (end - 1) // size
        needed = [segment_name(timeline, n * size, size) for n in range(first, last + 1)]
        missing = [n for n in needed if n not in have]
        if missing:
            raise PostgresSourceError(f"WAL gap in the {what}: segments {missing[:3]} between {start_lsn} and "
                                      f"{format_lsn(end)} were not received; the slot may have been advanced by another client")
        for path in wal.iterdir():  # keep only the range this set covers
            if path.name not in needed:
                path.unlink()
            else:
                os.chmod(path, FILE_MODE)
        read = read_wal_range(self._bin("pg_waldump", server["major"]), wal, timeline, start_lsn, end, size)
        return {"start_lsn": start_lsn, "end_lsn": format_lsn(end), "segments": needed, **read}

    def _incremental(self, conn: ConnectionInfo, server: dict[str, Any], workdir: Path, parent: dict[str, Any]) -> dict[str, Any]:
        with sql_session(conn) as session:
            # Close the current segment: everything committed so far is before the switch record's
            # end, which pg_switch_wal returns (or the current position when nothing was written).
            # The time read just before it bounds the commits this set holds.
            now, switched = session.execute("SELECT clock_timestamp(), pg_switch_wal()").fetchone()
            generated = self._wal_generated(session) if server["version_num"] >= 140000 else None
        end = parse_lsn(str(switched))
        received = self._receive(conn, server, workdir / "wal", parent["end_lsn"], end, "incremental")
        if received["last_record_lsn"] is None:  # nothing written since the parent: its last record is still the last
            received.update(last_record_lsn=parent.get("last_record_lsn"), last_commit_time=parent.get("last_commit_time"))
        position = {"method": "wal", "timeline": server["timeline"], "wal_end_time": _iso(now), **received}
        if generated is not None:  # the size rule's measure of the WAL after this set
            position["wal_generated"] = generated
        return position

    def write_archive(self, workdir: Path, tar: tarfile.TarFile, set_stem: str) -> ArchiveResult:
        position = json.loads((workdir / "pg-position.json").read_text())
        members: list[tuple[Path, str]] = []
        if (workdir / "base").exists():
            members += [(p, f"{MEMBER_DIR}/{p.name}") for p in sorted((workdir / "base").iterdir())]
        if (workdir / "wal").exists():
            members += [(p, f"{WAL_DIR}/{p.name}") for p in sorted((workdir / "wal").iterdir())]
        if (workdir / "bridge").exists():
            members += [(p, f"{BRIDGE_DIR}/{p.name}") for p in sorted((workdir / "bridge").iterdir())]
        total = bridge = 0
        for path, name in members:
            info = tar.gettarinfo(str(path), arcname=name)
            info.mode, info.uid, info.gid, info.uname, info.gname = FILE_MODE, 0, 0, "", ""
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
            total += info.size
            bridge += info.size if name.startswith(f"{BRIDGE_DIR}/") else 0
        content = {"members": len(members), "bytes": total}
        if (workdir / "base").exists():  # a full: its size without the bridge WAL, for the size rule
            content["base_bytes"] = total - bridge
        return ArchiveResult(content=content, position=position)

    @classmethod
    def restore(cls, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Any) -> dict[str, Any]:
        dest = dest if isinstance(dest, PostgresDestination) else PostgresDestination(data_dir=str(dest))
        return restore_chain(chain, open_archive, dest)


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------
def controldata(position: dict[str, Any], data_dir: Path) -> dict[str, str]:
    """``pg_controldata`` of a data directory (of the set's server version), field by field."""
    major = int(position["server_version"]) // 10000
    program = str(Path(DEFAULT_BIN.format(major=major)) / "pg_controldata")
    done = subprocess.run([program, "-D", str(data_dir)], capture_output=True, text=True, env=child_env())
    if done.returncode != 0:
        raise RestoreError(f"pg_controldata on {data_dir} failed: {done.stderr.strip()}")
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)}


def validate_data_dir(position: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """``pg_controldata`` of the restored directory: the set's server, shut down or in production."""
    fields = controldata(position, data_dir)
    system_id = fields.get("Database system identifier", "").strip()
    state = fields.get("Database cluster state", "").strip()
    if system_id != str(position["system_identifier"]):
        raise RestoreError(f"{data_dir} has system identifier {system_id}; the set's server had {position['system_identifier']}")
    if state not in ("shut down", "in production"):
        raise RestoreError(f"{data_dir} is in state {state!r}, not a consistent recovered cluster")
    return {"system_identifier": system_id, "cluster_state": state}


@dataclass
class PostgresDestination:
    """A new data directory to restore into, and how to run the recovered server."""

    data_dir: str
    port: int = 0  # 0: a free port
    target_time: str | None = None  # PostgreSQL timestamptz text ('2026-11-24 10:00:00+00'); default: the set's end
    keep_running: bool = False
    os_user: str = "postgres"
    bin_dir: str | None = None
    # For a point in time after the chain's last set: the next full whose bridge WAL continues the
    # chain (restore.pitr_bridge); its archive must have been verified with the chain.
    bridge: Manifest | None = None
    # For an in-place restore: once recovered and stopped, drop the settings the recovery added
    # (port, socket, restore_command, target) so the service starts it with its own.
    for_service: bool = False


# The data directory reaches pg_ctl (which starts the server through sh) and postgresql.conf:
# only these characters, absolute and normalised, no '..'.
SAFE_PATH_CHARS = "A-Za-z0-9._/@+=,-"
_SAFE_PATH = re.compile(f"^[{SAFE_PATH_CHARS}]+$")


def check_data_dir(path: str | os.PathLike) -> Path:
    """The data directory as a Path, or a RestoreError naming it and the allowed characters."""
    text = os.fspath(path)
    if (not text.startswith("/") or not _SAFE_PATH.match(text) or ".." in text.split("/")
            or os.path.normpath(text) != text or text.startswith("//") or text == "/"):
        raise RestoreError(f"refusing restore destination {text!r}: a PostgreSQL data directory must be an absolute, "
                           f"normalised path without '..' components, made only of the characters [{SAFE_PATH_CHARS}] "
                           "(it reaches pg_ctl's shell and postgresql.conf)")
    return Path(text)


def conf_string(value: str) -> str:
    """``value`` as a postgresql.conf single-quoted string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def restore_command_for(wal_dir: Path) -> str:
    """The restore_command value (before conf quoting): copy %f from ``wal_dir``, quoted for sh,
    with any '%' of the path doubled so the server does not expand it."""
    return f"cp {shlex.quote(str(wal_dir) + '/').replace('%', '%%')}%f \"%p\""


def _as_user(user: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    command = ["runuser", "-u", user, "--", *args] if os.geteuid() == 0 else args
    return subprocess.run(command, capture_output=True, text=True, env=child_env(), **kwargs)


def _safe_member_filter(set_stem: str, what: str, symlinks_refused_hint: str = ""):
    """A tarfile extraction filter for untrusted archives: regular files and directories only,
    relative names without '..', landing under the destination (tarfile's 'data' filter on top)."""

    def check(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        name = member.name
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or "\x00" in name:
            raise RestoreError(f"refusing {what} of {set_stem}: member {name!r} would land outside the data directory")
        if not (member.isreg() or member.isdir()):
            kind = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "a special file"
            raise RestoreError(f"refusing {what} of {set_stem}: member {name!r} is {kind}; only regular files and "
                               f"directories are restored{symlinks_refused_hint}")
        try:
            return tarfile.data_filter(member, dest_path)
        except tarfile.FilterError as exc:
            raise RestoreError(f"refusing {what} of {set_stem}: member {name!r}: {exc}") from None

    return check


def _write_private_stream(path: Path, source: BinaryIO) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), FILE_MODE)
        shutil.copyfileobj(source, out, 1 << 20)


def _copy_wal_members(manifest: Manifest, open_archive: Callable[[str], BinaryIO], wal_dir: Path, prefix: str) -> list[str]:
    """Copy the WAL segments under ``prefix`` of a set's archive into ``wal_dir`` (0600)."""
    copied = []
    with open_archive(manifest.set) as stream, open_tar_stream(stream) as tar:
        for member in tar:
            if not member.name.startswith(f"{prefix}/"):
                continue
            name = member.name[len(prefix) + 1:]
            if not SEGMENT_RE.match(name) or not member.isreg():
                raise RestoreError(f"unexpected WAL member {member.name} in {manifest.set}")
            _write_private_stream(wal_dir / name, tar.extractfile(member))
            copied.append(name)
    return copied


def _utc(text: str):
    import pendulum

    return pendulum.parse(text.replace(" ", "T", 1) if re.match(r"^\d{4}-\d\d-\d\d \d", text) else text).in_timezone("UTC")


def _check_bridge(chain: list[Manifest], bridge: Manifest) -> dict[str, Any]:
    last, info = chain[-1], _pg_position(bridge).get("bridge")
    if not bridge.is_full or not info:
        raise RestoreError(f"{bridge.set} holds no bridge WAL; it cannot continue the chain of {last.set}")
    pos = last.position
    if (str(_pg_position(bridge).get("system_identifier")) != str(pos.get("system_identifier"))
            or _pg_position(bridge).get("timeline") != pos.get("timeline")
            or parse_lsn(info["start_lsn"]) > parse_lsn(pos["end_lsn"])
            or parse_lsn(info["end_lsn"]) < parse_lsn(pos["end_lsn"])):
        raise RestoreError(f"the bridge WAL of {bridge.set} ({info['start_lsn']} .. {info['end_lsn']}) does not continue "
                           f"{last.set} (ends at {pos['end_lsn']} on timeline {pos.get('timeline')})")
    return info


def _pg_position(manifest: Manifest) -> dict[str, Any]:
    position = manifest.position or {}
    return position.get("postgres", position) if manifest.kind == "oms" else position


def _plan_target(chain: list[Manifest], dest: PostgresDestination) -> tuple[str, str | None]:
    """The recovery target setting and the LSN the replay must reach (None: no check)."""
    from metabackup.catalog import Catalog

    last = chain[-1]
    if dest.bridge is not None:  # the WAL served last: the bridge; before it, the chain's
        wal_end = _pg_position(dest.bridge)["bridge"]
        covered, floor = Catalog.bridge_until(dest.bridge), Catalog.pg_until(last)
        precise = "covered_until" in wal_end and "last_commit_time" in wal_end
    elif len(chain) > 1:  # the last incremental's WAL; before it, the rest of the chain's
        wal_end, covered = last.position, Catalog.pg_until(last)
        floor = Catalog.pg_floor(chain[-2]) if chain[-2].is_full else Catalog.pg_until(chain[-2])
        precise = "wal_end_time" in wal_end and "last_commit_time" in wal_end
    else:  # a lone full: its WAL ends at its consistency point
        wal_end, floor, covered, precise = None, None, _pg_position(last).get("consistent_at"), False
    if dest.target_time:
        moment = _utc(dest.target_time)
        if covered and moment > _utc(covered):
            hint = "" if dest.bridge is not None else (
                "; a later full's bridge WAL may continue this chain: pass it as the destination's bridge "
                "(restore.pitr_bridge, RestoreRequest.bridge)")
            raise RestoreError(f"{moment.isoformat()} lies after the WAL of {last.set}"
                               f"{' and the bridge of ' + dest.bridge.set if dest.bridge is not None else ''}, "
                               f"which holds every commit up to {covered}{hint}")
        last_commit = wal_end.get("last_commit_time") if wal_end else None
        if precise and floor and moment >= _utc(floor) and (last_commit is None or moment >= _utc(last_commit)):
            # no commit of the WAL after the previous set is later than the moment, and that WAL
            # reaches past the moment: the state at the moment is the state at the end of the WAL
            # (recovery_target_time would wait for a later commit that is not there)
            return "", wal_end.get("last_record_lsn")
        return f"recovery_target_time = {conf_string(dest.target_time)}", None
    if dest.bridge is not None:
        return "", wal_end.get("last_record_lsn")
    if len(chain) == 1:
        return "recovery_target = 'immediate'", None  # the full's consistency point: its end LSN
    return "", last.position["last_record_lsn"]  # all of the chain's WAL: the last set ends where its WAL ends


def restore_chain(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: PostgresDestination) -> dict[str, Any]:
    """Rebuild the chain's cluster in a new data directory and recover it.

    Every check runs before anything is created; on failure exactly what this restore created is
    removed (and a server it started is stopped); nothing it did not create is touched."""
    # ---- checks: nothing is created before they all pass ----
    data = check_data_dir(dest.data_dir)
    if not chain or not chain[0].is_full:
        raise RestoreError("a PostgreSQL restore needs a chain that starts with a full backup")
    full, last = chain[0], chain[-1]
    if dest.bridge is not None:
        _check_bridge(chain, dest.bridge)
    if dest.target_time:
        try:
            _utc(dest.target_time)
        except Exception as exc:  # noqa: BLE001
            raise RestoreError(f"recovery target time {dest.target_time!r} is not a time: {exc}") from None
    target, must_reach = _plan_target(chain, dest)
    if os.path.islink(data) or (data.exists() and not data.is_dir()):
        raise RestoreError(f"restore destination {data} exists and is not a directory")
    data_existed = data.exists()
    if data_existed and any(data.iterdir()):
        raise RestoreError(f"restore destination {data} is not empty; restore into a new data directory")
    probe = data.parent
    while not probe.exists():
        probe = probe.parent
    if _as_user(dest.os_user, ["test", "-x", str(probe)]).returncode != 0:
        raise RestoreError(f"the {dest.os_user} user cannot reach {probe} (a parent directory is not traversable); "
                           "restore under a directory it can enter")
    major = int(full.position["server_version"]) // 10000
    bin_dir = Path(dest.bin_dir or DEFAULT_BIN.format(major=major))
    for program in ("pg_ctl", "pg_verifybackup"):
        if not (bin_dir / program).exists():
            raise RestoreError(f"{program} for PostgreSQL {major} not found in {bin_dir}")
    sock_base = Path(tempfile.gettempdir())
    if not _SAFE_PATH.match(str(sock_base)) or "," in str(sock_base):
        sock_base = Path("/tmp")

    # ---- from here on, everything created is recorded and removed on failure ----
    created_parents: list[Path] = []
    created: list[Path] = []  # removed whole on failure (work dir, socket dir, data dir if new)
    before = data.stat() if data_existed else None
    started = False
    logfile = data / "metabackup-restore.log"
    try:
        missing = []
        probe = data.parent
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for parent in reversed(missing):
            parent.mkdir(mode=0o711)
            created_parents.append(parent)
            os.chmod(parent, 0o711)  # traversable by the postgres user, listable by none
        work = Path(tempfile.mkdtemp(prefix=f".{data.name}.restore-", dir=data.parent))  # 0700
        created.append(work)
        wal_dir = work / "wal"
        wal_dir.mkdir(mode=0o700)
        if not data_existed:
            data.mkdir(mode=0o700)
            created.append(data)
        os.chmod(data, 0o700)
        with open_archive(full.set) as stream, open_tar_stream(stream) as tar:
            for member in tar:
                name = member.name.removeprefix(f"{MEMBER_DIR}/")
                if name not in ("base.tar", "pg_wal.tar", "backup_manifest"):
                    continue
                if not member.isreg():
                    raise RestoreError(f"refusing {full.set}: member {member.name!r} is not a regular file")
                handle = tar.extractfile(member)
                if name == "base.tar":
                    with tarfile.open(fileobj=handle, mode="r|") as inner:
                        inner.extractall(data, filter=_safe_member_filter(
                            full.set, "base.tar", " (tablespaces are not supported by this restore)"))
                elif name == "pg_wal.tar":
                    (data / "pg_wal").mkdir(mode=0o700, exist_ok=True)
                    with tarfile.open(fileobj=handle, mode="r|") as inner:
                        inner.extractall(data / "pg_wal", filter=_safe_member_filter(full.set, "pg_wal.tar"))
                else:
                    _write_private_stream(work / "backup_manifest", handle)
        if not (work / "backup_manifest").exists():
            raise RestoreError(f"{full.set} holds no backup_manifest; it is not a pg_basebackup full")
        verify = subprocess.run([str(bin_dir / "pg_verifybackup"), "--no-parse-wal", "-m", str(work / "backup_manifest"),
                                 str(data)], capture_output=True, text=True, env=child_env())
        if verify.returncode != 0:
            raise RestoreError(f"the restored base backup does not match its manifest: {verify.stderr.strip()[-800:]}")
        for manifest in chain[1:]:  # later sets overwrite earlier copies of a segment: theirs are longer
            _copy_wal_members(manifest, open_archive, wal_dir, WAL_DIR)
        if dest.bridge is not None:  # the WAL from the chain's end to the next full: the longest copies
            _copy_wal_members(dest.bridge, open_archive, wal_dir, BRIDGE_DIR)
        port = dest.port or _free_port()
        # Unix socket paths are limited to 107 bytes, so the socket lives in a short temp directory
        # rather than under a (possibly deep) destination.
        sock = Path(tempfile.mkdtemp(prefix="mb-pg-", dir=sock_base))
        created.append(sock)
        comment = re.sub(r"[^A-Za-z0-9._ -]", "_", last.set + (f" with the bridge WAL of {dest.bridge.set}" if dest.bridge else ""))
        auto_conf = data / "postgresql.auto.conf"
        auto_conf_before = auto_conf.read_bytes() if auto_conf.exists() else None
        with open(auto_conf, "a") as conf:
            conf.write(f"""
# added by metabackup restore of {comment}
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = {conf_string(str(sock))}
restore_command = {conf_string(restore_command_for(wal_dir))}
{target}
recovery_target_action = 'promote'
""")
        (data / "recovery.signal").touch(mode=0o600)
        os.close(os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        for path in (work, data, sock):
            chown_tree(path, dest.os_user)
        log.info("recovering %s on port %d towards %s", data, port, target or "the end of the WAL")
        started = True
        run = _as_user(dest.os_user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "300",
                                      "start"])
        if run.returncode != 0 and not logfile.read_text():
            raise RestoreError(f"the recovered server did not start: {(run.stdout + run.stderr).strip()[-800:]}")
        outcome = _wait_for_recovery(logfile, data, timeout=600)
        if outcome == "promoted" and must_reach:
            done = re.findall(r"redo done at ([0-9A-F]+/[0-9A-F]+)", logfile.read_text())
            if not done or parse_lsn(done[-1]) < parse_lsn(must_reach):
                outcome = f"replay stopped at {done[-1] if done else 'nothing'} before the WAL's last record {must_reach}"
        if run.returncode != 0 or outcome != "promoted":
            raise RestoreError(f"recovery of {last.set} did not reach its target ({outcome}); the server log follows "
                               f"(also in the task log):\n" + logfile.read_text()[-3000:])
        reached = [line.split("LOG:", 1)[-1].strip() for line in logfile.read_text().splitlines()
                   if "recovery stopping" in line or "redo done at" in line]
        result = {"data_dir": str(data), "port": port, "target": target or "end of the WAL",
                  "recovery": reached[-1] if reached else "", "running": dest.keep_running, "socket_dir": str(sock),
                  "server_log": str(logfile)}
        if dest.bridge is not None:
            result["bridge"] = dest.bridge.set
        if not dest.keep_running:
            stopped = _as_user(dest.os_user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
            if stopped.returncode != 0:
                raise RestoreError(f"the recovered server did not stop: {(stopped.stdout + stopped.stderr).strip()[-800:]}")
            started = False
            shutil.rmtree(sock, ignore_errors=True)
            if dest.for_service:  # the service starts it with its own settings
                if auto_conf_before is None:
                    auto_conf.unlink()
                else:
                    auto_conf.write_bytes(auto_conf_before)
                chown_tree(data, dest.os_user)
        shutil.rmtree(work, ignore_errors=True)
        return result
    except BaseException:
        if started and (data / "postmaster.pid").exists():
            _as_user(dest.os_user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        if logfile.exists():
            with contextlib.suppress(OSError):
                log.error("server log of the failed restore into %s:\n%s", data, logfile.read_text()[-20000:])
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        if data_existed and before is not None:  # empty it again, as it was
            for entry in list(data.iterdir()) if data.exists() else []:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            with contextlib.suppress(OSError):
                os.chmod(data, before.st_mode & 0o7777)
                if os.geteuid() == 0:
                    os.chown(data, before.st_uid, before.st_gid)
        for parent in reversed(created_parents):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def rebuild_data_dir(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], options: Any, service: Any,
                     live: str, scratch: Path, request: RestoreRequest) -> Rebuilt:
    """For an in-place restore: the chain recovered in ``scratch/data``, stopped, with the live
    server's own settings, owned by the service's owner; mapped to ``live``."""
    data = scratch / "data"
    dest = PostgresDestination(data_dir=str(data), os_user=service.owner or "postgres", bin_dir=options.bin_dir,
                               target_time=request.point_in_time, bridge=request.bridge, for_service=True)
    result = restore_chain(chain, open_archive, dest)
    fields = controldata(chain[0].position, data)
    facts = {"system_identifier": fields.get("Database system identifier", ""),
             "timeline": int(fields.get("Latest checkpoint's TimeLineID", "0") or 0),
             "checkpoint_lsn": fields.get("Latest checkpoint location", ""), "recovery": result.get("recovery", "")}
    return Rebuilt({live: data}, facts)


def live_server_identity(conn_id: str) -> dict[str, Any]:
    """The running server's system identifier and timeline (what a rollback must give back)."""
    with sql_session(get_connection(conn_id)) as session:
        row = session.execute("SELECT (SELECT system_identifier FROM pg_control_system())::text, "
                              "(SELECT timeline_id FROM pg_control_checkpoint())").fetchone()
    return {"system_identifier": row[0], "timeline": row[1]}


def validate_live_server(conn_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The started service accepts connections, is out of recovery, and serves the rebuilt data
    directory: same system identifier and timeline, a checkpoint at or after the rebuilt one."""
    conn = get_connection(conn_id)
    with sql_session(conn) as session:
        row = session.execute(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text, pg_is_in_recovery(), "
            "(SELECT timeline_id FROM pg_control_checkpoint()), (SELECT checkpoint_lsn FROM pg_control_checkpoint())::text,"
            " (SELECT count(*) FROM pg_database WHERE datallowconn)").fetchone()
    system_id, in_recovery, timeline, checkpoint, databases = row
    if system_id != facts["system_identifier"]:
        raise RestoreError(f"{_where(conn)} has system identifier {system_id}; the restored data directory has "
                           f"{facts['system_identifier']}: the service did not start the restored data")
    if in_recovery:
        raise RestoreError(f"{_where(conn)} is still in recovery")
    if timeline != facts["timeline"] or parse_lsn(checkpoint) < parse_lsn(facts["checkpoint_lsn"]):
        raise RestoreError(f"{_where(conn)} runs timeline {timeline} at checkpoint {checkpoint}; the restored data "
                           f"directory was at timeline {facts['timeline']}, checkpoint {facts['checkpoint_lsn']}: the "
                           "service does not serve the restored data")
    return {"system_identifier": system_id, "timeline": timeline, "checkpoint_lsn": checkpoint,
            "databases": databases, "accepts_connections": True}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_recovery(logfile: Path, data: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = logfile.read_text()
        if "recovery ended before configured recovery target was reached" in text:
            return "the WAL ended before the recovery target"
        if "FATAL" in text and ("database system is shut down" in text or not (data / "postmaster.pid").exists()):
            return "the server stopped during recovery: " + next(l for l in text.splitlines() if "FATAL" in l)
        if "archive recovery complete" in text and "database system is ready to accept connections" in text.split(
                "archive recovery complete", 1)[1]:
            return "promoted"
        time.sleep(0.2)
    return f"no outcome after {timeout}s"
