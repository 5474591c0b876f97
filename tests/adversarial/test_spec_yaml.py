"""Hostile or careless task spec files: each case must be refused, fast, with file, position/field and reason.

A pass means the spec reader refused the file (and said why); a failure means it escaped: it was
accepted, hung, took too long, or put a huge value into a message.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from metabackup import spec_yaml
from metabackup.spec import SpecError, load_spec, load_spec_dir

# Not a benchmark: a bound that only an expansion breaks.  The billion-laughs file ran 70 s to a
# MemoryError before; refused, it takes milliseconds.  Generous, so a loaded CI machine passes.
FAST = 10.0
# PyYAML's pure-Python scanner (the fallback without libyaml) looks up to 1024 characters ahead for a
# possible key at every token of a flow collection: ~0.4 s for 20000 '[' before the composer refuses
FAST_PURE_PYTHON = 20.0

GOOD = {
    "name": "nightly", "created": "2026-11-24T10:00:00+08:00", "cluster_version": "3.5.0", "type": "manual",
    "sources": {"OMS": {"kind": "files", "paths": ["/srv/BigData/om-server/conf"],
                        "target": {"type": "LocalDir", "max_backups": 7}}},
}

BILLION_LAUGHS = """\
name: nightly
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def refused(path: Path) -> tuple[SpecError, float]:
    """Load ``path``; it must be refused.  The error and the seconds it took."""
    began = time.perf_counter()
    with pytest.raises(SpecError) as failure:
        load_spec(path)
    return failure.value, time.perf_counter() - began


def write(tmp_path: Path, text: str, name: str = "nightly") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def lines(error: SpecError) -> list[str]:
    return [f"{file}: {fld}: {reason}" for file, fld, reason in error.problems]


def test_billion_laughs_alias_bomb(tmp_path):
    path = write(tmp_path, BILLION_LAUGHS)
    error, took = refused(path)
    assert lines(error) == [f"{path}: line 2, column 4: YAML aliases/anchors are not allowed (found anchor &a); "
                            "write the value out in full"]
    assert took < FAST


def test_billion_laughs_with_the_pure_python_parser(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_yaml, "_SpecLoader", spec_yaml._PySpecLoader)
    path = write(tmp_path, BILLION_LAUGHS)
    error, took = refused(path)
    assert lines(error)[0].startswith(f"{path}: line 2, column 4: YAML aliases/anchors are not allowed")
    assert took < FAST


def test_alias_to_a_mapping_hiding_a_second_target(tmp_path):
    # the anchor sits on the first target; the alias would reuse it elsewhere
    path = write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False).replace(
        "    target:\n", "    target: &t\n").replace("      max_backups: 7\n", "      max_backups: 7\n  DBService: *t\n"))
    error, took = refused(path)
    (line,) = lines(error)
    assert "YAML aliases/anchors are not allowed (found anchor &t)" in line and line.startswith(f"{path}: line ")
    assert took < FAST


def test_file_over_the_size_cap(tmp_path):
    text = yaml.safe_dump(GOOD) + "description: " + "x" * (64 * 1024) + "\n"
    path = write(tmp_path, text)
    error, took = refused(path)
    size = len(text.encode())
    assert lines(error) == [f"{path}: <file>: is {size} bytes, over the 65536-byte (64 KiB) limit for a task spec"]
    assert took < FAST


def test_huge_sparse_file_is_not_read(tmp_path):
    path = tmp_path / "nightly.yaml"
    with path.open("wb") as handle:
        handle.truncate(8 * 1024 ** 3)  # 8 GiB of holes: reading it whole would take minutes and memory
    error, took = refused(path)
    assert lines(error) == [f"{path}: <file>: is {8 * 1024 ** 3} bytes, over the 65536-byte (64 KiB) limit for a task spec"]
    assert took < FAST


def test_fifo_named_like_a_spec_does_not_hang(tmp_path):
    path = tmp_path / "nightly.yaml"
    os.mkfifo(path)
    error, took = refused(path)
    assert lines(error) == [f"{path}: <file>: is not a regular file; a task spec is a plain YAML file"]
    assert took < FAST


def test_duplicate_source(tmp_path):
    text = yaml.safe_dump(GOOD, sort_keys=False) + (
        "  OMS:\n    kind: files\n    paths: [/etc]\n    target: {type: LocalDir, path: /tmp/elsewhere}\n")
    # safe_dump puts `sources:` last, so the appended OMS belongs to it
    path = write(tmp_path, text)
    error, took = refused(path)
    first = text.splitlines().index("  OMS:") + 1
    second = len(text.splitlines()) - 3
    assert lines(error) == [f"{path}: sources.OMS: duplicate key 'OMS' at line {second} (first at line {first}); "
                            "the later value would silently replace the earlier one: keep one"]
    assert took < FAST


def test_duplicate_top_level_key(tmp_path):
    path = write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False) + "type: periodic\n")
    error, _ = refused(path)
    (line,) = lines(error)
    assert line.startswith(f"{path}: type: duplicate key 'type' at line ")


