"""The decision table (policy.py's docstring), row by row, with its precedence and boundaries."""

from __future__ import annotations

import pytest
from chains import catalog, full, inc, linear, stem

from metabackup.catalog import Catalog
from metabackup.manifest import FULL, INCREMENTAL
from metabackup.policy import Decision, decide
from metabackup.spec import Policy

THEN_INC = Policy(type="full_then_incremental")
ALWAYS = Policy(type="full_always")


def every(n: int) -> Policy:
    return Policy(type="full_every_n", n=n)


def run(cat: Catalog, *, policy: Policy = THEN_INC, supports_incremental: bool = True,
        cluster_version: str = "3.1.0", max_backups: int = 7, force_full: bool = False) -> Decision:
    return decide(policy=policy, catalog=cat, supports_incremental=supports_incremental,
                  cluster_version=cluster_version, max_backups=max_backups, force_full=force_full)


def is_full(d: Decision, why: str) -> bool:
    return d.type == FULL and d.parent is None and why in d.reason


def is_inc_on(d: Decision, t: int, version: str = "3.1.0") -> bool:
    return d.type == INCREMENTAL and d.parent == stem(t, version)


# the reason each row gives: precedence tests check that the *right* row fired
R_FORCE = "force_full"
R_KIND = "only take full"
R_ALWAYS = "full_always"
R_EMPTY = "no complete full"
R_VERSION = "cluster version changed"
R_EVERY = "full_every_n"
R_MAX = "max_backups"

HEALTHY = catalog(linear("F I"))  # a catalog on which the last row (incremental) would fire


def test_the_baseline_is_an_incremental_on_the_latest_set():
    d = run(HEALTHY)
    assert is_inc_on(d, 1) and "incremental" in d.reason
    assert d == Decision(type=INCREMENTAL, parent=stem(1), reason=d.reason)  # not committed, no set yet


# ---- row 1: force_full --------------------------------------------------------------------
@pytest.mark.parametrize("policy", [THEN_INC, ALWAYS, every(3)])
@pytest.mark.parametrize("cat", [HEALTHY, Catalog.of([]), catalog(linear("F I I I I I I"))], ids=["healthy", "empty", "long"])
@pytest.mark.parametrize("supports", [True, False])
@pytest.mark.parametrize("version", ["3.1.0", "3.2.0"])
def test_force_full_beats_every_other_row(policy, cat, supports, version):
    d = run(cat, policy=policy, supports_incremental=supports, cluster_version=version, max_backups=3, force_full=True)
    assert is_full(d, R_FORCE)


def test_force_full_false_is_no_force():
    assert is_inc_on(run(HEALTHY, force_full=False), 1)


# ---- row 2: the kind cannot do incrementals ------------------------------------------------
@pytest.mark.parametrize("policy", [THEN_INC, ALWAYS, every(3)])
@pytest.mark.parametrize("cat", [HEALTHY, Catalog.of([])], ids=["healthy", "empty"])
def test_a_kind_without_incrementals_always_takes_full(policy, cat):
    assert is_full(run(cat, policy=policy, supports_incremental=False), R_KIND)


def test_kind_row_comes_before_the_version_row():
    assert is_full(run(HEALTHY, supports_incremental=False, cluster_version="3.2.0"), R_KIND)


# ---- row 3: full_always ------------------------------------------------------------------
@pytest.mark.parametrize("cat", [HEALTHY, Catalog.of([]), catalog(linear("F"))], ids=["healthy", "empty", "full"])
def test_full_always_takes_full(cat):
    assert is_full(run(cat, policy=ALWAYS), R_ALWAYS)


def test_full_always_comes_before_the_empty_and_version_rows():
    assert is_full(run(Catalog.of([]), policy=ALWAYS, cluster_version="9.9.9"), R_ALWAYS)


# ---- row 4: no restorable set ------------------------------------------------------------
@pytest.mark.parametrize("policy", [THEN_INC, every(3)])
def test_an_empty_catalog_starts_with_a_full(policy):
    assert is_full(run(Catalog.of([]), policy=policy), R_EMPTY)


def test_a_catalog_of_only_an_orphan_incremental_starts_with_a_full():
    assert is_full(run(catalog(inc(1, 0))), R_EMPTY)


def test_orphans_whose_full_was_deleted_start_with_a_full():
    assert is_full(run(catalog(linear("F I I")[1:])), R_EMPTY)


def test_empty_row_comes_before_the_version_row():
    assert is_full(run(Catalog.of([]), cluster_version="3.2.0"), R_EMPTY)


# ---- row 5: cluster version change ---------------------------------------------------------
def test_a_version_change_takes_a_full():
    d = run(HEALTHY, cluster_version="3.2.0")
    assert is_full(d, R_VERSION) and "3.1.0" in d.reason and "3.2.0" in d.reason


def test_the_version_is_compared_with_the_latest_restorable_set():
    # an older chain at 3.1.0, the newest chain already at 3.2.0: 3.2.0 continues it
    cat = catalog(linear("F I", start=0, version="3.1.0"), linear("F I", start=2, version="3.2.0"))
    assert is_inc_on(run(cat, cluster_version="3.2.0"), 3, "3.2.0")
    assert is_full(run(cat, cluster_version="3.1.0"), R_VERSION)


