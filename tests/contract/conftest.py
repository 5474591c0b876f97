"""Servers for the contract suites: one per kind, started on first use, stopped after the package.

``hdfs_cluster`` is redefined here at package scope, so the source contract's NameNode and the
target contract's LocalHDFS (through the top-level ``hdfs_connected`` fixture) share one HDFS.
"""

from __future__ import annotations

import pytest

from .servers import Servers


@pytest.fixture(scope="package")
def servers(tmp_path_factory):
    registry = Servers(tmp_path_factory.mktemp("contract-servers"))
    yield registry
    registry.stop_all()


@pytest.fixture(scope="package")
def hdfs_cluster(servers):
    return servers.hdfs()


# Contract cases the product fails today (product bugs, reported in /work/reports/contract.md;
# plugins/ is not changed by the contract suites).  Each is a strict xfail: the run stays green,
# and the case turns into a failure ("XPASS(strict)") the day the product is fixed, so the entry
# is removed then.  `pytest tests/contract --runxfail` shows the failures themselves.
KNOWN_PRODUCT_FAILURES = {
    "test_target_contract.py::test_contract_killed_writer_leaves_no_visible_file[LocalDir-mirror-mirror]":
        "plugins/metabackup/targets/localdir.py put_file: the primary copy is renamed into place before the "
        "mirror copy is written; a writer killed while copying to the mirror leaves the finished name listed "
        "(exists() true) while verify() fails (the mirror lacks it)",
    "test_target_contract.py::test_contract_put_creates_its_task_directory_0700[LocalHDFS]":
        "plugins/metabackup/targets/localhdfs.py _put: a put into a task directory ensure_writable did not "
        "create lets HDFS create the directories with the cluster default (0755), not 0700",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = KNOWN_PRODUCT_FAILURES.get(item.nodeid.split("tests/contract/", 1)[-1])
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"product bug: {reason}", strict=True))
