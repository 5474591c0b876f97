"""The output layout contract: names and the one timestamp format."""

from __future__ import annotations

import pendulum
import pytest

from metabackup.naming import SetName, format_timestamp, is_temp_name, parse_timestamp, task_dir_name, temp_name


def test_timestamps_are_in_the_task_timezone():
    moment = pendulum.datetime(2026, 11, 24, 3, 0, 0, tz="UTC")
    assert format_timestamp(moment, "Asia/Shanghai") == "20261124110000"
    assert format_timestamp(moment, "UTC") == "20261124030000"
    assert parse_timestamp("20261124110000", "Asia/Shanghai") == moment


def test_naive_times_are_refused():
    from datetime import datetime

    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2026, 11, 24, 3), "UTC")


def test_task_directory_and_set_names():
    created = pendulum.parse("2026-11-24T10:00:00+08:00")
    assert task_dir_name("default", created, "Asia/Shanghai") == "default_20261124100000"
    name = SetName.build("3.5.0", "LdapServer", pendulum.datetime(2026, 11, 24, 3, tz="UTC"), "Asia/Shanghai")
    assert name.archive == "3.5.0_LdapServer_20261124110000.tar.gz"
    assert name.manifest == "3.5.0_LdapServer_20261124110000.manifest.json"
    assert SetName.parse(name.stem) == name


MALFORMED = ["3.5.0_OMS", "3_5_OMS_20261124110000", "3.5.0_OMS_2026112411", "x_OMS_20261124110000.tar"]


@pytest.mark.parametrize("stem", MALFORMED)
def test_malformed_stems_do_not_parse(stem):
    assert SetName.parse(stem) is None


@pytest.mark.parametrize("stem", [*MALFORMED, "3.5.0_OMS_20261124110000\n", None, 7])
def test_a_files_index_names_content_sets_by_the_same_grammar(stem):
    from metabackup.sources.files import RestoreError, validate_index

    def index(content_set):
        return {"index": {"a": {"type": "f", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0, "size": 1,
                                "sha256": "0" * 64, "set": content_set}}}

    validate_index(index("3.5.0_OMS_20261124110000"))
    with pytest.raises(RestoreError, match="the set holding its content"):
        validate_index(index(stem))


def test_temp_names_never_look_final():
    temp = temp_name("3.5.0_OMS_20261124110000.tar.gz", "ab12")
    assert temp.startswith(".") and is_temp_name(temp) and not temp.endswith(".tar.gz")
    assert not is_temp_name("3.5.0_OMS_20261124110000.tar.gz")