def test_duplicate_key_deep_in_a_target(tmp_path):
    text = yaml.safe_dump(GOOD, sort_keys=False).replace("      max_backups: 7\n",
                                                        "      max_backups: 7\n      max_backups: 100\n")
    path = write(tmp_path, text)
    error, _ = refused(path)
    (line,) = lines(error)
    assert line.startswith(f"{path}: sources.OMS.target.max_backups: duplicate key 'max_backups' at line ")
    assert "(first at line " in line


def test_every_duplicate_key_is_reported_at_once(tmp_path):
    text = yaml.safe_dump(GOOD, sort_keys=False).replace("name: nightly\n", "name: nightly\nname: other\n")
    text = text.replace("      max_backups: 7\n", "      max_backups: 7\n      max_backups: 100\n")
    error, _ = refused(write(tmp_path, text))
    assert [fld for _, fld, _ in error.problems] == ["name", "sources.OMS.target.max_backups"]


def test_duplicate_keys_equal_after_yaml_typing(tmp_path):
    # `1` and `0x1` are the same integer key, `true` and `yes` the same boolean: still duplicates
    path = write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False) + "tags: {1: a, 0x1: b}\n")
    error, _ = refused(path)
    assert any(fld == "tags.1" and "duplicate key 1" in why for _, fld, why in error.problems), error.problems


def test_merge_key(tmp_path):
    path = write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False) + "<<: {type: periodic}\n")
    error, _ = refused(path)
    assert any(fld == "<file>" and "YAML merge keys (<<" in why for _, fld, why in error.problems), error.problems


def test_deep_nesting(tmp_path):
    path = write(tmp_path, "[" * 20000 + "]" * 20000 + "\n")
    error, took = refused(path)
    (line,) = lines(error)
    assert line.startswith(f"{path}: line 1, column ") and ("nesting" in line), line
    assert took < FAST


def test_deep_nesting_with_the_pure_python_parser(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_yaml, "_SpecLoader", spec_yaml._PySpecLoader)
    path = write(tmp_path, "[" * 20000 + "]" * 20000 + "\n")
    error, took = refused(path)
    assert lines(error) == [f"{path}: line 1, column 33: nesting deeper than 32 levels is not allowed in a task spec"]
    assert took < FAST_PURE_PYTHON


def test_long_value_inside_the_cap_is_shortened_in_the_message(tmp_path):
    value = "9" * 60000
    path = write(tmp_path, yaml.safe_dump({**GOOD, "cluster_version": value}, sort_keys=False))
    error, took = refused(path)
    assert len(str(error)) < 1000 and value not in str(error)
    assert any(fld == "cluster_version" and "'999" in why and "...9" in why for _, fld, why in error.problems)
    assert took < FAST


def test_ten_megabyte_string_is_never_quoted_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_yaml, "MAX_SPEC_BYTES", 32 * 1024 * 1024)  # let it through the size cap
    value = "x" * (10 * 1024 * 1024)
    # a bad name, timezone and version, each 10 MB long (YAML itself limits keys to 1024 characters)
    text = yaml.safe_dump(GOOD, sort_keys=False)
    for key in ("name", "cluster_version"):
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key}:")) + "\n"
    path = write(tmp_path, text + f"name: {value}\ncluster_version: {value}\ntimezone: {value}\n")
    error, took = refused(path)
    assert len(str(error)) < 2000, len(str(error))
    assert [fld for _, fld, _ in error.problems] == ["name", "timezone", "cluster_version"], error.problems
    assert all("'xxxxx" in why and "...x" in why and len(why) < 600 for _, _, why in error.problems), error.problems
    assert took < 5  # 10 MB to parse; the point is the message


def test_integer_too_long_for_python_is_a_spec_error_not_a_crash(tmp_path):
    # int("1" * 5000) raises ValueError (CVE-2020-10735 limit) inside PyYAML's constructor
    digits = "1" * 5000
    path = write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False).replace("cluster_version: 3.5.0", f"cluster_version: {digits}"))
    error, took = refused(path)
    (line,) = lines(error)
    assert line.startswith(f"{path}: cluster_version: line 3: the value 1111") and "cannot be read" in line
    assert digits not in line and len(line) < 500
    assert took < FAST


def test_non_scalar_key(tmp_path):
    path = write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False) + "? [a, b]\n: 1\n")
    error, _ = refused(path)
    assert any("a mapping key must be a plain name, not a list" in why for _, _, why in error.problems)


def test_python_tags_are_refused(tmp_path):
    path = write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False) + "description: !!python/object/apply:os.system [id]\n")
    error, _ = refused(path)
    (line,) = lines(error)
    assert "is not valid YAML" in line and "python/object/apply" in line


def test_one_bad_file_does_not_stop_the_others(tmp_path):
    write(tmp_path, BILLION_LAUGHS, name="bomb")
    write(tmp_path, "[" * 20000 + "]" * 20000 + "\n", name="deep")
    write(tmp_path, "x: " + "y" * 70000 + "\n", name="big")
    write(tmp_path, "name: dup\nname: dup\n", name="dup")
    write(tmp_path, yaml.safe_dump(GOOD, sort_keys=False))
    began = time.perf_counter()
    specs, errors = load_spec_dir(tmp_path)
    assert time.perf_counter() - began < 2 * FAST
    assert list(specs) == ["nightly"]
    assert sorted(Path(error.problems[0][0]).name for error in errors) == ["big.yaml", "bomb.yaml", "deep.yaml", "dup.yaml"]
