"""The ``namenode`` source kind: HDFS namespace metadata (fsimage and edit log) of a NameService.

Full: the active NameNode's latest fsimage, fetched over its HTTP image-transfer servlet
(``/imagetransfer?getimage=1&txid=latest``) and checked against the MD5 the NameNode stores
beside it, plus every finalized edit-log segment after the image up to a roll of the edit log
taken by this run, so the set holds the namespace as of this run and not as of the last
checkpoint.  Incremental: the finalized segments from the parent's last transaction up to a new
roll.  Segments are fetched through the same servlet (``getedit=1``); their transaction ids must
follow each other without a gap, from the parent's end to the roll.

The three calls that have no HTTP form (namespace ids, rolling the edit log, listing finalized
segments) go through ``metabackup.hdfs.NameNodeTool``, a small Java program run with the
cluster's Hadoop client (``tool_command``, default ``hadoop metabackup.hdfs.NameNodeTool`` with
``build/hadoop/metabackup-hdfs.jar`` on ``HADOOP_CLASSPATH``).  They need HDFS superuser rights.
A snapshot runs the tool once (its ``snapshot`` command: the ids, the roll, the segment list), or
three times with a tool built before that command.

Restore lays out a NameNode name directory (``current/VERSION``, ``fsimage_N`` with its
``.md5``, the segments, ``seen_txid``); a NameNode started on it loads the image, replays the
segments and serves the namespace as of the restored set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import pendulum
from pydantic import AfterValidator, Field, model_validator

from metabackup.archive import open_tar_stream
from metabackup.connections import get_connection
from metabackup.fsutil import FILE_MODE, atomic_writer, child_env, chown_tree, ensure_private_dir, write_private
from metabackup.hdfs import namenode_state, namenode_urls
from metabackup.manifest import FULL, HEX32, Manifest, int_field, names_field, need, text_field
from metabackup.fields import ConnId, NameService, SpecModel, between, short
from metabackup.sources.base import (
    ArchiveResult, BackupError, Rebuilt, RestoreError, RestoreRequest, SourceEngine, SourceKind,
)

if TYPE_CHECKING:  # the run's decision, only in annotations (the plug-in stays light)
    from metabackup.policy import Decision

log = logging.getLogger(__name__)

MEMBER_DIR = "namenode/current"
IMAGE_RE = re.compile(r"^fsimage_(\d{19})$")
EDITS_RE = re.compile(r"^edits_(\d{19})-(\d{19})$")
MD5_HEADER = "X-MD5-Digest"
NAME_HEADER = "X-Image-Edits-Name"
CHUNK = 1 << 20
# The Hadoop client's own settings (HADOOP_CONF_DIR, HADOOP_CLASSPATH, HADOOP_USER_NAME, JAVA_HOME,
# JAVA_TOOL_OPTIONS, ...) reach the tool; the worker's other variables, Airflow's connection and
# variable secrets among them, do not.
TOOL_ENV_PREFIXES = ("HADOOP_", "JAVA_")


class NameNodeSourceError(BackupError):
    pass


def image_name(txid: int) -> str:
    return f"fsimage_{txid:019d}"


def edits_name(start: int, end: int) -> str:
    return f"edits_{start:019d}-{end:019d}"


@dataclass(frozen=True)
class Segment:
    start: int
    end: int

    @property
    def name(self) -> str:
        return edits_name(self.start, self.end)


def segments_covering(logs: list[dict[str, Any]], first: int, last: int) -> list[Segment]:
    """The finalized segments holding every txid in [first, last], checked to follow each other.

    ``logs`` is the NameNode's edit-log manifest (finalized segments holding txids >= first).
    """
    segments = sorted((Segment(int(x["start"]), int(x["end"])) for x in logs if not x.get("inProgress")),
                      key=lambda s: s.start)
    chosen = [s for s in segments if s.end >= first and s.start <= last]
    if last < first:
        return []
    if not chosen:
        raise NameNodeSourceError(f"the NameNode has no finalized edit-log segment for txids {first}..{last} "
                                  "(purged after a checkpoint?)")
    if chosen[0].start > first:
        raise NameNodeSourceError(f"edit log gap: the first segment available starts at txid {chosen[0].start}, "
                                  f"the set needs txid {first} onwards (purged after a checkpoint?)")
    for before, after in zip(chosen, chosen[1:]):
        if after.start != before.end + 1:
            raise NameNodeSourceError(f"edit log gap between {before.name} and {after.name}")
    if chosen[-1].end < last:
        raise NameNodeSourceError(f"the finalized edit log ends at txid {chosen[-1].end}, before {last}")
    return chosen


def tool_env() -> dict[str, str]:
    """The environment of the NameNode tool: allow-listed variables and the Hadoop/Java ones only."""
    return child_env(keep_prefixes=TOOL_ENV_PREFIXES)


class NameNodeTool:
    """Runs ``metabackup.hdfs.NameNodeTool`` through the configured command; parses its JSON.

    ``tool_command`` is split like a shell would split it (quotes), then run as an argv, never
    by a shell, with :func:`tool_env`."""

    def __init__(self, command: str, fs_uri: str, timeout: int):
        self.command = shlex.split(command)
        self.fs_uri = fs_uri
        self.timeout = timeout

    def argv(self, *args: str) -> list[str]:
        return [*self.command, self.fs_uri, *args]

    def __call__(self, *args: str) -> dict[str, Any]:
        argv = self.argv(*args)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, env=tool_env())
        except FileNotFoundError:
            raise NameNodeSourceError(f"NameNode tool {self.command[0]!r} not found; set the source's tool_command "
                                      "(see the README's NameNode section)") from None
        except subprocess.TimeoutExpired:
            raise NameNodeSourceError(f"NameNode tool {' '.join(args)} on {self.fs_uri} took over {self.timeout} s") from None
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise NameNodeSourceError(f"NameNode tool {' '.join(args)} on {self.fs_uri} failed "
                                      f"(exit {done.returncode}):\n{tail}")
        return json.loads(lines[-1])


_EDITS = re.compile(r"^edits_\d{19}-\d{19}$")
DEFAULT_NAMENODE_TOOL = "hadoop metabackup.hdfs.NameNodeTool"


def _fs_uri(value: str) -> str:
    if not re.match(r"^hdfs://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$", value):
        raise ValueError(f"{short(value)} must be hdfs://<nameservice> or hdfs://<host>:<rpc port>")
    return value


def _tool_command(value: str) -> str:
    """Run as ``shlex.split(tool_command) + arguments`` (see :class:`NameNodeTool`)."""
    if not value.strip():
        raise ValueError("must be a command line, e.g. 'hadoop metabackup.hdfs.NameNodeTool'")
    try:
        argv = shlex.split(value, posix=True)
    except ValueError as exc:
        raise ValueError(f"{short(value)} cannot be split into a command line ({exc}); check its quotes and "
                         "backslashes") from None
    if not argv or not argv[0]:
        raise ValueError(f"{short(value)} names no program; write a command line, e.g. "
                         "'hadoop metabackup.hdfs.NameNodeTool'")
    return value


class NameNodeOptions(SpecModel):
    """``kind: namenode``: the metadata of an HDFS NameService."""

    nameservice: NameService = "hacluster"
    conn_id: ConnId | None = Field(None, description="the NameService's WebHDFS connection (default webhdfs_<nameservice>)")
    fs_uri: Annotated[str, AfterValidator(_fs_uri)] | None = Field(
        None, description="hdfs://<nameservice> (the default) or hdfs://<host>:<rpc port>")
    tool_command: Annotated[str, AfterValidator(_tool_command)] = DEFAULT_NAMENODE_TOOL
    timeout: between(10, 86400) = 600

    @model_validator(mode="before")
    @classmethod
    def _defaults_follow_the_nameservice(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nameservice = data.get("nameservice") or "hacluster"
            if isinstance(nameservice, str):
                data = {"conn_id": f"webhdfs_{nameservice}", "fs_uri": f"hdfs://{nameservice}",
                        **{k: v for k, v in data.items() if v is not None}}
        return data


class NameNodeKind(SourceKind):
    name = "namenode"
    Options = NameNodeOptions
    engine_path = "metabackup.sources.namenode:NameNodeSource"

    def check_position(self, pos: dict, at: str) -> None:
        """A set's position, read back from a target: namespace ids, txids, image and segments."""
        text_field(pos, f"{at}.cluster_id", re.compile(r"^[A-Za-z0-9_.\-]{1,128}$"), "a cluster id")
        int_field(pos, f"{at}.namespace_id")
        text_field(pos, f"{at}.block_pool_id", re.compile(r"^[A-Za-z0-9_.\-]{1,128}$"), "a block pool id")
        int_field(pos, f"{at}.ctime")
        need(isinstance(pos.get("layout_version"), int), f"{at}.layout_version", pos.get("layout_version"), "a number")
        int_field(pos, f"{at}.start_txid")
        int_field(pos, f"{at}.end_txid")
        int_field(pos, f"{at}.image_txid", optional=True)
        text_field(pos, f"{at}.image_md5", HEX32, "an MD5 in hex", optional=True)
        names_field(pos, f"{at}.segments", _EDITS, "edit-log segment names")

    def validate_restored(self, chain: list[Manifest], source: Any, dest: Any, in_place: bool) -> dict[str, Any]:
        """The name directory holds the set's namespace ids and every segment of the chain."""
        position = chain[-1].position
        current = Path(dest) / "current"
        version = dict(line.split("=", 1) for line in (current / "VERSION").read_text().splitlines() if "=" in line)
        if (version.get("clusterID"), version.get("namespaceID")) != (position["cluster_id"], str(position["namespace_id"])):
            raise RestoreError(f"{current}/VERSION names another namespace than the set")
        missing = [n for m in chain for n in m.position["segments"] if not (current / n).exists()]
        if missing:
            raise RestoreError(f"{current} lacks edit-log segments {missing[:3]}")
        return {"last_txid": int((current / "seen_txid").read_text()),
                "segments": sum(len(m.position["segments"]) for m in chain)}

    def target_problem(self, options: NameNodeOptions, target: Any) -> str | None:
        """A NameService's metadata never goes into that same NameService: when its NameNode is lost,
        so is the only way to read the backup (the vendor's console refuses it for the same reason)."""
        if target.hdfs_nameservice == options.nameservice:
            return (f"is {target.type} in the NameService {options.nameservice} whose NameNode this source backs "
                    "up: when that NameNode is lost, so is the way to read its backup. Keep NameNode backups off "
                    "that cluster: a LocalDir target (on the management node) with copies: to RemoteHDFS on "
                    "another cluster, SFTP or S3")
        return None

    def asset_uris(self, options: NameNodeOptions) -> list[str]:
        return [f"hdfs://{options.nameservice}/"]  # the namespace of a NameService, named as HDFS clients name it

    # ---- in place: every name directory of the NameService's NameNodes (and a shared edits
    # directory) at once; the DataNodes and the other HDFS roles keep running ----
    in_place = True
    live_dirs_hint = ("the name directories of every NameNode of the NameService (dfs.namenode.name.dir; both "
                      "NameNodes' of an HA pair) and, for an HA pair on a shared edits directory, that directory")

    def service_problems(self, options: NameNodeOptions, service: Any) -> list[tuple[str, str]]:
        if not service.data_dirs:
            return [("data_dirs", "must name the NameNode's name directories (dfs.namenode.name.dir), at least one; "
                                  "for an HA pair both NameNodes' and the shared edits directory")]
        return []

    def rebuild_beside(self, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], source: Any,
                       scratch: Path, request: RestoreRequest) -> Rebuilt:
        """The chain's name directory, rebuilt once under ``scratch`` and copied for each further
        live directory: a full name directory (image and edits) for each one that holds an fsimage
        (or does not exist yet), the edits alone (``VERSION``, segments, ``seen_txid``) for one that
        holds edits only (an HA pair's shared edits directory, re-initialised with the restored
        edits as ``hdfs namenode -initializeSharedEdits`` would); all given to ``service.owner``."""
        return rebuild_name_dirs(chain, open_archive, source, scratch)

    def validate_in_place(self, chain: list[Manifest], source: Any, facts: dict[str, Any]) -> dict[str, Any]:
        return validate_live_namenode(chain, source, facts)

    def live_identity(self, source: Any) -> dict[str, Any]:
        return live_namespace_identity(source)


