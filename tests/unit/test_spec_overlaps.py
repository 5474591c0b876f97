"""Cross-field rules of one spec: backups outside the sources, full_every_n within retention, a
splittable NameNode tool command, each directory listed once."""

from __future__ import annotations

import copy

import pytest
import yaml

from metabackup.spec import SpecError, load_spec

BASE = {
    "name": "nightly", "created": "2026-11-24T10:00:00+08:00", "cluster_version": "3.5.0", "type": "manual",
    "data_path": "/srv/BigData",
    "sources": {
        "OMS": {"kind": "files", "paths": ["/srv/BigData/om-server/conf", "/etc/om"],
                "target": {"type": "LocalDir", "max_backups": 7}},
    },
}


def write(tmp_path, spec: dict):
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def spec_with(**changes) -> dict:
    spec = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return spec


def problems(tmp_path, spec: dict) -> list[tuple[str, str]]:
    path = write(tmp_path, spec)
    with pytest.raises(SpecError) as failure:
        load_spec(path)
    return [(fld, why) for _, fld, why in failure.value.problems]


def test_base_is_valid(tmp_path):
    load_spec(write(tmp_path, BASE))


# ---- 3. backups never inside a source, a source never inside a backup directory ----------------
OMS_T = "sources__OMS__target__"


@pytest.mark.parametrize(("changes", "field", "reason"), [
    ({OMS_T + "path": "/etc/om/backups"}, "sources.OMS.target.path",
     "'/etc/om/backups' lies inside the source directory '/etc/om' (sources.OMS.paths[1]): every run would back up"),
    ({OMS_T + "path": "/etc/om/"}, "sources.OMS.target.path",
     "'/etc/om' is the source directory '/etc/om' (sources.OMS.paths[1])"),
    ({OMS_T + "path": "om-server/conf/bk"}, "sources.OMS.target.path",
     "'/srv/BigData/om-server/conf/bk' lies inside the source directory '/srv/BigData/om-server/conf' "
     "(sources.OMS.paths[0])"),
    ({OMS_T + "mirror": "/etc/om/standby"}, "sources.OMS.target.mirror",
     "'/etc/om/standby' lies inside the source directory '/etc/om' (sources.OMS.paths[1])"),
    ({"staging_dir": "/etc/om/.staging"}, "staging_dir",
     "'/etc/om/.staging' lies inside the source directory '/etc/om' (sources.OMS.paths[1])"),
    ({"staging_dir": "om-server/conf/.st"}, "staging_dir",
     "'/srv/BigData/om-server/conf/.st' lies inside the source directory '/srv/BigData/om-server/conf'"),
    # the data_path-derived defaults: LocalBackup and LocalBackup/.staging under a backed-up data_path
    ({"sources__OMS__paths": ["/srv/BigData"]}, "sources.OMS.target.path",
     "'/srv/BigData/LocalBackup' (the default, <data_path>/LocalBackup) lies inside the source directory "
     "'/srv/BigData' (sources.OMS.paths[0])"),
    ({"sources__OMS__paths": ["/srv/BigData"]}, "staging_dir",
     "'/srv/BigData/LocalBackup/.staging' (the default, <data_path>/LocalBackup/.staging) lies inside the source "
     "directory '/srv/BigData'"),
    ({"sources__OMS__paths": ["/"]}, "sources.OMS.target.path", "lies inside the source directory '/'"),
    # and the other way round: a source inside a backup directory
    ({"sources__OMS__paths": ["/srv/BigData/LocalBackup/conf"]}, "sources.OMS.paths[0]",
     "'/srv/BigData/LocalBackup/conf' lies inside sources.OMS.target.path '/srv/BigData/LocalBackup' (the default, "
     "<data_path>/LocalBackup): the source would hold the backups"),
    ({OMS_T + "mirror": "/standby", "sources__OMS__paths": ["/standby/x"]}, "sources.OMS.paths[0]",
     "'/standby/x' lies inside sources.OMS.target.mirror '/standby'"),
    ({"staging_dir": "/var/stage", "sources__OMS__paths": ["/var/stage/in"]}, "sources.OMS.paths[0]",
     "'/var/stage/in' lies inside staging_dir '/var/stage'"),
])
def test_backup_and_source_directories_must_not_overlap(tmp_path, changes, field, reason):
    rows = problems(tmp_path, spec_with(**changes))
    assert any(fld == field and reason in why for fld, why in rows), rows


def test_another_sources_target_inside_a_source_is_refused(tmp_path):
    spec = spec_with(sources__DBService={"kind": "files", "paths": ["/var/db"],
                                         "target": {"type": "LocalDir", "path": "/etc/om/db-backups"}})
    rows = problems(tmp_path, spec)
    assert ("sources.DBService.target.path", "'/etc/om/db-backups' lies inside the source directory '/etc/om' "
            "(sources.OMS.paths[1]): every run would back up the backups; choose a directory outside every source "
            "path") in rows


