"""The throwaway servers the contract suites run against, one per kind per test session.

Every import of the project's test harness lives here (and only here): when the harness moves
to another package, change the one import line below.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from harness import hdfs, postgres as pg, s3proxy, slapd, sshd  # the one harness import of the contract suites

__all__ = ["Servers", "hdfs", "pg", "s3proxy", "slapd", "sshd"]


class Servers:
    """Starts each server on first use and stops them all at the end of the session."""

    def __init__(self, base: Path):
        self.base = base
        self._pg: pg.PgInstance | None = None
        self._slapd: slapd.SlapdInstance | None = None
        self._hdfs: hdfs.HdfsInstance | None = None
        self._remote_hdfs: hdfs.HdfsInstance | None = None
        self._s3proxy: s3proxy.S3ProxyInstance | None = None
        self._sshd: sshd.SshdInstance | None = None
        self._env: list[str] = []
        self._dirs: list[str] = []

    def _set_env(self, name: str, value: str) -> None:
        os.environ[name] = value
        self._env.append(name)

    def postgres(self) -> pg.PgInstance:
        """PostgreSQL 15 with the backup role; its connection is ``pg_contract``."""
        if self._pg is None:
            instance = pg.prepare()  # under the system temp directory: the postgres user must reach it
            self._dirs.append(instance.directory)
            pg.start(instance)
            self._pg = instance
            self._set_env("AIRFLOW_CONN_PG_CONTRACT", json.dumps(instance.connection()))
        return self._pg

    def slapd(self) -> slapd.SlapdInstance:
        """A seeded slapd (accesslog on); its connection is ``ldap_contract``."""
        if self._slapd is None:
            instance = slapd.prepare(self.base / "slapd")
            slapd.seed_offline(instance, slapd.seed_ldif(users=10, groups=2))
            slapd.start(instance)
            self._slapd = instance
            self._set_env("AIRFLOW_CONN_LDAP_CONTRACT", instance.connection_uri())
        return self._slapd

    def hdfs(self) -> hdfs.HdfsInstance:
        """One single-NameNode HDFS, also the Airflow connection ``webhdfs_hacluster``."""
        if self._hdfs is None:
            self._hdfs = hdfs.start(self.base / "hdfs")
            self._set_env("AIRFLOW_CONN_WEBHDFS_HACLUSTER", self._hdfs.connection_uri())
        return self._hdfs

    def remote_hdfs(self) -> hdfs.HdfsInstance:
        """A second single-NameNode HDFS, another cluster's NameService ``haclusterX`` as the
        RemoteHDFS target sees it: the Airflow connection ``webhdfs_haclusterX``."""
        if self._remote_hdfs is None:
            self._remote_hdfs = hdfs.start(self.base / "remote-hdfs")
            self._set_env("AIRFLOW_CONN_WEBHDFS_HACLUSTERX", self._remote_hdfs.connection_uri())
        return self._remote_hdfs

    def s3proxy(self) -> s3proxy.S3ProxyInstance:
        """An s3proxy on local files (no bucket yet), also the Airflow connection ``s3_contract``."""
        if self._s3proxy is None:
            self._s3proxy = s3proxy.start(s3proxy.prepare(self.base / "s3proxy"))
            self._set_env("AIRFLOW_CONN_S3_CONTRACT", self._s3proxy.connection_uri())
        return self._s3proxy

    def sshd(self) -> sshd.SshdInstance:
        """An OpenSSH sftp server; its connection is ``sftp_contract`` (the host key pinned in its extra)."""
        if self._sshd is None:
            self._sshd = sshd.start(sshd.prepare(self.base / "sshd"))
            self._set_env("AIRFLOW_CONN_SFTP_CONTRACT", self._sshd.connection_uri())
        return self._sshd

    def empty_slapd(self, directory: Path) -> slapd.SlapdInstance:
        """A fresh, empty, running slapd with the seed's suffix (a restore destination)."""
        return slapd.start(slapd.prepare(directory, accesslog=False))

    @staticmethod
    def namenode_on(name_dir: Path, workdir: Path) -> hdfs.HdfsInstance:
        """A NameNode alone on a (restored) name directory."""
        return hdfs.start_namenode_on(name_dir, workdir)

    @staticmethod
    def stop_pg_data_dir(data: Path) -> None:
        pg.stop_data_dir(data, "immediate")

    @staticmethod
    def pg_scratch() -> Path:
        """A new directory the postgres OS user can enter (restored data directories go below it)."""
        folder = Path(tempfile.mkdtemp(prefix="metabackup-contract-pg-"))
        folder.chmod(0o755)
        return folder

    def stop_all(self) -> None:
        if self._s3proxy is not None:
            self._s3proxy.stop()
        if self._sshd is not None:
            self._sshd.stop()
        for cluster in (self._hdfs, self._remote_hdfs):
            if cluster is not None:
                cluster.stop()
        if self._slapd is not None:
            self._slapd.stop()
        if self._pg is not None:
            self._pg.stop("immediate")
        for name in self._env:
            os.environ.pop(name, None)
        for directory in self._dirs:
            shutil.rmtree(directory, ignore_errors=True)
