"""The catalog: chains, restorable sets, orphans and ordering, read from manifests only."""

from __future__ import annotations

import random

import pytest
from chains import catalog, full, inc, iso, linear, make_set, reference_chain, stem, time_of, times

from metabackup.catalog import Catalog
from metabackup.manifest import Manifest


# --------------------------------------------------------------------------------------------
# the helpers themselves (everything below relies on them)
# --------------------------------------------------------------------------------------------
def test_helper_sets_look_like_real_ones():
    m = inc(75, 3)
    assert m.set == "3.1.0_OMS_20261124011500"
    assert m.parent == "3.1.0_OMS_20261124000300"
    assert m.executed_at == "2026-11-24T01:15:00Z"
    assert m.archive.name == m.set + ".tar.gz" and m.archive.size > 0
    assert not m.is_full and full(0).is_full and full(0).chain_root == full(0).set
    assert time_of(m) == 75
    assert Manifest.from_json(m.to_json()) == m
    shape = linear("F I I F I")
    assert [m.chain_root for m in shape] == [stem(0)] * 3 + [stem(3)] * 2
    assert [m.parent for m in shape] == [None, stem(0), stem(1), None, stem(3)]


def test_stamps_and_executed_at_sort_like_stem_times():
    ts = [0, 1, 9, 10, 59, 60, 61, 599, 600, 1439, 1440, 10_000]
    assert sorted(ts, key=stem) == ts
    assert sorted(ts, key=iso) == ts
    assert all(len(stem(t).rsplit("_", 1)[1]) == 14 for t in ts)


# --------------------------------------------------------------------------------------------
# chain()
# --------------------------------------------------------------------------------------------
def test_chain_of_a_full_is_the_full_alone():
    cat = catalog(linear("F I I"))
    assert times(cat.chain(stem(0))) == [0]


def test_chain_of_incrementals_runs_from_the_full_to_the_set():
    cat = catalog(linear("F I I I"))
    assert times(cat.chain(stem(1))) == [0, 1]
    assert times(cat.chain(stem(3))) == [0, 1, 2, 3]


def test_chain_stops_at_the_nearest_full():
    cat = catalog(linear("F I F I I"))
    assert times(cat.chain(stem(4))) == [2, 3, 4]
    assert times(cat.chain(stem(1))) == [0, 1]


def test_chain_follows_parents_not_neighbours():
    # two incrementals on the same full (a branch): each chain holds only its own ancestors
    cat = catalog(full(0), inc(1, 0), inc(2, 0), inc(3, 1))
    assert times(cat.chain(stem(2))) == [0, 2]
    assert times(cat.chain(stem(3))) == [0, 1, 3]


def test_chain_may_cross_a_version_boundary_when_the_parent_says_so():
    cat = catalog(full(0, version="3.1.0"), inc(1, stem(0, "3.1.0"), version="3.2.0"))
    assert [m.set for m in cat.chain(stem(1, "3.2.0"))] == [stem(0, "3.1.0"), stem(1, "3.2.0")]


def test_chain_with_a_missing_parent_is_none():
    cat = catalog(full(0), inc(2, 1), inc(3, 2))  # set 1 is gone
    assert cat.chain(stem(2)) is None
    assert cat.chain(stem(3)) is None  # broken further up
    assert times(cat.chain(stem(0))) == [0]


def test_chain_of_an_incremental_without_a_parent_is_none():
    assert catalog(full(0), inc(1, None)).chain(stem(1)) is None


def test_chain_of_an_unknown_set_is_none():
    assert catalog(linear("F I")).chain(stem(9)) is None
    assert Catalog.of([]).chain(stem(0)) is None


def test_chain_with_a_missing_full_is_none():
    cat = catalog(linear("F I I")[1:])  # the full was deleted by hand
    assert cat.chain(stem(1)) is None and cat.chain(stem(2)) is None


def test_chain_does_not_loop_on_a_parent_cycle():
    # corrupt manifests: 1 -> 2 -> 1, and 3 -> 3; chain() must terminate and say "not restorable"
    cat = catalog(full(0), inc(1, 2), inc(2, 1), inc(3, 3))
    assert cat.chain(stem(1)) is None
    assert cat.chain(stem(2)) is None
    assert cat.chain(stem(3)) is None
    assert times(cat.orphans()) == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# restorable / orphans
# --------------------------------------------------------------------------------------------
def test_restorable_and_orphans_split_the_catalog():
    sets = [*linear("F I I"), inc(4, 3), inc(5, 4), full(6), inc(7, 6), inc(8, 99)]
    cat = catalog(sets)
    assert times(cat.restorable()) == [0, 1, 2, 6, 7]
    assert times(cat.orphans()) == [4, 5, 8]