KIND = NameNodeKind()


class NameNodeSource(SourceEngine):
    _software_version: str | None = None  # set by write_archive from the set's position

    @property
    def tool(self) -> NameNodeTool:
        return NameNodeTool(self.options.tool_command, self.options.fs_uri, self.options.timeout)

    def active_url(self) -> str:
        return self.namenode_urls()[0]

    def namenode_urls(self) -> list[str]:
        """HTTP addresses of the NameService's NameNodes, the active one first (raises if none is)."""
        conn_id = self.options.conn_id
        try:
            conn = get_connection(conn_id)
            urls = namenode_urls(conn.host, conn.port, conn.extra, label=conn_id)
        except Exception as exc:
            raise NameNodeSourceError(f"{self.options.nameservice}: {exc}") from exc
        if namenode_state(urls[0]) != "active":
            raise NameNodeSourceError(f"{self.options.nameservice}: no active NameNode among {urls} "
                                      f"(connection {self.options.conn_id!r})")
        return urls

    def check(self) -> None:
        url = self.active_url()
        info = self.tool("info")
        log.info("%s: active NameNode %s, cluster %s, namespace %s, last txid %s", self.source.name, url,
                 info["clusterId"], info["namespaceId"], info["transactionId"])

    def tool_versions(self) -> dict[str, str]:
        """The NameNode's Hadoop version: as the snapshot recorded it once :meth:`write_archive` has
        read the set's position (the archive step), else asked of the NameNode (a JVM start)."""
        version = self._software_version
        return {"hadoop": str(version if version is not None else self.tool("info").get("softwareVersion"))}

    def incremental_blocker(self, parent: Manifest) -> str | None:
        pos = parent.position
        info = self.tool("info")
        if (info["clusterId"], info["namespaceId"]) != (pos["cluster_id"], pos["namespace_id"]):
            return (f"the NameService now has cluster {info['clusterId']} / namespace {info['namespaceId']}, "
                    f"the parent was taken of {pos['cluster_id']} / {pos['namespace_id']} (reformatted?)")
        logs = self.tool("manifest", str(pos["end_txid"] + 1))["logs"]
        finalized = sorted((x for x in logs if not x.get("inProgress")), key=lambda x: x["start"])
        if finalized and finalized[0]["start"] > pos["end_txid"] + 1:
            return f"the edit log from txid {pos['end_txid'] + 1} was purged (it now starts at {finalized[0]['start']})"
        return None

    # -- snapshot ----------------------------------------------------------------------------

    def snapshot(self, workdir: Path, decision: Decision, parent: Manifest | None,
                 open_parent: Callable[[], BinaryIO] | None) -> dict[str, Any]:
        import requests

        urls = self.namenode_urls()
        url = urls[0]
        files = workdir / "namenode"
        ensure_private_dir(files)
        position: dict[str, Any] = {}
        session = requests.Session()
        if decision.type == FULL:
            image = self._fetch(session, url, "getimage=1&txid=latest", files, expect=None)
            txid = int(IMAGE_RE.match(image["name"]).group(1))
            position.update(image_txid=txid, image_md5=image["md5"], start_txid=txid + 1)
        else:
            blocker = self.incremental_blocker(parent)
            if blocker:
                raise NameNodeSourceError(f"cannot take an incremental on {parent.set}: {blocker}; the next run will be full")
            position.update(start_txid=parent.position["end_txid"] + 1)
        # the namespace ids, then a roll (everything before it is now in finalized segments), then
        # the finalized segments from start_txid: one JVM start (NameNodeTool snapshot), not three
        info, rolled, logs = self._info_roll_manifest(position["start_txid"])
        position = {
            "nameservice": self.options.nameservice, "namenode": url, "cluster_id": info["clusterId"],
            "namespace_id": info["namespaceId"], "block_pool_id": info["blockPoolId"], "ctime": info["cTime"],
            "layout_version": info["layoutVersion"], "software_version": info["softwareVersion"], **position,
        }
        end = int(rolled) - 1
        segments = segments_covering(logs, position["start_txid"], end)
        for number, segment in enumerate(segments, 1):
            self._fetch_from_any(session, urls, f"getedit=1&startTxId={segment.start}&endTxId={segment.end}",
                                 files, expect=segment.name)
            log.info("%s: edit-log segment %d/%d %s", self.source.name, number, len(segments), segment.name)
        position.update(end_txid=end, segments=[s.name for s in segments], taken_at=pendulum.now("UTC").isoformat())
        write_private(workdir / "namenode-position.json", json.dumps(position))
        log.info("%s: %s covers txids %d..%d (%d segments%s) from %s", self.source.name, decision.type,
                 position["start_txid"], end, len(segments),
                 f", image {image_name(position['image_txid'])}" if "image_txid" in position else "", url)
        return {k: position[k] for k in ("start_txid", "end_txid", "cluster_id")}

    def _info_roll_manifest(self, since: int) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
        """``info``, ``roll`` and ``manifest since`` in that order: by the tool's ``snapshot`` command
        (one JVM), or, with a NameNodeTool built before it had one, by the three commands."""
        try:
            both = self.tool("snapshot", str(since))
        except NameNodeSourceError as exc:
            if "unknown command snapshot" not in str(exc):
                raise
            log.info("%s: the NameNode tool has no snapshot command (built before it); info, roll and manifest "
                     "one by one", self.source.name)
            info = self.tool("info")
            rolled = self.tool("roll")["segmentStartTxId"]
            return info, int(rolled), self.tool("manifest", str(since))["logs"]
        return both["info"], int(both["segmentStartTxId"]), both["manifest"]["logs"]

    def _fetch_from_any(self, session, urls: list[str], query: str, directory: Path, expect: str) -> dict[str, Any]:
        """A finalized segment from the first NameNode that holds it: after a failover (with QJM)
        the new active NameNode keeps only the segments it wrote; the others are on the old one."""
        problems = []
        for url in urls:
            try:
                return self._fetch(session, url, query, directory, expect)
            except (NameNodeSourceError, OSError) as exc:
                problems.append(str(exc))
                log.info("%s not available from %s: %s", expect, url, exc)
        raise NameNodeSourceError(f"no NameNode could send {expect}: " + "; ".join(problems))

    def _fetch(self, session, url: str, query: str, directory: Path, expect: str | None) -> dict[str, Any]:
        """Stream one file from the image servlet, checking its length and (images) its MD5."""
        response = session.get(f"{url}/imagetransfer?{query}", stream=True, timeout=self.options.timeout)
        with response:
            if response.status_code != 200:
                raise NameNodeSourceError(f"{url}/imagetransfer?{query}: HTTP {response.status_code} "
                                          f"{response.text[:300].strip()}")
            name = response.headers.get(NAME_HEADER, "")
            if not (IMAGE_RE.match(name) or EDITS_RE.match(name)) or (expect and name != expect):
                raise NameNodeSourceError(f"{url}/imagetransfer?{query} sent {name!r}, expected {expect or 'an fsimage'}")
            length = int(response.headers.get("Content-Length", -1))
            md5 = hashlib.md5(usedforsecurity=False)
            size = 0
            # 0600 whatever the umask, and there only when whole and checked
            with atomic_writer(directory / name) as out:
                for block in response.iter_content(CHUNK):
                    out.write(block)
                    md5.update(block)
                    size += len(block)
                if length >= 0 and size != length:
                    raise NameNodeSourceError(f"{name}: received {size} bytes of {length}")
                stored = response.headers.get(MD5_HEADER)
                if stored and stored != md5.hexdigest():
                    raise NameNodeSourceError(f"{name}: MD5 {md5.hexdigest()} does not match the NameNode's {stored}")
                if IMAGE_RE.match(name) and not stored:
                    raise NameNodeSourceError(f"{name}: the NameNode sent no MD5 for the image")
        return {"name": name, "size": size, "md5": md5.hexdigest()}

    def write_archive(self, workdir: Path, tar: tarfile.TarFile, set_stem: str) -> ArchiveResult:
        position = json.loads((workdir / "namenode-position.json").read_text())
        self._software_version = position.get("software_version")  # for tool_versions: no second `info`
        files = sorted((workdir / "namenode").iterdir())
        total = 0
        for path in files:
            info = tar.gettarinfo(str(path), arcname=f"{MEMBER_DIR}/{path.name}")
            info.mode, info.uid, info.gid, info.uname, info.gname = FILE_MODE, 0, 0, "", ""
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
            total += info.size
        return ArchiveResult(content={"files": len(files), "bytes": total, "segments": len(position["segments"]),
                                      "transactions": position["end_txid"] - position["start_txid"] + 1},
                             position=position)

    @classmethod
    def restore(cls, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Any) -> dict[str, Any]:
        return restore_name_dir(chain, open_archive, Path(dest))


