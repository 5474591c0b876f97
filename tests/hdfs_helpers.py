"""Shared by the HDFS tests: a WebHDFS client for a harness cluster, namespace listings."""

from __future__ import annotations

import getpass
from typing import Any

import requests


class WebHdfs:
    """Just enough WebHDFS for tests (the product goes through the provider's hook)."""

    def __init__(self, base_url: str, user: str | None = None):
        self.base = base_url.rstrip("/") + "/webhdfs/v1"
        self.user = user or getpass.getuser()

    def _call(self, method: str, path: str, op: str, **params) -> requests.Response:
        response = requests.request(method, f"{self.base}{path}", params={"op": op, "user.name": self.user, **params},
                                    allow_redirects=False, timeout=60)
        return response

    def mkdirs(self, path: str, permission: str = "755") -> None:
        assert self._call("PUT", path, "MKDIRS", permission=permission).json()["boolean"]

    def write(self, path: str, data: bytes, permission: str = "644") -> None:
        redirect = self._call("PUT", path, "CREATE", overwrite="true", permission=permission)
        assert redirect.status_code == 307, redirect.text
        done = requests.put(redirect.headers["Location"], data=data, timeout=60)
        assert done.status_code == 201, done.text

    def read(self, path: str) -> bytes:
        response = requests.get(f"{self.base}{path}", params={"op": "OPEN", "user.name": self.user}, timeout=60)
        response.raise_for_status()
        return response.content

    def delete(self, path: str, recursive: bool = True) -> None:
        self._call("DELETE", path, "DELETE", recursive=str(recursive).lower()).raise_for_status()

    def rename(self, source: str, destination: str) -> None:
        assert self._call("PUT", source, "RENAME", destination=destination).json()["boolean"]

    def status(self, path: str) -> dict[str, Any] | None:
        response = self._call("GET", path, "GETFILESTATUS")
        return response.json()["FileStatus"] if response.status_code == 200 else None

    def list(self, path: str) -> list[dict[str, Any]]:
        response = self._call("GET", path, "LISTSTATUS")
        response.raise_for_status()
        return response.json()["FileStatuses"]["FileStatus"]

    def names(self, path: str) -> list[str]:
        return sorted(s["pathSuffix"] for s in self.list(path))

    def tree(self, path: str = "/", skip: tuple[str, ...] = ()) -> dict[str, tuple]:
        """Recursive listing: path -> (type, length, permission, owner)."""
        found = {}
        for status in self.list(path):
            child = f"{path.rstrip('/')}/{status['pathSuffix']}"
            if child in skip:
                continue
            found[child] = (status["type"], status["length"], status["permission"], status["owner"])
            if status["type"] == "DIRECTORY":
                found.update(self.tree(child, skip))
        return found


def read_soon(fs: WebHdfs, path: str, timeout: float = 60) -> bytes:
    """``path``'s content, retried for a while: just after a NameNode restart the DataNode's
    WebHDFS may answer 403 once or twice (its client still holds the old NameNode process's
    connection; harness.hdfs.restart_namenode waits out the same for writes)."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(f"{fs.base}{path}", params={"op": "OPEN", "user.name": fs.user}, timeout=60)
        if response.status_code == 200:
            return response.content
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)