def test_everything_restorable_means_no_orphans():
    cat = catalog(linear("F I I F I"))
    assert times(cat.restorable()) == [0, 1, 2, 3, 4]
    assert cat.orphans() == []


def test_only_orphans_means_nothing_restorable():
    cat = catalog(inc(1, 0), inc(2, 1))
    assert cat.restorable() == [] and times(cat.orphans()) == [1, 2]
    assert cat.latest_restorable() is None and cat.latest_full() is None


def test_empty_catalog():
    cat = Catalog.of([])
    assert cat.sets == () and cat.restorable() == [] and cat.orphans() == []
    assert cat.latest_restorable() is None and cat.latest_full() is None


@pytest.mark.parametrize("seed", range(50))
def test_chain_restorable_and_orphans_agree_with_a_reference_model(seed):
    rng = random.Random(seed)
    sets: list[Manifest] = []
    for t in range(rng.randint(1, 25)):
        if not sets or rng.random() < 0.3:
            sets.append(full(t))
        else:
            parent = rng.choice([*[time_of(m) for m in sets], 1000 + t])  # sometimes a missing one
            sets.append(inc(t, parent))
    if sets and rng.random() < 0.5:
        sets.pop(rng.randrange(len(sets)))  # a set deleted by hand
    cat = Catalog.of(rng.sample(sets, len(sets)))
    for m in sets:
        got = cat.chain(m.set)
        assert (None if got is None else [c.set for c in got]) == reference_chain(sets, m.set)
    expected_ok = sorted(time_of(m) for m in sets if reference_chain(sets, m.set) is not None)
    assert times(cat.restorable()) == expected_ok
    assert times(cat.orphans()) == sorted(set(times(sets)) - set(expected_ok))


# --------------------------------------------------------------------------------------------
# latest_restorable / latest_full
# --------------------------------------------------------------------------------------------
def test_latest_restorable_is_the_newest_set_with_a_whole_chain():
    cat = catalog(linear("F I I"), inc(3, 2), inc(4, 77))  # 4 is newer but an orphan
    assert time_of(cat.latest_restorable()) == 3


def test_latest_restorable_skips_a_newer_orphan_full_chain():
    cat = catalog(linear("F I"), inc(5, 4), inc(6, 5))  # 4 (a full) was deleted by hand
    assert time_of(cat.latest_restorable()) == 1


def test_latest_full_is_the_newest_full():
    cat = catalog(linear("F I F I I"))
    assert time_of(cat.latest_full()) == 2
    assert time_of(cat.latest_restorable()) == 4


def test_latest_full_when_the_newest_set_is_a_full():
    cat = catalog(linear("F I I F"))
    assert time_of(cat.latest_full()) == 3 == time_of(cat.latest_restorable())


def test_latest_full_with_only_a_full():
    cat = catalog(full(0))
    assert time_of(cat.latest_full()) == 0 == time_of(cat.latest_restorable())


# --------------------------------------------------------------------------------------------
# ordering
# --------------------------------------------------------------------------------------------
def test_sets_are_ordered_oldest_first_whatever_the_input_order():
    sets = linear("F I I F I")
    for seed in range(5):
        shuffled = random.Random(seed).sample(sets, len(sets))
        assert times(Catalog.of(shuffled).sets) == [0, 1, 2, 3, 4]


def test_ordering_is_by_executed_at_not_by_name():
    # after an upgrade from 3.9.0 to 3.10.0 the newer sets' names sort *before* the older ones
    old = linear("F I", start=0, version="3.9.0")
    new = linear("F I", start=2, version="3.10.0")
    assert sorted(m.set for m in old + new)[0].startswith("3.10.0")
    cat = Catalog.of(new + old)
    assert [m.set for m in cat.sets] == [m.set for m in old + new]
    assert cat.latest_restorable().set == new[-1].set
    assert cat.latest_full().set == new[0].set


def test_ordering_is_by_executed_at_even_against_the_stamp():
    # the stamp is in the task's timezone and only for humans; executed_at is the record of time
    early = make_set(5, "full", None, executed_at=iso(1))
    late = make_set(1, "full", None, executed_at=iso(5))
    cat = Catalog.of([late, early])
    assert [m.set for m in cat.sets] == [early.set, late.set]
    assert cat.latest_full().set == late.set


def test_equal_executed_at_is_broken_by_set_name():
    a = make_set(0, "full", None, source="LdapServer", executed_at=iso(0))
    b = make_set(0, "full", None, source="OMS", executed_at=iso(0))
    assert [m.set for m in Catalog.of([b, a]).sets] == [a.set, b.set]


def test_get_and_by_name():
    sets = linear("F I")
    cat = Catalog.of(sets)
    assert cat.get(stem(1)) == sets[1] and cat.get(stem(7)) is None
    assert cat.by_name() == {m.set: m for m in sets}
