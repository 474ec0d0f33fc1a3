"""Planner: wanted-set differences onto connection slots, without ever moving a stream."""

from __future__ import annotations

import random

import pytest

from surge.stream.planner import plan

Slots = dict[int, set[str]]


def _apply(slots: Slots, wanted: set[str], cap: int, next_id: int) -> tuple[Slots, int]:
    p = plan(wanted, list(slots.items()), cap)
    out = {sid: set(s) for sid, s in slots.items()}
    for sid, streams in p.remove.items():
        out[sid] -= set(streams)
    for sid, streams in p.add.items():
        out[sid] |= set(streams)
    for sid in p.close:
        assert not out[sid], "closed a connection that still carries streams"
        del out[sid]
    for streams in p.new_slots:
        out[next_id] = set(streams)
        next_id += 1
    return out, next_id


def test_fills_open_connections_before_opening_a_new_one() -> None:
    slots = {0: {f"s{i}" for i in range(150)}}
    p = plan({f"s{i}" for i in range(260)}, list(slots.items()), 200)
    assert [len(v) for v in p.add.values()] == [50]
    assert [len(v) for v in p.new_slots] == [60]
    assert not p.remove and not p.close


def test_closes_only_empty_connections_and_never_moves_streams() -> None:
    slots = {0: {"a", "b"}, 1: {"c"}}
    p = plan({"a", "b"}, list(slots.items()), 2)
    assert p.remove == {1: ["c"]} and p.close == [1] and not p.add and not p.new_slots
    # a connection emptied by removals is refilled rather than closed when new streams need room
    p = plan({"a", "b", "d"}, list(slots.items()), 2)
    assert p.add == {1: ["d"]} and p.close == [] and p.remove == {1: ["c"]}


def test_no_change_is_an_empty_plan() -> None:
    slots = {0: {"a", "b"}, 1: {"c"}}
    assert plan({"a", "b", "c"}, list(slots.items()), 2).empty


def test_duplicate_assignment_is_resolved_to_the_first_slot() -> None:
    p = plan({"a"}, [(0, {"a"}), (1, {"a"})], 5)
    assert p.remove == {1: ["a"]} and p.close == [1]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        plan(set(), [], 0)


@pytest.mark.parametrize("seed", range(20))
def test_random_sequences_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    cap = rng.choice([1, 3, 10, 200])
    universe = [f"s{i}" for i in range(rng.choice([5, 50, 700]))]
    slots: dict[int, set[str]] = {}
    next_id = 0
    wanted: set[str] = set()
    for _ in range(30):
        before = {sid: set(s) for sid, s in slots.items()}
        for _ in range(rng.randrange(1, 80)):
            name = rng.choice(universe)
            (wanted.add if rng.random() < 0.6 else wanted.discard)(name)
        slots, next_id = _apply(slots, wanted, cap, next_id)
        placed = [s for streams in slots.values() for s in streams]
        assert sorted(placed) == sorted(wanted)  # exactly the wanted set, each stream once
        assert all(0 < len(s) <= cap for s in slots.values())
        for sid, streams in slots.items():  # a stream that stayed wanted stayed where it was
            if sid in before:
                assert before[sid] & wanted <= streams
        new = [sid for sid in slots if sid not in before]
        if new:  # opened only when every surviving old slot is full
            assert all(len(slots[sid]) == cap for sid in slots if sid in before)
