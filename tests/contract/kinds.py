"""One adapter per source kind for the source contract (tests/contract/test_source_contract.py).

An adapter knows how to bring up its kind's server (through :class:`servers.Servers`, one per
kind per session), the ``sources.<name>`` block of a task spec, how to make a visible change,
how to capture the source's state, and how to read the same state back from a restore.  A new
kind is tested by writing its adapter and adding one line to ``KINDS``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import psycopg

from conftest import PG_CAPTURE
from hdfs_helpers import WebHdfs
from .servers import Servers

# Per-table content checksums of the public schema: what a PostgreSQL restore must reproduce.


def pg_state(port: int, password: str) -> dict[str, str]:
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres password={password} dbname=postgres",
                         autocommit=True) as conn:
        return dict(conn.execute(PG_CAPTURE).fetchall())


def pg_run(instance, *statements: str) -> None:
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def tree(root: Path) -> dict[str, Any]:
    from metabackup.sources.files import iter_tree

    return dict(iter_tree(root))


class Kind:
    """The adapter interface (see the module docstring)."""

    id: str  # the pytest id
    source: str  # the source's name in the spec

    def start(self, servers: Servers, workdir: Path) -> None:
        """Bring up (or reuse) the server and seed the source's first state."""

    def stop(self) -> None:
        """Undo ``start`` (the session stops the servers themselves)."""

    def block(self) -> dict[str, Any]:
        """The spec's source block without its target."""
        raise NotImplementedError

    def change(self, n: int) -> None:
        """Make a visible change (n = 1, 2, ...): ``state()`` differs afterwards."""
        raise NotImplementedError

    def state(self) -> Any:
        raise NotImplementedError

    def destination(self, folder: Path) -> Any:
        """A fresh restore destination for ``restore_source`` (nothing created yet where a
        directory is the destination)."""
        raise NotImplementedError

    def restored_state(self, result: dict[str, Any], dest: Any) -> Any:
        """``state()`` as the restore ``result`` into ``dest`` shows it."""
        raise NotImplementedError

    def untouched(self, dest: Any) -> bool:
        """True while a refused restore created (or wrote) nothing at ``dest``."""
        raise NotImplementedError

    def release(self, dest: Any) -> None:
        """Stop what a restore into ``dest`` left running and remove it."""


# ---------------------------------------------------------------------------------------------
# files: configuration directories
# ---------------------------------------------------------------------------------------------
class FilesTree:
    """A small configuration tree: nested directories, a symbolic link, modes; changes that
    modify, add, delete, rename, re-mode and turn a file into a directory."""

    def __init__(self, root: Path):
        self.root = root

    def seed(self) -> None:
        (self.root / "conf.d").mkdir(parents=True)
        (self.root / "server.xml").write_text("<server port='1'/>\n")
        (self.root / "conf.d" / "a.properties").write_text("a=1\n")
        (self.root / "keystore.bin").write_bytes(os.urandom(20_000))
        os.chmod(self.root / "keystore.bin", 0o600)
        os.symlink("server.xml", self.root / "current.xml")

    def change(self, n: int) -> None:
        root = self.root
        if n == 1:
            (root / "server.xml").write_text("<server port='2'/>\n")
            os.rename(root / "conf.d" / "a.properties", root / "conf.d" / "renamed.properties")
            (root / "new" / "deeper").mkdir(parents=True)
            (root / "new" / "deeper" / "file").write_text("deep\n")
            os.chmod(root / "server.xml", 0o640)
        else:
            (root / "keystore.bin").unlink()
            (root / "keystore.bin").mkdir()
            (root / "keystore.bin" / "inside").write_text("now a directory\n")
            shutil.rmtree(root / "new")
            os.unlink(root / "current.xml")
            os.symlink("conf.d", root / "current.xml")

    def state(self) -> dict[str, Any]:
        return tree(self.root)

    def restored(self, folder: Path) -> dict[str, Any]:
        return tree(Path(folder) / str(self.root).lstrip("/"))


