"""A real HDFS on loopback (Hadoop 3.4 minicluster from Maven Central) for tests, benchmarks, demo.

``make hadoop`` (or :func:`build_jars`) fetches the jars into ``build/hadoop/lib`` and builds
``build/hadoop/metabackup-hdfs.jar`` from ``hadoop/``: the launcher ``HdfsCluster`` and
``NameNodeTool`` (the NameNode source's RPC helper).  Modes:

* ``single`` - one NameNode, one DataNode, WebHDFS on;
* ``ha`` - a NameService (``hacluster`` unless ``nameservice`` names another, e.g. a second pair
  ``haclusterX`` beside the first on other ports): NameNodes ``nn1`` (active) and ``nn2``
  (standby), one DataNode;
* ``namenode`` - only a NameNode on an existing (restored) name directory.

Each instance directory gets ``instance.json``, Hadoop client config in ``conf/``, ``bin/hdfs``
(``dfs``, ``dfsadmin``, ``haadmin``, ``oiv``), ``bin/namenode-tool`` (NameNodeTool with this
cluster's config) and ``bin/hadoop`` (``hadoop CLASSNAME ...``), and ``airflow-connection.json`` (the WebHDFS connection, 0600).  The running
launcher takes commands on a loopback control port (:func:`command`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    CONNECTION_FILE, command_line_parser, free_port, log_tail, process_alive, reusable, write_private_json,
)

REPO = Path(__file__).resolve().parents[1]  # harness/ is at the repository root
BUILD = REPO / "build" / "hadoop"
JAR = BUILD / "metabackup-hdfs.jar"
LIB = BUILD / "lib"
# What Hadoop 3.4's own scripts open up on Java 17 (hadoop-env / HADOOP_OPTS), plus -Xmx for tests.
JAVA_OPTIONS = [
    "-Xmx512m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true",
    *(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in (
        "java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio", "java.util", "java.util.concurrent",
        "java.util.concurrent.atomic", "java.util.regex", "java.util.zip", "sun.nio.ch", "sun.nio.cs",
        "sun.net.dns", "sun.net.util", "sun.security.x509", "sun.security.util")),
    "--add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
]
DEFAULT_NAMESERVICE = "hacluster"
NAMESERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}")  # as metabackup.fields.NameService
TOOLS = {
    "dfs": "org.apache.hadoop.fs.FsShell",
    "dfsadmin": "org.apache.hadoop.hdfs.tools.DFSAdmin",
    "haadmin": "org.apache.hadoop.hdfs.tools.DFSHAAdmin",
    "oiv": "org.apache.hadoop.hdfs.tools.offlineImageViewer.OfflineImageViewerPB",
}


@dataclass
class NameNodeInfo:
    id: str
    rpc_port: int
    http_port: int
    name_dirs: list[str] = field(default_factory=list)


@dataclass
class HdfsInstance:
    directory: str
    mode: str
    control_port: int
    namenodes: list[NameNodeInfo]
    nameservice: str | None = None
    active: str = "nn1"
    pid: int = 0

    def __post_init__(self):
        self.namenodes = [n if isinstance(n, NameNodeInfo) else NameNodeInfo(**n) for n in self.namenodes]

    def namenode(self, nn_id: str | None = None) -> NameNodeInfo:
        wanted = nn_id or self.active
        return next(n for n in self.namenodes if n.id == wanted)

    def webhdfs_url(self, nn_id: str | None = None) -> str:
        return f"http://127.0.0.1:{self.namenode(nn_id).http_port}"

    def hosts(self) -> str:
        """NameNode HTTP addresses for a WebHDFS connection's host field, nn1 first."""
        return ",".join(f"127.0.0.1:{n.http_port}" for n in self.namenodes)

    @property
    def fs_uri(self) -> str:
        return f"hdfs://{self.nameservice}" if self.nameservice else f"hdfs://127.0.0.1:{self.namenodes[0].rpc_port}"

    def airflow_connection(self, login: str | None = None) -> dict[str, Any]:
        """A ``webhdfs`` connection for :class:`~metabackup.airflow.hooks.NameServiceWebHDFSHook`."""
        return {"conn_type": "webhdfs", "host": self.hosts(), "login": login or _os_user()}

    def connection_uri(self) -> str:
        return json.dumps(self.airflow_connection())

    @property
    def conf_dir(self) -> Path:
        return Path(self.directory) / "conf"

    def hdfs_command(self) -> str:
        return str(Path(self.directory) / "bin" / "hdfs")

    def namenode_tool_command(self) -> str:
        """The ``tool_command`` of a ``namenode`` source for this cluster."""
        return str(Path(self.directory) / "bin" / "namenode-tool")

    def stop(self) -> None:
        stop(self.directory)


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def classpath(*extra: str | Path) -> str:
    return os.pathsep.join([*(str(e) for e in extra), str(JAR), str(LIB / "*")])