def version_file(position: dict[str, Any]) -> str:
    """A NameNode storage ``VERSION`` file for the backed-up namespace."""
    stamp = pendulum.now("UTC").format("ddd MMM DD HH:mm:ss zz YYYY")
    return (f"#{stamp}\nnamespaceID={position['namespace_id']}\nclusterID={position['cluster_id']}\n"
            f"cTime={position['ctime']}\nstorageType=NAME_NODE\nblockpoolID={position['block_pool_id']}\n"
            f"layoutVersion={position['layout_version']}\n")


def restore_name_dir(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Path) -> dict[str, Any]:
    """Lay out a NameNode name directory at ``dest`` (new or empty) holding the namespace at ``chain[-1]``."""
    if dest.exists() and any(dest.iterdir()):
        raise RestoreError(f"{dest} is not empty; a NameNode name directory is restored into a new directory")
    ids = {(m.position["cluster_id"], m.position["namespace_id"]) for m in chain}
    if len(ids) != 1:
        raise RestoreError(f"the chain mixes namespaces {sorted(ids)}; it cannot be restored as one")
    expected = chain[0].position["start_txid"]
    for manifest in chain:
        if manifest.position["start_txid"] != expected:
            raise RestoreError(f"{manifest.set} starts at txid {manifest.position['start_txid']}, expected {expected}")
        expected = manifest.position["end_txid"] + 1
    ensure_private_dir(dest)  # 0700, like every directory below it
    current = ensure_private_dir(dest / "current")
    written = []
    for manifest in chain:
        with open_archive(manifest.set) as raw, open_tar_stream(raw) as tar:
            for member in tar:
                name = member.name.removeprefix(f"{MEMBER_DIR}/")
                if member.name == name or "/" in name or not (IMAGE_RE.match(name) or EDITS_RE.match(name)):
                    raise RestoreError(f"{manifest.archive.name}: unexpected member {member.name!r}")
                with tar.extractfile(member) as src, atomic_writer(current / name) as out:  # 0600
                    while block := src.read(CHUNK):
                        out.write(block)
                written.append(name)
    full = chain[0].position
    image = image_name(full["image_txid"])
    write_private(current / f"{image}.md5", f"{full['image_md5']} *{image}\n")
    last = chain[-1].position["end_txid"]
    write_private(current / "seen_txid", f"{last}\n")
    write_private(current / "VERSION", version_file(chain[-1].position))
    log.info("NameNode name directory %s: %s and %d edit-log segments, txids up to %d", dest, image,
             sum(1 for n in written if n.startswith("edits_")), last)
    return {"name_dir": str(dest), "image": image, "last_txid": last, "files": len(written) + 3,
            "cluster_id": full["cluster_id"], "namespace_id": full["namespace_id"]}