def test_oms_paths_count_as_sources(tmp_path):
    spec = spec_with(sources__OMS={"kind": "oms", "database": {"conn_id": "oms_db"}, "paths": ["/srv/BigData"],
                                   "target": {"type": "LocalDir"}})
    rows = problems(tmp_path, spec)
    assert any(fld == "sources.OMS.target.path" and "lies inside the source directory '/srv/BigData'" in why
               for fld, why in rows), rows


def test_hdfs_targets_are_another_filesystem(tmp_path):
    spec = spec_with(sources__OMS__target={"type": "LocalHDFS", "path": "/etc/om/backup"}, staging_dir="/var/stage")
    assert load_spec(write(tmp_path, spec)).source("OMS").target.path == "/etc/om/backup"


def test_siblings_that_share_a_prefix_do_not_overlap(tmp_path):
    spec = spec_with(**{OMS_T + "path": "/etc/om-backups", OMS_T + "mirror": "/etc/omstandby"})
    assert load_spec(write(tmp_path, spec)).source("OMS").target.path == "/etc/om-backups"


@pytest.mark.parametrize(("paths", "field", "reason"), [
    (["/etc/om", "/etc/om"], "sources.OMS.paths[1]", "'/etc/om' is the same directory as paths[0] '/etc/om'; list each directory once"),
    (["/etc/om", "/etc//om/./"], "sources.OMS.paths[1]",
     "'/etc//om/./' is the same directory as paths[0] '/etc/om' once normalised to '/etc/om'; list each directory once"),
])
def test_the_same_directory_twice_is_refused(tmp_path, paths, field, reason):
    rows = problems(tmp_path, spec_with(sources__OMS__paths=paths))
    assert (field, reason) in rows, rows
    assert not any("lies inside" in why for _, why in rows), rows


# ---- 4. full_every_n within max_backups ---------------------------------------------------------
def test_full_every_n_above_max_backups_is_refused_naming_both(tmp_path):
    rows = problems(tmp_path, spec_with(policy={"type": "full_every_n", "n": 10}, **{OMS_T + "max_backups": 5}))
    assert rows == [("sources.OMS.target.max_backups",
                     "is 5, below policy.n = 10 (full_every_n): a chain holds at most max_backups sets, so a full "
                     "would come every 5 runs, not every 10; raise max_backups to at least 10 (or lower policy.n to 5)")]


def test_full_every_n_above_the_default_max_backups_says_so(tmp_path):
    spec = spec_with(policy={"type": "full_every_n", "n": 8})
    del spec["sources"]["OMS"]["target"]["max_backups"]
    (fld, why), = problems(tmp_path, spec)
    assert fld == "sources.OMS.target.max_backups" and why.startswith("is 7 (the default), below policy.n = 8")


def test_full_every_n_is_checked_per_source(tmp_path):
    spec = spec_with(policy={"type": "full_every_n", "n": 7}, sources__DBService={
        "kind": "files", "paths": ["/var/db"], "target": {"type": "LocalHDFS", "path": "/backup/db", "max_backups": 3}})
    assert [fld for fld, _ in problems(tmp_path, spec)] == ["sources.DBService.target.max_backups"]


@pytest.mark.parametrize("n", [2, 7])
def test_full_every_n_up_to_max_backups_is_fine(tmp_path, n):
    assert load_spec(write(tmp_path, spec_with(policy={"type": "full_every_n", "n": n}))).policy.n == n


# ---- 5. namenode.tool_command splits into an argv ------------------------------------------------
def namenode(tool_command):
    return spec_with(sources__NameNode={"kind": "namenode", "tool_command": tool_command,
                                        "target": {"type": "LocalDir", "path": "nn"}})


@pytest.mark.parametrize(("tool", "reason"), [
    ("hadoop 'unterminated", "\"hadoop 'unterminated\" cannot be split into a command line (No closing quotation)"),
    ('hadoop "x', "cannot be split into a command line (No closing quotation)"),
    ("hadoop x\\", "cannot be split into a command line (No escaped character)"),
    ("''", "\"''\" names no program"),
    ("   ", "must be a command line"),
])
def test_tool_command_must_split_into_a_command_line(tmp_path, tool, reason):
    rows = problems(tmp_path, namenode(tool))
    assert any(fld == "sources.NameNode.tool_command" and reason in why for fld, why in rows), rows


def test_tool_command_is_kept_as_written(tmp_path):
    tool = "env HADOOP_CLASSPATH='/opt/my jars/*' hadoop metabackup.hdfs.NameNodeTool"
    assert load_spec(write(tmp_path, namenode(tool))).source("NameNode").options.tool_command == tool
