"""The ``postgres`` source kind: a PostgreSQL cluster (DBService, the OMS database), physically.

Full: ``pg_basebackup`` in tar form with the WAL needed for consistency streamed alongside
(``-X stream``), a fast checkpoint, and a backup manifest with SHA-256 checksums.  The backup
creates (or recreates) a physical replication slot per task and source, so the server keeps the
WAL the next incremental needs.

Incremental: the WAL written since the parent: switch WAL, then ``pg_receivewal --endpos`` on the
slot; the segments must cover [parent end LSN, new end LSN] without a gap, and ``pg_waldump``
must read every record of that range.  If the slot is gone or lost its WAL, or the timeline or
system identifier changed (failover, rebuilt server), the decision falls back to a full backup.

Restore: verify the chain, extract the full into a new data directory and check it against the
backup manifest (``pg_verifybackup``), serve the chain's WAL through ``restore_command``, recover
(a full to its consistency point; an incremental through all of its chain's WAL, checked to reach
the set's last record; or to a point in time), promote, and check the server reached the target.

The password reaches the PostgreSQL programs through a temporary passfile (0600) named in the
child's environment only; never on a command line or in a log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from metabackup.archive import open_tar_stream
from metabackup.connections import ConnectionInfo, get_connection
from metabackup.fsutil import FILE_MODE
from metabackup.manifest import FULL, Manifest
from metabackup.sources.base import ArchiveResult, RestoreError, SourceKind

log = logging.getLogger(__name__)

MEMBER_DIR = "pg"
WAL_DIR = f"{MEMBER_DIR}/wal"
DEFAULT_BIN = "/usr/lib/postgresql/{major}/bin"
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")


class PostgresSourceError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# LSNs and WAL segment names
# ---------------------------------------------------------------------------------------------
def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, segment_size: int) -> str:
    number = lsn // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_xlogid:08X}{number % per_xlogid:08X}"


def segment_number(name: str, segment_size: int) -> int:
    per_xlogid = 0x100000000 // segment_size
    return int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)


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
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSFILE=str(passfile), PGHOST=conn.host, PGPORT=str(conn.port or 5432), PGUSER=conn.login,
                   PGSSLMODE=conn.extra.get("sslmode", "prefer"), PGCONNECT_TIMEOUT=str(conn.extra.get("timeout", 30)))
        yield env
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


def read_wal_range(waldump: str, wal: Path, timeline: int, start: str, end: int) -> str:
    """Read every record in [start, end) with pg_waldump (CRCs, continuity); return the last
    record's LSN.  Streams the output: WAL of any size."""
    proc = subprocess.Popen([waldump, "--path", str(wal), "--timeline", str(timeline), "--start", start,
                             "--end", format_lsn(end)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = None
    for line in proc.stdout:
        match = _WALDUMP_LSN.search(line)
        if match:
            last = match.group(1)
    error = proc.stderr.read()
    if proc.wait() != 0 or last is None:
        raise PostgresSourceError(f"WAL between {start} and {format_lsn(end)} does not read back: {error.strip()[-500:]}")
    return last


# ---------------------------------------------------------------------------------------------
# The source kind
# ---------------------------------------------------------------------------------------------
class PostgresSource(SourceKind):
    kind = "postgres"
    supports_incremental = True

    @property
    def conn(self) -> ConnectionInfo:
        return get_connection(self.source.options["conn_id"])

    @property
    def slot(self) -> str:
        if self.source.options.get("slot"):
            return self.source.options["slot"]
        return re.sub(r"[^a-z0-9_]", "_", f"metabackup_{self.task}_{self.source.name}".lower())[:63]

    def _bin(self, program: str, server_major: int) -> str:
        folder = self.source.options.get("bin_dir") or DEFAULT_BIN.format(major=server_major)
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
            limit = int(self.source.options.get("slot_warn_mb", 1024)) << 20
            if row and row[0] is not None and row[0] > limit:
                log.warning("replication slot %s holds back %d MiB of WAL on %s (warning above %d MiB); "
                            "set max_slot_wal_keep_size on the server to cap it", self.slot, int(row[0]) >> 20,
                            _where(conn), limit >> 20)

    def incremental_blocker(self, parent: Manifest) -> str | None:
        pos = parent.position
        with sql_session(self.conn) as session:
            server = self._server(session)
            slot = session.execute("SELECT restart_lsn, wal_status FROM pg_replication_slots WHERE slot_name = %s"
                                   " AND slot_type = 'physical'", (self.slot,)).fetchone()
        if server["system_identifier"] != pos["system_identifier"]:
            return f"the server's system identifier changed ({pos['system_identifier']} -> {server['system_identifier']}): it was rebuilt"
        if server["timeline"] != pos["timeline"]:
            return f"the timeline changed from {pos['timeline']} to {server['timeline']} (a failover or a recovery)"
        if slot is None:
            return f"replication slot {self.slot} no longer exists"
        if slot[1] == "lost" or slot[0] is None:
            return f"replication slot {self.slot} lost the WAL it held (max_slot_wal_keep_size)"
        if parse_lsn(str(slot[0])) > parse_lsn(pos["end_lsn"]):
            return f"replication slot {self.slot} no longer holds WAL from the parent's end LSN {pos['end_lsn']}"
        return None

    def snapshot(self, workdir: Path, decision: dict[str, Any], parent: Manifest | None,
                 open_parent: Callable[[], BinaryIO] | None) -> dict[str, Any]:
        conn = self.conn
        with sql_session(conn) as session:
            server = self._server(session)
        if decision["type"] == FULL:
            position = self._full(conn, server, workdir)
        else:
            blocker = self.incremental_blocker(parent)
            if blocker:
                raise PostgresSourceError(f"cannot take an incremental on {parent.set}: {blocker}; the next run will be full")
            position = self._incremental(conn, server, workdir, parent.position)
        position.update(system_identifier=server["system_identifier"], server_version=server["version_num"],
                        slot=self.slot, segment_size=server["segment_size"])
        (workdir / "pg-position.json").write_text(json.dumps(position))
        log.info("%s: %s covers %s .. %s on timeline %s", self.source.name, decision["type"],
                 position["start_lsn"], position["end_lsn"], position["timeline"])
        return {k: position[k] for k in ("start_lsn", "end_lsn", "timeline")}

    def _full(self, conn: ConnectionInfo, server: dict[str, Any], workdir: Path) -> dict[str, Any]:
        with sql_session(conn) as session:
            if session.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone():
                session.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))  # a new chain starts here
        base = workdir / "base"
        with passfile_env(conn) as env:
            run_logged([self._bin("pg_basebackup", server["major"]), "-D", str(base), "-Ft", "-X", "stream",
                        "-c", "fast", "--create-slot", "--slot", self.slot, "--manifest-checksums=SHA256",
                        "-w", "--progress", "--verbose", "--label", f"metabackup {self.task} {self.source.name}"],
                       env, "pg_basebackup")
        manifest = json.loads((base / "backup_manifest").read_text())
        ranges = manifest["WAL-Ranges"]
        if len(ranges) != 1:
            raise PostgresSourceError(f"backup spans {len(ranges)} timelines; take the backup again")
        return {"method": "pg_basebackup", "timeline": ranges[0]["Timeline"], "start_lsn": ranges[0]["Start-LSN"],
                "end_lsn": ranges[0]["End-LSN"]}

    def _incremental(self, conn: ConnectionInfo, server: dict[str, Any], workdir: Path, parent: dict[str, Any]) -> dict[str, Any]:
        with sql_session(conn) as session:
            # Close the current segment: everything committed so far is before the switch record's
            # end, which pg_switch_wal returns (or the current position when nothing was written).
            end = parse_lsn(str(session.execute("SELECT pg_switch_wal()").fetchone()[0]))
        start = parse_lsn(parent["end_lsn"])
        wal = workdir / "wal"
        wal.mkdir()
        with passfile_env(conn) as env:
            run_logged([self._bin("pg_receivewal", server["major"]), "-D", str(wal), "--slot", self.slot,
                        "--endpos", format_lsn(end), "--no-loop", "--status-interval=1", "-w", "--verbose"],
                       env, "pg_receivewal")
        for partial in wal.glob("*.partial"):  # the last segment may be incomplete: its records up to endpos are whole
            partial.rename(partial.with_suffix(""))
        size, timeline = server["segment_size"], server["timeline"]
        have = sorted(p.name for p in wal.iterdir() if SEGMENT_RE.match(p.name))
        first, last = start // size, (end - 1) // size
        needed = [segment_name(timeline, n * size, size) for n in range(first, last + 1)]
        missing = [n for n in needed if n not in have]
        if missing:
            raise PostgresSourceError(f"WAL gap: segments {missing[:3]} between {parent['end_lsn']} and {format_lsn(end)} "
                                      "were not received; the slot may have been advanced by another client")
        for name in have:  # keep only the range this set covers
            if name not in needed:
                (wal / name).unlink()
        last_record = read_wal_range(self._bin("pg_waldump", server["major"]), wal, timeline, parent["end_lsn"], end)
        return {"method": "wal", "timeline": timeline, "start_lsn": parent["end_lsn"], "end_lsn": format_lsn(end),
                "last_record_lsn": last_record, "segments": needed}

    def write_archive(self, workdir: Path, tar: tarfile.TarFile, set_stem: str) -> ArchiveResult:
        position = json.loads((workdir / "pg-position.json").read_text())
        members: list[tuple[Path, str]] = []
        if (workdir / "base").exists():
            members += [(p, f"{MEMBER_DIR}/{p.name}") for p in sorted((workdir / "base").iterdir())]
        if (workdir / "wal").exists():
            members += [(p, f"{WAL_DIR}/{p.name}") for p in sorted((workdir / "wal").iterdir())]
        total = 0
        for path, name in members:
            info = tar.gettarinfo(str(path), arcname=name)
            info.mode, info.uid, info.gid, info.uname, info.gname = FILE_MODE, 0, 0, "", ""
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
            total += info.size
        return ArchiveResult(content={"members": len(members), "bytes": total}, position=position)

    @classmethod
    def restore(cls, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Any) -> dict[str, Any]:
        dest = dest if isinstance(dest, PostgresDestination) else PostgresDestination(data_dir=str(dest))
        return restore_chain(chain, open_archive, dest)


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------
@dataclass
class PostgresDestination:
    """A new data directory to restore into, and how to run the recovered server."""

    data_dir: str
    port: int = 0  # 0: a free port
    target_time: str | None = None  # PostgreSQL timestamptz text ('2026-11-24 10:00:00+00'); default: the set's end
    keep_running: bool = False
    os_user: str = "postgres"
    bin_dir: str | None = None