# ---- in-place restore ---------------------------------------------------------------------------

def _live_dir_role(live: Path) -> str:
    """``name`` for a directory that holds an fsimage (or no storage yet), ``edits`` for one that
    holds edit-log segments only (a shared edits directory, or a separate dfs.namenode.edits.dir)."""
    current = live / "current"
    if not current.is_dir():
        return "name"
    names = [p.name for p in current.iterdir()]
    if any(n.startswith("fsimage") for n in names):
        return "name"
    return "edits" if any(n.startswith("edits_") for n in names) or (current / "VERSION").exists() else "name"


def rebuild_name_dirs(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], source: Any,
                      scratch: Path) -> Rebuilt:
    """See :meth:`NameNodeKind.rebuild_beside`."""
    import shutil

    service = source.service
    first = scratch / "name-0"
    made = restore_name_dir(chain, open_archive, first)
    KIND.validate_restored(chain, source, first, in_place=False)
    dirs: dict[str, Path] = {}
    roles: dict[str, str] = {}
    for number, live in enumerate(service.data_dirs):
        role = _live_dir_role(Path(live))
        roles[live] = role
        built = first if number == 0 and role == "name" else scratch / f"name-{number + 1}"
        if built != first:
            ensure_private_dir(built)
            ensure_private_dir(built / "current")
            for path in sorted((first / "current").iterdir()):
                if role == "edits" and path.name.startswith("fsimage"):
                    continue
                shutil.copy2(path, built / "current" / path.name)
        if service.owner:
            chown_tree(built, service.owner)
        dirs[live] = built
    if first not in dirs.values():
        shutil.rmtree(first)
    position = chain[-1].position
    facts = {"rebuilt_at_ms": int(pendulum.now("UTC").timestamp() * 1000),  # a NameNode started later serves it
             "cluster_id": position["cluster_id"], "namespace_id": position["namespace_id"],
             "block_pool_id": position["block_pool_id"], "image_txid": chain[0].position["image_txid"],
             "last_txid": made["last_txid"], "name_dirs": [d for d, r in roles.items() if r == "name"],
             "edits_dirs": [d for d, r in roles.items() if r == "edits"]}
    log.info("%s: name directory of %s rebuilt for %s", source.name, chain[-1].set,
             ", ".join(f"{d} ({r})" for d, r in roles.items()))
    return Rebuilt(dirs, facts)


