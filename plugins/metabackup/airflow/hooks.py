"""WebHDFS for one NameService: the hdfs provider's hook, made aware of HA NameNode pairs.

One Airflow connection (type ``webhdfs``) per NameService.  Its ``host`` lists the NameNodes' HTTP
addresses, comma-separated (:mod:`metabackup.hdfs` reads it); ``login`` is the HDFS user.

The stock hook returns a client for the first NameNode that answers, bound to that NameNode only.
This hook has the core (:func:`metabackup.hdfs.namenode_urls`) order the NameNodes by HA state, the
active one first, and returns one client over all of them: the ``hdfs`` library moves to the next
NameNode when one answers ``StandbyException`` or stops answering, so a failover during a run is
survived too.  Only the building of the client from the Airflow connection lives here.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.hdfs.hooks.webhdfs import AirflowWebHDFSHookException, WebHDFSHook

from metabackup.hdfs import NoNameNode, namenode_urls


class NameServiceWebHDFSHook(WebHDFSHook):
    """A :class:`WebHDFSHook` whose client follows the active NameNode of an HA NameService."""

    hook_name = "WebHDFS NameService (metabackup)"

    def namenode_urls(self) -> tuple[list[str], Any]:
        """Base URLs of the NameNodes, the active first, and the connection."""
        connection = self.get_connection(self.webhdfs_conn_id)
        try:
            urls = namenode_urls(connection.host or "", connection.port, connection.extra_dejson,
                                 label=self.webhdfs_conn_id)
        except NoNameNode as exc:
            raise AirflowWebHDFSHookException(str(exc)) from None
        return urls, connection

    def _find_valid_server(self) -> Any:
        urls, connection = self.namenode_urls()
        first = self._get_client(urls[0].split("://", 1)[1], None, connection.login, connection.password,
                                 connection.schema, connection.extra_dejson)
        if len(urls) == 1:
            return first
        from airflow.providers.apache.hdfs.hooks import webhdfs as provider
        from hdfs import InsecureClient

        suffix = f"/{connection.schema}" if connection.schema else ""
        joined = ";".join(f"{url}{suffix}" for url in urls)
        if provider._kerberos_security_mode:
            return provider.KerberosClient(joined, session=first._session)
        return InsecureClient(joined, user=self.proxy_user or connection.login, session=first._session)