def _as_user(user: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    command = ["runuser", "-u", user, "--", *args] if os.geteuid() == 0 else args
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def _chown_tree(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            shutil.chown(os.path.join(root, name), user, user)
    shutil.chown(path, user, user)


def restore_chain(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: PostgresDestination) -> dict[str, Any]:
    import socket

    full, last = chain[0], chain[-1]
    data = Path(dest.data_dir)
    if data.exists() and any(data.iterdir()):
        raise RestoreError(f"restore destination {data} is not empty; restore into a new data directory")
    probe = data.parent
    while not probe.exists():
        probe = probe.parent
    if _as_user(dest.os_user, ["test", "-x", str(probe)]).returncode != 0:
        raise RestoreError(f"the {dest.os_user} user cannot reach {probe} (a parent directory is not traversable); "
                           "restore under a directory it can enter")
    major = int(full.position["server_version"]) // 10000
    bin_dir = Path(dest.bin_dir or DEFAULT_BIN.format(major=major))
    work = data.parent / f".{data.name}.restore"  # WAL and manifest beside the data directory
    shutil.rmtree(work, ignore_errors=True)
    (work / "wal").mkdir(parents=True)
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    with open_archive(full.set) as stream, open_tar_stream(stream) as tar:
        for member in tar:
            name = member.name.removeprefix(f"{MEMBER_DIR}/")
            handle = tar.extractfile(member)
            if name == "base.tar":
                with tarfile.open(fileobj=handle, mode="r|") as inner:
                    inner.extractall(data, filter="fully_trusted")  # our own verified pg_basebackup output
            elif name == "pg_wal.tar":
                with tarfile.open(fileobj=handle, mode="r|") as inner:
                    inner.extractall(data / "pg_wal", filter="fully_trusted")
            elif name == "backup_manifest":
                (work / "backup_manifest").write_bytes(handle.read())
    verify = subprocess.run([str(bin_dir / "pg_verifybackup"), "--no-parse-wal", "-m", str(work / "backup_manifest"),
                             str(data)], capture_output=True, text=True)
    if verify.returncode != 0:
        raise RestoreError(f"the restored base backup does not match its manifest: {verify.stderr.strip()[-800:]}")
    for manifest in chain[1:]:  # later sets overwrite earlier copies of a segment: theirs are longer
        with open_archive(manifest.set) as stream, open_tar_stream(stream) as tar:
            for member in tar:
                if member.name.startswith(f"{WAL_DIR}/"):
                    name = Path(member.name).name
                    if not SEGMENT_RE.match(name):
                        raise RestoreError(f"unexpected WAL member {member.name} in {manifest.set}")
                    with open(work / "wal" / name, "wb") as out:
                        shutil.copyfileobj(tar.extractfile(member), out, 1 << 20)
    port = dest.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    if dest.target_time:
        target = f"recovery_target_time = '{dest.target_time}'"
    elif len(chain) == 1:
        target = "recovery_target = 'immediate'"  # the full's consistency point: its end LSN
    else:
        target = ""  # all of the chain's WAL: the last set ends where its WAL ends
    # Unix socket paths are limited to 107 bytes, so the socket lives in a short temp directory
    # rather than under a (possibly deep) destination.
    sock = Path(tempfile.mkdtemp(prefix="mb-pg-"))
    with open(data / "postgresql.auto.conf", "a") as conf:
        conf.write(f"""
# added by metabackup restore of {last.set}
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sock}'
restore_command = 'cp "{work / "wal"}/%f" "%p"'
{target}
recovery_target_action = 'promote'
""")
    (data / "recovery.signal").touch()
    logfile = work / "postgres.log"
    logfile.touch()
    for path in (work, data, sock):
        _chown_tree(path, dest.os_user)
    log.info("recovering %s on port %d towards %s", data, port, target)
    started = _as_user(dest.os_user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "300", "start"])
    if started.returncode != 0 and not logfile.read_text():
        raise RestoreError(f"the recovered server did not start: {(started.stdout + started.stderr).strip()[-800:]}")
    outcome = _wait_for_recovery(logfile, data, timeout=600)
    if outcome == "promoted" and not dest.target_time and len(chain) > 1:
        done = re.findall(r"redo done at ([0-9A-F]+/[0-9A-F]+)", logfile.read_text())
        expected = last.position["last_record_lsn"]
        if not done or parse_lsn(done[-1]) < parse_lsn(expected):
            outcome = f"replay stopped at {done[-1] if done else 'nothing'} before the set's last record {expected}"
    if started.returncode != 0 or outcome != "promoted":
        _as_user(dest.os_user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(sock, ignore_errors=True)
        raise RestoreError(f"recovery of {last.set} did not reach its target ({outcome}); log: {logfile}\n"
                           + logfile.read_text()[-1500:])
    reached = [line.split("LOG:", 1)[-1].strip() for line in logfile.read_text().splitlines()
               if "recovery stopping" in line or "redo done at" in line]
    result = {"data_dir": str(data), "port": port, "target": target or "end of the chain's WAL",
              "recovery": reached[-1] if reached else "", "running": dest.keep_running, "socket_dir": str(sock)}
    if not dest.keep_running:
        _as_user(dest.os_user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(sock, ignore_errors=True)
    return result


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