def _namenodes(source: Any) -> tuple[list[str], dict[str, str | None], Any]:
    """The NameService's NameNode HTTP addresses (the active one first), their HA states, the connection."""
    conn = get_connection(source.options.conn_id)
    urls = namenode_urls(conn.host, conn.port, conn.extra, label=source.options.conn_id)
    return urls, {url: namenode_state(url) for url in urls}, conn


def _jmx(url: str, bean: str) -> dict[str, Any]:
    import requests

    response = requests.get(f"{url}/jmx", params={"qry": f"Hadoop:service=NameNode,name={bean}"}, timeout=10)
    response.raise_for_status()
    beans = response.json().get("beans") or []
    if not beans:
        raise LookupError(f"{url}/jmx has no {bean} bean")  # not registered yet: asked again
    return beans[0]


def _content_summary(url: str, conn: Any) -> dict[str, int]:
    """``/``'s directory and file counts and length, over WebHDFS at ``url``."""
    import requests

    params = {"op": "GETCONTENTSUMMARY", **({"user.name": conn.login} if conn.login else {})}
    response = requests.get(f"{url}/webhdfs/v1/", params=params, timeout=60)
    if response.status_code != 200:
        raise RestoreError(f"{url}: WebHDFS GETCONTENTSUMMARY / answered HTTP {response.status_code}: "
                           f"{response.text[:300].strip()}")
    summary = response.json()["ContentSummary"]
    return {"directories": int(summary["directoryCount"]), "files": int(summary["fileCount"]),
            "bytes": int(summary["length"])}


