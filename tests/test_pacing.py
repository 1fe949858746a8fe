"""How a worker paces its look for work (orchestrator.pacing): pure and seeded, no sleeping."""

from __future__ import annotations

import random

import pytest

from orchestrator.errors import ValidationError
from orchestrator.pacing import Pacer, spread


def test_idle_pauses_double_from_the_floor_up_to_the_poll_interval_within_their_jitter() -> None:
    pacer = Pacer(0.05, 1.0, random.Random(7))
    nominal = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for expected in nominal:
        assert expected / 2 <= pacer.idle() <= expected


def test_a_claim_starts_the_idle_pauses_again_from_the_floor() -> None:
    pacer = Pacer(0.05, 1.0, random.Random(7))
    for _ in range(6):
        pacer.idle()
    pacer.claimed()
    assert pacer.idle_steps == 0 and pacer.idle() <= 0.05


def test_contended_pauses_are_anywhere_below_the_idle_pause_and_back_off_too() -> None:
    pacer = Pacer(0.05, 1.0, random.Random(3))
    pauses = [pacer.contended() for _ in range(8)]
    assert all(0 <= p <= min(1.0, 0.05 * 2 ** i) for i, p in enumerate(pauses))
    assert pacer.idle_steps == 8


def test_workers_seeded_differently_pause_differently() -> None:
    a, b = Pacer(0.05, 1.0, random.Random(1)), Pacer(0.05, 1.0, random.Random(2))
    assert [a.idle() for _ in range(5)] != [b.idle() for _ in range(5)]


def test_a_floor_above_the_ceiling_is_refused_naming_both() -> None:
    with pytest.raises(ValidationError, match=r"floor=2.*ceiling=1"):
        Pacer(2.0, 1.0)


def test_spread_keeps_every_window_of_older_candidates_ahead_of_newer_ones() -> None:
    order = spread(list(range(40)), random.Random(5), 16)
    assert sorted(order) == list(range(40))
    assert set(order[:16]) == set(range(16)) and set(order[16:32]) == set(range(16, 32))


def test_spread_gives_two_workers_different_first_candidates_among_the_oldest() -> None:
    firsts = {spread(list(range(16)), random.Random(seed), 16)[0] for seed in range(20)}
    assert len(firsts) > 5


def test_spread_refuses_an_empty_window() -> None:
    with pytest.raises(ValidationError, match="window >= 1"):
        spread([1, 2], random.Random(), 0)