class FilesKind(Kind):
    id, source = "files", "OMS"

    def start(self, servers, workdir):
        self.files = FilesTree(workdir / "src" / "etc" / "oms")
        self.files.seed()

    def block(self):
        return {"kind": "files", "paths": [str(self.files.root)]}

    def change(self, n):
        self.files.change(n)

    def state(self):
        return self.files.state()

    def destination(self, folder):
        return folder / "restored"

    def restored_state(self, result, dest):
        return self.files.restored(dest)

    def untouched(self, dest):
        return not os.path.lexists(dest)

    def release(self, dest):
        shutil.rmtree(dest, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# postgres (DBService): one table per kind in the shared server
# ---------------------------------------------------------------------------------------------
class PostgresKind(Kind):
    id, source = "postgres", "DBService"
    table = "contract_dbservice"

    def start(self, servers, workdir):
        self.pg = servers.postgres()
        pg_run(self.pg, *(f"DROP TABLE IF EXISTS {self.table}_{n}" for n in (1, 2)),  # a chain before this one's
               f"DROP TABLE IF EXISTS {self.table}",
               f"CREATE TABLE {self.table} (id int PRIMARY KEY, v text)",
               f"INSERT INTO {self.table} SELECT g, md5(g::text) FROM generate_series(1, 200) g")

    def block(self):
        return {"kind": "postgres", "conn_id": "pg_contract"}

    def change(self, n):
        pg_run(self.pg, f"INSERT INTO {self.table} VALUES ({1000 + n}, 'change {n}')",
               f"UPDATE {self.table} SET v = 'updated {n}' WHERE id % 7 = {n}",
               f"DELETE FROM {self.table} WHERE id = {n * 10}",
               f"CREATE TABLE {self.table}_{n} AS SELECT g AS id FROM generate_series(1, {n * 5}) g")

    def state(self):
        return pg_state(self.pg.port, self.pg.superuser_password)

    def destination(self, folder):
        from metabackup.sources.postgres import PostgresDestination

        scratch = Servers.pg_scratch()
        return PostgresDestination(data_dir=str(scratch / "data"), keep_running=True)

    def restored_state(self, result, dest):
        try:
            return pg_state(result["port"], self.pg.superuser_password)
        finally:
            Servers.stop_pg_data_dir(Path(dest.data_dir))

    def untouched(self, dest):
        return not os.path.lexists(dest.data_dir)

    def release(self, dest):
        Servers.stop_pg_data_dir(Path(dest.data_dir))
        shutil.rmtree(Path(dest.data_dir).parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# oms: the manager's database and configuration directories in one set
# ---------------------------------------------------------------------------------------------
class OmsKind(PostgresKind):
    id, source = "oms", "OMS"
    table = "contract_oms"

    def start(self, servers, workdir):
        super().start(servers, workdir)
        self.files = FilesTree(workdir / "src" / "om-server" / "conf")
        self.files.seed()

    def block(self):
        return {"kind": "oms", "database": {"conn_id": "pg_contract"}, "paths": [str(self.files.root)]}

    def change(self, n):
        super().change(n)
        self.files.change(n)

    def state(self):
        return {"database": super().state(), "files": self.files.state()}

    def destination(self, folder):
        from metabackup.sources.oms import OmsDestination
        from metabackup.sources.postgres import PostgresDestination

        scratch = Servers.pg_scratch() / "oms"
        return OmsDestination(PostgresDestination(data_dir=str(scratch / "database"), keep_running=True),
                              str(scratch / "files"))

    def restored_state(self, result, dest):
        database = super().restored_state(result["postgres"], dest.database)
        return {"database": database, "files": self.files.restored(dest.files_dir)}

    def untouched(self, dest):
        return not os.path.lexists(Path(dest.files_dir).parent)

    def release(self, dest):
        Servers.stop_pg_data_dir(Path(dest.database.data_dir))
        shutil.rmtree(Path(dest.files_dir).parent.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# ldap (LdapServer): the seeded directory; restored online into a fresh empty slapd
# ---------------------------------------------------------------------------------------------
class LdapKind(Kind):
    id, source = "ldap", "LdapServer"
    rounds = 0  # chains taken so far on the shared slapd: each one's changes touch other entries

    def start(self, servers, workdir):
        self.round = LdapKind.rounds
        LdapKind.rounds += 1
        self.servers = servers
        self.server = servers.slapd()
        self.base = self.server.suffix
        self._started: dict[str, Any] = {}

    def block(self):
        return {"kind": "ldap", "conn_id": "ldap_contract", "base_dns": [self.base]}

    def _client(self):
        import ldap

        client = ldap.initialize(self.server.url)
        client.simple_bind_s(self.server.admin_dn, self.server.password)
        return client

    def change(self, n):
        import ldap
        import ldap.modlist

        client = self._client()
        try:
            r = self.round
            client.modify_s(f"uid=user0000{n},ou=People,{self.base}", [(ldap.MOD_REPLACE, "mail", [f"changed{n}.{r}@x".encode()])])
            client.add_s(f"uid=contract{n}r{r},ou=People,{self.base}", ldap.modlist.addModlist({
                "objectClass": [b"inetOrgPerson"], "uid": [f"contract{n}r{r}".encode()], "cn": [b"Contract"],
                "sn": [f"Change {n}".encode()]}))
            client.delete_s(f"uid=user0000{n + 4 + 2 * r},ou=People,{self.base}")  # the seed has user00000..09
        finally:
            client.unbind_s()

    @staticmethod
    def _conn(instance):
        from metabackup.connections import ConnectionInfo

        return ConnectionInfo(conn_id=f"contract-restore-{instance.port}", conn_type="ldap", host="127.0.0.1",
                              port=instance.port, login=instance.admin_dn, password=instance.password)

    def state(self):
        from metabackup.connections import get_connection
        from metabackup.sources.ldap.restore import dump_state

        return dump_state(get_connection("ldap_contract"), [self.base])

    def destination(self, folder):
        from metabackup.sources.ldap.restore import LdapDestination

        instance = self.servers.empty_slapd(folder / "slapd")
        dest = LdapDestination(conn=self._conn(instance))
        self._started[dest.conn.conn_id] = instance
        return dest

    def restored_state(self, result, dest):
        from metabackup.sources.ldap.restore import dump_state

        return dump_state(dest.conn, [self.base])

    def untouched(self, dest):
        return self.restored_state({}, dest) == {}

    def release(self, dest):
        instance = self._started.pop(dest.conn.conn_id, None)
        if instance is not None:
            instance.stop()


# ---------------------------------------------------------------------------------------------
# namenode (NameNode): the namespace of the shared HDFS; a restore is read by a NameNode started on it
# ---------------------------------------------------------------------------------------------
class NameNodeKind(Kind):
    id, source = "namenode", "NameNode"
    top = "/contract-nn"

    def start(self, servers, workdir):
        self.cluster = servers.hdfs()
        self.fs = WebHdfs(self.cluster.webhdfs_url())
        self.fs.delete(self.top)  # what a chain before this one left
        self.fs.mkdirs(f"{self.top}/apps/conf")
        self.fs.write(f"{self.top}/apps/conf/site.xml", b"<configuration/>\n")
        self.fs.write(f"{self.top}/apps/data.bin", b"x" * 3000, permission="600")

    def block(self):
        return {"kind": "namenode", "fs_uri": self.cluster.fs_uri, "tool_command": self.cluster.namenode_tool_command()}

    def change(self, n):
        top = self.top
        if n == 1:
            self.fs.rename(f"{top}/apps/data.bin", f"{top}/apps/conf/data-moved.bin")
            self.fs.mkdirs(f"{top}/new/deeper", permission="700")
            self.fs.write(f"{top}/new/deeper/f.txt", b"hello")
            self.fs.delete(f"{top}/apps/conf/site.xml")
        else:
            self.fs.delete(f"{top}/new")
            self.fs.rename(f"{top}/apps", f"{top}/apps2")

    def state(self):
        return self.fs.tree("/")

    def destination(self, folder):
        return folder / "name-dir"

    def restored_state(self, result, dest):
        namenode = Servers.namenode_on(dest, Path(dest).parent / "namenode-check")
        try:
            return WebHdfs(namenode.webhdfs_url()).tree("/")
        finally:
            namenode.stop()

    def untouched(self, dest):
        return not os.path.lexists(dest)

    def release(self, dest):
        shutil.rmtree(dest, ignore_errors=True)


KINDS: list[type[Kind]] = [
    FilesKind,
    OmsKind,
    PostgresKind,
    LdapKind,
    NameNodeKind,
]