def live_namespace_identity(source: Any) -> dict[str, Any]:
    """What the running NameService serves: its ids (over RPC, the NameNode tool) and the size of
    its namespace (``/``'s directory and file counts and length, over WebHDFS at the active one)."""
    opts = source.options
    info = NameNodeTool(opts.tool_command, opts.fs_uri, opts.timeout)("info")
    urls, states, conn = _namenodes(source)
    return {"cluster_id": info["clusterId"], "namespace_id": info["namespaceId"], "block_pool_id": info["blockPoolId"],
            "namespace": _content_summary(urls[0], conn)}


def _serving(source: Any, facts: dict[str, Any], expected: tuple, last: int, live: list[str]) -> Any:
    """One look at the started NameService for :func:`validate_live_namenode`: why it does not
    serve the restored namespace yet (text: asked again), a RestoreError when it never will (it
    serves another namespace, or continued its edit log elsewhere), or what it found."""
    import os

    urls, states, conn = _namenodes(source)
    if states[urls[0]] != "active":
        return f"no active NameNode among {', '.join(f'{u} {states[u]}' for u in urls)}"
    bean = _jmx(urls[0], "NameNodeInfo")
    if int(bean.get("NNStartedTimeInMillis") or 0) < facts["rebuilt_at_ms"]:
        return f"{urls[0]} is the NameNode started before the restore (it was not restarted)"
    if bean.get("Safemode"):
        return f"{urls[0]} is still in safe mode: {' '.join(bean['Safemode'].split())}"
    opts = source.options
    info = NameNodeTool(opts.tool_command, opts.fs_uri, opts.timeout)("info")
    ids = (info["clusterId"], info["namespaceId"], info["blockPoolId"])
    if ids != expected:
        raise RestoreError(f"{source.name}: the active NameNode serves cluster/namespace/block pool {ids}, the set "
                           f"holds {expected}: it did not load the restored name directory")
    if int(info["transactionId"]) <= last:  # HA: active, but its edit log not opened for writing yet
        return f"the active NameNode's last txid is {info['transactionId']}, not yet past the set's {last}"
    # the active NameNode opened its edit log right after the set's last txid in every live
    # directory it writes to: it replayed the restored edits, nothing more and nothing less
    writes_to = {os.path.realpath(d) for d in json.loads(bean.get("NameDirStatuses") or "{}").get("active", {})}
    checked = [d for d in live if os.path.realpath(d) in writes_to]
    if not checked:
        raise RestoreError(f"{source.name}: the active NameNode {urls[0]} writes to none of service.data_dirs "
                           f"({', '.join(live)}; it writes to {', '.join(sorted(writes_to)) or 'nothing'}): start the "
                           "NameNode whose name directories were restored as the active one")
    for directory in checked:
        current = Path(directory) / "current"
        found = [m for m in map(re.compile(r"^edits_(inprogress_)?(\d{19})").match, (p.name for p in current.iterdir()))
                 if m]
        if last + 1 in {int(m.group(2)) for m in found}:
            continue
        if any(m.group(1) for m in found):
            raise RestoreError(f"{source.name}: {current} has no edit-log segment starting at txid {last + 1}: the "
                               f"active NameNode did not continue from the set's last txid {last}")
        return f"{current} has no edit log in progress yet"
    return urls, states, conn, info, checked


