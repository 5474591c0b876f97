"""The decision one backup run hands from its decide step to the later steps: one typed model
(policy.Decision), written as the work directory's decision.json and read back strictly."""

from __future__ import annotations

import json

import pendulum
import pytest
from chains import catalog, linear, stem
from pydantic import ValidationError

from conftest import files_spec, write_spec
from metabackup import pipeline
from metabackup.errors import BackupError
from metabackup.manifest import FULL, INCREMENTAL
from metabackup.policy import Decision, decide
from metabackup.spec import Policy

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


@pytest.fixture()
def run(tmp_path) -> pipeline.SetRun:
    """A files source whose first run has decided (a full); nothing is snapshotted."""
    (tmp_path / "src").mkdir()
    spec = write_spec(tmp_path, files_spec("dec", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(tmp_path / "src")], "target": {"type": "LocalDir", "max_backups": 5}}}))
    return pipeline.SetRun.of(spec, "OMS", T0)


def test_policy_decide_returns_the_model_without_set_or_commit():
    d = decide(policy=Policy(type="full_then_incremental"), catalog=catalog(linear("F I")), supports_incremental=True,
               cluster_version="3.1.0", max_backups=7)
    assert type(d) is Decision
    assert (d.type, d.parent, d.committed, d.set) == (INCREMENTAL, stem(1), False, None)
    with pytest.raises(ValidationError):
        d.type = FULL  # frozen: a step cannot change what was decided


def test_decision_round_trips_through_decision_json(run):
    decided = pipeline.decide(run)
    assert type(decided) is Decision
    assert (decided.type, decided.parent, decided.committed, decided.set) == (FULL, None, False, run.name.stem)
    written = json.loads((run.workdir / "decision.json").read_text())
    assert written == {"type": "full", "parent": None, "reason": decided.reason, "committed": False,
                       "set": run.name.stem}
    assert run.decision() == decided


@pytest.mark.parametrize("change", [
    {"type": "fool"},  # not a decision this version takes
    {"kind": "full"},  # a key the model does not have
], ids=["wrong-type", "extra-key"])
def test_an_alien_decision_json_is_refused_naming_the_file(run, change):
    pipeline.decide(run)
    path = run.workdir / "decision.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(BackupError, match="decide step") as refused:
        run.decision()
    assert str(path) in str(refused.value)
    with pytest.raises(BackupError, match="decision.json"):
        pipeline.snapshot(run)  # the steps stop there too, before touching the work directory


def test_a_corrupt_decision_json_is_refused_naming_the_file(run):
    pipeline.decide(run)
    path = run.workdir / "decision.json"
    path.write_text('{"type": "full", "par')
    with pytest.raises(BackupError, match="decide step") as refused:
        run.decision()
    assert str(path) in str(refused.value)
