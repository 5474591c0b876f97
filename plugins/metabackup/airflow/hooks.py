"""WebHDFS for one NameService: the hdfs provider's hook, made aware of HA NameNode pairs.

One Airflow connection (type ``webhdfs``) per NameService.  Its ``host`` lists the NameNodes'
HTTP addresses, comma-separated, each ``host`` or ``host:port`` (a bare host uses the connection's
port), e.g. ``nn1.example.com:9870,nn2.example.com:9870``; ``login`` is the HDFS user.

The stock hook returns a client for the first NameNode that answers, bound to that NameNode only.
This hook asks each NameNode for its HA state (``/isActive``, else JMX ``NameNodeStatus``), puts the active one first,
and returns one client over all of them: the ``hdfs`` library moves to the next NameNode when one
answers ``StandbyException`` or stops answering, so a failover during a run is survived too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from airflow.providers.apache.hdfs.hooks.webhdfs import AirflowWebHDFSHookException, WebHDFSHook

log = logging.getLogger(__name__)

JMX_STATUS = "/jmx?qry=Hadoop:service=NameNode,name=NameNodeStatus"
IS_ACTIVE = "/isActive"
PROBE_TIMEOUT = 10


@dataclass(frozen=True)
class NameNodeAddress:
    host: str
    port: int | None

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


def parse_namenodes(hosts: str, default_port: int | None) -> list[NameNodeAddress]:
    """``"a:9870,b"`` → addresses; a bare host takes ``default_port``."""
    found = []
    for item in (h.strip() for h in (hosts or "").split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if sep and port.isdigit():
            found.append(NameNodeAddress(host, int(port)))
        else:
            found.append(NameNodeAddress(item, default_port))
    return found


def namenode_state(base_url: str, session: requests.Session | None = None) -> str | None:
    """``active``/``standby``/... as the NameNode reports it, or None when it cannot be asked.

    Asks the NameNode's ``/isActive`` servlet (200 active, 405 standby; Hadoop 3.3+), else its
    JMX ``NameNodeStatus`` bean.  ``/isActive`` comes first because JMX beans are per JVM: two
    NameNodes in one process (a test cluster) would both report the first one's state.
    """
    http = session or requests
    try:
        probe = http.get(base_url.rstrip("/") + IS_ACTIVE, timeout=PROBE_TIMEOUT)
        if probe.status_code in (200, 405):
            return "active" if probe.status_code == 200 else "standby"
        response = http.get(base_url.rstrip("/") + JMX_STATUS, timeout=PROBE_TIMEOUT)
        if response.status_code != 200:
            return None
        beans = response.json().get("beans") or []
        return beans[0].get("State") if beans else None
    except (requests.RequestException, ValueError):
        return None


class NameServiceWebHDFSHook(WebHDFSHook):
    """A :class:`WebHDFSHook` whose client follows the active NameNode of an HA NameService."""

    hook_name = "WebHDFS NameService (metabackup)"

    def namenode_urls(self) -> tuple[list[str], Any]:
        """Base URLs of the NameNodes, the active first, and the connection."""
        connection = self.get_connection(self.webhdfs_conn_id)
        addresses = parse_namenodes(connection.host or "", connection.port)
        if not addresses:
            raise AirflowWebHDFSHookException(f"connection {self.webhdfs_conn_id!r} names no NameNode in its host field")
        extra = connection.extra_dejson
        scheme = "https" if str(extra.get("use_ssl", False)) in ("True", "true") or extra.get("use_ssl") is True else "http"
        urls = [f"{scheme}://{a.netloc}" for a in addresses]
        states = {url: namenode_state(url) for url in urls}
        log.info("NameNodes of %s: %s", self.webhdfs_conn_id, ", ".join(f"{u} {states[u] or 'unreachable'}" for u in urls))
        order = {"active": 0, "observer": 2, "standby": 2, None: 3}
        urls.sort(key=lambda u: order.get(states[u], 1))
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