def test_an_orphan_at_the_new_version_does_not_count():
    cat = catalog(linear("F I", version="3.1.0"), inc(5, 4, version="3.2.0"))
    assert is_full(run(cat, cluster_version="3.2.0"), R_VERSION)
    assert is_inc_on(run(cat, cluster_version="3.1.0"), 1)


def test_version_row_comes_before_the_every_n_and_max_rows():
    cat = catalog(linear("F I I"))
    assert is_full(run(cat, policy=every(3), cluster_version="3.2.0", max_backups=3), R_VERSION)


# ---- row 6: full_every_n -----------------------------------------------------------------
def test_every_n_boundaries_with_n_3():
    assert is_inc_on(run(catalog(linear("F")), policy=every(3)), 0)
    assert is_inc_on(run(catalog(linear("F I")), policy=every(3)), 1)  # full + 1 incremental
    d = run(catalog(linear("F I I")), policy=every(3))  # full + 2 incrementals: n-1 already
    assert is_full(d, R_EVERY) and "n=3" in d.reason


def test_every_n_counts_only_the_current_chain():
    assert is_inc_on(run(catalog(linear("F I I F I")), policy=every(3)), 4)
    assert is_full(run(catalog(linear("F I I F I I")), policy=every(3)), R_EVERY)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_every_n_gives_a_full_every_n_runs(n):
    """Driving the table run after run: the types repeat F, I x (n-1), F, ..."""
    sets = []
    for t in range(3 * n):
        d = run(Catalog.of(sets), policy=every(n), max_backups=100)
        sets.append(full(t) if d.type == FULL else inc(t, d.parent))
    assert "".join("F" if m.is_full else "I" for m in sets) == ("F" + "I" * (n - 1)) * 3


def test_every_n_comes_before_the_max_row():
    # chain of 3 with max_backups 3: both rows 6 (n=3) and 7 apply; row 6's reason wins
    assert is_full(run(catalog(linear("F I I")), policy=every(3), max_backups=3), R_EVERY)


def test_every_n_does_not_apply_to_full_then_incremental():
    assert is_inc_on(run(catalog(linear("F I I I I")), policy=THEN_INC), 4)


# ---- row 7: max_backups --------------------------------------------------------------------
@pytest.mark.parametrize("max_backups", [2, 3, 5, 7])
def test_max_backups_boundary(max_backups):
    shorter = catalog(linear(" ".join(["F"] + ["I"] * (max_backups - 2))))  # chain of max_backups - 1
    at_max = catalog(linear(" ".join(["F"] + ["I"] * (max_backups - 1))))  # chain of max_backups
    assert is_inc_on(run(shorter, max_backups=max_backups), max_backups - 2)
    d = run(at_max, max_backups=max_backups)
    assert is_full(d, R_MAX) and f"{max_backups} sets" in d.reason


@pytest.mark.parametrize("cat", [catalog(linear("F")), catalog(linear("F I")), catalog(linear("F I F"))],
                         ids=["F", "FI", "FIF"])
@pytest.mark.parametrize("policy", [THEN_INC, every(5)])
def test_max_backups_1_always_takes_full(cat, policy):
    assert is_full(run(cat, policy=policy, max_backups=1), R_MAX)


def test_max_backups_applies_to_every_n_too():
    # n=5 would still allow an incremental, but the chain already fills max_backups=3
    assert is_full(run(catalog(linear("F I I")), policy=every(5), max_backups=3), R_MAX)
    assert is_inc_on(run(catalog(linear("F I")), policy=every(5), max_backups=3), 1)


def test_max_backups_counts_the_current_chain_only():
    assert is_inc_on(run(catalog(linear("F I I F I")), max_backups=3), 4)


# ---- row 8: incremental on the latest restorable set ----------------------------------------
def test_the_parent_is_the_latest_restorable_set_not_a_newer_orphan():
    cat = catalog(linear("F I"), inc(2, 99), inc(3, 2))  # 2 and 3 are newer than 1 but orphans
    assert is_inc_on(run(cat), 1)


def test_the_parent_is_the_latest_restorable_set_after_a_deleted_full():
    cat = catalog(linear("F I I"), inc(4, 3), inc(5, 4))  # full 3 deleted by hand
    assert is_inc_on(run(cat), 2)


def test_the_parent_may_be_a_full():
    assert is_inc_on(run(catalog(linear("F I F"))), 2)


def test_the_orphan_chain_is_not_what_max_backups_measures():
    # the orphan branch is long, the restorable chain short: an incremental is allowed
    cat = catalog(linear("F"), inc(1, 50), inc(2, 1), inc(3, 2), inc(4, 3))
    assert is_inc_on(run(cat, max_backups=2), 0)


def test_every_policy_name_that_allows_incrementals_gives_one():
    assert is_inc_on(run(HEALTHY, policy=THEN_INC), 1)
    assert is_inc_on(run(HEALTHY, policy=every(3)), 1)