def build_jars(force: bool = False) -> None:
    """Fetch the Hadoop jars and build ours (Maven), unless already there."""
    if not force and JAR.exists() and LIB.is_dir() and any(LIB.glob("hadoop-client-minicluster-*.jar")):
        return
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed; `make setup` installs a JDK and Maven from Debian")
    done = subprocess.run(["mvn", "-q", "-B", "-f", str(REPO / "hadoop" / "pom.xml"), "package"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the HDFS harness failed:\n{(done.stdout + done.stderr)[-3000:]}")


def _write_scripts(directory: Path) -> None:
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    java = " ".join(["java", *JAVA_OPTIONS[3:]])  # no -Xmx512m for clients
    cp = classpath(directory / "conf")
    cases = "\n".join(f"  {name}) shift; exec {java} -cp '{cp}' {cls} \"$@\" ;;" for name, cls in TOOLS.items())
    (bin_dir / "hdfs").write_text(f"""#!/bin/sh
# generated by harness.hdfs: a minimal `hdfs` command for this test cluster
case "$1" in
{cases}
  *) echo "usage: hdfs {'|'.join(TOOLS)} ..." >&2; exit 2 ;;
esac
""")
    (bin_dir / "namenode-tool").write_text(
        f"#!/bin/sh\nexec {java} -cp '{cp}' metabackup.hdfs.NameNodeTool \"$@\"\n")
    # `hadoop CLASSNAME args`, as Hadoop's own script runs a class: the namenode kind's default
    # tool_command works with this directory's bin/ on PATH
    (bin_dir / "hadoop").write_text(f"#!/bin/sh\nexec {java} -cp '{cp}' \"$@\"\n")
    for script in ("hdfs", "namenode-tool", "hadoop"):
        (bin_dir / script).chmod(0o755)


def _launch(directory: Path, mode: str, ports: list[int], extra: list[str], timeout: float,
            nameservice: str | None = None) -> HdfsInstance:
    build_jars()
    directory.mkdir(parents=True, exist_ok=True)
    ready = directory / "ready.json"
    ready.unlink(missing_ok=True)
    control = free_port()
    log = open(directory / "launcher.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen(
        ["java", *JAVA_OPTIONS, "-cp", classpath(), "metabackup.hdfs.HdfsCluster", mode, str(directory), str(ready),
         str(control), *map(str, ports), *extra],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HDFS launcher exited with {proc.returncode}:\n{log_tail(directory / 'launcher.log')}")
        if ready.exists():
            info = json.loads(ready.read_text())
            if info["nameservice"] != nameservice:  # a jar built before the NAMESERVICE argument
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"the HDFS launcher started NameService {info['nameservice']!r}, not {nameservice!r}: "
                                   f"{JAR} predates the NAMESERVICE argument; rebuild it with `make hadoop`")
            instance = HdfsInstance(directory=str(directory), mode=mode, control_port=control,
                                    namenodes=info["namenodes"], nameservice=info["nameservice"],
                                    active=info["active"], pid=proc.pid)
            if _webhdfs_answers(instance):
                _write_scripts(directory)
                _save(instance)
                write_private_json(directory / CONNECTION_FILE, instance.airflow_connection())
                return instance
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise RuntimeError(f"HDFS ({mode}) was not serving within {timeout}s:\n{log_tail(directory / 'launcher.log')}")


def _webhdfs_answers(instance: HdfsInstance) -> bool:
    url = f"{instance.webhdfs_url()}/webhdfs/v1/?op=GETFILESTATUS&user.name={_os_user()}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _save(instance: HdfsInstance) -> None:
    (Path(instance.directory) / "instance.json").write_text(json.dumps(asdict(instance)))


def load(directory: str | Path) -> HdfsInstance:
    return HdfsInstance(**json.loads((Path(directory) / "instance.json").read_text()))


def start(directory: str | Path, mode: str = "single", reuse: bool = False, timeout: float = 120,
          nameservice: str = DEFAULT_NAMESERVICE) -> HdfsInstance:
    """Start a cluster in ``directory`` (fresh, or with ``reuse`` its existing data, single mode).

    ``nameservice`` names the HA pair's NameService (mode ``ha``; a single NameNode has none): two
    pairs with different names run side by side, each on free ports of its own.
    """
    directory = Path(directory).resolve()
    if mode not in ("single", "ha"):
        raise ValueError(f"mode must be single or ha, not {mode!r}")
    if not NAMESERVICE_NAME.fullmatch(nameservice):
        raise ValueError(f"{nameservice!r} is not a valid NameService name")
    if mode != "ha" and nameservice != DEFAULT_NAMESERVICE:
        raise ValueError(f"a NameService name ({nameservice!r}) needs mode ha; a single NameNode has none")
    if (directory / "instance.json").exists():
        stop(directory)
    if not reuse:
        shutil.rmtree(directory, ignore_errors=True)
    ports = [free_port() for _ in range(4 if mode == "ha" else 2)]
    if mode == "ha":  # HdfsCluster's optional NAMESERVICE argument after the ports
        return _launch(directory, mode, ports, [nameservice], timeout, nameservice)
    return _launch(directory, mode, ports, [], timeout)


def start_namenode_on(name_dir: str | Path, directory: str | Path, timeout: float = 120) -> HdfsInstance:
    """A NameNode alone, without formatting, on an existing name directory (e.g. a restored one)."""
    directory = Path(directory).resolve()
    return _launch(directory, "namenode", [free_port(), free_port()], [str(Path(name_dir).resolve())], timeout)


def command(instance: HdfsInstance, line: str, timeout: float = 120) -> str:
    with socket.create_connection(("127.0.0.1", instance.control_port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        reply = sock.makefile().readline().strip()
    if not reply.startswith("ok"):
        raise RuntimeError(f"HDFS launcher: {line!r} -> {reply or 'no reply'}")
    return reply[3:]


def failover(instance: HdfsInstance, to_id: str) -> None:
    command(instance, f"failover {instance.active} {to_id}")
    instance.active = to_id
    _save(instance)


def stop_namenode(instance: HdfsInstance, nn_id: str) -> None:
    command(instance, f"stop-nn {nn_id}")


def restart_namenode(instance: HdfsInstance, nn_id: str, timeout: float = 60) -> None:
    """Restart a NameNode; return once a WebHDFS write goes through again (the DataNode has
    re-registered and dropped its connection to the old NameNode process)."""
    command(instance, f"restart-nn {nn_id}")
    probe = f"{instance.webhdfs_url()}/webhdfs/v1/.harness-probe?user.name={_os_user()}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            create = urllib.request.Request(f"{probe}&op=CREATE&overwrite=true", method="PUT")
            opener = urllib.request.build_opener(_NoRedirect)
            try:
                opener.open(create, timeout=10)
            except urllib.error.HTTPError as redirect:
                if redirect.code != 307:
                    raise
                urllib.request.urlopen(urllib.request.Request(redirect.headers["Location"], data=b"", method="PUT"),
                                       timeout=10)
            urllib.request.urlopen(urllib.request.Request(f"{probe}&op=DELETE", method="DELETE"), timeout=10)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def roll_edits(instance: HdfsInstance) -> int:
    return int(command(instance, "roll-edits").split()[-1])


def stop(directory: str | Path, timeout: float = 30) -> None:
    path = Path(directory) / "instance.json"
    if not path.exists():
        return
    instance = load(directory)
    try:
        command(instance, "shutdown", timeout=timeout)
    except OSError:
        pass
    except RuntimeError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(instance.pid):
        time.sleep(0.05)
    if process_alive(instance.pid):
        try:
            os.killpg(instance.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process_alive(instance.pid)
    path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser, start_options = command_line_parser("python -m harness.hdfs")
    start_options.add_argument("--ha", action="store_true", help="two NameNodes under one NameService (--nameservice)")
    start_options.add_argument("--nameservice", default=DEFAULT_NAMESERVICE, metavar="NAME",
                               help=f"the HA pair's NameService (with --ha; default {DEFAULT_NAMESERVICE})")
    args = parser.parse_args(argv)
    if args.command == "start" and args.nameservice != DEFAULT_NAMESERVICE and not args.ha:
        parser.error("--nameservice needs --ha")
    if args.command == "stop":
        stop(args.directory)
        return 0
    instance = start(args.directory, "ha" if args.ha else "single", reuse=reusable(args.directory, args.reuse)
                     or (args.reuse and (Path(args.directory) / "data").exists()), nameservice=args.nameservice)
    print(json.dumps({"webhdfs": instance.webhdfs_url(), "hosts": instance.hosts(), "fs_uri": instance.fs_uri,
                      "pid": instance.pid, "directory": instance.directory,
                      "namenode_tool": instance.namenode_tool_command(), "hdfs": instance.hdfs_command(),
                      "airflow_connection_file": str(Path(instance.directory) / CONNECTION_FILE)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