def validate_live_namenode(chain: list[Manifest], source: Any, facts: dict[str, Any]) -> dict[str, Any]:
    """The started NameService serves the rebuilt name directories: within the service's timeout a
    NameNode is active (started after the rebuild) and has left safe mode (its DataNodes reported
    the blocks the restored namespace names); its namespace, cluster and block pool ids are the
    set's; it loaded the set's image and replayed its edits exactly: in each live directory it
    writes to, its edit log continues right after the set's last txid; an HA pair's other
    NameNode answers as a standby."""
    import time

    timeout = source.service.timeout if source.service is not None else source.options.timeout
    deadline = time.monotonic() + timeout
    last = facts["last_txid"]
    expected = (facts["cluster_id"], facts["namespace_id"], facts["block_pool_id"])
    live = [*facts["name_dirs"], *facts["edits_dirs"]]
    why = "no answer yet"
    while True:
        try:
            checked = _serving(source, facts, expected, last, live)
            if isinstance(checked, tuple):
                urls, states, conn, info, checked = checked
                break
            why = checked
        except RestoreError:
            raise
        except Exception as exc:  # not answering yet, or answering with an error: asked again until the deadline
            why = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise RestoreError(f"{source.name}: the NameService did not serve the restored namespace within "
                               f"{timeout} s (service.timeout): {why}")
        time.sleep(1)
    ids = (info["clusterId"], info["namespaceId"], info["blockPoolId"])
    standbys = [u for u in urls[1:] if states.get(u) == "standby"]
    unreachable = [u for u in urls[1:] if states.get(u) is None]
    if unreachable:
        raise RestoreError(f"{source.name}: NameNode {', '.join(unreachable)} does not answer after the restore")
    return {"active": urls[0], "standby": standbys, "safe_mode": "off", "cluster_id": ids[0], "namespace_id": ids[1],
            "block_pool_id": ids[2], "last_txid": int(info["transactionId"]), "segment_from": last + 1,
            "segment_in": checked,
            "namespace": _content_summary(urls[0], conn)}
