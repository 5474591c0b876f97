"""The source contract: every source kind, against its real server, passes the same steps.

    full -> change -> incremental -> change -> incremental      (preflight, run_set, record each)
    restore each of the three points into a fresh destination == the state captured at that point
    one archive byte corrupted at the target -> every set depending on it is refused before its
        destination is created (the sets before it still verify)
    the latest set is listed restorable; the catalog has no orphans and no invalid manifests
    a re-run of the latest set's run commits nothing new and changes nothing at the target

Kinds come from ``kinds.KINDS`` (one adapter each); a new kind is one more line there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

from .kinds import KINDS, Kind
from metabackup import pipeline
from metabackup.overview import source_overview
from metabackup.restore import plan_restore, restore_source, verify_chain
from metabackup.sources import RestoreError
from metabackup.spec import TaskSpec, load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
POINTS = (0, 1, 2)  # the full, then two incrementals


@dataclass
class Point:
    stem: str
    type: str
    parent: str | None
    reason: str
    state: Any


@dataclass
class Chain:
    kind: Kind
    spec: TaskSpec
    workdir: Path
    points: list[Point]

    def run(self) -> pipeline.SetRun:
        return pipeline.SetRun.of(self.spec, self.kind.source, T0)

    def catalog(self):
        return self.run().catalog()


def make_spec(kind: Kind, workdir: Path) -> TaskSpec:
    path = workdir / f"contract_{kind.id}.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"contract_{kind.id}", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0",
        "type": "manual", "policy": "full_then_incremental", "data_path": str(workdir / "data"),
        "sources": {kind.source: {**kind.block(), "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return load_spec(path)


def take_set(spec: TaskSpec, source: str, when: pendulum.DateTime) -> dict[str, Any]:
    """One set as the DAG takes it: preflight, the source's steps (run_set), record."""
    pipeline.preflight(spec, [source], when)
    outcome = pipeline.run_set(pipeline.SetRun.of(spec, source, when))
    pipeline.record(spec, [source], when.to_iso8601_string())
    return outcome


@pytest.fixture(scope="module", params=KINDS, ids=lambda k: k.id)
def chain(request, servers, tmp_path_factory):
    kind = request.param()
    workdir = tmp_path_factory.mktemp(f"contract-{kind.id}")
    kind.start(servers, workdir)
    try:
        spec = make_spec(kind, workdir)
        points = []
        for n in POINTS:
            if n:
                kind.change(n)
            outcome = take_set(spec, kind.source, T0.add(hours=n))
            points.append(Point(outcome["event"]["set"], outcome["type"], outcome["parent"], outcome["reason"],
                                kind.state()))
        yield Chain(kind, spec, workdir, points)
    finally:
        kind.stop()


def attempt_restore(chain: Chain, stem: str, folder: Path) -> tuple[Any, Any]:
    """Restore ``stem`` into a fresh destination: (the destination, the restore's result)."""
    dest = chain.kind.destination(folder)
    return dest, restore_source(chain.spec, chain.kind.source, dest, stem)


# ---------------------------------------------------------------------------------------------
def test_contract_full_then_two_incrementals(chain):
    points = chain.points
    assert [p.type for p in points] == ["full", "incremental", "incremental"], [p.reason for p in points]
    assert [p.parent for p in points] == [None, points[0].stem, points[1].stem]
    assert [m.set for m in chain.catalog().sets] == [p.stem for p in points]
    assert points[0].state != points[1].state != points[2].state, "each change(n) is visible in state()"


@pytest.mark.parametrize("point", POINTS, ids=["full", "incremental1", "incremental2"])
def test_contract_restore_each_point(chain, point, tmp_path):
    expected = chain.points[point]
    dest, result = attempt_restore(chain, expected.stem, tmp_path)
    try:
        assert result["set"] == expected.stem
        assert result["chain"] == [p.stem for p in chain.points[:point + 1]]
        restored = chain.kind.restored_state(result, dest)
        assert restored == expected.state, f"{chain.kind.id}: restore of {expected.stem} differs from the source then"
    finally:
        chain.kind.release(dest)


@pytest.mark.parametrize("corrupt", POINTS, ids=["full", "incremental1", "incremental2"])
def test_contract_corrupt_archive_refuses_every_dependent_set(chain, corrupt, tmp_path):
    run = chain.run()
    target, task_dir = run.target, run.task_dir
    bad = chain.catalog().get(chain.points[corrupt].stem)
    with target.open_read(task_dir, bad.archive.name) as handle:
        original = handle.read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    target.put_bytes(bytes(damaged), task_dir, bad.archive.name)  # one byte flipped, at the target
    try:
        for point in POINTS:
            stem = chain.points[point].stem
            plan = plan_restore(chain.spec, chain.kind.source, stem)
            if point < corrupt:  # does not depend on the damaged set
                verify_chain(plan.target, plan.reads)
                continue
            dest = chain.kind.destination(tmp_path / f"refused-{point}")
            try:
                with pytest.raises(RestoreError, match=f"chain member {bad.set} failed verification"):
                    restore_source(chain.spec, chain.kind.source, dest, stem)
                assert chain.kind.untouched(dest), f"the refused restore of {stem} created its destination"
            finally:
                chain.kind.release(dest)
    finally:
        target.put_bytes(original, task_dir, bad.archive.name)
    target.verify(task_dir, bad.archive.name, bad.archive.sha256, bad.archive.size)


def test_contract_latest_is_listed_restorable_and_no_orphans(chain):
    catalog = chain.catalog()
    latest = chain.points[-1].stem
    assert catalog.latest_restorable().set == latest
    assert catalog.orphans() == [] and catalog.invalid == ()
    assert [m.set for m in plan_restore(chain.spec, chain.kind.source).chain] == [p.stem for p in chain.points]
    row = source_overview(chain.spec, chain.kind.source, chain.run().task_dir)  # the list / Backups page rows
    assert row["error"] is None and row["invalid"] == []
    assert [(s["set"], s["restorable"], s["chain_length"]) for s in row["sets"]] == [
        (p.stem, True, i + 1) for i, p in reversed(list(enumerate(chain.points)))]


def test_contract_rerun_of_a_committed_set_changes_nothing(chain):
    """A cleared (re-run) DAG run of the latest set: nothing is taken, uploaded or deleted again."""
    run = chain.run()
    before = sorted(run.target.list_names(run.task_dir))
    outcome = take_set(chain.spec, chain.kind.source, T0.add(hours=POINTS[-1]))
    assert outcome["committed"] is True and outcome["event"]["set"] == chain.points[-1].stem
    assert sorted(run.target.list_names(run.task_dir)) == before
