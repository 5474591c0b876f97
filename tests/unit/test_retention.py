"""Chain-safe retention: keep the newest max_backups restorable sets plus their ancestors."""

from __future__ import annotations

import random

import pytest
from chains import catalog, full, inc, linear, reference_chain, time_of, times

from metabackup.catalog import Catalog
from metabackup.manifest import FULL, Manifest
from metabackup.policy import decide
from metabackup.retention import RetentionPlan, plan_retention
from metabackup.spec import Policy


def plan(sets, max_backups: int) -> tuple[list[int], list[int], list[int]]:
    p = plan_retention(catalog(sets), max_backups)
    return times(p.keep), times(p.delete), times(p.orphans)


def apply(cat: Catalog, p: RetentionPlan) -> Catalog:
    """What the target holds after the plan is carried out."""
    doomed = {m.set for m in p.delete}
    return Catalog.of(m for m in cat.sets if m.set not in doomed)


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, -7])
def test_max_backups_below_1_is_refused(bad):
    with pytest.raises(ValueError, match="max_backups"):
        plan_retention(catalog(linear("F I")), bad)


def test_max_backups_0_is_refused_even_for_an_empty_catalog():
    with pytest.raises(ValueError):
        plan_retention(Catalog.of([]), 0)


def test_an_empty_catalog_plans_nothing():
    p = plan_retention(Catalog.of([]), 3)
    assert p == RetentionPlan(keep=(), delete=(), orphans=())


# --------------------------------------------------------------------------------------------
# fulls only
# --------------------------------------------------------------------------------------------
def test_a_single_full_with_max_1_is_kept():
    assert plan([full(0)], 1) == ([0], [], [])


@pytest.mark.parametrize("max_backups, keep", [(1, [4]), (2, [3, 4]), (3, [2, 3, 4]), (5, [0, 1, 2, 3, 4]),
                                               (9, [0, 1, 2, 3, 4])])
def test_fulls_only_keeps_the_newest_n(max_backups, keep):
    sets = linear("F F F F F")
    assert plan(sets, max_backups) == (keep, [t for t in range(5) if t not in keep], [])


def test_keep_and_delete_come_oldest_first_whatever_the_input_order():
    sets = linear("F I F I F I")
    p = plan_retention(Catalog.of(reversed(sets)), 2)
    assert times(p.keep) == [4, 5] and times(p.delete) == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------
# chains cut by the window
# --------------------------------------------------------------------------------------------
def test_the_window_inside_one_chain_keeps_the_chain_up_to_it():
    # newest 2 of F I I I are the last two incrementals; they need the full and the first one
    assert plan(linear("F I I I"), 2) == ([0, 1, 2, 3], [], [])


def test_the_window_cutting_a_chain_keeps_its_ancestors():
    # F I I | F I with max 3: the window is [2, 3, 4]; 2 needs 0 and 1 -> 5 kept = 2N-1
    keep, delete, orphans = plan(linear("F I I F I"), 3)
    assert (keep, delete, orphans) == ([0, 1, 2, 3, 4], [], [])
    assert len(keep) == 2 * 3 - 1


def test_the_window_cutting_a_chain_deletes_what_no_kept_set_needs():
    # F I I F I I F I with max 3: window [5, 6, 7]; 5 needs 3, 4 -> the first chain goes
    assert plan(linear("F I I F I I F I"), 3) == ([3, 4, 5, 6, 7], [0, 1, 2], [])


def test_a_full_at_the_window_edge_needs_nothing_older():
    assert plan(linear("F I I F I I"), 3) == ([3, 4, 5], [0, 1, 2], [])


def test_a_branch_outside_the_window_is_deleted_even_if_its_full_is_kept():
    # 2 is an incremental on 0 beside 1 -> 3; only 3's chain is needed
    sets = [full(0), inc(1, 0), inc(2, 0), inc(3, 1)]
    assert plan(sets, 1) == ([0, 1, 3], [2], [])


def test_max_1_with_a_chain_keeps_the_newest_sets_whole_chain():
    assert plan(linear("F I I"), 1) == ([0, 1, 2], [], [])
    assert plan(linear("F I I F I"), 1) == ([3, 4], [0, 1, 2], [])
    assert plan(linear("F I I F"), 1) == ([3], [0, 1, 2], [])


def test_two_chains_the_old_one_goes_all_at_once_when_the_window_is_inside_the_new_one():
    """Run after run with max 3, as the pipeline does (retention after every committed set)."""
    shape = "F I I F I I F"
    kept_after_each_run = []
    cat = Catalog.of([])
    for m in linear(shape):
        cat = Catalog.of([*cat.sets, m])
        p = plan_retention(cat, 3)
        cat = apply(cat, p)
        kept_after_each_run.append(times(cat.sets))
    assert kept_after_each_run == [
        [0],
        [0, 1],
        [0, 1, 2],
        [0, 1, 2, 3],  # window [1, 2, 3]: 1 and 2 need 0
        [0, 1, 2, 3, 4],  # window [2, 3, 4]: 2 needs 0, 1  (2N-1)
        [3, 4, 5],  # window [3, 4, 5] is inside the new chain: the whole old chain goes at once
        [3, 4, 5, 6],  # window [4, 5, 6]: 4 and 5 need 3
    ]


# --------------------------------------------------------------------------------------------
# orphans
# --------------------------------------------------------------------------------------------
def test_orphans_are_never_counted_nor_deleted():
    sets = [*linear("F I F I"), inc(10, 99), inc(11, 10)]  # the two newest sets are orphans
    assert plan(sets, 2) == ([2, 3], [0, 1], [10, 11])


