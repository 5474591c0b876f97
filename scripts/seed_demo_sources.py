"""Create demo configuration directories for the default task's OMS source, only where absent."""

import os
import sys
from pathlib import Path

FILES = {
    "oms-server.properties": "oms.port=28443\noms.db.url=jdbc:postgresql://127.0.0.1:20015/omsdb\n",
    "cluster.xml": "<cluster name=\"demo\"><service name=\"HDFS\"/><service name=\"Hive\"/></cluster>\n",
    "ssl/keystore.jks": bytes(range(256)) * 8,
    "alarm/rules.yaml": "- id: 12001\n  level: major\n",
}

for root in map(Path, sys.argv[1:]):
    if root.exists():
        print(f"demo source {root} exists; leaving it as it is")
        continue
    for rel, body in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    os.chmod(root / "ssl/keystore.jks", 0o600)
    os.symlink("cluster.xml", root / "current-cluster.xml")
    (root / ".metabackup-demo").write_text("created by make demo\n")
    print(f"created demo source {root}")