def test_old_orphans_outside_the_window_are_not_deleted():
    sets = [inc(1, 0), inc(2, 1), *linear("F F F", start=3)]  # full 0 deleted by hand
    assert plan(sets, 1) == ([5], [3, 4], [1, 2])


def test_a_catalog_of_orphans_only_deletes_nothing():
    assert plan([inc(1, 0), inc(2, 1)], 1) == ([], [], [1, 2])


def test_orphans_in_the_middle_do_not_shift_the_window():
    # without the orphans the window would be the same; with them counted it would shrink
    sets = [*linear("F F"), inc(2, 77), inc(3, 2), full(4)]
    assert plan(sets, 2) == ([1, 4], [0], [2, 3])


# --------------------------------------------------------------------------------------------
# invariants over random histories
# --------------------------------------------------------------------------------------------
def check_invariants(sets: list[Manifest], max_backups: int, where: str) -> RetentionPlan:
    """Everything the retention rule promises, checked against an independent model."""
    cat = Catalog.of(sets)
    p = plan_retention(cat, max_backups)
    keep, delete, orphans = ([m.set for m in part] for part in (p.keep, p.delete, p.orphans))
    chains = {m.set: reference_chain(sets, m.set) for m in sets}
    by_time = sorted(sets, key=lambda m: (m.executed_at, m.set))
    restorable = [m.set for m in by_time if chains[m.set] is not None]
    window = restorable[-max_backups:]
    needed = {a for w in window for a in chains[w]}

    # keep, delete, orphans partition the catalog, each oldest first, with no duplicates
    assert sorted(keep + delete + orphans) == sorted(m.set for m in sets), where
    assert len(set(keep + delete + orphans)) == len(sets), where
    for part in (p.keep, p.delete, p.orphans):
        assert list(part) == sorted(part, key=lambda m: (m.executed_at, m.set)), where
    # orphans: exactly the sets without a whole chain; never deleted, never counted
    assert set(orphans) == {s for s, c in chains.items() if c is None}, where
    # the newest N restorable sets are always kept
    assert set(window) <= set(keep), where
    # every kept set's whole chain is kept
    for s in keep:
        assert set(chains[s]) <= set(keep), (where, s)
    # and nothing else is kept: the rest of the restorable sets is deleted
    assert set(keep) == needed, where
    assert set(delete) == set(restorable) - needed, where
    # after the plan is carried out every kept set is still restorable, and a second pass is a no-op
    after = apply(cat, p)
    assert [m.set for m in after.restorable()] == keep, where
    assert plan_retention(after, max_backups).delete == (), where
    return p


def random_forest(rng: random.Random) -> list[Manifest]:
    """Arbitrary histories: branches, incrementals on any older set, missing parents, gaps."""
    sets: list[Manifest] = []
    t = 0
    for _ in range(rng.randint(0, 30)):
        t += rng.randint(1, 3)
        roll = rng.random()
        if not sets or roll < 0.25:
            sets.append(full(t))
        elif roll < 0.32:
            sets.append(inc(t, 5000 + t))  # a parent that never existed
        else:
            sets.append(inc(t, time_of(rng.choice(sets[-6:]))))
    for _ in range(rng.choice([0, 0, 1, 2])):  # hand deletions
        if sets:
            sets.pop(rng.randrange(len(sets)))
    return sets


def test_invariants_hold_for_random_forests():
    rng = random.Random(20261124)
    for case in range(200):
        sets = random_forest(rng)
        max_backups = rng.randint(1, 8)
        check_invariants(rng.sample(sets, len(sets)), max_backups, f"forest case {case}: N={max_backups}")


def test_invariants_and_the_2n_minus_1_bound_hold_for_histories_the_decision_table_makes():
    """Run after run: decide, commit, retain (as the pipeline does), with forced fulls, upgrades
    and sets deleted by hand.  Then at most 2N-1 sets are kept, and more than N only while a
    kept incremental still needs a full older than the window."""
    rng = random.Random(7)
    policies = [Policy(type="full_then_incremental"), Policy(type="full_every_n", n=2), Policy(type="full_every_n", n=3),
                Policy(type="full_every_n", n=5), Policy(type="full_always")]
    worst_excess = 0
    for case in range(200):
        max_backups = rng.randint(1, 6)
        policy = rng.choice(policies)
        version = 1
        cat = Catalog.of([])
        for t in range(rng.randint(1, 40)):
            if rng.random() < 0.05:
                version += 1
            v = f"3.{version}.0"
            d = decide(policy=policy, catalog=cat, supports_incremental=True, cluster_version=v,
                       max_backups=max_backups, force_full=rng.random() < 0.1)
            new = full(t, version=v) if d.type == FULL else inc(t, d.parent, version=v)
            cat = Catalog.of([*cat.sets, new])
            if rng.random() < 0.05 and len(cat.sets) > 1:  # someone deletes a set by hand
                gone = rng.choice(cat.sets[:-1])
                cat = Catalog.of(m for m in cat.sets if m is not gone)
            where = f"history case {case} run {t}: N={max_backups} {policy}"
            p = check_invariants(list(cat.sets), max_backups, where)
            assert len(p.keep) <= 2 * max_backups - 1, where
            if len(p.keep) > max_backups:
                window = p.keep[-max_backups:]
                assert not window[0].is_full, where
                worst_excess = max(worst_excess, len(p.keep) - max_backups)
            cat = apply(cat, p)
    assert worst_excess > 0  # the histories did exercise chains cut by the window
